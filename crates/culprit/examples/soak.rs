//! Soak benchmark (not run in CI): the distributed pipeline against the twin at the real
//! Advanced Hunting quota (45 calls a minute, 1,500 an hour), a tenant of 1,000 synthetic
//! devices, and detections offered at a steady rate for `--minutes`. Hunters and the
//! correlator run as separate `culprit serve --role …` processes on the local RabbitMQ and
//! Redis (random prefix).
//!
//! ```text
//! cargo build --release -p culprit --bin culprit --example soak
//! target/release/examples/soak --minutes 10
//! ```
//!
//! Prints: detections attributed per hunting call (re-query calls included), p50/p95 time from
//! publishing a detection to its stored result (the `NewResult` event, published after the
//! store), the largest hunt and correlate queue depths, losses, re-queries, and the resident
//! memory (VmRSS) of every service process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the benchmark's failure report

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use culprit_bus::{BusInspector, Publisher, QueueName, Subscriber, Topic};
use culprit_cache::ResultStore as _;
use culprit_mde_twin::FaultConfig;
use culprit_model::{DetectionKey, Status};
use culprit_proto::v1 as pb;
use prost::Message as _;
use tokio::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    /// How long detections are offered.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Detections offered per minute, evenly spaced.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Synthetic devices in the tenant (copies of the bundled lsass_01 workstation).
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    #[arg(long, default_value_t = 2)]
    hunters: usize,
    /// hunter.batch_window_ms
    #[arg(long, default_value_t = 2000)]
    batch_window_ms: u64,
    /// hunter.max_batch
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
    /// bus.prefetch (a batch cannot exceed it)
    #[arg(long, default_value_t = 500)]
    prefetch: u16,
    /// hunter.requery_after_secs
    #[arg(long, value_delimiter = ',', default_value = "300,900")]
    requery_secs: Vec<f64>,
    /// After the offered period, how long to wait for the last first answers.
    #[arg(long, default_value_t = 180)]
    drain_secs: u64,
}

#[derive(Debug, Default, Clone)]
struct Tally {
    sent: HashMap<DetectionKey, Instant>,
    latencies: Vec<Duration>,
    answered: BTreeMap<DetectionKey, Status>,
    duplicates: usize,
    changed: usize,
    first_bundles: usize,
    requery_bundles: usize,
    max_hunt_depth: u64,
    max_correlate_depth: u64,
    rss_kb: BTreeMap<String, u64>,
}

fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let total = (f64::from(args.rate) * args.minutes).round() as usize;
    let per_device = total.div_ceil(args.devices).max(1);
    eprintln!(
        "soak: {} devices, {total} detections at {}/min over {} min",
        args.devices, args.rate, args.minutes
    );
    let started = Instant::now();
    let tenant = support::synthetic_tenant(args.devices, per_device);
    // Device-major order spread over time: consecutive detections come from different devices.
    let mut order: Vec<usize> = (0..tenant.work.len()).collect();
    order.sort_by_key(|&i| (i % per_device, i / per_device));
    let work: Vec<_> = order
        .into_iter()
        .take(total)
        .map(|i| tenant.work[i].detection.clone())
        .collect();
    let twin = support::start_twin(tenant.dir.path(), 1.0, FaultConfig::default()).await;
    eprintln!(
        "soak: tenant written and loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let prefix = support::prefix();
    let mut plan = support::Plan::new(&prefix);
    plan.batch_window_ms = args.batch_window_ms;
    plan.max_batch = args.max_batch;
    plan.prefetch = args.prefetch;
    plan.requery_after_secs = args.requery_secs.clone();
    plan.budget_scale = 1.0;
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &twin, &plan);
    let bus = Arc::new(support::connect_bus(&prefix).await);
    let results = support::result_store(&plan.redis_url, &prefix).await;

    let watch_q = QueueName::Custom("watch".into());
    bus.bind(watch_q.clone(), Topic::Correlations)
        .await
        .unwrap();
    let bundles_q = QueueName::Custom("soak-bundles".into());
    bus.bind(bundles_q.clone(), Topic::Telemetry).await.unwrap();

    let mut services = Vec::new();
    for _ in 0..args.hunters {
        services.push(("hunter", support::spawn_role(&config, "hunter", dir.path())));
    }
    services.push((
        "correlator",
        support::spawn_role(&config, "correlator", dir.path()),
    ));
    let pids: Vec<(String, u32)> = services
        .iter()
        .enumerate()
        .map(|(i, (role, s))| (format!("{role}-{i}"), s.pid()))
        .collect();

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = culprit_runtime::Shutdown::new();

    // Results, as a SOAR integration sees them.
    {
        let mut consumer = bus.subscribe(watch_q, 512).await.unwrap();
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Some(d) = consumer.next().await {
                let at = Instant::now();
                let key = DetectionKey(d.message.message_id.clone());
                if let Ok(ev) = pb::CorrelationEvent::decode(d.message.payload.as_slice()) {
                    let mut t = lock(&tally);
                    match ev.kind {
                        Some(pb::correlation_event::Kind::NewResult(r)) => {
                            let status = r
                                .correlation
                                .and_then(|c| culprit_model::Correlation::try_from(c).ok())
                                .map(|c| c.status)
                                .unwrap_or(Status::HuntFailed);
                            if t.answered.insert(key.clone(), status).is_some() {
                                t.duplicates += 1;
                            } else if let Some(sent) = t.sent.get(&key).copied() {
                                t.latencies.push(at - sent);
                            }
                        }
                        Some(pb::correlation_event::Kind::AttributionChanged(_)) => t.changed += 1,
                        None => {}
                    }
                }
                let _ = d.ack().await;
            }
        });
    }
    // Telemetry bundles: first hunts and re-queries.
    {
        let mut consumer = bus.subscribe(bundles_q, 512).await.unwrap();
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Some(d) = consumer.next().await {
                if let Ok(b) = pb::TelemetryBundle::decode(d.message.payload.as_slice()) {
                    let mut t = lock(&tally);
                    if b.requery == 0 {
                        t.first_bundles += 1;
                    } else {
                        t.requery_bundles += 1;
                    }
                }
                let _ = d.ack().await;
            }
        });
    }
    // Queue depths and resident memory, once a second.
    {
        let tally = tally.clone();
        let bus = bus.clone();
        let pids = pids.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.triggered() => break,
                    _ = tick.tick() => {}
                }
                let hunt = bus.queue_depth(QueueName::Hunt).await.unwrap_or(0);
                let correlate = bus.queue_depth(QueueName::Correlate).await.unwrap_or(0);
                let mut t = lock(&tally);
                t.max_hunt_depth = t.max_hunt_depth.max(hunt);
                t.max_correlate_depth = t.max_correlate_depth.max(correlate);
                for (name, pid) in &pids {
                    if let Some(kb) = vm_rss_kb(*pid) {
                        let e = t.rss_kb.entry(name.clone()).or_default();
                        *e = (*e).max(kb);
                    }
                }
            }
        });
    }

    // Offer the detections at the rate, each stamped when handed to the bus.
    let spacing = Duration::from_secs_f64(60.0 / f64::from(args.rate));
    let offer_start = Instant::now();
    let mut late = 0usize;
    for (i, d) in work.iter().enumerate() {
        let due = offer_start + spacing * u32::try_from(i).unwrap();
        if Instant::now() > due + Duration::from_secs(1) {
            late += 1;
        }
        tokio::time::sleep_until(due).await;
        lock(&tally).sent.insert(d.key(), Instant::now());
        let payload = pb::Detection::from(d).encode_to_vec();
        let msg = culprit_bus::Message::new(d.key().as_str(), payload).with_header(
            culprit_bus::HEADER_SCHEMA_VERSION,
            culprit_hunter::service::DETECTION_SCHEMA,
        );
        bus.publish(Topic::Detections, msg).await.unwrap();
        if i > 0 && i % usize::try_from(args.rate).unwrap() == 0 {
            let t = lock(&tally);
            eprintln!(
                "soak: {:>4.1} min: offered {i}, answered {}, hunt depth max {}, calls {}",
                offer_start.elapsed().as_secs_f64() / 60.0,
                t.answered.len(),
                t.max_hunt_depth,
                twin.calls().hunting.total
            );
        }
    }
    let offered_for = offer_start.elapsed();
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    while lock(&tally).answered.len() < work.len() && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let run_for = offer_start.elapsed();
    stop.trigger();
    let calls = twin.calls();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    // One snapshot for every figure: the consumers keep counting while the store is read.
    let mut t = lock(&tally).clone();
    t.latencies.sort();
    let attributed = t
        .answered
        .values()
        .filter(|s| **s == Status::Attributed)
        .count();
    let lost = work.len() - t.answered.len();
    // By key, not by listing: the services are still re-querying, and a result rewritten
    // while `list` pages (newest first) moves ahead of the cursor and is passed over.
    let mut stored = 0;
    for d in &work {
        if results.get(&d.key()).await.unwrap().is_some() {
            stored += 1;
        }
    }
    {
        println!("soak results");
        println!(
            "  offered            {} detections over {:.1} min ({late} offered > 1 s late); run {:.1} min",
            work.len(),
            offered_for.as_secs_f64() / 60.0,
            run_for.as_secs_f64() / 60.0
        );
        println!(
            "  answered           {} (attributed {attributed}); lost {lost}; duplicate NewResult {}; stored results {stored}",
            t.answered.len(),
            t.duplicates
        );
        println!(
            "  hunting calls      {} (quota 429s {}, max in 60 s {}, max in 3600 s {})",
            calls.hunting.total,
            calls.hunting.throttled,
            calls.hunting.max_in_60s,
            calls.hunting.max_in_3600s
        );
        println!(
            "  bundles            first hunts {}, re-queries {}; attribution changes {}",
            t.first_bundles, t.requery_bundles, t.changed
        );
        let per_call = |n: usize| n as f64 / calls.hunting.total.max(1) as f64;
        println!(
            "  per hunting call   {:.1} detections attributed, {:.1} detection hunts (first + re-query)",
            per_call(attributed),
            per_call(t.first_bundles + t.requery_bundles)
        );
        println!(
            "  ingest->result     p50 {:.2} s, p95 {:.2} s, max {:.2} s",
            percentile(&t.latencies, 0.50).as_secs_f64(),
            percentile(&t.latencies, 0.95).as_secs_f64(),
            t.latencies
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
        );
        println!(
            "  max queue depth    hunt {}, correlate {}",
            t.max_hunt_depth, t.max_correlate_depth
        );
        for (name, kb) in &t.rss_kb {
            println!("  max VmRSS          {name}: {:.1} MB", *kb as f64 / 1024.0);
        }
        println!("  load average       {}", loadavg.trim());
    }

    for (role, s) in services {
        let log = s.log.clone();
        let status = s.terminate(Duration::from_secs(60)).await;
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            eprintln!("soak: {role} exited with {status}; its log ends:");
            for l in tail.iter().rev() {
                eprintln!("  {l}");
            }
        }
    }
    // The re-query delay queues are not part of the topology `delete_topology` removes.
    let delays: Vec<Duration> = args
        .requery_secs
        .iter()
        .map(|s| Duration::from_secs_f64(*s))
        .collect();
    if let Err(e) = bus.delete_delay_queues(&QueueName::Hunt, &delays).await {
        eprintln!("soak: the re-query delay queues were not deleted: {e}");
    }
    bus.delete_topology().await.unwrap();
    results.delete_all().await.unwrap();
    twin.twin.shutdown().await;
}
