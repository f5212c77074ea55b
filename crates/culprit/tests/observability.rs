//! Observability of `culprit serve`: one detection is one trace from the gRPC submit through
//! the hunter and the correlator (in-process bus and real RabbitMQ), `/metrics` over HTTP
//! shows the pipeline's families with the values of the run, `/readyz` fails while the store
//! is unreachable.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test failure report

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use culprit_bus::{BusConfig, InProcessBus, QueueName, RabbitBus, Subscriber as _, Topic};
use culprit_cache::{BudgetLimits, Clock, RedisStores, Stores, SystemClock};
use culprit_mde_twin::{Twin, TwinConfig};
use culprit_proto::v1 as pb;
use culprit_proto::v1::correlation_service_client::CorrelationServiceClient;
use culprit_runtime::Shutdown;
use culprit_settings::Settings;
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing_subscriber::layer::SubscriberExt as _;

const TENANT_ID: &str = "7d3f0c1e-0000-4000-8000-0000000e2e01";
const CLIENT_ID: &str = "8e4a1d2f-0000-4000-8000-0000000e2e01";
const SECRET: &str = "observability-test-secret";

/// Every span of this test binary, exported as it closes. The services run on the runtime's
/// worker threads, so the subscriber is the process's global one; each test finds its own
/// spans by its own trace id and its own tenant's detection keys.
fn spans() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber =
            tracing_subscriber::registry().with(culprit_telemetry::otel_layer(&provider));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        exporter
    })
}

fn scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/lsass_01")
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.as_str().to_owned(),
            other => other.to_string(),
        })
}

fn authorized<T>(msg: T, key: &str, traceparent: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    r
}

struct Run {
    /// The client's trace id (32 hex digits) and span id (16).
    trace_id: String,
    client_span: String,
    /// The detection keys the run attributed.
    keys: BTreeSet<String>,
    metrics_addr: std::net::SocketAddr,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    twin: culprit_mde_twin::TwinHandle,
}

