//! Vectra Detect (API v2.x) and RUX/Respond (API v3.x) detection objects, as a list page
//! (`{"count","next","results":[...]}`), a bare array, or one object.
//!
//! Normalisation:
//! - `source_id` = `id` as text; `revision` = `last_timestamp` as RFC 3339 UTC (see
//!   [`crate::time::revision_string`]).
//! - `category` in v3 snake_case whatever the generation (`COMMAND & CONTROL` becomes
//!   `command_and_control`); `detection_type` from `detection_type`, else `detection`.
//! - The host from `src_ip`, else `src_host.ip`; `src_host.name` and `src_host.id`.
//! - Flows from every `grouped_details[].sessions[]` (and `grouped_details[].events[].sessions[]`,
//!   the Data Smuggler shape), grouped by (dst_ip, dst_port, protocol), each session with its
//!   own first/last time (`last_timestamp`, or `first_timestamp + duration`) and bytes. A group
//!   without any session but with `dst_ips` gives one flow per destination spanning the group
//!   (port only when the group names exactly one).
//! - The window covers the envelope and every group, event and session time.
//! - `type: "account"`, or a `src_account` without a `src_host`, makes an account detection.

use std::net::IpAddr;

use culprit_model::detection::{Direction, HostRef, Protocol, SourceKind, Subject};
use culprit_model::timestamp::TICKS_PER_SECOND;
use culprit_model::{Detection, Duration, Session, Timestamp, Window};
use serde_json::Value;

use crate::flows::FlowSet;
use crate::json::{self, Path, Warnings, field, invalid, non_empty_text, required, text};
use crate::time::revision_string;
use crate::{IngestError, Parsed};

/// Parses a Vectra API response body or file: a list page, an array, or one detection.
/// The outer error is for input that is not one of those shapes; each detection carries its
/// own result so that one bad detection does not fail the others.
pub fn parse_json(bytes: &[u8], tenant: &str) -> Result<Vec<Parsed>, IngestError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| IngestError::Malformed {
        path: "$".to_owned(),
        reason: format!("not JSON: {e}"),
    })?;
    parse_value(&doc, tenant)
}

/// As [`parse_json`], on an already parsed document.
pub fn parse_value(doc: &Value, tenant: &str) -> Result<Vec<Parsed>, IngestError> {
    let root = Path::Root("");
    match doc {
        Value::Array(items) => Ok(parse_items(items, &root, tenant)),
        Value::Object(map) => match map.get("results") {
            Some(Value::Array(items)) => Ok(parse_items(items, &root.key("results"), tenant)),
            Some(Value::Null) => Ok(Vec::new()),
            Some(_) => Err(invalid(
                &root.key("results"),
                "expected an array of detections",
            )),
            None => Ok(vec![Parsed {
                raw_index: 0,
                detection: parse_detection_at(doc, tenant, &root),
            }]),
        },
        _ => Err(invalid(
            &root,
            "expected a detection object, an array of detections, or a page with `results`",
        )),
    }
}

/// One detection object.
pub fn parse_detection(v: &Value, tenant: &str) -> Result<Detection, IngestError> {
    parse_detection_at(v, tenant, &Path::Root(""))
}

fn parse_items(items: &[Value], base: &Path<'_>, tenant: &str) -> Vec<Parsed> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| Parsed {
            raw_index: i,
            detection: parse_detection_at(v, tenant, &base.index(i)),
        })
        .collect()
}

