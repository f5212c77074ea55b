//! Errors of the bus.

/// Everything that can go wrong on the bus. Connection URLs in messages are redacted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The first connection to the broker failed.
    #[error("RabbitMQ unreachable at {url}: {source}")]
    Connect {
        /// The broker URL with its password redacted.
        url: String,
        /// The last connection error.
        #[source]
        source: lapin::Error,
    },
    /// An AMQP operation failed.
    #[error("RabbitMQ {operation} failed: {source}")]
    Amqp {
        /// What was being done (e.g. `declare queue culprit.hunt`).
        operation: String,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
    /// The broker could not be reached within the publish timeout.
    #[error("RabbitMQ unavailable: {0}")]
    Unavailable(String),
    /// No queue is bound to the topic: the message would have been dropped.
    #[error("message {message_id:?} is unroutable: no queue is bound to {exchange}")]
    Unroutable {
        /// The exchange published to.
        exchange: String,
        /// The message's id.
        message_id: String,
    },
    /// The broker refused to store the message (negative confirm).
    #[error("broker rejected message {message_id:?} on {exchange} (negative publisher confirm)")]
    Rejected {
        /// The exchange published to.
        exchange: String,
        /// The message's id.
        message_id: String,
    },
    /// The channel a delivery came from is gone: the broker will redeliver the message.
    #[error(
        "delivery {message_id:?} could not be settled: its channel closed, the broker redelivers it"
    )]
    ChannelClosed {
        /// The message's id.
        message_id: String,
    },
    /// A message, queue name or argument is not acceptable.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The configuration is not acceptable.
    #[error("invalid bus config {field}: {reason}")]
    Config {
        /// Which field of [`crate::BusConfig`].
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The bus was shut down.
    #[error("bus is shut down")]
    Closed,
}

impl BusError {
    pub(crate) fn amqp(operation: impl Into<String>, source: lapin::Error) -> Self {
        BusError::Amqp {
            operation: operation.into(),
            source,
        }
    }
}
