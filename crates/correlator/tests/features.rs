//! Each feature and each status of the engine on small hand-made telemetry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use culprit_correlator::{Options, Scorer, attribute, community_id};
use culprit_model::correlation::Correlation;
use culprit_model::detection::{Flow, HostRef, Protocol, Session, SourceKind, Subject, parse_ip};
use culprit_model::telemetry::{
    DeviceEvent, DeviceInfo, NetworkEvent, NetworkInfo, ProcessEvent, ProcessInfo,
};
use culprit_model::{Detection, Direction, Duration, Status, Telemetry, Timestamp, Window};

const A: &str = "aaaa1111";
const B: &str = "bbbb2222";
const HOST: &str = "192.168.1.41";
const C2: &str = "10.0.5.13";

fn t(hms: &str) -> Timestamp {
    Timestamp::parse(&format!("2023-08-16T{hms}Z")).unwrap()
}

fn later() -> Timestamp {
    t("23:59:00")
}

fn name_of(dev: &str) -> String {
    if dev == A {
        "a.lab".into()
    } else {
        "b.lab".into()
    }
}

fn proc(pid: u32, name: &str, created: Option<&str>) -> ProcessInfo {
    ProcessInfo {
        process_id: Some(pid),
        file_name: name.into(),
        folder_path: format!("c:\\windows\\system32\\{name}"),
        creation_time: created.map(t),
        ..ProcessInfo::default()
    }
}

fn in_downloads(mut p: ProcessInfo) -> ProcessInfo {
    p.folder_path = format!("c:\\users\\bob\\downloads\\{}", p.file_name);
    p.sha256 = "ab".repeat(32);
    p
}

fn child_of(mut p: ProcessInfo, parent: &ProcessInfo) -> ProcessInfo {
    p.parent_id = parent.process_id;
    p.parent_file_name = parent.file_name.clone();
    p.parent_creation_time = parent.creation_time;
    p
}

fn net(
    dev: &str,
    at: &str,
    local: (&str, u16),
    remote: (&str, u16),
    p: &ProcessInfo,
) -> NetworkEvent {
    NetworkEvent {
        timestamp: t(at),
        device_id: dev.into(),
        device_name: name_of(dev),
        action_type: "ConnectionSuccess".into(),
        local_ip: parse_ip(local.0),
        local_port: Some(local.1),
        remote_ip: parse_ip(remote.0),
        remote_port: Some(remote.1),
        remote_url: String::new(),
        protocol: "Tcp".into(),
        initiating: p.clone(),
    }
}

fn out(dev: &str, at: &str, lport: u16, rport: u16, p: &ProcessInfo) -> NetworkEvent {
    net(dev, at, (HOST, lport), (C2, rport), p)
}

fn netinfo(dev: &str, at: &str, ips: &[&str]) -> NetworkInfo {
    NetworkInfo {
        timestamp: t(at),
        device_id: dev.into(),
        device_name: name_of(dev),
        ip_addresses: ips.iter().filter_map(|i| parse_ip(i)).collect(),
    }
}

fn devinfo(dev: &str, at: &str, health: &str, onboarding: &str) -> DeviceInfo {
    DeviceInfo {
        timestamp: t(at),
        device_id: dev.into(),
        device_name: name_of(dev),
        onboarding_status: onboarding.into(),
        sensor_health_state: health.into(),
        ..DeviceInfo::default()
    }
}

fn created(dev: &str, child: &ProcessInfo, parent: &ProcessInfo) -> ProcessEvent {
    ProcessEvent {
        timestamp: child.creation_time.unwrap(),
        device_id: dev.into(),
        device_name: name_of(dev),
        action_type: "ProcessCreated".into(),
        process: child_of(child.clone(), parent),
        initiating: parent.clone(),
    }
}

fn device_event(
    dev: &str,
    at: &str,
    action: &str,
    initiating: &ProcessInfo,
    target: ProcessInfo,
    fields: serde_json::Value,
) -> DeviceEvent {
    DeviceEvent {
        timestamp: t(at),
        device_id: dev.into(),
        device_name: name_of(dev),
        action_type: action.into(),
        target,
        remote_ip: None,
        remote_port: None,
        local_ip: None,
        local_port: None,
        remote_url: String::new(),
        additional_fields: Some(fields),
        initiating: initiating.clone(),
    }
}