fn parse_detection_at(v: &Value, tenant: &str, path: &Path<'_>) -> Result<Detection, IngestError> {
    if !v.is_object() {
        return Err(invalid(path, "expected a detection object"));
    }
    let mut w = Warnings::default();
    let source_id = required(v, &["id"], path, non_empty_text)?;
    let last = required(v, &["last_timestamp"], path, json::time)?;
    let detection_type = required(v, &["detection_type", "detection"], path, non_empty_text)?;
    let category = match field(v, "category").or_else(|| field(v, "detection_category")) {
        Some(c) => w
            .keep(text(c, &path.key("category")))
            .map(|c| normalise_category(&c)),
        None => {
            w.push(format!("{}: missing", path.key("category").render()));
            None
        }
    };
    let subject = subject(v);
    let host = host(v, path, &mut w);
    if subject == Subject::Host
        && host.ip.is_none()
        && host.name.is_none()
        && host.source_host_id.is_none()
    {
        return Err(IngestError::Missing {
            path: format!("{} (or src_host)", path.key("src_ip").render()),
        });
    }
    let threat = w
        .opt(v, "threat", path, json::score)
        .or_else(|| w.opt(v, "t_score", path, json::score));
    let certainty = w
        .opt(v, "certainty", path, json::score)
        .or_else(|| w.opt(v, "c_score", path, json::score));
    let mut window = Window::new(last, last);
    if let Some(first) = w.opt(v, "first_timestamp", path, json::time) {
        window.cover(first);
    }
    let envelope = window;
    let mut flows = FlowSet::default();
    groups(v, path, envelope, &mut window, &mut flows, &mut w);
    Ok(Detection {
        source: SourceKind::Vectra,
        tenant: tenant.to_owned(),
        source_id,
        revision: revision_string(last),
        category: category.unwrap_or_default(),
        detection_type,
        threat,
        certainty,
        severity: numeric_severity(v),
        subject,
        direction: Direction::Outbound,
        host,
        window,
        flows: flows.into_flows(),
        needs_target_list: false,
        summary: summary(v),
        warnings: w.0,
    })
}

