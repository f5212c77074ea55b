//! `culprit serve --role hunter` as a child process on RabbitMQ and Redis (random prefixes)
//! against the twin: SIGTERM mid-run stops consuming, finishes or hands back the work in hand,
//! and exits 0; every detection then has its bundle or is back in the hunt queue.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test failure report

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use culprit_bus::{
    Bus, BusConfig, BusInspector, HEADER_SCHEMA_VERSION, Message, QueueName, RabbitBus, Topic,
};
use culprit_cache::RedisStores;
use culprit_mde_twin::config::all_roles;
use culprit_mde_twin::{ClientConfig, TenantConfig, Twin, TwinConfig};
use culprit_model::DetectionKey;
use culprit_proto::v1 as pb;
use prost::Message as _;
use secrecy::SecretString;

const TENANT_ID: &str = "5f1c8a2e-0000-4000-8000-00000000beef";
const CLIENT: &str = "6a2b9c3d-0000-4000-8000-00000000beef";
const SECRET: &str = "twin-secret-for-hunter-shutdown";
/// Bound on every wait: turns a hang into a failure.
const PATIENCE: Duration = Duration::from_secs(90);

fn amqp_url() -> String {
    std::env::var("CULPRIT_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn redis_url() -> String {
    std::env::var("CULPRIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn scenario() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/lsass_01")
}

fn config_file(dir: &Path, base: &str, prefix: &str) -> std::path::PathBuf {
    let path = dir.join("culprit.toml");
    let text = format!(
        "[hunter]\nbatch_window_ms = 100\nmax_batch = 3\nrequery_after_secs = []\n\
         [bus]\nkind = \"rabbitmq\"\nurl = \"{amqp}\"\nprefix = \"{prefix}\"\nprefetch = 4\n\
         [store]\nkind = \"redis\"\nurl = \"{redis}\"\nkey_prefix = \"{prefix}\"\n\
         [tenants.lab]\ntenant_id = \"{TENANT_ID}\"\nclient_id = \"{CLIENT}\"\nclient_secret = \"\"\n\
         [tenants.lab.endpoints]\nlogin = \"{base}\"\ngraph = \"{base}\"\nmde_api = \"{base}\"\n",
        amqp = amqp_url(),
        redis = redis_url(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The child process, SIGKILLed if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_or_hands_back_the_work_in_hand_and_exits_zero() {
    let twin = Twin::start(
        TwinConfig {
            tenants: vec![TenantConfig {
                tenant_id: TENANT_ID.into(),
                clients: vec![ClientConfig {
                    client_id: CLIENT.into(),
                    client_secret: SecretString::from(SECRET),
                    roles: all_roles(),
                }],
                data_dirs: vec![scenario()],
            }],
            ..TwinConfig::default()
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let prefix = format!("culprit-test-{:016x}", rand::random::<u64>());
    let rabbit = RabbitBus::connect(BusConfig {
        url: SecretString::from(amqp_url()),
        prefix: prefix.clone(),
        ..BusConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("this test needs RabbitMQ at {}: {e}", amqp_url()));
    rabbit.declare_topology().await.unwrap();
    let bus: Arc<dyn Bus> = Arc::new(rabbit.clone());
    let mut bundles = bus.subscribe(QueueName::Correlate, 64).await.unwrap();

    // Enough detections for several batches of three.
    let loaded =
        culprit::scenario::detections(&scenario(), culprit::scenario::Feed::Vectra, "lab").unwrap();
    let mut want = BTreeSet::new();
    for i in 0..8 {
        for d in &loaded.detections {
            let mut copy = d.clone();
            copy.source_id = format!("{}-{i}", d.source_id);
            let msg = Message::new(
                copy.key().as_str(),
                pb::Detection::from(&copy).encode_to_vec(),
            )
            .with_header(HEADER_SCHEMA_VERSION, culprit_proto::schema::DETECTION);
            bus.publish(Topic::Detections, msg).await.unwrap();
            want.insert(copy.key());
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &twin.base_url(), &prefix);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_culprit"))
        .args(["serve", "--role", "hunter", "--config"])
        .arg(&config)
        .env("CULPRIT__TENANTS__LAB__CLIENT_SECRET", SECRET)
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);

    // Work is under way once the first bundle arrives; then ask the hunter to stop.
    let mut bundled: BTreeSet<DetectionKey> = BTreeSet::new();
    let first = tokio::time::timeout(PATIENCE, bundles.next())
        .await
        .expect("the hunter produced a bundle")
        .expect("bus open");
    bundled.insert(DetectionKey(first.message.message_id.clone()));
    first.ack().await.unwrap();
    let pid = child.0.id();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hunter did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    // Every detection: bundled, or back in the hunt queue for another hunter. The broker
    // puts the stopped hunter's unacknowledged deliveries back as its connection closes.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut waiting: BTreeSet<DetectionKey> = BTreeSet::new();
    let mut hunt = bus.subscribe(QueueName::Hunt, 64).await.unwrap();
    let mut held = Vec::new();
    while bundled.len() + waiting.len() < want.len() {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::select! {
            b = bundles.next() => {
                let b = b.expect("bus open");
                bundled.insert(DetectionKey(b.message.message_id.clone()));
                b.ack().await.unwrap();
            }
            d = hunt.next() => {
                let d = d.expect("bus open");
                waiting.insert(DetectionKey(d.message.message_id.clone()));
                // Held unsettled, so it is not delivered to this test twice.
                held.push(d);
            }
            () = tokio::time::sleep(remaining) => panic!(
                "{} bundled + {} waiting of {}",
                bundled.len(),
                waiting.len(),
                want.len()
            ),
        }
    }
    assert!(
        bundled.is_disjoint(&waiting),
        "a detection both answered and requeued: {:?}",
        bundled.intersection(&waiting).collect::<Vec<_>>()
    );
    let all: BTreeSet<_> = bundled.union(&waiting).cloned().collect();
    assert_eq!(all, want);
    assert!(!waiting.is_empty() || bundled.len() == want.len());
    assert!(
        rabbit
            .dead_letters(QueueName::Hunt, 10)
            .await
            .unwrap()
            .is_empty()
    );

    drop(held);
    drop(hunt);
    drop(bundles);
    rabbit.delete_topology().await.unwrap();
    rabbit.close().await;
    if let Ok(redis) = RedisStores::connect(&redis_url(), &prefix).await {
        redis.delete_all().await.unwrap();
    }
    twin.shutdown().await;
}