fn session(at: &str) -> Session {
    Session {
        first: t(at),
        last: t(at),
        local_port: None,
        bytes_sent: None,
        bytes_received: None,
        community_id: None,
    }
}

fn flow(ip: &str, port: u16, sessions: &[&str]) -> Flow {
    Flow {
        remote_ip: parse_ip(ip).unwrap(),
        remote_port: Some(port),
        protocol: Protocol::Tcp,
        domain: None,
        sessions: sessions.iter().map(|s| session(s)).collect(),
    }
}

fn detection(start: &str, end: &str, flows: Vec<Flow>) -> Detection {
    Detection {
        source: SourceKind::Vectra,
        tenant: "t1".into(),
        source_id: "42".into(),
        revision: end.into(),
        category: "command_and_control".into(),
        detection_type: "Hidden HTTPS Tunnel".into(),
        threat: Some(80),
        certainty: Some(90),
        severity: None,
        subject: Subject::Host,
        direction: Direction::Outbound,
        host: HostRef {
            ip: parse_ip(HOST),
            name: Some("A".into()),
            source_host_id: None,
        },
        window: Window::new(t(start), t(end)),
        flows,
        needs_target_list: false,
        summary: None,
        warnings: Vec::new(),
    }
}

/// Device A holds HOST from 04:00 on.
fn base() -> Telemetry {
    Telemetry {
        network_info: vec![netinfo(A, "04:00:00", &[HOST])],
        ..Telemetry::default()
    }
}

fn run(det: &Detection, tel: &Telemetry) -> Correlation {
    attribute(det, tel, &Options::default(), later())
}

fn probable(c: &Correlation) -> (&str, u32) {
    let p = c
        .probable
        .as_ref()
        .unwrap_or_else(|| panic!("no probable: {} {}", c.status, c.explanation));
    (p.file_name.as_str(), p.process_id)
}

#[test]
fn attributes_the_owner_of_the_sessions_with_reasons_and_high_confidence() {
    let implant = in_downloads(proc(1988, "implant.exe", Some("04:54:30")));
    let dns = proc(1048, "svchost.exe", None);
    let mut tel = base();
    for (i, at) in ["04:54:34.5", "04:54:45.4", "04:55:46.1"]
        .iter()
        .enumerate()
    {
        tel.network
            .push(out(A, at, 51000 + i as u16, 8080, &implant));
    }
    for i in 0..30u16 {
        tel.network.push(net(
            A,
            "04:55:00",
            (HOST, 60000 + i),
            (&format!("192.168.1.{}", i + 100), 53),
            &dns,
        ));
    }
    let det = detection(
        "04:54:34",
        "04:56:00",
        vec![flow(C2, 8080, &["04:54:34", "04:54:45", "04:55:46"])],
    );
    let c = run(&det, &tel);
    assert_eq!(c.status, Status::Attributed);
    assert_eq!(probable(&c), ("implant.exe", 1988));
    let p = c.probable.as_ref().unwrap();
    assert!(p.confidence >= 0.9, "{}", p.confidence);
    assert_eq!(p.sessions_owned, 3);
    assert!(
        p.reasons[0].starts_with("owns 3 of 3 sessions"),
        "{:?}",
        p.reasons
    );
    assert!(
        p.reasons
            .iter()
            .any(|r| r.contains("only process to reach 10.0.5.13:8080"))
    );
    assert!(
        p.reasons
            .iter()
            .any(|r| r.contains("started 4.5 s before its first session")),
        "{:?}",
        p.reasons
    );
    assert_eq!(c.device.as_ref().unwrap().device_name, "a.lab");
    // The vendor's method prefers the process with the most destinations.
    let b = attribute(
        &det,
        &tel,
        &Options {
            scorer: Scorer::Baseline,
            ..Options::default()
        },
        later(),
    );
    assert_eq!(probable(&b), ("svchost.exe", 1048));
    assert_eq!(b.scorer, "baseline");
}

#[test]
fn no_device_held_the_address() {
    let det = detection("04:54:00", "04:56:00", vec![flow(C2, 8080, &["04:54:30"])]);
    let tel = Telemetry {
        network_info: vec![netinfo(B, "04:00:00", &["192.168.1.99"])],
        ..Telemetry::default()
    };
    assert_eq!(run(&det, &tel).status, Status::DeviceNotFound);
}

