//! The shared connection: one AMQP connection with a publisher-confirm channel, replaced
//! (with jittered exponential backoff, topology re-declared) whenever it breaks.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio::time::Instant;

use super::convert::short;
use super::topology::Topology;
use crate::config::{Backoff, Names};
use crate::lock;
use crate::{BusConfig, BusError, QueueName, Topic};

/// How long one connection attempt may take before it counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) conn: Arc<Connection>,
    publish: Channel,
}

impl Link {
    fn healthy(&self) -> bool {
        self.conn.status().connected() && self.publish.status().connected()
    }
}

/// State shared by the bus, its consumers and its deliveries.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: BusConfig,
    pub(crate) names: Names,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    /// Custom queues and extra bindings, re-declared on every new connection.
    bindings: Mutex<BTreeSet<(QueueName, Topic)>>,
    custom_queues: Mutex<BTreeSet<QueueName>>,
    shutdown: watch::Sender<bool>,
}

/// Outcome of one publish.
enum Sent {
    Confirmed,
    Unroutable,
    Nacked,
    Broken(lapin::Error),
}

impl Shared {
    pub(crate) fn new(cfg: BusConfig) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            names: cfg.names(),
            cfg,
            link: tokio::sync::Mutex::new(None),
            bindings: Mutex::new(BTreeSet::new()),
            custom_queues: Mutex::new(BTreeSet::new()),
            shutdown,
        }
    }

    /// The current connection is blocked by the broker (a resource alarm). A link being
    /// replaced right now counts as not blocked: the publish will find out.
    pub(crate) fn blocked(&self) -> bool {
        self.link
            .try_lock()
            .ok()
            .and_then(|slot| slot.as_ref().map(|l| l.conn.status().blocked()))
            .unwrap_or(false)
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves when the bus is shut down.
    pub(crate) async fn shut_down(&self) {
        let mut rx = self.shutdown.subscribe();
        // An error means the sender is gone, which is a shutdown too.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    pub(crate) async fn close(&self) {
        self.shutdown.send_replace(true);
        if let Some(link) = self.link.lock().await.take() {
            // Best effort: the broker requeues unacked messages either way.
            let _ = link.conn.close(200, "bus shut down".into()).await;
        }
    }

    pub(crate) fn remember(&self, queue: &QueueName, topic: Option<Topic>) {
        if matches!(queue, QueueName::Custom(_)) {
            lock(&self.custom_queues).insert(queue.clone());
        }
        if let Some(topic) = topic {
            lock(&self.bindings).insert((queue.clone(), topic));
        }
    }

    pub(crate) fn custom_queues(&self) -> Vec<QueueName> {
        lock(&self.custom_queues).iter().cloned().collect()
    }

    /// A healthy link, (re)connecting as needed. Without a deadline it waits until the
    /// broker is back or the bus shuts down.
    pub(crate) async fn link(&self, deadline: Option<Instant>) -> Result<Arc<Link>, BusError> {
        let slot = match deadline {
            Some(at) => tokio::time::timeout_at(at, self.link.lock())
                .await
                .map_err(|_| self.unavailable("timed out waiting for the connection"))?,
            None => self.link.lock().await,
        };
        let mut slot = slot;
        if let Some(link) = slot.as_ref().filter(|l| l.healthy()) {
            return Ok(link.clone());
        }
        let link = self.reconnect(deadline, slot.take()).await?;
        *slot = Some(link.clone());
        Ok(link)
    }

    async fn reconnect(
        &self,
        deadline: Option<Instant>,
        old: Option<Arc<Link>>,
    ) -> Result<Arc<Link>, BusError> {
        let mut backoff = Backoff::new(&self.cfg.reconnect);
        let mut old = old;
        loop {
            if self.is_shut_down() {
                return Err(BusError::Closed);
            }
            let reused = old.take().filter(|l| l.conn.status().connected());
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, self.open(reused)).await;
            let error = match attempt {
                Ok(Ok(link)) => {
                    tracing::info!(url = %self.cfg.redacted_url(), prefix = %self.cfg.prefix, "RabbitMQ link up");
                    return Ok(Arc::new(link));
                }
                Ok(Err(error)) => error,
                Err(_) => self.unavailable("connection attempt timed out"),
            };
            let delay = backoff.next_delay();
            if deadline.is_some_and(|at| Instant::now() + delay >= at) {
                return Err(error);
            }
            tracing::warn!(%error, ?delay, "RabbitMQ link down; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shut_down() => return Err(BusError::Closed),
            }
        }
    }

    /// Opens a confirm channel (on `reuse` when its connection still stands) and declares
    /// the topology, so a broker that lost its state gets it back.
    async fn open(&self, reuse: Option<Arc<Link>>) -> Result<Link, BusError> {
        let conn = match reuse {
            Some(link) => link.conn.clone(),
            None => Arc::new(self.connect().await?),
        };
        let publish = conn
            .create_channel()
            .await
            .map_err(|e| BusError::amqp("open channel", e))?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| BusError::amqp("enable publisher confirms", e))?;
        let extra: Vec<_> = lock(&self.bindings).iter().cloned().collect();
        let topology = Topology {
            channel: &publish,
            names: &self.names,
            cfg: &self.cfg,
        };
        topology.declare_all(&extra).await?;
        Ok(Link { conn, publish })
    }

    async fn connect(&self) -> Result<Connection, BusError> {
        let name = LongString::from(format!("culprit-bus {}", self.cfg.prefix));
        let props = ConnectionProperties::default().with_connection_name(name);
        Connection::connect(self.cfg.url.expose_secret(), props)
            .await
            .map_err(|source| BusError::Connect {
                url: self.cfg.redacted_url(),
                source,
            })
    }

    fn unavailable(&self, what: &str) -> BusError {
        BusError::Unavailable(format!("{what} ({})", self.cfg.redacted_url()))
    }

    /// Publishes with `mandatory` and waits for the broker's confirm, riding out broken
    /// connections until `publish_timeout`.
    pub(crate) async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        props: BasicProperties,
        message_id: &str,
    ) -> Result<(), BusError> {
        let deadline = Instant::now() + self.cfg.publish_timeout;
        let mut backoff = Backoff::new(&self.cfg.reconnect);
        let exchange_name = short("exchange", exchange)?;
        let key = short("routing key", routing_key)?;
        loop {
            let link = self.link(Some(deadline)).await?;
            let sent = send(
                &link.publish,
                exchange_name.clone(),
                key.clone(),
                payload,
                props.clone(),
            )
            .await;
            let error = match sent {
                Sent::Confirmed => return Ok(()),
                Sent::Unroutable => {
                    return Err(BusError::Unroutable {
                        exchange: exchange.to_owned(),
                        message_id: message_id.to_owned(),
                    });
                }
                Sent::Nacked => {
                    return Err(BusError::Rejected {
                        exchange: exchange.to_owned(),
                        message_id: message_id.to_owned(),
                    });
                }
                Sent::Broken(error) => error,
            };
            let delay = backoff.next_delay();
            if Instant::now() + delay >= deadline {
                return Err(BusError::Unavailable(format!(
                    "publish of {message_id:?} to {exchange} failed until the timeout: {error}"
                )));
            }
            tracing::warn!(%error, exchange, message_id, "publish interrupted; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

async fn send(
    channel: &Channel,
    exchange: ShortString,
    routing_key: ShortString,
    payload: &[u8],
    props: BasicProperties,
) -> Sent {
    // Mandatory: a message no queue is bound for comes back instead of vanishing.
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = match channel
        .basic_publish(exchange, routing_key, options, payload, props)
        .await
    {
        Ok(confirm) => confirm,
        Err(error) => return Sent::Broken(error),
    };
    match confirm.await {
        Ok(Confirmation::Ack(None)) => Sent::Confirmed,
        Ok(Confirmation::Ack(Some(_returned))) => Sent::Unroutable,
        // Confirms are always selected on this channel, so `NotRequested` cannot happen.
        Ok(Confirmation::Nack(_) | Confirmation::NotRequested) => Sent::Nacked,
        Err(error) => Sent::Broken(error),
    }
}
