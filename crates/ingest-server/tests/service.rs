//! The whole service from a configuration file, as `culprit serve --role ingest` runs it:
//! webhook and syslog sources bound on loopback ports, publishing to the real RabbitMQ.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use culprit_cache::MemoryCheckpoints;
use culprit_ingest_server::IngestService;
use culprit_runtime::{Drained, Shutdown};
use culprit_settings::Settings;
use tokio::io::AsyncWriteExt;

const CONFIG: &str = r#"
[tenants.acme]
tenant_id = "00000000-0000-0000-0000-000000000001"
client_id = "00000000-0000-0000-0000-000000000002"
client_secret = "s"

[ingest]
webhook_listen = "127.0.0.1:0"

[ingest.sources.brain_hook]
kind = "webhook"
tenant = "acme"
format = "vectra_json"
token = "webhook-token-7f3a"

[ingest.sources.brain_tcp]
kind = "syslog_tcp"
tenant = "acme"
format = "vectra_syslog"
listen = "127.0.0.1:0"
allowed_peers = ["127.0.0.0/8"]

[ingest.sources.brain_udp]
kind = "syslog_udp"
tenant = "acme"
format = "vectra_syslog"
listen = "127.0.0.1:0"
"#;

fn settings(text: &str) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("culprit.toml");
    std::fs::write(&path, text).unwrap();
    Settings::load_from(Some(&path), &[]).unwrap()
}

const CEF: &str = "CEF:0|Vectra Networks|X Series|5.7|hidden_https_tunnel_cnc|Hidden HTTPS Tunnel|7|externalId=ID src=10.100.199.10 flexNumber1Label=threat flexNumber1=95 flexNumber2Label=certainty flexNumber2=80 dst=1.2.3.4 dpt=443 proto=tcp start=1589430827000 end=1589433101000";

#[tokio::test]
async fn every_configured_source_runs_and_drains_on_shutdown() {
    let s = settings(CONFIG);
    s.validate().unwrap();
    let env = Env::new().await;
    let service = IngestService::bind(&s.ingest, env.publisher.clone())
        .await
        .unwrap();
    let hook = service.webhook_addr().unwrap();
    let tcp = service.syslog_addr("brain_tcp").unwrap();
    let udp = service.syslog_addr("brain_udp").unwrap();
    let shutdown = Shutdown::new();
    service.spawn(&shutdown);

    let r = reqwest::Client::new()
        .post(url(hook, "brain_hook"))
        .bearer_auth(TOKEN)
        .body(vectra_detection(1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let mut s = tokio::net::TcpStream::connect(tcp).await.unwrap();
    s.write_all(format!("{}\n", CEF.replace("ID", "2")).as_bytes())
        .await
        .unwrap();
    let u = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    u.send_to(CEF.replace("ID", "3").as_bytes(), udp)
        .await
        .unwrap();

    let mut ids: Vec<String> = env
        .take_hunt(3)
        .await
        .iter()
        .map(|m| {
            let d = decode(m);
            assert_eq!(d.tenant, "acme");
            d.source_id
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["1", "2", "3"]);
    drop(s);
    shutdown.trigger();
    assert_eq!(shutdown.drain(WAIT).await, Drained::Clean);
    assert!(
        tokio::net::TcpStream::connect(hook).await.is_err(),
        "the webhook still accepts after shutdown"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn configuration_mistakes_name_their_key() {
    // A webhook nobody can authenticate to, a syslog listener open to all, an unknown tenant.
    let bad = r#"
[tenants.acme]
tenant_id = "t"
client_id = "c"
client_secret = "s"
[ingest]
webhook_listen = "127.0.0.1:0"
[ingest.sources.open_hook]
kind = "webhook"
tenant = "acme"
format = "vectra_json"
[ingest.sources.open_tcp]
kind = "syslog_tcp"
tenant = "acme"
format = "vectra_syslog"
listen = "127.0.0.1:0"
[ingest.sources.stray]
kind = "syslog_udp"
tenant = "globex"
format = "vectra_syslog"
listen = "127.0.0.1:0"
"#;
    let msg = settings(bad).validate().unwrap_err().to_string();
    for needle in [
        "ingest.sources.open_hook",
        "token or hmac_secret",
        "ingest.sources.open_tcp.allowed_peers",
        "ingest.sources.stray.tenant",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }

    let cidr = CONFIG.replace("[\"127.0.0.0/8\"]", "[\"127.0.0.0/40\"]");
    let env = Env::new().await;
    let err = IngestService::bind(&settings(&cidr).ingest, env.publisher.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ingest.sources.brain_tcp.allowed_peers") && err.contains("127.0.0.0/40"),
        "{err}"
    );

    let api = format!(
        "{CONFIG}\n[ingest.sources.vectra]\nkind = \"vectra_api\"\ntenant = \"acme\"\n[ingest.sources.vectra.api]\nurl = \"https://brain.example\"\nclient_id = \"id\"\n"
    );
    let err = IngestService::bind(&settings(&api).ingest, env.publisher.clone())
        .await
        .unwrap()
        .with_pollers(
            &settings(&api).ingest,
            Arc::new(MemoryCheckpoints::default()),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ingest.sources.vectra.api.client_secret"),
        "{err}"
    );
    env.cleanup().await;
}

/// An input wider than the confirm window is claimed a window at a time: keys already
/// published (spread over several windows) are reported as duplicates in input order, the
/// rest are published once each.
#[tokio::test]
async fn an_input_wider_than_the_window_is_claimed_window_by_window() {
    let env = Env::with(
        std::time::Duration::from_secs(10),
        culprit_ingest_server::PublisherConfig {
            concurrency: 4,
            ..Default::default()
        },
    )
    .await;
    let page = |ids: &[u64]| {
        let results: Vec<_> = ids.iter().map(|i| vectra_detection(*i)).collect();
        serde_json::to_vec(
            &serde_json::json!({"count": results.len(), "next": null, "results": results}),
        )
        .unwrap()
    };
    let src = source(culprit_ingest_server::Format::VectraJson);
    // Every third key first, so the known ones fall in each of the later input's windows.
    let early: Vec<u64> = (0..11).filter(|i| i % 3 == 0).collect();
    let first = env.publisher.ingest(&src, &page(&early)).await.unwrap();
    assert_eq!(first.published.len(), early.len());
    let all: Vec<u64> = (0..11).collect();
    let second = env.publisher.ingest(&src, &page(&all)).await.unwrap();
    let dup: Vec<bool> = second.published.iter().map(|p| p.duplicate).collect();
    let want: Vec<bool> = all.iter().map(|i| i % 3 == 0).collect();
    assert_eq!(dup, want, "duplicates in input order");
    let got = env.take_hunt(all.len()).await;
    let mut ids: Vec<String> = got.iter().map(|m| decode(m).source_id).collect();
    ids.sort();
    let mut want_ids: Vec<String> = all.iter().map(u64::to_string).collect();
    want_ids.sort();
    assert_eq!(ids, want_ids, "each detection published once");
    assert_eq!(env.hunt_depth().await, 0, "nothing published twice");
    env.cleanup().await;
}
