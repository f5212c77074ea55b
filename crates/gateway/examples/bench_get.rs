//! GetCorrelation throughput and latency against answers in Redis, measured in the same run as
//! `redis-benchmark -t get` on the same Redis (the ceiling).
//!
//! `cargo run --release -p culprit-gateway --example bench_get -- [seconds] [concurrency] [decode]`
//! (Redis at CULPRIT_TEST_REDIS_URL or redis://127.0.0.1:6379; `redis-benchmark` on PATH.)
//!
//! The load generator shares the machine with the gateway, so by default it does not decode
//! the answers (as `redis-benchmark` does not parse values): it checks their length and decodes
//! one per task at the end. `decode` as the third argument decodes every answer, as a typical
//! client would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use culprit_bus::{BusConfig, InProcessBus};
use culprit_cache::{RedisStores, ResultMeta, ResultStore, SystemClock};
use culprit_gateway::stores::MemoryGatewayStores;
use culprit_gateway::{
    Gateway, GatewayConfig, Handles, RawGetCorrelationResponse, Scope, bearer, create_key_with_id,
};
use culprit_model::{DetectionKey, Status, Timestamp};
use culprit_proto::v1 as pb;
use culprit_proto::v1::correlation_service_client::CorrelationServiceClient;
use culprit_settings::{ApiKeySettings, GatewaySettings};
use prost::Message;
use tonic::transport::Channel;

const ANSWERS: usize = 1000;

