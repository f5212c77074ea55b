//! Correlation ⇄ `culprit.v1.Correlation`.

use culprit_model::correlation::{
    ActivityEntry, DetectionSummary, DeviceRef, HuntingQueries, Links, ParentRef, TreeNode,
};
use culprit_model::{Correlation, DetectionKey, ProcessAnswer, Status};

use super::detection::source_from_proto;
use super::{
    ConvertError, each, known_enum, nested, opt_time, opt_time_to_proto, req_time, required,
    timestamp_to_proto,
};
use crate::v1 as pb;

impl From<Status> for pb::Status {
    fn from(s: Status) -> Self {
        match s {
            Status::Attributed => pb::Status::Attributed,
            Status::InsufficientTelemetry => pb::Status::InsufficientTelemetry,
            Status::DeviceAmbiguous => pb::Status::DeviceAmbiguous,
            Status::DeviceNotFound => pb::Status::DeviceNotFound,
            Status::SensorInactive => pb::Status::SensorInactive,
            Status::PendingTelemetry => pb::Status::PendingTelemetry,
            Status::NotHostAttributable => pb::Status::NotHostAttributable,
            Status::NeedsTargetList => pb::Status::NeedsTargetList,
            Status::HuntFailed => pb::Status::HuntFailed,
        }
    }
}

/// A status enum value (as in a request's filter) as the model's status.
pub fn status_from_proto(field: &str, v: i32) -> Result<Status, ConvertError> {
    Ok(match known_enum(field, v)? {
        pb::Status::Unspecified => return Err(ConvertError::missing(field)),
        pb::Status::Attributed => Status::Attributed,
        pb::Status::InsufficientTelemetry => Status::InsufficientTelemetry,
        pb::Status::DeviceAmbiguous => Status::DeviceAmbiguous,
        pb::Status::DeviceNotFound => Status::DeviceNotFound,
        pb::Status::SensorInactive => Status::SensorInactive,
        pb::Status::PendingTelemetry => Status::PendingTelemetry,
        pb::Status::NotHostAttributable => Status::NotHostAttributable,
        pb::Status::NeedsTargetList => Status::NeedsTargetList,
        pb::Status::HuntFailed => Status::HuntFailed,
    })
}

fn device_to_proto(d: &DeviceRef) -> pb::DeviceRef {
    pb::DeviceRef {
        device_id: d.device_id.clone(),
        device_name: d.device_name.clone(),
        held_from: opt_time_to_proto(d.held_from),
        held_until: opt_time_to_proto(d.held_until),
    }
}

fn device_from_proto(d: pb::DeviceRef) -> Result<DeviceRef, ConvertError> {
    Ok(DeviceRef {
        device_id: d.device_id,
        device_name: d.device_name,
        held_from: opt_time("held_from", d.held_from)?,
        held_until: opt_time("held_until", d.held_until)?,
    })
}

fn parent_to_proto(p: &ParentRef) -> pb::ParentRef {
    pb::ParentRef {
        file_name: p.file_name.clone(),
        process_id: p.process_id,
        process_creation_time: opt_time_to_proto(p.process_creation_time),
    }
}

fn parent_from_proto(p: pb::ParentRef) -> Result<ParentRef, ConvertError> {
    Ok(ParentRef {
        file_name: p.file_name,
        process_id: p.process_id,
        process_creation_time: opt_time("process_creation_time", p.process_creation_time)?,
    })
}

fn tree_node_to_proto(n: &TreeNode) -> pb::TreeNode {
    pb::TreeNode {
        depth: n.depth,
        file_name: n.file_name.clone(),
        process_id: n.process_id,
        process_creation_time: opt_time_to_proto(n.process_creation_time),
        command_line: n.command_line.clone(),
        relation: n.relation.clone(),
    }
}

fn tree_node_from_proto(n: pb::TreeNode) -> Result<TreeNode, ConvertError> {
    Ok(TreeNode {
        depth: n.depth,
        file_name: n.file_name,
        process_id: n.process_id,
        process_creation_time: opt_time("process_creation_time", n.process_creation_time)?,
        command_line: n.command_line,
        relation: n.relation,
    })
}

