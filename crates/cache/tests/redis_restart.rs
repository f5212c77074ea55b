//! Redis restarts, on a private `redis-server` (append-only, fsync always, on a free port, in a
//! temp dir) so the shared one is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns too

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use common::{T0, connect};
use culprit_cache::{FallbackBudget, HuntBudget, ResultMeta, ResultStore, Spend};
use culprit_model::{DetectionKey, Duration, SourceKind, Status};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A private redis-server, SIGKILLed on drop.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    async fn start(dir: &Path, port: u16) -> OwnRedis {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--daemonize", "no", "--logfile", ""])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("this test starts its own redis-server: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(out).lines();
        // Wait for the server's own readiness line (bounded, in case it never comes).
        let ready = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("Ready to accept connections") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            ready,
            Ok(true),
            "redis-server on port {port} did not become ready"
        );
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        OwnRedis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A crash, not a shutdown: whatever fsync'd survives.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn state_survives_a_restart_and_the_connection_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let redis = OwnRedis::start(dir.path(), port).await;
    let s = connect(&redis.url(), "restart").await;
    for _ in 0..45 {
        assert_eq!(s.try_spend("t", T0).await.unwrap(), Spend::Granted);
    }
    let key = DetectionKey::new(SourceKind::Zeek, "t", "uid", "0");
    let meta = ResultMeta {
        tenant: "t".into(),
        device_id: None,
        status: Status::DeviceNotFound,
        confidence: 0.0,
        computed_at: T0,
    };
    s.put(&key, b"result", &meta).await.unwrap();

    redis.kill().await;
    assert!(s.try_spend("t", T0).await.is_err(), "Redis is down");

    let _redis = OwnRedis::start(dir.path(), port).await;
    // The same manager reconnects; the log survived, so the minute is still full.
    let now = T0 + Duration::from_seconds(1);
    assert_eq!(
        s.try_spend("t", now).await.unwrap(),
        Spend::Wait(std::time::Duration::from_secs(59))
    );
    assert_eq!(s.get(&key).await.unwrap().as_deref(), Some(&b"result"[..]));
    assert_eq!(
        s.try_spend("t", T0 + Duration::from_seconds(60))
            .await
            .unwrap(),
        Spend::Granted
    );
}

#[tokio::test]
async fn a_restart_that_loses_data_spends_the_windows_and_the_fallback_bridges_the_outage() {
    let port = free_port();
    let first_dir = tempfile::tempdir().unwrap();
    let redis = OwnRedis::start(first_dir.path(), port).await;
    let stores = Arc::new(connect(&redis.url(), "lost").await);
    let budget = FallbackBudget::new(stores.clone(), 0.5).unwrap();
    for _ in 0..5 {
        assert_eq!(budget.try_spend("t", T0).await.unwrap(), Spend::Granted);
    }

    redis.kill().await;
    // Half of 45 is 22 locally, of which this replica already used 5.
    let outage = T0 + Duration::from_seconds(1);
    let mut local = 0;
    while budget.try_spend("t", outage).await.unwrap() == Spend::Granted {
        local += 1;
    }
    assert_eq!(local, 17);
    assert!(budget.is_degraded());

    // Back, but empty (a new data dir): the current windows count as spent.
    let empty_dir = tempfile::tempdir().unwrap();
    let redis = OwnRedis::start(empty_dir.path(), port).await;
    let back = T0 + Duration::from_seconds(3);
    assert_eq!(
        budget.try_spend("t", back).await.unwrap(),
        Spend::Wait(std::time::Duration::from_secs(3600))
    );
    assert!(!budget.is_degraded());
    // The filled hour plus the 17 local grants replayed into the shared log.
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let logged: u64 = redis::cmd("ZCARD")
        .arg("lost:budget:t:log")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(logged, 1500 + 17);
    drop(stores);
    redis.kill().await;
}
