//! The in-memory stores meet the same contracts as Redis; expiry follows an injected clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns too

mod common;

use std::sync::Arc;

use common::T0;
use culprit_cache::{BudgetLimits, IdempotencyStore, ManualClock, MemoryStores, TelemetryCache};
use culprit_model::Duration;

fn stores() -> (Arc<ManualClock>, MemoryStores) {
    let clock = Arc::new(ManualClock::new(T0));
    let stores = MemoryStores::with_clock(clock.clone(), BudgetLimits::default()).unwrap();
    (clock, stores)
}

#[tokio::test]
async fn budget() {
    common::budget_contract(&stores().1).await;
}

#[tokio::test]
async fn hold() {
    common::hold_contract(&stores().1).await;
    let clock = Arc::new(ManualClock::new(T0));
    let bundle = culprit_cache::Stores::memory(clock, BudgetLimits::default()).unwrap();
    common::hold_contract(bundle.budget.as_ref()).await;
}

#[tokio::test]
async fn results() {
    common::results_contract(&stores().1).await;
}

#[tokio::test]
async fn idempotency() {
    common::idempotency_contract(&stores().1).await;
}

#[tokio::test]
async fn ledger() {
    common::ledger_contract(&stores().1).await;
}

#[tokio::test]
async fn cache_entries_expire_after_their_ttl() {
    let (clock, s) = stores();
    let ttl = std::time::Duration::from_secs(30);
    s.put("t", "dev@0", b"rows", ttl).await.unwrap();
    s.put("t", "empty@0", b"", std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        s.get("t", "dev@0").await.unwrap().as_deref(),
        Some(&b"rows"[..])
    );
    assert_eq!(s.get("other", "dev@0").await.unwrap(), None);
    clock.advance(Duration::from_seconds(5));
    assert_eq!(
        s.get("t", "empty@0").await.unwrap(),
        None,
        "short TTL for empty answers"
    );
    clock.advance(Duration(Duration::from_seconds(25).0 - 1));
    assert!(s.get("t", "dev@0").await.unwrap().is_some());
    clock.advance(Duration(1));
    assert_eq!(s.get("t", "dev@0").await.unwrap(), None);
}

#[tokio::test]
async fn idempotency_keys_expire() {
    let (clock, s) = stores();
    let ttl = std::time::Duration::from_secs(60);
    assert!(s.first_seen("scope", "k", ttl).await.unwrap());
    clock.advance(Duration::from_seconds(59));
    assert!(!s.first_seen("scope", "k", ttl).await.unwrap());
    clock.advance(Duration::from_seconds(1));
    assert!(s.first_seen("scope", "k", ttl).await.unwrap());
}

#[test]
fn bucket_keys_group_by_device_and_bucket() {
    use culprit_cache::telemetry_bucket_key as key;
    let five = std::time::Duration::from_secs(300);
    // A bucket boundary: 1_700_000_100 is a multiple of 300.
    let start = culprit_model::Timestamp::from_unix_seconds(1_700_000_100);
    let a = key("dev", start, five);
    assert_eq!(
        a,
        key(
            "dev",
            start + Duration(Duration::from_seconds(300).0 - 1),
            five
        )
    );
    assert_ne!(a, key("dev", start - Duration(1), five));
    assert_ne!(a, key("dev", start + Duration::from_seconds(300), five));
    assert_ne!(a, key("dev2", start, five));
}

#[tokio::test]
async fn the_bundle_shares_one_memory_store() {
    let clock = Arc::new(ManualClock::new(T0));
    let s = culprit_cache::Stores::memory(clock, BudgetLimits::default()).unwrap();
    common::budget_contract(s.budget.as_ref()).await;
    common::results_contract(s.results.as_ref()).await;
    common::ledger_contract(s.ledger.as_ref()).await;
    common::idempotency_contract(s.idempotency.as_ref()).await;
    s.cache
        .put("t", "k", b"v", std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert!(s.cache.get("t", "k").await.unwrap().is_some());
}
