//! The twin's configuration: tenants and their data, the clock, the service limits and the
//! faults to inject. Every field has a default so a TOML file names only what it changes.

use std::path::PathBuf;

use culprit_model::Timestamp;
use secrecy::SecretString;
use serde::Deserialize;

/// Application roles the twin knows. Graph's hunting role and the MDE roles are granted on
/// different resources, so a token carries only those of its audience.
pub const ROLE_THREAT_HUNTING: &str = "ThreatHunting.Read.All";
pub const ROLE_ADVANCED_QUERY: &str = "AdvancedQuery.Read.All";
pub const ROLE_MACHINE_READ: &str = "Machine.Read.All";
pub const ROLE_MACHINE_ISOLATE: &str = "Machine.Isolate";

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwinConfig {
    pub tenants: Vec<TenantConfig>,
    pub clock: ClockConfig,
    pub limits: Limits,
    /// Lifetime of issued access tokens, in twin-clock seconds.
    pub token_lifetime_secs: u64,
    pub actions: ActionTiming,
    pub faults: FaultConfig,
    pub tls: TwinTlsConfig,
}

/// HTTPS for the twin's listener, off by default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwinTlsConfig {
    /// Serve HTTPS with a certificate from a CA generated at start-up.
    pub enabled: bool,
    /// Names (or IP addresses) the certificate covers besides
    /// [`crate::DEFAULT_TLS_HOSTS`].
    pub extra_hosts: Vec<String>,
}

impl Default for TwinConfig {
    fn default() -> Self {
        TwinConfig {
            tenants: Vec::new(),
            clock: ClockConfig::default(),
            limits: Limits::default(),
            token_lifetime_secs: 3599,
            actions: ActionTiming::default(),
            faults: FaultConfig::default(),
            tls: TwinTlsConfig::default(),
        }
    }
}

impl TwinConfig {
    /// One tenant, one app holding all four roles, serving `data_dirs` (scenario folders).
    pub fn single_tenant(
        tenant_id: &str,
        client_id: &str,
        secret: &str,
        data_dirs: Vec<PathBuf>,
    ) -> Self {
        TwinConfig {
            tenants: vec![TenantConfig {
                tenant_id: tenant_id.to_owned(),
                clients: vec![ClientConfig {
                    client_id: client_id.to_owned(),
                    client_secret: SecretString::from(secret.to_owned()),
                    roles: all_roles(),
                }],
                data_dirs,
            }],
            ..TwinConfig::default()
        }
    }
}

impl TwinConfig {
    /// The same configuration served over HTTPS.
    pub fn with_tls(mut self) -> Self {
        self.tls.enabled = true;
        self
    }

    /// Rejects settings the twin cannot honour, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let rate = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("faults.{name} must be between 0 and 1, not {v}"))
            }
        };
        rate("error_rate_5xx", self.faults.error_rate_5xx)?;
        rate("drop_rate", self.faults.drop_rate)?;
        rate("token_expiry_rate", self.faults.token_expiry_rate)?;
        if !(self.clock.scale.is_finite() && self.clock.scale > 0.0) {
            return Err(format!(
                "clock.scale must be a positive number, not {}",
                self.clock.scale
            ));
        }
        let l = &self.limits;
        if !(l.cpu_seconds_per_hour.is_finite() && l.cpu_seconds_per_hour >= 0.0) {
            return Err("limits.cpu_seconds_per_hour must be zero or more".into());
        }
        if !(l.timeout_secs.is_finite() && l.timeout_secs > 0.0) {
            return Err("limits.timeout_secs must be a positive number".into());
        }
        if l.lookback_days < 0 {
            return Err("limits.lookback_days must be zero or more".into());
        }
        if self.actions.in_progress_after_secs > self.actions.succeeded_after_secs {
            return Err(
                "actions.in_progress_after_secs must not exceed actions.succeeded_after_secs"
                    .into(),
            );
        }
        for (i, t) in self.tenants.iter().enumerate() {
            if t.tenant_id.trim().is_empty() {
                return Err(format!("tenants[{i}].tenant_id is empty"));
            }
        }
        Ok(())
    }
}

