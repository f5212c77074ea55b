use std::net::IpAddr;

use culprit_model::detection::Protocol;
use culprit_model::{Detection, Timestamp};

use super::*;

fn data(rel: &str) -> Vec<u8> {
    let p = format!("{}/tests/data/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn one(line: &str) -> Result<Detection, IngestError> {
    parse_line(line.as_bytes(), "t")
}

#[test]
fn lsass_01_alerts_all_parse_oriented_on_the_client() {
    let parsed = parse_lines(&data("scenarios/lsass_01/suricata_eve.jsonl"), "t1");
    assert_eq!(parsed.len(), 9);
    let dets: Vec<Detection> = parsed.into_iter().map(|p| p.detection.unwrap()).collect();
    for d in &dets {
        assert_eq!(d.host.ip, Some(ip("192.168.1.41")), "{}", d.source_id);
        assert_eq!(d.direction, Direction::Outbound);
        assert_eq!(d.flows[0].remote_ip, ip("10.0.5.13"));
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }
    // Line 4 is a `to_client` alert whose packet tuple is server → client.
    let d = &dets[3];
    assert_eq!(d.key().as_str(), "suricata:t1:1495913386878807:0");
    assert_eq!(
        d.detection_type,
        "ET POLICY PE EXE or DLL Windows file download HTTP"
    );
    assert_eq!(d.category, "Potential Corporate Privacy Violation");
    assert_eq!(d.severity, Some(100));
    let f = &d.flows[0];
    assert_eq!((f.remote_port, f.protocol), (Some(80), Protocol::Tcp));
    let s = &f.sessions[0];
    assert_eq!(s.local_port, Some(51126));
    assert_eq!(s.bytes_received, Some(7745));
    assert_eq!(s.bytes_sent, Some(0));
    assert_eq!(
        s.community_id.as_deref(),
        Some("1:DmwrqHjc0U2ZGWWnKIayT3jPpZc=")
    );
    assert_eq!(s.first, ts("2023-08-16T04:54:08.280095Z"));
    assert_eq!(s.last, ts("2023-08-16T04:54:08.308191Z"));
    assert_eq!(d.window, Window::new(s.first, s.last));
}

#[test]
fn every_scenario_eve_file_parses() {
    let cases = [
        ("empire_regsvr32", 10, "172.18.39.5"),
        ("empire_regsvr32_no_destinations", 0, ""),
        ("lsass_01_capped", 9, "192.168.1.41"),
        ("lsass_01_skew", 9, "192.168.1.41"),
        ("lsass_02", 6, "192.168.1.43"),
        ("lsass_02_mapped_swapped", 6, "192.168.1.43"),
        ("lsass_03", 7, "192.168.1.42"),
        ("lsass_03_dhcp", 7, "192.168.1.42"),
    ];
    for (scenario, n, host) in cases {
        let parsed = parse_lines(
            &data(&format!("scenarios/{scenario}/suricata_eve.jsonl")),
            "t",
        );
        assert_eq!(parsed.len(), n, "{scenario}");
        for p in parsed {
            let d = p.detection.unwrap();
            assert_eq!(d.host.ip, Some(ip(host)), "{scenario} line {}", p.raw_index);
        }
    }
}

#[test]
fn computed_community_id_matches_the_sensors() {
    // Every scenario line carries Suricata's own community_id: recomputing it from the
    // packet tuple must give the same value.
    for scenario in ["lsass_01", "lsass_03", "empire_regsvr32"] {
        let raw = data(&format!("scenarios/{scenario}/suricata_eve.jsonl"));
        for (i, line) in raw
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let mut v: Value = serde_json::from_slice(line).unwrap();
            let expected = v["community_id"].as_str().unwrap().to_owned();
            v.as_object_mut().unwrap().remove("community_id");
            let d = parse_record(&v, "t").unwrap();
            assert_eq!(
                d.flows[0].sessions[0].community_id.as_deref(),
                Some(expected.as_str()),
                "{scenario} {i}"
            );
        }
    }
}

const SWAPPED_NO_FLOW: &str = r#"{"timestamp":"2023-08-16T06:54:08.308191+0200","flow_id":7,"event_type":"alert",
  "src_ip":"10.0.5.13","src_port":80,"dest_ip":"192.168.1.41","dest_port":51126,"proto":"TCP","direction":"to_client",
  "alert":{"signature":"S","signature_id":1,"severity":2}}"#;

#[test]
fn direction_flips_the_packet_tuple_without_flow_object() {
    let d = one(SWAPPED_NO_FLOW).unwrap();
    assert_eq!(d.host.ip, Some(ip("192.168.1.41")));
    assert_eq!(d.flows[0].remote_ip, ip("10.0.5.13"));
    assert_eq!(d.flows[0].remote_port, Some(80));
    assert_eq!(d.flows[0].sessions[0].local_port, Some(51126));
    assert_eq!(d.window.start, ts("2023-08-16T04:54:08.308191Z"));
    assert_eq!(d.severity, Some(50));
}

