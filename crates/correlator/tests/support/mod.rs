//! Loads a scenario folder (FORMAT.md v1) for tests: MDE tables into `Telemetry`, Vectra
//! detections into `Detection`s, and `truth.json`. The engine itself never reads files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use culprit_correlator::eval::Truth;
use culprit_correlator::{Options, Scorer, attribute};
use culprit_model::detection::{Flow, HostRef, Protocol, Session, SourceKind, Subject, parse_ip};
use culprit_model::{Column, Correlation, Detection, Direction, KustoType, Table, Telemetry, Timestamp, Window};
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
            let ty = types.get(&k).copied().flatten().unwrap_or(KustoType::String);
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

fn ts(v: &J) -> Option<Timestamp> {
    v.as_str().and_then(|s| Timestamp::parse(s).ok())
}

/// A minimal reading of Vectra v3.3 host detections, enough for the engine's tests (the
/// product's parser lives in culprit-ingest).
pub fn parse_vectra(text: &str, tenant: &str) -> Vec<Detection> {
    let page: J = serde_json::from_str(text).unwrap();
    let results = page.get("results").and_then(J::as_array).cloned().unwrap_or_default();
    results.iter().map(|r| vectra_detection(r, tenant)).collect()
}

fn vectra_detection(r: &J, tenant: &str) -> Detection {
    let s = |k: &str| r.get(k).and_then(J::as_str).unwrap_or("").to_owned();
    let first = ts(&r["first_timestamp"]).unwrap();
    let last = ts(&r["last_timestamp"]).unwrap_or(first);
    let mut flows: Vec<Flow> = Vec::new();
    for g in r.get("grouped_details").and_then(J::as_array).into_iter().flatten() {
        let domain = g
            .get("target_domains")
            .and_then(J::as_array)
            .and_then(|d| d.first())
            .and_then(J::as_str)
            .map(str::to_owned);
        for sess in g.get("sessions").and_then(J::as_array).into_iter().flatten() {
            let Some(ip) = sess.get("dst_ip").and_then(J::as_str).and_then(parse_ip) else {
                continue;
            };
            let port = sess.get("dst_port").and_then(J::as_u64).and_then(|p| u16::try_from(p).ok());
            let proto = Protocol::parse(sess.get("protocol").and_then(J::as_str).unwrap_or("tcp"));
            let first = ts(&sess["first_timestamp"]).unwrap_or(first);
            let session = Session {
                first,
                last: ts(&sess["last_timestamp"]).unwrap_or(first),
                local_port: None,
                bytes_sent: sess.get("bytes_sent").and_then(J::as_u64),
                bytes_received: sess.get("bytes_received").and_then(J::as_u64),
                community_id: None,
            };
            match flows
                .iter_mut()
                .find(|f| f.remote_ip == ip && f.remote_port == port && f.protocol == proto)
            {
                Some(f) => f.sessions.push(session),
                None => flows.push(Flow {
                    remote_ip: ip,
                    remote_port: port,
                    protocol: proto,
                    domain: domain.clone(),
                    sessions: vec![session],
                }),
            }
        }
    }
    Detection {
        source: SourceKind::Vectra,
        tenant: tenant.to_owned(),
        source_id: r["id"].to_string(),
        revision: s("last_timestamp"),
        category: s("category"),
        detection_type: s("detection_type"),
        threat: r.get("threat").and_then(J::as_u64).map(|v| v as u32),
        certainty: r.get("certainty").and_then(J::as_u64).map(|v| v as u32),
        severity: None,
        subject: Subject::Host,
        direction: Direction::Outbound,
        host: HostRef {
            ip: r.get("src_ip").and_then(J::as_str).and_then(parse_ip),
            name: r.pointer("/src_host/name").and_then(J::as_str).map(str::to_owned),
            source_host_id: r.pointer("/src_host/id").map(|v| v.to_string()),
        },
        window: Window::new(first, last),
        flows,
        needs_target_list: false,
        summary: None,
        warnings: Vec::new(),
    }
}

pub fn load(dir: &Path) -> Scenario {
    let text = std::fs::read_to_string(dir.join("ndr").join("vectra_detections.json")).unwrap();
    let truth = Truth::from_json(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    Scenario {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        telemetry: load_telemetry(dir),
        detections: parse_vectra(&text, "test-tenant"),
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
    let opts = Options { scorer, ..Options::default() };
    s.detections
        .iter()
        .map(|d| attribute(d, &s.telemetry, &opts, later()))
        .collect()
}