#[test]
fn recent_detection_without_rows_is_pending() {
    let det = detection("04:54:00", "04:56:00", vec![flow(C2, 8080, &["04:54:30"])]);
    let now = t("04:58:00");
    assert_eq!(
        attribute(&det, &Telemetry::default(), &Options::default(), now).status,
        Status::PendingTelemetry
    );
    assert_eq!(
        attribute(&det, &base(), &Options::default(), now).status,
        Status::PendingTelemetry
    );
    assert_eq!(
        attribute(&det, &base(), &Options::default(), later()).status,
        Status::SensorInactive
    );
}

#[test]
fn two_devices_in_the_window_are_ambiguous_and_both_named() {
    let mut tel = base();
    tel.network_info.push(netinfo(B, "04:55:00", &[HOST]));
    let p = proc(10, "x.exe", Some("04:00:00"));
    tel.network.push(out(A, "04:54:30", 50000, 8080, &p));
    tel.network.push(out(B, "04:55:30", 50001, 8080, &p));
    // A still reports the address after B took it: both held it.
    tel.network
        .push(net(A, "04:55:40", (HOST, 50002), ("10.9.9.9", 443), &p));
    let det = detection(
        "04:54:00",
        "04:56:00",
        vec![flow(C2, 8080, &["04:54:30", "04:55:30"])],
    );
    let c = run(&det, &tel);
    assert_eq!(c.status, Status::DeviceAmbiguous);
    let names: Vec<&str> = c.devices.iter().map(|d| d.device_name.as_str()).collect();
    assert_eq!(names, ["a.lab", "b.lab"]);
    assert!(c.devices.iter().all(|d| d.held_from.is_some()));
    assert!(
        c.explanation.contains("a.lab") && c.explanation.contains("b.lab"),
        "{}",
        c.explanation
    );
    assert!(c.probable.is_none());
}

#[test]
fn dhcp_churn_resolves_the_device_that_held_the_address_in_the_window() {
    let mut tel = Telemetry::default();
    // B held HOST until 03:00 (its next snapshot shows a new address), A from 03:05.
    tel.network_info.push(netinfo(B, "02:00:00", &[HOST]));
    tel.network_info
        .push(netinfo(B, "03:00:00", &["192.168.1.34"]));
    tel.network_info.push(netinfo(A, "03:05:00", &[HOST]));
    let b_edge = proc(9060, "msedge.exe", Some("02:10:00"));
    tel.network.push(out(B, "02:30:00", 50000, 8080, &b_edge));
    let implant = proc(7196, "implant.exe", Some("04:54:00"));
    tel.network
        .push(out(A, "04:54:30.2", 50001, 8080, &implant));
    let det = detection("04:54:00", "04:56:00", vec![flow(C2, 8080, &["04:54:30"])]);
    let c = run(&det, &tel);
    assert_eq!(c.status, Status::Attributed, "{}", c.explanation);
    assert_eq!(c.device.as_ref().unwrap().device_id, A);
    assert_eq!(probable(&c), ("implant.exe", 7196));
    assert!(c.candidates.iter().all(|x| x.device_id == A));
}

#[test]
fn a_hold_nobody_closed_ends_when_another_device_takes_the_address() {
    let mut tel = Telemetry::default();
    tel.network_info.push(netinfo(B, "01:00:00", &[HOST]));
    tel.network_info.push(netinfo(A, "03:00:00", &[HOST]));
    let p = proc(5, "x.exe", Some("03:10:00"));
    tel.network.push(out(A, "04:54:30", 50000, 8080, &p));
    let det = detection("04:54:00", "04:56:00", vec![flow(C2, 8080, &["04:54:30"])]);
    let c = run(&det, &tel);
    assert_eq!(c.device.as_ref().unwrap().device_id, A, "{}", c.explanation);
}

#[test]
fn a_periodically_reporting_device_that_fell_silent_no_longer_holds_the_address() {
    let mut tel = Telemetry::default();
    for at in ["01:00:00", "01:15:00", "01:30:00"] {
        tel.network_info.push(netinfo(B, at, &[HOST]));
    }
    let p = proc(5, "x.exe", Some("04:00:00"));
    tel.network.push(out(A, "04:54:30", 50000, 8080, &p));
    let det = detection("04:54:00", "04:56:00", vec![flow(C2, 8080, &["04:54:30"])]);
    let c = run(&det, &tel);
    assert_eq!(c.status, Status::Attributed, "{}", c.explanation);
    assert_eq!(c.device.as_ref().unwrap().device_id, A);
}

