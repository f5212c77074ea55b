//! Direct evidence: which rows are the detection's sessions. A row matches a session when it
//! joins the session's remote address and port (in either column orientation, IPv4-mapped
//! equal to IPv4) within the skew tolerance; the clock offset between the network sensor and
//! the host is estimated first, so that each session goes to the row that really is it.

use crate::fx::FxMap;
use std::net::IpAddr;

use culprit_model::detection::{Direction, Protocol};
use culprit_model::{Detection, Duration, Timestamp};

use crate::community_id;
use crate::view::{DeviceView, NetRow};

/// How a session was tied to a row, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Quality {
    /// Local port known and equal: the exact 5-tuple.
    Exact,
    /// The NDR's Community ID equals the one computed from the row.
    CommunityId,
    /// Remote IP and port within a couple of seconds (after the clock offset).
    Tight,
    /// Remote IP and port within the skew tolerance.
    Loose,
    /// The nearest row within the tolerance already stands for another session (MDE caps
    /// repeated connections, so one row may stand for several).
    Reused,
    /// No row within the tolerance, but the process reached the same address and port
    /// earlier: a repeat MDE did not record. Not direct evidence.
    Capped,
}

impl Quality {
    pub fn is_direct(self) -> bool {
        self != Quality::Capped
    }
    pub fn weight(self) -> f64 {
        match self {
            Quality::Exact | Quality::CommunityId => 1.0,
            Quality::Tight => 0.9,
            Quality::Loose => 0.6,
            Quality::Reused => 0.5,
            Quality::Capped => 0.25,
        }
    }
    /// How sure one such match makes us of the session's owner.
    pub fn strength(self) -> f64 {
        match self {
            Quality::Exact | Quality::CommunityId => 0.97,
            Quality::Tight => 0.93,
            Quality::Loose => 0.6,
            Quality::Reused => 0.5,
            Quality::Capped => 0.2,
        }
    }
}

/// One thing to match: a session, or a flow without sessions spanning the window.
#[derive(Clone, Debug)]
pub(crate) struct Target<'d> {
    pub flow: usize,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Sessions are matched on their first packet; session-less flows anywhere in the window.
    pub anchored: bool,
    pub local_port: Option<u16>,
    pub community_id: Option<&'d str>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Assignment {
    pub target: usize,
    pub row: usize,
    pub quality: Quality,
    /// Row time (after the offset) minus session start.
    pub dt: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct Matches<'d> {
    pub targets: Vec<Target<'d>>,
    /// Host clock + offset = sensor clock.
    pub offset: Duration,
    pub assignments: Vec<Assignment>,
    /// Rows (indices into the view) joining each flow's address and port, any time.
    pub flow_rows: Vec<Vec<usize>>,
}

pub(crate) fn targets(det: &Detection) -> Vec<Target<'_>> {
    let mut out = Vec::new();
    for (fi, f) in det.flows.iter().enumerate() {
        if f.sessions.is_empty() {
            out.push(Target {
                flow: fi,
                start: det.window.start,
                end: det.window.end,
                anchored: false,
                local_port: None,
                community_id: None,
            });
        }
        for s in &f.sessions {
            out.push(Target {
                flow: fi,
                start: s.first,
                end: s.last.max(s.first),
                anchored: true,
                local_port: s.local_port,
                community_id: s.community_id.as_deref(),
            });
        }
    }
    out
}

/// The row's (own port, peer port) when it joins `ip` on either side.
pub(crate) fn sides(row: &NetRow<'_>, ip: IpAddr) -> Option<(Option<u16>, Option<u16>)> {
    if row.remote_ip == Some(ip) {
        Some((row.local_port, row.remote_port))
    } else if row.local_ip == Some(ip) {
        Some((row.remote_port, row.local_port))
    } else {
        None
    }
}

fn joins_flow(det: &Detection, fi: usize, row: &NetRow<'_>) -> bool {
    let Some(f) = det.flows.get(fi) else {
        return false;
    };
    let Some((own, peer)) = sides(row, f.remote_ip) else {
        return false;
    };
    let proto_ok = match f.protocol {
        Protocol::Tcp | Protocol::Udp => {
            row.protocol.is_empty() || row.protocol.eq_ignore_ascii_case(f.protocol.as_str())
        }
        _ => true,
    };
    let port_ok = match f.remote_port {
        None => true,
        Some(p) => peer == Some(p) || (det.direction == Direction::Inbound && own == Some(p)),
    };
    proto_ok && port_ok
}

fn distance(row_t: Timestamp, offset: Duration, t: &Target<'_>) -> Duration {
    let x = row_t + offset;
    if t.anchored || x < t.start {
        x - t.start
    } else if x > t.end {
        x - t.end
    } else {
        Duration::ZERO
    }
}

/// `None` when the row is known to be another connection (local port or Community ID differ).
fn quality(
    det: &Detection,
    row: &NetRow<'_>,
    t: &Target<'_>,
    dt: Duration,
    tight: Duration,
) -> Option<Quality> {
    let f = det.flows.get(t.flow)?;
    let (own, _) = sides(row, f.remote_ip)?;
    if let (Some(lp), Some(o)) = (t.local_port, own) {
        if lp != o {
            return None;
        }
        return Some(Quality::Exact);
    }
    if let Some(cid) = t.community_id
        && let Some(mine) = community_id::of_row(row, f.remote_ip, f.protocol)
    {
        return (mine == cid).then_some(Quality::CommunityId);
    }
    Some(if dt.abs() <= tight {
        Quality::Tight
    } else {
        Quality::Loose
    })
}

