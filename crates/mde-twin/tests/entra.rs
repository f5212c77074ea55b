//! Entra ID on the twin: client-credential tokens (v1 and v2), each documented error body,
//! the OpenID configuration, and the token checks every API call makes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

/// Checks the shape of an Entra error body (mde-api.md §1.4) and returns it.
fn assert_aad_error(status: u16, body: &Value, want_status: u16, error: &str, code: u64) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"][0], code, "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: "), "{description}");
    assert!(
        description.contains("\r\nCorrelation ID: "),
        "{description}"
    );
    // "YYYY-MM-DD HH:MM:SSZ" on the twin clock.
    assert_eq!(body["timestamp"], "2023-08-16 05:05:16Z");
    assert!(body["trace_id"].as_str().unwrap().len() == 36);
    assert!(body["correlation_id"].as_str().unwrap().len() == 36);
}

async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn v2_issues_bearer_tokens_for_graph_and_mde() {
    let env = Env::start(config()).await;
    for scope in [GRAPH_SCOPE, MDE_SCOPE] {
        let (status, body) = json(env.token_response(TENANT, APP, SECRET, scope).await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(token.split('.').count(), 3, "JWT-shaped");
    }
    assert_eq!(env.twin.call_counts(TENANT).tokens_issued, 2);
    env.twin.shutdown().await;
}

#[tokio::test]
async fn v1_takes_a_resource_and_writes_numbers_as_strings() {
    let env = Env::start(config()).await;
    let resp = env
        .http
        .post(env.url(&format!("/{TENANT}/oauth2/token")))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("resource", MDE_RESOURCE),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["resource"], MDE_RESOURCE);
    let now = start_time().unix_seconds();
    assert_eq!(body["expires_on"], (now + 3599).to_string());
    assert_eq!(body["not_before"], now.to_string());
    // The v1 token works on the MDE API.
    let token = body["access_token"].as_str().unwrap();
    let machines = env.get("/api/machines", token).await;
    assert_eq!(machines.status, 200, "{:?}", machines.body);
}

#[tokio::test]
async fn bad_secret_unknown_app_and_unknown_tenant_get_their_aadsts_errors() {
    let env = Env::start(config()).await;
    let (s, b) = json(env.token_response(TENANT, APP, "wrong", GRAPH_SCOPE).await).await;
    assert_aad_error(s, &b, 401, "invalid_client", 7000215);
    assert!(!b.to_string().contains(SECRET), "the secret never shows");

    let (s, b) = json(
        env.token_response(TENANT, "no-such-app", SECRET, GRAPH_SCOPE)
            .await,
    )
    .await;
    assert_aad_error(s, &b, 400, "unauthorized_client", 700016);
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("no-such-app")
    );

    let (s, b) = json(
        env.token_response("contoso.example", APP, SECRET, GRAPH_SCOPE)
            .await,
    )
    .await;
    assert_aad_error(s, &b, 400, "invalid_request", 90002);
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("contoso.example")
    );
}

#[tokio::test]
async fn bad_scopes_and_missing_fields_are_named() {
    let env = Env::start(config()).await;
    let (s, b) = json(
        env.token_response(TENANT, APP, SECRET, "https://graph.microsoft.com")
            .await,
    )
    .await;
    assert_aad_error(s, &b, 400, "invalid_scope", 1002012);

    let (s, b) = json(
        env.token_response(TENANT, APP, SECRET, "https://management.azure.com/.default")
            .await,
    )
    .await;
    assert_aad_error(s, &b, 400, "invalid_resource", 500011);

    let (s, b) = json(
        env.token_response(TENANT, APP, SECRET, &format!("{GRAPH_SCOPE} {MDE_SCOPE}"))
            .await,
    )
    .await;
    assert_aad_error(s, &b, 400, "invalid_scope", 70011);

    // No client_secret.
    let resp = env
        .http
        .post(env.url(&format!("/{TENANT}/oauth2/v2.0/token")))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("scope", GRAPH_SCOPE),
        ])
        .send()
        .await
        .unwrap();
    let (s, b) = json(resp).await;
    assert_aad_error(s, &b, 401, "invalid_client", 7000216);

    // A JSON body is not a form: the service sees no grant_type.
    let resp = env
        .http
        .post(env.url(&format!("/{TENANT}/oauth2/v2.0/token")))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    let (s, b) = json(resp).await;
    assert_aad_error(s, &b, 400, "invalid_request", 900144);
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("'grant_type'")
    );

    let resp = env
        .http
        .post(env.url(&format!("/{TENANT}/oauth2/v2.0/token")))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    let (s, b) = json(resp).await;
    assert_aad_error(s, &b, 400, "unsupported_grant_type", 70003);
}