#[test]
fn device_resolution_reads_ipv6_and_connection_rows() {
    let v6 = "fe80::5d91:ea18:e2b5:9755";
    let p = proc(5, "x.exe", Some("04:00:00"));
    let tel = Telemetry {
        network: vec![net(A, "04:54:30", (v6, 50000), ("fe80::1", 8080), &p)],
        ..Telemetry::default()
    };
    let mut det = detection(
        "04:54:00",
        "04:56:00",
        vec![flow("fe80::1", 8080, &["04:54:30"])],
    );
    det.host.ip = parse_ip(v6);
    let c = run(&det, &tel);
    assert_eq!(c.status, Status::Attributed, "{}", c.explanation);
    assert_eq!(probable(&c), ("x.exe", 5));
}

#[test]
fn inactive_or_unonboarded_sensor_is_reported_as_such() {
    let det = detection("04:54:00", "04:56:00", vec![flow(C2, 8080, &["04:54:30"])]);
    let mut tel = base();
    tel.device_info
        .push(devinfo(A, "04:50:00", "Inactive", "Onboarded"));
    let p = proc(5, "x.exe", Some("04:00:00"));
    tel.network
        .push(net(A, "04:54:40", (HOST, 50000), ("10.9.9.9", 443), &p));
    let c = run(&det, &tel);
    assert_eq!(c.status, Status::SensorInactive, "{}", c.explanation);
    assert!(c.explanation.contains("Inactive"));
    tel.device_info[0] = devinfo(A, "04:50:00", "Active", "Can be onboarded");
    assert_eq!(run(&det, &tel).status, Status::SensorInactive);
    tel.device_info[0] = devinfo(A, "04:50:00", "Active", "Onboarded");
    assert_eq!(run(&det, &tel).status, Status::InsufficientTelemetry);
}

#[test]
fn no_row_matching_a_session_is_insufficient_telemetry() {
    let mut tel = base();
    let p = proc(5, "x.exe", Some("04:00:00"));
    tel.network
        .push(net(A, "04:54:40", (HOST, 50000), ("10.9.9.9", 443), &p));
    // The right address and port, but far outside the tolerance.
    tel.network.push(out(A, "04:40:00", 50001, 8080, &p));
    let det = detection("04:54:00", "04:56:00", vec![flow(C2, 8080, &["04:54:30"])]);
    let c = run(&det, &tel);
    assert_eq!(c.status, Status::InsufficientTelemetry, "{}", c.explanation);
    assert!(c.probable.is_none());
    assert!(!c.candidates.is_empty());
}

#[test]
fn account_detections_and_target_lists_are_not_attributed() {
    let mut det = detection("04:54:00", "04:56:00", vec![flow(C2, 8080, &["04:54:30"])]);
    det.subject = Subject::Account;
    assert_eq!(run(&det, &base()).status, Status::NotHostAttributable);
    det.subject = Subject::Host;
    det.needs_target_list = true;
    assert_eq!(run(&det, &base()).status, Status::NeedsTargetList);
}

#[test]
fn reused_pid_is_a_different_process() {
    let mut tel = base();
    let old = proc(4444, "updater.exe", Some("04:50:00"));
    let new = in_downloads(proc(4444, "implant.exe", Some("04:54:20")));
    tel.network.push(out(A, "04:53:40", 50000, 8080, &old));
    tel.network.push(out(A, "04:54:30.3", 50001, 8080, &new));
    tel.network.push(out(A, "04:55:30.3", 50002, 8080, &new));
    let det = detection(
        "04:54:00",
        "04:56:00",
        vec![flow(C2, 8080, &["04:54:30", "04:55:30"])],
    );
    let c = run(&det, &tel);
    let p = c.probable.as_ref().unwrap();
    assert_eq!(
        (p.file_name.as_str(), p.process_creation_time),
        ("implant.exe", Some(t("04:54:20")))
    );
    let same_pid: Vec<_> = c
        .candidates
        .iter()
        .filter(|x| x.process_id == 4444)
        .collect();
    assert_eq!(
        same_pid.len(),
        2,
        "both processes with PID 4444 are separate candidates"
    );
}

