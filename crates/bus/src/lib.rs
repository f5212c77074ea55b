//! Message bus between Culprit's services: publisher and consumer traits, a RabbitMQ
//! implementation ([`RabbitBus`]) and an in-process one ([`InProcessBus`]) with the same
//! semantics.
//!
//! # Topology (DESIGN.md §1)
//!
//! Every name lives under a configurable prefix (`culprit` by default):
//!
//! | name | kind | purpose |
//! |---|---|---|
//! | `{prefix}.detections`, `{prefix}.telemetry`, `{prefix}.correlations` | durable topic exchanges | one per [`Topic`] |
//! | `{prefix}.dlx` | durable direct exchange | dead letters and retries; routing key = target queue name |
//! | `{prefix}.{queue}` | quorum queue | work queue ([`QueueName`]), dead-letters to `{prefix}.{queue}.dlq` |
//! | `{prefix}.{queue}.retry.{n}` | quorum queue, `x-message-ttl` = `retry_delays[n-1]` | delayed retry; expires back into the work queue |
//! | `{prefix}.{queue}.dlq` | quorum queue | poison messages, reason in header `x-culprit-reason` |
//!
//! Messages are persistent, carry `message_id` (the detection key) and string headers (schema
//! version, W3C `traceparent`). Delivery is at-least-once: consumers ack after the hand-off,
//! a dropped [`Delivery`] is redelivered, [`Delivery::retry`] re-queues after a growing delay and
//! dead-letters after `max_attempts`.
//!
//! Both implementations carry the trace: a publish adds the current span's W3C trace context
//! (`traceparent`, `tracestate`, and `baggage` with the ingest time) unless the message has a
//! `traceparent` already, and every [`Delivery`] opens a `bus.consume` span in the publisher's
//! trace ([`Delivery::span`]); run the handling inside it so what it publishes stays in the
//! trace. They also count publishes, deliveries, queue wait and dead letters in
//! `culprit_metrics::metrics()`.
//!
//! # Use
//!
//! ```
//! use culprit_bus::{
//!     BusConfig, BusError, HEADER_SCHEMA_VERSION, HEADER_TRACEPARENT, InProcessBus, Message,
//!     Publisher, QueueName, Subscriber, Topic,
//! };
//!
//! async fn demo() -> Result<(), BusError> {
//!     // `RabbitBus::connect(cfg).await?` in distributed mode; same traits.
//!     let bus = InProcessBus::new(BusConfig::default())?;
//!     let mut hunt = bus.subscribe(QueueName::Hunt, 32).await?;
//!     let msg = Message::new("vectra:t1:42:1", b"protobuf bytes".to_vec())
//!         .with_header(HEADER_SCHEMA_VERSION, "1")
//!         .with_header(HEADER_TRACEPARENT, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
//!     bus.publish(Topic::Detections, msg).await?; // returns once confirmed
//!
//!     let delivery = hunt.next().await.ok_or(BusError::Closed)?;
//!     match delivery.message.payload.as_slice() {
//!         b"" => delivery.dead_letter("empty payload").await?, // poison: never succeeds
//!         _ => delivery.ack().await?, // after the result is published or stored
//!     }
//!     Ok(())
//! }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # Priorities
//!
//! Quorum queues do not support `x-max-priority` (classic-queue priorities). RabbitMQ 3.x
//! ignores the `priority` property on quorum queues; RabbitMQ ≥ 4.0 treats priority > 4 as
//! "high" and the rest as "normal". [`Message::priority`] is carried end to end as the AMQP
//! property, but ordering by priority belongs to the consumer (the hunter batches and orders by
//! threat × certainty itself). The in-process bus is FIFO as well, to keep both implementations
//! alike.

mod config;
mod delivery;
mod error;
mod memory;
mod message;
mod observe;
mod rabbit;

use std::fmt::Debug;

pub use futures::future::BoxFuture;

pub use config::{BusConfig, ReconnectConfig};
pub use delivery::{DeadLetter, Delivery};
pub use error::BusError;
pub use memory::InProcessBus;
pub use message::{
    DELIVERY_LIMIT_REASON, HEADER_ATTEMPT, HEADER_LAST_ERROR, HEADER_QUEUE, HEADER_REASON,
    HEADER_SCHEMA_VERSION, HEADER_TRACEPARENT, HEADER_TRACESTATE, Message, QueueName, Topic,
};
pub use rabbit::RabbitBus;

