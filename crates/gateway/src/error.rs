//! The crate's error type (start-up and background failures; per-call failures are
//! `tonic::Status`).

use culprit_bus::BusError;
use culprit_cache::CacheError;

/// Why the gateway could not start or a background task failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A setting is unusable; names the key.
    #[error("gateway setting `{key}`: {reason}")]
    Config { key: String, reason: String },
    /// A store (Redis or memory) failed.
    #[error("store: {0}")]
    Store(#[from] CacheError),
    /// Redis failed in a gateway-owned store; the URL is printed without credentials.
    #[error("redis at {url} failed during {op}: {reason}")]
    Redis {
        url: String,
        op: &'static str,
        reason: String,
    },
    /// The bus failed.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// The gRPC server failed (bind, TLS, transport).
    #[error("gRPC server: {0}")]
    Server(String),
    /// A stored or published value could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
}

impl GatewayError {
    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        GatewayError::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