#[test]
fn swapped_columns_and_ipv4_mapped_addresses_match() {
    let mut tel = base();
    let p = proc(6984, "implant.exe", Some("04:54:00"));
    // Local and Remote reversed, the host's own address IPv4-mapped.
    tel.network.push(net(
        A,
        "04:54:30.1",
        (C2, 4433),
        ("::ffff:192.168.1.41", 51745),
        &p,
    ));
    tel.network.push(net(
        A,
        "04:54:40.1",
        ("::ffff:192.168.1.41", 51746),
        ("::ffff:10.0.5.13", 4433),
        &p,
    ));
    let det = detection(
        "04:54:00",
        "04:56:00",
        vec![flow(C2, 4433, &["04:54:30", "04:54:40"])],
    );
    let c = run(&det, &tel);
    assert_eq!(probable(&c), ("implant.exe", 6984));
    assert_eq!(c.probable.as_ref().unwrap().sessions_owned, 2);
}

#[test]
fn clock_skew_is_estimated_and_each_session_goes_to_its_own_row() {
    let mut tel = base();
    let implant = proc(1988, "implant.exe", Some("04:54:00"));
    let svc = proc(1400, "svchost.exe", None);
    for at in ["04:54:34.2", "04:54:45.2", "04:54:46.2", "04:57:08.2"] {
        tel.network.push(out(A, at, 50000, 8080, &implant));
    }
    tel.network.push(out(A, "04:58:08.2", 50009, 8080, &svc));
    // The sensor's clock runs 45 s ahead of the host's.
    let det = detection(
        "04:55:19",
        "05:00:07",
        vec![flow(
            C2,
            8080,
            &["04:55:19", "04:55:30", "04:55:31", "04:57:53", "04:58:53"],
        )],
    );
    let c = run(&det, &tel);
    let p = c.probable.as_ref().unwrap();
    assert_eq!((p.file_name.as_str(), p.sessions_owned), ("implant.exe", 4));
    assert!(
        p.reasons[0].contains("clock offset of +45 s"),
        "{:?}",
        p.reasons
    );
    let single = detection("04:58:53", "05:00:07", vec![flow(C2, 8080, &["04:58:53"])]);
    assert_eq!(probable(&run(&single, &tel)), ("svchost.exe", 1400));
}

#[test]
fn skew_beyond_the_tolerance_is_not_matched() {
    let mut tel = base();
    let p = proc(5, "x.exe", Some("04:00:00"));
    tel.network.push(out(A, "04:54:30", 50000, 8080, &p));
    tel.device_info
        .push(devinfo(A, "04:58:30", "Active", "Onboarded"));
    let det = detection("04:57:00", "04:58:00", vec![flow(C2, 8080, &["04:57:00"])]);
    assert_eq!(run(&det, &tel).status, Status::InsufficientTelemetry);
    let wide = Options {
        skew_tolerance: Duration::from_seconds(300),
        ..Options::default()
    };
    assert_eq!(
        attribute(&det, &tel, &wide, later()).status,
        Status::Attributed
    );
}

#[test]
fn known_local_port_picks_the_exact_five_tuple_over_a_closer_row() {
    let mut tel = base();
    let a = proc(100, "browser.exe", Some("04:00:00"));
    let b = proc(200, "implant.exe", Some("04:00:00"));
    tel.network.push(out(A, "04:54:30.0", 50001, 443, &a));
    tel.network.push(out(A, "04:54:31.5", 50002, 443, &b));
    let mut f = flow(C2, 443, &["04:54:30"]);
    f.sessions[0].local_port = Some(50002);
    let c = run(&detection("04:54:00", "04:56:00", vec![f]), &tel);
    assert_eq!(probable(&c), ("implant.exe", 200));
    assert!(c.probable.as_ref().unwrap().reasons[0].contains("exact 5-tuple"));
}

