//! The twin never panics and always answers in the service's shapes: a seeded stream of
//! malformed bodies, content types, queries and paths against every endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

/// A small deterministic generator (xorshift), so a failure repeats.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() & 0xff) as u8).collect()
    }
}

const BODIES: &[&str] = &[
    "",
    "{",
    "null",
    "[]",
    "{\"Query\": null}",
    "{\"Query\": \"\"}",
    "{\"Query\": \"DeviceInfo | where\"}",
    "{\"Query\": \"DeviceInfo | summarize by\"}",
    "{\"Query\": \"datatable(a:int)[1] | take 1\"}",
    "{\"Query\": \"DeviceInfo | take 99999999999999999999\"}",
    "{\"Query\": \"let x = ; x\"}",
    "{\"Query\": \"DeviceProcessEvents | where FileName =~ \\\"a\\\\\\\"\\\" | project-away *\"}",
    "{\"Query\": \"DeviceNetworkEvents | mv-expand parse_json(AdditionalFields) | take 3\"}",
    "{\"Query\": \"DeviceNetworkEvents\", \"Timespan\": \"P99999999999999Y\"}",
    "{\"Query\": \"DeviceNetworkEvents\", \"Timespan\": \"/\"}",
    "{\"Comment\": 5}",
    "{\"Comment\": \"x\", \"IsolationType\": []}",
    "{\"Query\": \"\\u0000\\uffff\"}",
];

const PATHS: &[&str] = &[
    "/v1.0/security/runHuntingQuery",
    "/api/advancedqueries/run",
    "/api/machines/e28267a8375c8cc082a43a690e5d49796e73a79e/isolate",
    "/api/machines/e28267a8375c8cc082a43a690e5d49796e73a79e/unisolate",
    "/api/machines/findbyip(ip='',timestamp=)",
    "/api/machines/findbyip(",
    "/api/machines?$filter=(((",
    "/api/machines?$filter=startswith(computerDnsName)",
    "/api/machines?$top=abc&$skip=99999999999999999999999",
    "/api/machineactions?$filter=status eq 'Pending' or",
    "/api/machines/%00%ff",
];

const TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "",
];

#[tokio::test]
async fn malformed_input_gets_json_errors_and_never_a_crash() {
    let mut cfg = config();
    // The clock moves 32 s a request; tokens must outlive the run.
    cfg.token_lifetime_secs = 86_400;
    let env = Env::start(cfg).await;
    let mde = env.mde_token().await;
    let graph = env.graph_token().await;
    let mut g = Gen(0x5eed_1234_abcd_ef01);
    for i in 0..150 {
        // Keep the quota out of the way: this test is about shapes, not throttling.
        env.advance(2);
        let path = g.pick(PATHS);
        let body: Vec<u8> = if g.next().is_multiple_of(5) {
            let n = (g.next() % 64) as usize;
            g.bytes(n)
        } else {
            g.pick(BODIES).as_bytes().to_vec()
        };
        let ctype = g.pick(TYPES);
        let token = if path.starts_with("/v1.0") {
            &graph
        } else {
            &mde
        };
        let mut req = if path.contains('?') || path.contains("findbyip") || path.ends_with("%ff") {
            env.http.get(env.url(path))
        } else {
            env.http.post(env.url(path)).body(body.clone())
        };
        if !ctype.is_empty() {
            req = req.header("content-type", ctype);
        }
        let resp = req.bearer_auth(token).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("#{i} {path} {ctype}: not JSON ({e}): {text}"));
        assert!(status < 500, "#{i} {path} {body:?}: {status} {text}");
        assert_ne!(status, 401, "#{i}: the token must stay valid: {text}");
        if status >= 400 {
            assert!(parsed["error"]["code"].is_string(), "#{i} {path}: {text}");
        }
        // Isolations stay pending; let them finish so later ones are not all refused.
        env.advance(30);
    }
    // Still serving.
    assert_eq!(env.get("/api/machines", &mde).await.status, 200);
    let token_garbage = env
        .http
        .post(env.url(&format!("/{TENANT}/oauth2/v2.0/token")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0xffu8, 0x00, b'=', b'&', b'%'])
        .send()
        .await
        .unwrap();
    assert_eq!(token_garbage.status(), 400);
    let body: Value = token_garbage.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}
