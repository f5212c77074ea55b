//! The endpoint's telemetry as the attribution engine reads it: typed rows taken from
//! Advanced Hunting tables by column name.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::detection::parse_ip;
use crate::table::{ColumnIndex, Table, Value};
use crate::timestamp::Timestamp;

/// A process is (device, PID, creation time), never a PID alone: PIDs are reused within
/// minutes. The creation time is unknown for processes that were running before the sensor
/// saw them start.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessKey {
    pub device_id: String,
    pub process_id: u32,
    pub creation_time: Option<Timestamp>,
}

/// What MDE tells about one process (the `InitiatingProcess*` columns of a row, or the
/// created process of a `ProcessCreated` row).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub process_id: Option<u32>,
    pub file_name: String,
    pub folder_path: String,
    pub command_line: String,
    pub creation_time: Option<Timestamp>,
    pub sha1: String,
    pub sha256: String,
    pub account_domain: String,
    pub account_name: String,
    pub integrity_level: String,
    pub parent_id: Option<u32>,
    pub parent_file_name: String,
    pub parent_creation_time: Option<Timestamp>,
}

/// A DeviceNetworkEvents row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkEvent {
    pub timestamp: Timestamp,
    pub device_id: String,
    pub device_name: String,
    pub action_type: String,
    pub local_ip: Option<IpAddr>,
    pub local_port: Option<u16>,
    pub remote_ip: Option<IpAddr>,
    pub remote_port: Option<u16>,
    pub remote_url: String,
    pub protocol: String,
    pub initiating: ProcessInfo,
}

/// A DeviceProcessEvents row: `process` is the created process, `initiating` its creator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessEvent {
    pub timestamp: Timestamp,
    pub device_id: String,
    pub device_name: String,
    pub action_type: String,
    pub process: ProcessInfo,
    pub initiating: ProcessInfo,
}

/// A DeviceEvents row (`CreateRemoteThreadApiCall`, `OpenProcessApiCall`, `DnsQueryResponse`,
/// `*ConnectionInspected`, ...). The target process, where there is one, is in `target`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceEvent {
    pub timestamp: Timestamp,
    pub device_id: String,
    pub device_name: String,
    pub action_type: String,
    pub target: ProcessInfo,
    pub remote_ip: Option<IpAddr>,
    pub remote_port: Option<u16>,
    pub local_ip: Option<IpAddr>,
    pub local_port: Option<u16>,
    pub remote_url: String,
    pub additional_fields: Option<serde_json::Value>,
    pub initiating: ProcessInfo,
}

/// A DeviceNetworkInfo row: which addresses a device's adapters held at a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub timestamp: Timestamp,
    pub device_id: String,
    pub device_name: String,
    pub ip_addresses: Vec<IpAddr>,
}

/// A DeviceInfo row: the device and its sensor's state.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub timestamp: Timestamp,
    pub device_id: String,
    pub device_name: String,
    pub os_platform: String,
    pub onboarding_status: String,
    pub sensor_health_state: String,
    pub machine_group: String,
    pub device_type: String,
    pub tags: Vec<String>,
}

/// All telemetry fetched for a detection (or a batch of them).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Telemetry {
    pub network: Vec<NetworkEvent>,
    pub processes: Vec<ProcessEvent>,
    pub events: Vec<DeviceEvent>,
    pub network_info: Vec<NetworkInfo>,
    pub device_info: Vec<DeviceInfo>,
}

/// The tables the attribution engine reads.
pub const TABLES: [&str; 5] = [
    "DeviceNetworkEvents",
    "DeviceProcessEvents",
    "DeviceEvents",
    "DeviceNetworkInfo",
    "DeviceInfo",
];

const HEAD: [&str; 3] = ["Timestamp", "DeviceId", "DeviceName"];
const INITIATING: [&str; 13] = [
    "InitiatingProcessId",
    "InitiatingProcessFileName",
    "InitiatingProcessFolderPath",
    "InitiatingProcessCommandLine",
    "InitiatingProcessCreationTime",
    "InitiatingProcessSHA1",
    "InitiatingProcessSHA256",
    "InitiatingProcessAccountDomain",
    "InitiatingProcessAccountName",
    "InitiatingProcessIntegrityLevel",
    "InitiatingProcessParentId",
    "InitiatingProcessParentFileName",
    "InitiatingProcessParentCreationTime",
];
const OWN: [&str; 10] = [
    "ProcessId",
    "FileName",
    "FolderPath",
    "ProcessCommandLine",
    "ProcessCreationTime",
    "SHA1",
    "SHA256",
    "AccountDomain",
    "AccountName",
    "ProcessIntegrityLevel",
];
const FLOW: [&str; 5] = [
    "LocalIP",
    "LocalPort",
    "RemoteIP",
    "RemotePort",
    "RemoteUrl",
];
const DEVICE: [&str; 8] = [
    "DeviceManualTags",
    "DeviceDynamicTags",
    "RegistryDeviceTag",
    "OSPlatform",
    "OnboardingStatus",
    "SensorHealthState",
    "MachineGroup",
    "DeviceType",
];

