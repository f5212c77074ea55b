//! Evidence per candidate process and the two scorers: Culprit's (direct session evidence
//! first, then coverage, domain, timing, periodicity) and the vendor's baseline (unique
//! destinations contacted from the host's address in the window).

use crate::fx::{FxMap, FxSet};
use std::net::IpAddr;

use culprit_model::detection::Direction;
use culprit_model::{Detection, Duration, Timestamp};

use crate::lineage::{Lineage, user_writable};
use crate::matching::{Matches, Quality};
use crate::view::{DeviceView, PKey};
use crate::{Options, Scorer};

/// Everything known for one candidate, and its place in the ranking.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cand {
    pub key: PKey,
    pub counts: FxMap<Quality, u32>,
    /// Sum of assignment weights.
    pub owned: f64,
    /// Π(1 − strength) over the sessions it owns.
    pub doubt: f64,
    pub max_dt: Duration,
    pub first_match: Option<Timestamp>,
    pub flows_reached: FxSet<usize>,
    pub match_times: Vec<Timestamp>,
    pub active_rows: u32,
    pub outbound_rows: u32,
    pub unique_dests: FxSet<IpAddr>,
    pub domain: Option<String>,
    pub periodic: Option<(f64, usize)>,
    pub score: f64,
    pub confidence: f64,
    pub reasons: Vec<String>,
    /// Set for an inbound handler found behind `System`.
    pub handled_for: Option<PKey>,
}

impl Cand {
    fn new(key: PKey) -> Self {
        Cand {
            key,
            doubt: 1.0,
            ..Cand::default()
        }
    }
    pub fn direct(&self) -> u32 {
        self.counts
            .iter()
            .filter(|(q, _)| q.is_direct())
            .map(|(_, n)| *n)
            .sum()
    }
    fn count(&self, q: Quality) -> u32 {
        self.counts.get(&q).copied().unwrap_or(0)
    }
    /// Sessions counted at full value for exact and tight matches, less for the rest.
    fn coverage_weight(&self) -> f64 {
        let mut w = 0.0;
        for (q, n) in &self.counts {
            let v = match q {
                Quality::Exact | Quality::CommunityId | Quality::Tight => 1.0,
                Quality::Loose => 0.7,
                Quality::Reused => 0.5,
                Quality::Capped => 0.3,
            };
            w += v * f64::from(*n);
        }
        w
    }
}

pub(crate) struct Ctx<'x, 'a> {
    pub det: &'x Detection,
    pub view: &'x DeviceView<'a>,
    pub opts: &'x Options,
    pub lineage: &'x Lineage<'x, 'a>,
}

fn entry(map: &mut FxMap<PKey, Cand>, k: PKey) -> &mut Cand {
    map.entry(k).or_insert_with(|| Cand::new(k))
}

/// Collects the candidates: every process with network rows in the window (± tolerance,
/// after the clock offset) and every process a session was tied to.
pub(crate) fn collect(ctx: &Ctx<'_, '_>, m: &Matches<'_>) -> FxMap<PKey, Cand> {
    let (det, view, tol) = (ctx.det, ctx.view, ctx.opts.skew_tolerance);
    let (ws, we) = (det.window.start, det.window.end);
    let mut map: FxMap<PKey, Cand> = FxMap::default();
    for row in &view.net {
        let t = row.t + m.offset;
        if t < ws - tol || t > we + tol {
            continue;
        }
        let c = entry(&mut map, row.key);
        c.active_rows += 1;
        if !row.is_inbound() {
            c.outbound_rows += 1;
        }
        // The vendor's count: destinations contacted from the host's address, in the window.
        if row.t >= ws
            && row.t <= we
            && row.local_ip.is_some()
            && row.local_ip == det.host.ip
            && let Some(r) = row.remote_ip
        {
            c.unique_dests.insert(r);
        }
    }
    for a in &m.assignments {
        let row = &view.net[a.row];
        let c = entry(&mut map, row.key);
        *c.counts.entry(a.quality).or_default() += 1;
        c.owned += a.quality.weight();
        c.doubt *= 1.0 - a.quality.strength();
        if a.quality.is_direct() {
            c.max_dt = c.max_dt.max(a.dt.abs());
            c.first_match = Some(c.first_match.map_or(row.t, |f| f.min(row.t)));
        }
    }
    for (fi, rows) in m.flow_rows.iter().enumerate() {
        for &ri in rows {
            let row = &view.net[ri];
            let t = row.t + m.offset;
            if t >= ws - tol && t <= we + tol {
                let c = entry(&mut map, row.key);
                c.flows_reached.insert(fi);
                c.match_times.push(row.t);
            }
        }
    }
    for c in map.values_mut() {
        c.match_times.sort();
        c.periodic = periodicity(&c.match_times);
    }
    domain_evidence(ctx, &mut map);
    map
}

