//! Machine actions (isolate, unisolate) and their Pending → InProgress → Succeeded lifecycle,
//! which follows the twin clock rather than timers.

use culprit_model::{Duration, Timestamp};
use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::config::ActionTiming;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ActionType {
    Isolate,
    Unisolate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ActionStatus {
    Pending,
    InProgress,
    Succeeded,
}

impl ActionStatus {
    pub fn is_active(self) -> bool {
        matches!(self, ActionStatus::Pending | ActionStatus::InProgress)
    }
}

/// A requested action, as recorded.
#[derive(Clone, Debug)]
pub struct Action {
    pub id: String,
    pub kind: ActionType,
    /// `Full` or `Selective` for isolation; none for release.
    pub scope: Option<String>,
    pub requestor: String,
    pub comment: String,
    pub machine_id: String,
    pub computer_dns_name: String,
    pub created: Timestamp,
}

impl Action {
    pub fn status(&self, now: Timestamp, timing: &ActionTiming) -> ActionStatus {
        let age = now - self.created;
        let secs = |s: u64| Duration::from_seconds(i64::try_from(s).unwrap_or(i64::MAX));
        if age >= secs(timing.succeeded_after_secs) {
            ActionStatus::Succeeded
        } else if age >= secs(timing.in_progress_after_secs) {
            ActionStatus::InProgress
        } else {
            ActionStatus::Pending
        }
    }

    /// When the status last changed.
    fn last_update(&self, now: Timestamp, timing: &ActionTiming) -> Timestamp {
        let at = |s: u64| self.created + Duration::from_seconds(i64::try_from(s).unwrap_or(0));
        match self.status(now, timing) {
            ActionStatus::Pending => self.created,
            ActionStatus::InProgress => at(timing.in_progress_after_secs),
            ActionStatus::Succeeded => at(timing.succeeded_after_secs),
        }
    }

    /// The MachineAction entity (mde-api.md §3.4).
    pub fn to_json(&self, now: Timestamp, timing: &ActionTiming) -> Json {
        let kind = match self.kind {
            ActionType::Isolate => "Isolate",
            ActionType::Unisolate => "Unisolate",
        };
        json!({
            "id": self.id,
            "type": kind,
            "title": format!("{kind} machine {}", self.computer_dns_name),
            "requestor": self.requestor,
            "requestorComment": self.comment,
            "status": self.status(now, timing),
            "machineId": self.machine_id,
            "computerDnsName": self.computer_dns_name,
            "creationDateTimeUtc": self.created,
            "lastUpdateDateTimeUtc": self.last_update(now, timing),
            "cancellationRequestor": null,
            "cancellationComment": null,
            "cancellationDateTimeUtc": null,
            "errorHResult": 0,
            "scope": self.scope,
            "externalId": null,
            "requestSource": "PublicApi",
            "relatedFileInfo": null,
            "commands": [],
            "troubleshootInfo": null,
        })
    }
}

/// A machine's isolation as its completed actions leave it.
pub fn isolation_of(
    actions: &[Action],
    machine_id: &str,
    now: Timestamp,
    timing: &ActionTiming,
) -> Option<String> {
    actions
        .iter()
        .filter(|a| a.machine_id == machine_id && a.status(now, timing) == ActionStatus::Succeeded)
        .max_by_key(|a| a.created)
        .and_then(|a| match a.kind {
            ActionType::Isolate => a.scope.clone(),
            ActionType::Unisolate => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(kind: ActionType, created: i64) -> Action {
        Action {
            id: format!("a{created}"),
            kind,
            scope: (kind == ActionType::Isolate).then(|| "Full".to_owned()),
            requestor: "app".into(),
            comment: "c".into(),
            machine_id: "m".into(),
            computer_dns_name: "h".into(),
            created: Timestamp::from_unix_seconds(created),
        }
    }

    #[test]
    fn lifecycle_follows_the_clock() {
        let timing = ActionTiming {
            in_progress_after_secs: 5,
            succeeded_after_secs: 30,
        };
        let a = action(ActionType::Isolate, 100);
        let at = Timestamp::from_unix_seconds;
        assert_eq!(a.status(at(104), &timing), ActionStatus::Pending);
        assert_eq!(a.status(at(105), &timing), ActionStatus::InProgress);
        assert_eq!(a.status(at(130), &timing), ActionStatus::Succeeded);
        let both = [a, action(ActionType::Unisolate, 200)];
        assert_eq!(
            isolation_of(&both, "m", at(131), &timing),
            Some("Full".into())
        );
        assert_eq!(
            isolation_of(&both, "m", at(229), &timing),
            Some("Full".into())
        );
        assert_eq!(isolation_of(&both, "m", at(230), &timing), None);
    }
}
