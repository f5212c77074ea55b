#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The poller over real HTTP against the Vectra stand-in (`culprit twin serve
//! --vectra-listen`), with checkpoints in memory and on the local Redis.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use culprit_cache::{BoxFuture, CheckpointStore, MemoryCheckpoints, RedisStores};
use culprit_mde_twin::{ManualClock, VectraTwin, VectraTwinConfig, VectraTwinHandle};
use culprit_model::Timestamp;
use culprit_runtime::Shutdown;
use culprit_vectra_poller::{
    DetectionSink, PollMode, Poller, PollerConfig, PollerError, SinkError, SteppedClock, VectraAuth,
};
use secrecy::SecretString;
use serde_json::Value;

const ID: &str = "vectra-client";
const SECRET: &str = "vectra-secret-value";
const API_TOKEN: &str = "v2-api-token-value";

fn scenario() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/lsass_01")
}

fn scenario_detections() -> Vec<Value> {
    let text = std::fs::read(scenario().join("ndr/vectra_detections.json")).unwrap();
    let doc: Value = serde_json::from_slice(&text).unwrap();
    doc["results"].as_array().unwrap().clone()
}

fn scenario_ids() -> Vec<u64> {
    let mut ids: Vec<u64> = scenario_detections()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// The stand-in and a poller clock that moves the stand-in's clock in step.
struct Rig {
    twin: VectraTwinHandle,
    clock: Arc<SteppedClock>,
}

async fn rig(config: VectraTwinConfig) -> Rig {
    let twin_clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(
        1_700_000_000,
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let twin = VectraTwin::start(config, listener, Some(twin_clock.clone()))
        .await
        .unwrap();
    let tc = twin_clock.clone();
    let clock = Arc::new(SteppedClock::with_hook(move |d| {
        tc.advance(culprit_model::Duration::from_std(d));
    }));
    Rig { twin, clock }
}

fn standin() -> VectraTwinConfig {
    VectraTwinConfig::single_client(ID, SECRET, API_TOKEN, vec![scenario()])
}

fn oauth() -> VectraAuth {
    VectraAuth::OAuth {
        client_id: ID.into(),
        client_secret: SecretString::from(SECRET),
    }
}

fn poller_config(r: &Rig, name: &str, auth: VectraAuth, mode: PollMode) -> PollerConfig {
    let mut c = PollerConfig::new(
        name,
        "tenant-a",
        r.twin.base_url().parse().unwrap(),
        auth,
        mode,
    );
    c.page_size = 1;
    c
}

/// Records every batch; fails the batches whose (1-based) number is listed.
#[derive(Debug, Default)]
struct Sink {
    batches: Mutex<Vec<Vec<Value>>>,
    calls: AtomicUsize,
    fail_calls: Vec<usize>,
    fail_always: bool,
    /// Fires after this many accepted batches.
    stop_after: Option<(usize, Shutdown)>,
}

impl Sink {
    fn per_id(&self) -> BTreeMap<u64, usize> {
        let mut m = BTreeMap::new();
        for b in self.batches.lock().unwrap().iter() {
            for d in b {
                *m.entry(d["id"].as_u64().unwrap()).or_default() += 1;
            }
        }
        m
    }
}

impl DetectionSink for Sink {
    fn submit<'a>(&'a self, raw: Vec<Value>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail_always || self.fail_calls.contains(&n) {
                return Err(SinkError::new("broker unavailable"));
            }
            let mut batches = self.batches.lock().unwrap();
            batches.push(raw);
            if let Some((after, sd)) = &self.stop_after
                && batches.len() == *after
            {
                sd.trigger();
            }
            Ok(())
        })
    }
}

/// Every scenario detection exactly once.
fn expected() -> BTreeMap<u64, usize> {
    scenario_ids().into_iter().map(|id| (id, 1)).collect()
}

