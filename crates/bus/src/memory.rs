//! The in-process bus: the embedded mode's queue, with the broker's semantics (bounded
//! queues, prefetch, ack, redelivery of dropped deliveries, delayed retries on tokio time,
//! dead letters with reasons).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::config::Names;
use crate::delivery::Settle;
use crate::lock;
use crate::{
    BusConfig, BusError, BusInspector, Consumer, DELIVERY_LIMIT_REASON, DeadLetter, Delivery,
    HEADER_REASON, Message, Publisher, QueueName, Subscriber, Topic,
};

/// In-process implementation of [`Publisher`], [`Subscriber`] and [`BusInspector`]. Cheap to
/// clone (clones share the queues). Each queue holds at most `queue_capacity` messages (ready,
/// unacknowledged and waiting for a retry together); a publish waits while a bound queue is
/// full, so a queue nobody consumes eventually blocks its publishers.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: Arc<BusConfig>,
    names: Names,
    state: Mutex<State>,
    shutdown: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    queues: BTreeMap<QueueName, Arc<MemQueue>>,
    bindings: BTreeMap<Topic, BTreeSet<QueueName>>,
}

#[derive(Debug)]
struct MemQueue {
    name: QueueName,
    ready: Mutex<VecDeque<Entry>>,
    notify: Notify,
    slots: Arc<Semaphore>,
    dead: Mutex<VecDeque<DeadLetter>>,
    dead_capacity: usize,
    dead_dropped: AtomicU64,
}

/// A message in a queue; `slot` is its share of the queue's capacity until it is settled.
#[derive(Debug)]
struct Entry {
    message: Message,
    attempt: u32,
    redelivered: bool,
    /// Times it came back unsettled (the broker's `x-delivery-count`).
    returns: u32,
    slot: OwnedSemaphorePermit,
}

async fn shut_down(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which is a shutdown too.
    let _ = rx.wait_for(|closed| *closed).await;
}

impl MemQueue {
    fn new(name: QueueName, cfg: &BusConfig) -> Self {
        Self {
            name,
            ready: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            slots: Arc::new(Semaphore::new(cfg.queue_capacity)),
            dead: Mutex::new(VecDeque::new()),
            dead_capacity: cfg.dead_letter_capacity,
            dead_dropped: AtomicU64::new(0),
        }
    }

    fn push(&self, entry: Entry, front: bool) {
        let mut ready = lock(&self.ready);
        if front {
            ready.push_front(entry);
        } else {
            ready.push_back(entry);
        }
        drop(ready);
        self.notify.notify_one();
    }

    async fn pop(&self) -> Entry {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut ready = lock(&self.ready);
                if let Some(entry) = ready.pop_front() {
                    if !ready.is_empty() {
                        // Pass the wake-up on so a competing consumer sees the rest.
                        self.notify.notify_one();
                    }
                    return entry;
                }
            }
            notified.await;
        }
    }

    fn push_dead(&self, letter: DeadLetter) {
        let mut dead = lock(&self.dead);
        dead.push_back(letter);
        if dead.len() > self.dead_capacity {
            dead.pop_front();
            let dropped = self.dead_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(queue = %self.name, dropped, "in-process dead-letter queue full, dropped its oldest message");
        }
    }
}

impl InProcessBus {
    /// A bus with the standard queues declared and bound, like [`crate::RabbitBus`].
    pub fn new(cfg: BusConfig) -> Result<Self, BusError> {
        let bus = Self::bare(cfg)?;
        for queue in QueueName::STANDARD {
            if let Some(topic) = queue.topic() {
                bus.bind_now(queue, topic);
            }
        }
        Ok(bus)
    }

