//! Topics, queue names and the message envelope shared by both implementations.

use std::collections::BTreeMap;
use std::fmt;

/// Header carrying the payload's schema version.
pub const HEADER_SCHEMA_VERSION: &str = "x-culprit-schema-version";
/// W3C trace-context header.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// W3C trace-context vendor header.
pub const HEADER_TRACESTATE: &str = "tracestate";
/// Why a message was dead-lettered.
pub const HEADER_REASON: &str = "x-culprit-reason";
/// Why the last attempt failed (set on retried messages).
pub const HEADER_LAST_ERROR: &str = "x-culprit-last-error";
/// Work queue a dead letter came from.
pub const HEADER_QUEUE: &str = "x-culprit-queue";
/// Reason of a message dead-lettered for coming back unsettled `delivery_limit` times.
pub const DELIVERY_LIMIT_REASON: &str = "delivery_limit";
/// Attempt number of a retried message; internal, surfaced as [`crate::Delivery::attempt`].
pub const HEADER_ATTEMPT: &str = "x-culprit-attempt";

/// A topic exchange between services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Normalised detections from ingest (`{prefix}.detections`).
    Detections,
    /// Telemetry bundles from the hunters (`{prefix}.telemetry`).
    Telemetry,
    /// Attribution results and `attribution_changed` events (`{prefix}.correlations`).
    Correlations,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 3] = [Topic::Detections, Topic::Telemetry, Topic::Correlations];

    /// The exchange's name without the prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Detections => "detections",
            Topic::Telemetry => "telemetry",
            Topic::Correlations => "correlations",
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A work queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueName {
    /// Hunter work (`{prefix}.hunt`), bound to [`Topic::Detections`].
    Hunt,
    /// Correlator work (`{prefix}.correlate`), bound to [`Topic::Telemetry`].
    Correlate,
    /// Response policy (`{prefix}.policy`), bound to [`Topic::Correlations`].
    Policy,
    /// Any other queue (`{prefix}.{name}`); bind it with [`crate::Subscriber::bind`].
    /// Names use `[A-Za-z0-9_-]` and must not be one of the standard names.
    Custom(String),
}

impl QueueName {
    /// The standard queues, declared by both implementations.
    pub const STANDARD: [QueueName; 3] = [QueueName::Hunt, QueueName::Correlate, QueueName::Policy];

    /// The queue's name without the prefix.
    pub fn as_str(&self) -> &str {
        match self {
            QueueName::Hunt => "hunt",
            QueueName::Correlate => "correlate",
            QueueName::Policy => "policy",
            QueueName::Custom(name) => name,
        }
    }

    /// The topic a standard queue is bound to.
    pub fn topic(&self) -> Option<Topic> {
        match self {
            QueueName::Hunt => Some(Topic::Detections),
            QueueName::Correlate => Some(Topic::Telemetry),
            QueueName::Policy => Some(Topic::Correlations),
            QueueName::Custom(_) => None,
        }
    }

    /// Rejects custom names that would be ambiguous as an AMQP name segment.
    pub(crate) fn validate(&self) -> Result<(), crate::BusError> {
        let QueueName::Custom(name) = self else {
            return Ok(());
        };
        let invalid = |reason: &str| {
            Err(crate::BusError::InvalidInput {
                field: "queue".to_owned(),
                reason: format!("custom queue name {name:?} {reason}"),
            })
        };
        if name.is_empty() || name.len() > 64 {
            return invalid("must have 1 to 64 characters");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return invalid("may only contain ASCII letters, digits, '_' and '-'");
        }
        if Self::STANDARD.iter().any(|q| q.as_str() == name) || name == "dlx" {
            return invalid("collides with a standard name");
        }
        Ok(())
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message on the bus.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Idempotency key: the detection key `{source}:{tenant}:{id}:{revision}` (≤ 255 bytes).
    pub message_id: String,
    /// Encoded payload (protobuf).
    pub payload: Vec<u8>,
    /// String headers: schema version, `traceparent`, ... (keys ≤ 255 bytes).
    pub headers: BTreeMap<String, String>,
    /// AMQP priority property 0..=9 (see the crate docs on quorum queues and priority).
    pub priority: Option<u8>,
}

impl Message {
    /// A message with no headers and no priority.
    pub fn new(message_id: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            message_id: message_id.into(),
            payload: payload.into(),
            headers: BTreeMap::new(),
            priority: None,
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// A header's value.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.get(key).map(String::as_str)
    }

    /// Checks what AMQP limits (short strings are ≤ 255 bytes), so both buses reject alike.
    pub(crate) fn validate(&self) -> Result<(), crate::BusError> {
        let invalid = |field: String, reason: &str| {
            Err(crate::BusError::InvalidInput {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.message_id.is_empty() {
            return invalid(
                "message_id".into(),
                "must not be empty (it is the detection key)",
            );
        }
        if self.message_id.len() > 255 {
            return invalid("message_id".into(), "must be at most 255 bytes");
        }
        if let Some(key) = self.headers.keys().find(|k| k.is_empty() || k.len() > 255) {
            return invalid(format!("header {key:?}"), "name must have 1 to 255 bytes");
        }
        Ok(())
    }
}

impl fmt::Debug for Message {
    // Payloads can be large and binary: show their size, not their bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("message_id", &self.message_id)
            .field("payload_len", &self.payload.len())
            .field("headers", &self.headers)
            .field("priority", &self.priority)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_queue_names_are_checked() {
        assert!(QueueName::Custom("watch-1".into()).validate().is_ok());
        for bad in ["", "a.b", "hunt", "dlx", "spaces here"] {
            let err = QueueName::Custom(bad.into()).validate();
            assert!(err.is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn debug_hides_payload_bytes() {
        let text = format!("{:?}", Message::new("k", vec![7u8; 1000]));
        assert!(text.contains("payload_len: 1000"), "{text}");
        assert!(!text.contains("7, 7"), "{text}");
    }
}
