//! The 1,000-detection run of `pipeline_scale.rs` (a sensor posting to the ingest role's
//! webhook, two hunters, a correlator), each time with one fault: RabbitMQ restarted mid-run,
//! Redis restarted mid-run (in both, half the detections are posted during the outage), one
//! hunter SIGKILLed mid-batch, the twin answering a 429 storm and 5xx on 5% of calls. Nothing
//! is lost, nothing is stored twice, the twin's counts show the quotas never exceeded, and no
//! detection gets two `NewResult` events, except across the broker restart, where a repeat
//! (saying the same) is allowed: a confirm lost with the connection makes the correlator
//! publish again rather than risk losing the event. The tests run one at a time (they restart shared services) and each restores
//! what it changed, even when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test failure report

mod support;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use culprit::serve::Role;
use culprit_mde_twin::{FaultConfig, ThrottleStorm};
use support::{Events, OwnRedis, RUN_LIMIT, Run};
use tokio::time::Instant;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Detections answered before the fault strikes: the rest are in the queues or in flight.
const BEFORE_FAULT: usize = 250;
/// How long a restarted service stays away.
const OUTAGE: Duration = Duration::from_secs(3);

fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts the RabbitMQ application again however the test ends.
struct RabbitRestore;

impl Drop for RabbitRestore {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    }
}

const DLX_CONFIRM_TIMEOUT: &str = "dead_letter_worker_publisher_confirm_timeout";

/// Sets the broker's at-least-once dead-letter re-send timeout for the test, as
/// `deploy/rabbitmq/advanced.config` does (RabbitMQ's 180 s default holds expired retries that
/// long after a restart), and puts the broker's own value back however the test ends.
struct DlxTimeout(String);

impl DlxTimeout {
    fn set(ms: u64) -> DlxTimeout {
        let out = Command::new("rabbitmqctl")
            .args([
                "eval",
                &format!("{{ok, V}} = application:get_env(rabbit, {DLX_CONFIRM_TIMEOUT}), V."),
            ])
            .output()
            .expect("rabbitmqctl eval");
        let previous = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success() && previous.parse::<u64>().is_ok(),
            "reading {DLX_CONFIRM_TIMEOUT}: {previous}"
        );
        assert!(
            set_dlx_timeout(&ms.to_string()),
            "setting {DLX_CONFIRM_TIMEOUT}"
        );
        DlxTimeout(previous)
    }
}

impl Drop for DlxTimeout {
    fn drop(&mut self) {
        set_dlx_timeout(&self.0);
    }
}

fn set_dlx_timeout(ms: &str) -> bool {
    rabbitmqctl(&[
        "eval",
        &format!("application:set_env(rabbit, {DLX_CONFIRM_TIMEOUT}, {ms})."),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_mid_run_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    let deadline = Instant::now() + RUN_LIMIT;
    let mut run = Run::new(20, 50, FaultConfig::default(), |_| {}).await;
    // The one fault that can take a publish's confirm with it (see `Events`).
    run.events = Events::RepeatsAllowed;
    let services = run.start_services();
    let half = run.tenant.work.len() / 2;
    let first = run.publish_range(0..half);
    run.wait_results(BEFORE_FAULT, deadline).await;
    first.await.unwrap();
    let rest;
    // Read when the queues' dead-letter workers start, so in force after the restart.
    let _dlx = DlxTimeout::set(5_000);
    {
        let _restore = RabbitRestore;
        assert!(rabbitmqctl(&["stop_app"]), "rabbitmqctl stop_app");
        // The second half arrives while the broker is away: ingest cannot get a confirm
        // within its timeout and answers 503; the sensor sends again.
        rest = run.publish_range(half..run.tenant.work.len());
        tokio::time::sleep(OUTAGE).await;
        assert!(rabbitmqctl(&["start_app"]), "rabbitmqctl start_app");
        assert!(rabbitmqctl(&["await_startup"]), "RabbitMQ came back");
    }
    rest.await.unwrap();
    let retried = run.sender.stats.retried.load(Ordering::Relaxed);
    assert!(retried > 0, "no POST met the outage (none answered 503)");
    run.finish(services, deadline, false).await;
    run.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    let deadline = Instant::now() + RUN_LIMIT;
    // The shared Redis must not restart under other tests: this run has its own, with
    // append-only persistence, and the services' stores point at it.
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let mut run = Run::new(20, 50, FaultConfig::default(), |p| p.redis_url = url).await;
    let services = run.start_services();
    let half = run.tenant.work.len() / 2;
    let first = run.publish_range(0..half);
    run.wait_results(BEFORE_FAULT, deadline).await;
    first.await.unwrap();
    redis.kill();
    // The second half arrives while Redis (ingest's dedup store) is away.
    let rest = run.publish_range(half..run.tenant.work.len());
    tokio::time::sleep(OUTAGE).await;
    redis.restart().await;
    rest.await.unwrap();
    run.finish(services, deadline, false).await;
    run.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hunter_sigkilled_mid_batch_leaves_its_work_to_the_other() {
    let _serial = SERIAL.lock().await;
    let deadline = Instant::now() + RUN_LIMIT;
    let mut run = Run::new(20, 50, FaultConfig::default(), |_| {}).await;
    let logs = run.dir.path().to_owned();
    let mut doomed = support::spawn_role(&run.config, "hunter", &logs);
    let survivor = support::spawn_role(&run.config, "hunter", &logs);
    let correlator = support::start_role(&run.config, Role::Correlator);
    let publisher = run.publish_all();
    run.wait_results(BEFORE_FAULT, deadline).await;
    let unacked = unacked_hunt(&run.prefix);
    doomed.kill9();
    eprintln!(
        "SIGKILLed hunter {} with {unacked:?} hunt deliveries unacknowledged",
        doomed.pid()
    );
    publisher.await.unwrap();
    run.finish(vec![correlator], deadline, false).await;
    let status = survivor.terminate(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "the surviving hunter exits 0 on SIGTERM: {status}"
    );
    run.cleanup().await;
}

/// Unacknowledged deliveries on the hunt queue, from the broker.
fn unacked_hunt(prefix: &str) -> Option<u64> {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next()? == format!("{prefix}.hunt"))
            .then(|| cols.next()?.parse().ok())
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_storm_and_five_percent_5xx_lose_nothing_and_keep_the_quota() {
    let _serial = SERIAL.lock().await;
    let deadline = Instant::now() + RUN_LIMIT;
    let faults = FaultConfig {
        seed: 0x5eed,
        error_rate_5xx: 0.05,
        // Twelve hunting calls in a row answered 429 regardless of the quota, each asking
        // for 20 twin seconds (one real second).
        throttle_storm: Some(ThrottleStorm {
            after_calls: 8,
            calls: 12,
            retry_after_secs: 20,
        }),
        ..FaultConfig::default()
    };
    let mut run = Run::new(20, 50, faults, |_| {}).await;
    let services = run.start_services();
    let publisher = run.publish_all();
    publisher.await.unwrap();
    run.finish(services, deadline, false).await;
    run.cleanup().await;
}
