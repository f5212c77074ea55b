//! Culprit's configuration: built-in defaults, then a TOML file, then `CULPRIT__SECTION__KEY`
//! environment variables. Unknown keys are rejected with their path; secrets are
//! [`SecretString`]s that never print.

use std::collections::BTreeMap;
use std::path::Path;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

mod layers;

pub use layers::{ENV_PREFIX, SettingsError};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// One entry per customer tenant (MSSPs run many); the key is the tenant's name in
    /// Culprit, which detections carry.
    pub tenants: BTreeMap<String, TenantSettings>,
    pub hunter: HunterSettings,
    pub correlator: CorrelatorSettings,
    pub bus: BusSettings,
    pub store: StoreSettings,
    pub telemetry: TelemetrySettings,
    pub gateway: GatewaySettings,
}

/// Microsoft Defender access for one tenant.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Entra ID tenant (directory) id.
    pub tenant_id: String,
    /// Application (client) id of Culprit's app registration.
    pub client_id: String,
    /// Client secret of that app. Prefer `CULPRIT__TENANTS__<NAME>__CLIENT_SECRET`.
    #[serde(serialize_with = "layers::redact")]
    pub client_secret: SecretString,
    #[serde(default = "defaults::cloud")]
    pub cloud: String,
    /// `graph` (security/runHuntingQuery, the default) or `mde` (api/advancedqueries/run).
    #[serde(default = "defaults::hunting_api")]
    pub hunting_api: String,
    /// Overrides of the cloud's hosts, for a digital twin or a proxying gateway.
    #[serde(default)]
    pub endpoints: EndpointOverrides,
    #[serde(default)]
    pub tls: TlsSettings,
    /// `https://user:pass@proxy:3128`-style proxy for this tenant's calls; empty for none.
    #[serde(default)]
    pub proxy: String,
    /// Hosts reached directly, not through `proxy` (loopback always is).
    #[serde(default)]
    pub no_proxy: Vec<String>,
    #[serde(default = "defaults::request_timeout_secs")]
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointOverrides {
    pub login: String,
    pub graph: String,
    pub mde_api: String,
    pub portal: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM bundle added to the platform roots (a TLS-inspecting proxy's CA).
    pub ca_file: String,
    /// Turns certificate verification off. Never do this outside a lab.
    pub danger_accept_invalid_certs: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HunterSettings {
    /// Detections of one tenant arriving within this many ms share one hunting query.
    pub batch_window_ms: u64,
    /// Most detections in one batch.
    pub max_batch: usize,
    pub calls_per_minute: u32,
    pub calls_per_hour: u32,
    /// Process and network rows are fetched from this long before the window...
    pub lookback_minutes: i64,
    /// ...to this long after it (telemetry lands late and clocks differ).
    pub lookahead_minutes: i64,
    /// Device facts (DeviceInfo, DeviceNetworkInfo) are fetched from this far back.
    pub device_lookback_hours: i64,
    /// Re-query for late telemetry after these delays (seconds; fractions allowed).
    pub requery_after_secs: Vec<f64>,
    /// How long a telemetry answer stays cached (seconds); an empty answer is cached for
    /// `empty_cache_secs` only, since telemetry lands minutes late.
    pub cache_secs: u64,
    pub empty_cache_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelatorSettings {
    /// Clock difference tolerated between the network sensor and the endpoint (seconds).
    pub skew_tolerance_secs: i64,
    /// How late MDE telemetry may land (seconds): a newer detection without rows is pending.
    pub ingestion_delay_secs: i64,
    /// `culprit` (evidence-based) or `baseline` (the unique-destination count).
    pub scorer: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSettings {
    /// `in_process` (one process, nothing to install) or `rabbitmq`.
    pub kind: String,
    #[serde(serialize_with = "layers::redact")]
    pub url: SecretString,
    /// Exchanges and queues are named `{prefix}.…`.
    pub prefix: String,
    pub prefetch: u16,
    pub max_attempts: u32,
    pub retry_delays_secs: Vec<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `memory` or `redis`.
    pub kind: String,
    #[serde(serialize_with = "layers::redact")]
    pub url: SecretString,
    pub key_prefix: String,
    /// How long stored results are kept (hours).
    pub result_ttl_hours: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// `text` or `json`.
    pub log_format: String,
    /// `RUST_LOG`-style filter.
    pub log_filter: String,
    /// OTLP endpoint for traces; empty for none.
    pub otlp_endpoint: String,
    /// Address of the Prometheus `/metrics` and `/healthz` listener; empty for none.
    pub metrics_listen: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    pub listen: String,
    /// Bearer API keys (`culprit keys create` prints an entry). Only SHA-256 hashes are kept.
    pub api_keys: Vec<ApiKeySettings>,
    /// Calls per second allowed per API key (the burst is the same); 0 turns the limit off.
    pub rate_limit_per_key: u32,
    /// `WatchCorrelations` events kept for resuming clients (oldest trimmed beyond).
    pub watch_retention: u64,
    /// Audit records kept in the Redis stream (the structured log keeps everything).
    pub audit_retention: u64,
    pub tls: GatewayTlsSettings,
    pub policy: ResponsePolicySettings,
}

/// One API key. `hash` is the lowercase hex SHA-256 of the whole key: keys are 256 random bits,
/// so a fast hash cannot be brute-forced and keeps each call's check in microseconds.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Names the caller in the audit trail and in logs.
    pub id: String,
    pub hash: String,
    /// `read`, `submit`, `respond`.
    pub scopes: Vec<String>,
    /// Culprit tenant names the key may see; `*` means every tenant.
    pub tenants: Vec<String>,
}

/// TLS for the gRPC listener: off while `cert_file` is empty; mutual TLS when
/// `client_ca_file` is set (clients must present a certificate it signed).
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayTlsSettings {
    /// PEM certificate chain of the server.
    pub cert_file: String,
    /// PEM private key of the server.
    pub key_file: String,
    /// PEM CA bundle that client certificates must chain to.
    pub client_ca_file: String,
}

/// The automatic response policy: isolates devices on attributed detections.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsePolicySettings {
    /// `off` (the default), `dry_run` (decide and audit, never act) or `enforce`.
    pub mode: String,
    /// `full` or `selective`.
    pub isolation_type: String,
    /// Devices carrying any of these MDE tags are never isolated (case-insensitive).
    pub exclude_tags: Vec<String>,
    /// Devices whose name matches any of these globs (`*`, `?`; case-insensitive) are never
    /// isolated, e.g. `dc*` or `*-srv-*`.
    pub exclude_name_patterns: Vec<String>,
    /// Isolations at most per tenant in any hour, counted across replicas.
    pub max_isolations_per_hour: u32,
    /// Releases a device the policy isolated after this many seconds; 0 never releases.
    pub auto_release_after_secs: u64,
    /// Thresholds per Culprit tenant; a tenant not listed is never acted on.
    pub tenants: BTreeMap<String, PolicyTenantSettings>,
}

/// A detection triggers isolation only when all three thresholds are met.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyTenantSettings {
    /// Minimum threat score (0-100).
    pub min_threat: u32,
    /// Minimum certainty score (0-100).
    pub min_certainty: u32,
    /// Minimum attribution confidence of the probable process (0-1).
    pub min_confidence: f64,
}

impl Default for PolicyTenantSettings {
    fn default() -> Self {
        PolicyTenantSettings {
            min_threat: 80,
            min_certainty: 80,
            min_confidence: 0.9,
        }
    }
}

impl Default for ResponsePolicySettings {
    fn default() -> Self {
        ResponsePolicySettings {
            mode: "off".into(),
            isolation_type: "full".into(),
            exclude_tags: Vec::new(),
            exclude_name_patterns: Vec::new(),
            max_isolations_per_hour: 5,
            auto_release_after_secs: 0,
            tenants: BTreeMap::new(),
        }
    }
}

mod defaults {
    pub fn cloud() -> String {
        "commercial".into()
    }
    pub fn hunting_api() -> String {
        "graph".into()
    }
    pub fn request_timeout_secs() -> u64 {
        60
    }
}

impl Default for HunterSettings {
    fn default() -> Self {
        HunterSettings {
            batch_window_ms: 2000,
            max_batch: 50,
            calls_per_minute: 45,
            calls_per_hour: 1500,
            lookback_minutes: 60,
            lookahead_minutes: 10,
            device_lookback_hours: 24,
            requery_after_secs: vec![300.0, 900.0],
            cache_secs: 900,
            empty_cache_secs: 60,
        }
    }
}

impl Default for CorrelatorSettings {
    fn default() -> Self {
        CorrelatorSettings {
            skew_tolerance_secs: 120,
            ingestion_delay_secs: 900,
            scorer: "culprit".into(),
        }
    }
}

impl Default for BusSettings {
    fn default() -> Self {
        BusSettings {
            kind: "in_process".into(),
            url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix: "culprit".into(),
            prefetch: 32,
            max_attempts: 5,
            retry_delays_secs: vec![1.0, 5.0, 30.0],
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            kind: "memory".into(),
            url: SecretString::from("redis://127.0.0.1:6379"),
            key_prefix: "culprit".into(),
            result_ttl_hours: 24 * 14,
        }
    }
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            log_format: "text".into(),
            log_filter: "info".into(),
            otlp_endpoint: String::new(),
            metrics_listen: String::new(),
        }
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            listen: "127.0.0.1:50051".into(),
            api_keys: Vec::new(),
            rate_limit_per_key: 1000,
            watch_retention: 100_000,
            audit_retention: 1_000_000,
            tls: GatewayTlsSettings::default(),
            policy: ResponsePolicySettings::default(),
        }
    }
}

