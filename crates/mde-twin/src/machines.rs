//! The tenant's machines as `/api/machines` shows them, derived from DeviceInfo and
//! DeviceNetworkInfo (and the local addresses seen in DeviceNetworkEvents), with the IP
//! intervals `findbyip` answers from.

use std::collections::BTreeMap;

use culprit_kql::Database;
use culprit_model::{Duration, Table, Timestamp, Value};
use serde::Serialize;

/// How long the addresses of a device's last network report are taken to hold: devices
/// report their network state about hourly.
const LAST_REPORT_HOLDS: Duration = Duration::from_hours(1);

/// One machine entity (mde-api.md §3.2), minus the isolation state the twin adds when serving.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub id: String,
    pub computer_dns_name: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub os_platform: String,
    pub os_version: Option<String>,
    pub os_processor: String,
    pub version: Option<String>,
    pub last_ip_address: Option<String>,
    pub last_external_ip_address: Option<String>,
    pub agent_version: Option<String>,
    pub os_build: Option<i64>,
    pub health_status: String,
    pub device_value: String,
    pub rbac_group_id: i64,
    pub rbac_group_name: Option<String>,
    pub risk_score: String,
    pub exposure_level: String,
    pub is_aad_joined: bool,
    pub aad_device_id: Option<String>,
    pub machine_tags: Vec<String>,
    pub onboarding_status: String,
    pub os_architecture: Option<String>,
    pub ip_addresses: Vec<IpAddress>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    pub ip_address: String,
    pub mac_address: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub operational_status: Option<String>,
}

/// A device held an address during `[from, to]`.
#[derive(Clone, Debug, PartialEq)]
struct Holding {
    machine: usize,
    ip: String,
    from: Timestamp,
    to: Timestamp,
}

/// All machines of a tenant.
#[derive(Debug, Default)]
pub struct Inventory {
    pub machines: Vec<Machine>,
    holdings: Vec<Holding>,
}

/// `::ffff:a.b.c.d` and `a.b.c.d` are the same IPv4 host.
pub fn normalize_ip(ip: &str) -> String {
    let ip = ip.trim();
    let lower = ip.to_ascii_lowercase();
    match lower.strip_prefix("::ffff:") {
        Some(v4) if v4.contains('.') => v4.to_owned(),
        _ => lower,
    }
}

impl Inventory {
    pub fn from_database(db: &Database) -> Self {
        let mut builder = Builder::default();
        if let Some(t) = db.get("DeviceInfo") {
            builder.device_info(&t);
        }
        if let Some(t) = db.get("DeviceNetworkInfo") {
            builder.network_info(&t);
        }
        // Only the three columns read: the events table may hold millions of rows.
        if let Some(t) = db.table("DeviceNetworkEvents") {
            builder.local_addresses(&t.to_table_columns(&["Timestamp", "DeviceId", "LocalIP"]));
        }
        builder.finish()
    }

    /// By MDE id, or by Entra device id (mde-api.md §3.3: the Cortex responder uses both).
    pub fn find(&self, id: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| {
            m.id.eq_ignore_ascii_case(id)
                || m.aad_device_id
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(id))
        })
    }

    /// Machines seen with `ip` within ±15 minutes of `at`.
    pub fn find_by_ip(&self, ip: &str, at: Timestamp) -> Vec<&Machine> {
        let ip = normalize_ip(ip);
        let slack = Duration::from_minutes(15);
        let (lo, hi) = (at - slack, at + slack);
        let mut hits: Vec<usize> = self
            .holdings
            .iter()
            .filter(|h| h.ip == ip && h.from <= hi && h.to >= lo)
            .map(|h| h.machine)
            .collect();
        hits.sort_unstable();
        hits.dedup();
        hits.into_iter()
            .filter_map(|i| self.machines.get(i))
            .collect()
    }
}

#[derive(Default)]
struct Builder {
    by_id: BTreeMap<String, Draft>,
}

#[derive(Default)]
struct Draft {
    info: Option<(Timestamp, BTreeMap<String, Value>)>,
    name: String,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    /// Network reports: time → (adapter facts, addresses).
    reports: BTreeMap<Timestamp, Vec<IpAddress>>,
    local_ips: Vec<(Timestamp, String)>,
}

impl Draft {
    fn seen(&mut self, t: Timestamp, name: &str) {
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        if self.last.is_none_or(|l| t >= l) && !name.is_empty() {
            self.name = name.to_owned();
        }
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
    }
}

