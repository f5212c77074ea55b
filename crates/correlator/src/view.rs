//! One device's telemetry, borrowed from the bundle: network-like rows in one shape and a
//! registry of every process the rows name, keyed by (PID, creation time) within the device.

use crate::fx::FxMap;
use std::net::IpAddr;

use culprit_model::telemetry::{DeviceEvent, DeviceInfo, NetworkEvent, ProcessEvent, ProcessInfo};
use culprit_model::{Telemetry, Timestamp};

/// A process within one device: PID and creation time (unknown for processes that were
/// running before the sensor saw them start). Never a PID alone.
pub(crate) type PKey = (u32, Option<Timestamp>);

/// A connection row: DeviceNetworkEvents, or a DeviceEvents row that carries a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NetRow<'a> {
    pub t: Timestamp,
    pub local_ip: Option<IpAddr>,
    pub local_port: Option<u16>,
    pub remote_ip: Option<IpAddr>,
    pub remote_port: Option<u16>,
    pub protocol: &'a str,
    pub url: &'a str,
    pub action: &'a str,
    pub key: PKey,
}

impl NetRow<'_> {
    /// Inbound rows are those the host accepted or listened on.
    pub fn is_inbound(&self) -> bool {
        let a = self.action;
        a.starts_with("Inbound") || a.starts_with("Listening")
    }
}

/// A connection row from any table row with MDE's connection columns.
macro_rules! net_row {
    ($r:expr, $protocol:expr, $key:expr) => {
        NetRow {
            t: $r.timestamp,
            local_ip: $r.local_ip,
            local_port: $r.local_port,
            remote_ip: $r.remote_ip,
            remote_port: $r.remote_port,
            protocol: $protocol,
            url: &$r.remote_url,
            action: &$r.action_type,
            key: $key,
        }
    };
}

/// What one pass over DeviceNetworkEvents learns: each row's device is a heap string, and
/// reading 100,000 of them twice costs more than the rest of the work, so the pass also keeps
/// the rows in focus and when each device was last heard from.
#[derive(Debug, Default)]
pub(crate) struct NetDevices<'a> {
    ids: Vec<&'a str>,
    names: Vec<&'a str>,
    last_seen: Vec<Timestamp>,
    /// (device slot, row index) of the rows in focus.
    focused: Vec<(u32, usize)>,
}

impl<'a> NetDevices<'a> {
    pub fn new(tel: &'a Telemetry, focus: &Focus) -> Self {
        let mut b = NetDevicesBuilder::default();
        for (i, r) in tel.network.iter().enumerate() {
            b.push(r, i, focus);
        }
        b.done
    }

    /// A device's id by its slot (the first row's copy, which stays in cache).
    pub fn id_of_slot(&self, slot: usize) -> &'a str {
        self.ids.get(slot).copied().unwrap_or("")
    }

    fn slot_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|x| *x == id)
    }
}

/// Assigns slots row by row, so a caller can read each row once for several purposes.
#[derive(Debug, Default)]
pub(crate) struct NetDevicesBuilder<'a> {
    map: FxMap<&'a str, u32>,
    last: Option<(&'a str, u32)>,
    pub done: NetDevices<'a>,
}

impl<'a> NetDevicesBuilder<'a> {
    /// Records row `i`; returns its device slot and whether the device is new.
    pub fn push(&mut self, r: &'a NetworkEvent, i: usize, focus: &Focus) -> (usize, bool) {
        let id = r.device_id.as_str();
        let d = &mut self.done;
        let (s, new) = match self.last {
            Some((l, s)) if l == id => (s, false),
            _ => match self.map.get(id) {
                Some(s) => (*s, false),
                None => {
                    let s = u32::try_from(d.ids.len()).unwrap_or(u32::MAX);
                    d.ids.push(id);
                    d.names.push(&r.device_name);
                    d.last_seen.push(r.timestamp);
                    self.map.insert(id, s);
                    (s, true)
                }
            },
        };
        self.last = Some((id, s));
        let slot = s as usize;
        if let Some(seen) = d.last_seen.get_mut(slot) {
            *seen = (*seen).max(r.timestamp);
        }
        if focus.wants(r.timestamp, r.local_ip, r.remote_ip) {
            d.focused.push((s, i));
        }
        (slot, new)
    }
}

/// The richest description seen of one process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcView<'a> {
    pub info: &'a ProcessInfo,
    richness: u8,
}

fn richness(p: &ProcessInfo, created_row: bool) -> u8 {
    let mut r = 0;
    for present in [
        p.creation_time.is_some(),
        !p.sha256.is_empty(),
        !p.command_line.is_empty(),
        !p.folder_path.is_empty(),
        p.parent_id.is_some(),
        !p.account_name.is_empty(),
        created_row,
    ] {
        r += u8::from(present);
    }
    r
}

/// Which connection rows the engine reads: those near the window, and those joining one of
/// the detection's addresses at any time (earlier connections explain capped repeats).
#[derive(Clone, Debug)]
pub(crate) struct Focus {
    pub from: Timestamp,
    pub to: Timestamp,
    pub ips: Vec<IpAddr>,
}

