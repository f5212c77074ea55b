use std::net::IpAddr;

use culprit_model::detection::Protocol;
use culprit_model::{Detection, Timestamp};

use super::*;

fn data(rel: &str) -> Vec<u8> {
    let p = format!("{}/tests/data/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn ok(parsed: Vec<Parsed>) -> Vec<Detection> {
    parsed.into_iter().map(|p| p.detection.unwrap()).collect()
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn every_scenario_file_parses_with_its_ids() {
    let cases: &[(&str, &[&str])] = &[
        ("empire_regsvr32", &["6725", "6726"]),
        ("empire_regsvr32_no_destinations", &["76725", "76726"]),
        ("lsass_01", &["2568", "2569", "2570"]),
        ("lsass_01_capped", &["32568", "32569", "32570"]),
        ("lsass_01_skew", &["12568", "12569", "12570"]),
        ("lsass_02", &["9812", "9813"]),
        ("lsass_02_mapped_swapped", &["29812", "29813"]),
        ("lsass_03", &["8886", "8887", "8888"]),
        ("lsass_03_dhcp", &["48886", "48887", "48888"]),
    ];
    for (scenario, ids) in cases {
        let dets = ok(parse_json(
            &data(&format!("scenarios/{scenario}/vectra_detections.json")),
            "t1",
        )
        .unwrap());
        let got: Vec<&str> = dets.iter().map(|d| d.source_id.as_str()).collect();
        assert_eq!(&got, ids, "{scenario}");
        for d in &dets {
            assert!(
                d.warnings.is_empty(),
                "{scenario} {}: {:?}",
                d.source_id,
                d.warnings
            );
            assert_eq!(d.subject, Subject::Host);
            assert_eq!(d.category, "command_and_control");
        }
    }
}

#[test]
fn lsass_01_hidden_https_tunnel_in_full() {
    let dets = ok(parse_json(&data("scenarios/lsass_01/vectra_detections.json"), "t1").unwrap());
    let d = &dets[1];
    assert_eq!(d.key().as_str(), "vectra:t1:2569:2023-08-16T04:59:22Z");
    assert_eq!(d.detection_type, "Hidden HTTPS Tunnel");
    assert_eq!((d.threat, d.certainty), (Some(60), Some(70)));
    assert_eq!(d.host.ip, Some(ip("192.168.1.41")));
    assert_eq!(d.host.name.as_deref(), Some("MKT01"));
    assert_eq!(d.host.source_host_id.as_deref(), Some("475"));
    assert_eq!(d.window.start, ts("2023-08-16T04:54:34Z"));
    assert_eq!(d.window.end, ts("2023-08-16T04:59:22Z"));
    assert_eq!(d.flows.len(), 1);
    let f = &d.flows[0];
    assert_eq!(
        (f.remote_ip, f.remote_port, f.protocol),
        (ip("10.0.5.13"), Some(8080), Protocol::Tcp)
    );
    assert_eq!(f.sessions.len(), 5);
    assert_eq!(f.sessions[2].first, ts("2023-08-16T04:54:46Z"));
    assert_eq!(f.sessions[2].last, ts("2023-08-16T04:58:05Z"));
    assert_eq!(f.sessions[2].bytes_received, Some(504_788));
    assert_eq!(f.sessions[2].bytes_sent, Some(0));
    assert!(
        d.summary
            .as_deref()
            .unwrap()
            .starts_with("Repeated sessions to one outside server")
    );
}

#[test]
fn no_destinations_detection_keeps_host_and_window() {
    let dets = ok(parse_json(
        &data("scenarios/empire_regsvr32_no_destinations/vectra_detections.json"),
        "t",
    )
    .unwrap());
    let d = &dets[1];
    assert!(d.flows.is_empty());
    assert_eq!(d.host.ip, Some(ip("172.18.39.5")));
    assert_eq!(d.host.name.as_deref(), Some("WORKSTATION5"));
    assert_eq!(d.window.start, ts("2020-07-22T03:27:53Z"));
    assert_eq!(d.window.end, ts("2020-07-22T03:28:25Z"));
}

#[test]
fn v33_sample_page_with_domains() {
    let dets = ok(parse_json(
        &data("samples/vectra/vectra_responses.GET_DETECTIO_FROM_ENTITY_RESP.json"),
        "t",
    )
    .unwrap());
    assert_eq!(
        dets.iter()
            .map(|d| d.source_id.as_str())
            .collect::<Vec<_>>(),
        ["69", "52"]
    );
    let d = &dets[0];
    assert_eq!(d.host.ip, Some(ip("192.168.30.189")));
    assert_eq!(d.host.name.as_deref(), Some("IP-192.168.30.189"));
    // The detection itself scores 0/0 in this fixture (the host scores 68/84).
    assert_eq!((d.threat, d.certainty), (Some(0), Some(0)));
    let f = &d.flows[0];
    assert_eq!(
        (f.remote_ip, f.remote_port),
        (ip("40.121.154.127"), Some(443))
    );
    assert_eq!(f.domain.as_deref(), Some("minutemen.vault-tech.org"));
    assert_eq!(f.sessions[0].bytes_received, Some(672_032));
    assert_eq!(d.window.start, ts("2023-06-05T00:01:01Z"));
    assert_eq!(d.window.end, ts("2023-06-05T00:13:04Z"));
}

#[test]
fn v2_account_detection_is_an_account() {
    let dets = ok(parse_json(&data("samples/vectra/single_detection.json"), "t").unwrap());
    assert_eq!(dets.len(), 1);
    let d = &dets[0];
    assert_eq!(d.source_id, "14");
    assert_eq!(d.subject, Subject::Account);
    assert_eq!(d.category, "command_and_control");
    assert_eq!(d.detection_type, "Azure AD Suspicious Sign-On");
    assert_eq!(d.revision, "2022-07-09T13:45:53Z");
    assert!(d.flows.is_empty());
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
}

fn one(json: &str) -> Result<Detection, IngestError> {
    let mut v = parse_json(json.as_bytes(), "t").unwrap();
    assert_eq!(v.len(), 1);
    v.remove(0).detection
}

const MINIMAL: &str = r#"{"id": 7, "detection_type": "Port Scan", "category": "RECONNAISSANCE",
  "src_ip": "::ffff:10.1.2.3", "last_timestamp": "2024-01-02T03:04:05Z"}"#;

#[test]
fn minimal_detection_and_mapped_ipv6() {
    let d = one(MINIMAL).unwrap();
    assert_eq!(d.host.ip, Some(ip("10.1.2.3")));
    assert_eq!(d.category, "reconnaissance");
    assert_eq!(d.window.start, d.window.end);
    assert!(d.flows.is_empty());
}

#[test]
fn bare_array_and_page_agree() {
    let arr = format!("[{MINIMAL}]");
    let page = format!(r#"{{"count":1,"next":null,"results":[{MINIMAL}]}}"#);
    let a = ok(parse_json(arr.as_bytes(), "t").unwrap());
    let p = ok(parse_json(page.as_bytes(), "t").unwrap());
    assert_eq!(a, p);
}

#[test]
fn number_or_string_fields() {
    let d = one(
        r#"{"id": "7", "detection": "X", "category": "c", "src_ip": "10.0.0.1",
        "threat": "40", "certainty": 55.0, "last_timestamp": "2024-01-02T03:04:05Z",
        "grouped_details": [{"sessions": [{"dst_ip": "1.2.3.4", "dst_port": "443", "protocol": "tcp",
          "bytes_sent": "12", "first_timestamp": "2024-01-01T00:00:00Z", "duration": "30"}]}]}"#,
    )
    .unwrap();
    assert_eq!(d.source_id, "7");
    assert_eq!((d.threat, d.certainty), (Some(40), Some(55)));
    let s = &d.flows[0].sessions[0];
    assert_eq!(d.flows[0].remote_port, Some(443));
    assert_eq!(s.bytes_sent, Some(12));
    assert_eq!(s.last, ts("2024-01-01T00:00:30Z"));
    // The window spans from the session (a day before the envelope) to the envelope end.
    assert_eq!(d.window.start, ts("2024-01-01T00:00:00Z"));
    assert_eq!(d.window.end, ts("2024-01-02T03:04:05Z"));
}

#[test]
fn bad_optional_fields_become_warnings() {
    let d = one(
        r#"{"id": 8, "detection_type": "X", "category": "c", "src_ip": "10.0.0.1", "threat": "high",
        "first_timestamp": "yesterday", "last_timestamp": "2024-01-02T03:04:05Z",
        "grouped_details": [{"sessions": [
            {"dst_ip": "1.2.3.4", "dst_port": 70000, "protocol": "tcp"},
            {"dst_ip": "not-an-ip", "dst_port": 80}]}]}"#,
    )
    .unwrap();
    assert_eq!(d.threat, None);
    assert_eq!(d.flows.len(), 1);
    assert_eq!(d.flows[0].remote_port, None);
    let w = d.warnings.join("\n");
    assert!(w.contains("threat:"), "{w}");
    assert!(w.contains("first_timestamp:"), "{w}");
    assert!(
        w.contains("grouped_details[0].sessions[0].dst_port: 70000 is out of range"),
        "{w}"
    );
    assert!(
        w.contains("grouped_details[0].sessions[1].dst_ip: not an IP address"),
        "{w}"
    );
}

