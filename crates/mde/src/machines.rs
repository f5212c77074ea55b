//! Machines and machine actions: entities, lenient parsing, OData filters.

use culprit_model::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::MdeError;

/// The facts about a device that Culprit shows and decides on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Machine {
    /// MDE machine id: the same value as `DeviceId` in hunting tables.
    pub id: String,
    pub computer_dns_name: Option<String>,
    pub os_platform: Option<String>,
    pub os_version: Option<String>,
    pub os_build: Option<i64>,
    pub os_architecture: Option<String>,
    pub health_status: Option<String>,
    pub onboarding_status: Option<String>,
    pub first_seen: Option<Timestamp>,
    /// The last full device report (about daily), not a liveness signal.
    pub last_seen: Option<Timestamp>,
    pub last_ip_address: Option<String>,
    pub last_external_ip_address: Option<String>,
    pub exposure_level: Option<String>,
    pub risk_score: Option<String>,
    pub device_value: Option<String>,
    pub rbac_group_name: Option<String>,
    pub rbac_group_id: Option<String>,
    pub aad_device_id: Option<String>,
    pub is_aad_joined: Option<bool>,
    pub machine_tags: Vec<String>,
    /// Isolation state when the API reports one (the documented entity has none; see
    /// [`crate::MdeClient::isolation_state`]).
    pub isolation_state: Option<String>,
}

/// A machine action's lifecycle state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ActionStatus {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    TimeOut,
    Cancelled,
    Other(String),
}

impl ActionStatus {
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "pending" => ActionStatus::Pending,
            "inprogress" => ActionStatus::InProgress,
            "succeeded" => ActionStatus::Succeeded,
            "failed" => ActionStatus::Failed,
            "timeout" => ActionStatus::TimeOut,
            "cancelled" | "canceled" => ActionStatus::Cancelled,
            _ => ActionStatus::Other(s.to_owned()),
        }
    }

    /// No further change will happen.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ActionStatus::Succeeded
                | ActionStatus::Failed
                | ActionStatus::TimeOut
                | ActionStatus::Cancelled
        )
    }

    pub fn as_str(&self) -> &str {
        match self {
            ActionStatus::Pending => "Pending",
            ActionStatus::InProgress => "InProgress",
            ActionStatus::Succeeded => "Succeeded",
            ActionStatus::Failed => "Failed",
            ActionStatus::TimeOut => "TimeOut",
            ActionStatus::Cancelled => "Cancelled",
            ActionStatus::Other(s) => s,
        }
    }
}

/// A machine action (isolate, release, ...).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MachineAction {
    pub id: String,
    /// `Isolate`, `Unisolate`, ...
    pub action_type: String,
    /// `Full`/`Selective` for isolation.
    pub scope: Option<String>,
    pub status: ActionStatus,
    pub machine_id: Option<String>,
    pub computer_dns_name: Option<String>,
    pub requestor: Option<String>,
    pub requestor_comment: Option<String>,
    pub created: Option<Timestamp>,
    pub last_update: Option<Timestamp>,
    pub title: Option<String>,
}

/// How to isolate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IsolationType {
    Full,
    Selective,
    UnManagedDevice,
}

/// Isolation as the latest finished isolate/release action says.
#[derive(Clone, Debug, PartialEq)]
pub enum IsolationState {
    Isolated(MachineAction),
    NotIsolated(Option<MachineAction>),
    /// An isolate or release is still pending.
    Pending(MachineAction),
}

/// Field access on a JSON object: exact key first, then without regard to case.
struct Obj<'a>(&'a Map<String, Json>);

