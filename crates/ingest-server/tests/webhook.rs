//! The webhook over real HTTP, publishing to the real local RabbitMQ with Redis dedup.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use culprit_bus::HEADER_SCHEMA_VERSION;
use culprit_cache::RedisStores;
use culprit_ingest_server::webhook::{SIGNATURE_HEADER, WebhookSource, sign};
use culprit_ingest_server::{
    Format, HEADER_SOURCE, HEADER_TENANT, IngestPublisher, PublisherConfig, Source,
};
use serde_json::Value;

const MB: usize = 1024 * 1024;

async fn post(client: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = client
        .post(url)
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn confirmed_detections_reach_the_hunt_queue_under_the_sources_tenant() {
    let env = Env::new().await;
    let mut other = webhook_source("globex-brain", Format::VectraJson);
    other.source.tenant = "globex".into();
    let addr = webhook(
        env.publisher.clone(),
        vec![webhook_source("brain1", Format::VectraJson), other],
        MB,
    )
    .await;
    let client = reqwest::Client::new();

    // A tenant in the body is not the sender's to choose.
    let mut page: Value = serde_json::from_slice(&lsass_page()).unwrap();
    page["tenant"] = "globex".into();
    page["results"][0]["tenant"] = "globex".into();
    let (status, body) = post(&client, &url(addr, "brain1"), page.to_string()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 3, "{body}");
    // 202 comes after the confirms: the messages are in the queue now.
    assert_eq!(env.hunt_depth().await, 3);

    let msgs = env.take_hunt(3).await;
    let mut ids = BTreeSet::new();
    for m in &msgs {
        let d = decode(m);
        assert_eq!(d.tenant, TENANT, "{m:?}");
        assert_eq!(m.message_id, d.key().as_str());
        assert_eq!(
            m.header(HEADER_SCHEMA_VERSION),
            Some(culprit_hunter::service::DETECTION_SCHEMA)
        );
        ids.insert(d.source_id.clone());
    }
    assert_eq!(
        ids,
        BTreeSet::from(["2568".into(), "2569".into(), "2570".into()])
    );
    let keys: Vec<&str> = body["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.iter().all(|k| k.starts_with("vectra:acme:")),
        "{keys:?}"
    );

    // The same body through the other tenant's source is that tenant's.
    let (status, body) = post(&client, &url(addr, "globex-brain"), lsass_page()).await;
    assert_eq!(status, 202, "{body}");
    let msgs = env.take_hunt(3).await;
    assert!(msgs.iter().all(|m| decode(m).tenant == "globex"));
    env.cleanup().await;
}

#[tokio::test]
async fn every_auth_failure_is_answered_and_publishes_nothing() {
    let env = Env::new().await;
    let hmac_only = WebhookSource {
        token: None,
        ..webhook_source("signed", Format::VectraJson)
    };
    let addr = webhook(
        env.publisher.clone(),
        vec![webhook_source("brain1", Format::VectraJson), hmac_only],
        MB,
    )
    .await;
    let client = reqwest::Client::new();
    let body = vectra_detection(1).to_string();

    let r = client
        .post(url(addr, "brain1"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));

    let r = client
        .post(url(addr, "brain1"))
        .bearer_auth("not-the-token")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // The other source's token is no use where only signatures are accepted.
    let r = client
        .post(url(addr, "signed"))
        .bearer_auth(TOKEN)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    let r = client
        .post(url(addr, "signed"))
        .header(SIGNATURE_HEADER, sign(b"wrong key", body.as_bytes()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // A signature over another body.
    let r = client
        .post(url(addr, "signed"))
        .header(SIGNATURE_HEADER, sign(HMAC_KEY.as_bytes(), b"{}"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    let r = client
        .post(url(addr, "nobody"))
        .bearer_auth(TOKEN)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(env.hunt_depth().await, 0, "a refused request published");

    let r = client
        .post(url(addr, "signed"))
        .header(SIGNATURE_HEADER, sign(HMAC_KEY.as_bytes(), body.as_bytes()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(env.hunt_depth().await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn bad_input_is_400_naming_the_field_and_dead_lettered_with_its_bytes() {
    let env = Env::new().await;
    let addr = webhook(
        env.publisher.clone(),
        vec![webhook_source("brain1", Format::VectraJson)],
        MB,
    )
    .await;
    let client = reqwest::Client::new();

    let garbage = b"{\"results\": [ not json".to_vec();
    let (status, body) = post(&client, &url(addr, "brain1"), garbage.clone()).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("$") && error.contains("not JSON"), "{error}");

    // One record without its id among good ones: the good ones go through.
    let mut page: Value = serde_json::from_slice(&lsass_page()).unwrap();
    page["results"][1].as_object_mut().unwrap().remove("id");
    let partial = page.to_string();
    let (status, body) = post(&client, &url(addr, "brain1"), partial.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["rejected"][0]["index"], 1, "{body}");
    let reason = body["rejected"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("results[1].id"), "{reason}");
    assert_eq!(env.hunt_depth().await, 2);

    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].message.payload, garbage);
    assert!(dead[0].reason.contains("not JSON"), "{}", dead[0].reason);
    assert_eq!(dead[0].message.header(HEADER_SOURCE), Some("brain1"));
    assert_eq!(dead[0].message.header(HEADER_TENANT), Some(TENANT));
    assert_eq!(dead[1].message.payload, partial.as_bytes());
    assert!(
        dead[1].reason.contains("record 1: results[1].id"),
        "{}",
        dead[1].reason
    );
    env.cleanup().await;
}

#[tokio::test]
async fn duplicates_are_absorbed_by_key_and_a_new_revision_is_not_a_duplicate() {
    let env = Env::new().await;
    let addr = webhook(
        env.publisher.clone(),
        vec![webhook_source("brain1", Format::VectraJson)],
        MB,
    )
    .await;
    let client = reqwest::Client::new();
    let d = vectra_detection(7001);
    let (status, first) = post(&client, &url(addr, "brain1"), d.to_string()).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["detections"][0]["duplicate"], false);
    let (status, again) = post(&client, &url(addr, "brain1"), d.to_string()).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["detections"][0]["duplicate"], true);
    assert_eq!(again["detections"][0]["key"], first["detections"][0]["key"]);
    assert_eq!(env.hunt_depth().await, 1);

    // The detection moved on: Vectra's revision is last_timestamp.
    let mut newer = d.clone();
    newer["last_timestamp"] = "2030-01-01T00:00:00Z".into();
    let (status, body) = post(&client, &url(addr, "brain1"), newer.to_string()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["detections"][0]["duplicate"], false);
    assert_eq!(env.hunt_depth().await, 2);

    // Dedup is shared through Redis: a second publisher (another replica) sees the key.
    let replica = IngestPublisher::new(
        Arc::new(env.bus.clone()),
        env.redis.clone(),
        env.publisher.config().clone(),
    );
    let again = replica
        .ingest(&source(Format::VectraJson), d.to_string().as_bytes())
        .await
        .unwrap();
    assert!(again.published[0].duplicate);
    assert_eq!(env.hunt_depth().await, 2);
    env.cleanup().await;
}

#[tokio::test]
async fn an_oversized_body_is_413_and_not_read() {
    let env = Env::new().await;
    let addr = webhook(
        env.publisher.clone(),
        vec![webhook_source("brain1", Format::VectraJson)],
        4096,
    )
    .await;
    let client = reqwest::Client::new();
    let big = serde_json::to_string(&vec![vectra_detection(1); 10]).unwrap();
    assert!(big.len() > 4096);
    let (status, body) = post(&client, &url(addr, "brain1"), big.clone()).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("4096"), "{body}");
    // Without a Content-Length (chunked) the limit holds while reading.
    let status = chunked_post(addr, "/v1/sources/brain1/detections", big.as_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(env.hunt_depth().await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn broker_or_store_away_is_503_with_retry_after_and_releases_the_claim() {
    let env = Env::new().await;
    let client = reqwest::Client::new();
    let body = vectra_detection(9001).to_string();

    // Redis away: nothing can be claimed, so nothing is published.
    let dead_redis = Arc::new(RedisStores::connect_lazy("redis://127.0.0.1:1", "x").unwrap());
    let no_store = IngestPublisher::new(
        Arc::new(env.bus.clone()),
        dead_redis,
        PublisherConfig::default(),
    );
    let addr = webhook(
        no_store,
        vec![webhook_source("brain1", Format::VectraJson)],
        MB,
    )
    .await;
    let r = client
        .post(url(addr, "brain1"))
        .bearer_auth(TOKEN)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "2");

    // Broker gone: 503, and the claim is given back so that the retry publishes.
    let closed = culprit_bus::RabbitBus::connect(bus_config(std::time::Duration::from_secs(2)))
        .await
        .unwrap();
    // Connecting declared this bus's own topology: removed before it closes.
    closed.delete_topology().await.unwrap();
    closed.close().await;
    let gone = IngestPublisher::new(
        Arc::new(closed),
        env.redis.clone(),
        env.publisher.config().clone(),
    );
    let addr = webhook(gone, vec![webhook_source("brain1", Format::VectraJson)], MB).await;
    let r = client
        .post(url(addr, "brain1"))
        .bearer_auth(TOKEN)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let retry = env
        .publisher
        .ingest(
            &Source::new("brain1", TENANT, Format::VectraJson),
            body.as_bytes(),
        )
        .await
        .unwrap();
    assert!(!retry.published[0].duplicate, "the failed claim was kept");
    assert_eq!(env.hunt_depth().await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn line_formats_go_through_the_webhook_too() {
    let env = Env::new().await;
    let addr = webhook(
        env.publisher.clone(),
        vec![
            webhook_source("eve", Format::SuricataEve),
            webhook_source("cef", Format::VectraSyslog),
        ],
        MB,
    )
    .await;
    let client = reqwest::Client::new();
    let eve = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ingest/tests/data/scenarios/lsass_01/suricata_eve.jsonl"
    ))
    .unwrap();
    let (status, body) = post(&client, &url(addr, "eve"), eve).await;
    assert_eq!(status, 202, "{body}");
    let alerts = body["accepted"].as_u64().unwrap();
    assert!(alerts > 0, "{body}");
    let cef = "<13>May 14 05:46:11 brain1 CEF:0|Vectra Networks|X Series|5.7|port_sweep|Port Sweep|5|externalId=77 cat=RECONNAISSANCE src=10.1.2.3 flexNumber1Label=threat flexNumber1=60 flexNumber2Label=certainty flexNumber2=70 dst=0.0.0.0 start=1589430827000 end=1589433101000\n";
    let (status, body) = post(&client, &url(addr, "cef"), cef).await;
    assert_eq!(status, 202, "{body}");
    let msgs = env.take_hunt(usize::try_from(alerts).unwrap() + 1).await;
    let sweep = msgs
        .iter()
        .map(decode)
        .find(|d| d.source_id == "77")
        .unwrap();
    assert!(sweep.needs_target_list);
    assert!(sweep.flows.is_empty());
    env.cleanup().await;
}

/// A POST with `Transfer-Encoding: chunked` written by hand (no Content-Length to trust).
async fn chunked_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(1000) {
        // The server may answer and close before the whole body is sent.
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || s.write_all(chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}
