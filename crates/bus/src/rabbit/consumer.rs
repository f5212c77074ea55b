//! A consumer that re-subscribes after every broker or channel failure, and the settlement
//! of its deliveries (ack, retry through a TTL'd retry queue, dead letter).

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;

use super::convert;
use super::link::Shared;
use super::topology::Topology;
use crate::config::Backoff;
use crate::delivery::Settle;
use crate::{BusError, Consumer, Delivery, Message, QueueName};

#[derive(Debug)]
pub(crate) struct RabbitConsumer {
    shared: Arc<Shared>,
    queue: QueueName,
    prefetch: u16,
    /// The live subscription; its channel closes (requeueing unacked messages) when dropped.
    current: Option<(lapin::Channel, lapin::Consumer)>,
    backoff: Backoff,
}

impl RabbitConsumer {
    pub(crate) async fn open(
        shared: Arc<Shared>,
        queue: QueueName,
        prefetch: u16,
    ) -> Result<Self, BusError> {
        let mut consumer = Self {
            backoff: Backoff::new(&shared.cfg.reconnect),
            shared,
            queue,
            prefetch,
            current: None,
        };
        consumer.current = Some(consumer.subscribe().await?);
        Ok(consumer)
    }

    async fn subscribe(&self) -> Result<(lapin::Channel, lapin::Consumer), BusError> {
        let link = self.shared.link(None).await?;
        let channel = link
            .conn
            .create_channel()
            .await
            .map_err(|e| BusError::amqp("open channel", e))?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| BusError::amqp("set prefetch", e))?;
        let topology = Topology {
            channel: &channel,
            names: &self.shared.names,
            cfg: &self.shared.cfg,
        };
        topology.declare_queue(&self.queue).await?;
        let name = self.shared.names.queue(&self.queue);
        let consumer = channel
            .basic_consume(
                convert::short("queue", &name)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| BusError::amqp(format!("consume {name}"), e))?;
        tracing::debug!(queue = %name, prefetch = self.prefetch, "consuming");
        Ok((channel, consumer))
    }

    async fn next_delivery(&mut self) -> Option<Delivery> {
        loop {
            if self.shared.is_shut_down() {
                return None;
            }
            let Some((_, consumer)) = self.current.as_mut() else {
                self.resubscribe().await?;
                continue;
            };
            let item = tokio::select! {
                item = consumer.next() => item,
                () = self.shared.shut_down() => return None,
            };
            match item {
                Some(Ok(delivery)) => return Some(self.delivery(delivery)),
                Some(Err(error)) => {
                    tracing::warn!(queue = %self.queue, %error, "consumer interrupted; re-subscribing");
                    self.current = None;
                }
                None => {
                    tracing::warn!(queue = %self.queue, "consumer cancelled by the broker; re-subscribing");
                    self.current = None;
                }
            }
        }
    }

    /// One re-subscription attempt; waits out the backoff on failure. `None`: shut down.
    async fn resubscribe(&mut self) -> Option<()> {
        match self.subscribe().await {
            Ok(live) => {
                tracing::info!(queue = %self.queue, "consumer re-subscribed");
                self.current = Some(live);
                self.backoff.reset();
            }
            Err(BusError::Closed) => return None,
            Err(error) => {
                let delay = self.backoff.next_delay();
                tracing::warn!(queue = %self.queue, %error, ?delay, "re-subscribe failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.shared.shut_down() => return None,
                }
            }
        }
        Some(())
    }

    fn delivery(&self, delivery: lapin::message::Delivery) -> Delivery {
        let (message, attempt) = convert::message(&delivery.properties, delivery.data);
        let settle = RabbitSettle {
            shared: self.shared.clone(),
            queue: self.queue.clone(),
            message_id: message.message_id.clone(),
            acker: delivery.acker,
        };
        Delivery::new(
            message,
            attempt,
            delivery.redelivered,
            self.queue.clone(),
            self.shared.cfg.max_attempts,
            Box::new(settle),
        )
    }
}

impl Consumer for RabbitConsumer {
    fn next<'a>(&'a mut self) -> BoxFuture<'a, Option<Delivery>> {
        Box::pin(self.next_delivery())
    }
}

#[derive(Debug)]
struct RabbitSettle {
    shared: Arc<Shared>,
    queue: QueueName,
    message_id: String,
    acker: Acker,
}

impl RabbitSettle {
    async fn ack_now(self) -> Result<(), BusError> {
        match self.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(BusError::ChannelClosed {
                message_id: self.message_id,
            }),
        }
    }

    /// Publishes `message` to the dlx under `target` (a queue name), then acks the original.
    /// If the copy cannot be published the original goes back to its queue instead.
    async fn forward(self, message: Message, attempt: u32, target: String) -> Result<(), BusError> {
        let props = convert::properties(&message, attempt)?;
        let dlx = self.shared.names.dlx();
        let sent = self
            .shared
            .publish(&dlx, &target, &message.payload, props, &message.message_id)
            .await;
        match sent {
            Ok(()) => self.ack_now().await,
            Err(error) => {
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                // Best effort: a closed channel requeues it anyway.
                let _ = self.acker.nack(requeue).await;
                Err(error)
            }
        }
    }
}

impl Settle for RabbitSettle {
    fn abandon(self: Box<Self>, _message: Message) {
        // Dropped unsettled: hand it back now rather than holding a prefetch slot until the
        // channel closes. Without a runtime the channel's closing requeues it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                let _ = self.acker.nack(requeue).await;
            });
        }
    }

    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(self.ack_now())
    }

    fn retry(
        self: Box<Self>,
        message: Message,
        failed_attempt: u32,
    ) -> BoxFuture<'static, Result<(), BusError>> {
        let (slot, _) = self.shared.cfg.retry_slot(failed_attempt);
        let target = self.shared.names.retry(&self.queue, slot);
        Box::pin(self.forward(message, failed_attempt.saturating_add(1), target))
    }

    fn dead_letter(
        self: Box<Self>,
        message: Message,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), BusError>> {
        let target = self.shared.names.dlq(&self.queue);
        Box::pin(self.forward(message, attempt, target))
    }
}