#[test]
fn community_id_from_the_row_matches_the_ndr_one() {
    let mut tel = base();
    let a = proc(100, "browser.exe", Some("04:00:00"));
    let b = proc(200, "implant.exe", Some("04:00:00"));
    tel.network.push(out(A, "04:54:30.0", 50001, 443, &a));
    tel.network.push(out(A, "04:54:30.5", 50002, 443, &b));
    let mut f = flow(C2, 443, &["04:54:30"]);
    let cid = community_id(
        Protocol::Tcp,
        parse_ip(HOST).unwrap(),
        50002,
        parse_ip(C2).unwrap(),
        443,
    );
    f.sessions[0].community_id = cid;
    let c = run(&detection("04:54:00", "04:56:00", vec![f]), &tel);
    assert_eq!(probable(&c), ("implant.exe", 200));
    assert!(c.probable.as_ref().unwrap().reasons[0].contains("Community ID"));
}

#[test]
fn several_processes_to_one_destination_each_own_their_sessions() {
    let mut tel = base();
    let a = proc(100, "a.exe", Some("04:00:00"));
    let b = proc(200, "b.exe", Some("04:00:00"));
    tel.network.push(out(A, "04:54:10.2", 50001, 443, &a));
    for at in ["04:54:20.2", "04:54:40.2", "04:55:00.2"] {
        tel.network.push(out(A, at, 50002, 443, &b));
    }
    let det = detection(
        "04:54:00",
        "04:56:00",
        vec![flow(
            C2,
            443,
            &["04:54:10", "04:54:20", "04:54:40", "04:55:00"],
        )],
    );
    let c = run(&det, &tel);
    assert_eq!(probable(&c), ("b.exe", 200));
    assert_eq!(c.probable.as_ref().unwrap().sessions_owned, 3);
    let a_ans = c.candidates.iter().find(|x| x.process_id == 100).unwrap();
    assert_eq!(a_ans.sessions_owned, 1);
    assert!(a_ans.confidence < c.probable.as_ref().unwrap().confidence);
    assert!(
        c.probable.as_ref().unwrap().confidence < 0.9,
        "an unrelated rival owns a session"
    );
}

#[test]
fn capped_telemetry_still_attributes_from_the_first_row() {
    let mut tel = base();
    let implant = proc(1988, "implant.exe", Some("04:54:00"));
    tel.network
        .push(out(A, "04:54:30.1", 50001, 8080, &implant));
    let det = detection(
        "04:54:00",
        "04:59:00",
        vec![flow(C2, 8080, &["04:54:30", "04:55:00", "04:58:30"])],
    );
    let c = run(&det, &tel);
    let p = c.probable.as_ref().unwrap();
    assert_eq!(p.file_name, "implant.exe");
    assert!(
        p.reasons.iter().any(|r| r.contains("repeats are capped")),
        "{:?}",
        p.reasons
    );
    assert!(
        p.confidence < 0.95 && p.confidence > 0.5,
        "{}",
        p.confidence
    );
}

#[test]
fn injection_makes_the_injector_the_root_cause() {
    let mut tel = base();
    let explorer = proc(4544, "explorer.exe", Some("03:00:00"));
    let implant = child_of(
        in_downloads(proc(1988, "implant.exe", Some("04:54:00"))),
        &explorer,
    );
    let svc = proc(1400, "svchost.exe", None);
    tel.processes.push(created(A, &implant, &explorer));
    tel.events.push(device_event(
        A,
        "04:57:27",
        "CreateRemoteThreadApiCall",
        &implant,
        svc.clone(),
        serde_json::json!({}),
    ));
    tel.network
        .push(out(A, "04:54:30.1", 50001, 8080, &implant));
    tel.network.push(out(A, "04:58:08.2", 50002, 8080, &svc));
    let det = detection("04:58:08", "04:59:22", vec![flow(C2, 8080, &["04:58:08"])]);
    let c = run(&det, &tel);
    assert_eq!(probable(&c), ("svchost.exe", 1400));
    let root = c.root_cause.as_ref().unwrap();
    assert_eq!(
        (root.file_name.as_str(), root.process_id),
        ("implant.exe", 1988)
    );
    let p = c.probable.as_ref().unwrap();
    assert!(
        p.reasons
            .iter()
            .any(|r| r.contains("code injected into it by implant.exe (PID 1988)")),
        "{:?}",
        p.reasons
    );
    assert!(
        p.process_tree
            .iter()
            .any(|n| n.relation == "injector" && n.process_id == Some(1988))
    );
    // The implant's own earlier session: explorer.exe is not part of the attack.
    let det2 = detection("04:54:30", "04:56:00", vec![flow(C2, 8080, &["04:54:30"])]);
    let c2 = run(&det2, &tel);
    assert_eq!(c2.root_cause.as_ref().unwrap().process_id, 1988);
    assert_eq!(
        c2.probable
            .as_ref()
            .unwrap()
            .parent
            .as_ref()
            .unwrap()
            .file_name,
        "explorer.exe"
    );
}

