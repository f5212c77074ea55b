//! Trace context and metrics at the bus boundary, for both implementations: a message
//! published inside a span is delivered with a span in the same trace, a forwarded message
//! keeps its own context, queue wait and dead letters are counted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test failure report

use std::time::{Duration, SystemTime};

use culprit_bus::{
    Bus, BusConfig, HEADER_TRACEPARENT, InProcessBus, Message, QueueName, RabbitBus, Topic,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use rand::Rng as _;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

const FORWARDED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// The test's subscriber: spans get OpenTelemetry contexts (this thread only, so each test
/// runs on a current-thread runtime).
fn traced() -> tracing::subscriber::DefaultGuard {
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry().with(culprit_telemetry::otel_layer(&provider));
    tracing::subscriber::set_default(subscriber)
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Publishes one message inside a span and one carrying a foreign `traceparent`; checks what
/// the consumer gets; dead-letters the second.
async fn check(bus: &dyn Bus) {
    let mut hunt = bus.subscribe(QueueName::Hunt, 8).await.unwrap();
    let span = tracing::info_span!(target: "culprit_ingest", "ingest");
    let trace = culprit_telemetry::propagation::trace_id(&span).expect("a trace");
    let before = SystemTime::now() - Duration::from_secs(1);
    bus.publish(Topic::Detections, Message::new("k:1", b"one".to_vec()))
        .instrument(span)
        .await
        .unwrap();
    let forwarded = Message::new("k:2", b"two".to_vec()).with_header(HEADER_TRACEPARENT, FORWARDED);
    bus.publish(Topic::Detections, forwarded).await.unwrap();

    let dead_before = sample(
        &culprit_metrics::metrics().render(),
        "culprit_dead_letters_total{queue=\"hunt\",reason=\"payload\"}",
    );
    let first = hunt.next().await.unwrap();
    assert_eq!(first.message.message_id, "k:1");
    assert!(
        first
            .message
            .header(HEADER_TRACEPARENT)
            .unwrap()
            .contains(&trace)
    );
    // The publish time is the bus's bookkeeping (queue wait), not shown to consumers.
    assert_eq!(first.message.header("x-culprit-published-ms"), None);
    assert_eq!(
        culprit_telemetry::propagation::trace_id(first.span()).as_deref(),
        Some(trace.as_str()),
        "the delivery continues the publisher's trace"
    );
    assert!(first.ingested_at().unwrap() >= before);
    first.ack().await.unwrap();

    let second = hunt.next().await.unwrap();
    assert_eq!(second.message.header(HEADER_TRACEPARENT), Some(FORWARDED));
    assert_eq!(
        culprit_telemetry::propagation::trace_id(second.span()).as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    second
        .dead_letter("payload: not a Detection")
        .await
        .unwrap();
    let text = culprit_metrics::metrics().render();
    let dead_after = sample(
        &text,
        "culprit_dead_letters_total{queue=\"hunt\",reason=\"payload\"}",
    );
    // Tests in this binary run in parallel on the shared registry: at least ours.
    assert!(dead_after > dead_before, "{dead_before} -> {dead_after}");
    assert!(sample(&text, "culprit_queue_wait_seconds_count{queue=\"hunt\"}") >= 2.0);
    assert!(sample(&text, "culprit_bus_published_total{topic=\"detections\"}") >= 2.0);
}

#[tokio::test]
async fn in_process_deliveries_continue_the_publishers_trace() {
    let _guard = traced();
    let bus = InProcessBus::new(BusConfig::default()).unwrap();
    check(&bus).await;
}

#[tokio::test]
async fn rabbitmq_deliveries_continue_the_publishers_trace() {
    let _guard = traced();
    let url = std::env::var("CULPRIT_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let bus = RabbitBus::connect(BusConfig {
        url: url.into(),
        prefix: format!("culprit-trace-{:016x}", rand::rng().random::<u64>()),
        ..BusConfig::default()
    })
    .await
    .unwrap();
    check(&bus).await;
    bus.delete_topology().await.unwrap();
    bus.close().await;
}
