//! Parse, deduplicate, publish with confirms, dead-letter what cannot be read.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use culprit_bus::{HEADER_SCHEMA_VERSION, Message, Publisher, QueueName, Topic};
use culprit_cache::IdempotencyStore;
use culprit_hunter::service::DETECTION_SCHEMA;
use culprit_ingest::{IngestError, Parsed, community_id, vectra};
use culprit_model::{Detection, DetectionKey};
use culprit_proto::v1 as pb;
use futures::StreamExt as _;
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::{PublishError, Source};

/// The bus queue whose dead-letter queue (`{prefix}.ingest.dlq`) holds unreadable input.
pub const DEAD_LETTER_QUEUE: &str = "ingest";
/// Header of a dead letter: the source that sent the input.
pub const HEADER_SOURCE: &str = "x-culprit-source";
/// Header of a dead letter: the source's tenant.
pub const HEADER_TENANT: &str = "x-culprit-tenant";
/// Header of a dead letter: the source's format.
pub const HEADER_FORMAT: &str = "x-culprit-format";

/// Rejections listed one by one in a dead letter's reason; the rest are counted.
const REASONS_LISTED: usize = 20;

/// How the publisher behaves.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// A key published within this window is a duplicate and is not published again.
    pub dedup_window: Duration,
    /// Idempotency scope; the gateway's SubmitDetection shares it so that either path
    /// absorbs the other's duplicates.
    pub dedup_scope: String,
    /// Longest wait for the broker's confirm of one message before the sender is told to
    /// retry (the claim on its key is released first, so the retry publishes).
    pub ack_timeout: Duration,
    /// Detections of one input published at once (confirms are awaited in parallel).
    pub concurrency: usize,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            dedup_window: Duration::from_secs(24 * 3600),
            dedup_scope: "ingest".to_owned(),
            ack_timeout: Duration::from_secs(10),
            concurrency: 64,
        }
    }
}

/// One detection handed to the bus (or recognised as a duplicate of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `{source}:{tenant}:{id}:{revision}`.
    pub key: DetectionKey,
    /// The key was published within the dedup window: nothing was sent.
    pub duplicate: bool,
    /// Optional fields that were present but unusable.
    pub warnings: Vec<String>,
}

/// A record that did not become a detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Index of the record in the input (array position or 0-based line).
    pub index: usize,
    /// Where and why (`results[2].src_ip: ...`).
    pub reason: String,
}

/// What became of one input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Detections confirmed by the broker, or duplicates of confirmed ones, in input order.
    pub published: Vec<Published>,
    /// Records that were dead-lettered (with the input's raw bytes).
    pub rejected: Vec<Rejection>,
    /// Well-formed records that are not detections (EVE `flow` events, CEF health).
    pub skipped: usize,
}

/// Publishes normalised detections. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestPublisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bus: Arc<dyn Publisher>,
    idempotency: Arc<dyn IdempotencyStore>,
    cfg: PublisherConfig,
}

