//! The hunter as a service (`culprit serve --role hunter`): consume detections, batch them per
//! tenant, answer from the telemetry cache where it can, spend the shared budget, hunt, publish
//! one telemetry bundle per detection, schedule the re-queries for late telemetry, and only then
//! acknowledge.
//!
//! - **Re-queries**: after a detection's first hunt, a copy of its message is published with
//!   [`Publisher::publish_delayed`] for every offset in `requery_after` (durable on RabbitMQ),
//!   carrying header [`HEADER_REQUERY`] = n; its bundle says `requery = n`.
//! - **Idempotency**: once the bundle of (detection key, n) is published, the key is marked
//!   answered; a redelivered copy is acknowledged without hunting again.
//! - **Failures**: throttling waits `Retry-After` (shared with every replica through the budget)
//!   and hunts again without counting an attempt; service errors and timeouts go back to the
//!   queue through the bus's growing retry delays; after `hunt_attempts` the bundle says the
//!   hunt failed, so the detection still gets an (honest) answer. A re-query that fails
//!   publishes nothing: the earlier answer stands.
//! - **Stores away**: without the cache or the idempotency store (Redis down) the hunter keeps
//!   working uncached; the budget degrades on its own ([`culprit_cache::FallbackBudget`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use culprit_bus::{Bus, Delivery, Message, QueueName, Topic};
use culprit_cache::{Clock, HuntBudget, IdempotencyStore, Spend, TelemetryCache};
use culprit_metrics::{HuntKind, metrics};
use culprit_model::{Detection, DetectionKey, Table};
use culprit_proto::convert::TelemetryBundle;
use culprit_proto::v1 as pb;
use culprit_runtime::Shutdown;
use futures::future::BoxFuture;
use prost::Message as _;
use tracing::Instrument;

use crate::{
    DEFAULT_THROTTLE_WAIT, HuntError, HuntHooks, Hunted, HuntingBackend, Outcome, Reach,
    hunt_batch_with,
};

/// Header naming the protobuf schema of a payload.
pub const SCHEMA_HEADER: &str = culprit_bus::HEADER_SCHEMA_VERSION;
/// The schema of detections on `culprit.detections` (the value every publisher uses).
pub const DETECTION_SCHEMA: &str = culprit_proto::schema::DETECTION;
/// The schema of bundles on `culprit.telemetry`.
pub const BUNDLE_SCHEMA: &str = culprit_proto::schema::TELEMETRY_BUNDLE;
/// Header of a scheduled re-query: its number (1, 2, ...). Absent on a first hunt.
pub const HEADER_REQUERY: &str = "x-culprit-requery";
/// Idempotency scope of answered (detection key, re-query) pairs.
pub const ANSWERED_SCOPE: &str = "hunter.answered";

#[derive(Debug, Clone)]
pub struct HunterConfig {
    pub batch_window: Duration,
    pub max_batch: usize,
    pub prefetch: u16,
    pub reach: Reach,
    /// Re-query a detection this long after its first hunt (one re-query per entry).
    pub requery_after: Vec<Duration>,
    /// How long a telemetry answer stays cached; an answer without rows only `empty_cache_ttl`.
    pub cache_ttl: Duration,
    pub empty_cache_ttl: Duration,
    /// Deliveries of one detection that may fail with a service error or a timeout before its
    /// bundle says the hunt failed. At most the bus's `max_attempts` (the bus dead-letters
    /// beyond).
    pub hunt_attempts: u32,
    /// How long a 429 without `Retry-After` pauses the tenant.
    pub throttle_wait: Duration,
    /// After a stop request, how long the batch in hand may still take; then its deliveries
    /// are handed back to the queue unsettled.
    pub shutdown_grace: Duration,
    /// How long an answered mark is kept (longer than any redelivery).
    pub answered_ttl: Duration,
}

