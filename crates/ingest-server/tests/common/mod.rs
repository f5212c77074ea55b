//! Shared by the ingest-server tests: the real local RabbitMQ (`CULPRIT_TEST_AMQP_URL`) and
//! Redis (`CULPRIT_TEST_REDIS_URL`) under random prefixes, a webhook on a loopback port, and
//! detections made from the bundled lsass_01 Vectra file.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use culprit_bus::{
    BusConfig, BusInspector, Message, QueueName, RabbitBus, ReconnectConfig, Subscriber,
};
use culprit_cache::RedisStores;
use culprit_ingest_server::webhook::{self, WebhookConfig, WebhookSource};
use culprit_ingest_server::{DEAD_LETTER_QUEUE, Format, IngestPublisher, PublisherConfig, Source};
use culprit_model::Detection;
use rand::Rng;
use secrecy::SecretString;
use tokio::time::{Instant, timeout};

/// Bound on any single wait, so a broken service fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(30);
pub const TOKEN: &str = "webhook-token-7f3a";
pub const HMAC_KEY: &str = "hmac-key-91c2";
pub const TENANT: &str = "acme";

pub fn amqp_url() -> String {
    std::env::var("CULPRIT_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("CULPRIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn random_prefix(kind: &str) -> String {
    format!("culprit-test-{kind}-{:016x}", rand::rng().random::<u64>())
}

pub fn bus_config(publish_timeout: Duration) -> BusConfig {
    BusConfig {
        url: amqp_url().into(),
        prefix: random_prefix("ingest"),
        retry_delays: vec![Duration::from_millis(200)],
        max_attempts: 2,
        publish_timeout,
        reconnect: ReconnectConfig {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
        },
        ..BusConfig::default()
    }
}

/// A bus, a Redis store and a publisher, all under fresh prefixes.
pub struct Env {
    pub bus: RabbitBus,
    pub redis: Arc<RedisStores>,
    pub publisher: IngestPublisher,
}

impl Env {
    pub async fn new() -> Env {
        Env::with(Duration::from_secs(10), PublisherConfig::default()).await
    }

    pub async fn with(publish_timeout: Duration, mut cfg: PublisherConfig) -> Env {
        let bus = RabbitBus::connect(bus_config(publish_timeout))
            .await
            .expect("RabbitMQ at CULPRIT_TEST_AMQP_URL (default 127.0.0.1:5672)");
        let redis = Arc::new(
            RedisStores::connect(&redis_url(), &random_prefix("ingest"))
                .await
                .expect("Redis at CULPRIT_TEST_REDIS_URL (default 127.0.0.1:6379)"),
        );
        // Short enough that test keys do not linger in the shared Redis.
        cfg.dedup_window = Duration::from_secs(600);
        let publisher = IngestPublisher::new(Arc::new(bus.clone()), redis.clone(), cfg);
        Env {
            bus,
            redis,
            publisher,
        }
    }

    /// Deletes this test's queues and exchanges.
    pub async fn cleanup(self) {
        let ingest = QueueName::Custom(DEAD_LETTER_QUEUE.to_owned());
        let _ = self.bus.delete_queue(&ingest).await;
        self.bus.delete_topology().await.unwrap();
        self.bus.close().await;
    }

    pub async fn hunt_depth(&self) -> u64 {
        self.bus.queue_depth(QueueName::Hunt).await.unwrap()
    }

    pub async fn dead_letters(&self) -> Vec<culprit_bus::DeadLetter> {
        self.bus
            .dead_letters(QueueName::Custom(DEAD_LETTER_QUEUE.to_owned()), 100)
            .await
            .unwrap()
    }

    /// Consumes and acks the hunt queue until `want` messages arrived or `quiet` passed
    /// without one after at least `want`... bounded by [`WAIT`] overall.
    pub async fn take_hunt(&self, want: usize) -> Vec<Message> {
        let mut consumer = self.bus.subscribe(QueueName::Hunt, 200).await.unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + WAIT;
        while out.len() < want {
            let d = timeout(
                deadline.saturating_duration_since(Instant::now()),
                consumer.next(),
            )
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} messages arrived", out.len()))
            .expect("bus closed");
            out.push(d.message.clone());
            d.ack().await.unwrap();
        }
        out
    }
}

pub fn source(format: Format) -> Source {
    Source::new("brain1", TENANT, format)
}

/// The bundled lsass_01 Vectra page (three host detections).
pub fn lsass_page() -> Vec<u8> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ingest/tests/data/scenarios/lsass_01/vectra_detections.json"
    );
    std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The first lsass_01 detection with id `id`: distinct ids make distinct keys.
pub fn vectra_detection(id: u64) -> serde_json::Value {
    let page: serde_json::Value = serde_json::from_slice(&lsass_page()).unwrap();
    let mut d = page["results"][0].clone();
    d["id"] = serde_json::json!(id);
    d
}

pub fn decode(msg: &Message) -> Detection {
    culprit_hunter::service::decode_detection(&msg.payload).unwrap()
}

/// A webhook for `sources` on a loopback port; stops when the test's runtime ends.
pub async fn webhook(
    publisher: IngestPublisher,
    sources: Vec<WebhookSource>,
    max_body: usize,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = webhook::router(
        publisher,
        WebhookConfig {
            sources,
            max_body_bytes: max_body,
        },
    );
    tokio::spawn(webhook::serve(listener, router, std::future::pending()));
    addr
}

/// The standard test source: bearer token and HMAC both enabled.
pub fn webhook_source(name: &str, format: Format) -> WebhookSource {
    WebhookSource {
        source: Source::new(name, TENANT, format),
        token: Some(SecretString::from(TOKEN)),
        hmac_secret: Some(SecretString::from(HMAC_KEY)),
    }
}

pub fn url(addr: SocketAddr, source: &str) -> String {
    format!("http://{addr}/v1/sources/{source}/detections")
}
