//! Against the real local RabbitMQ (`CULPRIT_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Each test uses its own random prefix and deletes
//! its queues and exchanges at the end. An unreachable broker fails the tests, never skips.
//! `survives_the_broker_closing_its_connection` also needs `rabbitmqctl` for that broker (it
//! closes only this test's own connection).

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns too

use std::collections::BTreeSet;
use std::time::Duration;

use culprit_bus::{
    BusConfig, BusError, BusInspector, Consumer, HEADER_LAST_ERROR, HEADER_REASON, Message,
    Publisher, QueueName, RabbitBus, ReconnectConfig, Subscriber, Topic,
};
use rand::Rng;
use tokio::time::{Instant, timeout};

/// Bound on any single wait for the broker, so a broken bus fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

fn url() -> String {
    std::env::var("CULPRIT_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn config() -> BusConfig {
    BusConfig {
        url: url().into(),
        prefix: format!("culprit-test-{:016x}", rand::rng().random::<u64>()),
        retry_delays: vec![Duration::from_millis(200), Duration::from_millis(400)],
        max_attempts: 3,
        publish_timeout: Duration::from_secs(10),
        reconnect: ReconnectConfig {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
        },
        ..BusConfig::default()
    }
}

/// A bus on its own prefix; its queues and exchanges are deleted by [`TestBus::cleanup`],
/// or on drop when the test panicked before.
struct TestBus {
    bus: RabbitBus,
    cleaned: bool,
}

impl std::ops::Deref for TestBus {
    type Target = RabbitBus;

    fn deref(&self) -> &RabbitBus {
        &self.bus
    }
}

impl TestBus {
    async fn cleanup(mut self) {
        self.bus.delete_topology().await.unwrap();
        self.bus.close().await;
        self.cleaned = true;
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // The test's runtime is unwinding: clean up from a fresh one.
        let cfg = self.bus.config().clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(bus) = RabbitBus::connect(cfg).await {
                    let _ = bus.delete_topology().await;
                    bus.close().await;
                }
            });
        })
        .join();
    }
}

async fn connect(cfg: BusConfig) -> TestBus {
    let shown = cfg.redacted_url();
    match RabbitBus::connect(cfg).await {
        Ok(bus) => TestBus {
            bus,
            cleaned: false,
        },
        Err(e) => panic!(
            "these tests need RabbitMQ at {shown} (set CULPRIT_TEST_AMQP_URL to use another): {e}"
        ),
    }
}

