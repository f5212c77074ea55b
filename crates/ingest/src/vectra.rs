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
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::flows::FlowSet;
use crate::json::{self, Leaf, List, Obj, Path, Scalar, Warnings, invalid, non_empty_text, text};
use crate::leaf::lenient_struct;
use crate::time::revision_string;
use crate::{IngestError, Parsed};

// Typed views of the input, read in one pass. Every leaf is a `Scalar` and every nested
// structure an `Obj`/`List`, none of which fails on a wrong shape: a wrong-shaped optional field
// becomes a warning at its own path, and unknown fields are skipped without being built.
type Opt<'a> = Option<Scalar<'a>>;

lenient_struct! {
    /// A detection object, or a list page (`results`, `count`) when read at the top level.
    struct RawDetection<'a> {
        id: Scalar<'a> = "id",
        last_timestamp: Scalar<'a> = "last_timestamp",
        first_timestamp: Scalar<'a> = "first_timestamp",
        detection_type: Scalar<'a> = "detection_type",
        detection: Scalar<'a> = "detection",
        category: Scalar<'a> = "category",
        detection_category: Scalar<'a> = "detection_category",
        kind: Scalar<'a> = "type",
        src_ip: Scalar<'a> = "src_ip",
        threat: Scalar<'a> = "threat",
        t_score: Scalar<'a> = "t_score",
        certainty: Scalar<'a> = "certainty",
        c_score: Scalar<'a> = "c_score",
        severity: Scalar<'a> = "severity",
        description: Scalar<'a> = "description",
        src_host: Obj<RawTarget<'a>> = "src_host",
        src_account: Scalar<'a> = "src_account",
        summary: Obj<RawSummary<'a>> = "summary",
        grouped_details: List<'a, Obj<RawGroup<'a>>> = "grouped_details",
        // Boxed: a detection is ~700 bytes of options, moved several times on the way in.
        results: List<'a, Obj<Box<RawDetection<'a>>>> = "results",
        count: Scalar<'a> = "count",
    }
}

lenient_struct! {
    /// `src_host`, `external_target`, `dst_hosts[]`, `target_host`.
    struct RawTarget<'a> {
        id: Scalar<'a> = "id",
        ip: Scalar<'a> = "ip",
        name: Scalar<'a> = "name",
    }
}

lenient_struct! {
    struct RawSummary<'a> {
        description: Scalar<'a> = "description",
    }
}

lenient_struct! {
    /// A `grouped_details[]` item, an `events[]` item or a `target_summary`.
    struct RawGroup<'a> {
        first_timestamp: Scalar<'a> = "first_timestamp",
        last_timestamp: Scalar<'a> = "last_timestamp",
        duration: Scalar<'a> = "duration",
        protocol: Scalar<'a> = "protocol",
        sessions: List<'a, Obj<RawSession<'a>>> = "sessions",
        events: List<'a, Obj<RawGroup<'a>>> = "events",
        target_summary: Obj<Box<RawGroup<'a>>> = "target_summary",
        external_target: Obj<RawTarget<'a>> = "external_target",
        dst_hosts: List<'a, Obj<RawTarget<'a>>> = "dst_hosts",
        dst_ips: List<'a, Scalar<'a>> = "dst_ips",
        dst_ports: List<'a, Scalar<'a>> = "dst_ports",
        target_domains: List<'a, Scalar<'a>> = "target_domains",
    }
}

lenient_struct! {
    struct RawSession<'a> {
        dst_ip: Scalar<'a> = "dst_ip",
        dst_port: Scalar<'a> = "dst_port",
        protocol: Scalar<'a> = "protocol",
        first_timestamp: Scalar<'a> = "first_timestamp",
        last_timestamp: Scalar<'a> = "last_timestamp",
        duration: Scalar<'a> = "duration",
        bytes_sent: Scalar<'a> = "bytes_sent",
        bytes_received: Scalar<'a> = "bytes_received",
        community_id: Scalar<'a> = "community_id",
        target_host: Obj<RawTarget<'a>> = "target_host",
    }
}