#[tokio::test]
async fn oauth_and_paging_hand_off_every_detection_exactly_once() {
    let r = rig(standin()).await;
    let sink = Arc::new(Sink::default());
    let store = Arc::new(MemoryCheckpoints::new());
    let cfg = poller_config(&r, "rux", oauth(), PollMode::Detections);
    let poller = Poller::with_clock(cfg, sink.clone(), store.clone(), r.clock.clone()).unwrap();

    let n = poller.poll_once().await.unwrap();
    assert_eq!(n, 3);
    assert_eq!(sink.per_id(), expected());
    // Whole detection objects, as the file holds them.
    let first = sink.batches.lock().unwrap()[0][0].clone();
    assert!(first["grouped_details"].is_array() && first["src_host"].is_object());
    let c = r.twin.counts();
    assert_eq!(c.tokens_issued, 1, "one token for the whole pass");
    assert_eq!(
        c.detection_list_calls, 3,
        "page_size 1: three pages by next"
    );
    // The checkpoint is the newest last_timestamp handed off.
    let newest = scenario_detections()
        .iter()
        .map(|d| d["last_timestamp"].as_str().unwrap().to_owned())
        .max()
        .unwrap();
    assert_eq!(
        store.load("vectra:rux").await.unwrap(),
        Some(newest.clone())
    );

    // The next pass starts at the checkpoint: only the detections stamped exactly then again.
    let again = poller.poll_once().await.unwrap();
    let at_newest = scenario_detections()
        .iter()
        .filter(|d| d["last_timestamp"] == newest.as_str())
        .count() as u64;
    assert_eq!(again, at_newest);
    assert_eq!(r.twin.counts().tokens_issued, 1, "the token is reused");
    r.twin.shutdown().await;
}

#[tokio::test]
async fn a_v2_token_is_sent_as_is_and_a_wrong_one_fails_without_showing_it() {
    let r = rig(standin()).await;
    let sink = Arc::new(Sink::default());
    let store = Arc::new(MemoryCheckpoints::new());
    let mut cfg = poller_config(
        &r,
        "brain",
        VectraAuth::Token(SecretString::from(API_TOKEN)),
        PollMode::Detections,
    );
    cfg.api_version = "v2.5".into();
    let poller = Poller::with_clock(cfg, sink.clone(), store.clone(), r.clock.clone()).unwrap();
    assert_eq!(poller.poll_once().await.unwrap(), 3);
    assert_eq!(r.twin.counts().tokens_issued, 0);

    let wrong = "wrong-token-9f8e7d";
    let cfg = poller_config(
        &r,
        "brain2",
        VectraAuth::Token(SecretString::from(wrong)),
        PollMode::Detections,
    );
    assert!(!format!("{cfg:?}").contains(wrong), "Debug hides the token");
    let poller = Poller::with_clock(cfg, sink.clone(), store.clone(), r.clock.clone()).unwrap();
    let err = poller.poll_once().await.unwrap_err();
    assert!(matches!(err, PollerError::Auth { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("401") && !text.contains(wrong), "{text}");
    assert_eq!(store.load("vectra:brain2").await.unwrap(), None);

    let bad_secret = "not-the-secret-5a4b";
    let cfg = poller_config(
        &r,
        "rux2",
        VectraAuth::OAuth {
            client_id: ID.into(),
            client_secret: SecretString::from(bad_secret),
        },
        PollMode::Events,
    );
    assert!(!format!("{cfg:?}").contains(bad_secret));
    let poller = Poller::with_clock(cfg, sink.clone(), store, r.clock.clone()).unwrap();
    let err = poller.poll_once().await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, PollerError::Auth { .. })
            && text.contains("oauth2/token")
            && !text.contains(bad_secret),
        "{text}"
    );
    r.twin.shutdown().await;
}

