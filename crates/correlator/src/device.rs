//! Which device held the detection's address during its window, as time intervals per
//! device from DeviceNetworkInfo snapshots and the devices' own connection rows.

use std::collections::BTreeMap;
use std::net::IpAddr;

use culprit_model::{Duration, Telemetry, Timestamp};

use crate::fx::{FxMap, FxSet};
use crate::view::{Focus, NetDevices, NetDevicesBuilder};

/// One device's hold on the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Held<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub from: Timestamp,
    /// Open when nothing says the hold ended.
    pub until: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resolution<'a> {
    One(Held<'a>),
    Ambiguous(Vec<Held<'a>>),
    NotFound,
}

/// Per minute: the first and last row in it.
type Minutes = FxMap<i64, (Timestamp, Timestamp)>;

#[derive(Default)]
struct DeviceObs<'a> {
    name: &'a str,
    /// Every address any snapshot gave the device: what its own side of a row can be.
    own: FxSet<IpAddr>,
    /// (time, holds the address?)
    obs: Vec<(Timestamp, bool)>,
    /// When the device's snapshots came in: their cadence tells when a silent device left.
    snapshots: Vec<Timestamp>,
}

impl DeviceObs<'_> {
    /// Twice the usual gap between snapshots, for a device that reports periodically.
    fn staleness(&self) -> Option<Duration> {
        let mut gaps: Vec<i64> = self.snapshots.windows(2).map(|w| (w[1] - w[0]).0).collect();
        gaps.sort_unstable();
        gaps.get(gaps.len() / 2)
            .filter(|g| **g > 0)
            .map(|g| Duration(g.saturating_mul(2)))
    }
}

/// Outbound rows leave from an ephemeral port to a service port; a row whose local port is
/// a service port and remote port is not has its columns reversed.
fn looks_swapped(local_port: Option<u16>, remote_port: Option<u16>, action: &str) -> bool {
    let outbound = !(action.starts_with("Inbound") || action.starts_with("Listening"));
    matches!((local_port, remote_port), (Some(l), Some(r)) if outbound && l < 1024 && r >= 1024)
}

/// Reads every network row once: its device slot, and whether it shows the device using `ip`.
fn observations<'a>(
    tel: &'a Telemetry,
    ip: IpAddr,
    focus: &Focus,
) -> (BTreeMap<&'a str, DeviceObs<'a>>, NetDevices<'a>) {
    let mut devs: BTreeMap<&str, DeviceObs> = BTreeMap::new();
    // Adapters of one device report in separate rows with the same timestamp: a snapshot is
    // their union.
    let mut snapshots: BTreeMap<(&str, Timestamp), bool> = BTreeMap::new();
    for r in &tel.network_info {
        if r.ip_addresses.is_empty() {
            continue;
        }
        let d = devs.entry(&r.device_id).or_default();
        d.name = &r.device_name;
        d.own.extend(r.ip_addresses.iter().copied());
        *snapshots.entry((&r.device_id, r.timestamp)).or_default() |= r.ip_addresses.contains(&ip);
    }
    for ((id, t), has) in snapshots {
        let d = devs.entry(id).or_default();
        d.obs.push((t, has));
        d.snapshots.push(t);
    }
    // Per network-row device slot: its snapshot addresses, and its uses of `ip` per minute
    // (a minute's first and last use say as much about a hold as every row in it).
    let empty = FxSet::default();
    let mut own: Vec<&FxSet<IpAddr>> = Vec::new();
    let mut uses: Vec<(&str, Minutes)> = Vec::new();
    let mut builder = NetDevicesBuilder::default();
    for (i, r) in tel.network.iter().enumerate() {
        let (slot, new) = builder.push(r, i, focus);
        if new {
            own.push(devs.get(r.device_id.as_str()).map_or(&empty, |d| &d.own));
            uses.push(("", FxMap::default()));
        }
        let (l, rm) = (r.local_ip == Some(ip), r.remote_ip == Some(ip));
        if !l && !rm {
            continue;
        }
        let (Some(own), Some((name, minutes))) = (own.get(slot), uses.get_mut(slot)) else {
            continue;
        };
        let used = if own.is_empty() {
            l && !looks_swapped(r.local_port, r.remote_port, &r.action_type)
        } else {
            // The address is the device's own side when the snapshots say so and the other
            // side is not also one of its addresses.
            let other = if l { r.remote_ip } else { r.local_ip };
            own.contains(&ip) && other.is_none_or(|o| !own.contains(&o))
        };
        if used {
            let t = r.timestamp;
            let e = minutes.entry(t.0.div_euclid(600_000_000)).or_insert((t, t));
            *e = (e.0.min(t), e.1.max(t));
            if name.is_empty() {
                *name = &r.device_name;
            }
        }
    }
    for (slot, (name, minutes)) in uses.into_iter().enumerate() {
        if minutes.is_empty() {
            continue;
        }
        let d = devs.entry(builder.done.id_of_slot(slot)).or_default();
        if d.name.is_empty() {
            d.name = name;
        }
        for (first, last) in minutes.into_values() {
            d.obs.push((first, true));
            d.obs.push((last, true));
        }
    }
    (devs, builder.done)
}

