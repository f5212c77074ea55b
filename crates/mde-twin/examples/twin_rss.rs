//! Loads scenario folders into a twin and reports load time, resident memory and the time of
//! one hunting query over HTTP: the measurement behind "the twin holds 1,000,000 rows in under
//! 1 GiB resident".
//!
//! `cargo run --release -p culprit-mde-twin --example twin_rss -- DIR [DIR ...]`
#![allow(clippy::print_stdout)]

use std::time::Instant;

use culprit_mde_twin::{Twin, TwinConfig};

fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dirs: Vec<_> = std::env::args().skip(1).map(Into::into).collect();
    if dirs.is_empty() {
        return Err("usage: twin_rss DIR [DIR ...]".into());
    }
    let before = rss_mib();
    let started = Instant::now();
    let config = TwinConfig::single_tenant("t", "app", "secret", dirs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let twin = Twin::start(config, listener).await?;
    println!("load: {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "rss before: {before:?} MiB, after load: {:?} MiB",
        rss_mib()
    );

    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{}/t/oauth2/v2.0/token", twin.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "secret"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"].as_str().unwrap_or_default();
    let query =
        "DeviceNetworkEvents | where RemotePort == 8080 | summarize dcount(RemoteIP) by DeviceId";
    let started = Instant::now();
    let resp = http
        .post(format!("{}/v1.0/security/runHuntingQuery", twin.base_url()))
        .bearer_auth(token)
        .json(&serde_json::json!({ "Query": query }))
        .send()
        .await?;
    let status = resp.status();
    let body = resp.text().await?;
    println!(
        "query over HTTP: {:.1} ms, status {status}, {} bytes",
        started.elapsed().as_secs_f64() * 1000.0,
        body.len()
    );
    println!("rss after query: {:?} MiB", rss_mib());
    twin.shutdown().await;
    Ok(())
}
