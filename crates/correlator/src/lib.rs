//! The attribution engine: given one normalised network detection and the endpoint's MDE
//! telemetry, name the process that did it, explain why, and abstain honestly.
//!
//! The engine is pure: no I/O, no clock (the caller passes `now`), no network; none of its
//! modules uses the bus, the stores or tokio. Only [`service`], the wrapper that feeds it
//! from the bus, does I/O.

mod community_id;
mod device;
pub mod eval;
mod fx;
mod lineage;
mod matching;
mod query;
mod score;
#[cfg(feature = "service")]
pub mod service;
mod view;

use culprit_model::correlation::{DetectionSummary, DeviceRef, ParentRef};
use culprit_model::detection::Subject;
use culprit_model::{
    Correlation, Detection, Duration, ProcessAnswer, Status, Telemetry, Timestamp,
};

pub use community_id::community_id;

use device::{Held, Resolution};
use lineage::Lineage;
use matching::Matches;
use score::{Cand, Ctx};
use view::{DeviceView, PKey};

/// How candidates are ranked.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scorer {
    /// Direct session evidence first, then coverage, domains, timing and periodicity.
    #[default]
    Culprit,
    /// The vendor's published method: most unique destinations contacted from the host's
    /// address in the detection window.
    Baseline,
}

impl Scorer {
    pub fn as_str(self) -> &'static str {
        match self {
            Scorer::Culprit => "culprit",
            Scorer::Baseline => "baseline",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "culprit" => Some(Scorer::Culprit),
            "baseline" => Some(Scorer::Baseline),
            _ => None,
        }
    }
}

/// Tuning of the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// How far the network sensor's and the host's clocks may differ.
    pub skew_tolerance: Duration,
    /// A session and a row this close (after the estimated clock offset) are the same
    /// connection beyond reasonable doubt.
    pub tight_tolerance: Duration,
    pub scorer: Scorer,
    /// How late MDE telemetry may land: a detection newer than `now − ingestion_delay` with
    /// no rows yet is `pending_telemetry`.
    pub ingestion_delay: Duration,
    /// How many ranked candidates the answer lists.
    pub max_candidates: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            skew_tolerance: Duration::from_seconds(120),
            tight_tolerance: Duration::from_seconds(2),
            scorer: Scorer::Culprit,
            ingestion_delay: Duration::from_minutes(30),
            max_candidates: 10,
        }
    }
}

fn summary(det: &Detection) -> DetectionSummary {
    let mut dests: Vec<String> = det
        .flows
        .iter()
        .map(|f| match f.remote_port {
            Some(p) => format!("{}:{p}", f.remote_ip),
            None => f.remote_ip.to_string(),
        })
        .collect();
    dests.dedup();
    let n = det.session_count();
    let traffic = if dests.is_empty() {
        "no destinations given".to_owned()
    } else {
        format!(
            "{n} session{} to {}",
            if n == 1 { "" } else { "s" },
            dests.join(", ")
        )
    };
    DetectionSummary {
        detection_type: det.detection_type.clone(),
        category: det.category.clone(),
        threat: det.threat,
        certainty: det.certainty,
        host_ip: det.host.ip.map(|i| i.to_string()),
        host_name: det.host.name.clone(),
        window_start: Some(det.window.start),
        window_end: Some(det.window.end),
        traffic,
    }
}

fn empty(det: &Detection, opts: &Options, now: Timestamp) -> Correlation {
    Correlation {
        detection_id: det.source_id.clone(),
        detection_key: det.key(),
        source: det.source,
        tenant: det.tenant.clone(),
        status: Status::InsufficientTelemetry,
        error_kind: None,
        explanation: String::new(),
        device: None,
        devices: Vec::new(),
        probable: None,
        root_cause: None,
        candidates: Vec::new(),
        window_activity: Vec::new(),
        hunting_query: None,
        links: None,
        detection: summary(det),
        scorer: opts.scorer.as_str().to_owned(),
        computed_at: now,
    }
}

fn device_ref(h: &Held<'_>) -> DeviceRef {
    DeviceRef {
        device_id: h.id.to_owned(),
        device_name: h.name.to_owned(),
        held_from: Some(h.from),
        held_until: h.until,
    }
}

fn host_label(det: &Detection) -> String {
    match (&det.host.ip, &det.host.name) {
        (Some(ip), _) => ip.to_string(),
        (None, Some(n)) => n.clone(),
        (None, None) => "the detection's host".to_owned(),
    }
}

