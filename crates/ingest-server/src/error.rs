//! What can stop a detection from being published.

/// Why a publish did not happen. Every variant but [`PublishError::Invalid`] is transient:
/// the sender should retry (HTTP 503, gRPC `UNAVAILABLE`), and nothing was claimed behind it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The broker is unreachable, blocked, refused the message or did not confirm in time.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The idempotency store (Redis) failed.
    #[error("idempotency store unavailable: {0}")]
    Store(String),
    /// The detection cannot be published as it is (an over-long key, ...): retrying is useless.
    #[error("cannot publish: {0}")]
    Invalid(String),
}

impl PublishError {
    /// True when the same input may succeed later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, PublishError::Invalid(_))
    }

    pub(crate) fn from_bus(e: culprit_bus::BusError) -> Self {
        match e {
            culprit_bus::BusError::InvalidInput { field, reason } => {
                PublishError::Invalid(format!("{field}: {reason}"))
            }
            other => PublishError::Unavailable(other.to_string()),
        }
    }
}
