//! RabbitMQ implementation (lapin 4 on tokio): publisher confirms, mandatory publishing,
//! manual acks with a prefetch, quorum queues, TTL'd retry queues, a dead-letter exchange,
//! and reconnection with jittered exponential backoff that restores topology and consumers.

mod consumer;
mod convert;
mod link;
mod topology;

use std::sync::Arc;

use futures::future::BoxFuture;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::time::Instant;

use self::consumer::RabbitConsumer;
use self::link::{Link, Shared};
use self::topology::Topology;
use crate::{
    BusConfig, BusError, BusInspector, Consumer, DeadLetter, Message, Publisher, QueueName,
    Subscriber, Topic,
};

/// The RabbitMQ bus. Cheap to clone (clones share one connection). Consumers and deliveries
/// keep working if every clone is dropped; [`RabbitBus::close`] ends them.
#[derive(Debug, Clone)]
pub struct RabbitBus {
    shared: Arc<Shared>,
}

impl RabbitBus {
    /// Connects (retrying with backoff for up to `reconnect.connect_timeout`) and declares
    /// the topology. The error names RabbitMQ and the URL (password redacted).
    pub async fn connect(cfg: BusConfig) -> Result<Self, BusError> {
        cfg.validate()?;
        let deadline = Instant::now() + cfg.reconnect.connect_timeout;
        let shared = Arc::new(Shared::new(cfg));
        shared.link(Some(deadline)).await?;
        Ok(Self { shared })
    }

    /// Declares (idempotently) the exchanges, the standard queues and every custom queue and
    /// binding made through this bus. Done on every (re)connection anyway.
    pub async fn declare_topology(&self) -> Result<(), BusError> {
        let link = self.link().await?;
        let channel = open_channel(&link).await?;
        let topology = self.topology(&channel);
        topology.declare_all(&[]).await?;
        for queue in self.shared.custom_queues() {
            topology.declare_queue(&queue).await?;
        }
        Ok(())
    }

    /// Deletes every queue (work, retry, dead-letter) and exchange of this prefix that this
    /// bus knows: for tests and decommissioning. Drop consumers first, or they re-declare.
    pub async fn delete_topology(&self) -> Result<(), BusError> {
        let link = self.link().await?;
        let channel = open_channel(&link).await?;
        let topology = self.topology(&channel);
        let mut queues = QueueName::STANDARD.to_vec();
        queues.extend(self.shared.custom_queues());
        for queue in &queues {
            topology.delete_queue(queue).await?;
        }
        topology.delete_exchanges().await
    }

    /// Deletes one work queue with its retry and dead-letter queues (messages included).
    /// It comes back on the next reconnection or subscription.
    pub async fn delete_queue(&self, queue: &QueueName) -> Result<(), BusError> {
        queue.validate()?;
        let link = self.link().await?;
        let channel = open_channel(&link).await?;
        self.topology(&channel).delete_queue(queue).await
    }