/// Attributes one detection. Never panics; fills everything in the output contract except
/// `links`, which need the tenant's portal.
pub fn attribute(
    detection: &Detection,
    telemetry: &Telemetry,
    opts: &Options,
    now: Timestamp,
) -> Correlation {
    let det = detection;
    let mut c = empty(det, opts, now);
    if det.subject == Subject::Account {
        c.status = Status::NotHostAttributable;
        c.explanation =
            "The detection is about an account, not a host: there is no process to name.".into();
        return c;
    }
    if det.needs_target_list {
        c.status = Status::NeedsTargetList;
        c.explanation = "The detection names no targets (dst=0.0.0.0): fetch its target list from the sensor's API first.".into();
        return c;
    }
    let tol = opts.skew_tolerance;
    let (ws, we) = (det.window.start, det.window.end);
    let recent = now < we + opts.ingestion_delay;
    let margin = tol + Duration::from_minutes(10);
    let focus = view::Focus {
        from: ws - margin,
        to: we + margin,
        ips: det.flows.iter().map(|f| f.remote_ip).collect(),
    };
    let (resolution, devices) = match (det.host.ip, &det.host.name) {
        (Some(ip), _) => device::resolve(telemetry, ip, (ws - tol, we + tol), &focus),
        (None, Some(name)) => (
            device::resolve_by_name(telemetry, name),
            view::NetDevices::new(telemetry, &focus),
        ),
        (None, None) => (Resolution::NotFound, view::NetDevices::default()),
    };
    let held = match resolution {
        Resolution::NotFound => {
            c.status = if recent {
                Status::PendingTelemetry
            } else {
                Status::DeviceNotFound
            };
            c.explanation = if recent {
                format!(
                    "No device has reported {} yet; MDE telemetry can land up to {:.0} min late: retry later.",
                    host_label(det),
                    opts.ingestion_delay.as_seconds_f64() / 60.0
                )
            } else {
                format!(
                    "No onboarded device held {} during the window: check that the host runs MDE, or that the address is not a NAT or VPN gateway.",
                    host_label(det)
                )
            };
            return c;
        }
        Resolution::Ambiguous(list) => {
            c.status = Status::DeviceAmbiguous;
            let parts: Vec<String> = list
                .iter()
                .map(|h| {
                    let until = h.until.map_or("on".to_owned(), |u| {
                        format!("until {}", u.to_millis_string())
                    });
                    format!("{} from {} {until}", h.name, h.from.to_millis_string())
                })
                .collect();
            c.explanation = format!(
                "{} devices held {} during the window ({}): Culprit will not guess. Re-run with the device named, or check DHCP.",
                list.len(),
                host_label(det),
                parts.join("; ")
            );
            c.devices = list.iter().map(device_ref).collect();
            return c;
        }
        Resolution::One(h) => h,
    };
    let view = DeviceView::build(telemetry, &devices, held.id);
    c.device = Some(device_ref(&held));
    c.window_activity = lineage::window_activity(&view, ws, we, tol);
    let in_window = view.net.iter().any(|r| r.t >= ws - tol && r.t <= we + tol);
    if recent && !in_window {
        c.status = Status::PendingTelemetry;
        c.explanation = format!(
            "{} has no network rows for the window yet; MDE telemetry can land late: retry later.",
            held.name
        );
        return c;
    }
    let ips: Vec<_> = det.flows.iter().map(|f| f.remote_ip).collect();
    let lineage = Lineage::new(&view, &ips);
    let ctx = Ctx {
        det,
        view: &view,
        opts,
        lineage: &lineage,
    };
    let m = matching::match_sessions(det, &view, tol, opts.tight_tolerance);
    let map = score::collect(&ctx, &m);
    let mut cands = score::rank(&ctx, &m, map);
    score::explain(&ctx, &m, &mut cands);
    decide(&ctx, &m, &mut c, &mut cands);
    c.candidates = cands
        .iter()
        .take(opts.max_candidates)
        .map(|x| answer(&ctx, x))
        .collect();
    c.hunting_query = Some(query::build(
        det,
        held.id,
        tol,
        c.probable.as_ref(),
        c.root_cause.as_ref(),
    ));
    c
}