fn detection(n: usize) -> Message {
    Message::new(
        format!("vectra:t1:{n}:1"),
        format!("payload {n}").into_bytes(),
    )
    .with_header(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    .with_header("x-culprit-schema-version", "1")
}

async fn next(consumer: &mut Box<dyn Consumer>) -> culprit_bus::Delivery {
    timeout(WAIT, consumer.next())
        .await
        .expect("no delivery within the wait")
        .expect("consumer ended")
}

#[tokio::test]
async fn publish_with_confirm_then_consume_and_ack() {
    let bus = connect(config()).await;
    let debug = format!("{:?}", *bus);
    assert!(!debug.contains(":guest@"), "password in Debug: {debug}");
    let sent = detection(1).with_priority(7);
    bus.publish(Topic::Detections, sent.clone()).await.unwrap();
    assert_eq!(bus.queue_depth(QueueName::Hunt).await.unwrap(), 1);
    // Fan-out is by topic: the telemetry queue got nothing.
    assert_eq!(bus.queue_depth(QueueName::Correlate).await.unwrap(), 0);

    let mut hunt = bus.subscribe(QueueName::Hunt, 10).await.unwrap();
    let delivery = next(&mut hunt).await;
    assert_eq!(delivery.message, sent);
    assert_eq!((delivery.attempt, delivery.redelivered), (1, false));
    delivery.ack().await.unwrap();
    drop(hunt);

    // Had the ack been lost, the closed channel would put message 1 back ahead of 2.
    bus.publish(Topic::Detections, detection(2)).await.unwrap();
    let mut hunt = bus.subscribe(QueueName::Hunt, 10).await.unwrap();
    let second = next(&mut hunt).await;
    assert_eq!(second.message.message_id, "vectra:t1:2:1");
    second.ack().await.unwrap();
    drop(hunt);
    bus.cleanup().await;
}

#[tokio::test]
async fn unacked_message_is_redelivered_after_consumer_drop() {
    let bus = connect(config()).await;
    bus.publish(Topic::Telemetry, detection(1)).await.unwrap();
    let mut first = bus.subscribe(QueueName::Correlate, 1).await.unwrap();
    let held = next(&mut first).await;
    assert!(!held.redelivered);
    // The consumer goes away with the delivery unsettled (a crashed worker).
    drop(first);

    let mut second = bus.subscribe(QueueName::Correlate, 1).await.unwrap();
    let again = next(&mut second).await;
    assert_eq!(again.message, detection(1));
    assert!(again.redelivered);
    assert_eq!(again.attempt, 1);
    again.ack().await.unwrap();
    drop(held);
    drop(second);
    bus.cleanup().await;
}

#[tokio::test]
async fn retry_then_dead_letter_after_max_attempts() {
    let bus = connect(config()).await;
    let mut hunt = bus.subscribe(QueueName::Hunt, 4).await.unwrap();
    bus.publish(Topic::Detections, detection(1)).await.unwrap();

    let first = next(&mut hunt).await;
    assert_eq!(first.attempt, 1);
    let retried_at = Instant::now();
    first.retry("MDE answered 503").await.unwrap();
    let second = next(&mut hunt).await;
    assert!(
        retried_at.elapsed() >= Duration::from_millis(200),
        "retry came early"
    );
    assert_eq!(second.attempt, 2);
    assert_eq!(
        second.message.header(HEADER_LAST_ERROR),
        Some("MDE answered 503")
    );
    assert_eq!(second.message.message_id, "vectra:t1:1:1");

    let retried_at = Instant::now();
    second.retry("MDE answered 503 again").await.unwrap();
    let third = next(&mut hunt).await;
    assert!(
        retried_at.elapsed() >= Duration::from_millis(400),
        "second delay not longer"
    );
    assert_eq!(third.attempt, 3);
    third.retry("still failing").await.unwrap();

    // A poison message goes straight to the dead-letter queue.
    bus.publish(Topic::Detections, detection(2)).await.unwrap();
    let poison = next(&mut hunt).await;
    assert_eq!(poison.message.message_id, "vectra:t1:2:1");
    poison.dead_letter("malformed protobuf").await.unwrap();

    let dead = wait_for_dead_letters(&bus, 2).await;
    let by_id = |id: &str| dead.iter().find(|d| d.message.message_id == id).unwrap();
    let exhausted = by_id("vectra:t1:1:1");
    assert!(
        exhausted.reason.contains("still failing"),
        "{}",
        exhausted.reason
    );
    assert!(
        exhausted.reason.contains("3 attempts"),
        "{}",
        exhausted.reason
    );
    assert_eq!(exhausted.attempts, 3);
    assert_eq!(
        exhausted.message.header(HEADER_REASON),
        Some(exhausted.reason.as_str())
    );
    assert_eq!(exhausted.message.payload, detection(1).payload);
    assert_eq!(by_id("vectra:t1:2:1").reason, "malformed protobuf");
    // Peeking leaves them in place.
    assert_eq!(
        bus.dead_letters(QueueName::Hunt, 10).await.unwrap().len(),
        2
    );
    assert_eq!(bus.queue_depth(QueueName::Hunt).await.unwrap(), 0);
    drop(hunt);
    bus.cleanup().await;
}

/// Dead-lettering is confirmed before `dead_letter` returns, so one read suffices; the loop
/// only bounds the wait if the broker is slow to make them visible to `basic.get`.
async fn wait_for_dead_letters(bus: &TestBus, n: usize) -> Vec<culprit_bus::DeadLetter> {
    let deadline = Instant::now() + WAIT;
    loop {
        let dead = bus.dead_letters(QueueName::Hunt, 10).await.unwrap();
        if dead.len() >= n || Instant::now() > deadline {
            assert_eq!(dead.len(), n, "{dead:?}");
            return dead;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn message_returned_unsettled_too_often_is_dead_lettered() {
    const LIMIT: u32 = 3;
    let bus = connect(BusConfig {
        delivery_limit: Some(LIMIT),
        ..config()
    })
    .await;
    let mut hunt = bus.subscribe(QueueName::Hunt, 1).await.unwrap();
    bus.publish(Topic::Detections, detection(1)).await.unwrap();
    // A consumer that crashes on this message: drops it unsettled every time. RabbitMQ
    // dead-letters once it came back more than `LIMIT` times.
    for n in 1..=LIMIT + 1 {
        let delivery = next(&mut hunt).await;
        assert_eq!(delivery.redelivered, n > 1);
        drop(delivery);
    }
    let dead = wait_for_dead_letters(&bus, 1).await;
    assert_eq!(dead[0].reason, culprit_bus::DELIVERY_LIMIT_REASON);
    assert_eq!(dead[0].message.message_id, "vectra:t1:1:1");
    assert_eq!(bus.queue_depth(QueueName::Hunt).await.unwrap(), 0);
    drop(hunt);
    bus.cleanup().await;
}

#[tokio::test]
async fn unroutable_publish_is_an_error() {
    let bus = connect(config()).await;
    bus.delete_queue(&QueueName::Policy).await.unwrap();
    match bus.publish(Topic::Correlations, detection(1)).await {
        Err(BusError::Unroutable {
            exchange,
            message_id,
        }) => {
            assert!(exchange.ends_with(".correlations"), "{exchange}");
            assert_eq!(message_id, "vectra:t1:1:1");
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }
    // The bus still works afterwards.
    bus.publish(Topic::Detections, detection(2)).await.unwrap();
    bus.cleanup().await;
}

#[tokio::test]
async fn thousand_messages_none_lost() {
    const N: usize = 1000;
    let bus = connect(config()).await;
    let started = Instant::now();
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for n in (p..N).step_by(4) {
                    bus.publish(Topic::Detections, detection(n)).await.unwrap();
                }
            })
        })
        .collect();
    // Two competing consumers, drained from this task until every id has been seen.
    let mut a = bus.subscribe(QueueName::Hunt, 50).await.unwrap();
    let mut b = bus.subscribe(QueueName::Hunt, 50).await.unwrap();
    let mut seen = BTreeSet::new();
    let mut per_consumer = [0usize; 2];
    while seen.len() < N {
        let (which, delivery) = timeout(WAIT, async {
            tokio::select! {
                d = a.next() => (0, d),
                d = b.next() => (1, d),
            }
        })
        .await
        .unwrap_or_else(|_| panic!("stalled after {} of {N} messages", seen.len()));
        let delivery = delivery.expect("consumer ended");
        per_consumer[which] += 1;
        seen.insert(delivery.message.message_id.clone());
        delivery.ack().await.unwrap();
    }
    for p in publishers {
        p.await.unwrap();
    }
    let elapsed = started.elapsed();
    let expected: BTreeSet<_> = (0..N).map(|n| format!("vectra:t1:{n}:1")).collect();
    let missing: Vec<_> = expected.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "lost {} messages, e.g. {missing:?}",
        N - seen.len()
    );
    assert_eq!(bus.queue_depth(QueueName::Hunt).await.unwrap(), 0);
    eprintln!(
        "{N} messages published with confirms and consumed in {elapsed:?}; per consumer {per_consumer:?}"
    );
    drop((a, b));
    bus.cleanup().await;
}