#[test]
fn missing_required_fields_are_named() {
    let page = r#"{"results": [
        {"id": 1, "detection_type": "X", "src_ip": "10.0.0.1", "last_timestamp": "2024-01-02T03:04:05Z"},
        {"detection_type": "X", "src_ip": "10.0.0.1", "last_timestamp": "2024-01-02T03:04:05Z"},
        {"id": 3, "src_ip": "10.0.0.1", "last_timestamp": "2024-01-02T03:04:05Z"},
        {"id": 4, "detection_type": "X", "src_ip": "10.0.0.1"},
        {"id": 5, "detection_type": "X", "last_timestamp": "2024-01-02T03:04:05Z"},
        {"id": 6, "detection_type": "X", "src_ip": "10.0.0.1", "last_timestamp": "noon"},
        42]}"#;
    let parsed = parse_json(page.as_bytes(), "t").unwrap();
    assert!(parsed[0].detection.is_ok());
    let errs: Vec<String> = parsed[1..]
        .iter()
        .map(|p| p.detection.as_ref().unwrap_err().to_string())
        .collect();
    assert_eq!(errs[0], "results[1].id: required field is missing");
    assert_eq!(
        errs[1],
        "results[2].detection_type (or detection): required field is missing"
    );
    assert_eq!(
        errs[2],
        "results[3].last_timestamp: required field is missing"
    );
    assert_eq!(
        errs[3],
        "results[4].src_ip (or src_host): required field is missing"
    );
    assert!(
        errs[4].starts_with("results[5].last_timestamp: "),
        "{}",
        errs[4]
    );
    assert_eq!(errs[5], "results[6]: expected a detection object");
    assert_eq!(parsed[6].raw_index, 6);
}

