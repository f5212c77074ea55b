//! Hunting workers: turn batches of detections into one Advanced Hunting query each, within the
//! tenant's budget, and hand back the telemetry each detection needs.

mod mde_backend;
pub mod query;
pub mod service;

pub use mde_backend::MdeBackend;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use futures::future::BoxFuture;

use culprit_model::{Detection, Table, Telemetry, Timestamp, Value, Window};

pub use query::{Reach, TABLE_COLUMN, batch_query};

/// A hunting API answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub table: Table,
    /// The service cut the result at its row cap: some rows are missing.
    pub truncated: bool,
}

/// Why a hunting call failed, classified for retry decisions and for `hunt_failed` answers.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct HuntError {
    /// A short stable label (`throttled`, `too_expensive`, `unauthorized`, ...).
    pub kind: String,
    pub message: String,
    /// Worth trying again later (throttling, service errors, timeouts).
    pub retryable: bool,
    /// The query was too large for the service: a smaller batch may pass.
    pub split: bool,
    /// How long the service asked us to wait.
    pub retry_after: Option<std::time::Duration>,
}

/// Runs a hunting query for one tenant. The MDE client implements it; tests use the twin.
pub trait HuntingBackend: Send + Sync + Debug {
    fn hunt<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<Answer, HuntError>>;
}

/// What the hunter learned for one detection.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub detection: Detection,
    pub result: Result<Hunted, HuntError>,
}

#[derive(Debug, Clone, Default)]
pub struct Hunted {
    /// The rows this detection needs, by table name.
    pub tables: BTreeMap<String, Table>,
    /// Part of the telemetry may be missing (the service's row cap was hit for this
    /// detection alone).
    pub truncated: bool,
    /// Hunting calls this detection took part in.
    pub calls: u32,
}

/// Splits a batch answer into the tables its rows came from (its `TableName` column).
pub fn split_by_table(answer: &Table) -> BTreeMap<String, Table> {
    let mut out: BTreeMap<String, Table> = BTreeMap::new();
    let Some(ix) = answer.column_index(TABLE_COLUMN) else {
        return out;
    };
    for row in &answer.rows {
        let name = match row.get(ix) {
            Some(Value::String(s)) => s.clone(),
            _ => continue,
        };
        out.entry(name)
            .or_insert_with(|| Table::new(answer.columns.clone()))
            .rows
            .push(row.clone());
    }
    out
}

impl Hunted {
    /// The typed rows the attribution engine reads.
    pub fn telemetry(&self) -> Telemetry {
        let mut t = Telemetry::default();
        for (name, table) in &self.tables {
            t.add_table(name, table);
        }
        t
    }
}

/// The rows one detection needs out of a batch answer: those within its reach, of the devices
/// that held its address (resolved as the batch query resolves them, for this detection
/// alone). Without the device filter every detection would carry every device of its batch:
/// bundles, and the hunter's memory, would grow with the square of the batch.
pub fn tables_for(
    d: &Detection,
    tables: &BTreeMap<String, Table>,
    reach: &Reach,
) -> BTreeMap<String, Table> {
    let events = reach.events(d.window);
    let facts = reach.devices(d.window);
    let span_of = |name: &str| {
        if matches!(name, "DeviceInfo" | "DeviceNetworkInfo") {
            facts
        } else {
            events
        }
    };
    let in_span = |table: &Table, span: Window, row: &[Value]| {
        table
            .column_index("Timestamp")
            .and_then(|ts| row.get(ts))
            .and_then(Value::as_datetime)
            .is_some_and(|x| span.contains(x))
    };
    let devices = d
        .host
        .ip
        .and_then(|ip| devices_holding(ip.to_canonical(), tables, &span_of, &in_span));
    let mut out = BTreeMap::new();
    for (name, table) in tables {
        if table.column_index("Timestamp").is_none() {
            continue;
        }
        let span = span_of(name);
        let device_ix = table.column_index("DeviceId");
        let mut part = Table::new(table.columns.clone());
        part.rows = table
            .rows
            .iter()
            .filter(|r| in_span(table, span, r))
            .filter(|r| match &devices {
                None => true,
                Some(set) => device_ix
                    .and_then(|i| r.get(i))
                    .and_then(Value::as_str)
                    .is_some_and(|id| set.contains(id)),
            })
            .cloned()
            .collect();
        out.insert(name.clone(), part);
    }
    out
}

