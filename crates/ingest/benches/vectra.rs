//! Vectra JSON parsing throughput, in detections per second on one core.
//!
//! Input: one v3.3 list page of 2,000 detections built from the scenario and sample files
//! (10 host detections cycled: 1-9 sessions each, 3 on average; ~4.1 KB per detection
//! pretty-printed, 8.3 MB per page), ids made unique.
//! Run: `cargo bench -p culprit-ingest --bench vectra`.
//!
//! Two measurements of the same work: wall-clock (`parse_page_2000`) and this thread's
//! on-CPU time from `/proc/thread-self/schedstat` (`parse_page_2000_cpu`), which is the
//! "one core" figure even when the machine is shared; where that file is missing the second
//! falls back to wall-clock.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

const DETECTIONS: usize = 2_000;

fn corpus() -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let files = [
        "scenarios/lsass_01/vectra_detections.json",
        "scenarios/lsass_03/vectra_detections.json",
        "scenarios/empire_regsvr32/vectra_detections.json",
        "samples/vectra/vectra_responses.GET_DETECTIO_FROM_ENTITY_RESP.json",
    ];
    let mut templates: Vec<Value> = Vec::new();
    for f in files {
        let text = std::fs::read(format!("{dir}/{f}")).unwrap_or_default();
        if let Ok(Value::Object(page)) = serde_json::from_slice::<Value>(&text)
            && let Some(Value::Array(results)) = page.get("results")
        {
            templates.extend(results.iter().cloned());
        }
    }
    assert!(!templates.is_empty(), "bench corpus missing under {dir}");
    let results: Vec<Value> = (0..DETECTIONS)
        .map(|i| {
            let mut d = templates[i % templates.len()].clone();
            d["id"] = json!(100_000 + i);
            d
        })
        .collect();
    let page = json!({"count": DETECTIONS, "next": null, "previous": null, "results": results});
    serde_json::to_vec_pretty(&page).unwrap_or_default()
}

/// Nanoseconds this thread has spent on a CPU (first field of schedstat).
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn parse(bytes: &[u8]) -> usize {
    let parsed = culprit_ingest::vectra::parse_json(black_box(bytes), "bench");
    black_box(parsed.map(|p| p.len()).unwrap_or(0))
}

fn bench(c: &mut Criterion) {
    let bytes = corpus();
    let mut g = c.benchmark_group("vectra_json");
    g.throughput(Throughput::Elements(DETECTIONS as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("parse_page_2000", |b| b.iter(|| parse(&bytes)));
    g.bench_function("parse_page_2000_cpu", |b| {
        b.iter_custom(|iters| {
            let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
            for _ in 0..iters {
                parse(&bytes);
            }
            match (cpu0, thread_cpu_ns()) {
                (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
                _ => wall0.elapsed(),
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
