//! Coverage of a corpus of hunting queries (JSON Lines: `id`, `query`, `tables`, ...): how many
//! parse, and, given tables, how many evaluate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Database, EvalOptions, KqlError};

/// One line of a corpus file.
#[derive(Clone, Debug, Deserialize)]
pub struct CorpusEntry {
    pub id: String,
    pub query: String,
    #[serde(default)]
    pub tables: Vec<String>,
}

/// Why one query failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub id: String,
    /// `parse` or `evaluate` (or `json` for a line that is not a corpus entry).
    pub stage: String,
    /// The error's kind (`syntax`, `unsupported:join`, `semantic`, ...).
    pub kind: String,
    pub error: String,
    /// Whether the query names only Device* tables.
    pub device_only: bool,
}

/// The coverage figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub total: usize,
    pub parsed: usize,
    /// Queries evaluated without error; `None` when no database was given.
    pub evaluated: Option<usize>,
    /// Queries that name only Device* tables (the ones the evaluation target counts).
    pub device_only: usize,
    /// Device*-only queries that evaluated.
    pub device_only_evaluated: Option<usize>,
    /// Failure count by kind.
    pub failures: BTreeMap<String, usize>,
    pub failing: Vec<Failure>,
}

impl Report {
    /// The summary line of `--format json`.
    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::json!({
            "total": self.total,
            "parsed": self.parsed,
            "evaluated": self.evaluated,
            "device_only": self.device_only,
            "device_only_evaluated": self.device_only_evaluated,
            "failures": self.failures,
        })
    }
}

fn is_device_only(e: &CorpusEntry) -> bool {
    !e.tables.is_empty()
        && e.tables
            .iter()
            .all(|t| crate::schema::DEVICE_TABLES.contains(&t.as_str()))
}

/// Checks every line of a corpus. With a database, parsed queries are also evaluated against
/// it (tables it lacks evaluate as empty Device* tables or fail as unknown).
pub fn check(jsonl: &str, db: Option<&Database>, opts: &EvalOptions) -> Report {
    let mut r = Report {
        evaluated: db.map(|_| 0),
        device_only_evaluated: db.map(|_| 0),
        ..Report::default()
    };
    for (n, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        r.total += 1;
        let entry: CorpusEntry = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => {
                r.fail(
                    format!("line {}", n + 1),
                    "json",
                    "json".into(),
                    e.to_string(),
                    false,
                );
                continue;
            }
        };
        let device_only = is_device_only(&entry);
        r.device_only += usize::from(device_only);
        let q = match crate::parse(&entry.query) {
            Ok(q) => q,
            Err(e) => {
                r.fail_with(&entry.id, "parse", &e, device_only);
                continue;
            }
        };
        r.parsed += 1;
        let Some(db) = db else { continue };
        match crate::evaluate(&q, db, opts) {
            Ok(_) => {
                r.evaluated = r.evaluated.map(|c| c + 1);
                if device_only {
                    r.device_only_evaluated = r.device_only_evaluated.map(|c| c + 1);
                }
            }
            Err(e) => r.fail_with(&entry.id, "evaluate", &e, device_only),
        }
    }
    r
}

impl Report {
    fn fail_with(&mut self, id: &str, stage: &str, e: &KqlError, device_only: bool) {
        self.fail(
            id.to_owned(),
            stage,
            format!("{stage}:{}", e.kind()),
            e.to_string(),
            device_only,
        );
    }
    fn fail(&mut self, id: String, stage: &str, kind: String, error: String, device_only: bool) {
        *self.failures.entry(kind.clone()).or_default() += 1;
        self.failing.push(Failure {
            id,
            stage: stage.to_owned(),
            kind,
            error,
            device_only,
        });
    }
}
