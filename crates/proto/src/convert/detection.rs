//! Detection ⇄ `culprit.v1.Detection`.

use std::net::IpAddr;

use culprit_model::detection::{Protocol, Subject, parse_ip};
use culprit_model::{Detection, Direction, Flow, HostRef, Session, SourceKind, Window};

use super::{ConvertError, each, known_enum, req_time, required, timestamp_to_proto};
use crate::v1 as pb;

impl From<SourceKind> for pb::SourceKind {
    fn from(s: SourceKind) -> Self {
        match s {
            SourceKind::Vectra => pb::SourceKind::Vectra,
            SourceKind::Suricata => pb::SourceKind::Suricata,
            SourceKind::Zeek => pb::SourceKind::Zeek,
        }
    }
}

/// `source` has no default: a detection of unknown origin cannot be keyed.
pub(crate) fn source_from_proto(field: &str, v: i32) -> Result<SourceKind, ConvertError> {
    match known_enum(field, v)? {
        pb::SourceKind::Unspecified => Err(ConvertError::missing(field)),
        pb::SourceKind::Vectra => Ok(SourceKind::Vectra),
        pb::SourceKind::Suricata => Ok(SourceKind::Suricata),
        pb::SourceKind::Zeek => Ok(SourceKind::Zeek),
    }
}

fn direction_to_proto(d: Direction) -> pb::Direction {
    match d {
        Direction::Outbound => pb::Direction::Outbound,
        Direction::Inbound => pb::Direction::Inbound,
    }
}

// Unspecified enums read as the model's default, as the proto comments document.
fn direction_from_proto(v: i32) -> Result<Direction, ConvertError> {
    Ok(match known_enum("direction", v)? {
        pb::Direction::Unspecified => Direction::default(),
        pb::Direction::Outbound => Direction::Outbound,
        pb::Direction::Inbound => Direction::Inbound,
    })
}

fn subject_to_proto(s: Subject) -> pb::Subject {
    match s {
        Subject::Host => pb::Subject::Host,
        Subject::Account => pb::Subject::Account,
    }
}

fn subject_from_proto(v: i32) -> Result<Subject, ConvertError> {
    Ok(match known_enum("subject", v)? {
        pb::Subject::Unspecified => Subject::default(),
        pb::Subject::Host => Subject::Host,
        pb::Subject::Account => Subject::Account,
    })
}

fn protocol_to_proto(p: Protocol) -> pb::Protocol {
    match p {
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Udp => pb::Protocol::Udp,
        Protocol::Icmp => pb::Protocol::Icmp,
        Protocol::Other => pb::Protocol::Other,
    }
}

fn protocol_from_proto(v: i32) -> Result<Protocol, ConvertError> {
    Ok(match known_enum("protocol", v)? {
        pb::Protocol::Unspecified => Protocol::default(),
        pb::Protocol::Tcp => Protocol::Tcp,
        pb::Protocol::Udp => Protocol::Udp,
        pb::Protocol::Icmp => Protocol::Icmp,
        pb::Protocol::Other => Protocol::Other,
    })
}

pub(crate) fn ip_from_proto(field: &str, s: &str) -> Result<IpAddr, ConvertError> {
    parse_ip(s).ok_or_else(|| {
        let shown: String = s.chars().take(64).collect();
        ConvertError::invalid(field, format!("{shown:?} is not an IP address"))
    })
}

fn port_from_proto(field: &str, p: Option<u32>) -> Result<Option<u16>, ConvertError> {
    p.map(|p| {
        u16::try_from(p)
            .map_err(|_| ConvertError::invalid(field, format!("port {p} is above 65535")))
    })
    .transpose()
}

impl From<&Session> for pb::Session {
    fn from(s: &Session) -> Self {
        pb::Session {
            first: Some(timestamp_to_proto(s.first)),
            last: Some(timestamp_to_proto(s.last)),
            local_port: s.local_port.map(u32::from),
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            community_id: s.community_id.clone(),
        }
    }
}

fn session_from_proto(s: pb::Session) -> Result<Session, ConvertError> {
    Ok(Session {
        first: req_time("first", s.first)?,
        last: req_time("last", s.last)?,
        local_port: port_from_proto("local_port", s.local_port)?,
        bytes_sent: s.bytes_sent,
        bytes_received: s.bytes_received,
        community_id: s.community_id,
    })
}