impl From<&ProcessAnswer> for pb::ProcessAnswer {
    fn from(p: &ProcessAnswer) -> Self {
        pb::ProcessAnswer {
            device_name: p.device_name.clone(),
            device_id: p.device_id.clone(),
            process_id: p.process_id,
            file_name: p.file_name.clone(),
            process_creation_time: opt_time_to_proto(p.process_creation_time),
            command_line: p.command_line.clone(),
            sha256: p.sha256.clone(),
            sha1: p.sha1.clone(),
            folder_path: p.folder_path.clone(),
            account_domain: p.account_domain.clone(),
            account_name: p.account_name.clone(),
            integrity_level: p.integrity_level.clone(),
            parent: p.parent.as_ref().map(parent_to_proto),
            score: p.score,
            confidence: p.confidence,
            reasons: p.reasons.clone(),
            sessions_owned: p.sessions_owned,
            process_tree: p.process_tree.iter().map(tree_node_to_proto).collect(),
        }
    }
}

fn process_from_proto(p: pb::ProcessAnswer) -> Result<ProcessAnswer, ConvertError> {
    if !(0.0..=1.0).contains(&p.confidence) {
        return Err(ConvertError::invalid(
            "confidence",
            format!("{} is outside [0, 1]", p.confidence),
        ));
    }
    Ok(ProcessAnswer {
        device_name: p.device_name,
        device_id: p.device_id,
        process_id: p.process_id,
        file_name: p.file_name,
        process_creation_time: opt_time("process_creation_time", p.process_creation_time)?,
        command_line: p.command_line,
        sha256: p.sha256,
        sha1: p.sha1,
        folder_path: p.folder_path,
        account_domain: p.account_domain,
        account_name: p.account_name,
        integrity_level: p.integrity_level,
        parent: nested("parent", p.parent, parent_from_proto)?,
        score: p.score,
        confidence: p.confidence,
        reasons: p.reasons,
        sessions_owned: p.sessions_owned,
        process_tree: each("process_tree", p.process_tree, tree_node_from_proto)?,
    })
}

fn activity_to_proto(a: &ActivityEntry) -> pb::ActivityEntry {
    pb::ActivityEntry {
        timestamp: Some(timestamp_to_proto(a.timestamp)),
        file_name: a.file_name.clone(),
        process_id: a.process_id,
        command_line: a.command_line.clone(),
        parent_file_name: a.parent_file_name.clone(),
        parent_id: a.parent_id,
    }
}

fn activity_from_proto(a: pb::ActivityEntry) -> Result<ActivityEntry, ConvertError> {
    Ok(ActivityEntry {
        timestamp: req_time("timestamp", a.timestamp)?,
        file_name: a.file_name,
        process_id: a.process_id,
        command_line: a.command_line,
        parent_file_name: a.parent_file_name,
        parent_id: a.parent_id,
    })
}

fn summary_to_proto(s: &DetectionSummary) -> pb::DetectionSummary {
    pb::DetectionSummary {
        detection_type: s.detection_type.clone(),
        category: s.category.clone(),
        threat: s.threat,
        certainty: s.certainty,
        host_ip: s.host_ip.clone(),
        host_name: s.host_name.clone(),
        window_start: opt_time_to_proto(s.window_start),
        window_end: opt_time_to_proto(s.window_end),
        traffic: s.traffic.clone(),
    }
}

fn summary_from_proto(s: pb::DetectionSummary) -> Result<DetectionSummary, ConvertError> {
    Ok(DetectionSummary {
        detection_type: s.detection_type,
        category: s.category,
        threat: s.threat,
        certainty: s.certainty,
        host_ip: s.host_ip,
        host_name: s.host_name,
        window_start: opt_time("window_start", s.window_start)?,
        window_end: opt_time("window_end", s.window_end)?,
        traffic: s.traffic,
    })
}

