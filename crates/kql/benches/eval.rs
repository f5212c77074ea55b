//! `where` + `summarize dcount() by` over 1,000,000 generated DeviceNetworkEvents rows
//! (target: under 150 ms on the reference machine). Run with
//! `cargo bench -p culprit-kql --bench eval`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a bench may unwrap

use criterion::{Criterion, criterion_group, criterion_main};
use culprit_kql::{Column, Database, EvalOptions, KustoType, Table, Timestamp, Value, run};

const ROWS: usize = 1_000_000;
const QUERY: &str = r#"DeviceNetworkEvents
| where Timestamp > ago(12h) and ActionType == "ConnectionSuccess"
| summarize Destinations = dcount(RemoteIP) by DeviceId"#;

/// Deterministic rows: 1,000 devices, 20,000 remote addresses, four action types over a day.
fn table() -> Table {
    let cols = [
        ("Timestamp", KustoType::DateTime),
        ("DeviceId", KustoType::String),
        ("ActionType", KustoType::String),
        ("RemoteIP", KustoType::String),
        ("RemotePort", KustoType::Int32),
        ("LocalPort", KustoType::Int32),
        ("InitiatingProcessFileName", KustoType::String),
        ("InitiatingProcessId", KustoType::Int64),
        ("ReportId", KustoType::Int64),
    ];
    let mut t = Table::new(cols.iter().map(|(n, ty)| Column::new(*n, *ty)).collect());
    let actions = [
        "ConnectionSuccess",
        "ConnectionFailed",
        "InboundConnectionAccepted",
        "ListeningConnectionCreated",
    ];
    let procs = [
        "svchost.exe",
        "lsass.exe",
        "chrome.exe",
        "msedge.exe",
        "System",
    ];
    let start = Timestamp::parse("2023-08-16T00:00:00Z").unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..ROWS {
        // xorshift: cheap, reproducible variety.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let ip = (x >> 20) % 20_000;
        t.rows.push(vec![
            Value::DateTime(Timestamp(start.0 + (i as i64) * 864_000)),
            Value::String(format!("{:040x}", (x >> 8) % 1_000)),
            Value::String(actions[(x % 4) as usize].to_owned()),
            Value::String(format!(
                "10.{}.{}.{}",
                ip / 65_536,
                (ip / 256) % 256,
                ip % 256
            )),
            Value::Int(443),
            Value::Int((x % 60_000) as i64),
            Value::String(procs[(x % 5) as usize].to_owned()),
            Value::Int((x % 10_000) as i64),
            Value::Int(i as i64),
        ]);
    }
    t
}

fn bench(c: &mut Criterion) {
    let mut db = Database::new();
    db.insert("DeviceNetworkEvents", table());
    let opts = EvalOptions {
        now: Timestamp::parse("2023-08-17T00:00:00Z").unwrap(),
        row_limit: None,
    };
    let out = run(QUERY, &db, &opts).unwrap();
    assert_eq!(out.rows.len(), 1_000, "every device appears");
    let mut g = c.benchmark_group("eval");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(5));
    g.warm_up_time(std::time::Duration::from_secs(1));
    g.bench_function("where_summarize_dcount_1m", |b| {
        b.iter(|| run(QUERY, &db, &opts).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
