//! The correlator as a service (`culprit serve --role correlator`): consume telemetry bundles,
//! attribute, store the answer by detection key, publish it on `culprit.correlations`, then
//! acknowledge. The engine itself stays pure; only this module does I/O.

use std::sync::Arc;

use culprit_bus::{Bus, Delivery, Message, QueueName, Topic};
use culprit_cache::{Clock, PutOutcome, ResultMeta, ResultStore};
use culprit_model::correlation::Links;
use culprit_model::{Correlation, Status, Telemetry};
use culprit_proto::convert::TelemetryBundle;
use culprit_proto::v1 as pb;
use culprit_runtime::Shutdown;
use prost::Message as _;

use crate::{Options, attribute};

/// The schema of events on `culprit.correlations`.
pub const EVENT_SCHEMA: &str = "culprit.v1.CorrelationEvent";

/// Adds portal links to an answer (the tenant's portal host is configuration, not telemetry).
pub type LinkMaker = Arc<dyn Fn(&Correlation) -> Option<Links> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("bus: {0}")]
    Bus(#[from] culprit_bus::BusError),
}

#[derive(Clone)]
pub struct CorrelatorService {
    pub bus: Arc<dyn Bus>,
    pub results: Arc<dyn ResultStore>,
    pub clock: Arc<dyn Clock>,
    pub options: Options,
    pub links: LinkMaker,
    pub prefetch: u16,
}

impl std::fmt::Debug for CorrelatorService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorrelatorService")
            .field("options", &self.options)
            .field("prefetch", &self.prefetch)
            .finish_non_exhaustive()
    }
}

impl CorrelatorService {
    /// Consumes until `shutdown`; the delivery in hand is finished first.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), ServiceError> {
        let mut consumer = self
            .bus
            .subscribe(QueueName::Correlate, self.prefetch)
            .await?;
        loop {
            let next = tokio::select! {
                _ = shutdown.triggered() => break,
                d = consumer.next() => d,
            };
            let Some(d) = next else { break };
            self.handle(d).await;
        }
        Ok(())
    }

    /// Attributes one bundle and settles its delivery.
    pub async fn handle(&self, d: Delivery) {
        let bundle = match decode_bundle(&d.message.payload) {
            Ok(b) => b,
            Err(reason) => return settle(d.dead_letter(&reason).await),
        };
        let Some(detection) = bundle.detection.as_ref() else {
            return settle(d.dead_letter("detection: missing from the bundle").await);
        };
        let now = self.clock.now();
        let mut c = match &bundle.hunt_failure {
            None => {
                let (telemetry, _skipped) = bundle.telemetry();
                attribute(detection, &telemetry, &self.options, now)
            }
            Some((kind, message)) => hunt_failed(detection, &self.options, now, kind, message),
        };
        c.links = (self.links)(&c);
        match self.store_and_publish(&c).await {
            Ok(()) => settle(d.ack().await),
            Err(reason) => settle(d.retry(&reason).await),
        }
    }

    async fn store_and_publish(&self, c: &Correlation) -> Result<(), String> {
        let current = pb::Correlation::from(c);
        let bytes = current.encode_to_vec();
        let meta = ResultMeta {
            tenant: c.tenant.clone(),
            device_id: c.device.as_ref().map(|d| d.device_id.clone()),
            status: c.status,
            confidence: c.probable.as_ref().map_or(0.0, |p| p.confidence),
            computed_at: c.computed_at,
        };
        let outcome = self
            .results
            .put(&c.detection_key, &bytes, &meta)
            .await
            .map_err(|e| format!("storing the result: {e}"))?;
        let kind = match outcome {
            PutOutcome::Changed { previous } => match changed(&previous, c) {
                Some((previous, reason)) => {
                    pb::correlation_event::Kind::AttributionChanged(pb::AttributionChanged {
                        previous: Some(previous),
                        current: Some(current),
                        reason,
                    })
                }
                None => new_result(current),
            },
            // Published again on a redelivery: the stored answer may never have been announced.
            PutOutcome::New | PutOutcome::Unchanged => new_result(current),
        };
        let event = pb::CorrelationEvent {
            position: String::new(),
            emitted_at: Some(culprit_proto::convert::timestamp_to_proto(c.computed_at)),
            kind: Some(kind),
        };
        let msg = Message::new(c.detection_key.as_str(), event.encode_to_vec())
            .with_header(culprit_bus::HEADER_SCHEMA_VERSION, EVENT_SCHEMA);
        self.bus
            .publish(Topic::Correlations, msg)
            .await
            .map_err(|e| format!("publishing the result: {e}"))
    }
}

fn new_result(c: pb::Correlation) -> pb::correlation_event::Kind {
    pb::correlation_event::Kind::NewResult(pb::NewResult {
        correlation: Some(c),
    })
}

/// The previous answer and why the new one differs, when the attribution moved.
fn changed(previous: &[u8], now: &Correlation) -> Option<(pb::Correlation, String)> {
    let prev_pb = pb::Correlation::decode(previous).ok()?;
    let prev = Correlation::try_from(prev_pb.clone()).ok()?;
    let who = |c: &Correlation| {
        c.probable
            .as_ref()
            .map(|p| format!("{} ({})", p.file_name, p.process_id))
    };
    if prev.status == now.status && who(&prev) == who(now) {
        return None;
    }
    let reason = format!(
        "{} {} → {} {}",
        prev.status,
        who(&prev).unwrap_or_default(),
        now.status,
        who(now).unwrap_or_default()
    );
    Some((prev_pb, reason))
}

/// The answer when hunting failed for good: say so, with the error's kind.
pub fn hunt_failed(
    detection: &culprit_model::Detection,
    options: &Options,
    now: culprit_model::Timestamp,
    kind: &str,
    message: &str,
) -> Correlation {
    let mut c = attribute(detection, &Telemetry::default(), options, now);
    c.status = Status::HuntFailed;
    c.error_kind = Some(kind.to_owned());
    c.explanation = format!("The hunting query failed: {message}");
    c.probable = None;
    c.root_cause = None;
    c.candidates.clear();
    c.window_activity.clear();
    c
}

/// Reads a bundle message; the error names the field and the reason.
pub fn decode_bundle(payload: &[u8]) -> Result<TelemetryBundle, String> {
    let p = pb::TelemetryBundle::decode(payload)
        .map_err(|e| format!("payload: not a TelemetryBundle: {e}"))?;
    TelemetryBundle::try_from(p).map_err(|e| format!("bundle: {e}"))
}

fn settle(r: Result<(), culprit_bus::BusError>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "settling a delivery failed");
    }
}