/// Picks the status and the answer.
fn decide(ctx: &Ctx<'_, '_>, m: &Matches<'_>, c: &mut Correlation, cands: &mut [Cand]) {
    let (det, opts) = (ctx.det, ctx.opts);
    let tol = opts.skew_tolerance;
    let name = ctx.view.name;
    let chosen: Option<usize> = match opts.scorer {
        Scorer::Baseline => cands.first().filter(|x| x.score > 0.0).map(|_| 0),
        Scorer::Culprit if det.flows.is_empty() => {
            let active: Vec<usize> = (0..cands.len())
                .filter(|&i| cands[i].outbound_rows > 0)
                .collect();
            if active.len() == 1 {
                let i = active[0];
                cands[i].confidence = 0.35;
                cands[i].reasons.insert(0, format!(
                    "the only process on {name} with outbound network activity within the window ± {:.0} s; the detection names no destinations",
                    tol.as_seconds_f64()
                ));
                Some(i)
            } else {
                None
            }
        }
        Scorer::Culprit => cands.first().filter(|x| x.direct() > 0).map(|_| 0),
    };
    let Some(i) = chosen else {
        if let Some(why) = device::sensor_inactive(ctx.view, det.window.start, det.window.end, tol)
        {
            c.status = Status::SensorInactive;
            c.explanation = format!(
                "{name} cannot have reported the window: {why}. Check the device's sensor in the Defender portal."
            );
            return;
        }
        c.status = Status::InsufficientTelemetry;
        c.explanation = if det.flows.is_empty() {
            let active = cands.iter().filter(|x| x.outbound_rows > 0).count();
            format!(
                "The detection names no destinations and {active} processes on {name} had outbound network activity within the window ± {:.0} s: no process can be named. A detection with its sessions would settle it.",
                tol.as_seconds_f64()
            )
        } else {
            format!(
                "No process on {name} has a row matching any of the detection's {} within ± {:.0} s: the rows that would show the owner are missing (MDE caps repeated connections). Check the device timeline.",
                if m.targets.len() == 1 {
                    "session".to_owned()
                } else {
                    format!("{} sessions", m.targets.len())
                },
                tol.as_seconds_f64()
            )
        };
        return;
    };
    if i != 0 {
        let x = cands[i].clone();
        cands[..=i].rotate_right(1);
        cands[0] = x;
    }
    let top = &cands[0];
    c.status = Status::Attributed;
    let mut p = answer(ctx, top);
    p.process_tree = ctx.lineage.tree(top.key);
    let at = top.first_match.unwrap_or(det.window.end) + tol;
    let root_key = match opts.scorer {
        Scorer::Culprit => ctx.lineage.root_cause(top.key, at),
        Scorer::Baseline => top.key,
    };
    let root = if root_key == top.key {
        p.clone()
    } else {
        let rc = cands
            .iter()
            .find(|x| x.key == root_key)
            .cloned()
            .unwrap_or_else(|| Cand {
                key: root_key,
                ..Cand::default()
            });
        answer(ctx, &rc)
    };
    c.explanation = format!(
        "{} (PID {}) on {name}: {}.",
        p.file_name,
        p.process_id,
        p.reasons.first().cloned().unwrap_or_default()
    );
    if root_key != top.key {
        c.explanation.push_str(&format!(
            " Root cause: {} (PID {}).",
            root.file_name, root.process_id
        ));
    }
    c.probable = Some(p);
    c.root_cause = Some(root);
}

fn answer(ctx: &Ctx<'_, '_>, x: &Cand) -> ProcessAnswer {
    let info = ctx.view.info(&x.key);
    let get = |f: fn(&culprit_model::telemetry::ProcessInfo) -> &String| {
        info.map(|p| f(p).clone()).unwrap_or_default()
    };
    let parent = info.and_then(|p| {
        (p.parent_id.is_some() || !p.parent_file_name.is_empty()).then(|| ParentRef {
            file_name: p.parent_file_name.clone(),
            process_id: p.parent_id,
            process_creation_time: p.parent_creation_time,
        })
    });
    let parent = parent.or_else(|| {
        ctx.lineage.parent(&x.key).map(|k: PKey| ParentRef {
            file_name: ctx.view.file_name(&k).to_owned(),
            process_id: Some(k.0),
            process_creation_time: k.1,
        })
    });
    ProcessAnswer {
        device_name: ctx.view.name.to_owned(),
        device_id: ctx.view.id.to_owned(),
        process_id: x.key.0,
        file_name: get(|p| &p.file_name),
        process_creation_time: x.key.1,
        command_line: get(|p| &p.command_line),
        sha256: get(|p| &p.sha256),
        sha1: get(|p| &p.sha1),
        folder_path: get(|p| &p.folder_path),
        account_domain: get(|p| &p.account_domain),
        account_name: get(|p| &p.account_name),
        integrity_level: get(|p| &p.integrity_level),
        parent,
        score: (x.score * 100.0).round() / 100.0,
        confidence: (x.confidence * 100.0).round() / 100.0,
        reasons: x.reasons.clone(),
        sessions_owned: x.direct(),
        process_tree: Vec::new(),
    }
}
