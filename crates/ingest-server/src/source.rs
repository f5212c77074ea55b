//! Where input comes from and how to read it.

use std::fmt;

use culprit_ingest::{IngestError, Parsed, suricata, vectra, vectra_syslog, zeek};

/// The input format of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Vectra API detection objects: one object, an array, or a list page (`results`).
    VectraJson,
    /// Vectra syslog messages (CEF or JSON, with or without a syslog header), one per line.
    VectraSyslog,
    /// Suricata EVE JSON lines (`alert` records; others are skipped).
    SuricataEve,
    /// Zeek `notice.log`, TSV with its header or JSON lines.
    ZeekNotice,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 4] = [
        Format::VectraJson,
        Format::VectraSyslog,
        Format::SuricataEve,
        Format::ZeekNotice,
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::VectraJson => "vectra_json",
            Format::VectraSyslog => "vectra_syslog",
            Format::SuricataEve => "suricata_eve",
            Format::ZeekNotice => "zeek_notice",
        }
    }

    /// From the configuration name.
    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Parses `raw` for `tenant`. `Err` only when the input as a whole is unreadable; each
    /// record otherwise carries its own outcome.
    pub(crate) fn parse_input(self, raw: &[u8], tenant: &str) -> Result<Vec<Parsed>, IngestError> {
        match self {
            Format::VectraJson => vectra::parse_json(raw, tenant),
            Format::VectraSyslog => Ok(vectra_syslog::parse_lines(raw, tenant)),
            Format::SuricataEve => Ok(suricata::parse_lines(raw, tenant)),
            Format::ZeekNotice => Ok(zeek::parse_notice(raw, tenant)),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured source. Its tenant is the only tenant its detections can be filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The source's name (the webhook path's `{source}`).
    pub name: String,
    /// The Culprit tenant the source belongs to.
    pub tenant: String,
    /// How its input is read.
    pub format: Format,
}

impl Source {
    /// A source.
    pub fn new(name: impl Into<String>, tenant: impl Into<String>, format: Format) -> Self {
        Source {
            name: name.into(),
            tenant: tenant.into(),
            format,
        }
    }
}
