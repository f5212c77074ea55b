#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Capture, Counter, Mock, Reply, SECRET};
use culprit_mde::MdeClient;
use serde_json::json;

const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.token-body.sig";

#[tokio::test]
async fn secrets_stay_out_of_logs_debug_and_errors() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    // Current-thread runtime: the mock server and the client log on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let n = Arc::new(Counter::default());
    let n2 = n.clone();
    let mock = Mock::start(move |r: &common::Req| {
        if r.is_token() {
            return Reply::token(TOKEN, 3599);
        }
        match n2.next() {
            1 => Reply::json(200, json!({"schema": [], "results": []})),
            2 => Reply::raw(401, "text/plain", b""),
            _ => Reply::json(
                403,
                json!({"error": {"code": "Forbidden", "message": "no"}}),
            ),
        }
    })
    .await;
    let mut cfg = mock.config();
    cfg.danger_accept_invalid_certs = true;
    let client = MdeClient::new(cfg.clone()).unwrap();
    client.hunt("T", None).await.unwrap();
    let err = client.hunt("T", None).await.unwrap_err();

    // A rejected secret.
    let bad = Mock::start(|_: &common::Req| {
        Reply::json(401, json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}))
    })
    .await;
    let err2 = MdeClient::new(bad.config())
        .unwrap()
        .hunt("T", None)
        .await
        .unwrap_err();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("certificate verification is OFF"),
        "the opt-out warns at start"
    );
    assert!(
        logs.contains("requesting an access token"),
        "logs were captured: {logs}"
    );
    for text in [
        logs.as_str(),
        &format!("{cfg:?}"),
        &format!("{client:?}"),
        &format!("{err:?} {err}"),
        &format!("{err2:?} {err2}"),
    ] {
        assert!(!text.contains(SECRET), "client secret leaked: {text}");
        assert!(!text.contains(TOKEN), "access token leaked: {text}");
        assert!(!text.contains("token-body"), "access token leaked: {text}");
    }
    // The secret did go where it belongs.
    assert_eq!(mock.token_requests()[0].form()["client_secret"], SECRET);
}

#[test]
fn access_token_debug_is_redacted() {
    let t = culprit_mde::token::parse_token(
        format!(r#"{{"access_token":"{TOKEN}","expires_in":60}}"#).as_bytes(),
        culprit_model::Timestamp(0),
    )
    .unwrap();
    assert!(!format!("{t:?}").contains("token-body"));
    assert_eq!(t.expires_at, culprit_model::Timestamp(600_000_000));
    assert_eq!(
        t.refresh_at,
        culprit_model::Timestamp(300_000_000),
        "short tokens refresh at half-life"
    );
}