    /// A bus with no queue at all: bind only what is consumed (with
    /// [`Subscriber::bind`]), so no unconsumed queue fills up and blocks its publishers.
    /// Publishing to a topic with no bound queue fails with [`BusError::Unroutable`].
    pub fn bare(cfg: BusConfig) -> Result<Self, BusError> {
        cfg.validate()?;
        let (shutdown, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                names: cfg.names(),
                cfg: Arc::new(cfg),
                state: Mutex::new(State::default()),
                shutdown,
            }),
        })
    }

    /// Stops the bus: consumers' `next()` returns `None`, publishes fail with
    /// [`BusError::Closed`].
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Dead letters dropped from `queue` because its dead-letter queue was full.
    pub fn dropped_dead_letters(&self, queue: &QueueName) -> u64 {
        lock(&self.inner.state)
            .queues
            .get(queue)
            .map_or(0, |q| q.dead_dropped.load(Ordering::Relaxed))
    }

    fn queue(&self, name: &QueueName) -> Arc<MemQueue> {
        let mut state = lock(&self.inner.state);
        state
            .queues
            .entry(name.clone())
            .or_insert_with(|| Arc::new(MemQueue::new(name.clone(), &self.inner.cfg)))
            .clone()
    }

    fn existing(&self, name: &QueueName) -> Result<Option<Arc<MemQueue>>, BusError> {
        name.validate()?;
        Ok(lock(&self.inner.state).queues.get(name).cloned())
    }

    fn bind_now(&self, queue: QueueName, topic: Topic) {
        self.queue(&queue);
        lock(&self.inner.state)
            .bindings
            .entry(topic)
            .or_default()
            .insert(queue);
    }

    fn bound(&self, topic: Topic) -> Vec<Arc<MemQueue>> {
        let state = lock(&self.inner.state);
        state
            .bindings
            .get(&topic)
            .into_iter()
            .flatten()
            .filter_map(|name| state.queues.get(name).cloned())
            .collect()
    }

    fn is_shut_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    async fn publish_now(&self, topic: Topic, msg: Message) -> Result<(), BusError> {
        msg.validate()?;
        let queues = self.bound(topic);
        if queues.is_empty() {
            return Err(BusError::Unroutable {
                exchange: self.inner.names.exchange(topic),
                message_id: msg.message_id,
            });
        }
        // Reserve room in every bound queue first, so a full queue delays the whole publish
        // instead of delivering to some queues only.
        let mut slots = Vec::with_capacity(queues.len());
        for queue in &queues {
            tokio::select! {
                slot = queue.slots.clone().acquire_owned() => slots.push(slot.map_err(|_| BusError::Closed)?),
                () = shut_down(self.inner.shutdown.subscribe()) => return Err(BusError::Closed),
            }
        }
        if self.is_shut_down() {
            return Err(BusError::Closed);
        }
        for (queue, slot) in queues.iter().zip(slots) {
            let entry = Entry {
                message: msg.clone(),
                attempt: 1,
                redelivered: false,
                returns: 0,
                slot,
            };
            queue.push(entry, false);
        }
        Ok(())
    }
}

impl Publisher for InProcessBus {
    fn publish<'a>(&'a self, topic: Topic, msg: Message) -> BoxFuture<'a, Result<(), BusError>> {
        crate::observe::publish(topic, msg, move |m| Box::pin(self.publish_now(topic, m)))
    }

    fn dead_letter<'a>(
        &'a self,
        queue: QueueName,
        mut msg: Message,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            queue.validate()?;
            msg.validate()?;
            if self.is_shut_down() {
                return Err(BusError::Closed);
            }
            msg.headers
                .insert(HEADER_REASON.to_owned(), reason.to_owned());
            msg.headers
                .insert(crate::HEADER_QUEUE.to_owned(), queue.as_str().to_owned());
            self.queue(&queue).push_dead(DeadLetter {
                message: msg,
                reason: reason.to_owned(),
                attempts: 1,
            });
            culprit_metrics::metrics().dead_lettered(queue.as_str(), reason);
            Ok(())
        })
    }

    fn publish_delayed<'a>(
        &'a self,
        queue: QueueName,
        msg: Message,
        delay: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let msg = crate::observe::outgoing_delayed(msg, delay);
            queue.validate()?;
            msg.validate()?;
            crate::delay_ms(delay)?;
            let target = self.queue(&queue);
            // The waiting message holds a slot of its queue, like a message in a delay queue.
            let slot = tokio::select! {
                slot = target.slots.clone().acquire_owned() => slot.map_err(|_| BusError::Closed)?,
                () = shut_down(self.inner.shutdown.subscribe()) => return Err(BusError::Closed),
            };
            if self.is_shut_down() {
                return Err(BusError::Closed);
            }
            let entry = Entry {
                message: msg,
                attempt: 1,
                redelivered: false,
                returns: 0,
                slot,
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                target.push(entry, false);
            });
            Ok(())
        })
    }
}

impl Subscriber for InProcessBus {
    fn subscribe<'a>(
        &'a self,
        queue: QueueName,
        prefetch: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Consumer>, BusError>> {
        Box::pin(async move {
            crate::check_subscription(&queue, prefetch)?;
            if self.is_shut_down() {
                return Err(BusError::Closed);
            }
            let consumer = MemConsumer {
                queue: self.queue(&queue),
                prefetch: Arc::new(Semaphore::new(usize::from(prefetch))),
                bus: self.clone(),
            };
            Ok(Box::new(consumer) as Box<dyn Consumer>)
        })
    }

