//! Detection parsers (Vectra, Suricata EVE, Zeek) and the ingest service.
//!
//! Every parser works on bytes and returns one [`Parsed`] per record, so that a service can
//! feed it a file, an HTTP body or a syslog message, publish the good detections and
//! dead-letter the bad records with the reason (an [`IngestError`] naming the field).
//!
//! - [`vectra`]: API v2.x / v3.x detection objects (page, array or one object).
//! - [`vectra_syslog`]: Vectra CEF and JSON syslog, RFC 5424/3164 headers, TCP framing.
//! - [`suricata`]: EVE `alert` lines (other event types are skipped, not errors).
//! - [`zeek`]: notice.log rows are detections; conn.log rows are flow records that enrich
//!   detections, and become detections only through [`zeek::ConnRecord::into_detection`].
//! - [`community_id`]: Community ID v1, checked against the spec's vectors.
//!
//! Conventions shared by all parsers: IPs canonical (`::ffff:a.b.c.d` becomes IPv4), times
//! UTC, numbers accepted as JSON numbers or numeric strings, a bad optional field becomes a
//! line in `Detection::warnings` and never drops the detection, a missing required field is an
//! [`IngestError::Missing`] naming it. `severity`, when a source has one, is on a 0–100 scale
//! where higher is worse (Suricata `100 / severity`, CEF severity × 10), so that
//! `Detection::priority` compares across sources.

pub mod community_id;
mod error;
mod flows;
mod json;
mod leaf;
pub mod suricata;
pub mod time;
pub mod vectra;
pub mod vectra_syslog;
pub mod zeek;

pub use error::IngestError;

use culprit_model::Detection;

/// One record of an input: its position in the input and its outcome. One bad record never
/// fails the others.
#[derive(Debug)]
pub struct Parsed {
    /// Index of the record in the input (array position, or 0-based line number).
    pub raw_index: usize,
    pub detection: Result<Detection, IngestError>,
}

/// Splits newline-delimited input (JSON lines, TSV rows) into `(0-based line index, line)`,
/// without the line ending, skipping blank lines.
pub(crate) fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
}

/// Parses one JSON value from a line, naming the line on failure.
pub(crate) fn json_line(line: &[u8], label: &str) -> Result<serde_json::Value, IngestError> {
    serde_json::from_slice(line).map_err(|e| IngestError::Malformed {
        path: label.trim_end_matches(':').to_owned(),
        reason: format!("not JSON: {e}"),
    })
}