impl From<&Flow> for pb::Flow {
    fn from(f: &Flow) -> Self {
        pb::Flow {
            remote_ip: f.remote_ip.to_string(),
            remote_port: f.remote_port.map(u32::from),
            protocol: protocol_to_proto(f.protocol).into(),
            domain: f.domain.clone(),
            sessions: f.sessions.iter().map(pb::Session::from).collect(),
        }
    }
}

fn flow_from_proto(f: pb::Flow) -> Result<Flow, ConvertError> {
    Ok(Flow {
        remote_ip: ip_from_proto("remote_ip", &f.remote_ip)?,
        remote_port: port_from_proto("remote_port", f.remote_port)?,
        protocol: protocol_from_proto(f.protocol)?,
        domain: f.domain,
        sessions: each("sessions", f.sessions, session_from_proto)?,
    })
}

fn host_to_proto(h: &HostRef) -> pb::HostRef {
    pb::HostRef {
        ip: h.ip.map(|ip| ip.to_string()),
        name: h.name.clone(),
        source_host_id: h.source_host_id.clone(),
    }
}

fn host_from_proto(h: pb::HostRef) -> Result<HostRef, ConvertError> {
    Ok(HostRef {
        ip: h.ip.map(|ip| ip_from_proto("ip", &ip)).transpose()?,
        name: h.name,
        source_host_id: h.source_host_id,
    })
}

fn window_from_proto(w: pb::Window) -> Result<Window, ConvertError> {
    let start = req_time("start", w.start)?;
    let end = req_time("end", w.end)?;
    if start > end {
        return Err(ConvertError::invalid(
            "end",
            format!("{end} is before start {start}"),
        ));
    }
    Ok(Window { start, end })
}

impl From<&Detection> for pb::Detection {
    fn from(d: &Detection) -> Self {
        pb::Detection {
            source: pb::SourceKind::from(d.source).into(),
            tenant: d.tenant.clone(),
            source_id: d.source_id.clone(),
            revision: d.revision.clone(),
            category: d.category.clone(),
            detection_type: d.detection_type.clone(),
            threat: d.threat,
            certainty: d.certainty,
            severity: d.severity,
            subject: subject_to_proto(d.subject).into(),
            direction: direction_to_proto(d.direction).into(),
            host: Some(host_to_proto(&d.host)),
            window: Some(pb::Window {
                start: Some(timestamp_to_proto(d.window.start)),
                end: Some(timestamp_to_proto(d.window.end)),
            }),
            flows: d.flows.iter().map(pb::Flow::from).collect(),
            needs_target_list: d.needs_target_list,
            summary: d.summary.clone(),
            warnings: d.warnings.clone(),
        }
    }
}

/// Rejects an empty key part: the detection key would be ambiguous.
fn key_part(field: &str, s: String) -> Result<String, ConvertError> {
    if s.trim().is_empty() {
        Err(ConvertError::missing(field))
    } else {
        Ok(s)
    }
}

impl TryFrom<pb::Detection> for Detection {
    type Error = ConvertError;

    fn try_from(d: pb::Detection) -> Result<Self, Self::Error> {
        Ok(Detection {
            source: source_from_proto("source", d.source)?,
            tenant: key_part("tenant", d.tenant)?,
            source_id: key_part("source_id", d.source_id)?,
            revision: key_part("revision", d.revision)?,
            category: d.category,
            detection_type: d.detection_type,
            threat: d.threat,
            certainty: d.certainty,
            severity: d.severity,
            subject: subject_from_proto(d.subject)?,
            direction: direction_from_proto(d.direction)?,
            host: super::nested("host", d.host, host_from_proto)?.unwrap_or_default(),
            window: required("window", d.window, window_from_proto)?,
            flows: each("flows", d.flows, flow_from_proto)?,
            needs_target_list: d.needs_target_list,
            summary: d.summary,
            warnings: d.warnings,
        })
    }
}