/// Every role the twin checks.
pub fn all_roles() -> Vec<String> {
    [
        ROLE_THREAT_HUNTING,
        ROLE_ADVANCED_QUERY,
        ROLE_MACHINE_READ,
        ROLE_MACHINE_ISOLATE,
    ]
    .iter()
    .map(|r| (*r).to_owned())
    .collect()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// A GUID or a domain name; matched without regard to case.
    pub tenant_id: String,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Scenario folders (each with `mde/*.jsonl`); several folders merge into one tenant.
    #[serde(default)]
    pub data_dirs: Vec<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    #[serde(default = "all_roles")]
    pub roles: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// Twin time at start; default: [`ClockConfig::DEFAULT_LEAD_SECS`] after the newest row.
    pub start: Option<Timestamp>,
    /// Twin seconds per real second (60.0 makes a real second a twin minute).
    pub scale: f64,
}

impl ClockConfig {
    /// How far after the newest row the clock starts when `start` is not given: late enough
    /// that all rows have "landed", early enough that `ago(1h)` still covers them.
    pub const DEFAULT_LEAD_SECS: i64 = 300;
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            start: None,
            scale: 1.0,
        }
    }
}

/// The documented service limits (mde-api.md §2.1, §3.1).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Hunting calls per tenant in any 60 s (both hunting APIs together).
    pub calls_per_minute: u32,
    /// Hunting calls per tenant in any 3,600 s.
    pub calls_per_hour: u32,
    /// Machine and machine-action calls per tenant in any 60 s.
    pub machine_calls_per_minute: u32,
    /// Machine and machine-action calls per tenant in any 3,600 s.
    pub machine_calls_per_hour: u32,
    /// Query running time per tenant in any 3,600 s, in seconds.
    pub cpu_seconds_per_hour: f64,
    /// Rows returned at most; more are cut off.
    pub row_cap: usize,
    /// Serialised result size above which the query is rejected.
    pub max_result_bytes: usize,
    /// Twin-clock seconds a query may run.
    pub timeout_secs: f64,
    /// How far back hunting data is visible from the twin clock, in days.
    pub lookback_days: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            calls_per_minute: 45,
            calls_per_hour: 1500,
            machine_calls_per_minute: 100,
            machine_calls_per_hour: 1500,
            cpu_seconds_per_hour: 600.0,
            row_cap: 100_000,
            max_result_bytes: 124 * 1024 * 1024,
            timeout_secs: 200.0,
            lookback_days: 30,
        }
    }
}

/// When a machine action moves on, in twin-clock seconds after it was requested.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActionTiming {
    pub in_progress_after_secs: u64,
    pub succeeded_after_secs: u64,
}

impl Default for ActionTiming {
    fn default() -> Self {
        ActionTiming {
            in_progress_after_secs: 5,
            succeeded_after_secs: 30,
        }
    }
}

/// Faults injected into API calls (hunting, machines, machine actions). Every decision is a
/// function of `seed` and the call's sequence number, so a run repeats exactly.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    pub seed: u64,
    /// Added to every API response, in real milliseconds.
    pub latency_ms: u64,
    /// Up to this many more milliseconds, drawn from the seed.
    pub latency_jitter_ms: u64,
    /// Share of API calls answered 503 (0.0 ..= 1.0).
    pub error_rate_5xx: f64,
    /// Share of API calls whose connection is cut before a response.
    pub drop_rate: f64,
    /// Share of API calls whose (valid) token is treated as expired: 401.
    pub token_expiry_rate: f64,
    pub throttle_storm: Option<ThrottleStorm>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            latency_ms: 0,
            latency_jitter_ms: 0,
            error_rate_5xx: 0.0,
            drop_rate: 0.0,
            token_expiry_rate: 0.0,
            throttle_storm: None,
        }
    }
}

/// A run of 429s on hunting calls regardless of the quota: hunting calls number
/// `after_calls + 1` through `after_calls + calls` (counted over the whole twin) are throttled.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleStorm {
    pub after_calls: u64,
    pub calls: u64,
    /// The Retry-After the storm's 429s carry, in seconds.
    #[serde(default = "default_storm_retry")]
    pub retry_after_secs: u64,
}

fn default_storm_retry() -> u64 {
    10
}