#[tokio::test]
async fn http_basic_client_credentials_are_accepted() {
    let env = Env::start(config()).await;
    let resp = env
        .http
        .post(env.url(&format!("/{TENANT}/oauth2/v2.0/token")))
        .basic_auth(APP, Some(SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", GRAPH_SCOPE)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn openid_configuration_points_at_the_twin() {
    let env = Env::start(config()).await;
    let resp = env
        .http
        .get(env.url(&format!("/{TENANT}/v2.0/.well-known/openid-configuration")))
        .send()
        .await
        .unwrap();
    let (s, b) = json(resp).await;
    assert_eq!(s, 200);
    assert_eq!(
        b["token_endpoint"],
        env.url(&format!("/{TENANT}/oauth2/v2.0/token"))
    );
    assert_eq!(b["issuer"], env.url(&format!("/{TENANT}/v2.0")));

    let resp = env
        .http
        .get(env.url("/nobody.example/v2.0/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    let (s, b) = json(resp).await;
    assert_aad_error(s, &b, 400, "invalid_tenant", 90002);
}

#[tokio::test]
async fn tokens_expire_on_the_twin_clock() {
    let env = Env::start(config()).await;
    let token = env.mde_token().await;
    assert_eq!(env.get("/api/machines", &token).await.status, 200);
    env.advance(3598);
    assert_eq!(env.get("/api/machines", &token).await.status, 200);
    env.advance(1);
    let r = env.get("/api/machines", &token).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "Unauthorized");
    assert!(r.message().contains("Expired"), "{}", r.message());
    assert!(r.headers.contains_key("www-authenticate"));
    // A fresh token works again.
    let fresh = env.mde_token().await;
    assert_eq!(env.get("/api/machines", &fresh).await.status, 200);
}

#[tokio::test]
async fn a_token_for_the_wrong_audience_or_a_forged_one_is_refused() {
    let env = Env::start(config()).await;
    let graph = env.graph_token().await;
    let r = env.get("/api/machines", &graph).await;
    assert_eq!(r.status, 401);
    assert!(r.message().contains("audience"), "{}", r.message());

    let mde = env.mde_token().await;
    let r = env.graph_hunt(&mde, "DeviceInfo").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "InvalidAuthenticationToken");
    assert!(r.body["error"]["innerError"]["request-id"].is_string());

    let r = env.get("/api/machines", "not-a-token").await;
    assert_eq!(r.status, 401);
    let tampered = format!("{}x", &mde[..mde.len() - 1]);
    let r = env.get("/api/machines", &tampered).await;
    assert_eq!(r.status, 401);
    let resp = env.http.get(env.url("/api/machines")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn token_lifetime_is_configurable() {
    let mut cfg = config();
    cfg.token_lifetime_secs = 60;
    let env = Env::start(cfg).await;
    let (_, b) = json(env.token_response(TENANT, APP, SECRET, MDE_SCOPE).await).await;
    assert_eq!(b["expires_in"], 60);
    let token = b["access_token"].as_str().unwrap();
    env.advance(60);
    assert_eq!(env.get("/api/machines", token).await.status, 401);
}
