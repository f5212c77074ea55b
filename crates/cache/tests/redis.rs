//! Against the real local Redis (`CULPRIT_TEST_REDIS_URL`, default 127.0.0.1:6379). Each test
//! works under its own random key prefix and deletes its keys at the end. Redis missing is a
//! failure naming the URL, never a skip.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns too

mod common;

use std::sync::Arc;

use common::{T0, connect, max_in_any_window, redis_url, with_prefix};
use culprit_cache::{
    BudgetClock, BudgetLimits, CacheError, HuntBudget, RedisStores, Spend, TelemetryCache,
};
use culprit_model::{Duration, Timestamp};
use rand::{Rng, SeedableRng};

#[tokio::test]
async fn budget() {
    with_prefix(|p| async move { common::budget_contract(&connect(&redis_url(), &p).await).await })
        .await;
}

#[tokio::test]
async fn results() {
    with_prefix(
        |p| async move { common::results_contract(&connect(&redis_url(), &p).await).await },
    )
    .await;
}

#[tokio::test]
async fn hold() {
    with_prefix(|p| async move { common::hold_contract(&connect(&redis_url(), &p).await).await })
        .await;
}

#[tokio::test]
async fn a_hold_reaches_every_replica_and_survives_the_fallback() {
    with_prefix(|p| async move {
        let a = culprit_cache::Stores::redis(connect(&redis_url(), &p).await, 0.5).unwrap();
        let b = culprit_cache::Stores::redis(connect(&redis_url(), &p).await, 0.5).unwrap();
        common::hold_contract(a.budget.as_ref()).await;
        a.budget
            .hold("shared", T0 + Duration::from_seconds(20))
            .await
            .unwrap();
        assert_eq!(
            b.budget.try_spend("shared", T0).await.unwrap(),
            Spend::Wait(std::time::Duration::from_secs(20)),
            "another replica sees the hold"
        );
    })
    .await;
}

#[tokio::test]
async fn idempotency() {
    with_prefix(
        |p| async move { common::idempotency_contract(&connect(&redis_url(), &p).await).await },
    )
    .await;
}

#[tokio::test]
async fn ledger() {
    with_prefix(|p| async move { common::ledger_contract(&connect(&redis_url(), &p).await).await })
        .await;
}

#[tokio::test]
async fn cache_round_trips_and_sets_the_ttl() {
    with_prefix(|p| async move {
        let s = connect(&redis_url(), &p).await;
        let ttl = std::time::Duration::from_secs(30);
        s.put("t:1", "dev@0", b"\x00rows\xff", ttl).await.unwrap();
        assert_eq!(
            s.get("t:1", "dev@0").await.unwrap().as_deref(),
            Some(&b"\x00rows\xff"[..])
        );
        assert_eq!(
            s.get("t", "1:dev@0").await.unwrap(),
            None,
            "no ':' collisions"
        );
        // Expiry is Redis's own: check the TTL it holds rather than waiting it out.
        let mut raw = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let key = format!("{p}:tcache:t%3A1:dev@0");
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(pttl > 29_000 && pttl <= 30_000, "PTTL {pttl}");
        assert!(
            s.put("t", "k", b"", std::time::Duration::ZERO)
                .await
                .is_err()
        );
    })
    .await;
}

