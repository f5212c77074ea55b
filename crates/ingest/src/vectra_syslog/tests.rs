use std::net::IpAddr;

use culprit_model::detection::Protocol;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ms(n: i64) -> Timestamp {
    parse_epoch_millis(n).unwrap()
}

/// The Sentinel sample (`AIVectraDetect.csv`) is Vectra CEF as Sentinel stored it; rebuild each
/// row's CEF message with Vectra's template (ndr-formats.md §1.7) and a RFC 3164 header.
fn sentinel_rows() -> Vec<(std::collections::HashMap<String, String>, String)> {
    let p = format!(
        "{}/tests/data/samples/vectra/AIVectraDetect.csv",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(p).unwrap();
    let mut lines = raw.split("\r\n").filter(|l| !l.is_empty());
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            let row: std::collections::HashMap<String, String> = head
                .iter()
                .zip(l.split(','))
                .map(|(k, v)| ((*k).to_owned(), v.to_owned()))
                .collect();
            let mut ext = Vec::new();
            for (key, col) in [
                ("externalId", "ExternalID"),
                ("shost", "SourceHostName"),
                ("src", "SourceIP"),
                ("dst", "DestinationIP"),
                ("dhost", "DestinationHostName"),
                ("cs4", "DeviceCustomString4"),
            ] {
                if !row[col].is_empty() {
                    ext.push(format!("{key}={}", row[col]));
                }
            }
            ext.push(format!(
                "flexNumber1Label=threat flexNumber1={}",
                row["FlexNumber1"]
            ));
            ext.push(format!(
                "flexNumber2Label=certainty flexNumber2={}",
                row["FlexNumber2"]
            ));
            ext.push("cs4Label=Vectra Event URL".to_owned());
            ext.extend(
                row["AdditionalExtensions"]
                    .split(';')
                    .filter(|kv| kv.contains('='))
                    .map(str::to_owned),
            );
            let msg = format!(
                "<13>May 14 05:46:11 brain1 CEF:0|{}|X Series|{}|{}|{}|{}|{}",
                row["DeviceVendor"],
                row["DeviceVersion"],
                row["DeviceEventClassID"],
                row["Activity"],
                row["LogSeverity"],
                ext.join(" ")
            );
            (row, msg)
        })
        .collect()
}

#[test]
fn sentinel_sample_every_row() {
    let rows = sentinel_rows();
    assert_eq!(rows.len(), 57);
    let mut detections = 0;
    for (row, msg) in &rows {
        let class = row["DeviceEventClassID"].as_str();
        let r = parse_message(msg.as_bytes(), "t");
        if ["hsc", "asc", "campaigns", "audit", "health", "lockdown"].contains(&class) {
            assert!(r.as_ref().unwrap_err().is_skip(), "{class}");
            continue;
        }
        if class == "TEST" {
            // An empty test row: no id and no time.
            assert!(matches!(r, Err(IngestError::Missing { .. })), "{r:?}");
            continue;
        }
        let d = r.unwrap_or_else(|e| panic!("{class}: {e}"));
        detections += 1;
        assert_eq!(d.source_id, row["ExternalID"], "{class}");
        assert_eq!(d.detection_type, row["Activity"]);
        assert_eq!(d.host.ip, parse_ip_opt(&row["SourceIP"]), "{class}");
        let multi = row["DestinationIP"] == "0.0.0.0";
        assert_eq!(d.needs_target_list, multi, "{class}");
        assert_eq!(d.flows.len(), usize::from(!multi), "{class}");
        if !multi {
            assert_eq!(d.flows[0].remote_ip, ip(&row["DestinationIP"]));
        }
        assert!(d.warnings.is_empty(), "{class}: {:?}", d.warnings);
    }
    assert_eq!(detections, 50);
}

fn parse_ip_opt(s: &str) -> Option<IpAddr> {
    (!s.is_empty()).then(|| ip(s))
}

