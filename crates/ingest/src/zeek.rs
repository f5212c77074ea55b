//! Zeek `notice.log` and `conn.log`, in TSV (columns from the `#fields`/`#types` header) or
//! JSON lines (dotted `"id.orig_h"`, underscored `"id_orig_h"`, or nested `"id": {...}` keys).
//!
//! What becomes a detection:
//! - [`parse_notice`]: every notice row is a detection (`detection_type` = `note`, e.g.
//!   `SSL::Invalid_Server_Cert`, `category` = the note's module, lower-cased).
//! - [`parse_conn`]: conn rows are flow *records*, not detections: a conn.log is the sensor's
//!   traffic, not an alert. They enrich detections ([`enrich`]: duration, bytes, Community ID
//!   for sessions with the same tuple or uid), and become detections only when a source is
//!   explicitly configured to alert on them ([`ConnRecord::into_detection`]).
//!
//! `source_id` = `uid` (or `h` + 16 hex digits of a SHA-1 of the row when unset), revision "0".
//! The host is the originator (`id.orig_h`), outbound, unless the notice's `src` is the
//! responder or an external originator reached an internal responder: then inbound.

use std::net::IpAddr;

use culprit_model::detection::{Direction, HostRef, Protocol, SourceKind, Subject};
use culprit_model::{Detection, Duration, Session, Timestamp, Window};
use serde_json::{Map, Value};

use crate::community_id::{community_id, protocol_number};
use crate::flows::{FlowSet, is_internal};
use crate::json::{self, Path, Warnings, field, invalid, required, text};
use crate::time::decimal_ticks;
use crate::{IngestError, Parsed, lines};

mod tsv;

/// Every notice row as a detection; header and comment lines yield nothing.
pub fn parse_notice(bytes: &[u8], tenant: &str) -> Vec<Parsed> {
    records(bytes)
        .into_iter()
        .map(|(i, rec)| Parsed {
            raw_index: i,
            detection: rec
                .and_then(|r| notice(&r, tenant, &Path::Root(&format!("line {}:", i + 1)))),
        })
        .collect()
}

/// Every conn row as a flow record, with its 0-based line index.
pub fn parse_conn(bytes: &[u8]) -> Vec<(usize, Result<ConnRecord, IngestError>)> {
    records(bytes)
        .into_iter()
        .map(|(i, rec)| {
            let label = format!("line {}:", i + 1);
            (
                i,
                rec.and_then(|r| ConnRecord::from_record(&r, &Path::Root(&label))),
            )
        })
        .collect()
}

/// The rows of a Zeek log (TSV or JSON lines), each as a flat JSON object with dotted keys
/// and typed values, with its 0-based line index.
pub fn records(bytes: &[u8]) -> Vec<(usize, Result<Value, IngestError>)> {
    let mut header = tsv::Header::default();
    let mut out = Vec::new();
    for (i, line) in lines(bytes) {
        let label = format!("line {}", i + 1);
        if line.first() == Some(&b'#') {
            header.directive(line);
            continue;
        }
        let first = line.iter().find(|b| !b.is_ascii_whitespace());
        let rec = if first == Some(&b'{') {
            crate::json_line(line, &label).and_then(|v| flatten_json(v, &label))
        } else {
            header.row(line, &label)
        };
        out.push((i, rec));
    }
    out
}

/// JSON rows: `id_orig_h` and nested `id: {orig_h}` become `id.orig_h`.
fn flatten_json(v: Value, label: &str) -> Result<Value, IngestError> {
    let Value::Object(map) = v else {
        return Err(IngestError::Malformed {
            path: label.to_owned(),
            reason: "expected a JSON object".to_owned(),
        });
    };
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        match (k.as_str(), v) {
            ("id", Value::Object(inner)) => {
                for (ik, iv) in inner {
                    out.insert(format!("id.{ik}"), iv);
                }
            }
            (key, v) => {
                let key = match key.strip_prefix("id_") {
                    Some(rest @ ("orig_h" | "orig_p" | "resp_h" | "resp_p")) => {
                        format!("id.{rest}")
                    }
                    _ => key.to_owned(),
                };
                out.insert(key, v);
            }
        }
    }
    Ok(Value::Object(out))
}

/// The connection tuple of a row, originator first.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tuple {
    orig: IpAddr,
    orig_port: Option<u16>,
    resp: Option<IpAddr>,
    resp_port: Option<u16>,
}

fn tuple(r: &Value, path: &Path<'_>, w: &mut Warnings) -> Result<Tuple, IngestError> {
    let orig = match field(r, "id.orig_h") {
        Some(v) => json::ip(v, &path.key("id.orig_h"))?,
        None => match field(r, "src") {
            Some(v) => json::ip(v, &path.key("src"))?,
            None => {
                return Err(IngestError::Missing {
                    path: format!("{} (or src)", path.key("id.orig_h").render()),
                });
            }
        },
    };
    let resp = w
        .opt(r, "id.resp_h", path, json::ip)
        .or_else(|| w.opt(r, "dst", path, json::ip));
    Ok(Tuple {
        orig,
        orig_port: w.opt(r, "id.orig_p", path, json::port),
        resp,
        resp_port: w
            .opt(r, "id.resp_p", path, json::port)
            .or_else(|| w.opt(r, "p", path, json::port)),
    })
}