/// Resolves `ip` to the devices that held it during `[start, end]`.
/// Also returns each network row's device, read on the way.
pub(crate) fn resolve<'a>(
    tel: &'a Telemetry,
    ip: IpAddr,
    (start, end): (Timestamp, Timestamp),
    focus: &Focus,
) -> (Resolution<'a>, NetDevices<'a>) {
    let (devs, devices) = observations(tel, ip, focus);
    (holds_in(&devs, start, end), devices)
}

fn holds_in<'a>(
    devs: &BTreeMap<&'a str, DeviceObs<'a>>,
    start: Timestamp,
    end: Timestamp,
) -> Resolution<'a> {
    let mut holds: Vec<(Held, Timestamp)> = Vec::new();
    for (id, d) in devs {
        let mut obs = d.obs.clone();
        obs.sort();
        let mut open: Option<Timestamp> = None;
        let mut last_pos = None;
        for (t, has) in obs {
            match (has, open) {
                (true, None) => open = Some(t),
                (false, Some(s)) => {
                    holds.push((
                        Held {
                            id,
                            name: d.name,
                            from: s,
                            until: Some(t),
                        },
                        t,
                    ));
                    open = None;
                }
                _ => {}
            }
            if has {
                last_pos = Some(t);
            }
        }
        if let (Some(s), Some(lp)) = (open, last_pos) {
            holds.push((
                Held {
                    id,
                    name: d.name,
                    from: s,
                    until: None,
                },
                lp,
            ));
        }
    }
    // A hold nothing closed ends when another device is next seen with the address.
    let positives: Vec<(&str, Timestamp)> = devs
        .iter()
        .flat_map(|(id, d)| d.obs.iter().filter(|o| o.1).map(move |o| (*id, o.0)))
        .collect();
    // A device that reports periodically and went silent left with its address.
    for (h, last_pos) in &mut holds {
        if h.until.is_none() {
            let taken = positives
                .iter()
                .filter(|(id, t)| *id != h.id && t > last_pos)
                .map(|(_, t)| *t)
                .min();
            let stale = devs
                .get(h.id)
                .and_then(DeviceObs::staleness)
                .map(|s| *last_pos + s);
            h.until = match (taken, stale) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    let mut hits: Vec<Held> = Vec::new();
    for (h, _) in holds {
        if h.from > end || h.until.is_some_and(|u| u < start) {
            continue;
        }
        match hits.iter_mut().find(|x| x.id == h.id) {
            Some(x) => {
                x.from = x.from.min(h.from);
                x.until = match (x.until, h.until) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            None => hits.push(h),
        }
    }
    hits.sort_by_key(|h| h.from);
    match hits.len() {
        0 => Resolution::NotFound,
        1 => hits.pop().map_or(Resolution::NotFound, Resolution::One),
        _ => Resolution::Ambiguous(hits),
    }
}

/// Resolves a host name (first DNS label, case-insensitive) when the detection has no address.
pub(crate) fn resolve_by_name<'a>(tel: &'a Telemetry, name: &str) -> Resolution<'a> {
    let label = |s: &str| s.split('.').next().unwrap_or("").to_ascii_lowercase();
    let want = label(name);
    let mut found: Vec<Held> = Vec::new();
    let names = tel
        .device_info
        .iter()
        .map(|r| (r.device_id.as_str(), r.device_name.as_str(), r.timestamp))
        .chain(
            tel.network
                .iter()
                .map(|r| (r.device_id.as_str(), r.device_name.as_str(), r.timestamp)),
        );
    for (id, n, t) in names {
        if want.is_empty() || label(n) != want || found.iter().any(|h| h.id == id) {
            continue;
        }
        found.push(Held {
            id,
            name: n,
            from: t,
            until: None,
        });
    }
    match found.len() {
        0 => Resolution::NotFound,
        1 => found.pop().map_or(Resolution::NotFound, Resolution::One),
        _ => Resolution::Ambiguous(found),
    }
}

