//! 1,000 detections through the distributed pipeline on the local RabbitMQ and Redis: posted
//! as Vectra JSON to the ingest role's webhook, then two hunters and a correlator (each a
//! `culprit serve --role …`) against the twin with its quota windows time-scaled. Every
//! detection ends as exactly one stored result and one `NewResult` event, and the twin's own
//! counts show 45 calls per 60 s and 1,500 per 3,600 s never exceeded. Malformed messages
//! mixed into the stream (on the bus and at the webhook) are dead-lettered with their reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test failure report

mod support;

use std::collections::BTreeMap;

use culprit_bus::{BusInspector, Message, QueueName};
use culprit_mde_twin::FaultConfig;
use culprit_proto::v1 as pb;
use futures::StreamExt as _;
use prost::Message as _;
use support::{RUN_LIMIT, Run};
use tokio::time::Instant;

/// Both tests load the machine; one at a time keeps their wall time predictable.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_detections_end_as_one_result_and_one_event_each_within_quota() {
    let _serial = SERIAL.lock().await;
    let deadline = Instant::now() + RUN_LIMIT;
    // 20 devices, 50 detections each, all in one recorded hour.
    let mut run = Run::new(20, 50, FaultConfig::default(), |_| {}).await;
    let services = run.start_services();
    let publisher = run.publish_all();
    publisher.await.unwrap();
    run.finish(services, deadline, false).await;
    run.cleanup().await;
}

/// A malformed message of kind `i % 3`: bytes that are not protobuf, a detection without a
/// tenant, a detection without its window.
fn malformed(i: usize, template: &culprit_model::Detection) -> (Message, &'static str) {
    let id = format!("malformed-{i}");
    let schema = culprit_hunter::service::DETECTION_SCHEMA;
    let (payload, reason) = match i % 3 {
        0 => (b"\xff\x00\x13 not a protobuf message".to_vec(), "payload"),
        1 => {
            let mut p = pb::Detection::from(template);
            p.tenant.clear();
            p.source_id = id.clone();
            (p.encode_to_vec(), "tenant")
        }
        _ => {
            let mut p = pb::Detection::from(template);
            p.window = None;
            p.source_id = id.clone();
            (p.encode_to_vec(), "window")
        }
    };
    let msg = Message::new(id, payload).with_header(culprit_bus::HEADER_SCHEMA_VERSION, schema);
    (msg, reason)
}

/// A malformed webhook body of kind `i % 3`, each distinct: not JSON, a detection without
/// its id, a detection whose revision time is not a time; and what the reason must name.
fn malformed_body(i: usize, template: &serde_json::Value) -> (Vec<u8>, &'static str) {
    match i % 3 {
        0 => (
            format!("{{\"id\": \"bad-{i}\", \"src_ip\": ").into_bytes(),
            "malformed input",
        ),
        1 => {
            let mut v = template.clone();
            v.as_object_mut().unwrap().remove("id");
            v["src_host"]["name"] = format!("bad-{i}").into();
            (
                serde_json::to_vec(&v).unwrap(),
                "id: required field is missing",
            )
        }
        _ => {
            let mut v = template.clone();
            v["id"] = format!("bad-{i}").into();
            v["last_timestamp"] = format!("yesterday-{i}").into();
            (serde_json::to_vec(&v).unwrap(), "last_timestamp")
        }
    }
}