/// Reads the columns the inventory needs from each row, by name.
fn rows_of<'a>(
    t: &'a Table,
) -> impl Iterator<Item = (Timestamp, String, String, BTreeMap<String, Value>)> + 'a {
    let cols: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
    t.rows.iter().filter_map(move |r| {
        let row: BTreeMap<String, Value> = cols.iter().cloned().zip(r.iter().cloned()).collect();
        let ts = row.get("Timestamp")?.as_datetime()?;
        let id = row.get("DeviceId")?.as_str()?.to_owned();
        if id.is_empty() {
            return None;
        }
        let name = text(&row, "DeviceName").unwrap_or_default();
        Some((ts, id, name, row))
    })
}

fn text(row: &BTreeMap<String, Value>, col: &str) -> Option<String> {
    match row.get(col)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A dynamic cell as JSON, whether it was loaded as dynamic or as JSON text.
fn json_cell(row: &BTreeMap<String, Value>, col: &str) -> Option<serde_json::Value> {
    match row.get(col)? {
        Value::Dynamic(v) => Some(v.clone()),
        Value::String(s) => serde_json::from_str(s).ok(),
        _ => None,
    }
}

impl Builder {
    fn device_info(&mut self, t: &Table) {
        for (ts, id, name, row) in rows_of(t) {
            let d = self.by_id.entry(id).or_default();
            d.seen(ts, &name);
            if d.info.as_ref().is_none_or(|(prev, _)| ts >= *prev) {
                d.info = Some((ts, row));
            }
        }
    }

    fn network_info(&mut self, t: &Table) {
        for (ts, id, name, row) in rows_of(t) {
            let d = self.by_id.entry(id).or_default();
            d.seen(ts, &name);
            let addresses = json_cell(&row, "IPAddresses")
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            let report = d.reports.entry(ts).or_default();
            for a in addresses {
                let Some(ip) = a.get("IPAddress").and_then(|v| v.as_str()) else {
                    continue;
                };
                report.push(IpAddress {
                    ip_address: ip.to_owned(),
                    mac_address: text(&row, "MacAddress"),
                    kind: text(&row, "NetworkAdapterType"),
                    operational_status: text(&row, "NetworkAdapterStatus"),
                });
            }
        }
    }

    /// By column index: DeviceNetworkEvents can hold millions of rows.
    fn local_addresses(&mut self, t: &Table) {
        let (Some(ts), Some(id), Some(ip)) = (
            t.column_index("Timestamp"),
            t.column_index("DeviceId"),
            t.column_index("LocalIP"),
        ) else {
            return;
        };
        let mut seen = std::collections::HashSet::new();
        for r in &t.rows {
            let cell = |i: usize| r.get(i);
            let (Some(at), Some(dev), Some(addr)) = (
                cell(ts).and_then(Value::as_datetime),
                cell(id).and_then(Value::as_str),
                cell(ip).and_then(Value::as_str),
            ) else {
                continue;
            };
            // One holding per (device, address, minute) keeps the list small.
            if addr.is_empty() || !seen.insert((dev, addr, at.unix_seconds() / 60)) {
                continue;
            }
            if let Some(d) = self.by_id.get_mut(dev) {
                d.local_ips.push((at, addr.to_owned()));
            }
        }
    }

    fn finish(self) -> Inventory {
        let mut inv = Inventory::default();
        for (id, draft) in self.by_id {
            let index = inv.machines.len();
            inv.holdings.extend(holdings(index, &draft));
            inv.machines.push(machine(id, draft));
        }
        inv
    }
}

fn holdings(machine: usize, d: &Draft) -> Vec<Holding> {
    let times: Vec<&Timestamp> = d.reports.keys().collect();
    let mut out = Vec::new();
    for (i, (from, addrs)) in d.reports.iter().enumerate() {
        let to = times
            .get(i + 1)
            .map(|t| **t)
            .unwrap_or(*from + LAST_REPORT_HOLDS);
        out.extend(addrs.iter().map(|a| Holding {
            machine,
            ip: normalize_ip(&a.ip_address),
            from: *from,
            to,
        }));
    }
    out.extend(d.local_ips.iter().map(|(t, ip)| Holding {
        machine,
        ip: normalize_ip(ip),
        from: *t,
        to: *t,
    }));
    out
}

fn is_usable_v4(ip: &str) -> bool {
    ip.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| !a.is_loopback() && !a.is_link_local() && !a.is_unspecified())
}