impl From<&Correlation> for pb::Correlation {
    fn from(c: &Correlation) -> Self {
        pb::Correlation {
            detection_id: c.detection_id.clone(),
            detection_key: c.detection_key.0.clone(),
            source: pb::SourceKind::from(c.source).into(),
            tenant: c.tenant.clone(),
            status: pb::Status::from(c.status).into(),
            error_kind: c.error_kind.clone(),
            explanation: c.explanation.clone(),
            device: c.device.as_ref().map(device_to_proto),
            devices: c.devices.iter().map(device_to_proto).collect(),
            probable: c.probable.as_ref().map(pb::ProcessAnswer::from),
            root_cause: c.root_cause.as_ref().map(pb::ProcessAnswer::from),
            candidates: c.candidates.iter().map(pb::ProcessAnswer::from).collect(),
            window_activity: c.window_activity.iter().map(activity_to_proto).collect(),
            hunting_query: c.hunting_query.as_ref().map(|q| pb::HuntingQueries {
                device: q.device.clone(),
                enterprise: q.enterprise.clone(),
            }),
            links: c.links.as_ref().map(|l| pb::Links {
                device_page: l.device_page.clone(),
                device_timeline: l.device_timeline.clone(),
                advanced_hunting: l.advanced_hunting.clone(),
            }),
            detection: Some(summary_to_proto(&c.detection)),
            scorer: c.scorer.clone(),
            computed_at: Some(timestamp_to_proto(c.computed_at)),
        }
    }
}

impl TryFrom<pb::Correlation> for Correlation {
    type Error = ConvertError;

