//! The normalised detection: what every NDR format becomes before anything else sees it.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::timestamp::Timestamp;

/// Which network sensor reported the detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Vectra,
    Suricata,
    Zeek,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Vectra => "vectra",
            SourceKind::Suricata => "suricata",
            SourceKind::Zeek => "zeek",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "vectra" => Some(SourceKind::Vectra),
            "suricata" => Some(SourceKind::Suricata),
            "zeek" => Some(SourceKind::Zeek),
            _ => None,
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{source}:{tenant}:{id}:{revision}`: the idempotency key everywhere downstream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DetectionKey(pub String);

impl DetectionKey {
    pub fn new(source: SourceKind, tenant: &str, id: &str, revision: &str) -> Self {
        DetectionKey(format!("{source}:{tenant}:{id}:{revision}"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DetectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Closed interval in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    pub fn new(a: Timestamp, b: Timestamp) -> Self {
        Window {
            start: a.min(b),
            end: a.max(b),
        }
    }
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t <= self.end
    }
    /// Grows the window to cover `t`.
    pub fn cover(&mut self, t: Timestamp) {
        self.start = self.start.min(t);
        self.end = self.end.max(t);
    }
}

/// Whether the detection's host started the flows (outbound: C2, exfiltration, scans) or
/// received them (inbound: lateral movement onto the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Outbound,
    Inbound,
}

/// What the detection is about: host detections can be attributed to a process; account
/// detections (a user, not a machine) cannot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    #[default]
    Host,
    Account,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostRef {
    /// Canonical: IPv4-mapped IPv6 is stored as IPv4.
    pub ip: Option<IpAddr>,
    pub name: Option<String>,
    /// The sensor's own id for the host (Vectra `src_host.id`).
    pub source_host_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Icmp,
    Other,
}

impl Protocol {
    pub fn parse(s: &str) -> Protocol {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Protocol::Tcp,
            "udp" | "17" => Protocol::Udp,
            "icmp" | "1" | "ipv6-icmp" | "icmp6" | "58" => Protocol::Icmp,
            _ => Protocol::Other,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Other => "other",
        }
    }
}

/// One connection the sensor saw between the host and a remote peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub first: Timestamp,
    pub last: Timestamp,
    /// The host's own port, when the sensor reports it (Suricata, Zeek; not Vectra).
    pub local_port: Option<u16>,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    /// Community ID v1 of the connection, computed when the source gives none and the
    /// 5-tuple is known.
    pub community_id: Option<String>,
}

/// The host's traffic with one remote peer and port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub remote_ip: IpAddr,
    pub remote_port: Option<u16>,
    pub protocol: Protocol,
    /// Domain, SNI or URL host the sensor names for the peer.
    pub domain: Option<String>,
    pub sessions: Vec<Session>,
}

/// A detection, normalised from any source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub source: SourceKind,
    pub tenant: String,
    /// The source's own id, as a string (Vectra `id`, EVE `flow_id`, Zeek `uid`).
    pub source_id: String,
    /// Vectra: `last_timestamp`; EVE and Zeek: "0".
    pub revision: String,
    pub category: String,
    pub detection_type: String,
    pub threat: Option<u32>,
    pub certainty: Option<u32>,
    pub severity: Option<u32>,
    pub subject: Subject,
    pub direction: Direction,
    pub host: HostRef,
    pub window: Window,
    pub flows: Vec<Flow>,
    /// Multi-target detections announced by syslog with `dst=0.0.0.0`: the targets must be
    /// fetched from the API before attribution.
    pub needs_target_list: bool,
    pub summary: Option<String>,
    /// Optional fields that were present but unusable; the detection is still processed.
    pub warnings: Vec<String>,
}

impl Detection {
    pub fn key(&self) -> DetectionKey {
        DetectionKey::new(self.source, &self.tenant, &self.source_id, &self.revision)
    }

    /// Ordering weight for hunting: higher threat × certainty goes first.
    pub fn priority(&self) -> u32 {
        match (self.threat, self.certainty, self.severity) {
            (Some(t), Some(c), _) => t.saturating_mul(c),
            (_, _, Some(s)) => s.saturating_mul(100),
            _ => 0,
        }
    }

    pub fn session_count(&self) -> usize {
        self.flows.iter().map(|f| f.sessions.len()).sum()
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as IPv4; everything else unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Parses an address in any textual form the sources write (IPv6 expanded or compressed,
/// IPv4-mapped, bracketed) into its canonical form.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    // A zone index (fe80::1%eth0) names an interface, not part of the address.
    let t = t.split('%').next().unwrap_or(t);
    t.parse::<IpAddr>().ok().map(canonical_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_become_ipv4() {
        assert_eq!(parse_ip("::ffff:192.168.1.41"), parse_ip("192.168.1.41"));
        assert_eq!(
            parse_ip("2001:0db8:0000:0000:0000:0000:0000:0001"),
            parse_ip("2001:db8::1")
        );
        assert_eq!(parse_ip("fe80::1%eth0"), parse_ip("fe80::1"));
        assert_eq!(parse_ip("not an ip"), None);
    }

    #[test]
    fn key_has_four_parts() {
        let k = DetectionKey::new(SourceKind::Vectra, "t1", "2569", "2023-08-16T04:59:22Z");
        assert_eq!(k.as_str(), "vectra:t1:2569:2023-08-16T04:59:22Z");
    }
}