fn machine(id: String, d: Draft) -> Machine {
    let empty = BTreeMap::new();
    let info = d.info.as_ref().map(|(_, r)| r).unwrap_or(&empty);
    let ip_addresses: Vec<IpAddress> = d.reports.values().next_back().cloned().unwrap_or_default();
    let last_ip = ip_addresses
        .iter()
        .map(|a| a.ip_address.clone())
        .find(|ip| is_usable_v4(ip))
        .or_else(|| ip_addresses.first().map(|a| a.ip_address.clone()))
        .or_else(|| {
            d.local_ips
                .iter()
                .max_by_key(|(t, _)| *t)
                .map(|(_, ip)| normalize_ip(ip))
        });
    let first = d.first.unwrap_or_default();
    let last = d.last.unwrap_or_default();
    let tags = text(info, "DeviceManualTags")
        .map(|s| {
            serde_json::from_str::<Vec<String>>(&s)
                .unwrap_or_else(|_| s.split(',').map(|t| t.trim().to_owned()).collect())
        })
        .unwrap_or_default();
    Machine {
        id,
        computer_dns_name: d.name,
        first_seen: first,
        last_seen: last,
        os_platform: text(info, "OSPlatform").unwrap_or_else(|| "Unknown".to_owned()),
        os_version: text(info, "OSVersion"),
        os_processor: "x64".to_owned(),
        version: text(info, "OSVersionInfo"),
        last_ip_address: last_ip,
        last_external_ip_address: text(info, "PublicIP"),
        agent_version: text(info, "ClientVersion"),
        os_build: info.get("OSBuild").and_then(Value::as_i64),
        health_status: text(info, "SensorHealthState").unwrap_or_else(|| "Active".to_owned()),
        device_value: text(info, "AssetValue").unwrap_or_else(|| "Normal".to_owned()),
        rbac_group_id: 0,
        rbac_group_name: text(info, "MachineGroup"),
        risk_score: "None".to_owned(),
        exposure_level: text(info, "ExposureLevel").unwrap_or_else(|| "None".to_owned()),
        is_aad_joined: info
            .get("IsAzureADJoined")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        aad_device_id: text(info, "AadDeviceId"),
        machine_tags: tags,
        onboarding_status: text(info, "OnboardingStatus").unwrap_or_else(|| "Onboarded".to_owned()),
        os_architecture: text(info, "OSArchitecture"),
        ip_addresses,
    }
}

/// An OData `$filter` over machines: `or` of `and`s of `prop eq 'v'`, `prop ne 'v'` and
/// `startswith(prop,'v')`, on the properties the service lets one filter on.
#[derive(Debug, PartialEq)]
pub struct Filter {
    any_of: Vec<Vec<Clause>>,
}

#[derive(Debug, PartialEq)]
enum Clause {
    Eq(String, String),
    Ne(String, String),
    StartsWith(String, String),
}

/// Machine properties `$filter` accepts (mde-api.md §3.1).
pub const MACHINE_FILTERABLE: &[&str] = &[
    "computerDnsName",
    "id",
    "version",
    "deviceValue",
    "aadDeviceId",
    "machineTags",
    "lastSeen",
    "exposureLevel",
    "onboardingStatus",
    "lastIpAddress",
    "healthStatus",
    "osPlatform",
    "riskScore",
    "rbacGroupId",
];

/// Machine-action properties `$filter` accepts.
pub const ACTION_FILTERABLE: &[&str] = &[
    "id",
    "status",
    "machineId",
    "type",
    "requestor",
    "creationDateTimeUtc",
];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

