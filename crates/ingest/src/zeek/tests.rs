use std::net::IpAddr;

use culprit_model::Timestamp;
use culprit_model::detection::Protocol;

use super::*;

fn data(rel: &str) -> Vec<u8> {
    let p = format!("{}/tests/data/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ts(s: &str) -> Timestamp {
    crate::time::parse_time(s).unwrap()
}

fn conns(bytes: &[u8]) -> Vec<ConnRecord> {
    parse_conn(bytes)
        .into_iter()
        .map(|(_, r)| r.unwrap())
        .collect()
}

#[test]
fn scenario_tsv_conn_logs_parse_every_row() {
    for (scenario, rows) in [("lsass_01", 112), ("lsass_02", 119)] {
        let c = conns(&data(&format!("scenarios/{scenario}/zeek/conn.log")));
        assert_eq!(c.len(), rows, "{scenario}");
        assert!(c.iter().all(|r| r.warnings.is_empty()), "{scenario}");
    }
    let c = conns(&data("scenarios/lsass_01/zeek/conn.log"));
    let r = c.iter().find(|r| r.uid == "CEHN6M1NNgYDO4umP5").unwrap();
    assert_eq!(
        (r.orig_h, r.orig_p, r.resp_h, r.resp_p),
        (ip("192.168.1.41"), Some(51131), ip("10.0.5.13"), Some(8080))
    );
    assert_eq!(r.protocol, Protocol::Tcp);
    assert_eq!(r.ts, ts("1692161686.132915"));
    assert_eq!(r.end, ts("1692161885.944057"));
    assert_eq!((r.orig_bytes, r.resp_bytes), (Some(0), Some(504_788)));
    assert!(r.service.is_empty());
    // Suricata's community_id for the same connection (lsass_01 EVE, flow 774987124641882).
    assert_eq!(
        r.community_id.as_deref(),
        Some("1:AIIE3EmIQb022rUiwUIJkcQsL6E=")
    );
}

#[test]
fn apt29_json_conn_with_underscored_keys() {
    let c = conns(&data("zeek-json/scranton-conn.log"));
    assert_eq!(c.len(), 134);
    let r = &c[0];
    assert_eq!(r.uid, "Cw1Hz43UWS4qXFei8f");
    assert_eq!(
        (r.orig_h, r.orig_p, r.resp_h, r.resp_p),
        (ip("10.0.1.4"), Some(64842), ip("10.0.0.4"), Some(53))
    );
    assert_eq!(r.protocol, Protocol::Udp);
    assert_eq!(r.service, ["dns"]);
    assert_eq!(r.ts, ts("1588205198.89971"));
    assert_eq!(r.end, ts("1588205198.9012880"));
    assert_eq!((r.orig_bytes, r.resp_bytes), (Some(39), Some(55)));
}

#[test]
fn apt29_json_notices_are_detections() {
    let n = parse_notice(&data("zeek-json/nashua-notice.log"), "t");
    assert_eq!(n.len(), 1);
    let d = n[0].detection.as_ref().unwrap();
    assert_eq!(d.key().as_str(), "zeek:t:CpnezL3085IfcJzSAe:0");
    assert_eq!(d.detection_type, "SSL::Invalid_Server_Cert");
    assert_eq!(d.category, "ssl");
    assert_eq!(d.host.ip, Some(ip("10.0.1.6")));
    assert_eq!(d.direction, Direction::Outbound);
    let f = &d.flows[0];
    assert_eq!(
        (f.remote_ip, f.remote_port, f.protocol),
        (ip("192.168.0.4"), Some(8443), Protocol::Tcp)
    );
    assert_eq!(f.sessions[0].local_port, Some(57091));
    assert!(
        f.sessions[0]
            .community_id
            .as_deref()
            .unwrap()
            .starts_with("1:")
    );
    assert_eq!(d.window.start, ts("1588207244.740518"));
    assert!(
        d.summary
            .as_deref()
            .unwrap()
            .starts_with("SSL certificate validation failed")
    );
    let s = parse_notice(&data("zeek-json/scranton-notice.log"), "t");
    assert_eq!(
        s[0].detection.as_ref().unwrap().host.ip,
        Some(ip("10.0.1.4"))
    );
}

#[test]
fn masked_sample_timestamps_are_named_errors() {
    // The btest baselines mask `ts` as XXXXXXXXXX.XXXXXX.
    let c = parse_conn(&data("samples/zeek/zeek-btest/conn.log"));
    assert_eq!(c.len(), 1);
    let e = c[0].1.as_ref().unwrap_err();
    assert!(e.to_string().starts_with("line 10: ts: "), "{e}");
    let n = parse_notice(&data("samples/zeek/zeek-community-id/notice.log"), "t");
    assert_eq!(n.len(), 2);
    for (i, p) in n.iter().enumerate() {
        let e = p.detection.as_ref().unwrap_err().to_string();
        assert!(e.starts_with(&format!("line {}: ts: ", 10 + i)), "{e}");
    }
}

#[test]
fn sample_notice_with_a_real_clock() {
    let raw = String::from_utf8(data("samples/zeek/zeek-community-id/notice.log")).unwrap();
    let fixed = raw.replace("XXXXXXXXXX.XXXXXX", "1692161643.549491");
    let n = parse_notice(fixed.as_bytes(), "t");
    // The first row is a notice without a connection: no host, so it is rejected by name.
    let e = n[0].detection.as_ref().unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 10: id.orig_h (or src): required field is missing"
    );
    let d = n[1].detection.as_ref().unwrap();
    assert_eq!(d.source_id, "CHhAvVGS1DHFjwGM9");
    assert_eq!(d.host.ip, Some(ip("128.232.110.120")));
    let s = &d.flows[0].sessions[0];
    assert_eq!(
        s.community_id.as_deref(),
        Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg=")
    );
    // Recomputed when the column is unset: the same value.
    let unset = fixed.replace("\t1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "\t-");
    let n = parse_notice(unset.as_bytes(), "t");
    let d2 = n[1].detection.as_ref().unwrap();
    assert_eq!(d2.flows[0].sessions[0].community_id, s.community_id);
}

const HEADER: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n\
#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\ttunnel_parents\tnote\n\
#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tset[string]\tstring\n";

#[test]
fn tsv_edges_empty_unset_escapes_and_mapped() {
    let input = format!(
        "{HEADER}1692161643.5\tC1\t::ffff:192.168.1.41\t55213\t10.0.5.13\t80\ttcp\t(empty)\t-\tlots\t-\t(empty)\tx\\x2dy\n\
         1692161643.5\tC2\t192.168.1.41\t55213\n"
    );
    let c = parse_conn(input.as_bytes());
    let r = c[0].1.as_ref().unwrap();
    assert_eq!(r.orig_h, ip("192.168.1.41"));
    assert!(r.service.is_empty());
    assert_eq!(r.end, r.ts);
    assert_eq!(r.orig_bytes, None);
    assert_eq!(
        r.warnings,
        ["line 8: orig_bytes: expected a non-negative integer, got \"lots\""]
    );
    let e = c[1].1.as_ref().unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 9: malformed input: 4 columns, the #fields header has 13"
    );
    let rec = records(input.as_bytes());
    let row = rec[0].1.as_ref().unwrap();
    assert_eq!(row["note"], "x-y");
    assert_eq!(row["tunnel_parents"], serde_json::json!([]));
    assert!(row.get("duration").is_none());
}