/// v2 writes `COMMAND & CONTROL`, v3 `command_and_control`: one spelling downstream.
pub fn normalise_category(c: &str) -> String {
    let lower = c.trim().to_ascii_lowercase().replace('&', "and");
    lower
        .split(|ch: char| ch.is_whitespace() || ch == '-' || ch == '_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

fn subject(v: &Value) -> Subject {
    match field(v, "type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("account") => Subject::Account,
        Some(t) if t.eq_ignore_ascii_case("host") => Subject::Host,
        _ if field(v, "src_host").is_none() && field(v, "src_account").is_some() => {
            Subject::Account
        }
        _ => Subject::Host,
    }
}

fn host(v: &Value, path: &Path<'_>, w: &mut Warnings) -> HostRef {
    let mut host = HostRef {
        ip: w.opt(v, "src_ip", path, json::ip),
        ..HostRef::default()
    };
    let hp = path.key("src_host");
    match field(v, "src_host") {
        Some(h) if h.is_object() => {
            if host.ip.is_none() {
                host.ip = w.opt(h, "ip", &hp, json::ip);
            }
            host.name = w.opt(h, "name", &hp, text).filter(|n| !n.trim().is_empty());
            host.source_host_id = w.opt(h, "id", &hp, text);
        }
        Some(_) => w.push(format!("{}: expected an object", hp.render())),
        None => {}
    }
    host
}

/// Vectra's own `severity` when numeric; the textual form (`"medium"`) carries nothing the
/// threat and certainty scores do not.
fn numeric_severity(v: &Value) -> Option<u32> {
    let s = field(v, "severity")?;
    json::score(s, &Path::Root("severity")).ok()
}

fn summary(v: &Value) -> Option<String> {
    field(v, "summary")
        .and_then(|s| field(s, "description"))
        .or_else(|| field(v, "description"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn groups(
    v: &Value,
    path: &Path<'_>,
    envelope: Window,
    window: &mut Window,
    flows: &mut FlowSet,
    w: &mut Warnings,
) {
    let gp = path.key("grouped_details");
    let parsed;
    let groups = match field(v, "grouped_details") {
        None => return,
        Some(Value::Array(a)) => a,
        // Sentinel's table stores the groups as JSON text.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => {
                parsed = a;
                &parsed
            }
            _ => {
                w.push(format!(
                    "{}: a string that is not a JSON array",
                    gp.render()
                ));
                return;
            }
        },
        Some(_) => {
            w.push(format!("{}: expected an array", gp.render()));
            return;
        }
    };
    for (i, g) in groups.iter().enumerate() {
        group(g, &gp.index(i), envelope, window, flows, w);
    }
}

/// Times and names that a group gives its sessions.
struct GroupCtx {
    span: Window,
    targets: Targets,
}

fn times(obj: &Value, path: &Path<'_>, w: &mut Warnings) -> (Option<Timestamp>, Option<Timestamp>) {
    let first = w.opt(obj, "first_timestamp", path, json::time);
    let last = w.opt(obj, "last_timestamp", path, json::time);
    let last = last.or_else(|| {
        let d = w.opt(obj, "duration", path, seconds)?;
        first.map(|f| f + d)
    });
    (first, last)
}

/// A window from optional ends, falling back to `outer` for what is missing.
fn span(first: Option<Timestamp>, last: Option<Timestamp>, outer: Window) -> Window {
    match (first, last) {
        (Some(f), Some(l)) => Window::new(f, l),
        (Some(t), None) | (None, Some(t)) => Window::new(t, t),
        (None, None) => outer,
    }
}

fn cover_span(window: &mut Window, first: Option<Timestamp>, last: Option<Timestamp>) {
    for t in [first, last].into_iter().flatten() {
        window.cover(t);
    }
}

fn group(
    g: &Value,
    gp: &Path<'_>,
    envelope: Window,
    window: &mut Window,
    flows: &mut FlowSet,
    w: &mut Warnings,
) {
    if !g.is_object() {
        w.push(format!("{}: expected an object", gp.render()));
        return;
    }
    let (first, last) = times(g, gp, w);
    cover_span(window, first, last);
    let ctx = GroupCtx {
        span: span(first, last, envelope),
        targets: Targets::of(g, gp, w),
    };
    let mut found = sessions(g, gp, &ctx, window, flows, w);
    if let Some(events) = field(g, "events").and_then(Value::as_array) {
        let ep = gp.key("events");
        for (i, e) in events.iter().enumerate() {
            let p = ep.index(i);
            let (ef, el) = times(e, &p, w);
            cover_span(window, ef, el);
            let ectx = GroupCtx {
                span: span(ef, el, ctx.span),
                targets: Targets::of(e, &p, w),
            };
            found += sessions(e, &p, &ectx, window, flows, w);
            if let Some(ts) = field(e, "target_summary") {
                let (tf, tl) = times(ts, &p.key("target_summary"), w);
                cover_span(window, tf, tl);
            }
        }
    }
    if found == 0 {
        group_destinations(g, gp, &ctx, flows, w);
    }
}

/// The sessions of a group or event; returns how many there were (usable or not).
fn sessions(
    g: &Value,
    gp: &Path<'_>,
    ctx: &GroupCtx,
    window: &mut Window,
    flows: &mut FlowSet,
    w: &mut Warnings,
) -> usize {
    let sp = gp.key("sessions");
    let list = match field(g, "sessions") {
        None => return 0,
        Some(Value::Array(a)) => a,
        Some(_) => {
            w.push(format!("{}: expected an array", sp.render()));
            return 0;
        }
    };
    for (i, s) in list.iter().enumerate() {
        session(s, &sp.index(i), ctx, window, flows, w);
    }
    list.len()
}

fn session(
    s: &Value,
    sp: &Path<'_>,
    ctx: &GroupCtx,
    window: &mut Window,
    flows: &mut FlowSet,
    w: &mut Warnings,
) {
    if !s.is_object() {
        w.push(format!(
            "{}: expected an object; session ignored",
            sp.render()
        ));
        return;
    }
    let target_host = field(s, "target_host");
    let th_path = sp.key("target_host");
    let dst = match field(s, "dst_ip") {
        Some(d) => w.keep(json::ip(d, &sp.key("dst_ip"))),
        None => target_host.and_then(|th| w.opt(th, "ip", &th_path, json::ip)),
    };
    let Some(dst) = dst else {
        w.push(format!(
            "{}: no usable dst_ip; session ignored",
            sp.render()
        ));
        return;
    };
    let port = w.opt(s, "dst_port", sp, json::port);
    let protocol = w
        .opt(s, "protocol", sp, text)
        .map(|p| Protocol::parse(&p))
        .unwrap_or_default();
    let (first, last) = times(s, sp, w);
    let when = span(first, last, ctx.span);
    window.cover(when.start);
    window.cover(when.end);
    let domain = ctx.targets.domain_for(dst).or_else(|| {
        target_host
            .and_then(|th| field(th, "name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let session = Session {
        first: when.start,
        last: when.end,
        local_port: None,
        bytes_sent: w.opt(s, "bytes_sent", sp, json::uint),
        bytes_received: w.opt(s, "bytes_received", sp, json::uint),
        community_id: w.opt(s, "community_id", sp, text),
    };
    flows.add(dst, port, protocol, domain, session);
}

/// A group that names destinations but no sessions (v2 shapes): one flow per destination over
/// the group's span. Nothing is invented when the group names no destination.
fn group_destinations(
    g: &Value,
    gp: &Path<'_>,
    ctx: &GroupCtx,
    flows: &mut FlowSet,
    w: &mut Warnings,
) {
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(list) = field(g, "dst_ips").and_then(Value::as_array) {
        let p = gp.key("dst_ips");
        ips.extend(
            list.iter()
                .enumerate()
                .filter_map(|(i, v)| w.keep(json::ip(v, &p.index(i)))),
        );
    }
    if let Some(ip) = ctx.targets.external_ip
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let ports: Vec<u16> = match field(g, "dst_ports").and_then(Value::as_array) {
        Some(list) => {
            let p = gp.key("dst_ports");
            list.iter()
                .enumerate()
                .filter_map(|(i, v)| w.keep(json::port(v, &p.index(i))))
                .collect()
        }
        None => Vec::new(),
    };
    let port = if ports.len() == 1 {
        ports.first().copied()
    } else {
        None
    };
    let protocol = w
        .opt(g, "protocol", gp, text)
        .map(|p| Protocol::parse(&p))
        .unwrap_or_default();
    for ip in ips {
        let session = Session {
            first: ctx.span.start,
            last: ctx.span.end,
            local_port: None,
            bytes_sent: None,
            bytes_received: None,
            community_id: None,
        };
        flows.add(ip, port, protocol, ctx.targets.domain_for(ip), session);
    }
}

/// Names a group gives its destinations: `external_target{ip,name}`, `dst_hosts[]{ip,name}`,
/// and a single `target_domains[]` entry.
#[derive(Debug, Default)]
struct Targets {
    by_ip: Vec<(IpAddr, String)>,
    external_ip: Option<IpAddr>,
    only_domain: Option<String>,
}

impl Targets {
    fn of(g: &Value, gp: &Path<'_>, w: &mut Warnings) -> Targets {
        let mut t = Targets::default();
        if let Some(ext) = field(g, "external_target") {
            let p = gp.key("external_target");
            t.external_ip = w.opt(ext, "ip", &p, json::ip);
            let name = field(ext, "name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty());
            match (t.external_ip, name) {
                (Some(ip), Some(n)) => t.by_ip.push((ip, n.to_owned())),
                (None, Some(n)) => t.only_domain = Some(n.to_owned()),
                _ => {}
            }
        }
        if let Some(hosts) = field(g, "dst_hosts").and_then(Value::as_array) {
            let p = gp.key("dst_hosts");
            for (i, h) in hosts.iter().enumerate() {
                let hp = p.index(i);
                let ip = w.opt(h, "ip", &hp, json::ip);
                let name = field(h, "name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty());
                if let (Some(ip), Some(n)) = (ip, name) {
                    t.by_ip.push((ip, n.to_owned()));
                }
            }
        }
        if t.only_domain.is_none()
            && let Some([Value::String(d)]) = field(g, "target_domains")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            && !d.is_empty()
        {
            t.only_domain = Some(d.clone());
        }
        t
    }

    fn domain_for(&self, ip: IpAddr) -> Option<String> {
        if let Some((_, n)) = self.by_ip.iter().find(|(a, _)| *a == ip) {
            return Some(n.clone());
        }
        // A lone target domain belongs to the group's destination unless the group says the
        // external target is some other address.
        match self.external_ip {
            Some(e) if e != ip => None,
            _ => self.only_domain.clone(),
        }
    }
}

/// Seconds as a number or numeric string (session `duration`).
fn seconds(v: &Value, path: &Path<'_>) -> Result<Duration, IngestError> {
    let secs = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && (0.0..=1.0e9).contains(&s) => {
            Ok(Duration((s * TICKS_PER_SECOND as f64).round() as i64))
        }
        _ => Err(invalid(path, "expected a duration in seconds (0..1e9)")),
    }
}

#[cfg(test)]
mod tests;