impl Focus {
    pub fn wants(&self, t: Timestamp, a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
        (t >= self.from && t <= self.to) || [a, b].iter().flatten().any(|ip| self.ips.contains(ip))
    }
}

/// Everything the engine reads about the resolved device.
#[derive(Debug)]
pub(crate) struct DeviceView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub net: Vec<NetRow<'a>>,
    pub created: Vec<&'a ProcessEvent>,
    pub events: Vec<&'a DeviceEvent>,
    pub info: Vec<&'a DeviceInfo>,
    pub procs: FxMap<PKey, ProcView<'a>>,
    /// The newest row of any table: when the sensor was last heard from.
    pub last_seen: Option<Timestamp>,
}

impl<'a> DeviceView<'a> {
    pub fn build(tel: &'a Telemetry, devices: &NetDevices<'a>, id: &'a str) -> Self {
        let mut v = DeviceView {
            id,
            name: "",
            net: Vec::new(),
            created: Vec::new(),
            events: Vec::new(),
            info: Vec::new(),
            procs: FxMap::default(),
            last_seen: None,
        };
        if let Some(slot) = devices.slot_of(id) {
            v.last_seen = devices.last_seen.get(slot).copied();
            v.name = devices.names.get(slot).copied().unwrap_or("");
            let rows = devices.focused.iter().filter(|(s, _)| *s as usize == slot);
            for r in rows.filter_map(|(_, i)| tel.network.get(*i)) {
                if let Some(key) = v.register(&r.initiating, false) {
                    v.net.push(net_row!(r, &r.protocol, key));
                }
            }
        }
        for r in tel.processes.iter().filter(|r| r.device_id == id) {
            v.seen(r.timestamp, &r.device_name);
            v.register(&r.initiating, false);
            if r.action_type.is_empty() || r.action_type == "ProcessCreated" {
                v.register(&r.process, true);
                v.created.push(r);
            }
        }
        // Only the event kinds the engine reads; the kind is checked first because it is
        // cheaper to reject on than the device.
        let wanted = |a: &str| {
            matches!(a, "CreateRemoteThreadApiCall" | "DnsQueryResponse")
                || a.ends_with("ConnectionInspected")
        };
        let events = tel.events.iter().filter(|r| wanted(&r.action_type));
        for r in events.filter(|r| r.device_id == id) {
            v.seen(r.timestamp, &r.device_name);
            let key = v.register(&r.initiating, false);
            if let (Some(key), true) = (key, r.action_type.ends_with("ConnectionInspected")) {
                v.net.push(net_row!(r, "", key));
            }
            v.events.push(r);
        }
        for r in tel.device_info.iter().filter(|r| r.device_id == id) {
            v.seen(r.timestamp, &r.device_name);
            v.info.push(r);
        }
        for r in tel.network_info.iter().filter(|r| r.device_id == id) {
            v.seen(r.timestamp, &r.device_name);
        }
        v.created.sort_by_key(|r| r.timestamp);
        v
    }

    fn seen(&mut self, t: Timestamp, name: &'a str) {
        self.last_seen = Some(self.last_seen.map_or(t, |s| s.max(t)));
        if self.name.is_empty() {
            self.name = name;
        }
    }

    fn register(&mut self, p: &'a ProcessInfo, created_row: bool) -> Option<PKey> {
        let key = (p.process_id?, p.creation_time);
        let r = richness(p, created_row);
        let e = self.procs.entry(key).or_insert(ProcView {
            info: p,
            richness: r,
        });
        if r > e.richness {
            *e = ProcView {
                info: p,
                richness: r,
            };
        }
        Some(key)
    }

    pub fn info(&self, key: &PKey) -> Option<&'a ProcessInfo> {
        self.procs.get(key).map(|p| p.info)
    }

    pub fn file_name(&self, key: &PKey) -> &'a str {
        self.info(key).map_or("", |p| p.file_name.as_str())
    }

    /// Finds a process by PID (and name and creation time where known): the latest one with
    /// that PID created at or before `before`, so a reused PID resolves to the right process.
    pub fn find(
        &self,
        pid: u32,
        name: &str,
        created: Option<Timestamp>,
        before: Option<Timestamp>,
    ) -> Option<PKey> {
        if let Some(c) = created
            && self.procs.contains_key(&(pid, Some(c)))
        {
            return Some((pid, Some(c)));
        }
        let name_ok = |k: &PKey| name.is_empty() || self.file_name(k).eq_ignore_ascii_case(name);
        let mut best: Option<PKey> = None;
        for k in self.procs.keys().filter(|k| k.0 == pid && name_ok(k)) {
            let close = match (created, k.1) {
                (Some(a), Some(b)) => (a - b).abs().0 <= culprit_model::timestamp::TICKS_PER_SECOND,
                _ => true,
            };
            let in_time = match (before, k.1) {
                (Some(b), Some(c)) => c <= b,
                _ => true,
            };
            if close && in_time && best.is_none_or(|cur| k.1 > cur.1) {
                best = Some(*k);
            }
        }
        best
    }
}