/// Shared by other modules' tests: a detection that sets every optional field.
#[cfg(test)]
pub(crate) fn sample_detection() -> Detection {
    use culprit_model::Timestamp;
    let t0 = Timestamp::from_unix_seconds(1_692_161_670) + culprit_model::Duration(9_870_001);
    let later = t0 + culprit_model::Duration::from_minutes(5);
    let session = |local_port| Session {
        first: t0,
        last: later,
        local_port,
        bytes_sent: Some(1_234),
        bytes_received: None,
        community_id: Some("1:abc=".into()),
    };
    Detection {
        source: SourceKind::Vectra,
        tenant: "acme".into(),
        source_id: "2569".into(),
        revision: "2023-08-16T04:59:22Z".into(),
        category: "command & control".into(),
        detection_type: "Hidden HTTPS Tunnel".into(),
        threat: Some(80),
        certainty: Some(62),
        severity: None,
        subject: Subject::Account,
        direction: Direction::Inbound,
        host: HostRef {
            ip: parse_ip("::ffff:10.0.2.15"),
            name: Some("WORKSTATION5".into()),
            source_host_id: None,
        },
        window: Window::new(t0, later),
        flows: vec![
            Flow {
                remote_ip: parse_ip("2001:db8::1").unwrap_or(IpAddr::from([0, 0, 0, 0])),
                remote_port: Some(443),
                protocol: Protocol::Udp,
                domain: Some("evil.example".into()),
                sessions: vec![session(Some(50_123)), session(None)],
            },
            Flow {
                remote_ip: IpAddr::from([10, 0, 5, 13]),
                remote_port: None,
                protocol: Protocol::Other,
                domain: None,
                sessions: vec![],
            },
        ],
        needs_target_list: true,
        summary: Some("5 sessions".into()),
        warnings: vec!["bytes_received: not a number".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn detection_round_trips_through_the_wire() {
        let d = sample_detection();
        let bytes = pb::Detection::from(&d).encode_to_vec();
        let decoded = pb::Detection::decode(bytes.as_slice()).unwrap();
        assert_eq!(Detection::try_from(decoded).unwrap(), d);
    }

    #[test]
    fn every_source_kind_round_trips() {
        for s in [SourceKind::Vectra, SourceKind::Suricata, SourceKind::Zeek] {
            let p: i32 = pb::SourceKind::from(s).into();
            assert_eq!(source_from_proto("source", p), Ok(s));
        }
    }

    #[test]
    fn unspecified_enums_read_as_the_model_defaults() {
        let mut p = pb::Detection::from(&sample_detection());
        p.subject = 0;
        p.direction = 0;
        p.flows[0].protocol = 0;
        let d = Detection::try_from(p).unwrap();
        assert_eq!(d.subject, Subject::default());
        assert_eq!(d.direction, Direction::default());
        assert_eq!(d.flows[0].protocol, Protocol::default());
    }

    fn field_of(edit: impl Fn(&mut pb::Detection)) -> String {
        let mut p = pb::Detection::from(&sample_detection());
        edit(&mut p);
        Detection::try_from(p).unwrap_err().field().to_owned()
    }

    #[test]
    fn bad_input_names_the_field() {
        assert_eq!(field_of(|p| p.source = 0), "source");
        assert_eq!(field_of(|p| p.source = 42), "source");
        assert_eq!(field_of(|p| p.tenant.clear()), "tenant");
        assert_eq!(field_of(|p| p.revision = " ".into()), "revision");
        assert_eq!(field_of(|p| p.direction = 9), "direction");
        assert_eq!(field_of(|p| p.window = None), "window");
        assert_eq!(
            field_of(|p| p.host = Some(pb::HostRef {
                ip: Some("10.0.0.300".into()),
                ..Default::default()
            })),
            "host.ip"
        );
        assert_eq!(
            field_of(|p| p.flows[1].remote_ip = "nope".into()),
            "flows[1].remote_ip"
        );
        assert_eq!(
            field_of(|p| p.flows[0].remote_port = Some(70_000)),
            "flows[0].remote_port"
        );
        assert_eq!(field_of(|p| p.flows[0].protocol = -3), "flows[0].protocol");
        assert_eq!(
            field_of(|p| p.flows[0].sessions[1].first = None),
            "flows[0].sessions[1].first"
        );
        assert_eq!(
            field_of(|p| p.flows[0].sessions[0].local_port = Some(65_536)),
            "flows[0].sessions[0].local_port"
        );
    }

    #[test]
    fn a_window_that_ends_before_it_starts_is_rejected() {
        let mut p = pb::Detection::from(&sample_detection());
        if let Some(w) = p.window.as_mut() {
            std::mem::swap(&mut w.start, &mut w.end);
        }
        let err = Detection::try_from(p).unwrap_err();
        assert_eq!(err.field(), "window.end");
        assert!(err.to_string().contains("before start"), "{err}");
    }

    #[test]
    fn a_missing_host_is_an_unknown_host() {
        let mut p = pb::Detection::from(&sample_detection());
        p.host = None;
        assert_eq!(Detection::try_from(p).unwrap().host, HostRef::default());
    }
}
