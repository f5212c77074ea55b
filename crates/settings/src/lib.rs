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
    pub ingest: IngestSettings,
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
    /// Divides the budget's 60 s and 3,600 s windows, for time-scaled runs against a twin
    /// whose clock runs this many times faster. Keep 1.0 against a real tenant.
    pub budget_time_scale: f64,
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
    /// Deliveries of a detection that may fail with a service error or a timeout before its
    /// answer says the hunt failed (throttling never counts). At most `bus.max_attempts`.
    pub hunt_attempts: u32,
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

/// The ingest service: the webhook listener and every configured detection source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Address of the webhook (`POST /v1/sources/{source}/detections`); empty for none.
    pub webhook_listen: String,
    /// Largest webhook body accepted (bytes); larger bodies get 413.
    pub max_body_bytes: usize,
    /// A detection key seen again within this many seconds is a duplicate and not re-published.
    pub dedup_window_secs: u64,
    /// How long a sender waits for the broker's confirm before it is told to retry (503).
    pub ack_timeout_secs: u64,
    /// Syslog frames of one TCP/TLS connection being published at once; the next frame is read
    /// only when one of them is confirmed, so a blocked broker slows the sender.
    pub tcp_in_flight: usize,
    /// Largest syslog frame (bytes); a longer one closes the TCP/TLS connection.
    pub max_frame_bytes: usize,
    /// One entry per source; the key is the source's name (the webhook's `{source}`).
    pub sources: BTreeMap<String, IngestSourceSettings>,
}

/// One detection source. Every source belongs to exactly one tenant: detections it delivers
/// are filed under that tenant whatever their body says.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSourceSettings {
    /// `webhook`, `syslog_udp`, `syslog_tcp`, `syslog_tls` or `vectra_api`.
    pub kind: String,
    /// Culprit tenant name (a key of `tenants`).
    pub tenant: String,
    /// `vectra_json`, `vectra_syslog`, `suricata_eve` or `zeek_notice`.
    pub format: String,
    /// Webhook: bearer token the sender presents. Prefer
    /// `CULPRIT__INGEST__SOURCES__<NAME>__TOKEN`.
    #[serde(serialize_with = "layers::redact")]
    pub token: SecretString,
    /// Webhook: key of the HMAC-SHA256 signature over the body (header `X-Culprit-Signature:
    /// sha256=<hex>`).
    #[serde(serialize_with = "layers::redact")]
    pub hmac_secret: SecretString,
    /// Syslog: listen address (`0.0.0.0:6514`).
    pub listen: String,
    /// Syslog over TCP/TLS: peers allowed to connect, as CIDRs (`10.1.2.0/24`, `::1/128`).
    pub allowed_peers: Vec<String>,
    /// Syslog over TLS: server certificate and key.
    pub tls: IngestTlsSettings,
    /// `vectra_api`: where and how to poll the Vectra API.
    pub api: VectraApiSettings,
}

/// A `vectra_api` source: the Vectra Detect (v2) or RUX (v3) API, polled.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VectraApiSettings {
    /// `https://<tenant>.<region>.portal.vectra.ai` or `https://<brain>`.
    pub url: String,
    /// `oauth` (v3 client credentials) or `token` (v2 API token).
    pub auth: String,
    pub client_id: String,
    /// Prefer `CULPRIT__INGEST__SOURCES__<NAME>__API__CLIENT_SECRET`.
    #[serde(serialize_with = "layers::redact")]
    pub client_secret: SecretString,
    /// Prefer `CULPRIT__INGEST__SOURCES__<NAME>__API__API_TOKEN`.
    #[serde(serialize_with = "layers::redact")]
    pub api_token: SecretString,
    /// `events` (the v3.5 event stream, a durable checkpoint) or `detections` (the list by
    /// `last_timestamp`, for APIs without the stream).
    pub mode: String,
    /// Detections API version: `v3.3`, or `v2.5` for a v2 brain.
    pub api_version: String,
    /// Page size of list and event requests (1..=5000).
    pub page_size: u32,
    /// Pause after a poll that found nothing more.
    pub poll_interval_secs: u64,
    pub request_timeout_secs: u64,
    /// Extra CA certificates (PEM) to trust; verification stays on.
    pub ca_file: String,
    /// Where to start when no checkpoint is stored: an event id (`events`) or an RFC 3339 time
    /// (`detections`); empty: from the oldest the API holds.
    pub start_checkpoint: String,
}