#[tokio::test]
async fn the_token_is_renewed_before_it_expires_and_once_on_a_401() {
    let r = rig(VectraTwinConfig {
        token_lifetime_secs: 600,
        ..standin()
    })
    .await;
    let sink = Arc::new(Sink::default());
    let store = Arc::new(MemoryCheckpoints::new());
    let cfg = poller_config(&r, "rux", oauth(), PollMode::Events);
    let poller = Poller::with_clock(cfg, sink.clone(), store, r.clock.clone()).unwrap();
    assert_eq!(poller.poll_once().await.unwrap(), 3);
    assert_eq!(r.twin.counts().tokens_issued, 1);

    // Inside the renewal margin (a tenth of 600 s) but before expiry: renewed by the refresh
    // token before the call, so the API never sees a stale token.
    r.clock.advance(Duration::from_secs(545));
    assert_eq!(poller.poll_once().await.unwrap(), 0);
    let c = r.twin.counts();
    assert_eq!(
        (c.tokens_issued, c.tokens_refreshed, c.unauthorized),
        (1, 1, 0)
    );

    // Well before expiry: reused.
    r.clock.advance(Duration::from_secs(60));
    poller.poll_once().await.unwrap();
    assert_eq!(r.twin.counts().tokens_refreshed, 1);

    // The server forgets its tokens: one 401, one new token, the call repeated.
    r.twin.revoke_access_tokens();
    assert_eq!(poller.poll_once().await.unwrap(), 0);
    let c = r.twin.counts();
    assert_eq!(c.unauthorized, 1);
    assert_eq!(c.tokens_issued + c.tokens_refreshed, 3);
    assert_eq!(sink.per_id(), expected());
    r.twin.shutdown().await;
}

#[tokio::test]
async fn a_429_waits_its_retry_after_and_the_pass_completes() {
    let r = rig(VectraTwinConfig {
        throttle_every: 2,
        retry_after_secs: 7,
        ..standin()
    })
    .await;
    let sink = Arc::new(Sink::default());
    let cfg = poller_config(&r, "rux", oauth(), PollMode::Events);
    let poller = Poller::with_clock(
        cfg,
        sink.clone(),
        Arc::new(MemoryCheckpoints::new()),
        r.clock.clone(),
    )
    .unwrap();
    assert_eq!(poller.poll_once().await.unwrap(), 3);
    assert_eq!(sink.per_id(), expected());
    let throttled = r.twin.counts().throttled;
    assert!(throttled >= 3, "the schedule throttled {throttled} calls");
    let sleeps = r.clock.sleeps();
    assert_eq!(
        sleeps.len() as u64,
        throttled,
        "one wait per 429: {sleeps:?}"
    );
    assert!(
        sleeps.iter().all(|d| *d == Duration::from_secs(7)),
        "{sleeps:?}"
    );
    r.twin.shutdown().await;
}

#[tokio::test]
async fn server_errors_back_off_with_jitter_and_the_pass_completes() {
    let r = rig(VectraTwinConfig {
        error_every: 2,
        ..standin()
    })
    .await;
    let sink = Arc::new(Sink::default());
    let mut cfg = poller_config(&r, "rux", oauth(), PollMode::Detections);
    cfg.backoff_base = Duration::from_millis(200);
    cfg.backoff_cap = Duration::from_secs(5);
    let poller = Poller::with_clock(
        cfg,
        sink.clone(),
        Arc::new(MemoryCheckpoints::new()),
        r.clock.clone(),
    )
    .unwrap();
    assert_eq!(poller.poll_once().await.unwrap(), 3);
    assert_eq!(sink.per_id(), expected());
    let errors = r.twin.counts().server_errors;
    assert!(errors >= 2, "{errors}");
    let sleeps = r.clock.sleeps();
    assert_eq!(
        sleeps.len() as u64,
        errors,
        "one backoff per 503: {sleeps:?}"
    );
    // Every 503 is followed by a success here, so each backoff is the first: at most the base.
    assert!(
        sleeps.iter().all(|d| *d <= Duration::from_millis(200)),
        "{sleeps:?}"
    );
    r.twin.shutdown().await;
}