#[test]
fn a_dropper_that_started_the_implant_is_the_root_cause() {
    let mut tel = base();
    let explorer = proc(4668, "explorer.exe", Some("03:00:00"));
    let dropper = child_of(
        in_downloads(proc(6740, "happy_image.jpeg.exe", Some("04:53:00"))),
        &explorer,
    );
    let mut implant = child_of(proc(6984, "implant.exe", Some("04:53:10")), &dropper);
    implant.folder_path = "c:\\users\\bob\\appdata\\local\\temp\\rarsfx1\\implant.exe".into();
    tel.processes.push(created(A, &dropper, &explorer));
    tel.processes.push(created(A, &implant, &dropper));
    tel.network
        .push(out(A, "04:54:30.1", 50001, 4433, &implant));
    let c = run(
        &detection("04:54:00", "04:56:00", vec![flow(C2, 4433, &["04:54:30"])]),
        &tel,
    );
    assert_eq!(probable(&c), ("implant.exe", 6984));
    assert_eq!(
        c.root_cause.as_ref().unwrap().file_name,
        "happy_image.jpeg.exe"
    );
    let tree: Vec<(&str, &str)> = c
        .probable
        .as_ref()
        .unwrap()
        .process_tree
        .iter()
        .map(|n| (n.file_name.as_str(), n.relation.as_str()))
        .collect();
    assert_eq!(
        &tree[..3],
        &[
            ("explorer.exe", "parent"),
            ("happy_image.jpeg.exe", "parent"),
            ("implant.exe", "probable")
        ]
    );
}

#[test]
fn inbound_winrm_goes_to_the_worker_not_to_system() {
    let mut tel = base();
    let system = proc(4, "System", None);
    let dcom = proc(900, "svchost.exe", None);
    let worker = proc(5120, "wsmprovhost.exe", Some("04:54:31"));
    let mut row = net(
        A,
        "04:54:30.2",
        (HOST, 5985),
        ("192.168.1.66", 50123),
        &system,
    );
    row.action_type = "InboundConnectionAccepted".into();
    tel.network.push(row);
    tel.processes.push(created(A, &worker, &dcom));
    let mut det = detection(
        "04:54:00",
        "04:56:00",
        vec![flow("192.168.1.66", 5985, &["04:54:30"])],
    );
    det.direction = Direction::Inbound;
    let c = run(&det, &tel);
    assert_eq!(probable(&c), ("wsmprovhost.exe", 5120));
    assert!(c.probable.as_ref().unwrap().reasons[0].contains("handled the inbound connection"));
    assert!(c.candidates.iter().any(|x| x.process_id == 4));
}

#[test]
fn detection_without_flows_is_attributed_only_to_a_lone_talker() {
    let mut tel = base();
    let one = proc(9384, "regsvr32.exe", Some("04:54:00"));
    tel.network.push(net(
        A,
        "04:54:10",
        (HOST, 50000),
        ("10.10.10.5", 8444),
        &one,
    ));
    let det = detection("04:54:00", "04:55:00", Vec::new());
    let c = run(&det, &tel);
    assert_eq!(c.status, Status::Attributed, "{}", c.explanation);
    assert_eq!(probable(&c), ("regsvr32.exe", 9384));
    assert!(c.probable.as_ref().unwrap().confidence < 0.5);
    // A second process talking within ± 120 s: no process can be named.
    let other = proc(5148, "svchost.exe", None);
    tel.network.push(net(
        A,
        "04:56:30",
        (HOST, 50001),
        ("192.168.1.4", 53),
        &other,
    ));
    let c = run(&det, &tel);
    assert_eq!(c.status, Status::InsufficientTelemetry);
    assert!(c.explanation.contains("2 processes"), "{}", c.explanation);
}

