//! What Culprit answers for one detection. Field names follow the output contract
//! (`--format json`): process objects use MDE's column names so analysts can paste them into
//! hunting queries.

use serde::{Deserialize, Serialize};

use crate::detection::{DetectionKey, SourceKind};
use crate::timestamp::Timestamp;

/// The answer's kind. Anything but `Attributed` names no probable process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Attributed,
    InsufficientTelemetry,
    DeviceAmbiguous,
    DeviceNotFound,
    SensorInactive,
    PendingTelemetry,
    NotHostAttributable,
    NeedsTargetList,
    HuntFailed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Attributed => "attributed",
            Status::InsufficientTelemetry => "insufficient_telemetry",
            Status::DeviceAmbiguous => "device_ambiguous",
            Status::DeviceNotFound => "device_not_found",
            Status::SensorInactive => "sensor_inactive",
            Status::PendingTelemetry => "pending_telemetry",
            Status::NotHostAttributable => "not_host_attributable",
            Status::NeedsTargetList => "needs_target_list",
            Status::HuntFailed => "hunt_failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "attributed" => Status::Attributed,
            "insufficient_telemetry" => Status::InsufficientTelemetry,
            "device_ambiguous" => Status::DeviceAmbiguous,
            "device_not_found" => Status::DeviceNotFound,
            "sensor_inactive" => Status::SensorInactive,
            "pending_telemetry" => Status::PendingTelemetry,
            "not_host_attributable" => Status::NotHostAttributable,
            "needs_target_list" => Status::NeedsTargetList,
            "hunt_failed" => Status::HuntFailed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceRef {
    #[serde(rename = "DeviceId")]
    pub device_id: String,
    #[serde(rename = "DeviceName")]
    pub device_name: String,
    /// When the device held the detection's address, where known (for ambiguity answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_from: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ParentRef {
    #[serde(rename = "FileName")]
    pub file_name: String,
    #[serde(rename = "ProcessId")]
    pub process_id: Option<u32>,
    #[serde(rename = "ProcessCreationTime")]
    pub process_creation_time: Option<Timestamp>,
}

/// One node of a process tree: depth 0 is the oldest known ancestor.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TreeNode {
    pub depth: u32,
    #[serde(rename = "FileName")]
    pub file_name: String,
    #[serde(rename = "ProcessId")]
    pub process_id: Option<u32>,
    #[serde(rename = "ProcessCreationTime")]
    pub process_creation_time: Option<Timestamp>,
    #[serde(rename = "ProcessCommandLine", default)]
    pub command_line: String,
    /// `parent`, `child`, `injected` (code injected into it), `probable`, ...
    pub relation: String,
}

/// A process named in an answer (probable, root cause or candidate).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessAnswer {
    #[serde(rename = "DeviceName")]
    pub device_name: String,
    #[serde(rename = "DeviceId")]
    pub device_id: String,
    #[serde(rename = "ProcessId")]
    pub process_id: u32,
    #[serde(rename = "FileName")]
    pub file_name: String,
    #[serde(rename = "ProcessCreationTime")]
    pub process_creation_time: Option<Timestamp>,
    #[serde(rename = "ProcessCommandLine")]
    pub command_line: String,
    #[serde(rename = "SHA256")]
    pub sha256: String,
    #[serde(rename = "SHA1")]
    pub sha1: String,
    #[serde(rename = "FolderPath")]
    pub folder_path: String,
    #[serde(rename = "AccountDomain")]
    pub account_domain: String,
    #[serde(rename = "AccountName")]
    pub account_name: String,
    #[serde(rename = "ProcessIntegrityLevel")]
    pub integrity_level: String,
    pub parent: Option<ParentRef>,
    pub score: f64,
    pub confidence: f64,
    pub reasons: Vec<String>,
    /// Sessions of the detection this process owns (direct evidence).
    #[serde(default)]
    pub sessions_owned: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub process_tree: Vec<TreeNode>,
}

/// One process start on the device during the window, for the progression view.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ActivityEntry {
    #[serde(rename = "Timestamp")]
    pub timestamp: Timestamp,
    #[serde(rename = "FileName")]
    pub file_name: String,
    #[serde(rename = "ProcessId")]
    pub process_id: Option<u32>,
    #[serde(rename = "ProcessCommandLine")]
    pub command_line: String,
    #[serde(rename = "InitiatingProcessFileName")]
    pub parent_file_name: String,
    #[serde(rename = "InitiatingProcessId")]
    pub parent_id: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HuntingQueries {
    /// The device's telemetry around the answer.
    pub device: String,
    /// The same indicators (hashes, remote IPs, command-line pattern) across every device.
    pub enterprise: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Links {
    pub device_page: String,
    pub device_timeline: String,
    pub advanced_hunting: String,
}

/// A short description of the detection, carried with the answer so a reader needs nothing
/// else to understand it.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct DetectionSummary {
    pub detection_type: String,
    pub category: String,
    pub threat: Option<u32>,
    pub certainty: Option<u32>,
    pub host_ip: Option<String>,
    pub host_name: Option<String>,
    pub window_start: Option<Timestamp>,
    pub window_end: Option<Timestamp>,
    /// e.g. "5 sessions to 10.0.5.13:8080".
    pub traffic: String,
}

/// The answer for one detection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    pub detection_id: String,
    pub detection_key: DetectionKey,
    pub source: SourceKind,
    pub tenant: String,
    pub status: Status,
    /// Set with `hunt_failed`: the classified error (`throttled`, `unauthorized`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// One sentence on why, and for an abstention what would help.
    pub explanation: String,
    pub device: Option<DeviceRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceRef>,
    pub probable: Option<ProcessAnswer>,
    pub root_cause: Option<ProcessAnswer>,
    pub candidates: Vec<ProcessAnswer>,
    pub window_activity: Vec<ActivityEntry>,
    pub hunting_query: Option<HuntingQueries>,
    pub links: Option<Links>,
    pub detection: DetectionSummary,
    /// Which scorer ranked the candidates (`culprit` or `baseline`).
    pub scorer: String,
    /// When the answer was computed.
    pub computed_at: Timestamp,
}