    fn try_from(c: pb::Correlation) -> Result<Self, Self::Error> {
        if c.detection_key.is_empty() {
            return Err(ConvertError::missing("detection_key"));
        }
        Ok(Correlation {
            detection_id: c.detection_id,
            detection_key: DetectionKey(c.detection_key),
            source: source_from_proto("source", c.source)?,
            tenant: c.tenant,
            status: status_from_proto("status", c.status)?,
            error_kind: c.error_kind,
            explanation: c.explanation,
            device: nested("device", c.device, device_from_proto)?,
            devices: each("devices", c.devices, device_from_proto)?,
            probable: nested("probable", c.probable, process_from_proto)?,
            root_cause: nested("root_cause", c.root_cause, process_from_proto)?,
            candidates: each("candidates", c.candidates, process_from_proto)?,
            window_activity: each("window_activity", c.window_activity, activity_from_proto)?,
            hunting_query: c.hunting_query.map(|q| HuntingQueries {
                device: q.device,
                enterprise: q.enterprise,
            }),
            links: c.links.map(|l| Links {
                device_page: l.device_page,
                device_timeline: l.device_timeline,
                advanced_hunting: l.advanced_hunting,
            }),
            detection: required("detection", c.detection, summary_from_proto)?,
            scorer: c.scorer,
            computed_at: req_time("computed_at", c.computed_at)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_model::{SourceKind, Timestamp};
    use prost::Message;

    fn process(pid: u32, confidence: f64) -> ProcessAnswer {
        ProcessAnswer {
            device_name: "workstation5".into(),
            device_id: "d1".into(),
            process_id: pid,
            file_name: "x.exe".into(),
            process_creation_time: Some(Timestamp(16_921_664_709_870_000)),
            command_line: "\"C:\\x.exe\" -c".into(),
            sha256: "ab".repeat(32),
            sha1: "cd".repeat(20),
            folder_path: "C:\\x.exe".into(),
            account_domain: "acme".into(),
            account_name: "alice".into(),
            integrity_level: "High".into(),
            parent: Some(ParentRef {
                file_name: "explorer.exe".into(),
                process_id: Some(4),
                process_creation_time: None,
            }),
            score: 12.5,
            confidence,
            reasons: vec!["owns 5 of 5 sessions".into()],
            sessions_owned: 5,
            process_tree: vec![TreeNode {
                depth: 0,
                file_name: "explorer.exe".into(),
                process_id: None,
                process_creation_time: Some(Timestamp(-1)),
                command_line: String::new(),
                relation: "parent".into(),
            }],
        }
    }

    fn sample_correlation() -> Correlation {
        let device = DeviceRef {
            device_id: "d1".into(),
            device_name: "workstation5".into(),
            held_from: Some(Timestamp(10)),
            held_until: None,
        };
        Correlation {
            detection_id: "2569".into(),
            detection_key: DetectionKey("vectra:acme:2569:r1".into()),
            source: SourceKind::Zeek,
            tenant: "acme".into(),
            status: Status::DeviceAmbiguous,
            error_kind: Some("throttled".into()),
            explanation: "two devices held 10.0.2.15".into(),
            device: Some(device.clone()),
            devices: vec![device.clone(), DeviceRef::default()],
            probable: Some(process(1988, 0.93)),
            root_cause: Some(process(1400, 0.5)),
            candidates: vec![process(1988, 0.93), process(77, 0.0)],
            window_activity: vec![ActivityEntry {
                timestamp: Timestamp(5),
                file_name: "cmd.exe".into(),
                process_id: Some(9),
                command_line: "cmd /c whoami".into(),
                parent_file_name: "x.exe".into(),
                parent_id: None,
            }],
            hunting_query: Some(HuntingQueries {
                device: "DeviceNetworkEvents | take 1".into(),
                enterprise: "DeviceProcessEvents".into(),
            }),
            links: Some(Links {
                device_page: "https://security.microsoft.com/machines/d1".into(),
                device_timeline: "t".into(),
                advanced_hunting: "a".into(),
            }),
            detection: DetectionSummary {
                detection_type: "Hidden HTTPS Tunnel".into(),
                category: "command & control".into(),
                threat: Some(80),
                certainty: None,
                host_ip: Some("10.0.2.15".into()),
                host_name: None,
                window_start: Some(Timestamp(1)),
                window_end: Some(Timestamp(2)),
                traffic: "5 sessions to 10.0.5.13:8080".into(),
            },
            scorer: "culprit".into(),
            computed_at: Timestamp(16_921_664_709_870_123),
        }
    }

    #[test]
    fn correlation_round_trips_through_the_wire() {
        let c = sample_correlation();
        let bytes = pb::Correlation::from(&c).encode_to_vec();
        let back = Correlation::try_from(pb::Correlation::decode(bytes.as_slice()).unwrap());
        assert_eq!(back.unwrap(), c);
    }

    #[test]
    fn a_bare_abstention_round_trips() {
        let c = Correlation {
            status: Status::InsufficientTelemetry,
            error_kind: None,
            device: None,
            devices: vec![],
            probable: None,
            root_cause: None,
            candidates: vec![],
            window_activity: vec![],
            hunting_query: None,
            links: None,
            detection: DetectionSummary::default(),
            ..sample_correlation()
        };
        let back = Correlation::try_from(pb::Correlation::from(&c)).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn every_status_round_trips() {
        for s in [
            Status::Attributed,
            Status::InsufficientTelemetry,
            Status::DeviceAmbiguous,
            Status::DeviceNotFound,
            Status::SensorInactive,
            Status::PendingTelemetry,
            Status::NotHostAttributable,
            Status::NeedsTargetList,
            Status::HuntFailed,
        ] {
            let p: i32 = pb::Status::from(s).into();
            assert_eq!(status_from_proto("status", p), Ok(s));
            // The wire names follow the model's snake_case names.
            let wire = pb::Status::from(s).as_str_name().to_ascii_lowercase();
            assert_eq!(wire, format!("status_{}", s.as_str()));
        }
    }

    fn field_of(edit: impl Fn(&mut pb::Correlation)) -> String {
        let mut p = pb::Correlation::from(&sample_correlation());
        edit(&mut p);
        Correlation::try_from(p).unwrap_err().field().to_owned()
    }

    #[test]
    fn bad_input_names_the_field() {
        assert_eq!(field_of(|p| p.status = 0), "status");
        assert_eq!(field_of(|p| p.status = 77), "status");
        assert_eq!(field_of(|p| p.source = 0), "source");
        assert_eq!(field_of(|p| p.detection_key.clear()), "detection_key");
        assert_eq!(field_of(|p| p.computed_at = None), "computed_at");
        assert_eq!(field_of(|p| p.detection = None), "detection");
        let bad_time = prost_types::Timestamp {
            seconds: 0,
            nanos: 2_000_000_000,
        };
        assert_eq!(
            field_of(|p| p.devices[1].held_until = Some(bad_time)),
            "devices[1].held_until"
        );
        assert_eq!(
            field_of(|p| if let Some(pr) = p.probable.as_mut() {
                pr.confidence = 1.5;
            }),
            "probable.confidence"
        );
        assert_eq!(
            field_of(|p| p.candidates[1].process_tree[0].process_creation_time = Some(bad_time)),
            "candidates[1].process_tree[0].process_creation_time"
        );
        assert_eq!(
            field_of(|p| p.window_activity[0].timestamp = None),
            "window_activity[0].timestamp"
        );
    }
}
