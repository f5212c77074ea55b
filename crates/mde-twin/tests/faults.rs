//! Fault injection over HTTP: the same seed gives the same faults, and each kind of fault
//! shows as a client would meet it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::*;
use culprit_mde_twin::{FaultConfig, ThrottleStorm};

fn with_faults(faults: FaultConfig) -> culprit_mde_twin::TwinConfig {
    let mut cfg = config();
    cfg.faults = faults;
    // Keep the machine quota out of the way of 40 calls.
    cfg.limits.machine_calls_per_minute = 1000;
    cfg
}

/// Statuses of `n` machine-list calls; a dropped connection shows as 0.
async fn statuses(env: &Env, token: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let sent = env
            .http
            .get(env.url("/api/machines"))
            .bearer_auth(token)
            .send()
            .await;
        let status = match sent {
            Ok(resp) => {
                let s = resp.status().as_u16();
                // A cut connection may fail only once the body is read.
                match resp.bytes().await {
                    Ok(_) => s,
                    Err(_) => 0,
                }
            }
            Err(_) => 0,
        };
        out.push(status);
    }
    out
}

async fn run(seed: u64) -> Vec<u16> {
    let env = Env::start(with_faults(FaultConfig {
        seed,
        error_rate_5xx: 0.3,
        drop_rate: 0.1,
        token_expiry_rate: 0.1,
        ..FaultConfig::default()
    }))
    .await;
    let token = env.mde_token().await;
    let got = statuses(&env, &token, 40).await;
    env.twin.shutdown().await;
    got
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults() {
    let a = run(42).await;
    let b = run(42).await;
    let c = run(43).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    for kind in [200, 500, 401, 0] {
        assert!(a.contains(&kind), "{kind} missing from {a:?}");
    }
}

#[tokio::test]
async fn server_errors_have_the_mde_and_graph_shapes() {
    let env = Env::start(with_faults(FaultConfig {
        error_rate_5xx: 1.0,
        ..FaultConfig::default()
    }))
    .await;
    let mde = env.mde_token().await;
    let graph = env.graph_token().await;
    let r = env.get("/api/machines", &mde).await;
    assert_eq!((r.status, r.code()), (500, "InternalServerError"));
    let r = env.graph_hunt(&graph, "DeviceInfo").await;
    assert_eq!(r.status, 503);
    assert!(r.body["error"]["innerError"].is_object());
    // Token requests are not faulted: a client can always re-authenticate.
    assert_eq!(
        env.token_response(TENANT, APP, SECRET, MDE_SCOPE)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_throttle_storm_answers_429_for_its_calls_only() {
    let env = Env::start(with_faults(FaultConfig {
        throttle_storm: Some(ThrottleStorm {
            after_calls: 1,
            calls: 3,
            retry_after_secs: 7,
        }),
        ..FaultConfig::default()
    }))
    .await;
    let token = env.mde_token().await;
    let mut got = Vec::new();
    for _ in 0..5 {
        let r = env.mde_hunt(&token, "DeviceInfo | take 1").await;
        if r.status == 429 {
            assert_eq!(r.header("retry-after"), Some("7"));
            assert_eq!(r.code(), "429");
        }
        got.push(r.status == 429);
    }
    assert_eq!(got, [false, true, true, true, false]);
    // A storm is not the tenant's quota: the quota saw only the two calls let through.
    assert_eq!(env.twin.call_counts(TENANT).hunting.total, 2);
}

#[tokio::test]
async fn dropped_connections_and_forced_expiry() {
    let env = Env::start(with_faults(FaultConfig {
        drop_rate: 1.0,
        ..FaultConfig::default()
    }))
    .await;
    let token = env.mde_token().await;
    assert_eq!(statuses(&env, &token, 3).await, [0, 0, 0]);

    let env = Env::start(with_faults(FaultConfig {
        token_expiry_rate: 1.0,
        ..FaultConfig::default()
    }))
    .await;
    let token = env.mde_token().await;
    let r = env.get("/api/machines", &token).await;
    assert_eq!((r.status, r.code()), (401, "Unauthorized"));
}

#[tokio::test]
async fn latency_is_added_to_api_calls() {
    let env = Env::start(with_faults(FaultConfig {
        latency_ms: 150,
        ..FaultConfig::default()
    }))
    .await;
    let token = env.mde_token().await;
    let started = Instant::now();
    assert_eq!(env.get("/api/machines", &token).await.status, 200);
    assert!(started.elapsed().as_millis() >= 150);
}