#[test]
fn beacons_and_dns_answers_are_explained() {
    let mut tel = base();
    let agent = proc(9076, "powershell.exe", Some("04:54:00"));
    for i in 0..8 {
        let at = format!("04:54:{:02}.3", 5 + i * 5);
        tel.network.push(out(A, &at, 50000 + i as u16, 80, &agent));
    }
    tel.events.push(device_event(
        A,
        "04:54:04",
        "DnsQueryResponse",
        &agent,
        ProcessInfo::default(),
        serde_json::json!({"DnsQueryString": "evil.example", "DnsQueryResult": "::ffff:10.0.5.13;"}),
    ));
    let sessions: Vec<String> = (0..8).map(|i| format!("04:54:{:02}", 5 + i * 5)).collect();
    let refs: Vec<&str> = sessions.iter().map(String::as_str).collect();
    let mut f = flow(C2, 80, &refs);
    f.domain = Some("evil.example".into());
    let c = run(&detection("04:54:00", "04:56:00", vec![f]), &tel);
    let r = &c.probable.as_ref().unwrap().reasons;
    assert!(r.iter().any(|x| x.contains("every ~5.0 s")), "{r:?}");
    assert!(
        r.iter()
            .any(|x| x.contains("resolved evil.example → 10.0.5.13")),
        "{r:?}"
    );
}

#[test]
fn window_activity_lists_process_starts_in_time_order() {
    let mut tel = base();
    let explorer = proc(1, "explorer.exe", Some("03:00:00"));
    for (pid, name, at) in [
        (30, "whoami.exe", "04:55:10"),
        (10, "dropper.exe", "04:54:10"),
        (20, "cmd.exe", "04:54:50"),
        (40, "old.exe", "04:00:00"),
    ] {
        tel.processes
            .push(created(A, &proc(pid, name, Some(at)), &explorer));
    }
    let p = proc(10, "dropper.exe", Some("04:54:10"));
    tel.network.push(out(A, "04:54:30.1", 50001, 8080, &p));
    let c = run(
        &detection("04:54:00", "04:56:00", vec![flow(C2, 8080, &["04:54:30"])]),
        &tel,
    );
    let names: Vec<&str> = c
        .window_activity
        .iter()
        .map(|a| a.file_name.as_str())
        .collect();
    assert_eq!(names, ["dropper.exe", "cmd.exe", "whoami.exe"]);
    let tree = &c.probable.as_ref().unwrap().process_tree;
    assert!(
        tree.iter()
            .any(|n| n.relation == "parent" && n.file_name == "explorer.exe")
    );
}

#[test]
fn hunting_queries_quote_every_value() {
    let mut tel = Telemetry {
        network_info: vec![netinfo("dev\"x", "04:00:00", &[HOST])],
        ..Telemetry::default()
    };
    let mut p = in_downloads(proc(5, "evil\".exe", Some("04:00:00")));
    p.command_line = "evil\".exe | where 1==1".into();
    let mut row = out(A, "04:54:30.1", 50001, 8080, &p);
    row.device_id = "dev\"x".into();
    tel.network.push(row);
    let c = run(
        &detection("04:54:00", "04:56:00", vec![flow(C2, 8080, &["04:54:30"])]),
        &tel,
    );
    let q = c.hunting_query.as_ref().unwrap();
    assert!(
        q.device.contains("DeviceId == \"dev\\\"x\""),
        "{}",
        q.device
    );
    assert!(
        q.enterprise.contains("has \"evil\\\".exe\""),
        "{}",
        q.enterprise
    );
    assert!(q.enterprise.contains("RemoteIP in (\"10.0.5.13\")"));
    assert!(!q.enterprise.contains("DeviceId =="));
}

#[test]
fn never_panics_on_degenerate_input() {
    let mut det = detection("04:56:00", "04:54:00", vec![flow(C2, 8080, &[])]);
    det.host.ip = None;
    det.host.name = None;
    assert_eq!(
        run(&det, &Telemetry::default()).status,
        Status::DeviceNotFound
    );
    det.host.name = Some("a".into());
    let mut tel = base();
    tel.device_info
        .push(devinfo(A, "04:00:00", "Active", "Onboarded"));
    let p = ProcessInfo {
        process_id: Some(7),
        ..ProcessInfo::default()
    };
    tel.network.push(out(A, "04:55:00", 1, 8080, &p));
    let c = run(&det, &tel);
    assert_eq!(c.status, Status::Attributed, "{}", c.explanation);
    assert!(serde_json::to_string(&c).is_ok());
}