/// Why the device's sensor could not have reported the window, if it could not.
pub(crate) fn sensor_inactive(
    view: &crate::view::DeviceView<'_>,
    start: Timestamp,
    end: Timestamp,
    tolerance: Duration,
) -> Option<String> {
    let latest = view
        .info
        .iter()
        .filter(|r| r.timestamp <= end + tolerance)
        .max_by_key(|r| r.timestamp)
        .or_else(|| view.info.iter().min_by_key(|r| r.timestamp));
    if let Some(info) = latest {
        let onboarding = info.onboarding_status.trim();
        if !onboarding.is_empty() && !onboarding.eq_ignore_ascii_case("onboarded") {
            return Some(format!("its onboarding status is \"{onboarding}\""));
        }
        let health = info.sensor_health_state.trim();
        if [
            "inactive",
            "nosensordata",
            "impairedcommunication",
            "misconfigured",
        ]
        .iter()
        .any(|s| health.eq_ignore_ascii_case(s))
        {
            return Some(format!("its sensor health state is \"{health}\""));
        }
    }
    match view.last_seen {
        Some(seen) if seen + tolerance < start => Some(format!(
            "its sensor was last heard from at {}, before the window",
            seen.to_millis_string()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_model::telemetry::NetworkInfo;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(&format!("2023-08-18T{s}Z")).unwrap()
    }

    fn no_focus() -> Focus {
        Focus {
            from: Timestamp(0),
            to: Timestamp(0),
            ips: Vec::new(),
        }
    }

    fn ni(id: &str, at: &str, ips: &[&str]) -> NetworkInfo {
        NetworkInfo {
            timestamp: t(at),
            device_id: id.into(),
            device_name: id.into(),
            ip_addresses: ips.iter().map(|i| i.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn adapters_reported_together_are_one_snapshot() {
        let ip: IpAddr = "192.168.1.42".parse().unwrap();
        let tel = Telemetry {
            network_info: vec![
                ni("a", "10:00:00", &["192.168.1.42"]),
                ni("a", "10:00:00", &["10.8.0.2"]),
            ],
            ..Telemetry::default()
        };
        let r = resolve(&tel, ip, (t("11:00:00"), t("11:05:00")), &no_focus()).0;
        assert!(matches!(r, Resolution::One(h) if h.id == "a" && h.until.is_none()));
    }

    #[test]
    fn a_release_ends_the_hold() {
        let ip: IpAddr = "192.168.1.42".parse().unwrap();
        let tel = Telemetry {
            network_info: vec![
                ni("b", "09:00:00", &["192.168.1.42"]),
                ni("b", "09:30:00", &["192.168.1.34"]),
            ],
            ..Telemetry::default()
        };
        assert_eq!(
            resolve(&tel, ip, (t("10:00:00"), t("10:05:00")), &no_focus()).0,
            Resolution::NotFound
        );
        let r = resolve(&tel, ip, (t("09:10:00"), t("09:15:00")), &no_focus()).0;
        assert!(matches!(r, Resolution::One(h) if h.until == Some(t("09:30:00"))));
    }

    #[test]
    fn service_port_on_the_local_side_means_swapped_columns() {
        assert!(looks_swapped(Some(443), Some(51000), "ConnectionSuccess"));
        assert!(!looks_swapped(Some(51000), Some(443), "ConnectionSuccess"));
        assert!(!looks_swapped(
            Some(5985),
            Some(51000),
            "InboundConnectionAccepted"
        ));
    }
}