/// Beacons: at least three intervals, most within 20 % of the median, the median ≥ 1 s.
pub(crate) fn periodicity(times: &[Timestamp]) -> Option<(f64, usize)> {
    if times.len() < 4 {
        return None;
    }
    let mut gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_seconds_f64())
        .collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    if median < 1.0 {
        return None;
    }
    let close = gaps
        .iter()
        .filter(|g| (*g - median).abs() <= 0.2 * median)
        .count();
    (close >= 3 && close * 10 >= gaps.len() * 6).then_some((median, times.len()))
}

/// Domain, URL and DNS evidence: RemoteUrl on the candidate's rows, DNS answers the candidate
/// received for the detection's domains or addresses.
fn domain_evidence(ctx: &Ctx<'_, '_>, map: &mut FxMap<PKey, Cand>) {
    let (det, view, tol) = (ctx.det, ctx.view, ctx.opts.skew_tolerance);
    let lo = det.window.start - tol - Duration::from_minutes(10);
    let hi = det.window.end + tol;
    let domains: Vec<String> = det
        .flows
        .iter()
        .filter_map(|f| f.domain.as_ref())
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
        .collect();
    let ips: Vec<String> = det.flows.iter().map(|f| f.remote_ip.to_string()).collect();
    if !domains.is_empty() {
        for row in view
            .net
            .iter()
            .filter(|r| r.t >= lo && r.t <= hi && !r.url.is_empty())
        {
            let url = row.url.to_ascii_lowercase();
            if let Some(d) = domains.iter().find(|d| url.contains(d.as_str()))
                && let Some(c) = map.get_mut(&row.key)
            {
                c.domain
                    .get_or_insert_with(|| format!("{} named {d} ({})", row.action, row.url));
            }
        }
    }
    for e in view
        .events
        .iter()
        .filter(|e| e.action_type == "DnsQueryResponse" && e.timestamp >= lo && e.timestamp <= hi)
    {
        let Some(pid) = e.initiating.process_id else {
            continue;
        };
        let fields = e.additional_fields.as_ref();
        let get = |k: &str| {
            fields
                .and_then(|f| f.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_ascii_lowercase()
        };
        let (query, answer) = (get("DnsQueryString"), get("DnsQueryResult"));
        let q = query.trim_end_matches('.');
        let by_name = domains
            .iter()
            .any(|d| q == d || q.ends_with(&format!(".{d}")));
        let by_ip = ips.iter().find(|ip| {
            answer
                .split([';', ',', ' '])
                .any(|a| a.trim().trim_start_matches("::ffff:") == ip.as_str())
        });
        if by_name || by_ip.is_some() {
            let key = (pid, e.initiating.creation_time);
            if let Some(c) = map.get_mut(&key) {
                let to = by_ip.map(|ip| format!(" → {ip}")).unwrap_or_default();
                c.domain.get_or_insert_with(|| {
                    format!("resolved {query}{to} at {}", e.timestamp.to_millis_string())
                });
            }
        }
    }
}

fn related(ctx: &Ctx<'_, '_>, roots: &FxMap<PKey, PKey>, a: &PKey, b: &PKey) -> bool {
    let root = |k: &PKey| roots.get(k).copied().unwrap_or(*k);
    root(a) == root(b) || ctx.lineage.parent(a) == Some(*b) || ctx.lineage.parent(b) == Some(*a)
}

/// Scores and ranks the candidates; the first is the answer when it has direct evidence.
pub(crate) fn rank(ctx: &Ctx<'_, '_>, m: &Matches<'_>, map: FxMap<PKey, Cand>) -> Vec<Cand> {
    let n_targets = m.targets.len().max(1) as f64;
    let n_flows = ctx.det.flows.len().max(1) as f64;
    let mut cands: Vec<Cand> = map.into_values().collect();
    for c in &mut cands {
        c.score = match ctx.opts.scorer {
            Scorer::Baseline => c.unique_dests.len() as f64,
            Scorer::Culprit => {
                let near = started_near(ctx, c).is_some();
                let writable = ctx
                    .view
                    .info(&c.key)
                    .is_some_and(|p| user_writable(&p.folder_path));
                100.0
                    * (0.6 * c.owned / n_targets
                        + 0.15 * c.flows_reached.len() as f64 / n_flows
                        + 0.1 * f64::from(u8::from(c.domain.is_some()))
                        + 0.05 * f64::from(u8::from(c.periodic.is_some()))
                        + 0.05 * f64::from(u8::from(near && c.direct() > 0))
                        + 0.05 * f64::from(u8::from(writable && !c.flows_reached.is_empty())))
            }
        };
    }
    // The baseline knows nothing of sessions: its ties go to the busier process.
    let culprit = ctx.opts.scorer == Scorer::Culprit;
    cands.sort_by(|a, b| {
        let direct = if culprit {
            b.direct().cmp(&a.direct())
        } else {
            std::cmp::Ordering::Equal
        };
        b.score
            .total_cmp(&a.score)
            .then(direct)
            .then(b.active_rows.cmp(&a.active_rows))
            .then(a.key.cmp(&b.key))
    });
    if ctx.opts.scorer == Scorer::Culprit {
        if let Some(pos) = cands.iter().position(|c| c.direct() > 0) {
            let top = cands.remove(pos);
            cands.insert(0, top);
        }
        inbound_handler(ctx, &mut cands);
    }
    confidences(ctx, m, &mut cands);
    cands
}

fn confidences(ctx: &Ctx<'_, '_>, m: &Matches<'_>, cands: &mut [Cand]) {
    let n = m.targets.len().max(1) as f64;
    match ctx.opts.scorer {
        Scorer::Baseline => {
            let total: f64 = cands.iter().map(|c| c.score).sum();
            for c in cands.iter_mut() {
                c.confidence = if total > 0.0 { c.score / total } else { 0.0 };
            }
        }
        Scorer::Culprit => {
            let at = ctx.det.window.end + ctx.opts.skew_tolerance;
            let roots: FxMap<PKey, PKey> = cands
                .iter()
                .filter(|c| c.owned > 0.0)
                .map(|c| (c.key, ctx.lineage.root_cause(c.key, at)))
                .collect();
            // Only processes that own sessions can be rivals or cover sessions.
            let snapshot: Vec<(PKey, f64, f64, Option<PKey>)> = cands
                .iter()
                .filter(|c| c.owned > 0.0)
                .map(|c| (c.key, c.owned, c.coverage_weight(), c.handled_for))
                .collect();
            for c in cands.iter_mut() {
                if c.owned <= 0.0 {
                    c.confidence = 0.0;
                    continue;
                }
                let (mut rivals, mut covered) = (0.0, 0.0);
                for (k, owned, cov, handled) in &snapshot {
                    // An inbound handler and the kernel socket it stands for are one answer.
                    if *k == c.key || c.handled_for == Some(*k) || *handled == Some(c.key) {
                        if *k == c.key {
                            covered += cov;
                        }
                        continue;
                    }
                    if related(ctx, &roots, &c.key, k) {
                        covered += cov;
                    } else {
                        rivals += owned;
                    }
                }
                let own = c.owned;
                let evidence = 1.0 - c.doubt;
                let dominance = own / (own + rivals);
                let coverage = 0.6 + 0.4 * (covered / n).min(1.0);
                c.confidence = (evidence * dominance * coverage).clamp(0.0, 0.99);
            }
        }
    }
}

/// Workers behind inbound service ports: the kernel (`System`) accepts the connection, the
/// worker it starts runs the remote commands.
const INBOUND_WORKERS: [(u16, &str); 6] = [
    (5985, "wsmprovhost.exe"),
    (5986, "wsmprovhost.exe"),
    (135, "wmiprvse.exe"),
    (445, "psexesvc.exe"),
    (445, "services.exe"),
    (3389, "rdpclip.exe"),
];

fn is_kernel(ctx: &Ctx<'_, '_>, k: &PKey) -> bool {
    let name = ctx.view.file_name(k);
    k.0 == 4 || name.eq_ignore_ascii_case("system") || name.eq_ignore_ascii_case("ntoskrnl.exe")
}

/// For an inbound detection owned by `System`, puts the worker that handled the connection
/// first, when the device shows it starting right after the connection was accepted.
fn inbound_handler(ctx: &Ctx<'_, '_>, cands: &mut Vec<Cand>) {
    if ctx.det.direction != Direction::Inbound {
        return;
    }
    let Some(top) = cands.first() else {
        return;
    };
    let (Some(at), true) = (top.first_match, is_kernel(ctx, &top.key)) else {
        return;
    };
    let ports: Vec<u16> = ctx.det.flows.iter().filter_map(|f| f.remote_port).collect();
    let names: Vec<&str> = INBOUND_WORKERS
        .iter()
        .filter(|(p, _)| ports.contains(p))
        .map(|(_, n)| *n)
        .collect();
    let worker = ctx
        .view
        .created
        .iter()
        .filter(|c| {
            c.timestamp >= at - Duration::from_seconds(5)
                && c.timestamp <= at + Duration::from_minutes(2)
        })
        .find(|c| {
            names
                .iter()
                .any(|n| c.process.file_name.eq_ignore_ascii_case(n))
        });
    let Some(w) = worker else {
        return;
    };
    let Some(pid) = w.process.process_id else {
        return;
    };
    let key = (pid, w.process.creation_time);
    let mut handler = cands
        .iter()
        .position(|c| c.key == key)
        .map(|i| cands.remove(i))
        .unwrap_or_else(|| Cand::new(key));
    let Some(sys) = cands.first() else {
        return;
    };
    handler.counts.clone_from(&sys.counts);
    handler.owned = sys.owned;
    handler.doubt = sys.doubt;
    handler.max_dt = sys.max_dt;
    handler.first_match = sys.first_match;
    handler.flows_reached.clone_from(&sys.flows_reached);
    handler.score = sys.score + 1.0;
    handler.handled_for = Some(sys.key);
    handler.reasons.push(format!(
        "handled the inbound connection that {} (PID {}) accepted: started {:.1} s after it",
        ctx.view.file_name(&sys.key),
        sys.key.0,
        (w.timestamp - at).as_seconds_f64()
    ));
    cands.insert(0, handler);
}

/// Seconds from the process start to its first session, when it started shortly before.
fn started_near(ctx: &Ctx<'_, '_>, c: &Cand) -> Option<f64> {
    let (created, first) = (c.key.1?, c.first_match?);
    let lead = (first - created).as_seconds_f64();
    let max = (ctx.opts.skew_tolerance + Duration::from_minutes(10)).as_seconds_f64();
    (lead >= -1.0 && lead <= max).then_some(lead)
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// Readable reasons, strongest first.
pub(crate) fn explain(ctx: &Ctx<'_, '_>, m: &Matches<'_>, cands: &mut [Cand]) {
    let n = m.targets.len();
    let others_reached: Vec<(PKey, FxSet<usize>)> = cands
        .iter()
        .map(|c| (c.key, c.flows_reached.clone()))
        .collect();
    for c in cands.iter_mut() {
        let mut r = std::mem::take(&mut c.reasons);
        let direct = c.direct() as usize;
        if direct > 0 {
            let mut how = Vec::new();
            for (q, label) in [
                (Quality::Exact, "exact 5-tuple"),
                (Quality::CommunityId, "Community ID"),
                (Quality::Tight, "remote IP and port"),
                (Quality::Loose, "remote IP and port, loosely timed"),
                (Quality::Reused, "a row MDE kept for repeated connections"),
            ] {
                if c.count(q) > 0 {
                    how.push(label);
                }
            }
            let mut s = format!(
                "owns {direct} of {} ({}, within {:.0} s)",
                plural(n, "session"),
                how.join(", "),
                c.max_dt.as_seconds_f64().ceil().max(1.0)
            );
            if m.offset.abs() > ctx.opts.tight_tolerance {
                s.push_str(&format!(
                    " after correcting a clock offset of {:+.0} s between sensor and host",
                    m.offset.as_seconds_f64()
                ));
            }
            r.push(s);
        }
        if c.count(Quality::Capped) > 0 {
            r.push(format!(
                "reached the same address and port before {} MDE did not record (repeats are capped)",
                plural(c.count(Quality::Capped) as usize, "session")
            ));
        }
        if !c.flows_reached.is_empty() {
            let alone = !others_reached
                .iter()
                .any(|(k, f)| *k != c.key && f.iter().any(|x| c.flows_reached.contains(x)));
            let dests: Vec<String> = c
                .flows_reached
                .iter()
                .filter_map(|&fi| ctx.det.flows.get(fi))
                .map(|f| match f.remote_port {
                    Some(p) => format!("{}:{p}", f.remote_ip),
                    None => f.remote_ip.to_string(),
                })
                .collect();
            let mut dests = dests;
            dests.sort();
            if alone {
                r.push(format!("only process to reach {}", dests.join(", ")));
            } else {
                r.push(format!(
                    "reached {} ({} of {}) in the window, as other processes did",
                    dests.join(", "),
                    dests.len(),
                    plural(ctx.det.flows.len(), "destination")
                ));
            }
        }
        if let Some(lead) = started_near(ctx, c) {
            r.push(format!("started {lead:.1} s before its first session"));
        }
        if let Some(d) = &c.domain {
            r.push(d.clone());
        }
        if let Some((every, k)) = c.periodic {
            r.push(format!(
                "connects periodically: every ~{every:.1} s ({k} connections)"
            ));
        }
        if let Some(p) = ctx.view.info(&c.key)
            && user_writable(&p.folder_path)
        {
            r.push(format!(
                "runs from a user-writable folder ({})",
                p.folder_path
            ));
        }
        let at = c.first_match.unwrap_or(ctx.det.window.end) + ctx.opts.skew_tolerance;
        if let Some((inj, t)) = ctx.lineage.injector(&c.key, at) {
            r.push(format!(
                "code injected into it by {} (PID {}) at {}",
                ctx.view.file_name(&inj),
                inj.0,
                t.to_millis_string()
            ));
        }
        if !c.unique_dests.is_empty() {
            r.push(format!(
                "{} from the host's address in the window (the vendor's count)",
                plural(c.unique_dests.len(), "unique destination")
            ));
        }
        c.reasons = r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: &[f64]) -> Vec<Timestamp> {
        secs.iter().map(|s| Timestamp((s * 1e7) as i64)).collect()
    }

    #[test]
    fn beacons_are_periodic_and_bursts_are_not() {
        let beacon = at(&[0.0, 0.6, 1.1, 6.5, 11.6, 16.7, 21.8, 26.9, 32.0]);
        let (every, n) = periodicity(&beacon).unwrap();
        assert!((every - 5.1).abs() < 0.2, "{every}");
        assert_eq!(n, 9);
        assert_eq!(periodicity(&at(&[0.0, 0.1, 0.2, 0.3, 0.4])), None);
        assert_eq!(periodicity(&at(&[0.0, 3.0, 40.0, 41.0, 200.0])), None);
        assert_eq!(periodicity(&at(&[0.0, 5.0, 10.0])), None);
    }
}
