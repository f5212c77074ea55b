//! The distributed pipeline on the local RabbitMQ and Redis: detections published to
//! `culprit.detections` go through two hunter workers and a correlator against the twin, and
//! each ends as one stored result and one event on `culprit.correlations`. Malformed messages
//! end in the dead-letter queue with their reason, and the valid ones still complete.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use culprit::pipeline::start_twin;
use culprit_bus::{Bus, BusConfig, BusInspector, Message, QueueName, RabbitBus, Topic};
use culprit_cache::{BudgetLimits, RedisStores, ResultStore, SystemClock};
use culprit_correlator::service::CorrelatorService;
use culprit_hunter::service::{DETECTION_SCHEMA, HunterConfig, HunterService};
use culprit_model::{Detection, DetectionKey, Status};
use culprit_proto::v1 as pb;
use culprit_runtime::Shutdown;
use prost::Message as _;
use secrecy::SecretString;

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

fn scenario() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scenarios/lsass_01")
}

/// The scenario's detections, copied under new ids so the run has volume; the process each
/// copy must name is the original's.
fn detections(copies: usize, tenant: &str) -> Vec<(Detection, String)> {
    let loaded =
        culprit::scenario::detections(&scenario(), culprit::scenario::Feed::Vectra, tenant)
            .unwrap();
    let expected: BTreeMap<&str, &str> = [
        ("2568", "msedge.exe"),
        ("2569", "winx64_payload.exe"),
        ("2570", "svchost.exe"),
    ]
    .into();
    let mut out = Vec::new();
    for i in 0..copies {
        for d in &loaded.detections {
            let mut copy = d.clone();
            copy.source_id = format!("{}-{i}", d.source_id);
            out.push((copy, expected[d.source_id.as_str()].to_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detections_flow_through_rabbitmq_and_redis_to_one_result_each() {
    let tenant = "lab";
    let prefix = prefix();
    let tt = start_twin(tenant, vec![scenario()]).await.unwrap();
    let cfg = BusConfig {
        url: SecretString::from(amqp_url()),
        prefix: prefix.clone(),
        retry_delays: vec![Duration::from_millis(50), Duration::from_millis(200)],
        max_attempts: 3,
        ..BusConfig::default()
    };
    let rabbit = RabbitBus::connect(cfg).await.unwrap_or_else(|e| {
        panic!(
            "these tests need RabbitMQ at {} (set CULPRIT_TEST_AMQP_URL): {e}",
            amqp_url()
        )
    });
    rabbit.declare_topology().await.unwrap();
    let bus: Arc<dyn Bus> = Arc::new(rabbit.clone());
    let redis = RedisStores::connect(&redis_url(), &prefix)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "these tests need Redis at {} (set CULPRIT_TEST_REDIS_URL): {e}",
                redis_url()
            )
        });
    let redis = Arc::new(redis.with_limits(BudgetLimits::default()).unwrap());
    let results: Arc<dyn ResultStore> = redis.clone();

    // A pipeline consumer of the results, as a SOAR integration would bind one.
    let watch = QueueName::Custom("watch".into());
    bus.bind(watch.clone(), Topic::Correlations).await.unwrap();
    let mut events = bus.subscribe(watch, 64).await.unwrap();

    let shutdown = Shutdown::new();
    let mut backends = BTreeMap::new();
    backends.insert(tenant.to_owned(), tt.tenant.backend.clone());
    for _ in 0..2 {
        let hunter = HunterService::new(
            bus.clone(),
            redis.clone(),
            Arc::new(SystemClock),
            backends.clone(),
            HunterConfig {
                batch_window: Duration::from_millis(300),
                max_batch: 50,
                prefetch: 64,
                // One event per detection: no re-query within this test.
                requery_after: Vec::new(),
                ..HunterConfig::default()
            },
        )
        .with_cache(redis.clone())
        .with_idempotency(redis.clone());
        shutdown.spawn(hunter.run(shutdown.clone()));
    }
    let correlator = CorrelatorService {
        bus: bus.clone(),
        results: results.clone(),
        clock: Arc::new(SystemClock),
        options: culprit_correlator::Options::default(),
        links: Arc::new(|_| None),
        prefetch: 16,
        handled: Some(redis.clone()),
    };
    shutdown.spawn(correlator.run(shutdown.clone()));

    let work = detections(10, tenant);
    for (i, (d, _)) in work.iter().enumerate() {
        let payload = pb::Detection::from(d).encode_to_vec();
        let msg = Message::new(d.key().as_str(), payload)
            .with_header(culprit_bus::HEADER_SCHEMA_VERSION, DETECTION_SCHEMA);
        bus.publish(Topic::Detections, msg).await.unwrap();
        if i % 10 == 0 {
            let junk = Message::new(format!("junk-{i}"), b"\xff\x00 not protobuf".to_vec());
            bus.publish(Topic::Detections, junk).await.unwrap();
        }
    }

    let want: BTreeSet<DetectionKey> = work.iter().map(|(d, _)| d.key()).collect();
    let mut seen: BTreeMap<DetectionKey, usize> = BTreeMap::new();
    // The bound only turns a hang into a failure; completion is signalled by the events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < want.len() {
        let d = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("every detection produced an event in time")
            .expect("bus open");
        let ev = pb::CorrelationEvent::decode(d.message.payload.as_slice()).unwrap();
        let key = DetectionKey(d.message.message_id.clone());
        assert!(ev.kind.is_some(), "event for {key} has a kind");
        *seen.entry(key).or_default() += 1;
        d.ack().await.unwrap();
    }
    shutdown.drain(Duration::from_secs(10)).await;

    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert!(
        seen.values().all(|&n| n == 1),
        "one event per detection: {seen:?}"
    );
    for (d, expected) in &work {
        let bytes = results.get(&d.key()).await.unwrap().expect("stored result");
        let c = culprit_model::Correlation::try_from(
            pb::Correlation::decode(bytes.as_slice()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            c.status,
            Status::Attributed,
            "{}: {}",
            c.detection_id,
            c.explanation
        );
        assert_eq!(
            c.probable.as_ref().unwrap().file_name,
            *expected,
            "{}",
            c.detection_id
        );
    }
    let dead = rabbit.dead_letters(QueueName::Hunt, 100).await.unwrap();
    assert_eq!(dead.len(), 3, "the malformed messages are dead-lettered");
    assert!(
        dead.iter().all(|m| m.reason.contains("payload")),
        "{dead:?}"
    );
    let calls = tt.twin.call_counts(culprit::pipeline::TWIN_TENANT_ID);
    assert!(
        calls.hunting.max_in_60s <= 45 && calls.hunting.throttled == 0,
        "{calls:?}"
    );
    assert!(
        calls.hunting.total < work.len() as u64,
        "batching: {} calls for {} detections",
        calls.hunting.total,
        work.len()
    );

    rabbit.delete_topology().await.unwrap();
    redis.delete_all().await.unwrap();
    tt.twin.shutdown().await;
}
