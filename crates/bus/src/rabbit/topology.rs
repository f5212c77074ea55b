//! Declaring and deleting exchanges and queues (see the crate docs for the layout).

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::config::Names;
use crate::{BusConfig, BusError, QueueName, Topic};

/// Binding key matching every routing key on a topic exchange.
const ALL_KEYS: &str = "#";

#[derive(Debug)]
pub(crate) struct Topology<'a> {
    pub(crate) channel: &'a Channel,
    pub(crate) names: &'a Names,
    pub(crate) cfg: &'a BusConfig,
}

impl Topology<'_> {
    /// Exchanges, the standard queues and the extra `(queue, topic)` bindings.
    pub(crate) async fn declare_all(&self, extra: &[(QueueName, Topic)]) -> Result<(), BusError> {
        for topic in Topic::ALL {
            self.exchange(&self.names.exchange(topic), ExchangeKind::Topic)
                .await?;
        }
        self.exchange(&self.names.dlx(), ExchangeKind::Direct)
            .await?;
        for queue in QueueName::STANDARD {
            self.declare_queue(&queue).await?;
        }
        for (queue, topic) in extra {
            self.declare_queue(queue).await?;
            self.bind(queue, *topic).await?;
        }
        Ok(())
    }

    /// A work queue with its dead-letter and retry queues, bound to the dlx (and to its
    /// standard topic).
    pub(crate) async fn declare_queue(&self, queue: &QueueName) -> Result<(), BusError> {
        let work = self.names.queue(queue);
        let dlq = self.names.dlq(queue);
        let dlx = self.names.dlx();
        self.quorum(&dlq, quorum_args()).await?;
        self.bind_key(&dlq, &dlx, &dlq).await?;

        let mut args = dead_lettering(&dlx, &dlq);
        if let Some(limit) = self.cfg.delivery_limit {
            args.insert("x-delivery-limit".into(), int(u64::from(limit)));
        }
        self.quorum(&work, args).await?;
        // Expired retries come back to the work queue through the dlx.
        self.bind_key(&work, &dlx, &work).await?;
        if let Some(topic) = queue.topic() {
            self.bind(queue, topic).await?;
        }

        for (index, delay) in self.cfg.retry_delays.iter().enumerate() {
            let retry = self.names.retry(queue, index + 1);
            let mut args = dead_lettering(&dlx, &work);
            let ttl_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            args.insert("x-message-ttl".into(), int(ttl_ms));
            self.quorum(&retry, args).await?;
            self.bind_key(&retry, &dlx, &retry).await?;
        }
        Ok(())
    }

    /// The queue where messages wait `ms` before expiring into `queue` (declared with it).
    pub(crate) async fn declare_delay(&self, queue: &QueueName, ms: u64) -> Result<(), BusError> {
        self.declare_queue(queue).await?;
        let name = self.names.delay(queue, ms);
        let mut args = dead_lettering(&self.names.dlx(), &self.names.queue(queue));
        args.insert("x-message-ttl".into(), int(ms));
        self.quorum(&name, args).await?;
        self.bind_key(&name, &self.names.dlx(), &name).await
    }

    pub(crate) async fn bind(&self, queue: &QueueName, topic: Topic) -> Result<(), BusError> {
        let work = self.names.queue(queue);
        self.bind_key(&work, &self.names.exchange(topic), ALL_KEYS)
            .await
    }

    /// Deletes a work queue with its retry and dead-letter queues.
    pub(crate) async fn delete_queue(&self, queue: &QueueName) -> Result<(), BusError> {
        let mut names = vec![self.names.queue(queue), self.names.dlq(queue)];
        names.extend((1..=self.cfg.retry_delays.len()).map(|n| self.names.retry(queue, n)));
        for name in names {
            self.channel
                .queue_delete(short(&name)?, QueueDeleteOptions::default())
                .await
                .map_err(|e| BusError::amqp(format!("delete queue {name}"), e))?;
        }
        Ok(())
    }

    /// Deletes the topic exchanges and the dlx.
    pub(crate) async fn delete_exchanges(&self) -> Result<(), BusError> {
        let mut exchanges: Vec<String> =
            Topic::ALL.iter().map(|t| self.names.exchange(*t)).collect();
        exchanges.push(self.names.dlx());
        for name in exchanges {
            self.channel
                .exchange_delete(short(&name)?, ExchangeDeleteOptions::default())
                .await
                .map_err(|e| BusError::amqp(format!("delete exchange {name}"), e))?;
        }
        Ok(())
    }

    async fn exchange(&self, name: &str, kind: ExchangeKind) -> Result<(), BusError> {
        let options = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        self.channel
            .exchange_declare(short(name)?, kind, options, FieldTable::default())
            .await
            .map_err(|e| BusError::amqp(format!("declare exchange {name}"), e))
    }

    async fn quorum(&self, name: &str, args: FieldTable) -> Result<(), BusError> {
        self.channel
            .queue_declare(short(name)?, QueueDeclareOptions::durable(), args)
            .await
            .map(drop)
            .map_err(|e| BusError::amqp(format!("declare queue {name}"), e))
    }

    async fn bind_key(&self, queue: &str, exchange: &str, key: &str) -> Result<(), BusError> {
        self.channel
            .queue_bind(
                short(queue)?,
                short(exchange)?,
                short(key)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| BusError::amqp(format!("bind {queue} to {exchange} ({key})"), e))
    }
}

fn short(name: &str) -> Result<ShortString, BusError> {
    super::convert::short("name", name)
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn int(value: u64) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(value).unwrap_or(i64::MAX))
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("quorum"));
    args
}

/// Quorum dead-lettering to `dlx` with `key`, at-least-once (RabbitMQ ≥ 3.10): a message is
/// not lost if the broker fails mid-way. At-least-once needs `reject-publish` overflow.
fn dead_lettering(dlx: &str, key: &str) -> FieldTable {
    let mut args = quorum_args();
    args.insert("x-dead-letter-exchange".into(), text(dlx));
    args.insert("x-dead-letter-routing-key".into(), text(key));
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    args.insert("x-overflow".into(), text("reject-publish"));
    args
}