impl Filter {
    /// Parses `text`, allowing only the properties in `allowed`.
    pub fn parse(text: &str, allowed: &[&str]) -> Result<Self, FilterError> {
        let any_of = split_outside_quotes(text, " or ")
            .into_iter()
            .map(|conj| {
                split_outside_quotes(&conj, " and ")
                    .into_iter()
                    .map(|c| parse_clause(c.trim(), allowed))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Filter { any_of })
    }

    pub fn matches(&self, machine: &serde_json::Value) -> bool {
        self.any_of
            .iter()
            .any(|all| all.iter().all(|c| clause_matches(c, machine)))
    }
}

fn parse_clause(c: &str, allowed: &[&str]) -> Result<Clause, FilterError> {
    let lower = c.to_ascii_lowercase();
    if lower.starts_with("startswith(") && c.ends_with(')') {
        let inner = &c["startswith(".len()..c.len() - 1];
        let (prop, value) = inner
            .split_once(',')
            .ok_or_else(|| FilterError(format!("startswith needs two arguments in '{c}'")))?;
        return Ok(Clause::StartsWith(
            property(prop, allowed)?,
            literal(value)?,
        ));
    }
    let parts: Vec<&str> = c.splitn(3, ' ').collect();
    let [prop, op, value] = parts.as_slice() else {
        return Err(FilterError(format!(
            "Syntax error: expected 'property eq value' in '{c}'"
        )));
    };
    let (prop, value) = (property(prop, allowed)?, literal(value)?);
    match op.to_ascii_lowercase().as_str() {
        "eq" => Ok(Clause::Eq(prop, value)),
        "ne" => Ok(Clause::Ne(prop, value)),
        other => Err(FilterError(format!(
            "The operator '{other}' is not supported in this filter"
        ))),
    }
}

fn property(p: &str, allowed: &[&str]) -> Result<String, FilterError> {
    let p = p.trim();
    allowed
        .iter()
        .find(|f| f.eq_ignore_ascii_case(p))
        .map(|f| (*f).to_owned())
        .ok_or_else(|| {
            FilterError(format!(
                "Could not find a property named '{p}' that can be filtered on"
            ))
        })
}

fn literal(v: &str) -> Result<String, FilterError> {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return Ok(inner.replace("''", "'"));
    }
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
    {
        return Ok(v.to_owned());
    }
    Err(FilterError(format!("Syntax error: '{v}' is not a literal")))
}

fn split_outside_quotes(text: &str, sep: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut i = 0;
    let lower = text.to_ascii_lowercase();
    while i < text.len() {
        if !quoted && lower[i..].starts_with(sep) {
            out.push(std::mem::take(&mut current));
            i += sep.len();
            continue;
        }
        let Some(ch) = text[i..].chars().next() else {
            break;
        };
        if ch == '\'' {
            quoted = !quoted;
        }
        current.push(ch);
        i += ch.len_utf8();
    }
    out.push(current);
    out
}

fn clause_matches(c: &Clause, m: &serde_json::Value) -> bool {
    let field = |p: &str| -> Vec<String> {
        match m.get(p) {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::Null) | None => vec![],
            Some(other) => vec![other.to_string()],
        }
    };
    match c {
        Clause::Eq(p, v) => field(p).iter().any(|f| same(p, f, v)),
        Clause::Ne(p, v) => !field(p).iter().any(|f| same(p, f, v)),
        Clause::StartsWith(p, v) => field(p)
            .iter()
            .any(|f| f.to_ascii_lowercase().starts_with(&v.to_ascii_lowercase())),
    }
}

fn same(prop: &str, field: &str, value: &str) -> bool {
    if prop == "lastIpAddress" {
        normalize_ip(field) == normalize_ip(value)
    } else {
        field.eq_ignore_ascii_case(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_parse_and_match() {
        let m = json!({"computerDnsName": "mkt01.pandalab.com", "lastIpAddress": "192.168.1.41",
                       "machineTags": ["a", "b"]});
        let f = Filter::parse("lastIpAddress eq '192.168.1.41'", MACHINE_FILTERABLE).unwrap();
        assert!(f.matches(&m));
        let f = Filter::parse(
            "computerDnsName eq 'MKT01.pandalab.com' and lastIpAddress eq '::ffff:192.168.1.41'",
            MACHINE_FILTERABLE,
        )
        .unwrap();
        assert!(f.matches(&m));
        let f = Filter::parse(
            "computerDnsName eq 'x' or startswith(computerDnsName,'mkt')",
            MACHINE_FILTERABLE,
        )
        .unwrap();
        assert!(f.matches(&m));
        let f = Filter::parse("machineTags eq 'b'", MACHINE_FILTERABLE).unwrap();
        assert!(f.matches(&m));
        let f = Filter::parse("computerDnsName eq 'a and b'", MACHINE_FILTERABLE).unwrap();
        assert!(!f.matches(&m));
        assert!(
            Filter::parse("LocalIP eq '1.2.3.4'", MACHINE_FILTERABLE)
                .unwrap_err()
                .0
                .contains("LocalIP")
        );
        assert!(Filter::parse("lastIpAddress gt '1'", MACHINE_FILTERABLE).is_err());
        assert!(Filter::parse("lastIpAddress eq", MACHINE_FILTERABLE).is_err());
    }

    #[test]
    fn mapped_addresses_normalise() {
        assert_eq!(normalize_ip("::FFFF:10.0.0.1"), "10.0.0.1");
        assert_eq!(normalize_ip("fe80::1"), "fe80::1");
    }
}
