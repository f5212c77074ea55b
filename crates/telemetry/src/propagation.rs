//! W3C trace context between services: `traceparent`/`tracestate` and a `baggage` entry with
//! the time the detection entered the system, in string-header maps (bus messages) and HTTP
//! headers (gRPC metadata).
//!
//! Publishers call [`inject_current`] inside the span of the work that produced the message;
//! consumers give their handling span the message's context with [`set_parent`] before
//! entering it, so the consumer's spans join the publisher's trace.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::Context;
use opentelemetry::baggage::{BaggageExt as _, KeyValueMetadata};
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// W3C trace-context header.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace-context vendor header.
pub const TRACESTATE: &str = "tracestate";
/// W3C baggage header.
pub const BAGGAGE: &str = "baggage";
/// Baggage entry: when the detection entered the system, in Unix milliseconds.
pub const INGESTED_AT: &str = "culprit.ingested_ms";

fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

struct Headers<'a>(&'a mut BTreeMap<String, String>);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct ReadHeaders<'a>(&'a BTreeMap<String, String>);

impl Extractor for ReadHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct HttpHeaders<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes the current span's trace context into `headers`, unless they carry a `traceparent`
/// already (a message being forwarded keeps its own). The first hop also stamps the ingest
/// time.
pub fn inject_current(headers: &mut BTreeMap<String, String>) {
    if headers.contains_key(TRACEPARENT) {
        return;
    }
    inject_context(&tracing::Span::current().context(), headers);
}

/// Writes `cx` into `headers` (adding the ingest-time baggage when `cx` has none).
pub fn inject_context(cx: &Context, headers: &mut BTreeMap<String, String>) {
    let stamped;
    let cx = if cx.baggage().get(INGESTED_AT).is_some() {
        cx
    } else {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let entries: Vec<KeyValueMetadata> = cx
            .baggage()
            .iter()
            .map(|(k, (v, m))| KeyValueMetadata::new(k.clone(), v.clone(), m.clone()))
            .chain([KeyValueMetadata::new(INGESTED_AT, now.to_string(), "")])
            .collect();
        stamped = cx.with_baggage(entries);
        &stamped
    };
    propagator().inject_context(cx, &mut Headers(headers));
}

/// The context carried by string headers (empty when they carry none or a malformed one).
pub fn extract(headers: &BTreeMap<String, String>) -> Context {
    propagator().extract(&ReadHeaders(headers))
}

/// The context carried by HTTP headers (gRPC metadata).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    propagator().extract(&HttpHeaders(headers))
}

/// Makes `cx` the parent of `span`, when `cx` carries a valid remote span. Call it before the
/// span is first entered. Without the OpenTelemetry layer installed this does nothing.
pub fn set_parent(span: &tracing::Span, cx: Context) {
    if cx.span().span_context().is_valid() || !cx.baggage().is_empty() {
        // An error only means no span layer is installed (or the span is disabled).
        let _ = span.set_parent(cx);
    }
}

/// When the detection behind these headers entered the system, from their baggage.
pub fn ingested_at(headers: &BTreeMap<String, String>) -> Option<SystemTime> {
    let cx = extract(headers);
    let ms: u64 = cx.baggage().get(INGESTED_AT)?.as_str().parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// The trace id of `span` as 32 hex digits, when it has a valid OpenTelemetry context.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_context_round_trips_and_keeps_the_first_ingest_time() {
        let mut incoming = BTreeMap::new();
        incoming.insert(TRACEPARENT.to_owned(), PARENT.to_owned());
        incoming.insert(BAGGAGE.to_owned(), format!("{INGESTED_AT}=1700000000123"));
        let cx = extract(&incoming);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        let mut out = BTreeMap::new();
        inject_context(&cx, &mut out);
        assert!(
            out[TRACEPARENT].contains("0af7651916cd43dd8448eb211c80319c"),
            "{out:?}"
        );
        assert_eq!(
            ingested_at(&out),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
    }

    #[test]
    fn the_first_hop_stamps_the_ingest_time_and_a_forwarded_message_is_left_alone() {
        let before = SystemTime::now() - Duration::from_secs(1);
        let mut headers = BTreeMap::new();
        inject_current(&mut headers);
        let at = ingested_at(&headers).expect("stamped");
        assert!(at >= before, "{at:?} < {before:?}");

        let mut forwarded = BTreeMap::new();
        forwarded.insert(TRACEPARENT.to_owned(), PARENT.to_owned());
        inject_current(&mut forwarded);
        assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    }

    #[test]
    fn malformed_context_is_ignored() {
        let mut headers = BTreeMap::new();
        headers.insert(TRACEPARENT.to_owned(), "00-zz-yy-01".to_owned());
        headers.insert(BAGGAGE.to_owned(), format!("{INGESTED_AT}=soon"));
        let cx = extract(&headers);
        assert!(!cx.span().span_context().is_valid());
        assert_eq!(ingested_at(&headers), None);
    }
}
