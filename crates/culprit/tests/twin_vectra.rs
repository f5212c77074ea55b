#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `culprit twin serve --vectra-listen`: the Vectra API stand-in on its own listener, reached
//! over HTTP with the client credentials the command prints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "twin-vectra-test-secret";

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
fn http(addr: &str, request: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    // Bodies may come chunked; the JSON lies between the first '{' and the last '}'.
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    (status, serde_json::from_str(json).unwrap())
}

#[test]
fn twin_serve_runs_the_vectra_api_on_its_own_listener() {
    let scenario =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/lsass_01");
    let mut child = Command::new(env!("CARGO_BIN_EXE_culprit"))
        .args(["twin", "serve", "--listen", "127.0.0.1:0"])
        .args([
            "--vectra-listen",
            "127.0.0.1:0",
            "--secret",
            SECRET,
            "--data",
        ])
        .arg(&scenario)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut vectra = None;
    let mut client_id = None;
    while Instant::now() < deadline && (vectra.is_none() || client_id.is_none()) {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("vectra API serving on http://") {
            vectra = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
        if vectra.is_some()
            && let Some(rest) = line.trim().strip_prefix("client_id")
        {
            client_id = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
    }
    let (Some(addr), Some(client_id)) = (vectra, client_id) else {
        let _ = child.kill();
        panic!("twin serve did not print the Vectra address and client id");
    };

    // Client credentials in the form (the stand-in takes HTTP Basic too).
    let body =
        format!("grant_type=client_credentials&client_id={client_id}&client_secret={SECRET}");
    let (status, token) = http(
        &addr,
        &format!(
            "POST /oauth2/token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 200, "{token}");
    let access = token["access_token"].as_str().unwrap();
    let (status, page) = http(
        &addr,
        &format!(
            "GET /api/v3.3/detections?page_size=2 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {access}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["count"], 3);
    assert!(
        page["next"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{addr}/"))
    );
    let (status, events) = http(
        &addr,
        &format!(
            "GET /api/v3.5/events/detections?from=0&limit=10 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Token {SECRET}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["events"].as_array().unwrap().len(), 3);
    assert_eq!(events["next_checkpoint"], 4);
    child.kill().unwrap();
    child.wait().unwrap();
}
