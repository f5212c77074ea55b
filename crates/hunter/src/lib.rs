//! Hunting workers: turn batches of detections into one Advanced Hunting query each, within the
//! tenant's budget, and hand back the telemetry each detection needs.

mod mde_backend;
pub mod query;
pub mod service;

pub use mde_backend::MdeBackend;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures::future::BoxFuture;

use culprit_model::{Detection, Table, Telemetry, Timestamp, Value};

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

/// Splits a `union withsource=TableName` result into the tables its rows came from.
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

/// The rows one detection needs out of a batch answer: those within its reach.
pub fn tables_for(
    d: &Detection,
    tables: &BTreeMap<String, Table>,
    reach: &Reach,
) -> BTreeMap<String, Table> {
    let events = reach.events(d.window);
    let facts = reach.devices(d.window);
    let mut out = BTreeMap::new();
    for (name, table) in tables {
        let span = if matches!(name.as_str(), "DeviceInfo" | "DeviceNetworkInfo") {
            facts
        } else {
            events
        };
        let Some(ts) = table.column_index("Timestamp") else {
            continue;
        };
        let mut part = Table::new(table.columns.clone());
        part.rows = table
            .rows
            .iter()
            .filter(|r| {
                r.get(ts)
                    .and_then(Value::as_datetime)
                    .is_some_and(|x| span.contains(x))
            })
            .cloned()
            .collect();
        out.insert(name.clone(), part);
    }
    out
}

/// Hunts one batch of one tenant's detections: one call when it fits, halves when the service
/// says the result is too large or truncated. `spend` is awaited before every call (the
/// tenant's shared budget).
pub async fn hunt_batch<F, Fut>(
    backend: &dyn HuntingBackend,
    batch: Vec<Detection>,
    reach: &Reach,
    spend: &F,
) -> Vec<Outcome>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
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
        spend().await;
        let answer = backend.hunt(&text).await;
        match answer {
            Ok(a) if a.truncated && part.len() > 1 => stack.extend(halves(part)),
            Err(e) if e.split && part.len() > 1 => stack.extend(halves(part)),
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

fn halves(mut v: Vec<Detection>) -> [Vec<Detection>; 2] {
    let right = v.split_off(v.len() / 2);
    [v, right]
}

/// A shared handle for services.
pub type SharedBackend = Arc<dyn HuntingBackend>;

/// The time the hunter considers "now" (injected in tests).
pub fn now() -> Timestamp {
    Timestamp::now()
}
