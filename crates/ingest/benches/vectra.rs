//! Vectra JSON parsing throughput, in detections per second on one core.
//!
//! Input: one v3.3 list page of 2,000 detections built from the scenario and sample files
//! (host detections with 1-9 sessions each, ~2.7 KB per detection pretty-printed), ids made
//! unique. Run: `cargo bench -p culprit-ingest --bench vectra`.

use std::hint::black_box;
use std::time::Duration;

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

fn bench(c: &mut Criterion) {
    let bytes = corpus();
    let mut g = c.benchmark_group("vectra_json");
    g.throughput(Throughput::Elements(DETECTIONS as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("parse_page_2000", |b| {
        b.iter(|| {
            let parsed = culprit_ingest::vectra::parse_json(black_box(&bytes), "bench");
            black_box(parsed.map(|p| p.len()).unwrap_or(0))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