/// The columns of `table` that [`Telemetry::add_table`] reads (empty for a table it ignores),
/// so a query can fetch only those: every other column is bytes over the wire and memory in
/// the hunter. `columns_read_cover_every_field` keeps this in step with the readers below.
pub fn columns_read(table: &str) -> Vec<&'static str> {
    let parts: &[&[&'static str]] = match table {
        "DeviceNetworkEvents" => &[&HEAD, &["ActionType", "Protocol"], &FLOW, &INITIATING],
        "DeviceProcessEvents" => &[&HEAD, &["ActionType"], &OWN, &INITIATING],
        "DeviceEvents" => &[
            &HEAD,
            &["ActionType", "AdditionalFields"],
            &OWN,
            &FLOW,
            &INITIATING,
        ],
        "DeviceNetworkInfo" => &[&HEAD, &["IPAddresses"]],
        "DeviceInfo" => &[&HEAD, &DEVICE],
        _ => &[],
    };
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

impl Telemetry {
    /// Adds a table's rows by its name; unknown tables are ignored. Rows without a timestamp
    /// or a device id cannot be placed and are skipped (counted in the return value).
    pub fn add_table(&mut self, name: &str, table: &Table) -> usize {
        let ix = table.index();
        let mut skipped = 0;
        for row in &table.rows {
            let r = Row { ix: &ix, row };
            let ok = match name {
                "DeviceNetworkEvents" => r.network_event().map(|e| self.network.push(e)),
                "DeviceProcessEvents" => r.process_event().map(|e| self.processes.push(e)),
                "DeviceEvents" => r.device_event().map(|e| self.events.push(e)),
                "DeviceNetworkInfo" => r.network_info().map(|e| self.network_info.push(e)),
                "DeviceInfo" => r.device_info().map(|e| self.device_info.push(e)),
                _ => return 0,
            };
            if ok.is_none() {
                skipped += 1;
            }
        }
        skipped
    }

    /// Merges another bundle, keeping rows unique (the same row fetched twice by overlapping
    /// queries counts once).
    pub fn merge(&mut self, other: Telemetry) {
        fn extend_unique<T: PartialEq>(dst: &mut Vec<T>, src: Vec<T>) {
            for x in src {
                if !dst.contains(&x) {
                    dst.push(x);
                }
            }
        }
        extend_unique(&mut self.network, other.network);
        extend_unique(&mut self.processes, other.processes);
        extend_unique(&mut self.events, other.events);
        extend_unique(&mut self.network_info, other.network_info);
        extend_unique(&mut self.device_info, other.device_info);
    }

    pub fn row_count(&self) -> usize {
        self.network.len()
            + self.processes.len()
            + self.events.len()
            + self.network_info.len()
            + self.device_info.len()
    }
}

struct Row<'a> {
    ix: &'a ColumnIndex,
    row: &'a [Value],
}

