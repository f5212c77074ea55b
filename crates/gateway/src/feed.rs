//! Feeds the watch log from `culprit.correlations`: one shared queue for all replicas, so each
//! event is appended once; redeliveries are absorbed by the log's dedup key.

use std::sync::Arc;

use culprit_bus::{Delivery, QueueName, Subscriber, Topic};
use culprit_proto::v1 as pb;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::ctx::Ctx;

/// The queue (under the bus prefix) that feeds the watch log.
pub const WATCH_QUEUE: &str = "gateway-watch";

/// Declares and binds the watch queue (before anything is published that should be seen).
pub(crate) async fn bind(subscriber: &dyn Subscriber) -> Result<(), culprit_bus::BusError> {
    subscriber
        .bind(
            QueueName::Custom(WATCH_QUEUE.to_owned()),
            Topic::Correlations,
        )
        .await
}

/// Dedup key of a message: same id and same bytes is the same event.
fn dedup_key(d: &Delivery) -> String {
    let digest = Sha256::digest(&d.message.payload);
    let short: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{}|{short}", d.message.message_id)
}

async fn handle(ctx: &Ctx, d: Delivery) {
    if let Err(e) = pb::CorrelationEvent::decode(d.message.payload.as_slice()) {
        let reason = format!("not a culprit.v1.CorrelationEvent: {e}");
        if let Err(e) = d.dead_letter(&reason).await {
            tracing::warn!(error = %e, "dead-lettering failed");
        }
        return;
    }
    let settled = match ctx
        .h
        .stores
        .append(&dedup_key(&d), &d.message.payload)
        .await
    {
        Ok(_) => d.ack().await,
        Err(e) => d.retry(&e.to_string()).await,
    };
    if let Err(e) = settled {
        tracing::warn!(error = %e, "watch feed delivery could not be settled");
    }
}

pub(crate) async fn run(ctx: Arc<Ctx>, subscriber: Arc<dyn Subscriber>) {
    let shutdown = ctx.shutdown.clone();
    let mut consumer = match subscriber
        .subscribe(QueueName::Custom(WATCH_QUEUE.to_owned()), 64)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "watch feed cannot consume its queue");
            return;
        }
    };
    loop {
        tokio::select! {
            d = consumer.next() => match d {
                Some(d) => handle(&ctx, d).await,
                None => return,
            },
            _ = crate::ctx::stopped(shutdown.clone()) => return,
        }
    }
}