    /// Deletes the delay queues of `queue` for these delays (see
    /// [`Publisher::publish_delayed`]), with any message still waiting in them.
    pub async fn delete_delay_queues(
        &self,
        queue: &QueueName,
        delays: &[std::time::Duration],
    ) -> Result<(), BusError> {
        queue.validate()?;
        let link = self.link().await?;
        let channel = open_channel(&link).await?;
        for delay in delays {
            let name = self.shared.names.delay(queue, crate::delay_ms(*delay)?);
            channel
                .queue_delete(
                    convert::short("queue", &name)?,
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await
                .map_err(|e| BusError::amqp(format!("delete queue {name}"), e))?;
        }
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }

    /// Shuts the bus down: consumers' `next()` returns `None`, unacked messages go back to
    /// their queues, publishes fail with [`BusError::Closed`].
    pub async fn close(&self) {
        self.shared.close().await;
    }

    /// The configuration in use.
    pub fn config(&self) -> &BusConfig {
        &self.shared.cfg
    }

    async fn link(&self) -> Result<Arc<Link>, BusError> {
        let deadline = Instant::now() + self.shared.cfg.publish_timeout;
        self.shared.link(Some(deadline)).await
    }

    fn topology<'a>(&'a self, channel: &'a lapin::Channel) -> Topology<'a> {
        Topology {
            channel,
            names: &self.shared.names,
            cfg: &self.shared.cfg,
        }
    }

    async fn publish_now(&self, topic: Topic, msg: Message) -> Result<(), BusError> {
        if self.shared.is_shut_down() {
            return Err(BusError::Closed);
        }
        msg.validate()?;
        let props = convert::properties(&msg, 1)?;
        let exchange = self.shared.names.exchange(topic);
        self.shared
            .publish(
                &exchange,
                topic.as_str(),
                &msg.payload,
                props,
                &msg.message_id,
            )
            .await
    }

    /// Publishes to the dlx with the dead-letter queue's name as routing key; a queue the
    /// broker does not know (first use, or a broker that lost its state) is declared first.
    async fn dead_letter_now(
        &self,
        queue: QueueName,
        mut msg: Message,
        reason: &str,
    ) -> Result<(), BusError> {
        if self.shared.is_shut_down() {
            return Err(BusError::Closed);
        }
        queue.validate()?;
        msg.headers
            .insert(crate::HEADER_REASON.to_owned(), reason.to_owned());
        msg.headers
            .insert(crate::HEADER_QUEUE.to_owned(), queue.as_str().to_owned());
        msg.validate()?;
        let dlq = self.shared.names.dlq(&queue);
        self.publish_via_dlx(&queue, &dlq, &msg, None).await
    }

    /// Publishes to the dlx with the delay queue's name as routing key; the delay queue is
    /// declared when the broker does not know it (first use, or a broker that lost its state).
    async fn publish_delayed_now(
        &self,
        queue: QueueName,
        msg: Message,
        delay: std::time::Duration,
    ) -> Result<(), BusError> {
        if self.shared.is_shut_down() {
            return Err(BusError::Closed);
        }
        queue.validate()?;
        msg.validate()?;
        let ms = crate::delay_ms(delay)?;
        let name = self.shared.names.delay(&queue, ms);
        self.publish_via_dlx(&queue, &name, &msg, Some(ms)).await
    }

    /// Publishes to the dlx under `routing_key` (a dead-letter or delay queue of `queue`). A
    /// message no queue takes (first use, or a broker that lost its state) declares `queue`
    /// with its dead-letter queue, or its delay queue of `delay_ms`, and is published once more.
    async fn publish_via_dlx(
        &self,
        queue: &QueueName,
        routing_key: &str,
        msg: &Message,
        delay_ms: Option<u64>,
    ) -> Result<(), BusError> {
        let props = convert::properties(msg, 1)?;
        let dlx = self.shared.names.dlx();
        let mut declared = false;
        loop {
            let sent = self
                .shared
                .publish(
                    &dlx,
                    routing_key,
                    &msg.payload,
                    props.clone(),
                    &msg.message_id,
                )
                .await;
            match sent {
                Err(BusError::Unroutable { .. }) if !declared => {
                    self.shared.remember(queue, None);
                    let link = self.link().await?;
                    let channel = open_channel(&link).await?;
                    let topology = self.topology(&channel);
                    match delay_ms {
                        None => topology.declare_queue(queue).await?,
                        Some(ms) => topology.declare_delay(queue, ms).await?,
                    }
                    let _ = channel.close(200, "declared".into()).await;
                    declared = true;
                }
                other => return other,
            }
        }
    }

    async fn read_dead_letters(
        &self,
        queue: QueueName,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        queue.validate()?;
        let link = self.link().await?;
        // Fetched unacked, then the channel closes and the broker puts them all back.
        let channel = open_channel(&link).await?;
        let name = self.shared.names.dlq(&queue);
        let mut letters = Vec::new();
        while letters.len() < limit {
            let got = channel
                .basic_get(convert::short("queue", &name)?, BasicGetOptions::default())
                .await
                .map_err(|e| BusError::amqp(format!("get from {name}"), e))?;
            let Some(got) = got else { break };
            let props = &got.delivery.properties;
            let (message, attempts) = convert::message(props, got.delivery.data.clone());
            let reason = convert::dead_reason(props, &message);
            letters.push(DeadLetter {
                message,
                reason,
                attempts,
            });
        }
        let _ = channel.close(200, "peeked".into()).await;
        Ok(letters)
    }

    async fn depth(&self, queue: QueueName) -> Result<u64, BusError> {
        queue.validate()?;
        let link = self.link().await?;
        let channel = open_channel(&link).await?;
        let name = self.shared.names.queue(&queue);
        let passive = QueueDeclareOptions::durable().passive();
        let declared = channel
            .queue_declare(
                convert::short("queue", &name)?,
                passive,
                FieldTable::default(),
            )
            .await
            .map_err(|e| BusError::amqp(format!("inspect queue {name}"), e))?;
        Ok(u64::from(declared.message_count()))
    }
}

async fn open_channel(link: &Link) -> Result<lapin::Channel, BusError> {
    link.conn
        .create_channel()
        .await
        .map_err(|e| BusError::amqp("open channel", e))
}

impl Publisher for RabbitBus {
    fn publish<'a>(&'a self, topic: Topic, msg: Message) -> BoxFuture<'a, Result<(), BusError>> {
        crate::observe::publish(topic, msg, move |m| Box::pin(self.publish_now(topic, m)))
    }

    fn dead_letter<'a>(
        &'a self,
        queue: QueueName,
        msg: Message,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        let counted = queue.clone();
        crate::observe::dead_letter(
            &counted,
            reason,
            Box::pin(self.dead_letter_now(queue, msg, reason)),
        )
    }

    fn blocked(&self) -> bool {
        self.shared.blocked()
    }

    fn publish_delayed<'a>(
        &'a self,
        queue: QueueName,
        msg: Message,
        delay: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let msg = crate::observe::outgoing_delayed(msg, delay);
            self.publish_delayed_now(queue, msg, delay).await
        })
    }
}

impl Subscriber for RabbitBus {
    fn subscribe<'a>(
        &'a self,
        queue: QueueName,
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BusError>> {
        Box::pin(async move {
            crate::check_subscription(&queue, prefetch)?;
            self.shared.remember(&queue, None);
            let consumer = RabbitConsumer::open(self.shared.clone(), queue, prefetch).await?;
            Ok(Box::new(consumer) as Box<dyn Consumer>)
        })
    }

    fn bind<'a>(&'a self, queue: QueueName, topic: Topic) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            queue.validate()?;
            self.shared.remember(&queue, Some(topic));
            let link = self.link().await?;
            let channel = open_channel(&link).await?;
            let topology = self.topology(&channel);
            topology.declare_queue(&queue).await?;
            topology.bind(&queue, topic).await
        })
    }
}

impl BusInspector for RabbitBus {
    fn dead_letters<'a>(
        &'a self,
        queue: QueueName,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>> {
        Box::pin(self.read_dead_letters(queue, limit))
    }

    fn queue_depth<'a>(&'a self, queue: QueueName) -> BoxFuture<'a, Result<u64, BusError>> {
        Box::pin(self.depth(queue))
    }
}