/// Zeek `ts`: epoch seconds (TSV, default JSON) or ISO-8601 (JSON with ISO timestamps).
fn ts(r: &Value, path: &Path<'_>) -> Result<Timestamp, IngestError> {
    required(r, &["ts"], path, json::time)
}

fn uid_or_digest(r: &Value, path: &Path<'_>, w: &mut Warnings) -> String {
    if let Some(uid) = w.opt(r, "uid", path, json::non_empty_text) {
        return uid;
    }
    json::digest_id(r)
}

fn protocol_of(r: &Value, path: &Path<'_>, w: &mut Warnings) -> (Option<String>, Protocol) {
    let name = w.opt(r, "proto", path, text);
    let p = name
        .as_deref()
        .map(Protocol::parse)
        .unwrap_or(Protocol::Other);
    (name, p)
}

fn notice(r: &Value, tenant: &str, path: &Path<'_>) -> Result<Detection, IngestError> {
    let mut w = Warnings::default();
    let when = ts(r, path)?;
    let note = required(r, &["note"], path, json::non_empty_text)?;
    let t = tuple(r, path, &mut w)?;
    let subject_src = w.opt(r, "src", path, json::ip);
    // The notice's `src` naming the responder says inbound outright; otherwise an external
    // originator reaching an internal responder is an attack on the responder.
    let inbound = match (subject_src, t.resp) {
        (Some(s), Some(resp)) if s == resp && s != t.orig => true,
        (_, Some(resp)) => !is_internal(t.orig) && is_internal(resp),
        _ => false,
    };
    let (proto_name, protocol) = protocol_of(r, path, &mut w);
    let mut flows = FlowSet::default();
    let (host, local_port, remote, remote_port) = if inbound {
        (
            t.resp.unwrap_or(t.orig),
            t.resp_port,
            Some(t.orig),
            t.orig_port,
        )
    } else {
        (t.orig, t.orig_port, t.resp, t.resp_port)
    };
    if let Some(remote) = remote {
        let community = w
            .opt(r, "community_id", path, text)
            .or_else(|| tuple_community_id(&t, proto_name.as_deref()));
        let session = Session {
            first: when,
            last: when,
            local_port,
            bytes_sent: None,
            bytes_received: None,
            community_id: community,
        };
        flows.add(remote, remote_port, protocol, None, session);
    }
    let module = note
        .split("::")
        .next()
        .unwrap_or(&note)
        .to_ascii_lowercase();
    let msg = w.opt(r, "msg", path, text);
    let sub = w.opt(r, "sub", path, text);
    Ok(Detection {
        source: SourceKind::Zeek,
        tenant: tenant.to_owned(),
        source_id: uid_or_digest(r, path, &mut w),
        revision: "0".to_owned(),
        category: module,
        detection_type: note,
        threat: None,
        certainty: None,
        severity: None,
        subject: Subject::Host,
        direction: if inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        },
        host: HostRef {
            ip: Some(host),
            name: None,
            source_host_id: None,
        },
        window: Window::new(when, when),
        flows: flows.into_flows(),
        needs_target_list: false,
        summary: match (msg, sub) {
            (Some(m), Some(s)) => Some(format!("{m} ({s})")),
            (m, s) => m.or(s),
        },
        warnings: w.0,
    })
}

fn tuple_community_id(t: &Tuple, proto: Option<&str>) -> Option<String> {
    let resp = t.resp?;
    let num = protocol_number(proto?, t.orig.is_ipv6())?;
    // For ICMP Zeek's ports already are type and code/counterpart, as Community ID wants.
    community_id(t.orig, resp, t.orig_port, t.resp_port, num, 0)
}

/// One conn.log row.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnRecord {
    pub ts: Timestamp,
    pub uid: String,
    pub orig_h: IpAddr,
    pub orig_p: Option<u16>,
    pub resp_h: IpAddr,
    pub resp_p: Option<u16>,
    pub protocol: Protocol,
    /// Zeek's `proto` as written (`tcp`, `udp`, `icmp`, `unknown_transport`).
    pub proto_name: Option<String>,
    pub service: Vec<String>,
    /// `ts + duration` (= `ts` when unset).
    pub end: Timestamp,
    pub orig_bytes: Option<u64>,
    pub resp_bytes: Option<u64>,
    pub conn_state: Option<String>,
    /// From the row, or computed from the tuple when the row has none.
    pub community_id: Option<String>,
    pub warnings: Vec<String>,
}

