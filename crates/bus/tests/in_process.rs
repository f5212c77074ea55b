//! The in-process bus: same semantics as the broker, on paused tokio time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns too

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use culprit_bus::{
    Bus, BusConfig, BusError, Consumer, HEADER_LAST_ERROR, HEADER_QUEUE, HEADER_REASON,
    InProcessBus, Message, Publisher, QueueName, Topic,
};
use tokio::time::timeout;

fn config() -> BusConfig {
    BusConfig {
        retry_delays: vec![Duration::from_secs(2), Duration::from_secs(10)],
        max_attempts: 3,
        queue_capacity: 16,
        ..BusConfig::default()
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

async fn consumer(bus: &InProcessBus, queue: QueueName, prefetch: u16) -> Box<dyn Consumer> {
    use culprit_bus::Subscriber;
    bus.subscribe(queue, prefetch).await.unwrap()
}

/// Asserts nothing is delivered within `wait` (paused time advances by itself).
async fn assert_idle(consumer: &mut Box<dyn Consumer>, wait: Duration) {
    if let Ok(delivery) = timeout(wait, consumer.next()).await {
        panic!("unexpected delivery: {delivery:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn publish_consume_ack() {
    let bus = InProcessBus::new(config()).unwrap();
    let mut hunt = consumer(&bus, QueueName::Hunt, 8).await;
    let sent = detection(1).with_priority(7);
    bus.publish(Topic::Detections, sent.clone()).await.unwrap();

    let delivery = hunt.next().await.unwrap();
    assert_eq!(delivery.message, sent);
    assert_eq!((delivery.attempt, delivery.redelivered), (1, false));
    assert_eq!(delivery.queue, QueueName::Hunt);
    delivery.ack().await.unwrap();

    use culprit_bus::BusInspector;
    assert_eq!(bus.queue_depth(QueueName::Hunt).await.unwrap(), 0);
    assert_idle(&mut hunt, Duration::from_secs(60)).await;
    // Telemetry goes to the correlate queue, not to hunt.
    bus.publish(Topic::Telemetry, detection(2)).await.unwrap();
    assert_eq!(bus.queue_depth(QueueName::Correlate).await.unwrap(), 1);
    assert_idle(&mut hunt, Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn dropped_delivery_is_redelivered_first() {
    let bus = InProcessBus::new(config()).unwrap();
    bus.publish(Topic::Detections, detection(1)).await.unwrap();
    bus.publish(Topic::Detections, detection(2)).await.unwrap();
    let mut hunt = consumer(&bus, QueueName::Hunt, 8).await;
    let first = hunt.next().await.unwrap();
    assert_eq!(first.message.message_id, "vectra:t1:1:1");
    drop(first);
    drop(hunt);

    let mut again = consumer(&bus, QueueName::Hunt, 8).await;
    let redelivered = again.next().await.unwrap();
    assert_eq!(redelivered.message, detection(1));
    assert!(redelivered.redelivered);
    assert_eq!(redelivered.attempt, 1);
    redelivered.ack().await.unwrap();
    let second = again.next().await.unwrap();
    assert_eq!(second.message.message_id, "vectra:t1:2:1");
    assert!(!second.redelivered);
}

#[tokio::test(start_paused = true)]
async fn retries_wait_growing_delays_then_dead_letter() {
    let bus = InProcessBus::new(config()).unwrap();
    let mut hunt = consumer(&bus, QueueName::Hunt, 8).await;
    bus.publish(Topic::Detections, detection(1)).await.unwrap();

    let first = hunt.next().await.unwrap();
    first.retry("MDE answered 503").await.unwrap();
    // Not before the first delay (2 s) ...
    assert_idle(&mut hunt, Duration::from_millis(1999)).await;
    let second = hunt.next().await.unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(
        second.message.header(HEADER_LAST_ERROR),
        Some("MDE answered 503")
    );

    let before = tokio::time::Instant::now();
    second.retry("MDE answered 503 again").await.unwrap();
    // ... the second delay is longer (10 s).
    assert_idle(&mut hunt, Duration::from_millis(9999)).await;
    let third = hunt.next().await.unwrap();
    assert_eq!(third.attempt, 3);
    assert!(before.elapsed() >= Duration::from_secs(10));

    // Attempt 3 of 3: a retry dead-letters with the reason.
    third.retry("still failing").await.unwrap();
    assert_idle(&mut hunt, Duration::from_secs(3600)).await;
    use culprit_bus::BusInspector;
    let dead = bus.dead_letters(QueueName::Hunt, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0].reason.contains("still failing"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].reason.contains("3 attempts"), "{}", dead[0].reason);
    assert_eq!(
        dead[0].message.header(HEADER_REASON),
        Some(dead[0].reason.as_str())
    );
    assert_eq!(dead[0].message.header(HEADER_QUEUE), Some("hunt"));
    assert_eq!(dead[0].message.payload, detection(1).payload);
}

#[tokio::test(start_paused = true)]
async fn dead_letter_keeps_reason_and_frees_room() {
    let cfg = BusConfig {
        queue_capacity: 1,
        ..config()
    };
    let bus = InProcessBus::new(cfg).unwrap();
    let mut hunt = consumer(&bus, QueueName::Hunt, 8).await;
    bus.publish(Topic::Detections, detection(1)).await.unwrap();
    let poison = hunt.next().await.unwrap();
    poison
        .dead_letter("malformed protobuf: truncated at byte 3")
        .await
        .unwrap();
    // The dead letter no longer counts against the queue's capacity.
    timeout(
        Duration::from_secs(1),
        bus.publish(Topic::Detections, detection(2)),
    )
    .await
    .expect("publish blocked after dead-lettering")
    .unwrap();
    use culprit_bus::BusInspector;
    let dead = bus.dead_letters(QueueName::Hunt, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "malformed protobuf: truncated at byte 3");
    assert_eq!(dead[0].attempts, 1);
    assert!(
        bus.dead_letters(QueueName::Correlate, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn full_queue_makes_publish_wait() {
    let cfg = BusConfig {
        queue_capacity: 2,
        ..config()
    };
    let bus = InProcessBus::bare(cfg).unwrap();
    use culprit_bus::Subscriber;
    bus.bind(QueueName::Hunt, Topic::Detections).await.unwrap();
    bus.publish(Topic::Detections, detection(1)).await.unwrap();
    bus.publish(Topic::Detections, detection(2)).await.unwrap();

    let blocked = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish(Topic::Detections, detection(3)).await })
    };
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !blocked.is_finished(),
        "publish into a full queue did not wait"
    );

    let mut hunt = consumer(&bus, QueueName::Hunt, 8).await;
    // Delivered but unacked still holds room ...
    let first = hunt.next().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!blocked.is_finished());
    // ... the ack frees it.
    first.ack().await.unwrap();
    blocked.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn prefetch_limits_unsettled_deliveries() {
    let bus = InProcessBus::new(config()).unwrap();
    for n in 0..3 {
        bus.publish(Topic::Detections, detection(n)).await.unwrap();
    }
    let mut hunt = consumer(&bus, QueueName::Hunt, 2).await;
    let a = hunt.next().await.unwrap();
    let b = hunt.next().await.unwrap();
    assert_idle(&mut hunt, Duration::from_secs(60)).await;
    a.ack().await.unwrap();
    let c = hunt.next().await.unwrap();
    assert_eq!(c.message.message_id, "vectra:t1:2:1");
    drop((b, c));
}

#[tokio::test(start_paused = true)]
async fn unbound_topic_is_unroutable() {
    let bus = InProcessBus::bare(config()).unwrap();
    match bus.publish(Topic::Correlations, detection(1)).await {
        Err(BusError::Unroutable {
            exchange,
            message_id,
        }) => {
            assert_eq!(exchange, "culprit.correlations");
            assert_eq!(message_id, "vectra:t1:1:1");
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn custom_queue_gets_a_copy_and_competing_consumers_share() {
    // Room for all 40 in the watch queue, which is drained only at the end.
    let cfg = BusConfig {
        queue_capacity: 40,
        ..config()
    };
    let bus = InProcessBus::new(cfg).unwrap();
    let watch = QueueName::Custom("watch".into());
    use culprit_bus::Subscriber;
    bus.bind(watch.clone(), Topic::Detections).await.unwrap();
    let mut watcher = consumer(&bus, watch, 64).await;
    let mut a = consumer(&bus, QueueName::Hunt, 4).await;
    let mut b = consumer(&bus, QueueName::Hunt, 4).await;

    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for n in 0..40 {
                bus.publish(Topic::Detections, detection(n)).await.unwrap();
            }
        })
    };
    let mut seen = BTreeSet::new();
    let mut per_consumer = [0usize; 2];
    while seen.len() < 40 {
        let (which, delivery) = tokio::select! {
            d = a.next() => (0, d.unwrap()),
            d = b.next() => (1, d.unwrap()),
        };
        per_consumer[which] += 1;
        assert!(
            seen.insert(delivery.message.message_id.clone()),
            "duplicate"
        );
        delivery.ack().await.unwrap();
    }
    publisher.await.unwrap();
    assert_idle(&mut a, Duration::from_secs(5)).await;
    assert!(per_consumer.iter().all(|n| *n > 0), "{per_consumer:?}");
    for _ in 0..40 {
        watcher.next().await.unwrap().ack().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_consumers_and_publishes() {
    let bus = InProcessBus::new(config()).unwrap();
    let mut hunt = consumer(&bus, QueueName::Hunt, 1).await;
    let waiting = tokio::spawn(async move { hunt.next().await.is_none() });
    tokio::time::sleep(Duration::from_secs(1)).await;
    bus.shutdown();
    assert!(waiting.await.unwrap(), "next() did not return None");
    assert!(matches!(
        bus.publish(Topic::Detections, detection(1)).await,
        Err(BusError::Closed)
    ));
}

#[tokio::test(start_paused = true)]
async fn invalid_input_is_rejected_with_the_field() {
    let bus = InProcessBus::new(config()).unwrap();
    let err = bus
        .publish(Topic::Detections, Message::new("", b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("message_id"), "{err}");
    use culprit_bus::Subscriber;
    let err = bus.subscribe(QueueName::Hunt, 0).await.unwrap_err();
    assert!(err.to_string().contains("prefetch"), "{err}");
    let err = bus
        .bind(QueueName::Custom("no.dots".into()), Topic::Telemetry)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("queue"), "{err}");
    let err = InProcessBus::new(BusConfig {
        prefix: String::new(),
        ..config()
    })
    .unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn dead_letter_queue_is_bounded() {
    let cfg = BusConfig {
        dead_letter_capacity: 2,
        ..config()
    };
    let bus = InProcessBus::new(cfg).unwrap();
    let mut hunt = consumer(&bus, QueueName::Hunt, 8).await;
    for n in 0..3 {
        bus.publish(Topic::Detections, detection(n)).await.unwrap();
        let d = hunt.next().await.unwrap();
        d.dead_letter(&format!("bad {n}")).await.unwrap();
    }
    use culprit_bus::BusInspector;
    let dead = bus.dead_letters(QueueName::Hunt, 10).await.unwrap();
    let reasons: Vec<_> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons, ["bad 1", "bad 2"]);
    assert_eq!(bus.dropped_dead_letters(&QueueName::Hunt), 1);
}

#[tokio::test(start_paused = true)]
async fn usable_as_shared_trait_objects() {
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new(config()).unwrap());
    let publisher: Arc<dyn Publisher> = bus.clone();
    let mut hunt = bus.subscribe(QueueName::Hunt, 1).await.unwrap();
    publisher
        .publish(Topic::Detections, detection(9))
        .await
        .unwrap();
    let d = hunt.next().await.unwrap();
    assert_eq!(d.message.message_id, "vectra:t1:9:1");
    d.ack().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn message_returned_unsettled_too_often_is_dead_lettered() {
    let cfg = BusConfig {
        delivery_limit: Some(3),
        ..config()
    };
    let bus = InProcessBus::new(cfg).unwrap();
    let mut hunt = consumer(&bus, QueueName::Hunt, 1).await;
    bus.publish(Topic::Detections, detection(1)).await.unwrap();
    // Came back more than 3 times unsettled, as RabbitMQ counts it: 4 deliveries.
    for n in 1..=4 {
        let delivery = hunt.next().await.unwrap();
        assert_eq!(delivery.redelivered, n > 1);
        drop(delivery);
    }
    assert_idle(&mut hunt, Duration::from_secs(60)).await;
    use culprit_bus::BusInspector;
    let dead = bus.dead_letters(QueueName::Hunt, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, culprit_bus::DELIVERY_LIMIT_REASON);
}