impl Settings {
    /// Defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// As [`Settings::load`] with an explicit environment, so tests never touch the process's.
    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, SettingsError> {
        let text = match file {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| SettingsError::Read {
                path: p.display().to_string(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        layers::build(text.as_deref(), env)
    }

    /// Checks what deserialisation cannot: values that must be one of a set, and tenants
    /// that must be complete. Every problem is named with its key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let mut problems = Vec::new();
        let one_of = |key: &str, v: &str, allowed: &[&str], problems: &mut Vec<String>| {
            if !allowed.contains(&v) {
                problems.push(format!("{key}: {v:?} is not one of {allowed:?}"));
            }
        };
        one_of(
            "bus.kind",
            &self.bus.kind,
            &["in_process", "rabbitmq"],
            &mut problems,
        );
        one_of(
            "store.kind",
            &self.store.kind,
            &["memory", "redis"],
            &mut problems,
        );
        one_of(
            "correlator.scorer",
            &self.correlator.scorer,
            &["culprit", "baseline"],
            &mut problems,
        );
        one_of(
            "telemetry.log_format",
            &self.telemetry.log_format,
            &["text", "json"],
            &mut problems,
        );
        if self.hunter.calls_per_minute == 0 || self.hunter.calls_per_hour == 0 {
            problems.push("hunter.calls_per_minute/calls_per_hour: must be at least 1".into());
        }
        for (name, t) in &self.tenants {
            let key = format!("tenants.{name}");
            for (field, value) in [("tenant_id", &t.tenant_id), ("client_id", &t.client_id)] {
                if value.trim().is_empty() {
                    problems.push(format!("{key}.{field}: missing (empty)"));
                }
            }
            if secrecy::ExposeSecret::expose_secret(&t.client_secret).is_empty() {
                problems.push(format!(
                    "{key}.client_secret: missing (empty); set it in the file or in {}TENANTS__{}__CLIENT_SECRET",
                    ENV_PREFIX,
                    name.to_ascii_uppercase()
                ));
            }
            one_of(
                &format!("{key}.cloud"),
                &t.cloud,
                &[
                    "commercial",
                    "commercial_us",
                    "commercial_eu",
                    "commercial_uk",
                    "gcc",
                    "gcc_high",
                    "dod",
                ],
                &mut problems,
            );
            one_of(
                &format!("{key}.hunting_api"),
                &t.hunting_api,
                &["graph", "mde"],
                &mut problems,
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(problems))
        }
    }
}
