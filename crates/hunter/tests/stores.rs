//! The hunter on real infrastructure: re-queries through RabbitMQ's delay queues with the
//! answered marks and the cache on the shared Redis (random prefixes), and a hunter riding
//! out a Redis outage on a private `redis-server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use culprit_bus::{
    Bus, BusConfig, BusInspector, Consumer, InProcessBus, Message, Publisher, QueueName, RabbitBus,
    Subscriber, Topic,
};
use culprit_cache::{BudgetLimits, FallbackBudget, HuntBudget, RedisStores, Stores, SystemClock};
use culprit_hunter::HuntingBackend;
use culprit_hunter::service::{DETECTION_SCHEMA, HunterConfig, HunterService, SCHEMA_HEADER};
use culprit_model::Detection;
use culprit_proto::TelemetryBundle;
use culprit_proto::v1 as pb;
use culprit_runtime::Shutdown;
use prost::Message as _;
use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Bound on waiting for an expected bundle: turns a hang into a failure.
const PATIENCE: Duration = Duration::from_secs(60);

fn amqp_url() -> String {
    std::env::var("CULPRIT_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn redis_url() -> String {
    std::env::var("CULPRIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix() -> String {
    format!("culprit-test-{:016x}", rand::random::<u64>())
}

fn message(d: &Detection) -> Message {
    Message::new(d.key().as_str(), pb::Detection::from(d).encode_to_vec())
        .with_header(SCHEMA_HEADER, DETECTION_SCHEMA)
}

async fn next_bundle(consumer: &mut Box<dyn Consumer>) -> TelemetryBundle {
    let d = tokio::time::timeout(PATIENCE, consumer.next())
        .await
        .expect("a bundle in time")
        .expect("bus open");
    let b = TelemetryBundle::try_from(
        pb::TelemetryBundle::decode(d.message.payload.as_slice()).unwrap(),
    )
    .unwrap();
    d.ack().await.unwrap();
    b
}

fn backends(backend: Arc<Scripted>) -> BTreeMap<String, Arc<dyn HuntingBackend>> {
    let mut b: BTreeMap<String, Arc<dyn HuntingBackend>> = BTreeMap::new();
    b.insert(TENANT.into(), backend);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeries_travel_through_rabbitmq_and_redelivered_ones_are_absorbed_by_redis_marks() {
    let prefix = prefix();
    let rabbit = RabbitBus::connect(BusConfig {
        url: SecretString::from(amqp_url()),
        prefix: prefix.clone(),
        retry_delays: vec![Duration::from_millis(50)],
        max_attempts: 3,
        ..BusConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("this test needs RabbitMQ at {}: {e}", amqp_url()));
    rabbit.declare_topology().await.unwrap();
    let redis = RedisStores::connect(&redis_url(), &prefix)
        .await
        .unwrap_or_else(|e| panic!("this test needs Redis at {}: {e}", redis_url()));
    let redis = Arc::new(redis);
    let stores = Stores::redis(
        RedisStores::connect(&redis_url(), &prefix).await.unwrap(),
        0.5,
    )
    .unwrap();
    let bus: Arc<dyn Bus> = Arc::new(rabbit.clone());
    let backend = Scripted::answering();
    let requery_after = vec![Duration::from_millis(300), Duration::from_millis(900)];
    let config = HunterConfig {
        batch_window: Duration::from_millis(100),
        requery_after: requery_after.clone(),
        shutdown_grace: Duration::from_secs(1),
        ..config()
    };
    let mut bundles = bus.subscribe(QueueName::Correlate, 16).await.unwrap();
    let shutdown = Shutdown::new();
    let hunter = HunterService::new(
        bus.clone(),
        stores.budget.clone(),
        Arc::new(SystemClock),
        backends(backend.clone()),
        config,
    )
    .with_stores(&stores);
    let worker = tokio::spawn(hunter.run(shutdown.clone()));

    let d = detection(1, 11);
    bus.publish(Topic::Detections, message(&d)).await.unwrap();
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let b = next_bundle(&mut bundles).await;
        assert_eq!(b.detection_key, d.key());
        rounds.push(b.requery);
    }
    assert_eq!(rounds, [0, 1, 2], "first hunt, then each re-query in turn");
    assert_eq!(backend.calls(), 3);

    // The first message again (ingest published twice, or a lost ack): answered already.
    bus.publish(Topic::Detections, message(&d)).await.unwrap();
    let sentinel = detection(2, 12);
    bus.publish(Topic::Detections, message(&sentinel))
        .await
        .unwrap();
    let next = next_bundle(&mut bundles).await;
    assert_eq!(
        next.detection_key,
        sentinel.key(),
        "no second answer for {}",
        d.key()
    );
    assert_eq!(next.requery, 0);
    // The sentinel's own re-queries: two more bundles, then nothing for the duplicate.
    for n in 1..=2 {
        let b = next_bundle(&mut bundles).await;
        assert_eq!((b.detection_key, b.requery), (sentinel.key(), n));
    }
    assert_eq!(backend.calls(), 6);
    assert!(
        rabbit
            .dead_letters(QueueName::Hunt, 10)
            .await
            .unwrap()
            .is_empty()
    );

    shutdown.trigger();
    worker.await.unwrap().unwrap();
    drop(bundles);
    rabbit
        .delete_delay_queues(&QueueName::Hunt, &requery_after)
        .await
        .unwrap();
    rabbit.delete_topology().await.unwrap();
    rabbit.close().await;
    redis.delete_all().await.unwrap();
}

/// A private redis-server, SIGKILLed on drop.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    async fn start(dir: &Path, port: u16) -> OwnRedis {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--daemonize", "no", "--logfile", ""])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("this test starts its own redis-server: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(out).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("Ready to accept connections") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "redis-server on port {port} did not start");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        OwnRedis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_away_the_hunter_keeps_answering_and_an_empty_return_spends_the_window() {
    let port = free_port();
    let first_dir = tempfile::tempdir().unwrap();
    let redis = OwnRedis::start(first_dir.path(), port).await;
    let shared = Arc::new(
        RedisStores::connect(&redis.url(), "outage")
            .await
            .unwrap()
            .with_limits(BudgetLimits::default())
            .unwrap(),
    );
    let budget = Arc::new(
        FallbackBudget::new(shared.clone(), 0.25)
            .unwrap()
            .with_probe_interval(Duration::from_millis(100)),
    );
    let stores = Stores {
        budget: budget.clone(),
        cache: shared.clone(),
        results: shared.clone(),
        idempotency: shared.clone(),
        ledger: shared.clone(),
    };
    let bus = Arc::new(InProcessBus::new(bus_config()).unwrap());
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let backend = Scripted::answering();
    let mut bundles = bus.subscribe(QueueName::Correlate, 16).await.unwrap();
    let shutdown = Shutdown::new();
    let hunter = HunterService::new(
        dyn_bus,
        budget.clone(),
        Arc::new(SystemClock),
        backends(backend.clone()),
        HunterConfig {
            batch_window: Duration::from_millis(50),
            shutdown_grace: Duration::from_millis(200),
            ..config()
        },
    )
    .with_stores(&stores);
    let worker = tokio::spawn(hunter.run(shutdown.clone()));

    bus.publish(Topic::Detections, message(&detection(1, 11)))
        .await
        .unwrap();
    assert!(next_bundle(&mut bundles).await.hunt_failure.is_none());

    redis.kill().await;
    // Redis is gone: the cache, the marks and the shared budget fail; hunting goes on.
    for i in 2..5 {
        bus.publish(Topic::Detections, message(&detection(i, 10 + i)))
            .await
            .unwrap();
        let b = next_bundle(&mut bundles).await;
        assert!(b.hunt_failure.is_none());
        assert_eq!(b.detection.unwrap().source_id, format!("d{i}"));
    }
    assert!(budget.is_degraded(), "spending the local share");
    assert_eq!(backend.calls(), 4);

    // Back, but empty: the current windows count as spent, so the next detection waits.
    let empty_dir = tempfile::tempdir().unwrap();
    let _redis = OwnRedis::start(empty_dir.path(), port).await;
    let now = culprit_model::Timestamp::now();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let left = loop {
        // The fallback probes Redis again at most every 100 ms.
        match budget.remaining(TENANT, now).await {
            Ok(left) if !budget.is_degraded() => break left,
            _ if tokio::time::Instant::now() > deadline => panic!("Redis did not come back"),
            _ => {
                // Spending through the fallback is what probes the primary.
                let _ = budget
                    .try_spend("probe", culprit_model::Timestamp::now())
                    .await;
                tokio::task::yield_now().await;
            }
        }
    };
    assert_eq!((left.per_minute, left.per_hour), (0, 0), "{left:?}");
    bus.publish(Topic::Detections, message(&detection(5, 15)))
        .await
        .unwrap();
    // Taken off the queue and waiting on the budget, not hunted.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while bus.queue_depth(QueueName::Hunt).await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hunter took the detection"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        backend.calls(),
        4,
        "no call in a window that counts as spent"
    );

    shutdown.trigger();
    // The batch waiting on the budget is handed back within the grace.
    worker.await.unwrap().unwrap();
    assert_eq!(bus.queue_depth(QueueName::Hunt).await.unwrap(), 1);
}