/// Publishes messages to a topic exchange.
pub trait Publisher: Send + Sync + Debug {
    /// Publishes `msg` to `topic`. Resolves only after the broker confirmed the message (it is
    /// then stored in every bound queue). A topic with no bound queue is an error
    /// ([`BusError::Unroutable`]), never a silent drop. Across a broker outage the RabbitMQ
    /// implementation retries until `publish_timeout`; a retried publish may reach consumers
    /// twice, which idempotent consumers tolerate.
    fn publish<'a>(&'a self, topic: Topic, msg: Message) -> BoxFuture<'a, Result<(), BusError>>;

    /// Puts `msg` straight into `queue`'s dead-letter queue with `reason` (header
    /// `x-culprit-reason`), confirmed like [`publish`](Publisher::publish): for input that never
    /// became a message on a topic, such as an unparseable ingest record. The queue is declared
    /// when it does not exist yet.
    fn dead_letter<'a>(
        &'a self,
        queue: QueueName,
        msg: Message,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), BusError>>;

    /// True while the broker refuses to read from this client (RabbitMQ `connection.blocked`,
    /// raised by a memory or disk alarm): publishes would wait, so callers can push back at once.
    fn blocked(&self) -> bool {
        false
    }

    /// Puts `msg` into the work queue `queue` once `delay` (1 ms to 24 days) has passed, e.g. a
    /// re-query for late telemetry. Resolves once confirmed. On RabbitMQ the message waits in
    /// `{prefix}.{queue}.delay.{ms}` (a quorum queue per delay whose TTL dead-letters into the
    /// work queue, declared on first use), so the wait survives restarts of the publisher and
    /// of the broker; the in-process bus waits on tokio time.
    fn publish_delayed<'a>(
        &'a self,
        queue: QueueName,
        msg: Message,
        delay: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), BusError>>;
}

/// The delay in whole milliseconds, checked like a retry delay.
pub(crate) fn delay_ms(delay: std::time::Duration) -> Result<u64, BusError> {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 || ms > u64::from(u32::MAX >> 1) {
        return Err(BusError::InvalidInput {
            field: "delay".into(),
            reason: format!("{delay:?} is not between 1 ms and 24 days"),
        });
    }
    Ok(ms)
}

/// Opens consumers on work queues.
pub trait Subscriber: Send + Sync + Debug {
    /// Starts consuming `queue` with at most `prefetch` unsettled deliveries at a time.
    fn subscribe<'a>(
        &'a self,
        queue: QueueName,
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BusError>>;

    /// Declares `queue` (with its retry and dead-letter queues) and binds it to `topic`.
    /// The standard queues are bound to their topic already; this is for extra bindings and
    /// [`QueueName::Custom`] queues.
    fn bind<'a>(&'a self, queue: QueueName, topic: Topic) -> BoxFuture<'a, Result<(), BusError>>;
}

/// A stream of deliveries from one work queue.
pub trait Consumer: Send + Debug {
    /// The next delivery. `None` only once the bus is shut down; a broker restart is ridden
    /// out (the consumer re-subscribes and keeps yielding).
    fn next<'a>(&'a mut self) -> BoxFuture<'a, Option<Delivery>>;
}

/// Operations views for tests and ops: dead letters and queue depth.
pub trait BusInspector: Send + Sync + Debug {
    /// Up to `limit` messages of `queue`'s dead-letter queue, oldest first, with their reasons.
    /// Non-destructive: the messages stay in the dead-letter queue.
    fn dead_letters<'a>(
        &'a self,
        queue: QueueName,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>>;

    /// Messages ready in `queue` (not counting unacknowledged or delayed ones).
    fn queue_depth<'a>(&'a self, queue: QueueName) -> BoxFuture<'a, Result<u64, BusError>>;
}

/// Everything a service needs from a bus, for `Arc<dyn Bus>`.
pub trait Bus: Publisher + Subscriber + BusInspector {}

impl<T: Publisher + Subscriber + BusInspector> Bus for T {}

/// Locks a std mutex. The guarded data is only ever updated in single steps, so a panic while
/// holding a lock cannot leave it inconsistent and poisoning is ignored.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What both implementations check before subscribing.
pub(crate) fn check_subscription(queue: &QueueName, prefetch: u16) -> Result<(), BusError> {
    queue.validate()?;
    if prefetch == 0 {
        return Err(BusError::InvalidInput {
            field: "prefetch".into(),
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}
