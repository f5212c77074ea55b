//! Trace context and metrics at the bus boundary, shared by both implementations: a publish
//! carries the publisher's W3C trace context and its publish time; a delivery opens a span
//! that continues that trace.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use crate::{BusError, Message, QueueName, Topic};

/// Header with the publish time in Unix milliseconds, for the queue-wait (lag) histogram.
pub(crate) const HEADER_PUBLISHED_AT: &str = "x-culprit-published-ms";

/// Stamps `msg` for publishing: trace context from the current span (unless it carries one)
/// and the publish time.
pub(crate) fn outgoing(mut msg: Message) -> Message {
    culprit_telemetry::propagation::inject_current(&mut msg.headers);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    msg.headers
        .insert(HEADER_PUBLISHED_AT.to_owned(), now.to_string());
    msg
}

/// Runs `publish` on the stamped message and counts it once confirmed.
pub(crate) fn publish<'a>(
    topic: Topic,
    msg: Message,
    publish: impl FnOnce(Message) -> BoxFuture<'a, Result<(), BusError>> + Send + 'a,
) -> BoxFuture<'a, Result<(), BusError>> {
    // Stamped when first polled: the caller's span is current then, also for
    // `bus.publish(..).instrument(span)`.
    Box::pin(async move {
        let result = publish(outgoing(msg)).await;
        if result.is_ok() {
            culprit_metrics::metrics().published(topic.as_str());
        }
        result
    })
}

/// The span of one delivery, child of the publisher's trace, and the consumed/lag metrics.
/// Takes the publish-time header off: bookkeeping of the bus, not the sender's.
pub(crate) fn incoming(
    message: &mut Message,
    queue: &QueueName,
    attempt: u32,
    redelivered: bool,
) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "bus.consume",
        queue = %queue,
        message_id = %message.message_id,
        attempt,
        redelivered,
        otel.kind = "consumer",
    );
    culprit_telemetry::propagation::set_parent(
        &span,
        culprit_telemetry::propagation::extract(&message.headers),
    );
    // A retried or redelivered message waited for other reasons than the queue.
    let published = published_at(message);
    message.headers.remove(HEADER_PUBLISHED_AT);
    let waited = published
        .filter(|_| attempt == 1 && !redelivered)
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    culprit_metrics::metrics().consumed(queue.as_str(), waited);
    span
}

fn published_at(message: &Message) -> Option<SystemTime> {
    let ms: u64 = message.header(HEADER_PUBLISHED_AT)?.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// As [`outgoing`] for a message due after `delay`: its queue wait counts from when it is due.
pub(crate) fn outgoing_delayed(msg: Message, delay: Duration) -> Message {
    let mut msg = outgoing(msg);
    let due = SystemTime::now()
        .checked_add(delay)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis());
    msg.headers
        .insert(HEADER_PUBLISHED_AT.to_owned(), due.to_string());
    msg
}

/// Runs a direct dead-lettering into `queue` and counts it once confirmed.
pub(crate) fn dead_letter<'a>(
    queue: &QueueName,
    reason: &'a str,
    sent: BoxFuture<'a, Result<(), BusError>>,
) -> BoxFuture<'a, Result<(), BusError>> {
    let queue = queue.as_str().to_owned();
    Box::pin(async move {
        let result = sent.await;
        if result.is_ok() {
            culprit_metrics::metrics().dead_lettered(&queue, reason);
        }
        result
    })
}
