//! The hunter as a service (`culprit serve --role hunter`): consume detections, batch them per
//! tenant, spend the shared budget, hunt, publish one telemetry bundle per detection, and only
//! then acknowledge.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use culprit_bus::{Bus, Delivery, Message, QueueName, Topic};
use culprit_cache::{Clock, HuntBudget, Spend};
use culprit_model::{Detection, DetectionKey};
use culprit_proto::convert::TelemetryBundle;
use culprit_proto::v1 as pb;
use culprit_runtime::Shutdown;
use prost::Message as _;

use crate::{HuntingBackend, Outcome, Reach, hunt_batch};

/// Header naming the protobuf schema of a payload.
pub const SCHEMA_HEADER: &str = culprit_bus::HEADER_SCHEMA_VERSION;
/// The schema of detections on `culprit.detections`.
pub const DETECTION_SCHEMA: &str = "culprit.v1.Detection";
/// The schema of bundles on `culprit.telemetry`.
pub const BUNDLE_SCHEMA: &str = "culprit.v1.TelemetryBundle";

#[derive(Debug, Clone)]
pub struct HunterConfig {
    pub batch_window: Duration,
    pub max_batch: usize,
    pub prefetch: u16,
    pub reach: Reach,
}

#[derive(Debug, thiserror::Error)]
pub enum HunterError {
    #[error("bus: {0}")]
    Bus(#[from] culprit_bus::BusError),
}

/// One hunter worker.
#[derive(Debug, Clone)]
pub struct HunterService {
    pub bus: Arc<dyn Bus>,
    pub budget: Arc<dyn HuntBudget>,
    pub clock: Arc<dyn Clock>,
    /// Hunting backends by tenant name.
    pub backends: BTreeMap<String, Arc<dyn HuntingBackend>>,
    pub config: HunterConfig,
}

impl HunterService {
    /// Consumes until `shutdown`; the batch in hand is finished before returning.
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
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(Some(d)) => batch.push(d),
                    Ok(None) | Err(_) => break,
                }
            }
            self.handle(batch).await;
        }
        Ok(())
    }

    /// Hunts one batch of deliveries and settles every one of them.
    pub async fn handle(&self, deliveries: Vec<Delivery>) {
        let mut by_tenant: BTreeMap<String, Vec<(Detection, Delivery)>> = BTreeMap::new();
        for d in deliveries {
            match decode_detection(&d.message.payload) {
                Ok(det) => by_tenant
                    .entry(det.tenant.clone())
                    .or_default()
                    .push((det, d)),
                Err(reason) => settle(d.dead_letter(&reason).await),
            }
        }
        for (tenant, mut items) in by_tenant {
            let Some(backend) = self.backends.get(&tenant) else {
                for (_, d) in items {
                    let reason = format!("tenant: {tenant:?} is not configured on this hunter");
                    settle(d.dead_letter(&reason).await);
                }
                continue;
            };
            // Higher threat × certainty goes first when a batch must be split.
            items.sort_by_key(|(det, _)| std::cmp::Reverse(det.priority()));
            let mut pending: BTreeMap<DetectionKey, Delivery> = BTreeMap::new();
            let mut detections = Vec::with_capacity(items.len());
            for (det, d) in items {
                // A redelivered duplicate in the same batch is settled with its twin.
                if let Some(dup) = pending.insert(det.key(), d) {
                    settle(dup.ack().await);
                } else {
                    detections.push(det);
                }
            }
            let spend = || self.spend(&tenant);
            let outcomes =
                hunt_batch(backend.as_ref(), detections, &self.config.reach, &spend).await;
            for o in outcomes {
                if let Some(d) = pending.remove(&o.detection.key()) {
                    self.finish(o, d).await;
                }
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

    async fn finish(&self, o: Outcome, d: Delivery) {
        let key = o.detection.key();
        let bundle = match o.result {
            Ok(h) => TelemetryBundle {
                detection_key: key.clone(),
                detection: Some(o.detection),
                tables: h.tables.into_iter().collect(),
                fetched_at: Some(self.clock.now()),
                requery: 0,
                hunt_failure: None,
                truncated: h.truncated,
            },
            Err(e) if e.retryable => {
                settle(d.retry(&format!("hunting: {e}")).await);
                return;
            }
            Err(e) => TelemetryBundle {
                detection_key: key.clone(),
                detection: Some(o.detection),
                tables: Vec::new(),
                fetched_at: Some(self.clock.now()),
                requery: 0,
                hunt_failure: Some((e.kind.clone(), e.message.clone())),
                truncated: false,
            },
        };
        let payload = pb::TelemetryBundle::from(&bundle).encode_to_vec();
        let msg = Message::new(key.as_str(), payload).with_header(SCHEMA_HEADER, BUNDLE_SCHEMA);
        match self.bus.publish(Topic::Telemetry, msg).await {
            Ok(()) => settle(d.ack().await),
            Err(e) => settle(d.retry(&format!("publishing telemetry: {e}")).await),
        }
    }
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