/// The offset that lines up the most sessions with a row within `tight`; ties go to the
/// smallest offset, so without evidence of skew none is assumed.
fn estimate_offset(
    view: &DeviceView<'_>,
    targets: &[Target<'_>],
    flow_rows: &[Vec<usize>],
    tol: Duration,
    tight: Duration,
) -> Duration {
    let mut deltas: Vec<i64> = vec![0];
    for t in targets.iter().filter(|t| t.anchored) {
        for &ri in flow_rows.get(t.flow).into_iter().flatten() {
            let d = t.start - view.net[ri].t;
            if d.abs() <= tol {
                deltas.push(d.0 / 1_000_000 * 1_000_000);
            }
        }
    }
    deltas.sort_unstable();
    deltas.dedup();
    if deltas.len() > 400 {
        let step = deltas.len() / 400 + 1;
        let mut sampled: Vec<i64> = deltas.iter().step_by(step).copied().collect();
        sampled.push(0);
        deltas = sampled;
    }
    let lined_up = |off: Duration| {
        targets
            .iter()
            .filter(|t| t.anchored)
            .filter(|t| {
                flow_rows
                    .get(t.flow)
                    .into_iter()
                    .flatten()
                    .any(|&ri| (distance(view.net[ri].t, off, t)).abs() <= tight)
            })
            .count()
    };
    let mut best = (lined_up(Duration::ZERO), Duration::ZERO);
    for d in deltas {
        let off = Duration(d);
        let n = lined_up(off);
        if n > best.0 || (n == best.0 && off.abs() < best.1.abs()) {
            best = (n, off);
        }
    }
    if best.1 == Duration::ZERO {
        return best.1;
    }
    // Centre the offset on the lined-up pairs: the smallest offset of the plateau sits up to
    // `tight` off the real one.
    let mut residuals: Vec<i64> = targets
        .iter()
        .filter(|t| t.anchored)
        .filter_map(|t| {
            flow_rows
                .get(t.flow)
                .into_iter()
                .flatten()
                .map(|&ri| t.start - view.net[ri].t)
                .filter(|d| (*d + -best.1).abs() <= tight)
                .min_by_key(|d| (*d + -best.1).abs())
                .map(|d| d.0)
        })
        .collect();
    residuals.sort_unstable();
    match residuals.get(residuals.len() / 2) {
        Some(&m) if lined_up(Duration(m)) >= best.0 => Duration(m),
        _ => best.1,
    }
}

pub(crate) fn match_sessions<'d>(
    det: &'d Detection,
    view: &DeviceView<'_>,
    tol: Duration,
    tight: Duration,
) -> Matches<'d> {
    let targets = targets(det);
    let mut by_ip: FxMap<IpAddr, Vec<usize>> = FxMap::default();
    for (fi, f) in det.flows.iter().enumerate() {
        by_ip.entry(f.remote_ip).or_default().push(fi);
    }
    // A few addresses are cheaper to compare than to hash, row after row.
    let few: Option<Vec<IpAddr>> = (by_ip.len() <= 8).then(|| by_ip.keys().copied().collect());
    let mut flow_rows: Vec<Vec<usize>> = vec![Vec::new(); det.flows.len()];
    for (ri, row) in view.net.iter().enumerate() {
        for ip in [row.remote_ip, row.local_ip].into_iter().flatten() {
            if few.as_ref().is_some_and(|f| !f.contains(&ip)) {
                continue;
            }
            for &fi in by_ip.get(&ip).into_iter().flatten() {
                if joins_flow(det, fi, row) && flow_rows[fi].last() != Some(&ri) {
                    flow_rows[fi].push(ri);
                }
            }
        }
    }
    let offset = estimate_offset(view, &targets, &flow_rows, tol, tight);
    let mut pairs: Vec<Assignment> = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        for &ri in flow_rows.get(t.flow).into_iter().flatten() {
            let dt = distance(view.net[ri].t, offset, t);
            if dt.abs() > tol {
                continue;
            }
            if let Some(q) = quality(det, &view.net[ri], t, dt, tight) {
                pairs.push(Assignment {
                    target: ti,
                    row: ri,
                    quality: q,
                    dt,
                });
            }
        }
    }
    pairs.sort_by_key(|a| (a.quality, a.dt.abs(), a.row, a.target));
    let mut done_t = vec![false; targets.len()];
    let mut used_r = vec![false; view.net.len()];
    let mut assignments = Vec::new();
    // One row is one connection: first pair each session with its own row...
    for a in &pairs {
        if !done_t[a.target] && !used_r[a.row] {
            done_t[a.target] = true;
            used_r[a.row] = true;
            assignments.push(*a);
        }
    }
    // ...then let capped repeats share the nearest row within the tolerance...
    for a in &pairs {
        if !done_t[a.target] {
            done_t[a.target] = true;
            let quality = if a.quality <= Quality::CommunityId {
                a.quality
            } else {
                Quality::Reused
            };
            assignments.push(Assignment { quality, ..*a });
        }
    }
    // ...and give a session with no row at all to the process that reached the same address
    // and port last before it.
    for (ti, t) in targets.iter().enumerate() {
        if done_t[ti] || !t.anchored {
            continue;
        }
        let earlier = flow_rows
            .get(t.flow)
            .into_iter()
            .flatten()
            .filter(|&&ri| view.net[ri].t + offset < t.start)
            .max_by_key(|&&ri| view.net[ri].t);
        if let Some(&ri) = earlier {
            let dt = distance(view.net[ri].t, offset, t);
            assignments.push(Assignment {
                target: ti,
                row: ri,
                quality: Quality::Capped,
                dt,
            });
        }
    }
    assignments.sort_by_key(|a| a.target);
    Matches {
        targets,
        offset,
        assignments,
        flow_rows,
    }
}