#[test]
fn account_type_needs_no_host() {
    let d = one(
        r#"{"id": 9, "type": "account", "detection_type": "X", "category": "c",
        "src_account": {"id": 3, "name": "O365:a@b"}, "last_timestamp": "2024-01-02T03:04:05Z"}"#,
    )
    .unwrap();
    assert_eq!(d.subject, Subject::Account);
}

#[test]
fn sessions_group_by_destination_and_data_smuggler_events() {
    let d = one(
        r#"{"id": 10, "detection_type": "Data Smuggler", "category": "exfiltration", "src_ip": "10.0.0.1",
        "first_timestamp": "2023-06-23T00:00:00Z", "last_timestamp": "2023-07-04T00:00:00Z",
        "grouped_details": [
          {"external_target": {"ip": "5.6.7.8", "name": "evil.example"},
           "first_timestamp": "2023-06-20T00:00:00Z", "last_timestamp": "2023-06-21T00:00:00Z",
           "sessions": [
            {"dst_ip": "5.6.7.8", "dst_port": 443, "protocol": "tcp", "first_timestamp": "2023-06-20T01:00:00Z", "last_timestamp": "2023-06-20T02:00:00Z"},
            {"dst_ip": "5.6.7.8", "dst_port": 443, "protocol": "tcp", "first_timestamp": "2023-06-20T03:00:00Z", "last_timestamp": "2023-06-20T04:00:00Z"},
            {"dst_ip": "5.6.7.8", "dst_port": 53, "protocol": "udp", "first_timestamp": "2023-06-20T03:00:00Z"}]},
          {"events": [{"first_timestamp": "2023-07-05T00:00:00Z", "sessions": [
            {"target_host": {"id": 4, "ip": "192.168.60.4", "name": "FS01"}, "dst_port": 445, "protocol": "tcp",
             "first_timestamp": "2023-07-05T00:00:00Z", "duration": 60}]}]}]}"#,
    )
    .unwrap();
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    assert_eq!(d.flows.len(), 3);
    assert_eq!(d.flows[0].sessions.len(), 2);
    assert_eq!(d.flows[0].domain.as_deref(), Some("evil.example"));
    assert_eq!(d.flows[1].protocol, Protocol::Udp);
    assert_eq!(d.flows[2].remote_ip, ip("192.168.60.4"));
    assert_eq!(d.flows[2].domain.as_deref(), Some("FS01"));
    assert_eq!(d.flows[2].sessions[0].last, ts("2023-07-05T00:01:00Z"));
    assert_eq!(d.window.start, ts("2023-06-20T00:00:00Z"));
    assert_eq!(d.window.end, ts("2023-07-05T00:01:00Z"));
}

