//! The hunter service on the in-process bus with memory stores and a scripted hunting backend,
//! on paused tokio time: batching, re-queries, the cache, throttling, retries, splitting,
//! idempotency and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use culprit_bus::{BusInspector, Message, Publisher, QueueName, Topic};
use culprit_cache::{Clock, Spend};
use culprit_hunter::service::{HEADER_REQUERY, HunterConfig, SCHEMA_HEADER};
use culprit_hunter::{Answer, HuntError, Reach, hunt_batch_with};

#[tokio::test(start_paused = true)]
async fn one_batch_is_one_call_and_every_detection_gets_its_bundle() {
    let rig = Rig::start(Scripted::answering(), config()).await;
    for i in 0..5 {
        rig.publish(&detection(i, 10 + i)).await;
    }
    let bundles = rig.bundles(5).await;
    assert_eq!(
        rig.backend.calls(),
        1,
        "five detections, one batch, one call"
    );
    for (i, b) in bundles.iter().enumerate() {
        assert_eq!(b.requery, 0);
        assert!(b.hunt_failure.is_none());
        let rows: usize = b.tables.iter().map(|(_, t)| t.rows.len()).sum();
        assert_eq!(rows, 1, "bundle {i} carries its own device's row only");
    }
    rig.assert_settled().await;
}

#[tokio::test(start_paused = true)]
async fn a_detection_is_requeried_at_each_offset_with_its_number() {
    let cfg = HunterConfig {
        requery_after: vec![Duration::from_secs(300), Duration::from_secs(900)],
        ..config()
    };
    let rig = Rig::start(Scripted::answering(), cfg).await;
    rig.publish(&detection(1, 11)).await;
    let bundles = rig.bundles(3).await;
    let numbers: Vec<u32> = bundles.iter().map(|b| b.requery).collect();
    assert_eq!(numbers, [0, 1, 2]);
    let first = bundles[0].fetched_at.unwrap();
    let after = |b: &culprit_proto::TelemetryBundle| (b.fetched_at.unwrap() - first).to_std();
    assert!(
        after(&bundles[1]) >= Duration::from_secs(300),
        "{:?}",
        after(&bundles[1])
    );
    assert!(after(&bundles[1]) < Duration::from_secs(900));
    assert!(
        after(&bundles[2]) >= Duration::from_secs(900),
        "{:?}",
        after(&bundles[2])
    );
    // Each re-query hunted again: the cache never answered a later round with an older one.
    assert_eq!(rig.backend.calls(), 3);
    rig.assert_settled().await;
    // No fourth round.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    rig.assert_no_more_bundles().await;
}

