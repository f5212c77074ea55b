//! Suricata EVE JSON `alert` records, one JSON object per line.
//!
//! Orientation: an alert's top-level tuple is the *packet* that matched, which can be the
//! server's reply. The flow's initiator comes from the alert's `flow.src_ip`/`flow.src_port`
//! (Suricata 7+), else from `direction` (`to_client` means the packet went server → client),
//! else the packet tuple. The detection's host is the initiator (outbound) unless the rule
//! names the responder as its `alert.target`, or the initiator is a public address talking to a
//! private one (an inbound attack): then the host is the responder (inbound).
//!
//! `source_id` = `flow_id`, or `h` + 16 hex digits of a SHA-1 of the record when absent;
//! `revision` = "0". `severity` is mapped to "higher is worse" as `100 / alert.severity`
//! (1 → 100, 2 → 50, 3 → 33). Other event types are [`IngestError::Skipped`].

use std::net::IpAddr;

use culprit_model::detection::{Direction, HostRef, Protocol, SourceKind, Subject};
use culprit_model::{Detection, Session, Window};
use serde_json::Value;

use crate::community_id::{community_id, protocol_number};
use crate::flows::{FlowSet, is_internal};
use crate::json::{self, Path, Warnings, field, invalid, required, text};
use crate::{IngestError, Parsed, json_line, lines};

/// Parses an EVE file or stream: one [`Parsed`] per non-blank line, `raw_index` = line index.
pub fn parse_lines(bytes: &[u8], tenant: &str) -> Vec<Parsed> {
    lines(bytes)
        .map(|(i, line)| {
            let label = format!("line {}:", i + 1);
            let detection =
                json_line(line, &label).and_then(|v| record_at(&v, tenant, &Path::Root(&label)));
            Parsed {
                raw_index: i,
                detection,
            }
        })
        .collect()
}

/// One EVE line.
pub fn parse_line(line: &[u8], tenant: &str) -> Result<Detection, IngestError> {
    let v = json_line(line, "$")?;
    parse_record(&v, tenant)
}

/// One EVE record already parsed as JSON.
pub fn parse_record(v: &Value, tenant: &str) -> Result<Detection, IngestError> {
    record_at(v, tenant, &Path::Root(""))
}

/// The two ends of a flow, initiator first.
#[derive(Clone, Copy, Debug)]
struct Ends {
    init: IpAddr,
    init_port: Option<u16>,
    resp: IpAddr,
    resp_port: Option<u16>,
}

fn record_at(v: &Value, tenant: &str, path: &Path<'_>) -> Result<Detection, IngestError> {
    if !v.is_object() {
        return Err(invalid(path, "expected an EVE record object"));
    }
    let event_type = required(v, &["event_type"], path, text)?;
    if event_type != "alert" {
        return Err(IngestError::Skipped {
            path: path.key("event_type").render(),
            reason: format!("event_type {:?} is not an alert", json::clip(&event_type)),
        });
    }
    let mut w = Warnings::default();
    let ap = path.key("alert");
    let alert = field(v, "alert")
        .filter(|a| a.is_object())
        .ok_or_else(|| json::missing(&ap))?;
    let signature = required(alert, &["signature"], &ap, json::non_empty_text)?;
    let when = required(v, &["timestamp"], path, json::time)?;
    let packet = Ends {
        init: required(v, &["src_ip"], path, json::ip)?,
        init_port: w.opt(v, "src_port", path, json::port),
        resp: required(v, &["dest_ip"], path, json::ip)?,
        resp_port: w.opt(v, "dest_port", path, json::port),
    };
    let proto_name = w.opt(v, "proto", path, text);
    if proto_name.is_none() && field(v, "proto").is_none() {
        w.push(format!("{}: missing", path.key("proto").render()));
    }
    let protocol = proto_name
        .as_deref()
        .map(Protocol::parse)
        .unwrap_or(Protocol::Other);
    let flow = field(v, "flow");
    let ends = orientation(v, flow, packet, path, &mut w);
    let target = field(alert, "target").and_then(|t| w.opt(t, "ip", &ap.key("target"), json::ip));
    let inbound = match target {
        Some(t) if t == ends.resp => true,
        Some(t) if t == ends.init => false,
        _ => !is_internal(ends.init) && is_internal(ends.resp),
    };
    let (host_ip, local_port, remote_ip, remote_port) = if inbound {
        (ends.resp, ends.resp_port, ends.init, ends.init_port)
    } else {
        (ends.init, ends.init_port, ends.resp, ends.resp_port)
    };
    let fp = path.key("flow");
    let mut window = Window::new(when, when);
    let (to_server, to_client) = match flow {
        Some(f) => {
            for k in ["start", "end"] {
                if let Some(t) = w.opt(f, k, &fp, json::time) {
                    window.cover(t);
                }
            }
            (
                w.opt(f, "bytes_toserver", &fp, json::uint),
                w.opt(f, "bytes_toclient", &fp, json::uint),
            )
        }
        None => (None, None),
    };
    let (bytes_sent, bytes_received) = if inbound {
        (to_client, to_server)
    } else {
        (to_server, to_client)
    };
    let community = w
        .opt(v, "community_id", path, text)
        .filter(|c| !c.is_empty())
        .or_else(|| computed_community_id(v, packet, proto_name.as_deref(), path, &mut w));
    let session = Session {
        first: window.start,
        last: window.end,
        local_port,
        bytes_sent,
        bytes_received,
        community_id: community,
    };
    let mut flows = FlowSet::default();
    flows.add(remote_ip, remote_port, protocol, domain(v), session);
    Ok(Detection {
        source: SourceKind::Suricata,
        tenant: tenant.to_owned(),
        source_id: source_id(v, path, &mut w),
        revision: "0".to_owned(),
        category: w.opt(alert, "category", &ap, text).unwrap_or_default(),
        detection_type: signature.clone(),
        threat: None,
        certainty: None,
        severity: w.opt(alert, "severity", &ap, severity),
        subject: Subject::Host,
        direction: if inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        },
        host: HostRef {
            ip: Some(host_ip),
            name: None,
            source_host_id: None,
        },
        window,
        flows: flows.into_flows(),
        needs_target_list: false,
        summary: Some(rule_summary(alert, &signature)),
        warnings: w.0,
    })
}