/// Parses a Vectra API response body or file: a list page, an array, or one detection.
/// The outer error is for input that is not one of those shapes; each detection carries its
/// own result so that one bad detection does not fail the others.
pub fn parse_json(bytes: &[u8], tenant: &str) -> Result<Vec<Parsed>, IngestError> {
    let root = Path::Root("");
    let malformed = |reason: String| IngestError::Malformed {
        path: "$".to_owned(),
        reason,
    };
    // Validating UTF-8 once up front is faster than per string while parsing.
    let text = std::str::from_utf8(bytes).map_err(|e| malformed(format!("not UTF-8: {e}")))?;
    let not_json = |e: serde_json::Error| malformed(format!("not JSON: {e}"));
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            match serde_json::from_str::<List<'_, Obj<Box<RawDetection<'_>>>>>(text)
                .map_err(not_json)?
            {
                List::Ok(items) => Ok(parse_items(&items, &root, tenant)),
                _ => Err(invalid(&root, "expected an array of detections")),
            }
        }
        Some(b'{') => {
            // One pass over the whole input; a page and a detection share the reader.
            let top: RawDetection<'_> = serde_json::from_str(text).map_err(not_json)?;
            match (&top.results, &top.count) {
                (Some(List::Ok(items)), _) => Ok(parse_items(items, &root.key("results"), tenant)),
                (Some(_), _) => Err(invalid(
                    &root.key("results"),
                    "expected an array of detections",
                )),
                // `{"count": 0, "results": null}`: an empty page.
                (None, Some(_)) => Ok(Vec::new()),
                (None, None) => Ok(vec![Parsed {
                    raw_index: 0,
                    detection: detection_from(&top, tenant, &root),
                }]),
            }
        }
        _ => {
            // Report the JSON error if it is not JSON at all, else the shape error.
            serde_json::from_str::<IgnoredAny>(text).map_err(not_json)?;
            Err(invalid(
                &root,
                "expected a detection object, an array of detections, or a page with `results`",
            ))
        }
    }
}

/// As [`parse_json`], on an already parsed document (re-serialised: the typed path is faster
/// than walking the tree).
pub fn parse_value(doc: &Value, tenant: &str) -> Result<Vec<Parsed>, IngestError> {
    parse_json(doc.to_string().as_bytes(), tenant)
}

/// One detection object.
pub fn parse_detection(v: &Value, tenant: &str) -> Result<Detection, IngestError> {
    let text = v.to_string();
    let root = Path::Root("");
    match serde_json::from_str::<Obj<RawDetection<'_>>>(&text) {
        Ok(Obj::Ok(d)) => detection_from(&d, tenant, &root),
        _ => Err(invalid(&root, "expected a detection object")),
    }
}

fn parse_items(items: &[Obj<Box<RawDetection<'_>>>], base: &Path<'_>, tenant: &str) -> Vec<Parsed> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = base.index(i);
            Parsed {
                raw_index: i,
                detection: match item {
                    Obj::Ok(d) => detection_from(d, tenant, &path),
                    Obj::Wrong(_) => Err(invalid(&path, "expected a detection object")),
                },
            }
        })
        .collect()
}

/// A nested object, or a warning naming its path.
fn object<'x, T>(o: Option<&'x Obj<T>>, path: &Path<'_>, w: &mut Warnings) -> Option<&'x T> {
    match o? {
        Obj::Ok(t) => Some(t),
        Obj::Wrong(kind) => {
            w.push(format!("{}: expected an object, got {kind}", path.render()));
            None
        }
    }
}

/// A nested array, or a warning naming its path.
fn list<'x, T>(l: Option<&'x List<'_, T>>, path: &Path<'_>, w: &mut Warnings) -> &'x [T] {
    match l {
        None => &[],
        Some(List::Ok(v)) => v,
        Some(List::Text(_)) => {
            w.push(format!(
                "{}: expected an array, got a string",
                path.render()
            ));
            &[]
        }
        Some(List::Wrong(kind)) => {
            w.push(format!("{}: expected an array, got {kind}", path.render()));
            &[]
        }
    }
}

fn required<'s, T>(
    v: &Opt<'s>,
    path: &Path<'_>,
    key: &str,
    conv: impl FnOnce(&Scalar<'s>, &Path<'_>) -> Result<T, IngestError>,
) -> Result<T, IngestError> {
    match v {
        Some(s) => conv(s, &path.key(key)),
        None => Err(json::missing(&path.key(key))),
    }
}