#[test]
fn json_nested_and_dotted_keys_and_iso_ts() {
    let input = br#"{"ts":"2021-06-09T20:55:13.160328Z","uid":"C9","id":{"orig_h":"10.0.0.1","orig_p":5,"resp_h":"8.8.8.8","resp_p":53},"proto":"udp","duration":"0.5"}
{"ts":1623272113.160328,"uid":"C10","id.orig_h":"10.0.0.1","id.orig_p":"5","id.resp_h":"8.8.8.8","id.resp_p":53,"proto":"udp"}"#;
    let c = conns(input);
    assert_eq!(c[0].orig_h, ip("10.0.0.1"));
    assert_eq!(c[0].ts, c[1].ts);
    assert_eq!(c[0].end, ts("2021-06-09T20:55:13.660328Z"));
    assert_eq!(c[1].orig_p, Some(5));
}

#[test]
fn inbound_notice_and_conn_as_detection_and_enrichment() {
    let input = format!(
        "{HEADER}1692161643.5\tC1\t203.0.113.7\t4444\t10.1.1.10\t3389\ttcp\t-\t-\t-\t-\t-\tScan::Port_Scan\n"
    );
    let d = parse_notice(input.as_bytes(), "t")
        .remove(0)
        .detection
        .unwrap();
    assert_eq!(d.direction, Direction::Inbound);
    assert_eq!(d.host.ip, Some(ip("10.1.1.10")));
    assert_eq!(d.flows[0].remote_ip, ip("203.0.113.7"));
    assert_eq!(d.flows[0].sessions[0].local_port, Some(3389));

    let c = conns(&data("scenarios/lsass_01/zeek/conn.log"));
    let r = c
        .iter()
        .find(|r| r.uid == "CEHN6M1NNgYDO4umP5")
        .unwrap()
        .clone();
    let det = r.clone().into_detection("t", "intel hit");
    assert_eq!(det.key().as_str(), "zeek:t:CEHN6M1NNgYDO4umP5:0");
    assert_eq!(det.window, Window::new(r.ts, r.end));

    // A Suricata alert for the same connection gains the conn row's end time.
    let eve = data("scenarios/lsass_01/suricata_eve.jsonl");
    let mut alert = crate::suricata::parse_lines(&eve, "t")
        .into_iter()
        .map(|p| p.detection.unwrap())
        .find(|d| d.source_id == "774987124641882")
        .unwrap();
    // The same tuple a day later is not this connection.
    let mut later = r.clone();
    later.ts = Timestamp(r.ts.0 + 86_400 * 10_000_000);
    later.end = Timestamp(r.end.0 + 86_400 * 10_000_000);
    assert_eq!(enrich(&mut alert.clone(), &[later]), 0);
    assert_eq!(enrich(&mut alert, &c), 1);
    assert_eq!(alert.flows[0].sessions[0].last, r.end);
    assert_eq!(alert.window.end, r.end);
}

proptest::proptest! {
    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = parse_notice(&bytes, "t");
        let _ = parse_conn(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_tsv(cut in 0usize..2000, byte in proptest::prelude::any::<u8>()) {
        let mut b = format!("{HEADER}1692161643.5\tC1\t192.168.1.41\t55213\t10.0.5.13\t80\ttcp\t(empty)\t1.5\t1\t2\t(empty)\tN::x\n").into_bytes();
        let i = cut % b.len();
        b[i] = byte;
        let _ = parse_notice(&b, "t");
        let _ = parse_conn(&b);
    }
}
