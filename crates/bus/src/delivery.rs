//! A delivery and how it is settled.

use std::fmt::Debug;

use futures::future::BoxFuture;

use crate::{BusError, Message, QueueName};

/// How an implementation settles one delivery.
pub(crate) trait Settle: Send + Debug {
    /// The delivery was dropped unsettled: give the message back to its queue for
    /// redelivery, as a broker does when a consumer goes away.
    fn abandon(self: Box<Self>, message: Message);

    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BusError>>;

    /// Re-queues `message` after the retry delay for `failed_attempt`.
    fn retry(
        self: Box<Self>,
        message: Message,
        failed_attempt: u32,
    ) -> BoxFuture<'static, Result<(), BusError>>;

    /// Moves `message` (already carrying its reason header) to the dead-letter queue.
    fn dead_letter(
        self: Box<Self>,
        message: Message,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), BusError>>;
}

/// One message handed to a consumer. Settle it with [`ack`](Delivery::ack) after the hand-off
/// (result published with a confirm, or stored), [`retry`](Delivery::retry) on a transient
/// failure, or [`dead_letter`](Delivery::dead_letter) when it can never succeed. Dropping it
/// unsettled returns the message to its queue for immediate redelivery.
#[derive(Debug)]
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// 1 on first delivery, n after n-1 [`retry`](Delivery::retry) calls.
    pub attempt: u32,
    /// The broker delivered it before without a settlement (consumer crash or restart).
    pub redelivered: bool,
    /// The work queue it came from.
    pub queue: QueueName,
    max_attempts: u32,
    settle: Option<Box<dyn Settle>>,
    /// `bus.consume`, in the publisher's trace.
    span: tracing::Span,
}

impl Delivery {
    pub(crate) fn new(
        mut message: Message,
        attempt: u32,
        redelivered: bool,
        queue: QueueName,
        max_attempts: u32,
        settle: Box<dyn Settle>,
    ) -> Self {
        let span = crate::observe::incoming(&mut message, &queue, attempt, redelivered);
        Self {
            message,
            attempt,
            redelivered,
            queue,
            max_attempts,
            settle: Some(settle),
            span,
        }
    }

    /// The span of this delivery (`bus.consume`), whose parent is the publisher's span (W3C
    /// trace context in the headers). Run the handling inside it
    /// (`handle(d).instrument(d.span().clone())`), so what the handler publishes continues
    /// the same trace.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// When the detection behind this message entered the system (trace baggage), for the
    /// ingest-to-result latency.
    pub fn ingested_at(&self) -> Option<std::time::SystemTime> {
        culprit_telemetry::propagation::ingested_at(&self.message.headers)
    }

    fn take(&mut self) -> Result<(Box<dyn Settle>, Message), BusError> {
        // Only `Drop` leaves `settle` empty, so this never fails in practice.
        let settle = self.settle.take().ok_or(BusError::Closed)?;
        Ok((settle, std::mem::take(&mut self.message)))
    }

    /// Acknowledges the message: it is done and leaves the queue.
    pub async fn ack(mut self) -> Result<(), BusError> {
        let (settle, _) = self.take()?;
        settle.ack().await
    }

    /// Redelivers the message after the configured delay for this attempt (a TTL'd retry
    /// queue, never a sleep in the consumer). After `max_attempts` it is dead-lettered with
    /// `reason` instead.
    pub async fn retry(mut self, reason: &str) -> Result<(), BusError> {
        if self.attempt >= self.max_attempts {
            let reason = format!("{reason} (gave up after {} attempts)", self.attempt);
            return self.dead_letter(&reason).await;
        }
        let (settle, mut message) = self.take()?;
        message
            .headers
            .insert(crate::HEADER_LAST_ERROR.to_owned(), reason.to_owned());
        settle.retry(message, self.attempt).await
    }

    /// Moves the message to its queue's dead-letter queue with `reason` in header
    /// `x-culprit-reason`.
    pub async fn dead_letter(mut self, reason: &str) -> Result<(), BusError> {
        let (settle, mut message) = self.take()?;
        message
            .headers
            .insert(crate::HEADER_REASON.to_owned(), reason.to_owned());
        message.headers.insert(
            crate::HEADER_QUEUE.to_owned(),
            self.queue.as_str().to_owned(),
        );
        let result = settle.dead_letter(message, self.attempt).await;
        if result.is_ok() {
            culprit_metrics::metrics().dead_lettered(self.queue.as_str(), reason);
        }
        result
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(settle) = self.settle.take() {
            settle.abandon(std::mem::take(&mut self.message));
        }
    }
}

/// A message in a dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message as it was dead-lettered (headers include `x-culprit-reason`).
    pub message: Message,
    /// Why: the `x-culprit-reason` header, or the broker's reason (e.g. `delivery_limit`).
    pub reason: String,
    /// Attempts made before it was dead-lettered.
    pub attempts: u32,
}