#[test]
fn sentinel_reverse_rat_and_account_rows_in_detail() {
    let rows = sentinel_rows();
    let find = |class: &str| {
        parse_message(
            rows.iter()
                .find(|(r, _)| r["DeviceEventClassID"] == class)
                .unwrap()
                .1
                .as_bytes(),
            "t1",
        )
        .unwrap()
    };
    let d = find("reverse_rat");
    assert_eq!(d.key().as_str(), "vectra:t1:44317:2020-05-14T05:43:33Z");
    assert_eq!(d.category, "command_and_control");
    assert_eq!(d.host.ip, Some(ip("10.13.150.52")));
    assert_eq!(d.host.name.as_deref(), Some("d8:c4:6a:57:07:85"));
    assert_eq!(
        d.window,
        Window::new(ms(1_585_843_645_000), ms(1_589_435_013_000))
    );
    let f = &d.flows[0];
    assert_eq!(f.remote_ip, ip("10.20.5.52"));
    assert_eq!(
        f.domain.as_deref(),
        Some("ec2-100-20-5-52.us-west-2.compute.amazonaws.com")
    );
    assert_eq!(d.summary.as_deref(), Some("reverse_rat"));
    let a = find("papi_rogue_admin");
    assert_eq!(a.subject, Subject::Account);
    assert!(a.needs_target_list);
    assert_eq!(
        (a.threat, a.certainty, a.severity),
        (Some(75), Some(95), Some(70))
    );
    let p = find("port_scan");
    assert_eq!(p.severity, Some(60));
    assert_eq!(p.flows[0].remote_ip, ip("10.168.60.61"));
}

const CEF: &str = r"CEF:0|Vectra Networks|X Series|5.7|hidden_https_tunnel_cnc|Hidden HTTPS \| Tunnel|7|externalId=52 cat=COMMAND & CONTROL dvc=10.0.0.2 shost=ws\=1 src=::ffff:10.100.199.10 flexNumber1Label=threat flexNumber1=95 flexNumber2Label=certainty flexNumber2=80 cs4Label=Vectra Event URL cs4=https://b/detections/52?detail_id\=194 dst=172.217.23.129 dhost=fra16s18-in-f1.1e100.net proto=tcp dpt=443 out=1200 in=3400 start=1589430827000 end=1589433101000";

#[test]
fn cef_escapes_and_flow() {
    let d = parse_cef(CEF, "t").unwrap();
    assert_eq!(d.detection_type, "Hidden HTTPS | Tunnel");
    assert_eq!(d.host.name.as_deref(), Some("ws=1"));
    assert_eq!(d.host.ip, Some(ip("10.100.199.10")));
    let f = &d.flows[0];
    assert_eq!((f.remote_port, f.protocol), (Some(443), Protocol::Tcp));
    assert_eq!(
        (f.sessions[0].bytes_sent, f.sessions[0].bytes_received),
        (Some(1200), Some(3400))
    );
    let ext = cef_extension(CEF.split_once("|7|").unwrap().1);
    assert_eq!(ext["cs4"], "https://b/detections/52?detail_id=194");
    assert_eq!(ext["cat"], "COMMAND & CONTROL");
    assert_eq!(ext["cs4Label"], "Vectra Event URL");
}

#[test]
fn headers_rfc5424_rfc3164_and_bare_agree() {
    let bare = parse_message(CEF.as_bytes(), "t").unwrap();
    let h3164 = format!("<13>May 14 05:46:11 brain1 {CEF}");
    let h5424 = format!(
        "<134>1 2020-05-14T05:46:11.003Z brain1 vectra_cef - - [meta x=\"a\\]b c\"][o k=\"v\"] \u{feff}{CEF}"
    );
    let nil_sd = format!("<134>1 2020-05-14T05:46:11Z brain1 vectra_cef 42 det - {CEF}");
    for m in [&h3164, &h5424, &nil_sd] {
        assert_eq!(parse_message(m.as_bytes(), "t").unwrap(), bare, "{m}");
    }
    let (h, body) = split_header(h5424.as_bytes());
    assert_eq!((h.pri, h.version), (Some(134), Some(1)));
    assert_eq!(h.hostname.as_deref(), Some("brain1"));
    assert_eq!(h.app_name.as_deref(), Some("vectra_cef"));
    assert!(body.starts_with(b"CEF:0|"));
    let padded = format!("<13>Jan  6 05:46:11 brain1 vectra_cef: {CEF}");
    let (h, body) = split_header(padded.as_bytes());
    assert_eq!(h.timestamp.as_deref(), Some("Jan 6 05:46:11"));
    assert_eq!(h.hostname.as_deref(), Some("brain1"));
    assert_eq!(h.app_name.as_deref(), Some("vectra_cef"));
    assert!(body.starts_with(b"CEF:0|"));
    let (h, _) = split_header(h3164.as_bytes());
    assert_eq!(h.timestamp.as_deref(), Some("May 14 05:46:11"));
    assert_eq!(h.hostname.as_deref(), Some("brain1"));
}

