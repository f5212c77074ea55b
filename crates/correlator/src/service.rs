//! The correlator as a service (`culprit serve --role correlator`): consume telemetry bundles,
//! attribute, store the answer by detection key, publish it on `culprit.correlations`, then
//! acknowledge. The engine itself stays pure; only this module does I/O.
//!
//! Events: the first answer for a detection is a `NewResult`. A re-query's answer (bundle
//! `requery` > 0) replaces the stored one; it is published as `AttributionChanged` only when
//! the probable process or the status moved. A failed re-query changes nothing. Each (detection key, requery) is published at
//! most once: after its event is confirmed the pair is marked, and a redelivered bundle is
//! acknowledged without a second event (only a crash between the confirm and the mark can
//! repeat one).

use std::sync::Arc;

use culprit_bus::{Bus, Delivery, Message, QueueName, Topic};
use culprit_cache::{Clock, IdempotencyStore, PutOutcome, ResultMeta, ResultStore};
use culprit_model::correlation::Links;
use culprit_model::{Correlation, Status, Telemetry};
use culprit_proto::convert::TelemetryBundle;
use culprit_proto::v1 as pb;
use culprit_runtime::Shutdown;
use prost::Message as _;
use tracing::Instrument;

use crate::{Options, attribute};

/// The schema of events on `culprit.correlations`.
pub const EVENT_SCHEMA: &str = culprit_proto::schema::CORRELATION_EVENT;
/// The schema of the bundles consumed.
pub const BUNDLE_SCHEMA: &str = culprit_proto::schema::TELEMETRY_BUNDLE;
/// Idempotency scope of (detection key, requery) pairs whose bundle was handled.
pub const HANDLED_SCOPE: &str = "correlator.handled";
/// How long a handled mark is kept (longer than any redelivery).
const HANDLED_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

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
    /// Marks of handled bundles; without it a redelivered bundle publishes its event again.
    pub handled: Option<Arc<dyn IdempotencyStore>>,
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
            let span = d.span().clone();
            self.handle(d).instrument(span).await;
        }
        Ok(())
    }

    /// Attributes one bundle and settles its delivery.
    pub async fn handle(&self, d: Delivery) {
        if let Some(schema) = d.message.header(culprit_bus::HEADER_SCHEMA_VERSION)
            && schema != BUNDLE_SCHEMA
        {
            let reason = format!(
                "header {}: {schema:?} is not {BUNDLE_SCHEMA:?}",
                culprit_bus::HEADER_SCHEMA_VERSION
            );
            return settle(d.dead_letter(&reason).await);
        }
        let bundle = match decode_bundle(&d.message.payload) {
            Ok(b) => b,
            Err(reason) => return settle(d.dead_letter(&reason).await),
        };
        let Some(detection) = bundle.detection.as_ref() else {
            return settle(d.dead_letter("detection: missing from the bundle").await);
        };
        let mark = handled_key(&bundle);
        if self.was_handled(&mark).await {
            tracing::debug!(key = %bundle.detection_key, requery = bundle.requery, "bundle already handled");
            return settle(d.ack().await);
        }
        if bundle.requery > 0
            && let Some((kind, _)) = &bundle.hunt_failure
        {
            // A failed re-query says nothing new about the detection: the answer stands.
            tracing::warn!(key = %bundle.detection_key, requery = bundle.requery, kind, "re-query failed; keeping the stored answer");
            return settle(d.ack().await);
        }
        let now = self.clock.now();
        let mut c = match &bundle.hunt_failure {
            None => {
                let (telemetry, _skipped) = bundle.telemetry();
                attribute(detection, &telemetry, &self.options, now)
            }
            Some((kind, message)) => hunt_failed(detection, &self.options, now, kind, message),
        };
        c.links = (self.links)(&c);
        match self.store_and_publish(&c, bundle.requery).await {
            Ok(()) => {
                self.mark_handled(&mark).await;
                let m = culprit_metrics::metrics();
                m.attribution(&c.tenant, &c.status.to_string());
                if bundle.requery == 0 {
                    m.result_stored(d.ingested_at());
                }
                settle(d.ack().await);
            }
            Err(reason) => settle(d.retry(&reason).await),
        }
    }

    async fn was_handled(&self, mark: &str) -> bool {
        let Some(store) = &self.handled else {
            return false;
        };
        store.seen(HANDLED_SCOPE, mark).await.unwrap_or_else(|e| {
            // Handling again may repeat an event; never skip one on a guess.
            tracing::warn!(error = %e, "idempotency store unavailable; handling the bundle");
            false
        })
    }

    async fn mark_handled(&self, mark: &str) {
        let Some(store) = &self.handled else { return };
        if let Err(e) = store.first_seen(HANDLED_SCOPE, mark, HANDLED_TTL).await {
            tracing::warn!(error = %e, "could not mark a bundle handled");
        }
    }

    /// Stores the answer and publishes its event, if it has one.
    async fn store_and_publish(&self, c: &Correlation, requery: u32) -> Result<(), String> {
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
        let moved = match &outcome {
            PutOutcome::Changed { previous } => changed(previous, c),
            PutOutcome::New | PutOutcome::Unchanged => None,
        };
        let kind = match (moved, &outcome) {
            (Some((previous, reason)), _) if requery > 0 => {
                pb::correlation_event::Kind::AttributionChanged(pb::AttributionChanged {
                    previous: Some(previous),
                    current: Some(current),
                    reason,
                })
            }
            // A re-query that moved nothing: the store is up to date, nobody needs telling.
            (None, PutOutcome::Changed { .. } | PutOutcome::Unchanged) if requery > 0 => {
                return Ok(());
            }
            // The first answer (also a first answer handled again after a crash, whose event
            // may never have gone out), or a re-query overtaking it.
            _ => new_result(current),
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

fn handled_key(b: &TelemetryBundle) -> String {
    format!("{}#{}", b.detection_key.as_str(), b.requery)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::{IpAddr, Ipv4Addr};

    use culprit_bus::{BusConfig, Consumer, InProcessBus, Publisher, Subscriber};
    use culprit_cache::{BudgetLimits, ManualClock, Stores};
    use culprit_model::detection::Subject;
    use culprit_model::{Detection, Direction, Duration, HostRef, SourceKind, Timestamp, Window};

    use super::*;

    const T0: Timestamp = Timestamp::from_unix_seconds(1_780_000_000);

    struct Rig {
        bus: Arc<InProcessBus>,
        stores: Stores,
        clock: Arc<ManualClock>,
        service: CorrelatorService,
        work: Box<dyn Consumer>,
        events: Box<dyn Consumer>,
    }

    async fn rig() -> Rig {
        let bus = Arc::new(InProcessBus::new(BusConfig::default()).unwrap());
        let clock = Arc::new(ManualClock::new(T0 + Duration::from_hours(2)));
        let stores = Stores::memory(clock.clone(), BudgetLimits::default()).unwrap();
        let service = CorrelatorService {
            bus: bus.clone(),
            results: stores.results.clone(),
            clock: clock.clone(),
            options: Options::default(),
            links: Arc::new(|_| None),
            prefetch: 8,
            handled: Some(stores.idempotency.clone()),
        };
        let work = bus.subscribe(QueueName::Correlate, 8).await.unwrap();
        // The standard policy queue is bound to the correlations topic: it sees every event.
        let events = bus.subscribe(QueueName::Policy, 64).await.unwrap();
        Rig {
            bus,
            stores,
            clock,
            service,
            work,
            events,
        }
    }

    fn detection() -> Detection {
        Detection {
            source: SourceKind::Vectra,
            tenant: "lab".into(),
            source_id: "42".into(),
            revision: "1".into(),
            category: "command & control".into(),
            detection_type: "Hidden HTTPS Tunnel".into(),
            threat: Some(60),
            certainty: Some(60),
            severity: None,
            subject: Subject::Host,
            direction: Direction::Outbound,
            host: HostRef {
                ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
                ..HostRef::default()
            },
            window: Window::new(T0, T0 + Duration::from_minutes(5)),
            flows: Vec::new(),
            needs_target_list: false,
            summary: None,
            warnings: Vec::new(),
        }
    }

    fn bundle(requery: u32, failure: Option<&str>) -> Message {
        let d = detection();
        let b = TelemetryBundle {
            detection_key: d.key(),
            detection: Some(d),
            tables: Vec::new(),
            fetched_at: Some(T0),
            requery,
            hunt_failure: failure.map(|k| (k.to_owned(), format!("{k} happened"))),
            truncated: false,
        };
        Message::new(
            b.detection_key.as_str(),
            pb::TelemetryBundle::from(&b).encode_to_vec(),
        )
        .with_header(culprit_bus::HEADER_SCHEMA_VERSION, BUNDLE_SCHEMA)
    }

    impl Rig {
        /// Publishes `msg` and lets the service handle it.
        async fn handle(&mut self, msg: Message) {
            self.bus.publish(Topic::Telemetry, msg).await.unwrap();
            let d = self.work.next().await.unwrap();
            self.service.handle(d).await;
        }

        /// Every event published so far (the in-process bus queues them at publish time).
        async fn events(&mut self) -> Vec<pb::correlation_event::Kind> {
            let ready =
                culprit_bus::BusInspector::queue_depth(self.bus.as_ref(), QueueName::Policy)
                    .await
                    .unwrap();
            let mut out = Vec::new();
            for _ in 0..ready {
                let d = self.events.next().await.unwrap();
                let ev = pb::CorrelationEvent::decode(d.message.payload.as_slice()).unwrap();
                out.push(ev.kind.unwrap());
                d.ack().await.unwrap();
            }
            out
        }

        async fn stored(&self) -> Correlation {
            let bytes = self
                .stores
                .results
                .get(&detection().key())
                .await
                .unwrap()
                .unwrap();
            Correlation::try_from(pb::Correlation::decode(bytes.as_slice()).unwrap()).unwrap()
        }
    }

    fn is_new(k: &pb::correlation_event::Kind) -> bool {
        matches!(k, pb::correlation_event::Kind::NewResult(_))
    }

    #[tokio::test]
    async fn the_first_answer_is_a_new_result_once_even_when_redelivered() {
        let mut rig = rig().await;
        rig.handle(bundle(0, None)).await;
        let first = rig.events().await;
        assert_eq!(first.len(), 1);
        assert!(is_new(&first[0]));
        rig.clock.advance(Duration::from_seconds(5));
        rig.handle(bundle(0, None)).await;
        assert!(
            rig.events().await.is_empty(),
            "a redelivery publishes nothing"
        );
    }

    #[tokio::test]
    async fn a_requery_that_moves_nothing_updates_the_store_silently() {
        let mut rig = rig().await;
        rig.handle(bundle(0, None)).await;
        assert_eq!(rig.events().await.len(), 1);
        let before = rig.stored().await;
        rig.clock.advance(Duration::from_minutes(5));
        rig.handle(bundle(1, None)).await;
        assert!(rig.events().await.is_empty());
        let after = rig.stored().await;
        assert_eq!(after.status, before.status);
        assert_eq!(
            after.computed_at,
            before.computed_at + Duration::from_minutes(5)
        );
    }

    #[tokio::test]
    async fn a_requery_that_moves_the_answer_is_an_attribution_changed_event_once() {
        let mut rig = rig().await;
        // The first hunt failed; the re-query gets an answer.
        rig.handle(bundle(0, Some("service"))).await;
        let before = rig.stored().await;
        assert_eq!(before.status, Status::HuntFailed);
        rig.events().await;
        rig.clock.advance(Duration::from_minutes(15));
        rig.handle(bundle(2, None)).await;
        let events = rig.events().await;
        assert_eq!(events.len(), 1, "{events:?}");
        let pb::correlation_event::Kind::AttributionChanged(changed) = &events[0] else {
            panic!("expected attribution_changed, got {events:?}");
        };
        let previous = Correlation::try_from(changed.previous.clone().unwrap()).unwrap();
        let current = Correlation::try_from(changed.current.clone().unwrap()).unwrap();
        assert_eq!(previous.status, Status::HuntFailed);
        assert_ne!(current.status, Status::HuntFailed);
        assert!(changed.reason.contains("hunt"), "{}", changed.reason);
        assert_eq!(rig.stored().await.status, current.status);

        // The same re-query redelivered: stored already, announced already.
        rig.handle(bundle(2, None)).await;
        assert!(rig.events().await.is_empty());
    }

    #[tokio::test]
    async fn a_failed_requery_leaves_the_answer_standing() {
        let mut rig = rig().await;
        rig.handle(bundle(0, None)).await;
        rig.events().await;
        let before = rig.stored().await;
        rig.clock.advance(Duration::from_minutes(5));
        rig.handle(bundle(1, Some("service"))).await;
        assert!(rig.events().await.is_empty());
        assert_eq!(rig.stored().await, before);
    }

    #[tokio::test]
    async fn a_bundle_of_another_schema_is_dead_lettered() {
        let mut rig = rig().await;
        let mut msg = bundle(0, None);
        msg.headers.insert(
            culprit_bus::HEADER_SCHEMA_VERSION.to_owned(),
            "culprit.v1.Detection".to_owned(),
        );
        rig.handle(msg).await;
        assert!(rig.events().await.is_empty());
        let dead =
            culprit_bus::BusInspector::dead_letters(rig.bus.as_ref(), QueueName::Correlate, 5)
                .await
                .unwrap();
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0].reason.contains("x-culprit-schema-version"),
            "{}",
            dead[0].reason
        );
    }
}