impl Default for VectraApiSettings {
    fn default() -> Self {
        VectraApiSettings {
            url: String::new(),
            auth: "oauth".into(),
            client_id: String::new(),
            client_secret: SecretString::default(),
            api_token: SecretString::default(),
            mode: "events".into(),
            api_version: "v3.3".into(),
            page_size: 500,
            poll_interval_secs: 30,
            request_timeout_secs: 60,
            ca_file: String::new(),
            start_checkpoint: String::new(),
        }
    }
}

/// PEM files of a TLS syslog listener.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IngestTlsSettings {
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            webhook_listen: String::new(),
            max_body_bytes: 10 * 1024 * 1024,
            dedup_window_secs: 24 * 3600,
            ack_timeout_secs: 10,
            tcp_in_flight: 64,
            max_frame_bytes: 64 * 1024,
            sources: BTreeMap::new(),
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
            budget_time_scale: 1.0,
            lookback_minutes: 60,
            lookahead_minutes: 10,
            device_lookback_hours: 24,
            requery_after_secs: vec![300.0, 900.0],
            cache_secs: 900,
            empty_cache_secs: 60,
            hunt_attempts: 4,
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
        let listen = self.telemetry.metrics_listen.trim();
        if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "telemetry.metrics_listen: {listen:?} is not an address like 0.0.0.0:9464 (empty for none)"
            ));
        }
        let otlp = self.telemetry.otlp_endpoint.trim();
        let http = otlp.starts_with("http://") || otlp.starts_with("https://");
        if !otlp.is_empty() && !http {
            problems.push(format!(
                "telemetry.otlp_endpoint: {otlp:?} is not an http:// or https:// URL (OTLP over HTTP, e.g. http://collector:4318; empty for none)"
            ));
        }
        if self.hunter.calls_per_minute == 0 || self.hunter.calls_per_hour == 0 {
            problems.push("hunter.calls_per_minute/calls_per_hour: must be at least 1".into());
        }
        for s in &self.hunter.requery_after_secs {
            if !(s.is_finite() && (0.001..=2_000_000.0).contains(s)) {
                problems.push(format!(
                    "hunter.requery_after_secs: {s} is not between 0.001 (1 ms) and 2000000 (about 23 days)"
                ));
            }
        }
        if self.hunter.hunt_attempts == 0 || self.hunter.hunt_attempts > self.bus.max_attempts {
            problems.push(format!(
                "hunter.hunt_attempts: {} must be between 1 and bus.max_attempts ({})",
                self.hunter.hunt_attempts, self.bus.max_attempts
            ));
        }
        let scale = self.hunter.budget_time_scale;
        if !(scale.is_finite() && scale > 0.0) {
            problems.push(format!(
                "hunter.budget_time_scale: must be a positive number (1.0 = real time), not {scale}"
            ));
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
        self.validate_ingest(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(problems))
        }
    }

    /// Ingest sources: a known kind and format, a configured tenant, and what the kind needs.
    fn validate_ingest(&self, problems: &mut Vec<String>) {
        use secrecy::ExposeSecret;
        let i = &self.ingest;
        if i.max_body_bytes == 0 || i.max_frame_bytes == 0 || i.tcp_in_flight == 0 {
            problems.push(
                "ingest.max_body_bytes/max_frame_bytes/tcp_in_flight: must be at least 1".into(),
            );
        }
        for (name, s) in &i.sources {
            let key = format!("ingest.sources.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                problems.push(format!(
                    "{key}: the name may only use ASCII letters, digits, '_' and '-'"
                ));
            }
            const KINDS: [&str; 5] = [
                "webhook",
                "syslog_udp",
                "syslog_tcp",
                "syslog_tls",
                "vectra_api",
            ];
            if !KINDS.contains(&s.kind.as_str()) {
                problems.push(format!("{key}.kind: {:?} is not one of {KINDS:?}", s.kind));
            }
            if !self.tenants.contains_key(&s.tenant) {
                problems.push(format!(
                    "{key}.tenant: {:?} is not a configured tenant (a [tenants.NAME] section)",
                    s.tenant
                ));
            }
            let formats: &[&str] = match s.kind.as_str() {
                "webhook" => &[
                    "vectra_json",
                    "vectra_syslog",
                    "suricata_eve",
                    "zeek_notice",
                ],
                "vectra_api" => &["vectra_json", ""],
                _ => &["vectra_syslog"],
            };
            if !formats.contains(&s.format.as_str()) {
                problems.push(format!(
                    "{key}.format: {:?} is not one of {formats:?} for kind {:?}",
                    s.format, s.kind
                ));
            }
            if s.kind == "webhook"
                && s.token.expose_secret().is_empty()
                && s.hmac_secret.expose_secret().is_empty()
            {
                problems.push(format!(
                    "{key}: a webhook needs token or hmac_secret (set CULPRIT__INGEST__SOURCES__{}__TOKEN)",
                    name.to_ascii_uppercase()
                ));
            }
            if s.kind.starts_with("syslog_") && s.listen.is_empty() {
                problems.push(format!("{key}.listen: missing (empty)"));
            }
            if matches!(s.kind.as_str(), "syslog_tcp" | "syslog_tls") && s.allowed_peers.is_empty()
            {
                problems.push(format!(
                    "{key}.allowed_peers: empty; list the CIDRs allowed to send"
                ));
            }
            if s.kind == "syslog_tls" && (s.tls.cert_file.is_empty() || s.tls.key_file.is_empty()) {
                problems.push(format!("{key}.tls: cert_file and key_file are required"));
            }
            if s.kind == "vectra_api" {
                validate_vectra_api(&format!("{key}.api"), name, &s.api, problems);
            }
        }
    }
}