#[test]
fn json_syslog_number_or_string_and_multi_target() {
    let msg = r#"<13>Jan 16 11:51:35 brain1 vectra_json_v2 -: {"d_type_vname":"Port Scan","d_type":"port_scan","dvchost":"b","host_ip":"10.168.30.189","host_name":"Cabot-desktop","detection_id":"33","category":"RECONNAISSANCE","severity":6,"certainty":"80","threat":60,"triaged":false,"vectra_timestamp":"1589425650","dd_dst_ip":"10.168.60.61","dd_dst_port":"0","dd_proto":"tcp","dd_bytes_sent":"10","dd_bytes_rcvd":0}"#;
    let d = parse_message(msg.as_bytes(), "t").unwrap();
    assert_eq!(d.key().as_str(), "vectra:t:33:2020-05-14T03:07:30Z");
    assert_eq!((d.threat, d.certainty), (Some(60), Some(80)));
    assert_eq!(d.flows[0].remote_port, None);
    assert_eq!(d.flows[0].sessions[0].bytes_sent, Some(10));
    assert_eq!(d.category, "reconnaissance");
    let multi = msg.replace("10.168.60.61", "0.0.0.0");
    let m = parse_message(multi.as_bytes(), "t").unwrap();
    assert!(m.needs_target_list);
    assert!(m.flows.is_empty());
}

#[test]
fn errors_name_fields_and_bad_optionals_warn() {
    let no_id = CEF.replace("externalId=52 ", "");
    assert_eq!(
        parse_cef(&no_id, "t").unwrap_err().to_string(),
        "externalId: required field is missing"
    );
    let no_time = CEF.replace(" start=1589430827000 end=1589433101000", "");
    assert_eq!(
        parse_cef(&no_time, "t").unwrap_err().to_string(),
        "end (or start): required field is missing"
    );
    let no_host = CEF.replace(" shost=ws\\=1 src=::ffff:10.100.199.10", "");
    assert_eq!(
        parse_cef(&no_host, "t").unwrap_err().to_string(),
        "src (or shost): required field is missing"
    );
    let bad = CEF
        .replace("dpt=443", "dpt=https")
        .replace("flexNumber1=95", "flexNumber1=high");
    let d = parse_cef(&bad, "t").unwrap();
    assert_eq!(d.flows[0].remote_port, None);
    assert_eq!(d.threat, None);
    assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
    for key in ["flexNumber1: ", "dpt: "] {
        assert!(
            d.warnings.iter().any(|w| w.starts_with(key)),
            "{key} {:?}",
            d.warnings
        );
    }
    let e = parse_message(b"<13>May 14 05:46:11 brain1 hello", "t").unwrap_err();
    assert!(matches!(e, IngestError::Malformed { .. }), "{e}");
    let lines = parse_lines(format!("{CEF}\n\nnot cef\n").as_bytes(), "t");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1].detection.as_ref().unwrap_err().path(), "line 3");
}

#[test]
fn octet_counting_and_lf_framing() {
    let a = b"<13>May 14 05:46:11 h CEF:0|a|b|c|d|e|1|x=1";
    let mut buf = format!("{} ", a.len()).into_bytes();
    buf.extend_from_slice(a);
    buf.extend_from_slice(b"5 hello");
    buf.extend_from_slice(b"plain line\r\nrest");
    let (n1, m1) = next_frame(&buf).unwrap().unwrap();
    assert_eq!(m1, a);
    let (n2, m2) = next_frame(&buf[n1..]).unwrap().unwrap();
    assert_eq!(m2, b"hello");
    let (n3, m3) = next_frame(&buf[n1 + n2..]).unwrap().unwrap();
    assert_eq!(m3, b"plain line");
    assert_eq!(next_frame(&buf[n1 + n2 + n3..]).unwrap(), None);
    // Incomplete octet-counted frame: wait for more bytes.
    assert_eq!(next_frame(b"10 abc").unwrap(), None);
    assert_eq!(next_frame(b"12").unwrap(), None);
    assert!(next_frame(b"99999999 x").is_err());
    assert!(next_frame(b"12x45678 ").is_err());
}

proptest::proptest! {
    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = parse_message(&bytes, "t");
        let _ = next_frame(&bytes);
        let _ = split_header(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_cef(cut in 0usize..600, byte in proptest::prelude::any::<u8>()) {
        let mut b = format!("<134>1 2020-05-14T05:46:11Z brain1 app - - [m k=\"v\"] {CEF}").into_bytes();
        let i = cut % b.len();
        b[i] = byte;
        let _ = parse_message(&b, "t");
    }
}