#[test]
fn negative_offset_and_expanded_ipv6_and_mapped() {
    let d = one(
        r#"{"timestamp":"2023-08-16T00:54:08.5-0400","flow_id":"8","event_type":"alert",
        "src_ip":"fe80:0000:0000:0000:fada:0cff:fedc:87f1","src_port":5000,
        "dest_ip":"2001:0db8:0000:0000:0000:0000:0000:0001","dest_port":443,"proto":"TCP",
        "alert":{"signature":"S","signature_id":1,"severity":1}}"#,
    )
    .unwrap();
    assert_eq!(d.window.start, ts("2023-08-16T04:54:08.5Z"));
    assert_eq!(d.host.ip, Some(ip("fe80::fada:cff:fedc:87f1")));
    assert_eq!(d.flows[0].remote_ip, ip("2001:db8::1"));
    let m = one(r#"{"timestamp":"2023-08-16T00:54:08Z","flow_id":9,"event_type":"alert","src_ip":"::ffff:192.168.1.5",
        "src_port":5,"dest_ip":"::ffff:8.8.8.8","dest_port":53,"proto":"UDP","alert":{"signature":"S"}}"#)
    .unwrap();
    assert_eq!(m.host.ip, Some(ip("192.168.1.5")));
    assert_eq!(m.flows[0].remote_ip, ip("8.8.8.8"));
    assert_eq!(m.flows[0].protocol, Protocol::Udp);
}

#[test]
fn inbound_attack_on_a_server_is_inbound() {
    // External initiator, internal responder: the host is our server.
    let d = one(r#"{"timestamp":"2023-08-16T00:54:08Z","flow_id":10,"event_type":"alert","src_ip":"203.0.113.9",
        "src_port":40000,"dest_ip":"10.1.1.10","dest_port":443,"proto":"TCP","direction":"to_server",
        "alert":{"signature":"ET EXPLOIT x","signature_id":1,"severity":1},
        "flow":{"bytes_toserver":100,"bytes_toclient":7,"start":"2023-08-16T00:54:00Z"}}"#)
    .unwrap();
    assert_eq!(d.direction, Direction::Inbound);
    assert_eq!(d.host.ip, Some(ip("10.1.1.10")));
    let s = &d.flows[0].sessions[0];
    assert_eq!(
        (d.flows[0].remote_port, s.local_port),
        (Some(40000), Some(443))
    );
    assert_eq!((s.bytes_sent, s.bytes_received), (Some(7), Some(100)));
    assert_eq!(d.window.start, ts("2023-08-16T00:54:00Z"));
    // `alert.target` names our side explicitly.
    let t = one(r#"{"timestamp":"2023-08-16T00:54:08Z","flow_id":11,"event_type":"alert","src_ip":"10.0.0.5",
        "src_port":40000,"dest_ip":"10.1.1.10","dest_port":445,"proto":"TCP",
        "alert":{"signature":"x","target":{"ip":"10.1.1.10","port":445},"source":{"ip":"10.0.0.5"}}}"#)
    .unwrap();
    assert_eq!(t.direction, Direction::Inbound);
    assert_eq!(t.host.ip, Some(ip("10.1.1.10")));
}

#[test]
fn non_alerts_are_skipped_with_a_reason_and_bad_lines_named() {
    let input = format!(
        "{}\n{{\"event_type\":\"flow\",\"src_ip\":\"1.2.3.4\"}}\n\nnot json\n{{\"event_type\":\"alert\",\"timestamp\":\"2023-08-16T00:54:08Z\",\"src_ip\":\"1.2.3.4\",\"alert\":{{\"signature\":\"x\"}}}}\n",
        SWAPPED_NO_FLOW.replace('\n', "")
    );
    let parsed = parse_lines(input.as_bytes(), "t");
    assert_eq!(parsed.len(), 4);
    assert!(parsed[0].detection.is_ok());
    let e = parsed[1].detection.as_ref().unwrap_err();
    assert!(e.is_skip());
    assert_eq!(
        e.to_string(),
        "line 2: event_type: skipped: event_type \"flow\" is not an alert"
    );
    let e = parsed[2].detection.as_ref().unwrap_err();
    assert_eq!(parsed[2].raw_index, 3);
    assert!(
        matches!(e, IngestError::Malformed { .. }) && e.path() == "line 4",
        "{e}"
    );
    let e = parsed[3].detection.as_ref().unwrap_err();
    assert_eq!(e.to_string(), "line 5: dest_ip: required field is missing");
}

#[test]
fn bad_optional_fields_warn_and_missing_flow_id_hashes() {
    let line = r#"{"timestamp":"2023-08-16T00:54:08Z","event_type":"alert","src_ip":"10.0.0.1",
        "src_port":"x","dest_ip":"1.1.1.1","dest_port":"443","proto":"TCP","alert":{"signature":"x","severity":0},
        "flow":{"bytes_toserver":-1,"start":"later"}}"#;
    let d = one(line).unwrap();
    let a = one(line).unwrap();
    assert_eq!(d.source_id, a.source_id);
    assert!(
        d.source_id.starts_with('h') && d.source_id.len() == 17,
        "{}",
        d.source_id
    );
    assert_eq!(d.flows[0].remote_port, Some(443));
    assert_eq!(d.severity, None);
    let w = d.warnings.join("\n");
    for needle in [
        "src_port:",
        "alert.severity:",
        "flow.bytes_toserver:",
        "flow.start:",
    ] {
        assert!(w.contains(needle), "{needle} in {w}");
    }
}

proptest::proptest! {
    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = parse_lines(&bytes, "t");
    }

    #[test]
    fn never_panics_on_mutated_record(cut in 0usize..400, byte in proptest::prelude::any::<u8>()) {
        let mut b = SWAPPED_NO_FLOW.replace('\n', "").into_bytes();
        let i = cut % b.len();
        b[i] = byte;
        let _ = parse_lines(&b, "t");
    }
}
