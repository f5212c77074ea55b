//! How to reach a tenant: cloud, endpoints, credentials and transport settings.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::cloud::{Cloud, Endpoints};

/// Which Advanced Hunting API to call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HuntingApi {
    /// Microsoft Graph `security/runHuntingQuery`: the supported API.
    #[default]
    Graph,
    /// MDE `api/advancedqueries/run`: being retired since January 2026; a fallback.
    Mde,
}

impl HuntingApi {
    pub fn as_str(self) -> &'static str {
        match self {
            HuntingApi::Graph => "graph",
            HuntingApi::Mde => "mde",
        }
    }
}

/// Which form of the Entra ID token request to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenForm {
    /// `oauth2/v2.0/token` with `scope=<audience>/.default`.
    #[default]
    V2Scope,
    /// Legacy `oauth2/token` with `resource=<audience>`, for setups that need it.
    V1Resource,
}

/// Everything the client needs for one tenant. `Debug` never shows the secret.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub cloud: Cloud,
    /// Overrides of the cloud's endpoints (the twin on `http://127.0.0.1:port`).
    pub endpoints: Option<Endpoints>,
    /// Tenant GUID or domain name.
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub hunting_api: HuntingApi,
    pub token_form: TokenForm,
    /// Per-call timeout for token, machine and action calls.
    pub timeout: Duration,
    /// Per-call timeout for hunting (a query may run for up to 200 s).
    pub hunt_timeout: Duration,
    /// PEM bundle of extra trusted CAs (a TLS-inspecting proxy's, the twin's), added to the
    /// built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Trust only `ca_file`, not the built-in roots.
    pub ca_only: bool,
    /// Turns certificate verification off. Logs a warning every time a client is built.
    pub danger_accept_invalid_certs: bool,
    /// HTTP(S) proxy URL (`http://user:pass@proxy:3128` carries basic auth) for every call
    /// except loopback and [`ClientConfig::no_proxy`].
    pub proxy: Option<String>,
    /// Basic auth for the proxy, instead of credentials in its URL.
    pub proxy_auth: Option<ProxyAuth>,
    /// Hosts, domains (`.corp.example` or `corp.example` for its subdomains too), IPs or
    /// CIDRs reached directly despite the proxy; loopback always is.
    pub no_proxy: Vec<String>,
    /// Appended to the `Culprit/<version>` User-Agent.
    pub user_agent_suffix: Option<String>,
}

impl ClientConfig {
    /// The defaults: Graph hunting, v2 tokens, 30 s calls, 210 s hunts, verification on.
    pub fn new(
        cloud: Cloud,
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        ClientConfig {
            cloud,
            endpoints: None,
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret,
            hunting_api: HuntingApi::Graph,
            token_form: TokenForm::V2Scope,
            timeout: Duration::from_secs(30),
            hunt_timeout: Duration::from_secs(210),
            ca_file: None,
            ca_only: false,
            danger_accept_invalid_certs: false,
            proxy: None,
            proxy_auth: None,
            no_proxy: Vec::new(),
            user_agent_suffix: None,
        }
    }

    /// The overrides if set, else the cloud's endpoints.
    pub fn effective_endpoints(&self) -> Endpoints {
        self.endpoints
            .clone()
            .unwrap_or_else(|| self.cloud.endpoints())
    }
}

/// Proxy credentials. `Debug` never shows the password.
#[derive(Clone, Debug)]
pub struct ProxyAuth {
    pub username: String,
    pub password: SecretString,
}

/// `Culprit/<version>` plus the configured suffix.
pub fn user_agent(suffix: Option<&str>) -> String {
    let base = concat!("Culprit/", env!("CARGO_PKG_VERSION"));
    match suffix.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => format!("{base} {s}"),
        None => base.to_owned(),
    }
}
