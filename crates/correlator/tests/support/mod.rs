//! Loads a scenario folder (FORMAT.md v1) for tests: MDE tables into `Telemetry`, Vectra
//! detections into `Detection`s, and `truth.json`. The engine itself never reads files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use culprit_correlator::eval::Truth;
use culprit_correlator::{Options, Scorer, attribute};
use culprit_model::{Column, Correlation, Detection, KustoType, Table, Telemetry, Timestamp};
use serde_json::Value as J;

pub struct Scenario {
    pub name: String,
    pub telemetry: Telemetry,
    pub detections: Vec<Detection>,
    pub truth: Truth,
}

/// One column type per key: numbers are Int64 unless any is fractional, booleans Boolean,
/// everything else String (the model's accessors parse datetimes and dynamic text).
fn infer_columns(rows: &[serde_json::Map<String, J>]) -> Vec<Column> {
    let mut types: BTreeMap<String, Option<KustoType>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for row in rows {
        for (k, v) in row {
            if !types.contains_key(k) {
                order.push(k.clone());
            }
            let slot = types.entry(k.clone()).or_insert(None);
            let t = match v {
                J::Number(n) if n.is_i64() || n.is_u64() => Some(KustoType::Int64),
                J::Number(_) => Some(KustoType::Double),
                J::Bool(_) => Some(KustoType::Boolean),
                J::Null => None,
                _ => Some(KustoType::String),
            };
            *slot = match (*slot, t) {
                (Some(KustoType::Int64), Some(KustoType::Double)) => Some(KustoType::Double),
                (None, t) => t,
                (s, _) => s,
            };
        }
    }
    order
        .into_iter()
        .map(|k| {
            let ty = types
                .get(&k)
                .copied()
                .flatten()
                .unwrap_or(KustoType::String);
            Column::new(k, ty)
        })
        .collect()
}

pub fn load_table(path: &Path) -> Table {
    let text = std::fs::read_to_string(path).unwrap();
    let rows: Vec<serde_json::Map<String, J>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Table::from_json_objects(infer_columns(&rows), rows.iter())
}

pub fn load_telemetry(dir: &Path) -> Telemetry {
    let mut tel = Telemetry::default();
    for name in culprit_model::telemetry::TABLES {
        let p = dir.join("mde").join(format!("{name}.jsonl"));
        if p.exists() {
            tel.add_table(name, &load_table(&p));
        }
    }
    tel
}

/// Vectra detections through the product's own parser; a detection the parser rejects fails
/// the test with its error.
pub fn parse_vectra(bytes: &[u8], tenant: &str) -> Vec<Detection> {
    culprit_ingest::vectra::parse_json(bytes, tenant)
        .unwrap()
        .into_iter()
        .map(|p| p.detection.unwrap())
        .collect()
}

pub fn load(dir: &Path) -> Scenario {
    let bytes = std::fs::read(dir.join("ndr").join("vectra_detections.json")).unwrap();
    let truth =
        Truth::from_json(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    Scenario {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        telemetry: load_telemetry(dir),
        detections: parse_vectra(&bytes, "test-tenant"),
        truth,
    }
}

pub fn manifest_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Long after every recording: telemetry has landed.
pub fn later() -> Timestamp {
    Timestamp::parse("2030-01-01T00:00:00Z").unwrap()
}

pub fn run(s: &Scenario, scorer: Scorer) -> Vec<Correlation> {
    let opts = Options {
        scorer,
        ..Options::default()
    };
    s.detections
        .iter()
        .map(|d| attribute(d, &s.telemetry, &opts, later()))
        .collect()
}