impl ConnRecord {
    fn from_record(r: &Value, path: &Path<'_>) -> Result<ConnRecord, IngestError> {
        let mut w = Warnings::default();
        let start = ts(r, path)?;
        let t = tuple(r, path, &mut w)?;
        let resp_h = t
            .resp
            .ok_or_else(|| json::missing(&path.key("id.resp_h")))?;
        let (proto_name, protocol) = protocol_of(r, path, &mut w);
        let end = w
            .opt(r, "duration", path, duration_ticks)
            .map_or(start, |d| Timestamp(start.0.saturating_add(d)));
        let service = match field(r, "service") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => s
                .split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let community_id = w
            .opt(r, "community_id", path, text)
            .or_else(|| tuple_community_id(&t, proto_name.as_deref()));
        Ok(ConnRecord {
            ts: start,
            uid: uid_or_digest(r, path, &mut w),
            orig_h: t.orig,
            orig_p: t.orig_port,
            resp_h,
            resp_p: t.resp_port,
            protocol,
            proto_name,
            service,
            end,
            orig_bytes: w.opt(r, "orig_bytes", path, json::uint),
            resp_bytes: w.opt(r, "resp_bytes", path, json::uint),
            conn_state: w.opt(r, "conn_state", path, text),
            community_id,
            warnings: w.0,
        })
    }

    /// A detection for this connection, for sources explicitly configured to alert on
    /// conn rows (an intel-filtered conn.log): host = originator, outbound.
    pub fn into_detection(self, tenant: &str, detection_type: &str) -> Detection {
        let session = Session {
            first: self.ts,
            last: self.end,
            local_port: self.orig_p,
            bytes_sent: self.orig_bytes,
            bytes_received: self.resp_bytes,
            community_id: self.community_id,
        };
        let mut flows = FlowSet::default();
        flows.add(self.resp_h, self.resp_p, self.protocol, None, session);
        Detection {
            source: SourceKind::Zeek,
            tenant: tenant.to_owned(),
            source_id: self.uid,
            revision: "0".to_owned(),
            category: "conn".to_owned(),
            detection_type: detection_type.to_owned(),
            threat: None,
            certainty: None,
            severity: None,
            subject: Subject::Host,
            direction: Direction::Outbound,
            host: HostRef {
                ip: Some(self.orig_h),
                name: None,
                source_host_id: None,
            },
            window: Window::new(self.ts, self.end),
            flows: flows.into_flows(),
            needs_target_list: false,
            summary: None,
            warnings: self.warnings,
        }
    }

    /// Whether this connection is `session` of `flow` seen from `host`: same ports and
    /// remote, either orientation.
    fn matches(
        &self,
        host: IpAddr,
        remote: IpAddr,
        local_port: Option<u16>,
        remote_port: Option<u16>,
    ) -> bool {
        let fwd = self.orig_h == host
            && self.resp_h == remote
            && self.orig_p == local_port
            && self.resp_p == remote_port;
        let rev = self.resp_h == host
            && self.orig_h == remote
            && self.resp_p == local_port
            && self.orig_p == remote_port;
        fwd || rev
    }
}

/// Zeek `interval` seconds as exact ticks.
fn duration_ticks(v: &Value, path: &Path<'_>) -> Result<i64, IngestError> {
    let d = match v {
        Value::Number(n) => decimal_ticks(&n.to_string()),
        Value::String(s) => decimal_ticks(s.trim()),
        _ => None,
    };
    d.ok_or_else(|| invalid(path, "expected a non-negative number of seconds"))
}

/// How far apart a detection's session and a conn row may be and still be one connection.
const ENRICH_SLACK: Duration = Duration::from_minutes(5);

/// Completes a detection's sessions from conn rows of the same connection (same uid as the
/// detection, or same host/remote/ports): the end time from the duration, bytes, and the
/// Community ID. Returns how many sessions were enriched.
pub fn enrich(det: &mut Detection, conns: &[ConnRecord]) -> usize {
    let Some(host) = det.host.ip else {
        return 0;
    };
    let mut n = 0;
    let uid = det.source_id.clone();
    for flow in &mut det.flows {
        for s in &mut flow.sessions {
            // Same tuple, named by uid or by a known local port, and close in time: a port
            // reused hours later is another connection.
            let found = conns.iter().find(|c| {
                (c.uid == uid || s.local_port.is_some())
                    && c.matches(host, flow.remote_ip, s.local_port, flow.remote_port)
                    && c.ts <= s.last + ENRICH_SLACK
                    && s.first <= c.end + ENRICH_SLACK
            });
            let Some(c) = found else { continue };
            let host_is_orig = c.orig_h == host;
            s.first = s.first.min(c.ts);
            s.last = s.last.max(c.end);
            let (sent, recv) = if host_is_orig {
                (c.orig_bytes, c.resp_bytes)
            } else {
                (c.resp_bytes, c.orig_bytes)
            };
            s.bytes_sent = s.bytes_sent.or(sent);
            s.bytes_received = s.bytes_received.or(recv);
            if s.community_id.is_none() {
                s.community_id.clone_from(&c.community_id);
            }
            det.window.cover(s.first);
            det.window.cover(s.last);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests;
