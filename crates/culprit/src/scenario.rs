//! Reading a scenario folder (`../shared/scenarios/FORMAT.md`): its detections by source.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use culprit_model::Detection;

/// Which of the scenario's network feeds to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Feed {
    Vectra,
    Suricata,
    Zeek,
}

/// The detections of a file, and the records that could not be read (with their reason).
#[derive(Debug, Default)]
pub struct Loaded {
    pub detections: Vec<Detection>,
    pub rejected: Vec<String>,
}

/// Reads the scenario's detections for `feed`, as tenant `tenant`.
pub fn detections(dir: &Path, feed: Feed, tenant: &str) -> Result<Loaded> {
    let ndr = dir.join("ndr");
    match feed {
        Feed::Vectra => vectra_file(&ndr.join("vectra_detections.json"), tenant),
        Feed::Suricata => {
            let path = ndr.join("suricata_eve.jsonl");
            let bytes = read(&path)?;
            Ok(collect(
                &path,
                culprit_ingest::suricata::parse_lines(&bytes, tenant),
            ))
        }
        Feed::Zeek => {
            let notice = ndr.join("zeek").join("notice.log");
            if !notice.is_file() {
                bail!(
                    "--source zeek: {} does not exist (this recording has no Zeek notices)",
                    notice.display()
                );
            }
            let mut loaded = collect(
                &notice,
                culprit_ingest::zeek::parse_notice(&read(&notice)?, tenant),
            );
            // conn.log, where present, adds each notice's connection details.
            let conn = ndr.join("zeek").join("conn.log");
            if conn.is_file() {
                let records: Vec<_> = culprit_ingest::zeek::parse_conn(&read(&conn)?)
                    .into_iter()
                    .filter_map(|(_, r)| r.ok())
                    .collect();
                for d in &mut loaded.detections {
                    culprit_ingest::zeek::enrich(d, &records);
                }
            }
            Ok(loaded)
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Keeps the detections; records that are not detections (other EVE event types) are left
/// out quietly, the rest are reported with their reason.
fn collect(path: &Path, parsed: Vec<culprit_ingest::Parsed>) -> Loaded {
    let mut out = Loaded::default();
    for p in parsed {
        match p.detection {
            Ok(d) => out.detections.push(d),
            Err(e) if e.is_skip() => {}
            Err(e) => out
                .rejected
                .push(format!("{} record {}: {e}", path.display(), p.raw_index)),
        }
    }
    out
}

/// A Vectra JSON file: an API page, an array or one detection.
pub fn vectra_file(path: &Path, tenant: &str) -> Result<Loaded> {
    let bytes = read(path)?;
    let parsed = culprit_ingest::vectra::parse_json(&bytes, tenant)
        .with_context(|| format!("parsing {}", path.display()))?;
    Ok(collect(path, parsed))
}

/// The folder's name, as truth files and reports name scenarios.
pub fn name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// The bundled scenario the demo runs: next to the binary's sources in a checkout.
pub fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/scenarios/lsass_01")
        .components()
        .collect()
}