/// A `vectra_api` source's `api` table: what the poller needs, named by key.
fn validate_vectra_api(key: &str, name: &str, a: &VectraApiSettings, problems: &mut Vec<String>) {
    use secrecy::ExposeSecret;
    let url_ok = ["https://", "http://"].iter().any(|p| {
        a.url
            .strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('@') && !rest.contains(' '))
    });
    if !url_ok {
        problems.push(format!(
            "{key}.url: {:?} is not an https:// URL without credentials",
            a.url
        ));
    }
    let env = format!(
        "CULPRIT__INGEST__SOURCES__{}__API",
        name.to_ascii_uppercase()
    );
    match a.auth.as_str() {
        "oauth" => {
            if a.client_id.trim().is_empty() {
                problems.push(format!("{key}.client_id: missing (auth = \"oauth\")"));
            }
            if a.client_secret.expose_secret().is_empty() {
                problems.push(format!(
                    "{key}.client_secret: missing (auth = \"oauth\"; set {env}__CLIENT_SECRET)"
                ));
            }
        }
        "token" => {
            if a.api_token.expose_secret().is_empty() {
                problems.push(format!(
                    "{key}.api_token: missing (auth = \"token\"; set {env}__API_TOKEN)"
                ));
            }
        }
        other => problems.push(format!(
            "{key}.auth: {other:?} is not \"oauth\" or \"token\""
        )),
    }
    let cp = a.start_checkpoint.trim();
    match a.mode.as_str() {
        "events" => {
            if !cp.is_empty() && cp.parse::<u64>().is_err() {
                problems.push(format!(
                    "{key}.start_checkpoint: {cp:?} is not an event id (mode = \"events\")"
                ));
            }
        }
        "detections" => {}
        other => problems.push(format!(
            "{key}.mode: {other:?} is not \"events\" or \"detections\""
        )),
    }
    let v = a.api_version.as_str();
    let version_ok = v
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if !version_ok {
        problems.push(format!(
            "{key}.api_version: {v:?} is not like \"v3.3\" or \"v2.5\""
        ));
    }
    if a.page_size == 0 || a.page_size > 5000 {
        problems.push(format!(
            "{key}.page_size: {} is not between 1 and 5000",
            a.page_size
        ));
    }
    if a.poll_interval_secs == 0 {
        problems.push(format!("{key}.poll_interval_secs: must be at least 1"));
    }
    if a.request_timeout_secs == 0 {
        problems.push(format!("{key}.request_timeout_secs: must be at least 1"));
    }
}
