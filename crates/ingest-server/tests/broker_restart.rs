//! RabbitMQ restarts while detections arrive over the webhook: none is lost, duplicates are
//! absorbed by key. Stops and starts the shared local broker's app (`rabbitmqctl stop_app` /
//! `start_app`, always restored by a drop guard), so the tests of this binary run one at a
//! time (a static mutex) and nothing else of this crate shares the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::*;
use culprit_bus::{QueueName, Subscriber};
use culprit_ingest_server::{Format, PublisherConfig};
use futures::StreamExt as _;
use tokio::time::{Instant, timeout};

/// Serial group: one broker restart at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DETECTIONS: usize = 1000;
/// Every fifth detection is sent a second time once accepted.
const RESEND_EVERY: usize = 5;

fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("rabbitmqctl {args:?}: {e} (this test restarts the local broker)")
        })
}

/// Starts the broker's app again however the test ends.
struct RestoreBroker;

impl Drop for RestoreBroker {
    fn drop(&mut self) {
        let out = rabbitmqctl(&["start_app"]);
        if !out.status.success() {
            eprintln!(
                "rabbitmqctl start_app failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// POSTs `body` until it is accepted (202), riding out 503s and refused connections;
/// counts each 503 in `unavailable` as it comes; returns the response body.
async fn deliver(
    client: &reqwest::Client,
    url: &str,
    body: String,
    deadline: Instant,
    unavailable: &AtomicUsize,
) -> serde_json::Value {
    loop {
        assert!(
            Instant::now() < deadline,
            "not accepted before the deadline: {body}"
        );
        let sent = client
            .post(url)
            .bearer_auth(TOKEN)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().as_u16() == 202 => return r.json().await.unwrap(),
            Ok(r) if r.status().as_u16() == 503 => {
                assert!(r.headers().contains_key("retry-after"));
                unavailable.fetch_add(1, SeqCst);
            }
            Ok(r) => panic!(
                "unexpected {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(e) => panic!("webhook unreachable: {e}"),
        }
        // The server asks for 2 s; a test does not need to be that polite.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_during_1000_detections_loses_none_and_duplicates_are_absorbed() {
    let _serial = SERIAL.lock().await;
    let env = Env::with(
        Duration::from_secs(60),
        PublisherConfig {
            // The sender hears 503 quickly while the broker is away.
            ack_timeout: Duration::from_secs(3),
            ..PublisherConfig::default()
        },
    )
    .await;
    let addr = webhook(
        env.publisher.clone(),
        vec![webhook_source("brain1", Format::VectraJson)],
        1 << 20,
    )
    .await;
    let endpoint = url(addr, "brain1");
    let client = reqwest::Client::new();
    let accepted = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(240);

    // The restart: once a fifth is in, stop the app, keep it down until senders have been
    // told to retry, then start it again.
    let restart = {
        let (accepted, unavailable) = (accepted.clone(), unavailable.clone());
        tokio::spawn(async move {
            while accepted.load(SeqCst) < DETECTIONS / 5 {
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let guard = RestoreBroker;
            let out = tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]))
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "stop_app: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let at_stop = accepted.load(SeqCst);
            while unavailable.load(SeqCst) < 5 {
                assert!(Instant::now() < deadline, "no sender was told to retry");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::task::spawn_blocking(move || drop(guard))
                .await
                .unwrap();
            at_stop
        })
    };

    let resent = futures::stream::iter(0..DETECTIONS)
        .map(|i| {
            let (client, endpoint) = (client.clone(), endpoint.clone());
            let (accepted, unavailable) = (accepted.clone(), unavailable.clone());
            async move {
                let body = vectra_detection(100_000 + i as u64).to_string();
                let reply = deliver(&client, &endpoint, body.clone(), deadline, &unavailable).await;
                accepted.fetch_add(1, SeqCst);
                let key = reply["detections"][0]["key"].as_str().unwrap().to_owned();
                if i % RESEND_EVERY != 0 {
                    return (key, None);
                }
                // Already confirmed: the same detection again is absorbed, broker up or down.
                let again = deliver(&client, &endpoint, body, deadline, &unavailable).await;
                (
                    key,
                    Some(again["detections"][0]["duplicate"].as_bool().unwrap()),
                )
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let at_stop = restart.await.unwrap();
    assert!(
        at_stop < DETECTIONS,
        "the broker went away only after everything was in"
    );
    let expected: BTreeSet<String> = resent.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(expected.len(), DETECTIONS);
    let resends: Vec<bool> = resent.iter().filter_map(|(_, d)| *d).collect();
    assert_eq!(resends.len(), DETECTIONS / RESEND_EVERY);
    assert!(
        resends.iter().all(|d| *d),
        "a resend of a confirmed detection was published again"
    );

    // Every key is on the hunt queue; a publish whose confirm was lost in the restart may be
    // there twice (at-least-once), never missing.
    let mut consumer = env.bus.subscribe(QueueName::Hunt, 500).await.unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while seen.len() < DETECTIONS {
        let d = timeout(
            deadline.saturating_duration_since(Instant::now()),
            consumer.next(),
        )
        .await
        .unwrap_or_else(|_| panic!("{} of {DETECTIONS} keys on the queue", seen.len()))
        .expect("bus closed");
        *seen.entry(d.message.message_id.clone()).or_default() += 1;
        d.ack().await.unwrap();
    }
    let keys: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(
        keys, expected,
        "keys on the queue differ from the keys accepted"
    );
    let total: usize = seen.values().sum();
    let refused = unavailable.load(SeqCst);
    println!(
        "restart: {DETECTIONS} distinct keys on the queue ({} messages, {} republished after a lost confirm); {refused} answers were 503 while the broker was away; broker stopped after {at_stop} were accepted",
        total,
        total - DETECTIONS
    );
    drop(consumer);
    env.cleanup().await;
}