impl<'a> Obj<'a> {
    fn get(&self, key: &str) -> Option<&'a Json> {
        self.0.get(key).or_else(|| {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
    }
    fn string(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Json::String(s) => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            Json::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Json::Number(n) => n.as_i64(),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
    fn bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }
    fn time(&self, key: &str) -> Option<Timestamp> {
        match crate::hunt::cell(culprit_model::KustoType::DateTime, self.get(key)?) {
            culprit_model::Value::DateTime(t) => Some(t),
            _ => None,
        }
    }
    fn strings(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(Json::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn decode_err(what: &'static str, message: impl Into<String>) -> MdeError {
    MdeError::Decode {
        what,
        message: message.into(),
    }
}

fn parse_json(body: &[u8], what: &'static str) -> Result<Json, MdeError> {
    serde_json::from_slice(body).map_err(|e| decode_err(what, e.to_string()))
}

fn machine_from(v: &Json) -> Result<Machine, MdeError> {
    let Json::Object(map) = v else {
        return Err(decode_err("machine", "not a JSON object"));
    };
    let o = Obj(map);
    let id = o
        .string("id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| decode_err("machine", "no `id`"))?;
    Ok(Machine {
        id,
        computer_dns_name: o.string("computerDnsName"),
        os_platform: o.string("osPlatform"),
        os_version: o.string("version"),
        os_build: o.int("osBuild"),
        os_architecture: o
            .string("osArchitecture")
            .or_else(|| o.string("osProcessor")),
        health_status: o.string("healthStatus"),
        onboarding_status: o.string("onboardingStatus"),
        first_seen: o.time("firstSeen"),
        last_seen: o.time("lastSeen"),
        last_ip_address: o.string("lastIpAddress"),
        last_external_ip_address: o.string("lastExternalIpAddress"),
        exposure_level: o.string("exposureLevel"),
        risk_score: o.string("riskScore"),
        device_value: o.string("deviceValue"),
        rbac_group_name: o.string("rbacGroupName"),
        rbac_group_id: o.string("rbacGroupId"),
        aad_device_id: o.string("aadDeviceId"),
        is_aad_joined: o.bool("isAadJoined"),
        machine_tags: o.strings("machineTags"),
        isolation_state: o.string("isolationState"),
    })
}

fn action_from(v: &Json) -> Result<MachineAction, MdeError> {
    let Json::Object(map) = v else {
        return Err(decode_err("machine action", "not a JSON object"));
    };
    let o = Obj(map);
    let id = o
        .string("id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| decode_err("machine action", "no `id`"))?;
    Ok(MachineAction {
        id,
        action_type: o.string("type").unwrap_or_default(),
        scope: o.string("scope"),
        status: ActionStatus::parse(&o.string("status").unwrap_or_default()),
        machine_id: o.string("machineId"),
        computer_dns_name: o.string("computerDnsName"),
        requestor: o.string("requestor"),
        requestor_comment: o.string("requestorComment"),
        created: o.time("creationDateTimeUtc"),
        last_update: o.time("lastUpdateDateTimeUtc"),
        title: o.string("title"),
    })
}

fn collection<T>(
    body: &[u8],
    what: &'static str,
    one: fn(&Json) -> Result<T, MdeError>,
) -> Result<Vec<T>, MdeError> {
    let root = parse_json(body, what)?;
    match &root {
        Json::Object(map) => match Obj(map).get("value") {
            Some(Json::Array(items)) => items.iter().map(one).collect(),
            Some(Json::Null) | None => Ok(Vec::new()),
            Some(_) => Err(decode_err(what, "`value` is not an array")),
        },
        _ => Err(decode_err(what, "not a JSON object")),
    }
}

/// One machine entity.
pub fn parse_machine(body: &[u8]) -> Result<Machine, MdeError> {
    machine_from(&parse_json(body, "machine")?)
}

/// A `{"value": [machines]}` collection.
pub fn parse_machines(body: &[u8]) -> Result<Vec<Machine>, MdeError> {
    collection(body, "machines", machine_from)
}

/// One machine action entity.
pub fn parse_action(body: &[u8]) -> Result<MachineAction, MdeError> {
    action_from(&parse_json(body, "machine action")?)
}

/// A `{"value": [actions]}` collection.
pub fn parse_actions(body: &[u8]) -> Result<Vec<MachineAction>, MdeError> {
    collection(body, "machine actions", action_from)
}

/// An OData string literal: quotes doubled.
pub fn odata_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Percent-encodes an OData query value, keeping the characters OData syntax needs readable
/// (some MDE endpoints reject fully encoded filters).
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~'(),:=@".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Exactly one machine, or an error naming how many matched.
pub fn exactly_one(mut machines: Vec<Machine>, what: &str) -> Result<Machine, MdeError> {
    if machines.len() > 1 {
        return Err(MdeError::Ambiguous {
            what: what.to_owned(),
            count: machines.len(),
            ids: machines.into_iter().map(|m| m.id).collect(),
        });
    }
    machines.pop().ok_or_else(|| MdeError::NotFound {
        what: what.to_owned(),
        message: "no machine matched".to_owned(),
    })
}