#[test]
fn group_destinations_without_sessions() {
    let d = one(r#"{"id": 11, "detection": "Outbound DoS", "detection_category": "BOTNET ACTIVITY", "src_ip": "10.0.0.1",
        "last_timestamp": "2024-01-02T03:04:05Z",
        "grouped_details": [{"dst_ips": ["9.9.9.9", "8.8.8.8"], "dst_ports": [80], "protocol": "tcp",
           "target_domains": ["x.example"]}]}"#)
    .unwrap();
    assert_eq!(d.category, "botnet_activity");
    assert_eq!(d.flows.len(), 2);
    assert_eq!(d.flows[1].remote_port, Some(80));
    assert_eq!(d.flows[0].sessions[0].first, ts("2024-01-02T03:04:05Z"));
}

#[test]
fn not_json_or_wrong_shape_is_an_outer_error() {
    let e = parse_json(b"{nope", "t").unwrap_err();
    assert!(matches!(e, IngestError::Malformed { .. }), "{e}");
    let e = parse_json(b"\"x\"", "t").unwrap_err();
    assert_eq!(e.path(), "$");
    let e = parse_json(br#"{"results": 5}"#, "t").unwrap_err();
    assert_eq!(e.path(), "results");
    assert!(
        parse_json(br#"{"count": 0, "next": null, "results": null}"#, "t")
            .unwrap()
            .is_empty()
    );
    assert!(parse_json(b"[]", "t").unwrap().is_empty());
}

#[test]
fn revision_is_normalised() {
    let a = one(&MINIMAL.replace("2024-01-02T03:04:05Z", "2024-01-02T04:04:05+01:00")).unwrap();
    let b = one(MINIMAL).unwrap();
    assert_eq!(a.key(), b.key());
}

proptest::proptest! {
    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = parse_json(&bytes, "t");
    }

    #[test]
    fn never_panics_on_mutated_detection(cut in 0usize..400, byte in proptest::prelude::any::<u8>()) {
        let mut b = MINIMAL.as_bytes().to_vec();
        let i = cut % b.len();
        b[i] = byte;
        let _ = parse_json(&b, "t");
    }
}

#[test]
fn wrong_shaped_nested_fields_warn_at_their_path() {
    let d = one(
        r#"{"id": 12, "detection_type": "X", "category": "c", "src_ip": "10.0.0.1",
        "src_host": "not an object", "summary": [1],
        "last_timestamp": "2024-01-02T03:04:05Z",
        "grouped_details": [
          "oops",
          {"sessions": {"dst_ip": "1.1.1.1"}},
          {"sessions": ["s", {"dst_ip": "2.2.2.2", "dst_port": 53, "protocol": "udp"}], "dst_ips": 7}]}"#,
    )
    .unwrap();
    assert_eq!(d.flows.len(), 1);
    assert_eq!(d.flows[0].remote_ip, ip("2.2.2.2"));
    let w = d.warnings.join("\n");
    for needle in [
        "src_host: expected an object, got a string",
        "summary: expected an object, got an array",
        "grouped_details[0]: expected an object, got a string",
        "grouped_details[1].sessions: expected an array, got an object",
        "grouped_details[2].sessions[0]: expected an object, got a string; session ignored",
    ] {
        assert!(w.contains(needle), "{needle} in\n{w}");
    }
}

#[test]
fn sentinel_groups_stored_as_json_text() {
    let groups = r#"[{"sessions": [{"dst_ip": "5.6.7.8", "dst_port": 443, "protocol": "tcp", "first_timestamp": "2023-06-23T00:00:00Z", "last_timestamp": "2023-06-23T01:00:00Z"}]}]"#;
    let doc = serde_json::json!({"id": 13, "detection_type": "X", "category": "c", "src_ip": "10.0.0.1",
        "last_timestamp": "2023-07-04T00:00:00Z", "grouped_details": groups});
    let d = parse_detection(&doc, "t").unwrap();
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    assert_eq!(d.flows[0].remote_ip, ip("5.6.7.8"));
    assert_eq!(d.window.start, ts("2023-06-23T00:00:00Z"));
}

#[test]
fn duplicate_key_keeps_the_last_value() {
    let dup = MINIMAL.replace(r#""id": 7,"#, r#""id": 7, "id": 8,"#);
    let page = format!(r#"{{"results": [{MINIMAL}, {dup}]}}"#);
    let parsed = parse_json(page.as_bytes(), "t").unwrap();
    assert_eq!(parsed[0].detection.as_ref().unwrap().source_id, "7");
    assert_eq!(parsed[1].detection.as_ref().unwrap().source_id, "8");
}

#[test]
fn not_utf8_is_malformed() {
    let e = parse_json(b"[{\"id\": \"\xff\"}]", "t").unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");
}
