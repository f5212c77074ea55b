//! Cost of trace context and metrics on the in-process bus: publish → consume → ack of N
//! messages, each published inside a span, without and with the OpenTelemetry layer (which
//! makes every publish inject `traceparent` + baggage and every delivery open a span in the
//! publisher's trace).
//!
//! `cargo run --release -p culprit-bus --example bench_trace -- [N]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use culprit_bus::{
    BusConfig, InProcessBus, Message, Publisher as _, QueueName, Subscriber as _, Topic,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

async fn run(n: usize) -> f64 {
    let bus = InProcessBus::new(BusConfig {
        queue_capacity: n + 1,
        ..BusConfig::default()
    })
    .unwrap();
    let mut hunt = bus.subscribe(QueueName::Hunt, 256).await.unwrap();
    let start = Instant::now();
    for i in 0..n {
        let span = tracing::info_span!(target: "culprit_bench", "ingest");
        bus.publish(
            Topic::Detections,
            Message::new(format!("k:{i}"), vec![0u8; 256]),
        )
        .instrument(span)
        .await
        .unwrap();
    }
    for _ in 0..n {
        let d = hunt.next().await.unwrap();
        let span = d.span().clone();
        d.ack().instrument(span).await.unwrap();
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(50_000, |a| a.parse().expect("N: a number"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(1_000)); // warm-up
    let plain = rt.block_on(run(n));
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry().with(culprit_telemetry::otel_layer(&provider));
    let traced = tracing::subscriber::with_default(subscriber, || rt.block_on(run(n)));
    let per = |s: f64| s * 1e6 / n as f64;
    println!("messages: {n} (256-byte payload, publish + consume + ack, one thread)");
    println!(
        "no span layer:   {plain:.3} s  {:.2} µs/message",
        per(plain)
    );
    println!(
        "OpenTelemetry:   {traced:.3} s  {:.2} µs/message",
        per(traced)
    );
    println!(
        "trace overhead:  {:.2} µs/message",
        per(traced) - per(plain)
    );
}