impl Row<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.ix.get(name).and_then(|i| self.row.get(i))
    }
    fn string(&self, name: &str) -> String {
        match self.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(Value::Dynamic(v)) => v.to_string(),
            Some(other) => other
                .to_json()
                .as_str()
                .map(str::to_owned)
                .unwrap_or_default(),
        }
    }
    fn time(&self, name: &str) -> Option<Timestamp> {
        self.get(name).and_then(Value::as_datetime)
    }
    fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(Value::as_i64)
    }
    fn pid(&self, name: &str) -> Option<u32> {
        self.int(name).and_then(|i| u32::try_from(i).ok())
    }
    fn port(&self, name: &str) -> Option<u16> {
        self.int(name).and_then(|i| u16::try_from(i).ok())
    }
    fn ip(&self, name: &str) -> Option<IpAddr> {
        self.get(name).and_then(Value::as_str).and_then(parse_ip)
    }
    fn json(&self, name: &str) -> Option<serde_json::Value> {
        match self.get(name)? {
            Value::Dynamic(v) => Some(v.clone()),
            Value::String(s) if !s.is_empty() => serde_json::from_str(s).ok(),
            _ => None,
        }
    }
    fn head(&self) -> Option<(Timestamp, String, String, String)> {
        let device_id = self.string("DeviceId");
        if device_id.is_empty() {
            return None;
        }
        Some((
            self.time("Timestamp")?,
            device_id,
            self.string("DeviceName"),
            self.string("ActionType"),
        ))
    }

    fn initiating(&self) -> ProcessInfo {
        ProcessInfo {
            process_id: self.pid("InitiatingProcessId"),
            file_name: self.string("InitiatingProcessFileName"),
            folder_path: self.string("InitiatingProcessFolderPath"),
            command_line: self.string("InitiatingProcessCommandLine"),
            creation_time: self.time("InitiatingProcessCreationTime"),
            sha1: self.string("InitiatingProcessSHA1"),
            sha256: self.string("InitiatingProcessSHA256"),
            account_domain: self.string("InitiatingProcessAccountDomain"),
            account_name: self.string("InitiatingProcessAccountName"),
            integrity_level: self.string("InitiatingProcessIntegrityLevel"),
            parent_id: self.pid("InitiatingProcessParentId"),
            parent_file_name: self.string("InitiatingProcessParentFileName"),
            parent_creation_time: self.time("InitiatingProcessParentCreationTime"),
        }
    }

    /// The row's own process columns (`ProcessId`, `FileName`, ...), whose parent is the
    /// initiating process.
    fn own_process(&self) -> ProcessInfo {
        ProcessInfo {
            process_id: self.pid("ProcessId"),
            file_name: self.string("FileName"),
            folder_path: self.string("FolderPath"),
            command_line: self.string("ProcessCommandLine"),
            creation_time: self.time("ProcessCreationTime"),
            sha1: self.string("SHA1"),
            sha256: self.string("SHA256"),
            account_domain: self.string("AccountDomain"),
            account_name: self.string("AccountName"),
            integrity_level: self.string("ProcessIntegrityLevel"),
            parent_id: self.pid("InitiatingProcessId"),
            parent_file_name: self.string("InitiatingProcessFileName"),
            parent_creation_time: self.time("InitiatingProcessCreationTime"),
        }
    }

    fn network_event(&self) -> Option<NetworkEvent> {
        let (timestamp, device_id, device_name, action_type) = self.head()?;
        Some(NetworkEvent {
            timestamp,
            device_id,
            device_name,
            action_type,
            local_ip: self.ip("LocalIP"),
            local_port: self.port("LocalPort"),
            remote_ip: self.ip("RemoteIP"),
            remote_port: self.port("RemotePort"),
            remote_url: self.string("RemoteUrl"),
            protocol: self.string("Protocol"),
            initiating: self.initiating(),
        })
    }

    fn process_event(&self) -> Option<ProcessEvent> {
        let (timestamp, device_id, device_name, action_type) = self.head()?;
        Some(ProcessEvent {
            timestamp,
            device_id,
            device_name,
            action_type,
            process: self.own_process(),
            initiating: self.initiating(),
        })
    }

    fn device_event(&self) -> Option<DeviceEvent> {
        let (timestamp, device_id, device_name, action_type) = self.head()?;
        Some(DeviceEvent {
            timestamp,
            device_id,
            device_name,
            action_type,
            target: self.own_process(),
            remote_ip: self.ip("RemoteIP"),
            remote_port: self.port("RemotePort"),
            local_ip: self.ip("LocalIP"),
            local_port: self.port("LocalPort"),
            remote_url: self.string("RemoteUrl"),
            additional_fields: self.json("AdditionalFields"),
            initiating: self.initiating(),
        })
    }

    fn network_info(&self) -> Option<NetworkInfo> {
        let (timestamp, device_id, device_name, _) = self.head()?;
        let mut ip_addresses = Vec::new();
        if let Some(serde_json::Value::Array(items)) = self.json("IPAddresses") {
            for item in items {
                let text = item
                    .get("IPAddress")
                    .and_then(serde_json::Value::as_str)
                    .or_else(|| item.as_str());
                if let Some(ip) = text.and_then(parse_ip) {
                    ip_addresses.push(ip);
                }
            }
        }
        Some(NetworkInfo {
            timestamp,
            device_id,
            device_name,
            ip_addresses,
        })
    }

    fn device_info(&self) -> Option<DeviceInfo> {
        let (timestamp, device_id, device_name, _) = self.head()?;
        let mut tags = Vec::new();
        for col in ["DeviceManualTags", "DeviceDynamicTags", "RegistryDeviceTag"] {
            match self.json(col) {
                Some(serde_json::Value::Array(items)) => {
                    tags.extend(items.iter().filter_map(|v| v.as_str().map(str::to_owned)))
                }
                _ => {
                    let s = self.string(col);
                    if !s.is_empty() && !s.starts_with('[') {
                        tags.push(s);
                    }
                }
            }
        }
        Some(DeviceInfo {
            timestamp,
            device_id,
            device_name,
            os_platform: self.string("OSPlatform"),
            onboarding_status: self.string("OnboardingStatus"),
            sensor_health_state: self.string("SensorHealthState"),
            machine_group: self.string("MachineGroup"),
            device_type: self.string("DeviceType"),
            tags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Column, KustoType};
    use serde_json::json;

    #[test]
    fn network_rows_read_by_name_in_any_case() {
        let cols = vec![
            Column::new("Timestamp", KustoType::DateTime),
            Column::new("deviceid", KustoType::String),
            Column::new("RemoteIP", KustoType::String),
            Column::new("RemotePort", KustoType::Int32),
            Column::new("InitiatingProcessId", KustoType::Int64),
        ];
        let obj = json!({"Timestamp": "2023-08-16T04:54:30.9870000Z", "deviceid": "d1",
            "RemoteIP": "::ffff:10.0.5.13", "RemotePort": 8080, "InitiatingProcessId": 1988});
        let t = Table::from_json_objects(cols, [obj.as_object().unwrap()]);
        let mut tel = Telemetry::default();
        assert_eq!(tel.add_table("DeviceNetworkEvents", &t), 0);
        let e = &tel.network[0];
        assert_eq!(e.remote_ip, parse_ip("10.0.5.13"));
        assert_eq!(e.remote_port, Some(8080));
        assert_eq!(e.initiating.process_id, Some(1988));
    }

    /// A row with only the listed columns, each holding a value, must fill every field the
    /// table's reader produces: a reader that reads a column missing from the list leaves a
    /// field empty, and this fails naming it.
    #[test]
    fn columns_read_cover_every_field() {
        fn empty_fields(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Null => out.push(path.to_owned()),
                serde_json::Value::String(s) if s.is_empty() => out.push(path.to_owned()),
                serde_json::Value::Array(a) if a.is_empty() => out.push(path.to_owned()),
                serde_json::Value::Array(a) => {
                    for (i, v) in a.iter().enumerate() {
                        empty_fields(v, &format!("{path}.{i}"), out);
                    }
                }
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        empty_fields(v, &format!("{path}.{k}"), out);
                    }
                }
                _ => {}
            }
        }
        for table in TABLES {
            let names = columns_read(table);
            let mut cols = Vec::new();
            let mut obj = serde_json::Map::new();
            for n in &names {
                let (ty, v) = if n.ends_with("Time") || *n == "Timestamp" {
                    (KustoType::DateTime, json!("2023-08-16T04:54:30Z"))
                } else if n.ends_with("Id") && *n != "DeviceId" || n.ends_with("Port") {
                    (KustoType::Int64, json!(445))
                } else if n.ends_with("IP") {
                    (KustoType::String, json!("10.0.5.13"))
                } else if *n == "IPAddresses" {
                    (KustoType::Object, json!([{"IPAddress": "10.0.5.13"}]))
                } else if n.ends_with("Tags") || *n == "AdditionalFields" {
                    (KustoType::Object, json!(["tag"]))
                } else {
                    (KustoType::String, json!("x"))
                };
                cols.push(Column::new(*n, ty));
                obj.insert((*n).to_owned(), v);
            }
            let t = Table::from_json_objects(cols, [&obj]);
            let mut tel = Telemetry::default();
            assert_eq!(tel.add_table(table, &t), 0, "{table}");
            let read = serde_json::to_value(&tel).unwrap();
            let mut empty = Vec::new();
            empty_fields(&read, "", &mut empty);
            // Tables other than this one are empty lists, not missing columns.
            empty.retain(|p| p.matches('.').count() > 1);
            assert!(
                empty.is_empty(),
                "{table}: not read from the listed columns: {empty:?}"
            );
        }
    }

    #[test]
    fn rows_without_device_are_skipped_and_counted() {
        let cols = vec![Column::new("Timestamp", KustoType::DateTime)];
        let obj = json!({"Timestamp": "2023-08-16T04:54:30Z"});
        let t = Table::from_json_objects(cols, [obj.as_object().unwrap()]);
        let mut tel = Telemetry::default();
        assert_eq!(tel.add_table("DeviceNetworkEvents", &t), 1);
        assert!(tel.network.is_empty());
    }
}
