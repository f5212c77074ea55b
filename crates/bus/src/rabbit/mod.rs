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
        Box::pin(self.publish_now(topic, msg))
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