impl IngestPublisher {
    /// A publisher on `bus` (an `Arc<dyn Bus>` coerces) deduplicating through `idempotency`.
    pub fn new(
        bus: Arc<dyn Publisher>,
        idempotency: Arc<dyn IdempotencyStore>,
        cfg: PublisherConfig,
    ) -> Self {
        IngestPublisher {
            inner: Arc::new(Inner {
                bus,
                idempotency,
                cfg,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PublisherConfig {
        &self.inner.cfg
    }

    /// True while the broker blocks publishing (a resource alarm): senders should be pushed
    /// back at once rather than wait for a confirm that will not come.
    pub fn blocked(&self) -> bool {
        self.inner.bus.blocked()
    }

    /// Publishes one normalised detection (its tenant already decided by the caller) as a
    /// `culprit.v1.Detection` on `culprit.detections`, message id = detection key; returns
    /// once the broker confirmed it. A key published within the dedup window is reported as
    /// a duplicate and not sent. On failure the claim on the key is released before this
    /// returns, so the sender's retry publishes.
    pub async fn publish(&self, detection: Detection) -> Result<Published, PublishError> {
        let inner = &self.inner;
        self.check_open()?;
        let key = detection.key();
        let first = inner
            .idempotency
            .first_seen(&inner.cfg.dedup_scope, key.as_str(), inner.cfg.dedup_window)
            .await
            .map_err(|e| PublishError::Store(e.to_string()))?;
        if !first {
            return Ok(duplicate(&detection));
        }
        let claim = self.guard(key.as_str());
        self.send_claimed(detection, claim).await
    }

    /// The guard of a key this call has just claimed.
    fn guard(&self, key: &str) -> Claim {
        Claim {
            inner: Some(self.inner.clone()),
            key: key.to_owned(),
        }
    }

    /// Claims the keys of one window of an input in one round trip. Every new key comes
    /// with its guard at once, so a dropped call (a sender that went away) releases the keys
    /// it claimed but never sent. After a failed claim no further window is claimed.
    async fn claim_window(
        &self,
        window: Vec<(usize, Detection)>,
        failed: &AtomicBool,
    ) -> Vec<Item> {
        if failed.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let inner = &self.inner;
        let keys: Vec<String> = window.iter().map(|(_, d)| d.key().0).collect();
        match inner
            .idempotency
            .first_seen_many(&inner.cfg.dedup_scope, &keys, inner.cfg.dedup_window)
            .await
        {
            Ok(firsts) => window
                .into_iter()
                .zip(keys.iter().zip(firsts))
                .map(|((i, d), (key, first))| {
                    if first {
                        Item::Send(i, d, self.guard(key))
                    } else {
                        Item::Duplicate(i, d)
                    }
                })
                .collect(),
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                vec![Item::Failed(PublishError::Store(e.to_string()))]
            }
        }
    }

    fn check_open(&self) -> Result<(), PublishError> {
        if self.inner.bus.blocked() {
            return Err(PublishError::Unavailable(
                "RabbitMQ blocks publishing (memory or disk alarm)".to_owned(),
            ));
        }
        Ok(())
    }

    /// Publishes a detection whose key this call has just claimed; releases the claim unless
    /// the broker confirmed.
    async fn send_claimed(
        &self,
        mut detection: Detection,
        claim: Claim,
    ) -> Result<Published, PublishError> {
        let inner = &self.inner;
        // The parsers leave absent Community IDs for this step (seed 0, the default).
        community_id::fill_sessions(&mut detection, 0);
        let key = detection.key();
        let published = Published {
            key: key.clone(),
            duplicate: false,
            warnings: detection.warnings.clone(),
        };
        let priority = u8::try_from((detection.priority() / 1000).min(9)).unwrap_or(9);
        let (source, tenant) = (detection.source, detection.tenant.clone());
        let payload = pb::Detection::from(&detection).encode_to_vec();
        let msg = Message::new(key.as_str(), payload)
            .with_header(HEADER_SCHEMA_VERSION, DETECTION_SCHEMA)
            .with_priority(priority);
        let sent = tokio::time::timeout(
            inner.cfg.ack_timeout,
            inner.bus.publish(Topic::Detections, msg),
        )
        .await;
        let error = match sent {
            Ok(Ok(())) => {
                claim.keep();
                culprit_metrics::metrics().detection_ingested(source.as_str(), &tenant);
                return Ok(published);
            }
            Ok(Err(e)) => PublishError::from_bus(e),
            Err(_) => PublishError::Unavailable(format!(
                "no confirm from RabbitMQ within {} ms",
                inner.cfg.ack_timeout.as_millis()
            )),
        };
        claim.release().await;
        Err(error)
    }

    /// Parses `raw` in the source's format for the source's tenant, publishes every detection
    /// and returns once all are confirmed. Records that fail are dead-lettered together, once,
    /// with the raw bytes and every reason; records that are not detections are skipped.
    /// An error means some detection may not be published: the sender should send the whole
    /// input again (duplicates are absorbed by key).
    pub async fn ingest(&self, source: &Source, raw: &[u8]) -> Result<IngestReport, PublishError> {
        let parsed = source.format.parse_input(raw, &source.tenant);
        let (good, report) = sort(parsed);
        self.finish(source, good, report, || raw.to_vec()).await
    }

    /// Vectra API detection objects already decoded (the API poller): each value is one
    /// detection; the rejected ones are dead-lettered as a JSON array.
    pub async fn ingest_values(
        &self,
        source: &Source,
        values: Vec<serde_json::Value>,
    ) -> Result<IngestReport, PublishError> {
        let parsed: Vec<Parsed> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Parsed {
                raw_index: i,
                detection: vectra::parse_detection(v, &source.tenant),
            })
            .collect();
        let (good, report) = sort(Ok(parsed));
        let raw = || {
            let bad: Vec<&serde_json::Value> = report_indices(&report)
                .filter_map(|i| values.get(i))
                .collect();
            serde_json::to_vec(&bad).unwrap_or_default()
        };
        self.finish(source, good, report.clone(), raw).await
    }

    /// Puts `raw` into `{prefix}.ingest.dlq` with `reason`, the source's name, tenant and
    /// format as headers; returns once the broker confirmed it.
    pub async fn dead_letter(
        &self,
        source: &Source,
        raw: &[u8],
        reason: &str,
    ) -> Result<(), PublishError> {
        let digest = Sha256::digest(raw);
        let mut id = String::from("raw:");
        id.extend(source.name.chars().take(64));
        id.push(':');
        for b in digest.iter().take(16) {
            let _ = write!(id, "{b:02x}");
        }
        let msg = Message::new(id, raw.to_vec())
            .with_header(HEADER_SOURCE, source.name.as_str())
            .with_header(HEADER_TENANT, source.tenant.as_str())
            .with_header(HEADER_FORMAT, source.format.as_str());
        let queue = QueueName::Custom(DEAD_LETTER_QUEUE.to_owned());
        let sent = tokio::time::timeout(
            self.inner.cfg.ack_timeout,
            self.inner.bus.dead_letter(queue, msg, reason),
        )
        .await;
        match sent {
            Ok(r) => r.map_err(PublishError::from_bus),
            Err(_) => Err(PublishError::Unavailable(
                "no confirm from RabbitMQ for a dead letter".to_owned(),
            )),
        }
    }

    async fn finish(
        &self,
        source: &Source,
        good: Vec<Detection>,
        mut report: IngestReport,
        raw: impl FnOnce() -> Vec<u8>,
    ) -> Result<IngestReport, PublishError> {
        let inner = &self.inner;
        let mut good = good;
        for d in &mut good {
            // Defence in depth: the parsers were given the source's tenant already.
            d.tenant.clone_from(&source.tenant);
        }
        if !good.is_empty() {
            self.check_open()?;
        }
        // The keys are claimed a window at a time (one round trip each), and the next window is
        // claimed while the previous one's confirms are in flight: the claims never leave the
        // confirm window empty, as claiming a whole large input first would.
        let width = inner.cfg.concurrency.max(1);
        let mut windows = Vec::new();
        let mut rest = good.into_iter().enumerate().peekable();
        while rest.peek().is_some() {
            windows.push(rest.by_ref().take(width).collect::<Vec<_>>());
        }
        let failed = Arc::new(AtomicBool::new(false));
        // Unordered: one slow confirm must not hold the window's other slots idle.
        let mut outcomes: Vec<(usize, Result<Published, PublishError>)> =
            futures::stream::iter(windows)
                .then(|w| {
                    // Owned, not borrowed: a borrowing closure here makes the future's `Send`
                    // depend on a higher-ranked lifetime the compiler cannot prove.
                    let (this, failed) = (self.clone(), failed.clone());
                    async move { this.claim_window(w, &failed).await }
                })
                .flat_map(futures::stream::iter)
                .map(|item| async move {
                    match item {
                        Item::Send(i, d, claim) => (i, self.send_claimed(d, claim).await),
                        Item::Duplicate(i, d) => (i, Ok(duplicate(&d))),
                        Item::Failed(e) => (usize::MAX, Err(e)),
                    }
                })
                .buffer_unordered(width)
                .collect()
                .await;
        outcomes.sort_by_key(|(i, _)| *i);
        let mut failure = None;
        for (_, outcome) in outcomes {
            match outcome {
                Ok(p) => report.published.push(p),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            // The retry of the whole input dead-letters the bad records then.
            return Err(e);
        }
        if !report.rejected.is_empty() {
            let reason = rejection_summary(&report.rejected);
            tracing::warn!(source = %source.name, tenant = %source.tenant, rejected = report.rejected.len(), %reason, "input dead-lettered");
            for r in &report.rejected {
                culprit_metrics::metrics().detection_rejected(source.format.as_str(), &r.reason);
            }
            self.dead_letter(source, &raw(), &reason).await?;
        }
        Ok(report)
    }
}

/// One detection of an input after its window's claim.
enum Item {
    /// New: to publish, with the guard of its claim.
    Send(usize, Detection, Claim),
    /// Published within the dedup window already.
    Duplicate(usize, Detection),
    /// The claim failed: nothing of this window or after it was claimed.
    Failed(PublishError),
}

/// The answer for a detection whose key was published within the dedup window.
fn duplicate(d: &Detection) -> Published {
    Published {
        key: d.key(),
        duplicate: true,
        warnings: d.warnings.clone(),
    }
}

fn report_indices(report: &IngestReport) -> impl Iterator<Item = usize> + '_ {
    report.rejected.iter().map(|r| r.index)
}

/// Splits parser output into detections to publish and the report's rejections and skips.
fn sort(parsed: Result<Vec<Parsed>, IngestError>) -> (Vec<Detection>, IngestReport) {
    let mut report = IngestReport::default();
    let mut good = Vec::new();
    match parsed {
        Err(e) => report.rejected.push(Rejection {
            index: 0,
            reason: e.to_string(),
        }),
        Ok(records) => {
            for p in records {
                match p.detection {
                    Ok(d) => good.push(d),
                    Err(e) if e.is_skip() => report.skipped += 1,
                    Err(e) => report.rejected.push(Rejection {
                        index: p.raw_index,
                        reason: e.to_string(),
                    }),
                }
            }
        }
    }
    (good, report)
}

/// `record 2: results[2].src_ip: ...; record 5: ...`, the first [`REASONS_LISTED`] only.
pub(crate) fn rejection_summary(rejected: &[Rejection]) -> String {
    let mut out = rejected
        .iter()
        .take(REASONS_LISTED)
        .map(|r| format!("record {}: {}", r.index, r.reason))
        .collect::<Vec<_>>()
        .join("; ");
    if rejected.len() > REASONS_LISTED {
        let _ = write!(out, "; and {} more", rejected.len() - REASONS_LISTED);
    }
    out
}

/// A claim on a key taken before publishing. Released when the publish fails, or when the
/// publishing future is dropped (a client that went away): at worst the message is then
/// published twice, never claimed and lost.
struct Claim {
    inner: Option<Arc<Inner>>,
    key: String,
}

impl Claim {
    fn keep(mut self) {
        self.inner = None;
    }

    async fn release(mut self) {
        if let Some(inner) = self.inner.take() {
            forget(&inner, &self.key).await;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let key = std::mem::take(&mut self.key);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { forget(&inner, &key).await });
        }
    }
}

async fn forget(inner: &Inner, key: &str) {
    if let Err(e) = inner.idempotency.forget(&inner.cfg.dedup_scope, key).await {
        // The key stays claimed until the window ends: a retry within it is answered as a
        // duplicate. Logged loudly because that detection is then only in the sender's hands.
        tracing::error!(error = %e, key, "could not release an ingest claim after a failed publish");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_the_first_reasons_and_counts_the_rest() {
        let rejected: Vec<Rejection> = (0..25)
            .map(|i| Rejection {
                index: i,
                reason: format!("results[{i}].src_ip: not an IP"),
            })
            .collect();
        let s = rejection_summary(&rejected);
        assert!(s.starts_with("record 0: results[0].src_ip: not an IP; record 1:"));
        assert!(s.ends_with("; and 5 more"), "{s}");
        assert!(!s.contains("record 20:"), "{s}");
    }

    #[test]
    fn unreadable_input_is_one_rejection_and_skips_are_counted() {
        let (good, report) = sort(Err(IngestError::Malformed {
            path: "$".into(),
            reason: "not JSON".into(),
        }));
        assert!(good.is_empty());
        assert_eq!(report.rejected.len(), 1);
        assert_eq!(report.rejected[0].reason, "$: malformed input: not JSON");

        let eve = br#"{"event_type":"flow","flow_id":1}"#;
        let (good, report) = sort(crate::Format::SuricataEve.parse_input(eve, "t1"));
        assert!(good.is_empty());
        assert_eq!(report.skipped, 1);
        assert!(report.rejected.is_empty());
    }
}