fn detection_from(
    d: &RawDetection<'_>,
    tenant: &str,
    path: &Path<'_>,
) -> Result<Detection, IngestError> {
    let mut w = Warnings::default();
    let source_id = required(&d.id, path, "id", non_empty_text)?;
    let last = required(&d.last_timestamp, path, "last_timestamp", json::time)?;
    let detection_type = match (&d.detection_type, &d.detection) {
        (Some(t), _) => non_empty_text(t, &path.key("detection_type"))?,
        (None, Some(t)) => non_empty_text(t, &path.key("detection"))?,
        (None, None) => {
            return Err(IngestError::Missing {
                path: format!("{} (or detection)", path.key("detection_type").render()),
            });
        }
    };
    let category = match d.category.as_ref().or(d.detection_category.as_ref()) {
        Some(c) => w
            .keep(text(c, &path.key("category")))
            .map(|c| normalise_category(&c)),
        None => {
            w.push(format!("{}: missing", path.key("category").render()));
            None
        }
    };
    let subject = subject(d);
    let host = host(d, path, &mut w);
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
        .get(d.threat.as_ref(), path, "threat", json::score)
        .or_else(|| w.get(d.t_score.as_ref(), path, "t_score", json::score));
    let certainty = w
        .get(d.certainty.as_ref(), path, "certainty", json::score)
        .or_else(|| w.get(d.c_score.as_ref(), path, "c_score", json::score));
    let mut window = Window::new(last, last);
    if let Some(first) = w.get(
        d.first_timestamp.as_ref(),
        path,
        "first_timestamp",
        json::time,
    ) {
        window.cover(first);
    }
    let envelope = window;
    let mut flows = FlowSet::default();
    groups(
        d.grouped_details.as_ref(),
        &path.key("grouped_details"),
        envelope,
        &mut window,
        &mut flows,
        &mut w,
    );
    let summary = object(d.summary.as_ref(), &path.key("summary"), &mut w)
        .and_then(|s| s.description.as_ref())
        .or(d.description.as_ref())
        .and_then(|s| s.str().map(str::to_owned));
    Ok(Detection {
        source: SourceKind::Vectra,
        tenant: tenant.to_owned(),
        source_id,
        revision: revision_string(last),
        category: category.unwrap_or_default(),
        detection_type,
        threat,
        certainty,
        // Vectra's own `severity` when numeric; the textual form ("medium") carries nothing
        // the threat and certainty scores do not.
        severity: d.severity.as_ref().and_then(|s| json::score(s, path).ok()),
        subject,
        direction: Direction::Outbound,
        host,
        window,
        flows: flows.into_flows(),
        needs_target_list: false,
        summary,
        warnings: w.0,
    })
}