/// The flow's initiator: `flow.src_ip` (Suricata 7+), else `direction`, else the packet.
fn orientation(
    v: &Value,
    flow: Option<&Value>,
    packet: Ends,
    path: &Path<'_>,
    w: &mut Warnings,
) -> Ends {
    if let Some(f) = flow.filter(|f| field(f, "src_ip").is_some()) {
        let fp = path.key("flow");
        let init = w.opt(f, "src_ip", &fp, json::ip);
        let resp = w.opt(f, "dest_ip", &fp, json::ip);
        if let (Some(init), Some(resp)) = (init, resp) {
            return Ends {
                init,
                init_port: w.opt(f, "src_port", &fp, json::port),
                resp,
                resp_port: w.opt(f, "dest_port", &fp, json::port),
            };
        }
    }
    match field(v, "direction").and_then(Value::as_str) {
        Some("to_client") => Ends {
            init: packet.resp,
            init_port: packet.resp_port,
            resp: packet.init,
            resp_port: packet.init_port,
        },
        _ => packet,
    }
}

/// Community ID over the packet tuple (direction does not matter for ported protocols; for
/// ICMP the type/code belong to the packet's direction).
fn computed_community_id(
    v: &Value,
    packet: Ends,
    proto: Option<&str>,
    path: &Path<'_>,
    w: &mut Warnings,
) -> Option<String> {
    let num = protocol_number(proto?, packet.init.is_ipv6())?;
    let (sp, dp) = if num == 1 || num == 58 {
        (
            w.opt(v, "icmp_type", path, json::port),
            w.opt(v, "icmp_code", path, json::port),
        )
    } else {
        (packet.init_port, packet.resp_port)
    };
    community_id(packet.init, packet.resp, sp, dp, num, 0)
}

/// The name the record gives the remote side: HTTP host, TLS SNI or DNS query.
fn domain(v: &Value) -> Option<String> {
    let s = |o: Option<&Value>| {
        o.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    s(field(v, "http").and_then(|h| field(h, "hostname")))
        .or_else(|| s(field(v, "tls").and_then(|t| field(t, "sni"))))
        .or_else(|| {
            let dns = field(v, "dns")?;
            s(field(dns, "rrname")).or_else(|| {
                let q = field(dns, "queries").or_else(|| field(dns, "query"))?;
                s(q.get(0).and_then(|q| field(q, "rrname")))
            })
        })
}

fn source_id(v: &Value, path: &Path<'_>, w: &mut Warnings) -> String {
    if let Some(id) = w.opt(v, "flow_id", path, json::non_empty_text) {
        return id;
    }
    json::digest_id(v)
}

fn severity(v: &Value, path: &Path<'_>) -> Result<u32, IngestError> {
    match json::score(v, path)? {
        0 => Err(invalid(
            path,
            "severity 0 is not a Suricata severity (1 = highest)",
        )),
        s => Ok(100 / s),
    }
}

fn rule_summary(alert: &Value, signature: &str) -> String {
    let n = |k: &str| {
        field(alert, k)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".to_owned())
    };
    format!(
        "[{}:{}:{}] {signature}",
        n("gid"),
        n("signature_id"),
        n("rev")
    )
}

#[cfg(test)]
mod tests;
