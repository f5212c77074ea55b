//! Loads a scenario folder (FORMAT.md v1) for tests: MDE tables into `Telemetry`, Vectra
//! detections into `Detection`s, and `truth.json`. The engine itself never reads files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use culprit_correlator::eval::Truth;
use culprit_correlator::{Options, Scorer, attribute};
use culprit_model::{Correlation, Detection, Telemetry, Timestamp};

pub struct Scenario {
    pub name: String,
    pub telemetry: Telemetry,
    pub detections: Vec<Detection>,
    pub truth: Truth,
}

/// The scenario's tables through the product's own loader (the one the twin serves from).
pub fn load_telemetry(dir: &Path) -> Telemetry {
    let tables = culprit_kql::load::load_dir(&dir.join("mde")).unwrap();
    let mut tel = Telemetry::default();
    for (name, table) in &tables {
        tel.add_table(name, table);
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