/// v2 writes `COMMAND & CONTROL`, v3 `command_and_control`: one spelling downstream.
pub fn normalise_category(c: &str) -> String {
    let already = !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !c.starts_with('_')
        && !c.ends_with('_')
        && !c.contains("__");
    if already {
        return c.to_owned();
    }
    let lower = c.trim().to_ascii_lowercase().replace('&', "and");
    lower
        .split(|ch: char| ch.is_whitespace() || ch == '-' || ch == '_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

fn subject(d: &RawDetection<'_>) -> Subject {
    match d.kind.as_ref().and_then(Leaf::str) {
        Some(t) if t.eq_ignore_ascii_case("account") => Subject::Account,
        Some(t) if t.eq_ignore_ascii_case("host") => Subject::Host,
        _ if d.src_host.is_none() && d.src_account.is_some() => Subject::Account,
        _ => Subject::Host,
    }
}

fn host(d: &RawDetection<'_>, path: &Path<'_>, w: &mut Warnings) -> HostRef {
    let mut host = HostRef {
        ip: w.get(d.src_ip.as_ref(), path, "src_ip", json::ip),
        ..HostRef::default()
    };
    let hp = path.key("src_host");
    if let Some(h) = object(d.src_host.as_ref(), &hp, w) {
        if host.ip.is_none() {
            host.ip = w.get(h.ip.as_ref(), &hp, "ip", json::ip);
        }
        host.name = w
            .get(h.name.as_ref(), &hp, "name", text)
            .filter(|n| !n.trim().is_empty());
        host.source_host_id = w.get(h.id.as_ref(), &hp, "id", text);
    }
    host
}

fn groups(
    l: Option<&List<'_, Obj<RawGroup<'_>>>>,
    gp: &Path<'_>,
    envelope: Window,
    window: &mut Window,
    flows: &mut FlowSet,
    w: &mut Warnings,
) {
    // Sentinel's table stores the groups as JSON text.
    if let Some(List::Text(text)) = l {
        match serde_json::from_str::<List<'_, Obj<RawGroup<'_>>>>(text) {
            Ok(parsed) => groups(Some(&parsed), gp, envelope, window, flows, w),
            Err(_) => w.push(format!(
                "{}: a string that is not a JSON array",
                gp.render()
            )),
        }
        return;
    }
    for (i, g) in list(l, gp, w).iter().enumerate() {
        let p = gp.index(i);
        if let Some(g) = object(Some(g), &p, w) {
            group(g, &p, envelope, window, flows, w);
        }
    }
}

/// Times and names that a group gives its sessions.
struct GroupCtx {
    span: Window,
    targets: Targets,
}

fn times(
    first: &Opt<'_>,
    last: &Opt<'_>,
    duration: &Opt<'_>,
    path: &Path<'_>,
    w: &mut Warnings,
) -> (Option<Timestamp>, Option<Timestamp>) {
    let first = w.get(first.as_ref(), path, "first_timestamp", json::time);
    let last = w
        .get(last.as_ref(), path, "last_timestamp", json::time)
        .or_else(|| {
            let d = w.get(duration.as_ref(), path, "duration", seconds)?;
            first.map(|f| f + d)
        });
    (first, last)
}

fn group_times(
    g: &RawGroup<'_>,
    path: &Path<'_>,
    w: &mut Warnings,
) -> (Option<Timestamp>, Option<Timestamp>) {
    times(&g.first_timestamp, &g.last_timestamp, &g.duration, path, w)
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
    g: &RawGroup<'_>,
    gp: &Path<'_>,
    envelope: Window,
    window: &mut Window,
    flows: &mut FlowSet,
    w: &mut Warnings,
) {
    let (first, last) = group_times(g, gp, w);
    cover_span(window, first, last);
    let ctx = GroupCtx {
        span: span(first, last, envelope),
        targets: Targets::of(g, gp, w),
    };
    let mut found = sessions(g, gp, &ctx, window, flows, w);
    let ep = gp.key("events");
    for (i, e) in list(g.events.as_ref(), &ep, w).iter().enumerate() {
        let p = ep.index(i);
        let Some(e) = object(Some(e), &p, w) else {
            continue;
        };
        let (ef, el) = group_times(e, &p, w);
        cover_span(window, ef, el);
        let ectx = GroupCtx {
            span: span(ef, el, ctx.span),
            targets: Targets::of(e, &p, w),
        };
        found += sessions(e, &p, &ectx, window, flows, w);
        let tp = p.key("target_summary");
        if let Some(ts) = object(e.target_summary.as_ref(), &tp, w) {
            let (tf, tl) = group_times(ts, &tp, w);
            cover_span(window, tf, tl);
        }
    }
    if found == 0 {
        group_destinations(g, gp, &ctx, flows, w);
    }
}

/// The sessions of a group or event; returns how many there were (usable or not).
fn sessions(
    g: &RawGroup<'_>,
    gp: &Path<'_>,
    ctx: &GroupCtx,
    window: &mut Window,
    flows: &mut FlowSet,
    w: &mut Warnings,
) -> usize {
    let sp = gp.key("sessions");
    let items = list(g.sessions.as_ref(), &sp, w);
    for (i, s) in items.iter().enumerate() {
        let p = sp.index(i);
        match s {
            Obj::Ok(s) => session(s, &p, ctx, window, flows, w),
            Obj::Wrong(kind) => w.push(format!(
                "{}: expected an object, got {kind}; session ignored",
                p.render()
            )),
        }
    }
    items.len()
}

fn session(
    s: &RawSession<'_>,
    sp: &Path<'_>,
    ctx: &GroupCtx,
    window: &mut Window,
    flows: &mut FlowSet,
    w: &mut Warnings,
) {
    let th_path = sp.key("target_host");
    let target_host = object(s.target_host.as_ref(), &th_path, w);
    let dst = match &s.dst_ip {
        Some(d) => w.keep(json::ip(d, &sp.key("dst_ip"))),
        None => target_host
            .as_ref()
            .and_then(|th| w.get(th.ip.as_ref(), &th_path, "ip", json::ip)),
    };
    let Some(dst) = dst else {
        w.push(format!(
            "{}: no usable dst_ip; session ignored",
            sp.render()
        ));
        return;
    };
    let port = w.get(s.dst_port.as_ref(), sp, "dst_port", json::port);
    let protocol = w
        .get(s.protocol.as_ref(), sp, "protocol", text)
        .map(|p| Protocol::parse(&p))
        .unwrap_or_default();
    let (first, last) = times(&s.first_timestamp, &s.last_timestamp, &s.duration, sp, w);
    let when = span(first, last, ctx.span);
    window.cover(when.start);
    window.cover(when.end);
    let domain = ctx.targets.domain_for(dst).or_else(|| {
        target_host
            .as_ref()
            .and_then(|th| th.name.as_ref())
            .and_then(Leaf::str)
            .map(str::to_owned)
    });
    let session = Session {
        first: when.start,
        last: when.end,
        local_port: None,
        bytes_sent: w.get(s.bytes_sent.as_ref(), sp, "bytes_sent", json::uint),
        bytes_received: w.get(s.bytes_received.as_ref(), sp, "bytes_received", json::uint),
        community_id: w.get(s.community_id.as_ref(), sp, "community_id", text),
    };
    flows.add(dst, port, protocol, domain, session);
}

/// A group that names destinations but no sessions (v2 shapes): one flow per destination over
/// the group's span. Nothing is invented when the group names no destination.
fn group_destinations(
    g: &RawGroup<'_>,
    gp: &Path<'_>,
    ctx: &GroupCtx,
    flows: &mut FlowSet,
    w: &mut Warnings,
) {
    let ip_path = gp.key("dst_ips");
    let mut ips: Vec<IpAddr> = list(g.dst_ips.as_ref(), &ip_path, w)
        .iter()
        .enumerate()
        .filter_map(|(i, v)| w.keep(json::ip(v, &ip_path.index(i))))
        .collect();
    if let Some(ip) = ctx.targets.external_ip
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let port_path = gp.key("dst_ports");
    let ports: Vec<u16> = list(g.dst_ports.as_ref(), &port_path, w)
        .iter()
        .enumerate()
        .filter_map(|(i, v)| w.keep(json::port(v, &port_path.index(i))))
        .collect();
    let port = if ports.len() == 1 {
        ports.first().copied()
    } else {
        None
    };
    let protocol = w
        .get(g.protocol.as_ref(), gp, "protocol", text)
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

fn non_empty_name(t: &RawTarget<'_>) -> Option<String> {
    t.name
        .as_ref()
        .and_then(Leaf::str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

impl Targets {
    fn of(g: &RawGroup<'_>, gp: &Path<'_>, w: &mut Warnings) -> Targets {
        let mut t = Targets::default();
        let ep = gp.key("external_target");
        if let Some(ext) = object(g.external_target.as_ref(), &ep, w) {
            t.external_ip = w.get(ext.ip.as_ref(), &ep, "ip", json::ip);
            match (t.external_ip, non_empty_name(ext)) {
                (Some(ip), Some(n)) => t.by_ip.push((ip, n)),
                (None, Some(n)) => t.only_domain = Some(n),
                _ => {}
            }
        }
        let hp = gp.key("dst_hosts");
        for (i, h) in list(g.dst_hosts.as_ref(), &hp, w).iter().enumerate() {
            let p = hp.index(i);
            // `dst_hosts` entries are objects in v3 and may be bare names elsewhere.
            let Obj::Ok(h) = h else {
                continue;
            };
            if let (Some(ip), Some(n)) =
                (w.get(h.ip.as_ref(), &p, "ip", json::ip), non_empty_name(h))
            {
                t.by_ip.push((ip, n));
            }
        }
        if t.only_domain.is_none()
            && let [Scalar::Str(d)] = list(g.target_domains.as_ref(), &gp.key("target_domains"), w)
            && !d.is_empty()
        {
            t.only_domain = Some(d.to_string());
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
fn seconds<L: Leaf + ?Sized>(v: &L, path: &Path<'_>) -> Result<Duration, IngestError> {
    let secs = v
        .f64()
        .or_else(|| v.str().and_then(|s| s.trim().parse::<f64>().ok()));
    match secs {
        Some(s) if s.is_finite() && (0.0..=1.0e9).contains(&s) => {
            Ok(Duration((s * TICKS_PER_SECOND as f64).round() as i64))
        }
        _ => Err(invalid(path, "expected a duration in seconds (0..1e9)")),
    }
}

#[cfg(test)]
mod tests;
