//! Shared by the integration tests: the contracts every implementation must meet, and the
//! Redis plumbing (URL, random prefixes, clean-up).
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::IpAddr;

use culprit_cache::{
    HuntBudget, IdempotencyStore, IpLedger, PutOutcome, RedisStores, ResultFilter, ResultMeta,
    ResultStore, Spend,
};
use culprit_model::{DetectionKey, Duration, SourceKind, Status, Timestamp};

pub const T0: Timestamp = Timestamp::from_unix_seconds(1_700_000_000);

pub fn redis_url() -> String {
    std::env::var("CULPRIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn random_prefix() -> String {
    format!("culprit-test-{:016x}", rand::random::<u64>())
}

/// Connects or fails the test, naming Redis and the URL (these tests never skip).
pub async fn connect(url: &str, prefix: &str) -> RedisStores {
    match RedisStores::connect(url, prefix).await {
        Ok(s) => s,
        Err(e) => panic!("these tests need Redis at {url} (set CULPRIT_TEST_REDIS_URL): {e}"),
    }
}

/// Runs `body` with a fresh key prefix on the shared Redis and deletes the prefix's keys
/// afterwards, even when the body panics.
pub async fn with_prefix<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let prefix = random_prefix();
    let outcome = tokio::spawn(body(prefix.clone())).await;
    let cleaner = connect(&redis_url(), &prefix).await;
    cleaner.delete_all().await.expect("delete the test's keys");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The most grants found in any half-open window of `window` (grants sorted ascending).
pub fn max_in_any_window(grants: &[i64], window: Duration) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..grants.len() {
        while grants[hi] - grants[lo] >= window.0 {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

fn std_ms(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}

/// 45 granted, then a wait that ends exactly when the first call leaves the minute.
pub async fn budget_contract(b: &dyn HuntBudget) {
    let tenant = format!("tenant-{:x}", rand::random::<u32>());
    for i in 0..45 {
        let at = T0 + Duration::from_millis(100 * i);
        assert_eq!(
            b.try_spend(&tenant, at).await.unwrap(),
            Spend::Granted,
            "call {i}"
        );
    }
    let now = T0 + Duration::from_millis(4_500);
    assert_eq!(
        b.try_spend(&tenant, now).await.unwrap(),
        Spend::Wait(std_ms(55_500))
    );
    let left = b.remaining(&tenant, now).await.unwrap();
    assert_eq!((left.per_minute, left.per_hour), (0, 1455));
    let due = T0 + Duration::from_seconds(60);
    assert!(matches!(
        b.try_spend(&tenant, due - Duration::from_millis(1))
            .await
            .unwrap(),
        Spend::Wait(_)
    ));
    assert_eq!(b.try_spend(&tenant, due).await.unwrap(), Spend::Granted);
    assert_eq!(
        b.try_spend(&tenant, due).await.unwrap(),
        Spend::Wait(std_ms(100))
    );
    // Another tenant is untouched.
    assert_eq!(
        b.try_spend("someone-else", due).await.unwrap(),
        Spend::Granted
    );
}

fn meta(tenant: &str, device: &str, status: Status, confidence: f64, at: i64) -> ResultMeta {
    ResultMeta {
        tenant: tenant.into(),
        device_id: Some(device.into()),
        status,
        confidence,
        computed_at: T0 + Duration::from_seconds(at),
    }
}

pub async fn results_contract(store: &dyn ResultStore) {
    let k1 = DetectionKey::new(SourceKind::Vectra, "t1", "d:1", "1");
    let m = meta("t1", "dev-a", Status::Attributed, 0.9, 1);
    assert_eq!(store.put(&k1, b"first", &m).await.unwrap(), PutOutcome::New);
    assert_eq!(
        store.put(&k1, b"first", &m).await.unwrap(),
        PutOutcome::Unchanged
    );
    let m2 = meta("t1", "dev-a", Status::Attributed, 0.95, 2);
    assert_eq!(
        store.put(&k1, b"second", &m2).await.unwrap(),
        PutOutcome::Changed {
            previous: b"first".to_vec()
        }
    );
    assert_eq!(
        store.get(&k1).await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    let missing = DetectionKey::new(SourceKind::Vectra, "t1", "nope", "1");
    assert_eq!(store.get(&missing).await.unwrap(), None);

    // 25 more results over two tenants and two statuses, computed at increasing times.
    for i in 0..25i64 {
        let tenant = if i % 5 == 0 { "t2" } else { "t1" };
        let status = if i % 2 == 0 {
            Status::Attributed
        } else {
            Status::DeviceAmbiguous
        };
        let k = DetectionKey::new(SourceKind::Suricata, tenant, &format!("x{i}"), "0");
        let m = meta(
            tenant,
            &format!("dev-{}", i % 3),
            status,
            i as f64 / 25.0,
            10 + i,
        );
        assert_eq!(
            store.put(&k, format!("r{i}").as_bytes(), &m).await.unwrap(),
            PutOutcome::New
        );
    }

    // Newest first, paged by opaque tokens, no item twice, none missed.
    let all = ResultFilter {
        tenant: Some("t1".into()),
        ..ResultFilter::default()
    };
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store.list(&all, token.as_deref(), 7).await.unwrap();
        assert!(page.items.len() <= 7);
        seen.extend(
            page.items
                .iter()
                .map(|r| (r.meta.computed_at, r.key.clone())),
        );
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen.len(), 21, "20 of the 25 plus the first key are t1's");
    assert!(
        seen.windows(2).all(|w| w[0].0 > w[1].0),
        "newest first: {seen:?}"
    );
    assert_eq!(seen.last().map(|s| &s.1), Some(&k1));

    let narrow = ResultFilter {
        tenant: Some("t1".into()),
        device_id: Some("dev-0".into()),
        status: Some(Status::Attributed),
        min_confidence: Some(0.2),
        since: None,
    };
    let page = store.list(&narrow, None, 100).await.unwrap();
    let got: Vec<String> = page
        .items
        .iter()
        .map(|r| String::from_utf8_lossy(&r.bytes).into())
        .collect();
    // i even, i % 3 == 0, i % 5 != 0, i >= 5: 6, 12, 18, 24 — newest first.
    assert_eq!(got, ["r24", "r18", "r12", "r6"]);
    assert_eq!(page.next_page_token, None);
    assert!(store.list(&all, None, 0).await.is_err());
}

pub async fn idempotency_contract(store: &dyn IdempotencyStore) {
    let ttl = std::time::Duration::from_secs(600);
    let key = format!("k-{:x}", rand::random::<u64>());
    assert!(store.first_seen("ingest", &key, ttl).await.unwrap());
    assert!(!store.first_seen("ingest", &key, ttl).await.unwrap());
    assert!(
        store.first_seen("hunter", &key, ttl).await.unwrap(),
        "scopes are separate"
    );
    // A ':' in the scope must not let it collide with another (scope, key).
    assert!(store.first_seen("ingest:x", "y", ttl).await.unwrap());
    assert!(store.first_seen("ingest", "x:y", ttl).await.unwrap());
    assert!(store.first_seen("", "k", ttl).await.is_err());
    // A claim given back (the work behind it failed) can be taken again, once.
    store.forget("ingest", &key).await.unwrap();
    assert!(store.first_seen("ingest", &key, ttl).await.unwrap());
    assert!(!store.first_seen("ingest", &key, ttl).await.unwrap());
    assert!(
        !store.first_seen("hunter", &key, ttl).await.unwrap(),
        "forgetting one scope leaves the others"
    );
    assert!(
        store
            .first_seen("s", "k", std::time::Duration::ZERO)
            .await
            .is_err()
    );
    // Several keys in one call: answered in order, a repeated key first only once, and the
    // claims are the same as `first_seen`'s.
    let batch: Vec<String> = (0..3)
        .map(|i| format!("b{i}-{:x}", rand::random::<u64>()))
        .collect();
    let mixed = vec![
        batch[0].clone(),
        key.clone(),
        batch[1].clone(),
        batch[0].clone(),
    ];
    assert_eq!(
        store.first_seen_many("ingest", &mixed, ttl).await.unwrap(),
        [true, false, true, false]
    );
    assert!(!store.first_seen("ingest", &batch[1], ttl).await.unwrap());
    assert!(store.first_seen("ingest", &batch[2], ttl).await.unwrap());
    assert!(
        store
            .first_seen_many("ingest", &[], ttl)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .first_seen_many("ingest", &[String::new()], ttl)
            .await
            .is_err(),
        "an empty key is refused"
    );
    // `seen` looks without claiming.
    let fresh = format!("seen-{:x}", rand::random::<u64>());
    assert!(!store.seen("hunter", &fresh).await.unwrap());
    assert!(
        !store.seen("hunter", &fresh).await.unwrap(),
        "looking claims nothing"
    );
    assert!(store.first_seen("hunter", &fresh, ttl).await.unwrap());
    assert!(store.seen("hunter", &fresh).await.unwrap());
    assert!(
        !store.seen("ingest", &fresh).await.unwrap(),
        "scopes are separate"
    );
    store.forget("hunter", &fresh).await.unwrap();
    assert!(!store.seen("hunter", &fresh).await.unwrap());
    assert!(store.seen("", "k").await.is_err());
}

/// A hold (the hunting API's `Retry-After`) stops every grant for the tenant until it ends;
/// a shorter hold never shortens a longer one; other tenants are untouched.
pub async fn hold_contract(b: &dyn HuntBudget) {
    let tenant = format!("held-{:x}", rand::random::<u32>());
    let other = format!("free-{:x}", rand::random::<u32>());
    assert_eq!(b.try_spend(&tenant, T0).await.unwrap(), Spend::Granted);
    b.hold(&tenant, T0 + Duration::from_seconds(30))
        .await
        .unwrap();
    b.hold(&tenant, T0 + Duration::from_seconds(10))
        .await
        .unwrap();
    let now = T0 + Duration::from_seconds(1);
    assert_eq!(
        b.try_spend(&tenant, now).await.unwrap(),
        Spend::Wait(std_ms(29_000))
    );
    assert_eq!(b.try_spend(&other, now).await.unwrap(), Spend::Granted);
    let end = T0 + Duration::from_seconds(30);
    assert_eq!(b.try_spend(&tenant, end).await.unwrap(), Spend::Granted);
    // The refused tries did not count: one call before the hold, one after.
    let left = b.remaining(&tenant, end).await.unwrap();
    assert_eq!(left.per_minute, 43);
    assert!(b.hold("", end).await.is_err());
}

pub async fn ledger_contract(ledger: &dyn IpLedger) {
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
    let at = |s: i64| T0 + Duration::from_seconds(s);
    ledger
        .record("t", ip, "dev-a", at(0), at(100))
        .await
        .unwrap();
    ledger
        .record("t", mapped, "dev-b", at(200), at(300))
        .await
        .unwrap();
    ledger
        .record("other", ip, "dev-z", at(0), at(1000))
        .await
        .unwrap();

    assert_eq!(ledger.lookup("t", ip, at(50)).await.unwrap(), ["dev-a"]);
    assert_eq!(
        ledger.lookup("t", ip, at(100)).await.unwrap(),
        ["dev-a"],
        "until is inclusive"
    );
    assert!(ledger.lookup("t", ip, at(150)).await.unwrap().is_empty());
    assert_eq!(
        ledger.lookup("t", mapped, at(250)).await.unwrap(),
        ["dev-b"]
    );
    // A window spanning both leases is ambiguous: both devices, sorted.
    assert_eq!(
        ledger
            .lookup_window("t", ip, at(90), at(210))
            .await
            .unwrap(),
        ["dev-a", "dev-b"]
    );
    let v6: IpAddr = "fe80::1".parse().unwrap();
    ledger
        .record("t", v6, "dev|pipe", at(0), at(10))
        .await
        .unwrap();
    assert_eq!(ledger.lookup("t", v6, at(5)).await.unwrap(), ["dev|pipe"]);
    assert!(
        ledger
            .record("t", ip, "dev-a", at(10), at(5))
            .await
            .is_err()
    );
}