/// The broker drops this bus's connection (as on a broker restart, without disturbing
/// anyone else's): the publisher and the existing consumer carry on over a new connection.
#[tokio::test]
async fn survives_the_broker_closing_its_connection() {
    show_logs();
    let bus = connect(config()).await;
    let mut hunt = bus.subscribe(QueueName::Hunt, 4).await.unwrap();
    bus.publish(Topic::Detections, detection(1)).await.unwrap();
    next(&mut hunt).await.ack().await.unwrap();

    close_connection_of(&bus.config().prefix).await;
    bus.publish(Topic::Detections, detection(2)).await.unwrap();
    let after = next(&mut hunt).await;
    assert_eq!(after.message.message_id, "vectra:t1:2:1");
    after.ack().await.unwrap();
    drop(hunt);
    bus.cleanup().await;
}

/// Shows the bus's reconnects in the test output.
fn show_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("culprit_bus=info")
        .with_test_writer()
        .try_init();
}

/// Closes, through `rabbitmqctl`, the connection whose client name holds `prefix`.
async fn close_connection_of(prefix: &str) {
    let prefix = prefix.to_owned();
    tokio::task::spawn_blocking(move || {
        let listed = std::process::Command::new("rabbitmqctl")
            .args(["list_connections", "pid", "client_properties", "-q"])
            .output()
            .expect("rabbitmqctl is needed to close a connection");
        let listed = String::from_utf8_lossy(&listed.stdout);
        let pid = listed
            .lines()
            .find(|line| line.contains(&prefix))
            .and_then(|line| line.split('\t').next())
            .unwrap_or_else(|| panic!("no connection named after {prefix} in {listed}"))
            .to_owned();
        let status = std::process::Command::new("rabbitmqctl")
            .args([
                "close_connection",
                &pid,
                "culprit-bus test: forced close",
                "-q",
            ])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "rabbitmqctl close_connection {pid}: {status}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unreachable_broker_fails_naming_rabbitmq_and_url() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let cfg = BusConfig {
        url: format!("amqp://guest:sekrit@127.0.0.1:{port}/%2f").into(),
        reconnect: ReconnectConfig {
            connect_timeout: Duration::from_millis(300),
            ..config().reconnect
        },
        ..config()
    };
    let err = RabbitBus::connect(cfg).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("RabbitMQ"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("sekrit"), "{text}");
}

/// Stops and starts the shared broker: run alone, with `--features restart-tests`.
#[cfg(feature = "restart-tests")]
#[tokio::test]
async fn consumer_and_publisher_survive_broker_restart() {
    const N: usize = 200;
    show_logs();
    let bus = connect(BusConfig {
        publish_timeout: Duration::from_secs(60),
        ..config()
    })
    .await;
    let consumer = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let mut hunt = bus.subscribe(QueueName::Hunt, 20).await.unwrap();
            let mut seen = BTreeSet::new();
            while seen.len() < N {
                let d = timeout(Duration::from_secs(90), hunt.next())
                    .await
                    .expect("consumer stalled after the restart")
                    .expect("consumer ended");
                seen.insert(d.message.message_id.clone());
                // An ack on a channel that died with the broker fails; it is redelivered.
                let _ = d.ack().await;
            }
            seen
        })
    };
    for n in 0..N / 2 {
        bus.publish(Topic::Detections, detection(n)).await.unwrap();
    }
    rabbitmqctl("stop_app");
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for n in N / 2..N {
                bus.publish(Topic::Detections, detection(n)).await.unwrap();
            }
        })
    };
    rabbitmqctl("start_app");
    publisher.await.unwrap();
    let seen = consumer.await.unwrap();
    assert_eq!(seen.len(), N);
    bus.cleanup().await;
}

#[cfg(feature = "restart-tests")]
fn rabbitmqctl(verb: &str) {
    let status = std::process::Command::new("rabbitmqctl")
        .arg(verb)
        .status()
        .unwrap();
    assert!(status.success(), "rabbitmqctl {verb}: {status}");
}