/// Posts one malformed body: the webhook answers 400 naming the reason.
async fn post_malformed(url: &str, token: &str, body: Vec<u8>, want: &str) {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status.as_u16(), 400, "{text}");
    assert!(
        text.contains(want),
        "the 400 does not name {want:?}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_malformed_messages_are_dead_lettered_with_reasons_and_the_valid_complete() {
    let _serial = SERIAL.lock().await;
    let deadline = Instant::now() + RUN_LIMIT;
    let mut run = Run::new(20, 50, FaultConfig::default(), |_| {}).await;
    let services = run.start_services();
    let bus = run.bus.clone();
    let work: Vec<_> = run
        .tenant
        .work
        .iter()
        .map(|w| w.detection.clone())
        .collect();
    // Onto the bus, past ingest (a buggy or foreign publisher): the hunter dead-letters them.
    let mut expected_reasons = BTreeMap::new();
    let mut messages = Vec::new();
    for (i, d) in work.iter().enumerate() {
        let (msg, reason) = malformed(i, d);
        expected_reasons.insert(msg.message_id.clone(), reason);
        messages.push(msg);
    }
    // To the webhook: ingest answers 400 and dead-letters the body with its reason.
    let template = run.tenant.work[0].raw.clone();
    let bodies: Vec<(Vec<u8>, &'static str)> = (0..work.len())
        .map(|i| malformed_body(i, &template))
        .collect();
    let expected_bodies: BTreeMap<Vec<u8>, &'static str> = bodies.iter().cloned().collect();
    assert_eq!(
        expected_bodies.len(),
        bodies.len(),
        "the bodies are distinct"
    );
    // The valid detections, the malformed messages and the malformed bodies arrive together.
    let valid = run.publish_all();
    let onto_bus = tokio::spawn(async move {
        for m in messages {
            support::publish_retrying(bus.as_ref(), m).await;
        }
    });
    let (url, token) = (
        run.ingest.as_ref().unwrap().url.clone(),
        run.plan.webhook_token.clone(),
    );
    let to_webhook = tokio::spawn(async move {
        futures::stream::iter(bodies)
            .for_each_concurrent(support::SENDERS, |(body, want)| {
                let (url, token) = (url.clone(), token.clone());
                async move { post_malformed(&url, &token, body, want).await }
            })
            .await;
    });
    valid.await.unwrap();
    onto_bus.await.unwrap();
    to_webhook.await.unwrap();
    run.finish(services, deadline, false).await;

    let ingest_dead = run
        .bus
        .dead_letters(
            QueueName::Custom(culprit_ingest_server::DEAD_LETTER_QUEUE.into()),
            5000,
        )
        .await
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for d in ingest_dead {
        let m = &d.message;
        assert_eq!(
            m.header(culprit_ingest_server::HEADER_SOURCE),
            Some(support::WEBHOOK_SOURCE)
        );
        assert_eq!(
            m.header(culprit_ingest_server::HEADER_TENANT),
            Some(support::TENANT)
        );
        let want = expected_bodies.get(&m.payload).unwrap_or_else(|| {
            panic!(
                "an unexpected body in the ingest dead-letter queue: {}",
                String::from_utf8_lossy(&m.payload)
            )
        });
        assert!(
            d.reason.contains(want),
            "the dead letter's reason {:?} does not name {want:?}",
            d.reason
        );
        assert!(seen.insert(m.payload.clone()), "a body dead-lettered twice");
    }
    assert_eq!(
        seen.len(),
        expected_bodies.len(),
        "every malformed body is in the ingest dead-letter queue"
    );

    let dead = run.bus.dead_letters(QueueName::Hunt, 5000).await.unwrap();
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    for d in dead {
        let header = d
            .message
            .header(culprit_bus::HEADER_REASON)
            .unwrap_or_else(|| panic!("{} has no reason header", d.message.message_id))
            .to_owned();
        assert_eq!(header, d.reason);
        assert!(
            by_id.insert(d.message.message_id.clone(), header).is_none(),
            "{} dead-lettered twice",
            d.message.message_id
        );
    }
    assert_eq!(
        by_id.len(),
        expected_reasons.len(),
        "every malformed message, and only those, is dead-lettered"
    );
    for (id, want) in &expected_reasons {
        let got = by_id
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not in the dead-letter queue"));
        assert!(
            got.contains(want),
            "{id}: the reason {got:?} does not name {want:?}"
        );
    }
    run.cleanup().await;
}
