#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{CLIENT, Counter, ManualClock, Mock, Reply, SECRET, TENANT, with_tokens};
use culprit_mde::{HuntingApi, MdeClient, MdeError, TokenForm};
use serde_json::json;
use tokio::sync::Semaphore;

fn empty_hunt() -> Reply {
    Reply::json(200, json!({"schema": [], "results": []}))
}

#[tokio::test]
async fn v2_token_request_carries_the_scope_form() {
    let mock = Mock::start(with_tokens(|_| empty_hunt())).await;
    mock.client().hunt("T", None).await.unwrap();
    let toks = mock.token_requests();
    assert_eq!(toks.len(), 1);
    let t = &toks[0];
    assert_eq!(
        (t.method.as_str(), t.path()),
        ("POST", "/contoso-tenant/oauth2/v2.0/token")
    );
    assert_eq!(
        t.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form = t.form();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], CLIENT);
    assert_eq!(form["client_secret"], SECRET);
    assert_eq!(form["scope"], "https://graph.microsoft.com/.default");
    assert!(!form.contains_key("resource"));
}

#[tokio::test]
async fn v1_token_request_uses_resource_and_accepts_string_numbers() {
    let mock = Mock::start(|r: &common::Req| {
        if r.is_token() {
            Reply::json(
                200,
                json!({"token_type": "Bearer", "expires_in": "3599", "ext_expires_in": "3599",
                "expires_on": "1700000000", "not_before": "1699996400",
                "resource": "https://api.securitycenter.microsoft.com", "access_token": "v1tok"}),
            )
        } else {
            empty_hunt()
        }
    })
    .await;
    let mut cfg = mock.config();
    cfg.token_form = TokenForm::V1Resource;
    cfg.hunting_api = HuntingApi::Mde;
    MdeClient::new(cfg).unwrap().hunt("T", None).await.unwrap();
    let t = &mock.token_requests()[0];
    assert_eq!(t.path(), "/contoso-tenant/oauth2/token");
    let form = t.form();
    assert_eq!(form["resource"], "https://api.securitycenter.microsoft.com");
    assert!(!form.contains_key("scope"));
    assert_eq!(
        mock.api_requests()[0].header("authorization"),
        Some("Bearer v1tok")
    );
}

fn oauth_error(status: u16, error: &str, aadsts: i64, text: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": error,
               "error_description": format!("AADSTS{aadsts}: {text}\r\nTrace ID: 0000\r\nCorrelation ID: 1111\r\nTimestamp: 2026-01-01 00:00:00Z"),
               "error_codes": [aadsts], "timestamp": "2026-01-01 00:00:00Z",
               "trace_id": "0000", "correlation_id": "1111"}),
    )
}

async fn token_error(reply: fn() -> Reply) -> MdeError {
    let mock =
        Mock::start(move |r: &common::Req| if r.is_token() { reply() } else { empty_hunt() }).await;
    let err = mock.client().hunt("T", None).await.unwrap_err();
    assert!(
        mock.api_requests().is_empty(),
        "no API call without a token"
    );
    err
}

