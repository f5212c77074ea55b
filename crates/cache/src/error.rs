//! One error type for every store.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis could not be reached or refused the command. The URL is printed without
    /// credentials.
    #[error("redis at {url} failed during {op}: {source}")]
    Redis {
        url: String,
        op: &'static str,
        #[source]
        source: ::redis::RedisError,
    },
    /// The caller passed a value the store cannot accept.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    /// The store holds something this code cannot read (another version wrote it, or it was
    /// edited by hand).
    #[error("unreadable {what} in the store: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

impl CacheError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        CacheError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(what: &'static str, reason: impl Into<String>) -> Self {
        CacheError::Corrupt {
            what,
            reason: reason.into(),
        }
    }

    /// True when the backend (not the input) is at fault, so a fallback may take over.
    pub fn is_backend(&self) -> bool {
        !matches!(self, CacheError::InvalidInput { .. })
    }
}

/// Rejects empty names and control characters early, naming the field.
pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), CacheError> {
    if value.is_empty() {
        return Err(CacheError::invalid(field, "empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(CacheError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// TTLs shorter than a millisecond cannot be expressed in Redis (`PX`).
pub(crate) fn check_ttl(ttl: std::time::Duration) -> Result<u64, CacheError> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(CacheError::invalid("ttl", "must be at least 1 ms"));
    }
    Ok(ms)
}