/// Several replicas, each with its own connection, hammer one tenant. Time advances in random
/// steps shared by all; within a step every replica asks concurrently. Over 1.5 hour-windows
/// no window of either tier may hold more than its limit, and since demand always exceeds
/// supply the first hour-window must hold exactly its limit (no slot lost to a race).
async fn hammer(prefix: String, limits: BudgetLimits, seed: u64) {
    let mut replicas = Vec::new();
    for _ in 0..4 {
        let r = connect(&redis_url(), &prefix)
            .await
            .with_limits(limits)
            .unwrap();
        replicas.push(Arc::new(r));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (minute, hour) = (
        Duration::from_std(limits.minute),
        Duration::from_std(limits.hour),
    );
    // Steps up to a third of the minute window: ~72 asks per minute window.
    let max_step = minute.0 / 3;
    let mut now = T0;
    let mut grants: Vec<i64> = Vec::new();
    while now < T0 + Duration(hour.0 * 3 / 2) {
        let tasks: Vec<_> = replicas
            .iter()
            .map(|r| {
                let r = Arc::clone(r);
                tokio::spawn(async move {
                    let mut granted = 0;
                    for _ in 0..3 {
                        if r.try_spend("tenant-x", now).await.unwrap() == Spend::Granted {
                            granted += 1;
                        }
                    }
                    granted
                })
            })
            .collect();
        for t in tasks {
            grants.extend(std::iter::repeat_n(now.0, t.await.unwrap()));
        }
        now = now + Duration(rng.random_range(0..max_step));
    }
    assert!(max_in_any_window(&grants, minute) <= limits.per_minute as usize);
    assert!(max_in_any_window(&grants, hour) <= limits.per_hour as usize);
    let first_hour = grants.iter().filter(|&&g| g < (T0 + hour).0).count();
    assert_eq!(first_hour, limits.per_hour as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replicas_never_exceed_either_window() {
    with_prefix(|p| hammer(p, BudgetLimits::default(), 7)).await;
}

/// The same at the time scale the pipeline tests use (60 ms and 3.6 s windows).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replicas_respect_time_scaled_windows() {
    with_prefix(|p| hammer(p, BudgetLimits::default().time_scaled(1000), 11)).await;
}

/// Redis lost its data (simulated by deleting the prefix's keys): a replica that knew the old
/// generation must count the current windows as spent — whether it notices first or a fresh
/// replica recreated the marker first.
#[tokio::test]
async fn lost_budget_data_counts_the_windows_as_spent() {
    with_prefix(|p| async move {
        let old = connect(&redis_url(), &p).await;
        for _ in 0..10 {
            assert_eq!(old.try_spend("t", T0).await.unwrap(), Spend::Granted);
        }
        old.delete_all().await.unwrap();

        let now = T0 + Duration::from_seconds(5);
        let wait = old.try_spend("t", now).await.unwrap();
        assert_eq!(wait, Spend::Wait(std::time::Duration::from_secs(3600)));
        let fresh = connect(&redis_url(), &p).await;
        assert_eq!(
            fresh.try_spend("t", now).await.unwrap(),
            Spend::Wait(std::time::Duration::from_secs(3600))
        );
        assert!(
            matches!(fresh.try_spend("t2", now).await.unwrap(), Spend::Wait(_)),
            "every tenant"
        );
    })
    .await;
}

#[tokio::test]
async fn a_fresh_replica_recreating_the_marker_does_not_hide_the_loss() {
    with_prefix(|p| async move {
        let old = connect(&redis_url(), &p).await;
        assert_eq!(old.try_spend("t", T0).await.unwrap(), Spend::Granted);
        old.delete_all().await.unwrap();

        // A replica that never saw the old generation cannot tell; it starts one.
        let fresh = connect(&redis_url(), &p).await;
        assert_eq!(fresh.try_spend("t", T0).await.unwrap(), Spend::Granted);
        // The old replica sees a generation it did not know, without a recorded loss.
        let now = T0 + Duration::from_seconds(1);
        assert_eq!(
            old.try_spend("t", now).await.unwrap(),
            Spend::Wait(std::time::Duration::from_secs(3600))
        );
        assert!(matches!(
            fresh.try_spend("t", now).await.unwrap(),
            Spend::Wait(_)
        ));
    })
    .await;
}

#[tokio::test]
async fn server_clock_mode_stamps_with_redis_time() {
    with_prefix(|p| async move {
        let limits = BudgetLimits {
            per_minute: 1,
            ..BudgetLimits::default()
        };
        let s = connect(&redis_url(), &p)
            .await
            .with_limits(limits)
            .unwrap()
            .with_budget_clock(BudgetClock::Server);
        // The caller's clock is ignored: a far-future `now` does not open a new window.
        assert_eq!(
            s.try_spend("t", Timestamp::now()).await.unwrap(),
            Spend::Granted
        );
        let later = Timestamp::now() + Duration::from_hours(5);
        match s.try_spend("t", later).await.unwrap() {
            Spend::Wait(d) => assert!(
                d <= std::time::Duration::from_secs(60) && d > std::time::Duration::from_secs(50),
                "{d:?}"
            ),
            Spend::Granted => panic!("granted twice in one minute"),
        }
    })
    .await;
}

#[tokio::test]
async fn absorbed_calls_count_against_the_windows() {
    with_prefix(|p| async move {
        let s = connect(&redis_url(), &p).await;
        s.absorb("t", &[T0; 44]).await.unwrap();
        assert_eq!(s.remaining("t", T0).await.unwrap().per_minute, 1);
        assert_eq!(s.try_spend("t", T0).await.unwrap(), Spend::Granted);
        assert!(matches!(
            s.try_spend("t", T0).await.unwrap(),
            Spend::Wait(_)
        ));
    })
    .await;
}

#[tokio::test]
async fn unreachable_redis_is_an_error_naming_the_url_without_the_password() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("redis://user:s3cret@127.0.0.1:{port}");
    let err = RedisStores::connect(&url, "p").await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CacheError::Redis { .. }));
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
    assert!(!format!("{:?}", RedisStores::connect_lazy(&url, "p").unwrap()).contains("s3cret"));
}

#[tokio::test]
async fn the_bundle_puts_the_budget_behind_a_fallback() {
    with_prefix(|p| async move {
        let s = culprit_cache::Stores::redis(connect(&redis_url(), &p).await, 0.5).unwrap();
        assert!(format!("{:?}", s.budget).contains("FallbackBudget"));
        common::budget_contract(s.budget.as_ref()).await;
        s.cache
            .put("t", "k", b"v", std::time::Duration::from_secs(60))
            .await
            .unwrap();
        assert!(s.cache.get("t", "k").await.unwrap().is_some());
    })
    .await;
}