/// Devices whose network snapshot (facts span) lists `ip`, or whose own connection rows
/// (events span) leave from it: the batch query's two resolvers. `None` when the answer has
/// neither column (nothing to resolve with): the rows are then kept by time alone.
fn devices_holding<'a>(
    ip: IpAddr,
    tables: &'a BTreeMap<String, Table>,
    span_of: &dyn Fn(&str) -> Window,
    in_span: &dyn Fn(&Table, Window, &[Value]) -> bool,
) -> Option<BTreeSet<&'a str>> {
    let same = |text: &str| {
        text.trim()
            .parse::<IpAddr>()
            .is_ok_and(|a| a.to_canonical() == ip)
    };
    let mut out = BTreeSet::new();
    let mut resolvable = false;
    for (name, column) in [
        ("DeviceNetworkInfo", "IPAddresses"),
        ("DeviceNetworkEvents", "LocalIP"),
    ] {
        let Some(table) = tables.get(name) else {
            continue;
        };
        let (Some(dev), Some(col)) = (table.column_index("DeviceId"), table.column_index(column))
        else {
            continue;
        };
        resolvable = true;
        let span = span_of(name);
        for row in &table.rows {
            let holds = match row.get(col) {
                Some(Value::String(s)) if column == "LocalIP" => same(s),
                Some(Value::String(s)) => {
                    serde_json::from_str::<serde_json::Value>(s).is_ok_and(|v| lists_ip(&v, &same))
                }
                Some(Value::Dynamic(v)) => lists_ip(v, &same),
                _ => false,
            };
            if holds
                && in_span(table, span, row)
                && let Some(Value::String(id)) = row.get(dev)
            {
                out.insert(id.as_str());
            }
        }
    }
    resolvable.then_some(out)
}

/// `IPAddresses`: an array of `{"IPAddress": ..}` objects (or of plain strings).
fn lists_ip(v: &serde_json::Value, same: &dyn Fn(&str) -> bool) -> bool {
    v.as_array().is_some_and(|items| {
        items.iter().any(|item| {
            item.get("IPAddress")
                .and_then(serde_json::Value::as_str)
                .or_else(|| item.as_str())
                .is_some_and(same)
        })
    })
}

/// What a batch hunt needs from its caller: the budget, a way to wait out throttling, and a
/// place to report each call.
pub trait HuntHooks: Sync {
    /// Awaited before every call (the tenant's shared budget).
    fn spend(&self) -> BoxFuture<'_, ()>;
    /// The service throttled a call (HTTP 429): resolve once it may be tried again. The same
    /// detections are then hunted again; throttling never fails them.
    fn throttled(&self, retry_after: Option<std::time::Duration>) -> BoxFuture<'_, ()>;
    /// One call finished: `split` when it hunted part of the batch after a split, `outcome`
    /// is `ok` or the error's kind.
    fn called(&self, _split: bool, _outcome: &str, _elapsed: std::time::Duration) {}
}

/// How long to wait on a 429 that named no `Retry-After`.
pub const DEFAULT_THROTTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn is_throttled(e: &HuntError) -> bool {
    e.retryable && (e.kind == "throttled" || e.retry_after.is_some())
}

/// Hunts one batch of one tenant's detections: one call when it fits, halves when the service
/// says the result is too large or truncated. `spend` is awaited before every call (the
/// tenant's shared budget); a throttled call waits `Retry-After` and is made again.
pub async fn hunt_batch<F, Fut>(
    backend: &dyn HuntingBackend,
    batch: Vec<Detection>,
    reach: &Reach,
    spend: &F,
) -> Vec<Outcome>
where
    F: Fn() -> Fut + Sync,
    Fut: Future<Output = ()> + Send + 'static,
{
    struct Spend<'a, F>(&'a F);
    impl<F, Fut> HuntHooks for Spend<'_, F>
    where
        F: Fn() -> Fut + Sync,
        Fut: Future<Output = ()> + Send + 'static,
    {
        fn spend(&self) -> BoxFuture<'_, ()> {
            Box::pin((self.0)())
        }
        fn throttled(&self, retry_after: Option<std::time::Duration>) -> BoxFuture<'_, ()> {
            Box::pin(tokio::time::sleep(
                retry_after.unwrap_or(DEFAULT_THROTTLE_WAIT),
            ))
        }
    }
    hunt_batch_with(backend, batch, reach, &Spend(spend)).await
}

