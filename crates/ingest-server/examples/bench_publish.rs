//! Ingest → RabbitMQ with confirms, against a bare lapin publish-with-confirms loop in the
//! same run, on the same broker, exchange, queue, payload size and number of confirms in flight.
//!
//! `cargo run --release -p culprit-ingest-server --example bench_publish -- [detections] [in_flight] [rounds]`
//! (RabbitMQ at CULPRIT_TEST_AMQP_URL or amqp://guest:guest@127.0.0.1:5672/%2f, Redis at
//! CULPRIT_TEST_REDIS_URL or redis://127.0.0.1:6379.)
//!
//! The ingest side does everything a webhook body does after authentication: parse a Vectra
//! page, fill Community IDs, claim each key in Redis, encode protobuf, publish with `mandatory`
//! and await the confirm. The bare side only publishes the same encoded bytes and awaits the
//! confirms. Two bodies are ingested at a time with half the confirm window each (as two
//! concurrent webhook requests), so both sides have `in_flight` confirms outstanding. Each
//! round runs both, alternately; the figures are the median round. Parsing alone is timed too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use culprit_bus::{BusConfig, QueueName, RabbitBus};
use culprit_cache::RedisStores;
use culprit_ingest_server::{Format, IngestPublisher, PublisherConfig, Source};
use futures::StreamExt as _;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use prost::Message as _;
use rand::Rng;

const BATCH: usize = 500;
const BODIES_AT_ONCE: usize = 2;

fn env(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

fn template() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ingest/tests/data/scenarios/lsass_01/vectra_detections.json"
    );
    let page: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    page["results"][0].clone()
}

/// Pages of `BATCH` detections with ids from `first`.
fn pages(first: u64, n: usize) -> Vec<Vec<u8>> {
    let t = template();
    (0..n)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| {
            let results: Vec<serde_json::Value> = chunk
                .iter()
                .map(|i| {
                    let mut d = t.clone();
                    d["id"] = serde_json::json!(first + *i as u64);
                    d
                })
                .collect();
            serde_json::to_vec(
                &serde_json::json!({"count": results.len(), "next": null, "results": results}),
            )
            .unwrap()
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(20_000, |s| s.parse().unwrap());
    let in_flight: usize = args.get(2).map_or(64, |s| s.parse().unwrap());
    let rounds: usize = args.get(3).map_or(3, |s| s.parse().unwrap());
    let url = env(
        "CULPRIT_TEST_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    );
    let prefix = format!("culprit-bench-{:08x}", rand::rng().random::<u32>());
    let bus = RabbitBus::connect(BusConfig {
        url: url.clone().into(),
        prefix: prefix.clone(),
        ..BusConfig::default()
    })
    .await
    .unwrap();
    // BENCH_DEDUP=memory isolates the cost of the Redis claims.
    let redis: Arc<dyn culprit_cache::IdempotencyStore> = if env("BENCH_DEDUP", "redis") == "memory"
    {
        Arc::new(culprit_cache::MemoryStores::new())
    } else {
        Arc::new(
            RedisStores::connect(
                &env("CULPRIT_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
                &prefix,
            )
            .await
            .unwrap(),
        )
    };
    let publisher = IngestPublisher::new(
        Arc::new(bus.clone()),
        redis,
        PublisherConfig {
            concurrency: (in_flight / BODIES_AT_ONCE).max(1),
            // Keys of the run expire soon after it.
            dedup_window: Duration::from_secs(300),
            ..PublisherConfig::default()
        },
    );
    let source = Source::new("bench", "acme", Format::VectraJson);

    // The bare loop: its own connection and confirm channel, same exchange and routing.
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let exchange = format!("{prefix}.detections");
    let hunt = format!("{prefix}.hunt");
    let payload = {
        let d = culprit_ingest::vectra::parse_detection(&template(), "acme").unwrap();
        culprit_proto::v1::Detection::from(&d).encode_to_vec()
    };

    {
        let bodies = pages(1, n);
        let started = Instant::now();
        let parsed: usize = bodies
            .iter()
            .map(|b| culprit_ingest::vectra::parse_json(b, "acme").unwrap().len())
            .sum();
        assert_eq!(parsed, n);
        println!(
            "parsing alone: {:.0} detections/s on one core",
            n as f64 / started.elapsed().as_secs_f64()
        );
    }
    let mut ingest_rates = Vec::new();
    let mut bare_rates = Vec::new();
    for round in 0..rounds {
        let first = 1_000_000 * (round as u64 + 1);
        let bodies = pages(first, n);
        let started = Instant::now();
        // Two bodies at a time, as two webhook requests would be, each with half the window:
        // one body's parsing overlaps the other's confirms, and the confirms in flight are
        // `in_flight` in all, as in the bare loop.
        let published: usize = futures::stream::iter(&bodies)
            .map(|body| {
                let (publisher, source) = (&publisher, &source);
                async move {
                    let report = publisher.ingest(source, body).await.unwrap();
                    assert!(report.rejected.is_empty());
                    report.published.iter().filter(|p| !p.duplicate).count()
                }
            })
            .buffer_unordered(BODIES_AT_ONCE)
            .fold(0, |a, b| std::future::ready(a + b))
            .await;
        let ingest_secs = started.elapsed().as_secs_f64();
        assert_eq!(published, n);
        ingest_rates.push(n as f64 / ingest_secs);
        channel
            .queue_purge(hunt.as_str().into(), QueuePurgeOptions::default())
            .await
            .unwrap();

        let started = Instant::now();
        let confirmed = futures::stream::iter(0..n)
            .map(|i| {
                let (channel, exchange, payload) = (&channel, &exchange, &payload);
                async move {
                    let props = BasicProperties::default()
                        .with_message_id(format!("bare:{round}:{i}").into())
                        .with_delivery_mode(2);
                    let confirm = channel
                        .basic_publish(
                            exchange.as_str().into(),
                            "detections".into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..BasicPublishOptions::default()
                            },
                            payload,
                            props,
                        )
                        .await
                        .unwrap();
                    matches!(confirm.await.unwrap(), Confirmation::Ack(None))
                }
            })
            .buffer_unordered(in_flight)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        let bare_secs = started.elapsed().as_secs_f64();
        assert_eq!(confirmed, n);
        bare_rates.push(n as f64 / bare_secs);
        channel
            .queue_purge(hunt.as_str().into(), QueuePurgeOptions::default())
            .await
            .unwrap();
        println!(
            "round {}: ingest {:.0}/s ({ingest_secs:.2} s), bare lapin {:.0}/s ({bare_secs:.2} s), ratio {:.2}",
            round + 1,
            ingest_rates[round],
            bare_rates[round],
            ingest_rates[round] / bare_rates[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios: Vec<f64> = ingest_rates
        .iter()
        .zip(&bare_rates)
        .map(|(a, b)| a / b)
        .collect();
    let (ingest, bare) = (median(&mut ingest_rates), median(&mut bare_rates));
    let mut ratios = ratios;
    println!(
        "{n} detections x {rounds} rounds, {in_flight} confirms in flight, payload {} B: ingest median {ingest:.0}/s, bare lapin median {bare:.0}/s, median ratio {:.2} (target >= 0.70)",
        payload.len(),
        median(&mut ratios)
    );
    let _ = channel.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    let _ = bus.delete_queue(&QueueName::Custom("ingest".into())).await;
    bus.delete_topology().await.unwrap();
    bus.close().await;
}