fn answer(i: usize) -> pb::Correlation {
    let process = pb::ProcessAnswer {
        device_name: "mkt01.pandalab.com".into(),
        device_id: "e28267a8375c8cc082a43a690e5d49796e73a79e".into(),
        process_id: 1988,
        file_name: "winx64_payload.exe".into(),
        command_line: "\"C:\\Users\\stevie.marie\\Downloads\\winx64_payload.exe\"".into(),
        sha256: "e9196b871670af6307902fc4ca09f7cf3c309ae54b28e10d052ed8741090f928".into(),
        folder_path: "C:\\Users\\stevie.marie\\Downloads\\winx64_payload.exe".into(),
        confidence: 0.97,
        reasons: vec!["owns 4 of 5 sessions (exact 5-tuple, within 1 s)".into(); 3],
        ..Default::default()
    };
    pb::Correlation {
        detection_id: i.to_string(),
        detection_key: format!("vectra:acme:{i}:2023-08-16T04:59:22Z"),
        tenant: "acme".into(),
        status: pb::Status::Attributed as i32,
        explanation: "the probable process owns 4 of 5 sessions".into(),
        probable: Some(process.clone()),
        candidates: vec![process; 3],
        computed_at: Some(culprit_proto::convert::timestamp_to_proto(Timestamp::now())),
        ..Default::default()
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn redis_benchmark(url: &str, clients: usize) -> String {
    let u = url::Url::parse(url).unwrap();
    let out = std::process::Command::new("redis-benchmark")
        .args(["-h", u.host_str().unwrap_or("127.0.0.1")])
        .args(["-p", &u.port().unwrap_or(6379).to_string()])
        .args(["-t", "get", "-n", "200000", "-q"])
        .args(["-c", &clients.to_string()])
        .output()
        .expect("redis-benchmark on PATH");
    // `-q` rewrites a progress line with CR; the summary is the last segment.
    String::from_utf8_lossy(&out.stdout)
        .split(['\r', '\n'])
        .map(str::trim)
        .rfind(|l| l.contains("requests per second"))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let decode = args.get(3).is_some_and(|s| s == "decode");
    let url =
        std::env::var("CULPRIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("culprit-bench-{:08x}", rand::random::<u32>());
    let results = Arc::new(RedisStores::connect(&url, &prefix).await.unwrap());
    let mut size = 0;
    for i in 0..ANSWERS {
        let c = answer(i);
        let bytes = c.encode_to_vec();
        size = bytes.len();
        let meta = ResultMeta {
            tenant: "acme".into(),
            device_id: None,
            status: Status::Attributed,
            confidence: 0.97,
            computed_at: Timestamp::now(),
        };
        results
            .put(&DetectionKey(c.detection_key.clone()), &bytes, &meta)
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    for i in 0..200 {
        let k = DetectionKey(format!("vectra:acme:{i}:2023-08-16T04:59:22Z"));
        results.get(&k).await.unwrap();
    }
    let store_get_ms = t0.elapsed().as_secs_f64() * 1000.0 / 200.0;
    let key = create_key_with_id("bench", &[Scope::Read], &["acme".into()]).unwrap();
    let parsed: toml::Table = format!("k = {}", key.config_line).parse().unwrap();
    let api_key: ApiKeySettings = parsed["k"].clone().try_into().unwrap();
    let settings = GatewaySettings {
        api_keys: vec![api_key],
        rate_limit_per_key: 0,
        ..GatewaySettings::default()
    };
    let bus = InProcessBus::new(BusConfig::default()).unwrap();
    let handles = Handles {
        results: results.clone(),
        idempotency: results.clone(),
        publisher: Arc::new(bus),
        submit: None,
        subscriber: None,
        stores: Arc::new(MemoryGatewayStores::default()),
        mde: BTreeMap::new(),
        probes: Vec::new(),
        clock: Arc::new(SystemClock),
    };
    let gateway = Gateway::new(GatewayConfig { settings, handles }).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, async {
        let _ = stopped.await;
    }));
    // A few HTTP/2 connections, many streams each, as a pooled client would.
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..4 {
        let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
        channels.push(endpoint.connect().await.unwrap());
    }
    let auth: tonic::metadata::MetadataValue<_> = bearer(&key.key).parse().unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let channel = channels[t % channels.len()].clone();
            let mut client = CorrelationServiceClient::new(channel.clone());
            let mut raw = tonic::client::Grpc::new(channel);
            let auth = auth.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = t;
                let mut last = Vec::new();
                while Instant::now() < end {
                    let mut req = tonic::Request::new(pb::GetCorrelationRequest {
                        selector: Some(pb::get_correlation_request::Selector::DetectionKey(
                            format!("vectra:acme:{}:2023-08-16T04:59:22Z", i % ANSWERS),
                        )),
                    });
                    req.metadata_mut().insert("authorization", auth.clone());
                    let t0 = Instant::now();
                    if decode {
                        client.get_correlation(req).await.unwrap();
                    } else {
                        raw.ready().await.unwrap();
                        let codec = tonic_prost::ProstCodec::<
                            pb::GetCorrelationRequest,
                            RawGetCorrelationResponse,
                        >::default();
                        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                            "/culprit.v1.CorrelationService/GetCorrelation",
                        );
                        let r = raw.unary(req, path, codec).await.unwrap().into_inner();
                        assert!(r.correlation.len() > 1000, "a whole answer");
                        last = r.correlation;
                    }
                    lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                    i += concurrency;
                }
                if !decode && !last.is_empty() {
                    // The bytes served are a valid answer.
                    pb::Correlation::decode(last.as_slice()).unwrap();
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<u32> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let rps = all.len() as f64 / elapsed;
    let _ = stop.send(());
    let _ = server.await;
    results.delete_all().await.unwrap();
    let ceiling = redis_benchmark(&url, concurrency);
    let ceiling_rps: f64 = ceiling
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    println!("| metric | value |\n|---|---|");
    println!("| answer size (bytes) | {size} |");
    println!("| result-store get, sequential, no gRPC (ms) | {store_get_ms:.3} |");
    println!("| duration (s) / concurrency | {elapsed:.1} / {concurrency} |");
    println!(
        "| load generator decodes answers | {} |",
        if decode { "yes" } else { "no" }
    );
    println!("| GetCorrelation requests | {} |", all.len());
    println!("| GetCorrelation req/s | {rps:.0} |");
    println!(
        "| latency p50 / p99 / max (ms) | {:.2} / {:.2} / {:.2} |",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 1.0)
    );
    println!("| redis-benchmark -t get (same Redis, -c {concurrency}) | {ceiling} |");
    println!("| ratio gateway / redis GET | {:.2} |", rps / ceiling_rps);
}
