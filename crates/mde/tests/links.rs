#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;

use base64::Engine;
use culprit_mde::links::{self, TimeRangeId};
use culprit_model::Timestamp;
use url::Url;

fn portal() -> Url {
    Url::parse("https://security.microsoft.us").unwrap()
}

#[test]
fn hunting_link_round_trips_and_has_the_portal_shape() {
    let queries = [
        "DeviceFileEvents | where FileName contains \"password\" | take 10",
        "DeviceNetworkEvents\r\n| where RemoteIP in (\"10.0.0.1\", \"::ffff:10.0.0.1\")\n| project Timestamp, InitiatingProcessFileName",
        "print 'üñíçødé €  😀 & ?=#%+'",
        "",
    ];
    for q in queries {
        let url = links::advanced_hunting(&portal(), q, TimeRangeId::Week).unwrap();
        assert_eq!(url.host_str(), Some("security.microsoft.us"));
        assert_eq!(url.path(), "/v2/advanced-hunting");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[1], ("timeRangeId".to_owned(), "week".to_owned()));
        let enc = &pairs[0].1;
        assert!(
            enc.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "base64url, no padding: {enc}"
        );
        assert!(enc.starts_with("H4sI"), "a gzip stream");
        assert_eq!(links::decode(enc).unwrap(), q);

        // Independently: base64url → gunzip → UTF-16LE is the query.
        let gz = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(enc)
            .unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .unwrap();
        let expect: Vec<u8> = q.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(raw, expect);
    }
}

#[test]
fn decode_accepts_the_padded_standard_alphabet_too() {
    let q = "DeviceInfo | where DeviceName startswith \"ws-\" | take 100 // ???>>>";
    let enc = links::encode(q).unwrap();
    let gz = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&enc)
        .unwrap();
    let standard = base64::engine::general_purpose::STANDARD.encode(gz);
    assert_eq!(links::decode(&standard).unwrap(), q);
    assert!(links::decode("not base64 !!").is_err());
    assert!(links::decode("AAAA").is_err(), "not gzip");
}

#[test]
fn device_links() {
    let p = Url::parse("https://security.microsoft.com/").unwrap();
    let id = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";
    assert_eq!(
        links::device_page(&p, id).unwrap().as_str(),
        "https://security.microsoft.com/machines/1e5bc9d7e413ddd7902c2932e418702b84d0cc07"
    );
    let from = Timestamp::parse("2019-10-30T08:40:52.123456Z").unwrap();
    let to = Timestamp::parse("2019-10-30T08:40:54Z").unwrap();
    assert_eq!(
        links::device_timeline(&p, id, from, to).unwrap().as_str(),
        "https://security.microsoft.com/machines/1e5bc9d7e413ddd7902c2932e418702b84d0cc07/timeline?from=2019-10-30T08%3A40%3A52.123Z&to=2019-10-30T08%3A40%3A54.000Z"
    );
    // An id cannot add path segments or a query.
    let odd = links::device_page(&p, "../x?y").unwrap();
    assert_eq!(odd.path(), "/machines/..%2Fx%3Fy");
    assert_eq!(odd.query(), None);
}
