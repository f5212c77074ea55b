#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Vectra API stand-in over real HTTP: tokens, paging, the event stream, faults and the
//! error bodies.

use std::path::PathBuf;
use std::sync::Arc;

use culprit_mde_twin::{ManualClock, VectraTwin, VectraTwinConfig, VectraTwinHandle};
use culprit_model::{Duration, Timestamp};
use reqwest::StatusCode;
use serde_json::Value;

const ID: &str = "vectra-client";
const SECRET: &str = "vectra-secret-value";
const API_TOKEN: &str = "v2-api-token-value";

fn scenario() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/lsass_01")
}

fn scenario_ids() -> Vec<u64> {
    let text = std::fs::read(scenario().join("ndr/vectra_detections.json")).unwrap();
    let doc: Value = serde_json::from_slice(&text).unwrap();
    let mut ids: Vec<u64> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

async fn start(config: VectraTwinConfig) -> (VectraTwinHandle, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(
        1_700_000_000,
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let twin = VectraTwin::start(config, listener, Some(clock.clone()))
        .await
        .unwrap();
    (twin, clock)
}

fn config() -> VectraTwinConfig {
    VectraTwinConfig::single_client(ID, SECRET, API_TOKEN, vec![scenario()])
}

async fn token(http: &reqwest::Client, base: &str) -> Value {
    let r = http
        .post(format!("{base}/oauth2/token"))
        .basic_auth(ID, Some(SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn get(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = http
        .get(url)
        .header("Authorization", auth)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap())
}

#[tokio::test]
async fn token_endpoint_takes_basic_or_form_credentials_and_refuses_others() {
    let (twin, _) = start(VectraTwinConfig {
        token_lifetime_secs: 600,
        ..config()
    })
    .await;
    let base = twin.base_url();
    let http = reqwest::Client::new();

    let t = token(&http, &base).await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 600);
    assert_eq!(t["refresh_expires_in"], 86_400);
    assert!(t["access_token"].as_str().unwrap().len() >= 32);
    assert!(t["refresh_token"].is_string());

    let form = http
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", ID),
            ("client_secret", SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);

    let wrong = http
        .post(format!("{base}/oauth2/token"))
        .basic_auth(ID, Some("not-the-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");

    let grant = http
        .post(format!("{base}/oauth2/token"))
        .basic_auth(ID, Some(SECRET))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), StatusCode::BAD_REQUEST);
    let body: Value = grant.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");

    // A refresh token works once.
    let refresh = t["refresh_token"].as_str().unwrap();
    for expected in [StatusCode::OK, StatusCode::BAD_REQUEST] {
        let r = http
            .post(format!("{base}/oauth2/token"))
            .basic_auth(ID, Some(SECRET))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
        if expected == StatusCode::BAD_REQUEST {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "invalid_grant");
        }
    }
    let c = twin.counts();
    assert_eq!(
        (c.tokens_issued, c.tokens_refreshed, c.token_refusals),
        (2, 1, 3)
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn api_calls_need_a_live_token_and_say_why_not() {
    let (twin, clock) = start(VectraTwinConfig {
        token_lifetime_secs: 600,
        ..config()
    })
    .await;
    let base = twin.base_url();
    let http = reqwest::Client::new();
    let url = format!("{base}/api/v3.3/detections");

    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["detail"],
        "Authentication credentials were not provided."
    );

    let (s, _, body) = get(&http, &url, "Bearer forged").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "Invalid token.");

    let t = token(&http, &base).await;
    let bearer = format!("Bearer {}", t["access_token"].as_str().unwrap());
    let (s, _, _) = get(&http, &url, &bearer).await;
    assert_eq!(s, StatusCode::OK);

    clock.advance(Duration::from_seconds(601));
    let (s, _, body) = get(&http, &url, &bearer).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "Token has expired.");

    // v2: the static token, on any API version.
    let (s, _, body) = get(
        &http,
        &format!("{base}/api/v2.5/detections"),
        &format!("Token {API_TOKEN}"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["count"], 3);
    let (s, _, _) = get(&http, &url, "Token wrong").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Revocation: a live token stops working.
    let t = token(&http, &base).await;
    let bearer = format!("Bearer {}", t["access_token"].as_str().unwrap());
    twin.revoke_access_tokens();
    let (s, _, body) = get(&http, &url, &bearer).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "Invalid token.");
    assert_eq!(twin.counts().unauthorized, 5);
    twin.shutdown().await;
}