/// [`hunt_batch`] with every hook given.
pub async fn hunt_batch_with(
    backend: &dyn HuntingBackend,
    batch: Vec<Detection>,
    reach: &Reach,
    hooks: &dyn HuntHooks,
) -> Vec<Outcome> {
    let whole = batch.len();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut stack = vec![batch];
    while let Some(part) = stack.pop() {
        let refs: Vec<&Detection> = part.iter().filter(|d| d.host.ip.is_some()).collect();
        if refs.is_empty() {
            outcomes.extend(part.into_iter().map(|d| Outcome {
                detection: d,
                result: Ok(Hunted::default()),
            }));
            continue;
        }
        let text = culprit_kql::printer::print(&batch_query(&refs, reach));
        hooks.spend().await;
        let started = tokio::time::Instant::now();
        let answer = backend.hunt(&text).await;
        let outcome = match &answer {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        hooks.called(part.len() < whole, outcome, started.elapsed());
        match answer {
            Ok(a) if a.truncated && part.len() > 1 => push_halves(&mut stack, part),
            Err(e) if e.split && part.len() > 1 => push_halves(&mut stack, part),
            Err(e) if is_throttled(&e) => {
                hooks.throttled(e.retry_after).await;
                stack.push(part);
            }
            Ok(a) => {
                let tables = split_by_table(&a.table);
                outcomes.extend(part.into_iter().map(|d| {
                    let tables = tables_for(&d, &tables, reach);
                    Outcome {
                        detection: d,
                        result: Ok(Hunted {
                            tables,
                            truncated: a.truncated,
                            calls: 1,
                        }),
                    }
                }));
            }
            Err(e) => outcomes.extend(part.into_iter().map(|d| Outcome {
                detection: d,
                result: Err(e.clone()),
            })),
        }
    }
    outcomes
}

/// The first half (the higher priorities, when the batch is sorted) is hunted first.
fn push_halves(stack: &mut Vec<Vec<Detection>>, mut v: Vec<Detection>) {
    let right = v.split_off(v.len() / 2);
    stack.push(right);
    stack.push(v);
}

/// A shared handle for services.
pub type SharedBackend = Arc<dyn HuntingBackend>;

/// The time the hunter considers "now" (injected in tests).
pub fn now() -> Timestamp {
    Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_model::detection::Subject;
    use culprit_model::{Column, Direction, HostRef, KustoType, SourceKind};

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn detection(ip: &str) -> Detection {
        Detection {
            source: SourceKind::Vectra,
            tenant: "t".into(),
            source_id: ip.into(),
            revision: "1".into(),
            category: "command & control".into(),
            detection_type: "Hidden HTTPS Tunnel".into(),
            threat: Some(50),
            certainty: Some(50),
            severity: None,
            subject: Subject::Host,
            direction: Direction::Outbound,
            host: HostRef {
                ip: Some(ip.parse().unwrap()),
                ..HostRef::default()
            },
            window: Window::new(at("2024-01-01T10:00:00Z"), at("2024-01-01T10:05:00Z")),
            flows: Vec::new(),
            needs_target_list: false,
            summary: None,
            warnings: Vec::new(),
        }
    }

    /// A batch answer for three devices in the same minutes: dev-a connects from 10.0.0.1
    /// (written IPv4-mapped), dev-b's snapshot lists 10.0.0.2, dev-c holds neither.
    fn batch_answer() -> BTreeMap<String, Table> {
        let mut t = Table::new(vec![
            Column::new(TABLE_COLUMN, KustoType::String),
            Column::new("Timestamp", KustoType::DateTime),
            Column::new("DeviceId", KustoType::String),
            Column::new("LocalIP", KustoType::String),
            Column::new("IPAddresses", KustoType::Object),
        ]);
        let ts = Value::DateTime(at("2024-01-01T10:01:00Z"));
        let s = |v: &str| Value::String(v.into());
        let ips = |ip: &str| Value::Dynamic(serde_json::json!([{ "IPAddress": ip }]));
        t.rows = vec![
            vec![
                s("DeviceNetworkEvents"),
                ts.clone(),
                s("dev-a"),
                s("::ffff:10.0.0.1"),
                Value::Null,
            ],
            vec![
                s("DeviceProcessEvents"),
                ts.clone(),
                s("dev-a"),
                Value::Null,
                Value::Null,
            ],
            vec![
                s("DeviceNetworkInfo"),
                ts.clone(),
                s("dev-b"),
                Value::Null,
                ips("10.0.0.2"),
            ],
            vec![
                s("DeviceProcessEvents"),
                ts.clone(),
                s("dev-b"),
                Value::Null,
                Value::Null,
            ],
            vec![
                s("DeviceNetworkEvents"),
                ts.clone(),
                s("dev-c"),
                s("10.0.0.3"),
                Value::Null,
            ],
            vec![
                s("DeviceProcessEvents"),
                ts,
                s("dev-c"),
                Value::Null,
                Value::Null,
            ],
        ];
        split_by_table(&t)
    }

    fn devices_in(tables: &BTreeMap<String, Table>) -> BTreeSet<String> {
        tables
            .values()
            .flat_map(|t| t.rows.iter().map(|r| r[2].as_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn each_detection_keeps_only_the_devices_that_held_its_address() {
        let tables = batch_answer();
        let reach = Reach::default();
        let a = tables_for(&detection("10.0.0.1"), &tables, &reach);
        assert_eq!(devices_in(&a), BTreeSet::from(["dev-a".to_owned()]));
        assert_eq!(a["DeviceProcessEvents"].rows.len(), 1);
        let b = tables_for(&detection("10.0.0.2"), &tables, &reach);
        assert_eq!(devices_in(&b), BTreeSet::from(["dev-b".to_owned()]));
        let nobody = tables_for(&detection("10.0.0.9"), &tables, &reach);
        assert!(devices_in(&nobody).is_empty());
    }
}