impl Default for HunterConfig {
    fn default() -> Self {
        HunterConfig {
            batch_window: Duration::from_secs(2),
            max_batch: 50,
            prefetch: 64,
            reach: Reach::default(),
            requery_after: vec![Duration::from_secs(300), Duration::from_secs(900)],
            cache_ttl: Duration::from_secs(900),
            empty_cache_ttl: Duration::from_secs(60),
            hunt_attempts: 4,
            throttle_wait: DEFAULT_THROTTLE_WAIT,
            shutdown_grace: Duration::from_secs(20),
            answered_ttl: Duration::from_secs(7 * 86_400),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HunterError {
    #[error("bus: {0}")]
    Bus(#[from] culprit_bus::BusError),
}

/// One hunter worker.
#[derive(Debug, Clone)]
pub struct HunterService {
    bus: Arc<dyn Bus>,
    budget: Arc<dyn HuntBudget>,
    clock: Arc<dyn Clock>,
    /// Hunting backends by tenant name.
    backends: BTreeMap<String, Arc<dyn HuntingBackend>>,
    config: HunterConfig,
    cache: Option<Arc<dyn TelemetryCache>>,
    answered: Option<Arc<dyn IdempotencyStore>>,
}

/// One decoded delivery.
struct Item {
    detection: Detection,
    requery: u32,
    delivery: Delivery,
}

impl HunterService {
    /// A worker without cache and without idempotency marks (add them with
    /// [`with_cache`](Self::with_cache) and [`with_idempotency`](Self::with_idempotency)).
    pub fn new(
        bus: Arc<dyn Bus>,
        budget: Arc<dyn HuntBudget>,
        clock: Arc<dyn Clock>,
        backends: BTreeMap<String, Arc<dyn HuntingBackend>>,
        config: HunterConfig,
    ) -> Self {
        HunterService {
            bus,
            budget,
            clock,
            backends,
            config,
            cache: None,
            answered: None,
        }
    }

    /// Every store from one bundle: budget, telemetry cache, idempotency marks.
    pub fn with_stores(mut self, stores: &culprit_cache::Stores) -> Self {
        self.budget = stores.budget.clone();
        self.cache = Some(stores.cache.clone());
        self.answered = Some(stores.idempotency.clone());
        self
    }

    pub fn with_cache(mut self, cache: Arc<dyn TelemetryCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn with_idempotency(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.answered = Some(store);
        self
    }

    pub fn config(&self) -> &HunterConfig {
        &self.config
    }

    /// Consumes until `shutdown`. The batch in hand is finished within `shutdown_grace`;
    /// what is not settled by then goes back to the queue for another worker.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), HunterError> {
        let mut consumer = self
            .bus
            .subscribe(QueueName::Hunt, self.config.prefetch)
            .await?;
        loop {
            let first = tokio::select! {
                _ = shutdown.triggered() => break,
                d = consumer.next() => d,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.config.batch_window;
            while batch.len() < self.config.max_batch {
                tokio::select! {
                    // Stop collecting at once; the batch so far is still hunted.
                    _ = shutdown.triggered() => break,
                    next = tokio::time::timeout_at(deadline, consumer.next()) => match next {
                        Ok(Some(d)) => batch.push(d),
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            let work = self.handle(batch);
            tokio::pin!(work);
            let finished = tokio::select! {
                () = &mut work => true,
                _ = shutdown.triggered() => false,
            };
            if !finished {
                // Dropping the unfinished work drops its deliveries unsettled: the broker
                // redelivers them.
                if tokio::time::timeout(self.config.shutdown_grace, &mut work)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        grace = ?self.config.shutdown_grace,
                        "hunt batch unfinished at shutdown; its detections go back to the queue"
                    );
                }
                break;
            }
        }
        Ok(())
    }

    /// Hunts one batch of deliveries and settles every one of them.
    pub async fn handle(&self, deliveries: Vec<Delivery>) {
        let span = tracing::info_span!("hunt.batch", size = deliveries.len());
        for d in &deliveries {
            span.follows_from(d.span());
        }
        self.handle_batch(deliveries).instrument(span).await;
    }

    async fn handle_batch(&self, deliveries: Vec<Delivery>) {
        let mut by_tenant: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        for d in deliveries {
            match decode_delivery(&d.message) {
                Ok((detection, requery)) => {
                    by_tenant
                        .entry(detection.tenant.clone())
                        .or_default()
                        .push(Item {
                            detection,
                            requery,
                            delivery: d,
                        });
                }
                Err(reason) => settle(d.dead_letter(&reason).await),
            }
        }
        for (tenant, items) in by_tenant {
            let Some(backend) = self.backends.get(&tenant) else {
                for item in items {
                    let reason = format!("tenant: {tenant:?} is not configured on this hunter");
                    settle(item.delivery.dead_letter(&reason).await);
                }
                continue;
            };
            self.hunt_tenant(&tenant, backend.as_ref(), items).await;
        }
    }

    async fn hunt_tenant(&self, tenant: &str, backend: &dyn HuntingBackend, mut items: Vec<Item>) {
        // Higher threat × certainty goes first when a batch must be split.
        items.sort_by_key(|i| std::cmp::Reverse(i.detection.priority()));
        // Deliveries by detection key; one key is hunted once per batch.
        let mut pending: BTreeMap<DetectionKey, Vec<(u32, Delivery)>> = BTreeMap::new();
        let mut todo: Vec<(Detection, u32)> = Vec::new();
        for item in items {
            let key = item.detection.key();
            let waiting = pending.entry(key.clone()).or_default();
            if waiting.iter().any(|(n, _)| *n == item.requery) {
                // A redelivered duplicate in the same batch is settled with its twin.
                settle(item.delivery.ack().await);
                continue;
            }
            if self.was_answered(&key, item.requery).await {
                tracing::debug!(%key, requery = item.requery, "already answered; not hunting again");
                settle(item.delivery.ack().await);
                continue;
            }
            if waiting.is_empty() {
                todo.push((item.detection, item.requery));
            }
            waiting.push((item.requery, item.delivery));
        }

        let mut outcomes = Vec::new();
        let mut misses = Vec::new();
        for (detection, requery) in todo {
            match self.cached(tenant, &detection, requery).await {
                Some(hunted) => outcomes.push(Outcome {
                    detection,
                    result: Ok(hunted),
                }),
                None => misses.push((detection, requery)),
            }
        }
        let requeries: BTreeMap<DetectionKey, u32> =
            misses.iter().map(|(d, n)| (d.key(), *n)).collect();
        // A batch of re-queries only is counted as re-query calls.
        let requery_batch = !requeries.is_empty() && requeries.values().all(|n| *n > 0);
        let hooks = Hooks {
            service: self,
            tenant,
            requery: requery_batch,
        };
        let detections = misses.into_iter().map(|(d, _)| d).collect();
        let hunted = hunt_batch_with(backend, detections, &self.config.reach, &hooks).await;
        for o in &hunted {
            let requery = requeries.get(&o.detection.key()).copied().unwrap_or(0);
            self.remember(tenant, o, requery).await;
        }
        outcomes.extend(hunted);

        for o in outcomes {
            let Some(waiting) = pending.remove(&o.detection.key()) else {
                continue;
            };
            for (requery, d) in waiting {
                let span = d.span().clone();
                self.finish(&o, requery, d).instrument(span).await;
            }
        }
    }

    /// Waits until the tenant's shared budget grants a call.
    async fn spend(&self, tenant: &str) {
        loop {
            match self.budget.try_spend(tenant, self.clock.now()).await {
                Ok(Spend::Granted) => return,
                Ok(Spend::Wait(d)) => tokio::time::sleep(d).await,
                Err(e) => {
                    tracing::warn!(error = %e, tenant, "hunting budget unavailable; waiting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// A 429: every replica pauses the tenant for `Retry-After`, then this batch goes on.
    async fn throttled(&self, tenant: &str, retry_after: Option<Duration>) {
        let wait = retry_after.unwrap_or(self.config.throttle_wait);
        tracing::info!(
            tenant,
            ?wait,
            "hunting throttled by the service; pausing the tenant"
        );
        let until = self.clock.now() + culprit_model::Duration::from_std(wait);
        if let Err(e) = self.budget.hold(tenant, until).await {
            tracing::warn!(error = %e, tenant, "could not share the pause; pausing here only");
            tokio::time::sleep(wait).await;
        }
        // `spend` now waits for the hold to pass.
    }

    async fn was_answered(&self, key: &DetectionKey, requery: u32) -> bool {
        let Some(store) = &self.answered else {
            return false;
        };
        match store
            .seen(ANSWERED_SCOPE, &answered_key(key, requery))
            .await
        {
            Ok(seen) => seen,
            Err(e) => {
                // Hunting again costs a call; the correlator absorbs the duplicate bundle.
                tracing::warn!(error = %e, "idempotency store unavailable; hunting anyway");
                false
            }
        }
    }

    async fn mark_answered(&self, key: &DetectionKey, requery: u32) {
        let Some(store) = &self.answered else { return };
        let k = answered_key(key, requery);
        if let Err(e) = store
            .first_seen(ANSWERED_SCOPE, &k, self.config.answered_ttl)
            .await
        {
            tracing::warn!(error = %e, "could not mark a detection answered");
        }
    }

    async fn cached(&self, tenant: &str, d: &Detection, requery: u32) -> Option<Hunted> {
        let cache = self.cache.as_ref()?;
        let key = cache_key(d, requery, &self.config.reach)?;
        let hit = match cache.get(tenant, &key).await {
            Ok(Some(bytes)) => decode_cached(&bytes),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "telemetry cache unavailable; hunting uncached");
                None
            }
        };
        record_cache_lookup(tenant, hit.is_some());
        hit
    }

    /// Caches a complete answer (a truncated one is not worth reusing).
    async fn remember(&self, tenant: &str, o: &Outcome, requery: u32) {
        let (Some(cache), Ok(h)) = (&self.cache, &o.result) else {
            return;
        };
        if h.truncated {
            return;
        }
        let Some(key) = cache_key(&o.detection, requery, &self.config.reach) else {
            return;
        };
        let empty = h.tables.values().all(|t| t.rows.is_empty());
        let ttl = if empty {
            self.config.empty_cache_ttl
        } else {
            self.config.cache_ttl
        };
        if ttl.is_zero() {
            return;
        }
        let bytes = encode_cached(&key, h);
        if let Err(e) = cache.put(tenant, &key, &bytes, ttl).await {
            tracing::warn!(error = %e, "telemetry cache unavailable; answer not cached");
        }
    }

    async fn finish(&self, o: &Outcome, requery: u32, d: Delivery) {
        let key = o.detection.key();
        let hunted = match &o.result {
            Ok(h) => Ok(h),
            Err(e) if e.retryable && d.attempt < self.config.hunt_attempts => {
                // Back to the queue after the bus's growing delay (a TTL'd retry queue).
                let reason = format!("hunting: {e}");
                return settle(d.retry(&reason).await);
            }
            Err(e) if requery > 0 => {
                // A re-query that fails leaves the answer already given standing.
                tracing::warn!(%key, requery, error = %e, "re-query failed; the earlier answer stands");
                self.mark_answered(&key, requery).await;
                return settle(d.ack().await);
            }
            Err(e) => Err(e),
        };
        let bundle = bundle(o, hunted, requery, self.clock.now());
        let payload = pb::TelemetryBundle::from(&bundle).encode_to_vec();
        let msg = Message::new(key.as_str(), payload).with_header(SCHEMA_HEADER, BUNDLE_SCHEMA);
        if let Err(e) = self.bus.publish(Topic::Telemetry, msg).await {
            return settle(d.retry(&format!("publishing telemetry: {e}")).await);
        }
        if requery == 0 && self.worth_requerying(o) {
            for (i, delay) in self.config.requery_after.iter().enumerate() {
                let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
                let again = d.message.clone().with_header(HEADER_REQUERY, n.to_string());
                if let Err(e) = self
                    .bus
                    .publish_delayed(QueueName::Hunt, again, *delay)
                    .await
                {
                    // Retried whole: the bundle goes out again, which the correlator absorbs.
                    return settle(d.retry(&format!("scheduling re-query {n}: {e}")).await);
                }
            }
        }
        self.mark_answered(&key, requery).await;
        settle(d.ack().await);
    }

    /// Late telemetry can change an answer that came from hunting; not one that failed for a
    /// reason time does not fix, nor a detection without an address to hunt for.
    fn worth_requerying(&self, o: &Outcome) -> bool {
        o.detection.host.ip.is_some()
            && match &o.result {
                Ok(_) => true,
                Err(e) => e.retryable,
            }
    }
}

struct Hooks<'a> {
    service: &'a HunterService,
    tenant: &'a str,
    requery: bool,
}

impl HuntHooks for Hooks<'_> {
    fn spend(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.service.spend(self.tenant))
    }

    fn throttled(&self, retry_after: Option<Duration>) -> BoxFuture<'_, ()> {
        Box::pin(self.service.throttled(self.tenant, retry_after))
    }

    fn called(&self, split: bool, outcome: &str, elapsed: Duration) {
        let kind = match (split, self.requery) {
            (true, _) => HuntKind::Split,
            (false, true) => HuntKind::Requery,
            (false, false) => HuntKind::Hunt,
        };
        tracing::debug!(
            tenant = self.tenant,
            kind = kind.as_str(),
            outcome,
            ?elapsed,
            "hunting call"
        );
        metrics().hunt_call(self.tenant, kind, outcome, elapsed);
    }
}

fn record_cache_lookup(tenant: &str, hit: bool) {
    metrics().cache_lookup(tenant, hit);
}

fn bundle(
    o: &Outcome,
    hunted: Result<&Hunted, &HuntError>,
    requery: u32,
    now: culprit_model::Timestamp,
) -> TelemetryBundle {
    let mut b = TelemetryBundle {
        detection_key: o.detection.key(),
        detection: Some(o.detection.clone()),
        tables: Vec::new(),
        fetched_at: Some(now),
        requery,
        hunt_failure: None,
        truncated: false,
    };
    match hunted {
        Ok(h) => {
            b.tables = h
                .tables
                .iter()
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect();
            b.truncated = h.truncated;
        }
        Err(e) => b.hunt_failure = Some((e.kind.clone(), e.message.clone())),
    }
    b
}

fn answered_key(key: &DetectionKey, requery: u32) -> String {
    format!("{}#{requery}", key.as_str())
}

/// The cache key of a detection's telemetry: what the query asked for it (its source address
/// and the event and device-fact spans around its window) and the re-query round, so a
/// re-query never reuses an answer fetched before the telemetry it waits for had landed. The
/// tenant is the cache's namespace. `None` for a detection without an address (not hunted).
pub fn cache_key(d: &Detection, requery: u32, reach: &Reach) -> Option<String> {
    let ip = d.host.ip?;
    let ev = reach.events(d.window);
    let fa = reach.devices(d.window);
    Some(format!(
        "v1|{}|{}|{}|{}|{}|r{requery}",
        ip.to_canonical(),
        ev.start.0,
        ev.end.0,
        fa.start.0,
        fa.end.0
    ))
}

fn encode_cached(key: &str, h: &Hunted) -> Vec<u8> {
    pb::TelemetryBundle {
        detection_key: key.to_owned(),
        tables: h
            .tables
            .iter()
            .map(|(n, t)| culprit_proto::convert::table_to_proto(n, t))
            .collect(),
        truncated: h.truncated,
        ..pb::TelemetryBundle::default()
    }
    .encode_to_vec()
}

/// An unreadable entry (another version wrote it) is a miss.
fn decode_cached(bytes: &[u8]) -> Option<Hunted> {
    let p = pb::TelemetryBundle::decode(bytes).ok()?;
    let b = TelemetryBundle::try_from(p).ok()?;
    let tables: BTreeMap<String, Table> = b.tables.into_iter().collect();
    Some(Hunted {
        tables,
        truncated: b.truncated,
        calls: 0,
    })
}

/// Reads a detection message and its re-query number; the error names the field and the
/// reason.
pub fn decode_delivery(msg: &Message) -> Result<(Detection, u32), String> {
    if let Some(schema) = msg.header(SCHEMA_HEADER)
        && schema != DETECTION_SCHEMA
    {
        return Err(format!(
            "header {SCHEMA_HEADER}: {schema:?} is not {DETECTION_SCHEMA:?}"
        ));
    }
    let requery = match msg.header(HEADER_REQUERY) {
        None => 0,
        Some(n) => n
            .parse::<u32>()
            .map_err(|_| format!("header {HEADER_REQUERY}: {n:?} is not a number"))?,
    };
    Ok((decode_detection(&msg.payload)?, requery))
}

/// Reads a detection message; the error names the field and the reason.
pub fn decode_detection(payload: &[u8]) -> Result<Detection, String> {
    let p = pb::Detection::decode(payload).map_err(|e| format!("payload: not a Detection: {e}"))?;
    Detection::try_from(p).map_err(|e| format!("detection: {e}"))
}

fn settle(r: Result<(), culprit_bus::BusError>) {
    if let Err(e) = r {
        // The broker redelivers what was not settled: nothing is lost, at worst repeated.
        tracing::warn!(error = %e, "settling a delivery failed");
    }
}