#[tokio::test]
async fn detections_page_with_absolute_next_links_until_every_one_is_served() {
    let (twin, _) = start(config()).await;
    let base = twin.base_url();
    let http = reqwest::Client::new();
    let auth = format!("Token {API_TOKEN}");

    let mut url = format!("{base}/api/v3.3/detections?page_size=2");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (s, _, page) = get(&http, &url, &auth).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert_eq!(page["count"], 3);
        pages += 1;
        if pages == 1 {
            assert!(page["previous"].is_null());
        } else {
            assert!(page["previous"].as_str().unwrap().contains("page=1"));
        }
        for d in page["results"].as_array().unwrap() {
            seen.push(d["id"].as_u64().unwrap());
            assert!(d["grouped_details"].is_array(), "whole detection objects");
        }
        match page["next"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&base), "absolute next: {next}");
                assert!(next.contains("page_size=2"), "keeps the query: {next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, scenario_ids());

    let (s, _, body) = get(&http, &format!("{base}/api/v3.3/detections?page=9"), &auth).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Invalid page.");
    let (s, _, body) = get(
        &http,
        &format!("{base}/api/v3.3/detections?page_size=0"),
        &auth,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("page_size"));

    // Incremental: ordering and a lower bound on last_timestamp.
    let (s, _, page) = get(
        &http,
        &format!("{base}/api/v3.3/detections?ordering=last_timestamp&last_timestamp_gte=2023-08-16T04:59:23Z"),
        &auth,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["count"], 1);
    assert_eq!(page["results"][0]["id"], 2568);

    let (s, _, d) = get(&http, &format!("{base}/api/v3.3/detections/2569"), &auth).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["id"], 2569);
    let (s, _, body) = get(&http, &format!("{base}/api/v3.3/detections/1"), &auth).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Not found.");
    twin.shutdown().await;
}

#[tokio::test]
async fn the_event_stream_resumes_from_any_checkpoint() {
    let (twin, _) = start(config()).await;
    let base = twin.base_url();
    let http = reqwest::Client::new();
    let auth = format!("Token {API_TOKEN}");
    assert_eq!(twin.event_count(), 3);

    let url =
        |from: u64| format!("{base}/api/v3.5/events/detections?from={from}&limit=2&ordering=id");
    let (s, _, first) = get(&http, &url(0), &auth).await;
    assert_eq!(s, StatusCode::OK);
    let events = first["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(first["remaining_count"], 1);
    let next = first["next_checkpoint"].as_u64().unwrap();
    assert_eq!(next, 3);
    // Events name their detection and carry the Sentinel table's fields.
    assert_eq!(events[0]["change_type"], "created");
    assert_eq!(events[0]["entity_type"], "host");
    assert!(events[0]["detection_id"].is_u64());
    assert!(events[0]["event_timestamp"].is_string());

    let (_, _, rest) = get(&http, &url(next), &auth).await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 1);
    assert_eq!(rest["remaining_count"], 0);
    assert_eq!(rest["next_checkpoint"], 4);

    let mut ids: Vec<u64> = events
        .iter()
        .chain(rest["events"].as_array().unwrap())
        .map(|e| e["detection_id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, scenario_ids());

    let (_, _, empty) = get(&http, &url(4), &auth).await;
    assert_eq!(empty["events"].as_array().unwrap().len(), 0);
    assert_eq!(empty["next_checkpoint"], 4);

    let (s, _, body) = get(
        &http,
        &format!("{base}/api/v3.5/events/detections?from=abc"),
        &auth,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("from"));
    twin.shutdown().await;
}

#[tokio::test]
async fn faults_come_on_schedule_with_retry_after() {
    let (twin, _) = start(VectraTwinConfig {
        throttle_every: 2,
        retry_after_secs: 7,
        error_every: 3,
        ..config()
    })
    .await;
    let base = twin.base_url();
    let http = reqwest::Client::new();
    let auth = format!("Token {API_TOKEN}");
    let url = format!("{base}/api/v3.3/detections");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (s, headers, body) = get(&http, &url, &auth).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(headers["retry-after"], "7");
            assert_eq!(
                body["detail"],
                "Request was throttled. Expected available in 7 seconds."
            );
        }
        if s == StatusCode::SERVICE_UNAVAILABLE {
            assert!(body["detail"].is_string());
        }
        statuses.push(s.as_u16());
    }
    // Call 6 is a multiple of both: the throttle wins.
    assert_eq!(statuses, [200, 429, 503, 429, 200, 429]);
    let c = twin.counts();
    assert_eq!((c.api_calls, c.throttled, c.server_errors), (6, 3, 1));
    twin.shutdown().await;
}

#[tokio::test]
async fn bad_settings_and_data_are_refused_by_name() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = VectraTwin::start(
        VectraTwinConfig {
            token_lifetime_secs: 0,
            ..config()
        },
        listener,
        None,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("token_lifetime_secs"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ndr")).unwrap();
    std::fs::write(
        dir.path().join("ndr/vectra_detections.json"),
        r#"[{"id":"x"}]"#,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = VectraTwin::start(
        VectraTwinConfig::single_client(ID, SECRET, API_TOKEN, vec![dir.path().to_path_buf()]),
        listener,
        None,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("vectra_detections.json") && text.contains("numeric id"),
        "{text}"
    );
}