fn redis_url() -> String {
    std::env::var("CULPRIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn redis(prefix: &str) -> RedisStores {
    let url = redis_url();
    match RedisStores::connect(&url, prefix).await {
        Ok(s) => s,
        Err(e) => panic!("this test needs Redis at {url} (set CULPRIT_TEST_REDIS_URL): {e}"),
    }
}

#[tokio::test]
async fn a_restarted_poller_resumes_from_the_redis_checkpoint_without_resubmitting() {
    let prefix = format!("culprit-test-{:016x}", rand_u64());
    let r = rig(standin()).await;

    // First poller: stopped by shutdown after its first confirmed batch.
    let shutdown = Shutdown::new();
    let first_sink = Arc::new(Sink {
        stop_after: Some((1, shutdown.clone())),
        ..Sink::default()
    });
    let store = Arc::new(redis(&prefix).await);
    let cfg = poller_config(&r, "rux", oauth(), PollMode::Events);
    let first =
        Poller::with_clock(cfg, first_sink.clone(), store.clone(), r.clock.clone()).unwrap();
    first.run(shutdown).await;
    assert_eq!(first_sink.batches.lock().unwrap().len(), 1);
    let saved = store.load("vectra:rux").await.unwrap();
    assert_eq!(
        saved.as_deref(),
        Some("2"),
        "event 1 handed off, resume at 2"
    );

    // A new process: new connection, new poller, same source name.
    let store2 = Arc::new(redis(&prefix).await);
    let second_sink = Arc::new(Sink::default());
    let cfg = poller_config(&r, "rux", oauth(), PollMode::Events);
    let second =
        Poller::with_clock(cfg, second_sink.clone(), store2.clone(), r.clock.clone()).unwrap();
    assert_eq!(second.poll_once().await.unwrap(), 2);
    let mut per_id = first_sink.per_id();
    for (id, n) in second_sink.per_id() {
        *per_id.entry(id).or_default() += n;
    }
    assert_eq!(
        per_id,
        expected(),
        "every detection once across the restart"
    );
    assert_eq!(
        store2.load("vectra:rux").await.unwrap().as_deref(),
        Some("4")
    );
    // Nothing new: nothing handed off, no event re-read past the checkpoint.
    assert_eq!(second.poll_once().await.unwrap(), 0);
    store2.delete_all().await.unwrap();
    r.twin.shutdown().await;
}

#[tokio::test]
async fn a_failing_sink_leaves_the_checkpoint_where_it_was() {
    let r = rig(standin()).await;
    let store = Arc::new(MemoryCheckpoints::new());

    let down = Arc::new(Sink {
        fail_always: true,
        ..Sink::default()
    });
    let cfg = poller_config(&r, "rux", oauth(), PollMode::Events);
    let poller =
        Poller::with_clock(cfg.clone(), down.clone(), store.clone(), r.clock.clone()).unwrap();
    let err = poller.poll_once().await.unwrap_err();
    assert!(matches!(err, PollerError::Sink(_)), "{err}");
    assert_eq!(store.load("vectra:rux").await.unwrap(), None);

    // The second batch fails: the checkpoint stays after the first.
    let flaky = Arc::new(Sink {
        fail_calls: vec![2],
        ..Sink::default()
    });
    let poller =
        Poller::with_clock(cfg.clone(), flaky.clone(), store.clone(), r.clock.clone()).unwrap();
    assert!(matches!(
        poller.poll_once().await,
        Err(PollerError::Sink(_))
    ));
    assert_eq!(
        store.load("vectra:rux").await.unwrap().as_deref(),
        Some("2")
    );
    // The retry hands off the failed batch and the rest; nothing before it again.
    assert_eq!(poller.poll_once().await.unwrap(), 2);
    assert_eq!(flaky.per_id(), expected());
    assert_eq!(
        store.load("vectra:rux").await.unwrap().as_deref(),
        Some("4")
    );
    r.twin.shutdown().await;
}

#[tokio::test]
async fn the_run_loop_retries_a_failed_batch_after_a_backoff() {
    let r = rig(standin()).await;
    let shutdown = Shutdown::new();
    let sink = Arc::new(Sink {
        fail_calls: vec![1, 2],
        stop_after: Some((3, shutdown.clone())),
        ..Sink::default()
    });
    let mut cfg = poller_config(&r, "rux", oauth(), PollMode::Events);
    cfg.backoff_base = Duration::from_secs(1);
    cfg.backoff_cap = Duration::from_secs(30);
    let poller = Poller::with_clock(
        cfg,
        sink.clone(),
        Arc::new(MemoryCheckpoints::new()),
        r.clock.clone(),
    )
    .unwrap();
    poller.run(shutdown).await;
    assert_eq!(sink.per_id(), expected());
    // Two failed passes, two backoffs (jittered, under a doubling ceiling).
    let sleeps = r.clock.sleeps();
    assert_eq!(sleeps.len(), 2, "{sleeps:?}");
    assert!(
        sleeps[0] <= Duration::from_secs(1) && sleeps[1] <= Duration::from_secs(2),
        "{sleeps:?}"
    );
    r.twin.shutdown().await;
}

#[test]
fn bad_settings_are_refused_by_field() {
    let base: url::Url = "https://tenant.portal.vectra.ai".parse().unwrap();
    let sink: Arc<dyn DetectionSink> = Arc::new(Sink::default());
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpoints::new());
    let check = |f: &dyn Fn(&mut PollerConfig), field: &str| {
        let mut c = PollerConfig::new("s", "t", base.clone(), oauth(), PollMode::Events);
        f(&mut c);
        let err = Poller::new(c, sink.clone(), store.clone()).unwrap_err();
        assert!(matches!(err, PollerError::Config { .. }), "{err}");
        assert!(err.to_string().contains(field), "{err} should name {field}");
    };
    check(&|c| c.page_size = 0, "page_size");
    check(&|c| c.api_version = "3.3".into(), "api_version");
    check(&|c| c.base_url = "ftp://x".parse().unwrap(), "url");
    check(&|c| c.base_url = "https://u:p@x".parse().unwrap(), "url");
    check(
        &|c| c.start_checkpoint = Some("yesterday".into()),
        "start_checkpoint",
    );
    check(
        &|c| c.ca_file = Some("/nonexistent/ca.pem".into()),
        "ca_file",
    );
    check(&|c| c.name = " ".into(), "name");
}