#[tokio::test]
async fn token_errors_say_what_to_fix() {
    let err = token_error(|| {
        oauth_error(
            401,
            "invalid_client",
            7_000_215,
            "Invalid client secret provided.",
        )
    })
    .await;
    assert_eq!(err.kind(), "invalid_client");
    let text = err.to_string();
    assert!(
        text.contains("AADSTS7000215") && text.contains("client secret"),
        "{text}"
    );
    assert!(!text.contains("Trace ID"), "one line: {text}");

    let err = token_error(|| {
        oauth_error(
            400,
            "invalid_client",
            7_000_222,
            "The provided client secret keys are expired.",
        )
    })
    .await;
    assert_eq!(err.kind(), "invalid_client");

    let err = token_error(|| {
        oauth_error(
            400,
            "unauthorized_client",
            700_016,
            "Application with identifier 'x' was not found in the directory 'y'.",
        )
    })
    .await;
    assert!(
        matches!(err, MdeError::UnauthorizedClient { .. }),
        "{err:?}"
    );

    let err = token_error(|| {
        oauth_error(
            400,
            "invalid_request",
            90_002,
            "Tenant 'contoso-tenant' not found.",
        )
    })
    .await;
    match &err {
        MdeError::UnknownTenant { tenant, .. } => assert_eq!(tenant, TENANT),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("cloud setting"));

    let err = token_error(|| {
        oauth_error(400, "invalid_resource", 500_011, "The resource principal named https://api.securitycenter.microsoft.com was not found in the tenant.")
    })
    .await;
    assert!(
        matches!(&err, MdeError::TokenRejected { error, .. } if error == "invalid_resource"),
        "{err:?}"
    );

    let err = token_error(|| Reply::raw(503, "text/html", b"<html>down</html>")).await;
    assert!(
        matches!(err, MdeError::Service { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());

    let err =
        token_error(|| Reply::raw(200, "application/json", br#"{"token_type":"Bearer"}"#)).await;
    assert!(matches!(err, MdeError::Decode { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_callers_cause_one_token_request() {
    // The token answer waits at a gate until every caller has been started, so without
    // single flight many callers would be fetching at once.
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let mock = Mock::start_async(move |r| {
        let g = g.clone();
        Box::pin(async move {
            if r.is_token() {
                let _permit = g.acquire().await;
                Reply::token("shared", 3599)
            } else {
                empty_hunt()
            }
        })
    })
    .await;
    let client = mock.client();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.hunt(&format!("T | take {i}"), None).await
        }));
    }
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1000);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(mock.token_requests().len(), 1);
    let api = mock.api_requests();
    assert_eq!(api.len(), 100);
    assert!(
        api.iter()
            .all(|r| r.header("authorization") == Some("Bearer shared"))
    );
}

#[tokio::test]
async fn tokens_are_per_audience_and_refreshed_before_expiry() {
    let clock = ManualClock::new();
    let mock = Mock::start(with_tokens(|r| {
        if r.path().starts_with("/api/machines") {
            Reply::json(200, json!({"value": []}))
        } else {
            empty_hunt()
        }
    }))
    .await;
    let client = MdeClient::with_clock(mock.config(), clock.clone()).unwrap();

    client.hunt("T", None).await.unwrap();
    client.machines_by_dns_name("pc1").await.unwrap();
    let scopes: Vec<_> = mock
        .token_requests()
        .iter()
        .map(|r| r.form()["scope"].clone())
        .collect();
    assert_eq!(
        scopes,
        [
            "https://graph.microsoft.com/.default",
            "https://api.securitycenter.microsoft.com/.default"
        ],
        "one token per audience"
    );

    clock.advance_secs(3400);
    client.hunt("T", None).await.unwrap();
    assert_eq!(
        mock.token_requests().len(),
        2,
        "still fresh at 3400 s of 3599"
    );

    clock.advance_secs(100); // 3500 s: within the two-minute margin
    client.hunt("T", None).await.unwrap();
    assert_eq!(mock.token_requests().len(), 3, "refreshed before expiry");
    let last = mock
        .api_requests()
        .last()
        .unwrap()
        .header("authorization")
        .unwrap()
        .to_owned();
    assert_eq!(last, "Bearer tok-3");
}

#[tokio::test]
async fn a_failed_early_refresh_keeps_the_valid_token() {
    let clock = ManualClock::new();
    let n = Arc::new(Counter::default());
    let n2 = n.clone();
    let mock = Mock::start(move |r: &common::Req| {
        if !r.is_token() {
            empty_hunt()
        } else if n2.next() == 1 {
            Reply::token("first", 3599)
        } else {
            Reply::raw(503, "text/plain", b"busy")
        }
    })
    .await;
    let client = MdeClient::with_clock(mock.config(), clock.clone()).unwrap();
    client.hunt("T", None).await.unwrap();
    clock.advance_secs(3500);
    client.hunt("T", None).await.unwrap();
    assert_eq!(n.get(), 2, "a refresh was attempted");
    assert_eq!(
        mock.api_requests()[1].header("authorization"),
        Some("Bearer first")
    );
    clock.advance_secs(200); // past expiry: the refresh failure now surfaces
    let err = client.hunt("T", None).await.unwrap_err();
    assert!(
        matches!(err, MdeError::Service { status: 503, .. }),
        "{err:?}"
    );
}

#[test]
fn configuration_is_validated() {
    let base = || {
        culprit_mde::ClientConfig::new(
            culprit_mde::Cloud::Commercial,
            TENANT,
            CLIENT,
            secrecy::SecretString::from(SECRET),
        )
    };
    assert!(MdeClient::new(base()).is_ok());
    let mut c = base();
    c.tenant_id = "../evil".into();
    assert!(matches!(
        MdeClient::new(c).unwrap_err(),
        MdeError::InvalidInput {
            field: "tenant_id",
            ..
        }
    ));
    let mut c = base();
    c.client_secret = secrecy::SecretString::from("");
    assert!(matches!(
        MdeClient::new(c).unwrap_err(),
        MdeError::InvalidConfig {
            field: "client_secret",
            ..
        }
    ));
    let mut c = base();
    c.proxy = Some("socks5://user:pw@proxy:1080".into());
    let err = MdeClient::new(c).unwrap_err();
    assert!(
        !err.to_string().contains("pw"),
        "proxy credentials never echoed: {err}"
    );
    let mut c = base();
    c.proxy = Some("http://proxy.example:3128".into());
    assert!(MdeClient::new(c).is_ok());
}

#[tokio::test]
async fn the_configured_proxy_carries_the_calls() {
    // The proxy is the mock: it sees a CONNECT for the login host and hangs up.
    let proxy = Mock::start(|_: &common::Req| Reply::Close).await;
    let mut cfg = culprit_mde::ClientConfig::new(
        culprit_mde::Cloud::GccHigh,
        TENANT,
        CLIENT,
        secrecy::SecretString::from(SECRET),
    );
    cfg.proxy = Some(proxy.url.to_string());
    let err = MdeClient::new(cfg)
        .unwrap()
        .hunt("T", None)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("CONNECT", "login.microsoftonline.us:443")
    );
    assert!(
        seen[0].body.is_empty(),
        "the secret goes inside the tunnel only"
    );
}

#[tokio::test]
async fn granted_roles_come_from_the_token_claims() {
    use base64::Engine;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    let jwt = format!(
        "{}.{}.c2ln",
        b64(json!({"typ": "JWT", "alg": "RS256"})),
        b64(
            json!({"aud": "https://api.securitycenter.microsoft.com", "roles": ["Machine.Read.All", "AdvancedQuery.Read.All"]})
        )
    );
    let mock = Mock::start(move |r: &common::Req| {
        let scope = r.form().get("scope").cloned().unwrap_or_default();
        if scope.starts_with("https://graph") {
            Reply::token("opaque-not-a-jwt", 3599)
        } else {
            Reply::token(&jwt, 3599)
        }
    })
    .await;
    let client = mock.client();
    assert_eq!(
        client
            .granted_roles(culprit_mde::Audience::Mde)
            .await
            .unwrap(),
        Some(vec![
            "Machine.Read.All".to_owned(),
            "AdvancedQuery.Read.All".to_owned()
        ])
    );
    assert_eq!(
        client
            .granted_roles(culprit_mde::Audience::Graph)
            .await
            .unwrap(),
        None
    );
    assert!(mock.api_requests().is_empty(), "no API call needed");
}