    fn bind<'a>(&'a self, queue: QueueName, topic: Topic) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            queue.validate()?;
            self.bind_now(queue, topic);
            Ok(())
        })
    }
}

impl BusInspector for InProcessBus {
    fn dead_letters<'a>(
        &'a self,
        queue: QueueName,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>> {
        Box::pin(async move {
            let Some(queue) = self.existing(&queue)? else {
                return Ok(Vec::new());
            };
            let dead = lock(&queue.dead);
            Ok(dead.iter().take(limit).cloned().collect())
        })
    }

    fn queue_depth<'a>(&'a self, queue: QueueName) -> BoxFuture<'a, Result<u64, BusError>> {
        Box::pin(async move {
            let depth = self.existing(&queue)?.map_or(0, |q| lock(&q.ready).len());
            Ok(u64::try_from(depth).unwrap_or(u64::MAX))
        })
    }
}

#[derive(Debug)]
struct MemConsumer {
    queue: Arc<MemQueue>,
    prefetch: Arc<Semaphore>,
    bus: InProcessBus,
}

impl MemConsumer {
    async fn next_delivery(&mut self) -> Option<Delivery> {
        let shutdown = || shut_down(self.bus.inner.shutdown.subscribe());
        // Like a broker's prefetch: no new delivery while `prefetch` are unsettled.
        let credit = tokio::select! {
            credit = self.prefetch.clone().acquire_owned() => credit.ok()?,
            () = shutdown() => return None,
        };
        let entry = tokio::select! {
            entry = self.queue.pop() => entry,
            () = shutdown() => return None,
        };
        let settle = MemSettle {
            queue: self.queue.clone(),
            cfg: self.bus.inner.cfg.clone(),
            attempt: entry.attempt,
            returns: entry.returns,
            slot: entry.slot,
            _credit: credit,
        };
        Some(Delivery::new(
            entry.message,
            entry.attempt,
            entry.redelivered,
            self.queue.name.clone(),
            self.bus.inner.cfg.max_attempts,
            Box::new(settle),
        ))
    }
}

impl Consumer for MemConsumer {
    fn next<'a>(&'a mut self) -> BoxFuture<'a, Option<Delivery>> {
        Box::pin(self.next_delivery())
    }
}

#[derive(Debug)]
struct MemSettle {
    queue: Arc<MemQueue>,
    cfg: Arc<BusConfig>,
    attempt: u32,
    returns: u32,
    slot: OwnedSemaphorePermit,
    _credit: OwnedSemaphorePermit,
}

impl Settle for MemSettle {
    fn abandon(self: Box<Self>, message: Message) {
        let returns = self.returns.saturating_add(1);
        if self.cfg.delivery_limit.is_some_and(|limit| returns > limit) {
            // Like the broker's x-delivery-limit: a message that keeps coming back unsettled
            // (it crashes its consumer) is poison.
            let reason = DELIVERY_LIMIT_REASON.to_owned();
            let message = message.with_header(HEADER_REASON, reason.clone());
            culprit_metrics::metrics().dead_lettered(self.queue.name.as_str(), &reason);
            self.queue.push_dead(DeadLetter {
                message,
                reason,
                attempts: self.attempt,
            });
            return;
        }
        let entry = Entry {
            message,
            attempt: self.attempt,
            redelivered: true,
            returns,
            slot: self.slot,
        };
        self.queue.push(entry, true);
    }

    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(async {
            drop(self);
            Ok(())
        })
    }

    fn retry(
        self: Box<Self>,
        message: Message,
        failed_attempt: u32,
    ) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(async move {
            let (_, delay) = self.cfg.retry_slot(failed_attempt);
            let MemSettle { queue, slot, .. } = *self;
            let entry = Entry {
                message,
                attempt: failed_attempt.saturating_add(1),
                redelivered: false,
                returns: 0,
                slot,
            };
            // The message keeps its capacity slot while it waits, like a retry queue.
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                queue.push(entry, false);
            });
            Ok(())
        })
    }

    fn dead_letter(
        self: Box<Self>,
        message: Message,
        attempt: u32,
    ) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(async move {
            let reason = message.header(HEADER_REASON).unwrap_or_default().to_owned();
            self.queue.push_dead(DeadLetter {
                message,
                reason,
                attempts: attempt,
            });
            Ok(())
        })
    }
}
