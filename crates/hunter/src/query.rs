//! The hunting query for a batch of detections, built as a KQL syntax tree and printed, so no
//! value taken from a detection (a host name, an address) can change the query's structure.
//!
//! One query per batch: device resolution for every detection's source address in its window,
//! then the process, network and device-event rows of those devices around each window, plus
//! the devices' facts, each with only the columns the attribution reads. Rows carry the table
//! they came from in `TableName`.

use std::net::IpAddr;

use culprit_kql::ast::{
    BinOp, Expr, LetValue, Literal, MvExpandItem, NamedExpr, Operator, Pos, Query, Source,
    Statement, TabularExpr, Union,
};
use culprit_model::telemetry::columns_read;
use culprit_model::{Detection, Duration, Timestamp, Window};

/// How far around a detection's window rows are fetched.
#[derive(Debug, Clone, Copy)]
pub struct Reach {
    /// Process and network rows from this long before the window...
    pub lookback: Duration,
    /// ...to this long after it.
    pub lookahead: Duration,
    /// Device facts (addresses, sensor state) from this long before.
    pub device_lookback: Duration,
}

impl Default for Reach {
    fn default() -> Self {
        Reach {
            lookback: Duration::from_hours(1),
            lookahead: Duration::from_minutes(10),
            device_lookback: Duration::from_days(1),
        }
    }
}

impl Reach {
    /// The span of event rows fetched for a detection window.
    pub fn events(&self, w: Window) -> Window {
        Window::new(w.start - self.lookback, w.end + self.lookahead)
    }
    /// The span of device-fact rows fetched for a detection window.
    pub fn devices(&self, w: Window) -> Window {
        Window::new(w.start - self.device_lookback, w.end + self.lookahead)
    }
}

/// The column the query adds to every row to name its table.
pub const TABLE_COLUMN: &str = "TableName";

const EVENT_TABLES: [&str; 3] = ["DeviceNetworkEvents", "DeviceProcessEvents", "DeviceEvents"];
const FACT_TABLES: [&str; 2] = ["DeviceInfo", "DeviceNetworkInfo"];

/// Builds the batch query. Detections without a source address contribute nothing to device
/// resolution (the caller answers them without hunting).
pub fn batch_query(batch: &[&Detection], reach: &Reach) -> Query {
    let mut statements = Vec::new();
    let mut resolvers = Vec::new();
    let mut event_spans = Vec::new();
    let mut fact_spans = Vec::new();
    for (i, d) in batch.iter().enumerate() {
        let Some(ip) = d.host.ip else { continue };
        let ips = format!("ips{i}");
        statements.push(let_stmt(
            &ips,
            scalar(Expr::Lit(Literal::Dynamic(ip_forms(ip)))),
        ));
        let ev = reach.events(d.window);
        let fa = reach.devices(d.window);
        resolvers.push(by_network_info(&ips, fa));
        resolvers.push(by_local_ip(&ips, ev));
        event_spans.push(ev);
        fact_spans.push(fa);
    }
    let devices = TabularExpr {
        source: Source::Union(Union {
            params: Vec::new(),
            withsource: None,
            tables: resolvers,
            pos: Pos::default(),
        }),
        ops: vec![Operator::Distinct {
            columns: vec![name("DeviceId")],
            pos: Pos::default(),
        }],
    };
    statements.push(let_stmt("devices", devices));

    // Each table filtered in its own leg, then the union: an engine that materialises a
    // union's inputs before filtering it (the twin's does) then reads only the matching rows.
    // Each leg keeps only the columns the attribution reads: a union answer otherwise carries
    // every column of all five tables in every row, several times the bytes and the hunter's
    // memory. `column_ifexists` keeps a column a tenant's schema lacks from failing the query.
    let leg = |table: &str, spans: &[Window]| {
        let mut exprs: Vec<NamedExpr> = columns_read(table)
            .into_iter()
            .map(|c| NamedExpr {
                name: Some(c.into()),
                expr: call("column_ifexists", vec![str_lit(c), str_lit("")]),
            })
            .collect();
        exprs.push(NamedExpr {
            name: Some(TABLE_COLUMN.into()),
            expr: str_lit(table),
        });
        TabularExpr {
            source: Source::Expr(name(table)),
            ops: vec![
                where_(in_devices()),
                where_(any_between(spans)),
                Operator::Project {
                    exprs,
                    pos: Pos::default(),
                },
            ],
        }
    };
    let tables = EVENT_TABLES
        .iter()
        .map(|t| leg(t, &event_spans))
        .chain(FACT_TABLES.iter().map(|t| leg(t, &fact_spans)))
        .collect();
    statements.push(Statement::Tabular(TabularExpr {
        source: Source::Union(Union {
            params: Vec::new(),
            withsource: None,
            tables,
            pos: Pos::default(),
        }),
        ops: Vec::new(),
    }));
    Query { statements }
}

