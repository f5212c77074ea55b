//! Shared set-up for the twin's HTTP tests: a twin on 127.0.0.1:0 over the bundled lsass_01
//! scenario, with a manual clock so quota windows and lifecycles move only when told.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use culprit_mde_twin::{ClientConfig, ManualClock, TenantConfig, Twin, TwinConfig, TwinHandle};
use culprit_model::{Duration, Timestamp};
use secrecy::SecretString;
use serde_json::Value;

pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const APP: &str = "app-all-roles";
pub const SECRET: &str = "s3cret-value";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
pub const MDE_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";
pub const MDE_RESOURCE: &str = "https://api.securitycenter.microsoft.com";
pub const DEVICE_ID: &str = "e28267a8375c8cc082a43a690e5d49796e73a79e";
pub const DEVICE_NAME: &str = "mkt01.pandalab.com";
pub const DEVICE_IP: &str = "192.168.1.41";

/// The bundled scenario (examples/scenarios/lsass_01), so the tests need nothing outside the repo.
pub fn scenario() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/lsass_01")
}

/// Five minutes after the scenario's newest row (2023-08-16T05:00:16.472Z).
pub fn start_time() -> Timestamp {
    Timestamp::parse("2023-08-16T05:05:16Z").unwrap()
}

pub fn config() -> TwinConfig {
    TwinConfig::single_tenant(TENANT, APP, SECRET, vec![scenario()])
}

/// Adds an app with only `roles` to the first tenant.
pub fn with_client(mut config: TwinConfig, id: &str, roles: &[&str]) -> TwinConfig {
    config.tenants[0].clients.push(ClientConfig {
        client_id: id.to_owned(),
        client_secret: SecretString::from(SECRET.to_owned()),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    });
    config
}

pub fn tenant(id: &str, dirs: Vec<PathBuf>) -> TenantConfig {
    TenantConfig {
        tenant_id: id.to_owned(),
        clients: vec![ClientConfig {
            client_id: APP.to_owned(),
            client_secret: SecretString::from(SECRET.to_owned()),
            roles: culprit_mde_twin::config::all_roles(),
        }],
        data_dirs: dirs,
    }
}

pub struct Env {
    pub twin: TwinHandle,
    /// None when the twin runs on the clock its config describes.
    pub clock: Option<Arc<ManualClock>>,
    pub http: reqwest::Client,
}

impl Env {
    /// A twin on a manual clock that starts at [`start_time`].
    pub async fn start(config: TwinConfig) -> Env {
        let clock = Arc::new(ManualClock::new(start_time()));
        Self::launch(config, Some(clock)).await
    }

    /// A twin on the scaled clock of `config.clock`.
    pub async fn start_scaled(config: TwinConfig) -> Env {
        Self::launch(config, None).await
    }

    async fn launch(config: TwinConfig, clock: Option<Arc<ManualClock>>) -> Env {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let injected = clock
            .clone()
            .map(|c| c as Arc<dyn culprit_mde_twin::TwinClock>);
        let twin = Twin::start_with_clock(config, listener, injected)
            .await
            .unwrap();
        Env {
            twin,
            clock,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.twin.base_url(), path)
    }

    pub fn advance(&self, secs: i64) {
        let clock = self.clock.as_ref().expect("a manual clock");
        clock.advance(Duration::from_seconds(secs));
    }

    /// A v2 client-credentials request; the raw response.
    pub async fn token_response(
        &self,
        tenant: &str,
        client: &str,
        secret: &str,
        scope: &str,
    ) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/{tenant}/oauth2/v2.0/token")))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("client_secret", secret),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap()
    }

    pub async fn token_for(&self, client: &str, scope: &str) -> String {
        let resp = self.token_response(TENANT, client, SECRET, scope).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn graph_token(&self) -> String {
        self.token_for(APP, GRAPH_SCOPE).await
    }

    pub async fn mde_token(&self) -> String {
        self.token_for(APP, MDE_SCOPE).await
    }

    /// POSTs a JSON body with a bearer token; status, Retry-After and the JSON body.
    pub async fn post_json(&self, path: &str, token: &str, body: Value) -> Reply {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        Reply::read(resp).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        Reply::read(resp).await
    }

    pub async fn graph_hunt(&self, token: &str, query: &str) -> Reply {
        self.post_json(
            "/v1.0/security/runHuntingQuery",
            token,
            serde_json::json!({ "Query": query }),
        )
        .await
    }

    pub async fn mde_hunt(&self, token: &str, query: &str) -> Reply {
        self.post_json(
            "/api/advancedqueries/run",
            token,
            serde_json::json!({ "Query": query }),
        )
        .await
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `error.code` of an API error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}
