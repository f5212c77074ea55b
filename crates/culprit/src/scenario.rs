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
    match feed {
        Feed::Vectra => vectra_file(&dir.join("ndr").join("vectra_detections.json"), tenant),
        Feed::Suricata | Feed::Zeek => bail!(
            "--source {}: reading this feed from a scenario is not built yet (only vectra is)",
            format!("{feed:?}").to_lowercase()
        ),
    }
}

/// A Vectra JSON file: an API page, an array or one detection.
pub fn vectra_file(path: &Path, tenant: &str) -> Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = culprit_ingest::vectra::parse_json(&bytes, tenant)
        .with_context(|| format!("parsing {}", path.display()))?;
    let mut out = Loaded::default();
    for p in parsed {
        match p.detection {
            Ok(d) => out.detections.push(d),
            Err(e) => out
                .rejected
                .push(format!("{} record {}: {e}", path.display(), p.raw_index)),
        }
    }
    Ok(out)
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