/// The address as MDE may write it: IPv4 also as IPv4-mapped IPv6.
fn ip_forms(ip: IpAddr) -> serde_json::Value {
    let mut forms = vec![serde_json::Value::String(ip.to_string())];
    if let IpAddr::V4(v4) = ip {
        forms.push(serde_json::Value::String(format!("::ffff:{v4}")));
        forms.push(serde_json::Value::String(v4.to_ipv6_mapped().to_string()));
    }
    forms.dedup();
    serde_json::Value::Array(forms)
}

/// `DeviceNetworkInfo | where Timestamp between (..) | mv-expand a = todynamic(IPAddresses)
///  | where tostring(a.IPAddress) in (ips) | distinct DeviceId`
fn by_network_info(ips: &str, span: Window) -> TabularExpr {
    TabularExpr {
        source: Source::Expr(name("DeviceNetworkInfo")),
        ops: vec![
            where_(between(name("Timestamp"), span)),
            Operator::MvExpand {
                params: Vec::new(),
                items: vec![MvExpandItem {
                    name: Some("a".into()),
                    expr: call("todynamic", vec![name("IPAddresses")]),
                    to_type: None,
                }],
                limit: None,
                legacy: false,
                pos: Pos::default(),
            },
            where_(in_list(
                call(
                    "tostring",
                    vec![Expr::Member {
                        target: Box::new(name("a")),
                        name: "IPAddress".into(),
                    }],
                ),
                ips,
            )),
            distinct_device(),
        ],
    }
}

/// `DeviceNetworkEvents | where Timestamp between (..) | where LocalIP in (ips) | distinct DeviceId`
fn by_local_ip(ips: &str, span: Window) -> TabularExpr {
    TabularExpr {
        source: Source::Expr(name("DeviceNetworkEvents")),
        ops: vec![
            where_(between(name("Timestamp"), span)),
            where_(in_list(name("LocalIP"), ips)),
            distinct_device(),
        ],
    }
}

fn distinct_device() -> Operator {
    Operator::Distinct {
        columns: vec![name("DeviceId")],
        pos: Pos::default(),
    }
}

fn in_devices() -> Expr {
    Expr::In {
        expr: Box::new(name("DeviceId")),
        negated: false,
        case_insensitive: false,
        list: vec![name("devices")],
        pos: Pos::default(),
    }
}

fn in_list(expr: Expr, list_name: &str) -> Expr {
    Expr::In {
        expr: Box::new(expr),
        negated: false,
        case_insensitive: false,
        list: vec![name(list_name)],
        pos: Pos::default(),
    }
}

/// `Timestamp between (a .. b) or Timestamp between (c .. d) ...`, spans merged where they
/// overlap so the predicate stays short for large batches.
fn any_between(spans: &[Window]) -> Expr {
    let merged = merge_spans(spans);
    let mut preds = merged.into_iter().map(|w| between(name("Timestamp"), w));
    let Some(first) = preds.next() else {
        // No detection had an address: a predicate that holds for no row.
        return Expr::Lit(Literal::Bool(false));
    };
    preds.fold(first, |acc, p| Expr::Binary {
        op: BinOp::Or,
        left: Box::new(acc),
        right: Box::new(p),
        pos: Pos::default(),
    })
}

/// Sorts and merges overlapping windows.
pub fn merge_spans(spans: &[Window]) -> Vec<Window> {
    let mut v: Vec<Window> = spans.to_vec();
    v.sort_by_key(|w| w.start);
    let mut out: Vec<Window> = Vec::new();
    for w in v {
        match out.last_mut() {
            Some(last) if w.start <= last.end => last.end = last.end.max(w.end),
            _ => out.push(w),
        }
    }
    out
}

fn between(expr: Expr, w: Window) -> Expr {
    Expr::Between {
        expr: Box::new(expr),
        negated: false,
        low: Box::new(dt(w.start)),
        high: Box::new(dt(w.end)),
        pos: Pos::default(),
    }
}

fn dt(t: Timestamp) -> Expr {
    Expr::Lit(Literal::DateTime(t))
}

fn str_lit(s: &str) -> Expr {
    Expr::Lit(Literal::String(s.to_owned()))
}

fn name(s: &str) -> Expr {
    Expr::Name(s.to_owned())
}

fn call(f: &str, args: Vec<Expr>) -> Expr {
    Expr::Call {
        name: f.to_owned(),
        args,
        pos: Pos::default(),
    }
}

fn where_(pred: Expr) -> Operator {
    Operator::Where {
        pred,
        pos: Pos::default(),
    }
}

fn scalar(e: Expr) -> TabularExpr {
    TabularExpr {
        source: Source::Expr(e),
        ops: Vec::new(),
    }
}

fn let_stmt(n: &str, value: TabularExpr) -> Statement {
    Statement::Let {
        name: n.to_owned(),
        value: LetValue::Expr(value),
        pos: Pos::default(),
    }
}