/// Serves every role in this process for `tenant` (bus settings in `bus_toml`), submits the
/// scenario's three Vectra detections over gRPC with a client `traceparent`, and waits for
/// their three answers on the watch stream.
async fn run_pipeline(tenant: &str, bus_toml: &str) -> Run {
    spans();
    let twin = Twin::start(
        TwinConfig::single_tenant(TENANT_ID, CLIENT_ID, SECRET, vec![scenario()]),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let key = culprit_gateway::create_key_with_id(
        "obs",
        &[culprit_gateway::Scope::Read, culprit_gateway::Scope::Submit],
        &[tenant.to_owned()],
    )
    .unwrap();
    let base = twin.base_url();
    let toml = format!(
        "[tenants.{tenant}]\ntenant_id = \"{TENANT_ID}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{SECRET}\"\n\
         [tenants.{tenant}.endpoints]\nlogin = \"{base}\"\ngraph = \"{base}\"\nmde_api = \"{base}\"\n\
         [hunter]\nbatch_window_ms = 200\nrequery_after_secs = []\n\
         {bus_toml}\n\
         [gateway]\napi_keys = [{}]\n",
        key.config_line
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("culprit.toml");
    std::fs::write(&path, toml).unwrap();
    let settings = Settings::load_from(Some(&path), &[]).unwrap();
    settings.validate().unwrap();

    let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gateway.local_addr().unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(culprit::serve::serve_observed(
        settings,
        None,
        shutdown.clone(),
        Some(gateway),
        Some(metrics),
    ));

    let api_key = key.key.expose_secret().to_owned();
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let client_span = format!("{:016x}", rand::random::<u64>() | 1);
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let mut client = CorrelationServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let watch = client
        .watch_correlations(authorized(
            pb::WatchCorrelationsRequest {
                from_oldest: true,
                ..Default::default()
            },
            &api_key,
            &traceparent,
        ))
        .await;
    let mut watch = match watch {
        Ok(w) => w.into_inner(),
        // The usual cause is the service failing to start: say why.
        Err(e) => {
            let ended = tokio::time::timeout(Duration::from_secs(60), server).await;
            panic!("{e}; the service: {ended:?}")
        }
    };
    let body = std::fs::read(scenario().join("ndr/vectra_detections.json")).unwrap();
    let submitted = client
        .submit_detection(authorized(
            pb::SubmitDetectionRequest {
                payload: Some(pb::submit_detection_request::Payload::Raw(
                    pb::RawDetection {
                        format: pb::RawFormat::VectraJson as i32,
                        tenant: tenant.into(),
                        body,
                    },
                )),
            },
            &api_key,
            &traceparent,
        ))
        .await
        .unwrap()
        .into_inner();
    let keys: BTreeSet<String> = submitted
        .detections
        .iter()
        .map(|d| d.detection_key.clone())
        .collect();
    assert_eq!(keys.len(), 3);

    let mut answered = BTreeSet::new();
    // The bound only turns a hang into a failure; the stream's events are the signal.
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.len() < 3 {
        let ev = tokio::time::timeout_at(deadline, watch.message())
            .await
            .expect("three results in time")
            .unwrap()
            .expect("stream open");
        if let Some(pb::correlation_event::Kind::NewResult(r)) = ev.kind {
            answered.insert(r.correlation.unwrap().detection_key);
        }
    }
    assert_eq!(answered, keys);
    Run {
        trace_id,
        client_span,
        keys,
        metrics_addr,
        shutdown,
        server,
        twin,
    }
}

/// Waits until the hunt and correlate deliveries of every key have closed their spans, then
/// checks that the whole run is one trace: the gRPC call (child of the client's span), every
/// delivery of the run's keys on every queue, and the hunting work in between.
async fn assert_one_trace(run: &Run) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let ours = loop {
        let all = spans().get_finished_spans().unwrap();
        let ours: Vec<SpanData> = all
            .into_iter()
            .filter(|s| {
                s.name == "bus.consume"
                    && attr(s, "message_id").is_some_and(|k| run.keys.contains(&k))
                    || s.span_context.trace_id().to_string() == run.trace_id
            })
            .collect();
        let consumed = |queue: &str| {
            ours.iter()
                .filter(|s| s.name == "bus.consume" && attr(s, "queue").as_deref() == Some(queue))
                .filter_map(|s| attr(s, "message_id"))
                .collect::<BTreeSet<_>>()
        };
        if consumed("hunt") == run.keys && consumed("correlate") == run.keys {
            break ours;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries not all traced: hunt {:?}, correlate {:?}",
            consumed("hunt"),
            consumed("correlate")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for s in &ours {
        assert_eq!(
            s.span_context.trace_id().to_string(),
            run.trace_id,
            "{} (queue {:?}, message {:?}) left the trace",
            s.name,
            attr(s, "queue"),
            attr(s, "message_id"),
        );
    }
    let submit = ours
        .iter()
        .find(|s| {
            s.name == "grpc.request"
                && attr(s, "rpc.method").is_some_and(|m| m.ends_with("/SubmitDetection"))
        })
        .expect("the submit call's span");
    assert_eq!(submit.parent_span_id.to_string(), run.client_span);
    // Services between the queues: the hunter's batch and the correlator's consumer.
    let names: BTreeSet<&str> = ours.iter().map(|s| s.name.as_ref()).collect();
    assert!(names.contains("bus.consume"), "{names:?}");
    let queues: BTreeSet<String> = ours.iter().filter_map(|s| attr(s, "queue")).collect();
    assert!(
        queues.contains("hunt") && queues.contains("correlate"),
        "{queues:?}"
    );
    // Each hunt delivery's parent is a span of the gateway's submit call.
    let submit_ids: BTreeSet<String> = ours
        .iter()
        .filter(|s| s.span_context.trace_id().to_string() == run.trace_id)
        .map(|s| s.span_context.span_id().to_string())
        .collect();
    for s in ours
        .iter()
        .filter(|s| attr(s, "queue").as_deref() == Some("hunt"))
    {
        assert!(
            submit_ids.contains(&s.parent_span_id.to_string()),
            "hunt delivery's parent {} is not in the trace",
            s.parent_span_id
        );
    }
}

async fn stop(run: Run) {
    run.shutdown.trigger();
    run.server.await.unwrap().unwrap();
    run.twin.shutdown().await;
}

/// The value of the sample whose line starts with `series`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_detection_is_one_trace_in_process_and_metrics_show_the_run() {
    let run = run_pipeline("obslab", "").await;
    assert_one_trace(&run).await;

    let http = reqwest::Client::new();
    let base = format!("http://{}", run.metrics_addr);
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let scrape = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    let ctype = scrape.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let text = scrape.text().await.unwrap();
    let t = "tenant=\"obslab\"";
    assert_eq!(
        sample(
            &text,
            &format!("culprit_detections_ingested_total{{source=\"vectra\",{t}}}")
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("culprit_attributions_total{{{t},status=\"attributed\"}}")
        ),
        3.0
    );
    // One batched call for the three detections; nothing else used the tenant's budget.
    let calls = sample(
        &text,
        &format!("culprit_hunt_calls_total{{{t},kind=\"hunt\",outcome=\"ok\"}}"),
    );
    assert!((1.0..=3.0).contains(&calls), "{calls}");
    let left = sample(
        &text,
        &format!("culprit_hunt_budget_left{{{t},window=\"minute\"}}"),
    );
    assert_eq!(left, 45.0 - calls, "budget left after {calls} calls");
    assert_eq!(
        sample(
            &text,
            &format!("culprit_hunt_budget_left{{{t},window=\"hour\"}}")
        ),
        1500.0 - calls
    );
    assert!(sample(&text, "culprit_ingest_to_result_seconds_count") >= 3.0);
    let latency = sample(&text, "culprit_ingest_to_result_seconds_sum");
    assert!(latency > 0.0, "{latency}");
    assert!(sample(&text, "culprit_bus_consumed_total{queue=\"hunt\"}") >= 3.0);
    assert!(sample(&text, "culprit_queue_wait_seconds_count{queue=\"hunt\"}") >= 3.0);
    assert!(sample(&text, "culprit_bus_published_total{topic=\"correlations\"}") >= 3.0);
    // Read at scrape time from the bus: everything was consumed.
    assert_eq!(sample(&text, "culprit_queue_depth{queue=\"hunt\"}"), 0.0);
    assert!(
        sample(
            &text,
            "culprit_grpc_requests_total{method=\"/culprit.v1.CorrelationService/SubmitDetection\",code=\"0\"}"
        ) >= 1.0
    );
    assert!(text.contains("culprit_cache_lookups_total{"), "{text}");
    stop(run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_detection_is_one_trace_across_rabbitmq() {
    let prefix = format!("culprit-obs-{:016x}", rand::random::<u64>());
    let url = std::env::var("CULPRIT_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let bus_toml = format!("[bus]\nkind = \"rabbitmq\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\n");
    let run = run_pipeline("obsmq", &bus_toml).await;
    assert_one_trace(&run).await;
    stop(run).await;

    // Leave the broker as it was.
    let bus = RabbitBus::connect(BusConfig {
        url: url.into(),
        prefix,
        ..BusConfig::default()
    })
    .await
    .unwrap();
    bus.bind(
        QueueName::Custom(culprit_gateway::WATCH_QUEUE.to_owned()),
        Topic::Correlations,
    )
    .await
    .unwrap();
    bus.delete_topology().await.unwrap();
    bus.close().await;
}

#[tokio::test]
async fn readyz_fails_while_the_store_is_unreachable() {
    let bus: Arc<dyn culprit_bus::Bus> = Arc::new(InProcessBus::new(BusConfig::default()).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let settings = Settings::default();
    // A port nothing listens on: bound, then closed.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let unreachable =
        RedisStores::connect_lazy(&format!("redis://127.0.0.1:{dead_port}"), "obs").unwrap();
    let cases = [
        (
            Stores::memory(clock.clone(), BudgetLimits::default()).unwrap(),
            200,
        ),
        (Stores::redis(unreachable, 0.25).unwrap(), 503),
    ];
    let http = reqwest::Client::new();
    for (stores, expected) in cases {
        let server =
            culprit::observe::metrics_server(&settings, None, bus.clone(), &stores, clock.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        let ready = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap();
        let status = ready.status().as_u16();
        let body = ready.text().await.unwrap();
        assert_eq!(status, expected, "{body}");
        if expected == 503 {
            assert!(body.starts_with("store: "), "{body}");
            assert!(!body.contains("bus:"), "{body}");
        }
        let health = http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "alive whatever the store says");
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
