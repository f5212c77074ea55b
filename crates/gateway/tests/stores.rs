//! The gateway stores' contract, run against the memory and the Redis implementations (Redis
//! at CULPRIT_TEST_REDIS_URL or 127.0.0.1:6379; these tests never skip).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use culprit_gateway::stores::{
    AuditRecord, EventLog, GatewayStores, MemoryGatewayStores, Outcome, ReadError,
    RedisGatewayStores, ScheduledRelease,
};
use culprit_model::{Duration, Timestamp};

const T0: Timestamp = Timestamp::from_unix_seconds(1_700_000_000);

fn redis_url() -> String {
    std::env::var("CULPRIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix() -> String {
    format!("culprit-gw-test-{:016x}", rand::random::<u64>())
}

async fn redis(retention: u64) -> RedisGatewayStores {
    redis_at(&prefix(), retention).await
}

async fn redis_at(prefix: &str, retention: u64) -> RedisGatewayStores {
    match RedisGatewayStores::connect(&redis_url(), prefix, retention, 1000).await {
        Ok(s) => s,
        Err(e) => panic!("these tests need Redis (set CULPRIT_TEST_REDIS_URL): {e}"),
    }
}

async fn event_log_contract(log: &dyn GatewayStores) {
    assert_eq!(log.last_position().await.unwrap(), None);
    let mut changed = log.subscribe();
    changed.borrow_and_update();
    let p1 = log.append("k1", b"one").await.unwrap().unwrap();
    assert!(changed.has_changed().unwrap(), "an append wakes watchers");
    assert_eq!(log.append("k1", b"one").await.unwrap(), None, "dedup");
    let p2 = log.append("k2", b"two").await.unwrap().unwrap();
    let p3 = log.append("k3", b"three").await.unwrap().unwrap();
    assert_eq!(
        log.last_position().await.unwrap().as_deref(),
        Some(p3.as_str())
    );
    let all = log.read_after(None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.payload.as_slice()).collect::<Vec<_>>(),
        [&b"one"[..], b"two", b"three"]
    );
    assert_eq!(all[0].position, p1);
    let after = log.read_after(Some(&p1), 10).await.unwrap();
    assert_eq!(
        after.iter().map(|e| e.position.clone()).collect::<Vec<_>>(),
        [p2.clone(), p3.clone()]
    );
    assert_eq!(log.read_after(Some(&p2), 1).await.unwrap().len(), 1);
    assert!(log.read_after(Some(&p3), 10).await.unwrap().is_empty());
    assert!(matches!(
        log.read_after(Some("garbage"), 1).await,
        Err(ReadError::InvalidPosition { .. })
    ));
}

async fn audit_contract(s: &dyn GatewayStores) {
    let rec = |i: u32| AuditRecord {
        at: T0,
        actor: "k".into(),
        action: "isolate".into(),
        tenant: "acme".into(),
        device_id: Some("d".into()),
        detection_key: None,
        isolation_type: Some("Full".into()),
        comment: format!("attempt {i}"),
        outcome: Outcome::Denied,
        code: "PermissionDenied".into(),
        detail: String::new(),
        action_id: None,
    };
    for i in 0..3 {
        s.record(&rec(i)).await.unwrap();
    }
    let recent = s.recent(2).await.unwrap();
    assert_eq!(recent, [rec(2), rec(1)]);
}

async fn counter_contract(s: &dyn GatewayStores) {
    let tenant = format!("t{}", rand::random::<u32>());
    assert!(s.try_take("policy", &tenant, T0, 2).await.unwrap());
    assert!(
        s.try_take("policy", &tenant, T0 + Duration::from_minutes(10), 2)
            .await
            .unwrap()
    );
    assert!(
        !s.try_take("policy", &tenant, T0 + Duration::from_minutes(59), 2)
            .await
            .unwrap()
    );
    assert!(
        s.try_take("policy", "other", T0, 2).await.unwrap(),
        "per tenant"
    );
    assert!(
        s.try_take("policy", &tenant, T0 + Duration::from_minutes(61), 2)
            .await
            .unwrap(),
        "the hour slides"
    );
}

async fn schedule_contract(s: &dyn GatewayStores) {
    let r = |d: &str, at: Timestamp| ScheduledRelease {
        tenant: "acme".into(),
        device_id: d.into(),
        detection_key: "k".into(),
        due: at,
    };
    s.schedule(&r("a", T0)).await.unwrap();
    s.schedule(&r("b", T0 + Duration::from_minutes(5)))
        .await
        .unwrap();
    assert!(
        s.take_due(T0 - Duration::from_seconds(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.take_due(T0, 10).await.unwrap(), [r("a", T0)]);
    assert!(s.take_due(T0, 10).await.unwrap().is_empty(), "taken once");
    assert_eq!(
        s.take_due(T0 + Duration::from_hours(1), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn memory_stores_meet_the_contract() {
    let s = MemoryGatewayStores::new(100, 100);
    event_log_contract(&s).await;
    audit_contract(&s).await;
    counter_contract(&s).await;
    schedule_contract(&s).await;
}

#[tokio::test]
async fn redis_stores_meet_the_contract() {
    let s = redis(100).await;
    event_log_contract(&s).await;
    audit_contract(&s).await;
    counter_contract(&s).await;
    schedule_contract(&s).await;
    s.delete_all().await.unwrap();
}

#[tokio::test]
async fn trimmed_positions_are_reported_not_skipped() {
    let mem = MemoryGatewayStores::new(2, 10);
    let p1 = mem.append("1", b"1").await.unwrap().unwrap();
    for k in ["2", "3", "4"] {
        mem.append(k, b"x").await.unwrap();
    }
    assert!(matches!(
        mem.read_after(Some(&p1), 10).await,
        Err(ReadError::Expired { .. })
    ));
}

#[tokio::test]
async fn redis_tailer_wakes_watchers_for_appends_of_other_replicas() {
    // Two instances on one prefix: two replicas.
    let p = prefix();
    let a = redis_at(&p, 100).await;
    let b = redis_at(&p, 100).await;
    let mut rx = b.subscribe();
    rx.borrow_and_update();
    a.append("x", b"from a").await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.read_after(None, 10).await.unwrap().len(), 1);
    a.delete_all().await.unwrap();
}