fn rand_u64() -> u64 {
    // Random enough for a key prefix without another dependency.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

#[tokio::test]
#[ignore = "needs ../shared/scenarios beside the clone; .ci/run runs it with --ignored"]
async fn every_shared_scenario_is_handed_off_once_by_both_modes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/scenarios");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("ndr/vectra_detections.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no scenario with ndr/vectra_detections.json"
    );
    for dir in dirs {
        let text = std::fs::read(dir.join("ndr/vectra_detections.json")).unwrap();
        let doc: Value = serde_json::from_slice(&text).unwrap();
        let items = doc.get("results").unwrap_or(&doc);
        let want: BTreeMap<u64, usize> = items
            .as_array()
            .map(|a| a.iter().map(|d| (d["id"].as_u64().unwrap(), 1)).collect())
            .unwrap_or_else(|| [(doc["id"].as_u64().unwrap(), 1)].into());
        for mode in [PollMode::Events, PollMode::Detections] {
            let r = rig(VectraTwinConfig::single_client(
                ID,
                SECRET,
                API_TOKEN,
                vec![dir.clone()],
            ))
            .await;
            let sink = Arc::new(Sink::default());
            let mut cfg = poller_config(&r, "shared", oauth(), mode);
            cfg.page_size = 2;
            let poller = Poller::with_clock(
                cfg,
                sink.clone(),
                Arc::new(MemoryCheckpoints::new()),
                r.clock.clone(),
            )
            .unwrap();
            poller.poll_once().await.unwrap();
            assert_eq!(sink.per_id(), want, "{} {mode:?}", dir.display());
            r.twin.shutdown().await;
        }
    }
}
