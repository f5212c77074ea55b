//! `Publisher::publish_delayed` on both buses: the message reaches the work queue once its
//! delay has passed, not before, with its id and headers; on RabbitMQ each delay has its own
//! queue, so a long wait never holds back a shorter one published after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use culprit_bus::{
    BusConfig, BusError, InProcessBus, Message, Publisher, QueueName, RabbitBus, Subscriber,
};
use rand::Rng;
use secrecy::SecretString;

fn msg(id: &str) -> Message {
    Message::new(id, b"payload".to_vec()).with_header("x-culprit-requery", "1")
}

#[tokio::test(start_paused = true)]
async fn in_process_delivers_after_the_delay_and_not_before() {
    let bus = InProcessBus::new(BusConfig::default()).unwrap();
    let mut hunt = bus.subscribe(QueueName::Hunt, 8).await.unwrap();
    let start = tokio::time::Instant::now();
    bus.publish_delayed(QueueName::Hunt, msg("later"), Duration::from_secs(300))
        .await
        .unwrap();
    bus.publish_delayed(QueueName::Hunt, msg("sooner"), Duration::from_secs(60))
        .await
        .unwrap();
    let first = hunt.next().await.unwrap();
    assert_eq!(first.message.message_id, "sooner");
    assert!(start.elapsed() >= Duration::from_secs(60));
    assert!(start.elapsed() < Duration::from_secs(300));
    first.ack().await.unwrap();
    let second = hunt.next().await.unwrap();
    assert_eq!(second.message.message_id, "later");
    assert!(start.elapsed() >= Duration::from_secs(300));
    assert_eq!(second.message.header("x-culprit-requery"), Some("1"));
    assert_eq!(second.attempt, 1);
    second.ack().await.unwrap();
}

#[tokio::test]
async fn a_delay_out_of_range_is_refused_naming_the_field() {
    let bus = InProcessBus::new(BusConfig::default()).unwrap();
    for bad in [Duration::ZERO, Duration::from_secs(30 * 86_400)] {
        match bus.publish_delayed(QueueName::Hunt, msg("x"), bad).await {
            Err(BusError::InvalidInput { field, .. }) => assert_eq!(field, "delay"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

fn amqp_url() -> String {
    std::env::var("CULPRIT_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_delays_each_message_in_a_durable_queue_per_delay() {
    let prefix = format!("culprit-test-{:016x}", rand::rng().random::<u64>());
    let bus = RabbitBus::connect(BusConfig {
        url: SecretString::from(amqp_url()),
        prefix,
        ..BusConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("this test needs RabbitMQ at {}: {e}", amqp_url()));
    bus.declare_topology().await.unwrap();
    let mut hunt = bus.subscribe(QueueName::Hunt, 8).await.unwrap();
    let long = Duration::from_millis(1500);
    let short = Duration::from_millis(300);
    let start = tokio::time::Instant::now();
    bus.publish_delayed(QueueName::Hunt, msg("long"), long)
        .await
        .unwrap();
    bus.publish_delayed(QueueName::Hunt, msg("short"), short)
        .await
        .unwrap();
    let patience = Duration::from_secs(30);
    let first = tokio::time::timeout(patience, hunt.next())
        .await
        .expect("the short delay expired")
        .unwrap();
    assert_eq!(
        first.message.message_id, "short",
        "not held back by the long one"
    );
    assert!(start.elapsed() >= short);
    first.ack().await.unwrap();
    let second = tokio::time::timeout(patience, hunt.next())
        .await
        .expect("the long delay expired")
        .unwrap();
    assert_eq!(second.message.message_id, "long");
    assert!(start.elapsed() >= long);
    assert_eq!(second.message.header("x-culprit-requery"), Some("1"));
    second.ack().await.unwrap();

    drop(hunt);
    bus.delete_delay_queues(&QueueName::Hunt, &[long, short])
        .await
        .unwrap();
    bus.delete_topology().await.unwrap();
    bus.close().await;
}
