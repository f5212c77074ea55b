//! Prometheus metrics for every Culprit process: one process-wide registry ([`metrics`]) with
//! typed recording methods, an HTTP endpoint ([`server`]: `/metrics`, `/healthz`, `/readyz`)
//! and a tower layer counting gRPC calls ([`grpc`]).
//!
//! Recording is cheap (atomics behind a label lookup) and never fails, so instrumented code
//! calls it inline:
//!
//! ```
//! use std::time::Duration;
//! use culprit_metrics::{HuntKind, metrics};
//!
//! metrics().hunt_call("lab", HuntKind::Hunt, "ok", Duration::from_millis(420));
//! metrics().cache_lookup("lab", false);
//! assert!(metrics().render().contains("culprit_hunt_calls_total{tenant=\"lab\",kind=\"hunt\",outcome=\"ok\"}"));
//! ```

pub mod grpc;
pub mod server;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use server::{MetricsServer, Probe, Refresh};

type L1 = [(&'static str, String); 1];
type L2 = [(&'static str, String); 2];
type L3 = [(&'static str, String); 3];
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Why a hunting call was made; a label of the hunting-call families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HuntKind {
    /// The first hunt of a batch.
    Hunt,
    /// A scheduled re-query for late telemetry.
    Requery,
    /// A smaller query after a truncated or too-expensive answer.
    Split,
}

impl HuntKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HuntKind::Hunt => "hunt",
            HuntKind::Requery => "requery",
            HuntKind::Split => "split",
        }
    }
}

/// The process's metrics. Cheap to clone (clones share the values); most code uses the
/// process-wide instance from [`metrics`], tests may make their own with [`Metrics::new`].
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    ingested: Family<L2, Counter>,
    rejected: Family<L2, Counter>,
    dead_letters: Family<L2, Counter>,
    published: Family<L1, Counter>,
    consumed: Family<L1, Counter>,
    queue_depth: Family<L1, Gauge>,
    queue_wait: Histograms<L1>,
    budget_left: Family<L2, Gauge>,
    hunt_calls: Family<L3, Counter>,
    hunt_throttled: Family<L2, Counter>,
    hunt_seconds: Histograms<L2>,
    cache: Family<L2, Counter>,
    attributions: Family<L2, Counter>,
    ingest_to_result: Histogram,
    grpc_requests: Family<L2, Counter>,
    grpc_seconds: Histograms<L1>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// 5 ms .. ~80 s: a hunting call, a queue wait, a gRPC call.
fn short_latency() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// 50 ms .. ~30 min: ingest to stored answer, including waits for the hunting budget.
fn long_latency() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

/// The process-wide metrics, served by [`server`].
pub fn metrics() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let ingested = Family::default();
        r.register(
            "culprit_detections_ingested",
            "Detections accepted and published, by source and tenant",
            ingested.clone(),
        );
        let rejected = Family::default();
        r.register(
            "culprit_detections_rejected",
            "Inputs refused before publishing, by source and reason kind",
            rejected.clone(),
        );
        let dead_letters = Family::default();
        r.register(
            "culprit_dead_letters",
            "Messages moved to a dead-letter queue, by queue and reason kind",
            dead_letters.clone(),
        );
        let published = Family::default();
        r.register(
            "culprit_bus_published",
            "Messages published (confirmed), by topic",
            published.clone(),
        );
        let consumed = Family::default();
        r.register(
            "culprit_bus_consumed",
            "Deliveries handed to consumers, by queue",
            consumed.clone(),
        );
        let queue_depth = Family::default();
        r.register(
            "culprit_queue_depth",
            "Messages ready in a work queue, read at scrape time",
            queue_depth.clone(),
        );
        let queue_wait: Histograms<L1> = Family::new_with_constructor(short_latency);
        r.register(
            "culprit_queue_wait_seconds",
            "Time from publish to delivery (queue lag), by queue",
            queue_wait.clone(),
        );
        let budget_left = Family::default();
        r.register(
            "culprit_hunt_budget_left",
            "Hunting calls left in the tenant's window (minute, hour), read at scrape time",
            budget_left.clone(),
        );
        let hunt_calls = Family::default();
        r.register(
            "culprit_hunt_calls",
            "Advanced Hunting calls, by tenant, kind and outcome",
            hunt_calls.clone(),
        );
        let hunt_throttled = Family::default();
        r.register(
            "culprit_hunt_throttled",
            "Advanced Hunting calls answered 429 (throttled), by tenant and kind",
            hunt_throttled.clone(),
        );
        let hunt_seconds: Histograms<L2> = Family::new_with_constructor(short_latency);
        r.register(
            "culprit_hunt_call_seconds",
            "Advanced Hunting call latency, by tenant and kind",
            hunt_seconds.clone(),
        );
        let cache = Family::default();
        r.register(
            "culprit_cache_lookups",
            "Telemetry cache lookups, by tenant and result (hit, miss)",
            cache.clone(),
        );
        let attributions = Family::default();
        r.register(
            "culprit_attributions",
            "Attribution answers, by tenant and status",
            attributions.clone(),
        );
        let ingest_to_result = long_latency();
        r.register(
            "culprit_ingest_to_result_seconds",
            "Time from ingest to the stored attribution",
            ingest_to_result.clone(),
        );
        let grpc_requests = Family::default();
        r.register(
            "culprit_grpc_requests",
            "gRPC calls served, by method and status code",
            grpc_requests.clone(),
        );
        let grpc_seconds: Histograms<L1> = Family::new_with_constructor(short_latency);
        r.register(
            "culprit_grpc_request_seconds",
            "gRPC call latency (to the response headers), by method",
            grpc_seconds.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: r,
                ingested,
                rejected,
                dead_letters,
                published,
                consumed,
                queue_depth,
                queue_wait,
                budget_left,
                hunt_calls,
                hunt_throttled,
                hunt_seconds,
                cache,
                attributions,
                ingest_to_result,
                grpc_requests,
                grpc_seconds,
            }),
        }
    }

    /// A detection was accepted and published.
    pub fn detection_ingested(&self, source: &str, tenant: &str) {
        self.inner
            .ingested
            .get_or_create(&[("source", source.to_owned()), ("tenant", tenant.to_owned())])
            .inc();
    }

    /// An input was refused before publishing; `reason` is reduced to its kind.
    pub fn detection_rejected(&self, source: &str, reason: &str) {
        self.inner
            .rejected
            .get_or_create(&[
                ("source", source.to_owned()),
                ("reason", reason_kind(reason)),
            ])
            .inc();
    }

    /// A message was dead-lettered from `queue`; `reason` is reduced to its kind (the text
    /// before the first `:`), so free-form reasons do not explode the label set.
    pub fn dead_lettered(&self, queue: &str, reason: &str) {
        self.inner
            .dead_letters
            .get_or_create(&[("queue", queue.to_owned()), ("reason", reason_kind(reason))])
            .inc();
    }

    /// A message was published to `topic`.
    pub fn published(&self, topic: &str) {
        self.inner
            .published
            .get_or_create(&[("topic", topic.to_owned())])
            .inc();
    }

    /// A delivery from `queue` reached a consumer, `waited` after it was published.
    pub fn consumed(&self, queue: &str, waited: Option<Duration>) {
        let label = [("queue", queue.to_owned())];
        self.inner.consumed.get_or_create(&label).inc();
        if let Some(w) = waited {
            self.inner
                .queue_wait
                .get_or_create(&label)
                .observe(w.as_secs_f64());
        }
    }

    /// Messages ready in `queue` now.
    pub fn queue_depth(&self, queue: &str, depth: u64) {
        self.inner
            .queue_depth
            .get_or_create(&[("queue", queue.to_owned())])
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Hunting calls left for `tenant` in the minute and hour windows now.
    pub fn budget_left(&self, tenant: &str, per_minute: u32, per_hour: u32) {
        for (window, left) in [("minute", per_minute), ("hour", per_hour)] {
            self.inner
                .budget_left
                .get_or_create(&[("tenant", tenant.to_owned()), ("window", window.to_owned())])
                .set(i64::from(left));
        }
    }

    /// One Advanced Hunting call. `outcome`: `ok`, `throttled` (a 429, also counted in
    /// `culprit_hunt_throttled_total`) or the error's kind label.
    pub fn hunt_call(&self, tenant: &str, kind: HuntKind, outcome: &str, elapsed: Duration) {
        let outcome = reason_kind(outcome);
        if outcome == "throttled" {
            self.inner
                .hunt_throttled
                .get_or_create(&[
                    ("tenant", tenant.to_owned()),
                    ("kind", kind.as_str().to_owned()),
                ])
                .inc();
        }
        self.inner
            .hunt_calls
            .get_or_create(&[
                ("tenant", tenant.to_owned()),
                ("kind", kind.as_str().to_owned()),
                ("outcome", outcome),
            ])
            .inc();
        self.inner
            .hunt_seconds
            .get_or_create(&[
                ("tenant", tenant.to_owned()),
                ("kind", kind.as_str().to_owned()),
            ])
            .observe(elapsed.as_secs_f64());
    }

    /// A telemetry-cache lookup.
    pub fn cache_lookup(&self, tenant: &str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.inner
            .cache
            .get_or_create(&[("tenant", tenant.to_owned()), ("result", result.to_owned())])
            .inc();
    }

    /// An attribution answer with `status` (e.g. `attributed`).
    pub fn attribution(&self, tenant: &str, status: &str) {
        self.inner
            .attributions
            .get_or_create(&[
                ("tenant", tenant.to_owned()),
                ("status", reason_kind(status)),
            ])
            .inc();
    }

    /// An answer was stored; `ingested_at` is when its detection entered the system (from
    /// the delivery's trace baggage). Unknown or future times are skipped.
    pub fn result_stored(&self, ingested_at: Option<SystemTime>) {
        if let Some(elapsed) = ingested_at.and_then(|t| SystemTime::now().duration_since(t).ok()) {
            self.inner.ingest_to_result.observe(elapsed.as_secs_f64());
        }
    }

    /// A gRPC call finished with `code` (the grpc-status number).
    pub fn grpc_request(&self, method: &str, code: &str, elapsed: Duration) {
        self.inner
            .grpc_requests
            .get_or_create(&[("method", method.to_owned()), ("code", code.to_owned())])
            .inc();
        self.inner
            .grpc_seconds
            .get_or_create(&[("method", method.to_owned())])
            .observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// A short, bounded label from a free-form reason: the text before the first `:` (or ` (`),
/// lower-cased, limited to `[a-z0-9_.-]` and 40 bytes; `other` when nothing is left.
pub fn reason_kind(reason: &str) -> String {
    let head = reason.split([':', '(']).next().unwrap_or_default().trim();
    let kind: String = head
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c == ' ' { '_' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .take(40)
        .collect();
    if kind.is_empty() {
        "other".to_owned()
    } else {
        kind
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The value of the sample whose line starts with `series`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn reasons_are_reduced_to_bounded_kinds() {
        assert_eq!(reason_kind("payload: not a Detection: bad tag"), "payload");
        assert_eq!(reason_kind("delivery_limit"), "delivery_limit");
        assert_eq!(
            reason_kind("hunting: throttled (gave up after 5 attempts)"),
            "hunting"
        );
        assert_eq!(reason_kind("Hunt Failed (x)"), "hunt_failed");
        assert_eq!(reason_kind(": nothing"), "other");
        assert_eq!(reason_kind(&"é".repeat(100)), "other");
        assert_eq!(reason_kind(&"a".repeat(100)).len(), 40);
    }

    #[test]
    fn recorded_values_show_in_the_exposition() {
        let m = Metrics::new();
        m.detection_ingested("vectra", "lab");
        m.detection_ingested("vectra", "lab");
        m.dead_lettered("hunt", "payload: not a Detection");
        m.hunt_call("lab", HuntKind::Hunt, "ok", Duration::from_millis(300));
        m.hunt_call(
            "lab",
            HuntKind::Requery,
            "throttled",
            Duration::from_millis(20),
        );
        m.cache_lookup("lab", true);
        m.cache_lookup("lab", false);
        m.cache_lookup("lab", false);
        m.attribution("lab", "attributed");
        m.budget_left("lab", 44, 1499);
        m.queue_depth("hunt", 7);
        m.consumed("hunt", Some(Duration::from_millis(12)));
        m.result_stored(Some(SystemTime::now() - Duration::from_secs(2)));
        m.result_stored(Some(SystemTime::now() + Duration::from_secs(60)));
        m.grpc_request(
            "/culprit.v1.CorrelationService/SubmitDetection",
            "0",
            Duration::from_millis(3),
        );
        let text = m.render();
        let v = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("{s} missing in\n{text}"));
        assert_eq!(
            v("culprit_detections_ingested_total{source=\"vectra\",tenant=\"lab\"}"),
            2.0
        );
        assert_eq!(
            v("culprit_dead_letters_total{queue=\"hunt\",reason=\"payload\"}"),
            1.0
        );
        assert_eq!(
            v("culprit_hunt_calls_total{tenant=\"lab\",kind=\"hunt\",outcome=\"ok\"}"),
            1.0
        );
        assert_eq!(
            v("culprit_hunt_throttled_total{tenant=\"lab\",kind=\"requery\"}"),
            1.0
        );
        assert_eq!(
            v("culprit_cache_lookups_total{tenant=\"lab\",result=\"miss\"}"),
            2.0
        );
        assert_eq!(
            v("culprit_attributions_total{tenant=\"lab\",status=\"attributed\"}"),
            1.0
        );
        assert_eq!(
            v("culprit_hunt_budget_left{tenant=\"lab\",window=\"hour\"}"),
            1499.0
        );
        assert_eq!(v("culprit_queue_depth{queue=\"hunt\"}"), 7.0);
        assert_eq!(v("culprit_queue_wait_seconds_count{queue=\"hunt\"}"), 1.0);
        // The answer "from the future" (clock skew) is skipped, not recorded as 0.
        assert_eq!(v("culprit_ingest_to_result_seconds_count"), 1.0);
        let sum = v("culprit_ingest_to_result_seconds_sum");
        assert!((2.0..60.0).contains(&sum), "{sum}");
        assert_eq!(
            v(
                "culprit_grpc_requests_total{method=\"/culprit.v1.CorrelationService/SubmitDetection\",code=\"0\"}"
            ),
            1.0
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