#[tokio::test(start_paused = true)]
async fn the_cache_answers_the_same_host_and_window_until_it_expires() {
    let cfg = HunterConfig {
        cache_ttl: Duration::from_secs(600),
        ..config()
    };
    let rig = Rig::start(Scripted::answering(), cfg).await;
    rig.publish(&detection(1, 11)).await;
    let first = rig.bundles(1).await;
    // Another detection about the same host and window (another sensor, another id).
    let mut twin = detection(1, 11);
    twin.source_id = "other-sensor".into();
    rig.publish(&twin).await;
    let second = rig.bundles(1).await;
    assert_eq!(
        rig.backend.calls(),
        1,
        "the second answer came from the cache"
    );
    assert_eq!(first[0].tables, second[0].tables);

    // A different host is a miss; so is the same host once the entry expired.
    rig.publish(&detection(2, 12)).await;
    rig.bundles(1).await;
    assert_eq!(rig.backend.calls(), 2);
    tokio::time::sleep(Duration::from_secs(601)).await;
    let mut late = detection(1, 11);
    late.source_id = "late".into();
    rig.publish(&late).await;
    rig.bundles(1).await;
    assert_eq!(rig.backend.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_empty_answer_is_cached_only_briefly() {
    let cfg = HunterConfig {
        cache_ttl: Duration::from_secs(600),
        empty_cache_ttl: Duration::from_secs(10),
        ..config()
    };
    let rig = Rig::start(Scripted::empty(), cfg).await;
    rig.publish(&detection(1, 11)).await;
    rig.bundles(1).await;
    let mut again = detection(1, 11);
    again.source_id = "again".into();
    rig.publish(&again).await;
    rig.bundles(1).await;
    assert_eq!(
        rig.backend.calls(),
        1,
        "within 10 s the empty answer is reused"
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut later = detection(1, 11);
    later.source_id = "later".into();
    rig.publish(&later).await;
    rig.bundles(1).await;
    assert_eq!(rig.backend.calls(), 2, "after 10 s it is asked again");
}

#[tokio::test(start_paused = true)]
async fn throttling_waits_retry_after_hunts_again_and_never_fails_the_detection() {
    // More 429s than hunt_attempts: throttling must not count as a failed attempt.
    let backend = Scripted::answering();
    for _ in 0..6 {
        backend.push(Err(throttled(Some(Duration::from_secs(30)))));
    }
    let rig = Rig::start(backend, config()).await;
    rig.publish(&detection(1, 11)).await;
    let bundles = rig.bundles(1).await;
    assert!(
        bundles[0].hunt_failure.is_none(),
        "{:?}",
        bundles[0].hunt_failure
    );
    assert_eq!(rig.backend.calls(), 7);
    let times = rig.backend.times();
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_secs(30),
            "a call came {:?} after a 429 asking for 30 s",
            pair[1] - pair[0]
        );
    }
    rig.assert_settled().await;
}

#[tokio::test(start_paused = true)]
async fn a_throttle_pauses_the_tenant_for_every_worker_sharing_the_budget() {
    let backend = Scripted::answering();
    backend.push(Err(throttled(Some(Duration::from_secs(40)))));
    let rig = Rig::start(backend, config()).await;
    rig.publish(&detection(1, 11)).await;
    // Wait until the 429 was answered, then ask the shared budget as another replica would.
    rig.backend.wait_calls(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    match rig.stores.budget.try_spend(TENANT, rig.clock.now()).await {
        Ok(Spend::Wait(d)) => assert!(
            d > Duration::from_secs(30) && d <= Duration::from_secs(40),
            "{d:?}"
        ),
        other => panic!("the budget should hold the tenant: {other:?}"),
    }
    rig.bundles(1).await;
}

#[tokio::test(start_paused = true)]
async fn service_errors_retry_with_growing_delays_then_the_answer_says_hunt_failed() {
    let backend = Scripted::failing(server_error());
    let cfg = HunterConfig {
        hunt_attempts: 3,
        ..config()
    };
    let rig = Rig::start(backend, cfg).await;
    rig.publish(&detection(1, 11)).await;
    let bundles = rig.bundles(1).await;
    let (kind, message) = bundles[0].hunt_failure.clone().expect("an honest failure");
    assert_eq!(kind, "service");
    assert!(message.contains("503"), "{message}");
    assert_eq!(rig.backend.calls(), 3, "hunt_attempts");
    let times = rig.backend.times();
    let gaps: Vec<Duration> = times.windows(2).map(|p| p[1] - p[0]).collect();
    // The bus's retry delays (1 s, then 5 s), not an immediate hammering.
    assert!(gaps[0] >= Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_secs(5), "{gaps:?}");
    assert!(
        rig.bus
            .dead_letters(QueueName::Hunt, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing dead-lettered"
    );
}

#[tokio::test(start_paused = true)]
async fn a_truncated_or_too_expensive_batch_is_split_until_it_fits() {
    // Four detections in one query are truncated; two are too expensive; one fits.
    let backend = Scripted::by_size(|n| match n {
        4.. => Ok(Answer {
            table: rows_for(&[]),
            truncated: true,
        }),
        2 | 3 => Err(HuntError {
            kind: "too_expensive".into(),
            message: "query exceeded the CPU limit".into(),
            retryable: false,
            split: true,
            retry_after: None,
        }),
        _ => Ok(Answer {
            table: rows_for(&all_ips()),
            truncated: false,
        }),
    });
    let batch: Vec<_> = (0..4).map(|i| detection(i, 10 + i)).collect();
    let hooks = NoHooks;
    let outcomes = hunt_batch_with(backend.as_ref(), batch, &Reach::default(), &hooks).await;
    assert_eq!(backend.calls(), 1 + 2 + 4);
    assert_eq!(outcomes.len(), 4);
    for o in &outcomes {
        let h = o.result.as_ref().expect("every detection answered");
        assert!(!h.truncated);
        let rows: usize = h.tables.values().map(|t| t.rows.len()).sum();
        assert_eq!(rows, 1, "{}", o.detection.key());
    }
    // Depth first, the first half (the higher priorities) before the second.
    assert_eq!(backend.sizes(), [4, 2, 1, 1, 2, 1, 1]);
    let singles: Vec<String> = backend
        .queries()
        .iter()
        .filter(|q| q.matches("let ips").count() == 1)
        .map(|q| {
            (10..14)
                .map(|h| format!("10.0.0.{h}\""))
                .find(|ip| q.contains(ip.as_str()))
                .unwrap()
        })
        .collect();
    assert_eq!(
        singles,
        ["10.0.0.10\"", "10.0.0.11\"", "10.0.0.12\"", "10.0.0.13\""]
    );
}

#[tokio::test(start_paused = true)]
async fn a_single_detection_too_large_keeps_its_truncated_rows() {
    let backend = Scripted::by_size(|_| {
        Ok(Answer {
            table: rows_for(&all_ips()),
            truncated: true,
        })
    });
    let outcomes = hunt_batch_with(
        backend.as_ref(),
        vec![detection(1, 11)],
        &Reach::default(),
        &NoHooks,
    )
    .await;
    assert_eq!(backend.calls(), 1);
    assert!(outcomes[0].result.as_ref().unwrap().truncated);
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_detection_already_answered_is_not_hunted_again() {
    let rig = Rig::start(Scripted::answering(), config()).await;
    let d = detection(1, 11);
    rig.publish(&d).await;
    rig.bundles(1).await;
    // The same message again (a redelivery after a lost ack, or ingest publishing twice).
    rig.publish(&d).await;
    rig.wait_idle().await;
    rig.assert_no_more_bundles().await;
    assert_eq!(
        rig.backend.calls(),
        2,
        "one for the detection, one for the sentinel"
    );
    rig.assert_settled().await;
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_requery_is_not_hunted_twice_but_each_round_is() {
    let rig = Rig::start(Scripted::answering(), config()).await;
    let d = detection(1, 11);
    rig.publish(&d).await;
    assert_eq!(rig.bundles(1).await[0].requery, 0);
    rig.publish_requery(&d, 1).await;
    assert_eq!(rig.bundles(1).await[0].requery, 1);
    rig.publish_requery(&d, 1).await;
    rig.wait_idle().await;
    rig.assert_no_more_bundles().await;
    assert_eq!(
        rig.backend.calls(),
        3,
        "first hunt, re-query 1, the sentinel"
    );
}

#[tokio::test(start_paused = true)]
async fn bad_messages_are_dead_lettered_with_a_reason_and_the_good_ones_complete() {
    let rig = Rig::start(Scripted::answering(), config()).await;
    let good = detection(1, 11);
    let payload = culprit_proto::v1::Detection::from(&good);
    let bytes = prost::Message::encode_to_vec(&payload);
    let wrong_schema = Message::new("wrong-schema", bytes.clone()).with_header(SCHEMA_HEADER, "1");
    let bad_requery = Message::new("bad-requery", bytes.clone())
        .with_header(SCHEMA_HEADER, culprit_proto::schema::DETECTION)
        .with_header(HEADER_REQUERY, "soon");
    let junk = Message::new("junk", b"\xff\x00".to_vec());
    for m in [wrong_schema, bad_requery, junk] {
        rig.bus.publish(Topic::Detections, m).await.unwrap();
    }
    rig.publish(&good).await;
    rig.bundles(1).await;
    let dead = rig.bus.dead_letters(QueueName::Hunt, 10).await.unwrap();
    let reasons: Vec<(&str, &str)> = dead
        .iter()
        .map(|d| (d.message.message_id.as_str(), d.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    let reason = |id: &str| reasons.iter().find(|(m, _)| *m == id).unwrap().1;
    assert!(reason("wrong-schema").contains("x-culprit-schema-version"));
    assert!(reason("bad-requery").contains("x-culprit-requery"));
    assert!(reason("junk").contains("payload"));
}

#[tokio::test(start_paused = true)]
async fn a_tenant_nobody_configured_is_dead_lettered() {
    let rig = Rig::start(Scripted::answering(), config()).await;
    let mut d = detection(1, 11);
    d.tenant = "elsewhere".into();
    rig.publish(&d).await;
    rig.wait_idle().await;
    let dead = rig.bus.dead_letters(QueueName::Hunt, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("tenant"), "{}", dead[0].reason);
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_the_batch_in_hand() {
    let backend = Scripted::answering();
    let rig = Rig::start(backend, config()).await;
    for i in 0..3 {
        rig.publish(&detection(i, 10 + i)).await;
    }
    // Stop while the batch is still being collected: it is hunted and settled anyway.
    rig.wait_taken().await;
    assert_eq!(rig.backend.calls(), 0);
    rig.shutdown.trigger();
    rig.bundles(3).await;
    assert!(rig.stopped().await, "the worker returned");
    rig.assert_settled().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_hands_back_a_batch_that_cannot_finish_within_the_grace() {
    let backend = Scripted::failing(throttled(Some(Duration::from_secs(3600))));
    let cfg = HunterConfig {
        shutdown_grace: Duration::from_secs(5),
        ..config()
    };
    let rig = Rig::start(backend, cfg).await;
    rig.publish(&detection(1, 11)).await;
    rig.backend.wait_calls(1).await;
    rig.shutdown.trigger();
    assert!(rig.stopped().await, "the worker returned within the grace");
    // The detection is back in the queue for another worker, not lost.
    assert_eq!(rig.bus.queue_depth(QueueName::Hunt).await.unwrap(), 1);
    rig.assert_no_more_bundles().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_requery_publishes_nothing_and_the_first_answer_stands() {
    let backend = Scripted::failing(server_error());
    backend.push(Ok(Answer {
        table: rows_for(&all_ips()),
        truncated: false,
    }));
    let cfg = HunterConfig {
        requery_after: vec![Duration::from_secs(300)],
        hunt_attempts: 2,
        ..config()
    };
    let rig = Rig::start(backend, cfg).await;
    rig.publish(&detection(1, 11)).await;
    let first = rig.bundles(1).await;
    assert!(first[0].hunt_failure.is_none());
    // The re-query fails twice (its attempts), then is settled without a bundle.
    rig.backend.wait_calls(3).await;
    rig.assert_no_more_bundles().await;
    rig.assert_settled().await;
    assert_eq!(rig.backend.calls(), 3);
}
