//! The client verbs (`get`, `list`, `watch`, `isolate`, `release`, `action`) against a real
//! gateway on port 0: `culprit serve` with every role in one process, the MDE twin serving
//! lsass_01, detections submitted over gRPC and attributed by the real pipeline. Each refusal
//! is checked for its exit status and the message the operator reads.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test failure report

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use culprit::client::{ClientCli, Failure, Io, exit, run};
use culprit::render::Style;
use culprit_bus::{BusConfig, InProcessBus};
use culprit_cache::{MemoryStores, SystemClock};
use culprit_gateway::stores::{EventLog, MemoryGatewayStores};
use culprit_gateway::{Gateway, GatewayConfig, Handles, Scope, create_key_with_id};
use culprit_mde_twin::{ManualClock, Twin, TwinConfig, TwinHandle};
use culprit_model::Timestamp;
use culprit_proto::v1 as pb;
use culprit_runtime::Shutdown;
use culprit_settings::{ApiKeySettings, GatewaySettings, Settings};
use prost::Message;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;

const TENANT_ID: &str = "7d3f0c1e-0000-4000-8000-00000000c11e";
const CLIENT_ID: &str = "8e4a1d2f-0000-4000-8000-00000000c11e";
const SECRET: &str = "client-verbs-test-secret";
const DEVICE: &str = "e28267a8375c8cc082a43a690e5d49796e73a79e";
const WIDTH: usize = 100;

fn scenario() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/lsass_01")
}

struct Out {
    result: Result<(), Failure>,
    out: String,
    err: String,
}

impl Out {
    fn ok(&self) -> &str {
        if let Err(f) = &self.result {
            panic!("expected success, got exit {}: {}", f.exit, f.message);
        }
        &self.out
    }

    /// The failure's exit status and message.
    fn failed(&self) -> (u8, String) {
        match &self.result {
            Ok(()) => panic!("expected a failure, got success:\n{}", self.out),
            Err(f) => (f.exit, f.message.clone()),
        }
    }

    fn json(&self) -> Vec<serde_json::Value> {
        self.ok()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Runs `culprit ARGS` (a client verb) with `key` as CULPRIT_API_KEY.
async fn cli(args: &[&str], key: Option<&SecretString>) -> Out {
    let parsed = ClientCli::try_parse_from(std::iter::once("culprit").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        style: Style {
            color: false,
            width: WIDTH,
        },
    };
    let result = run(parsed.command, key.cloned(), &mut io).await;
    Out {
        result,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

struct Served {
    url: String,
    ops: SecretString,
    reader: SecretString,
    twin: TwinHandle,
    twin_clock: Arc<ManualClock>,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// `culprit serve` (all roles) against the twin, with keys `ops` (every scope) and `reader`.
async fn serve() -> Served {
    let twin_clock = Arc::new(ManualClock::new(
        Timestamp::parse("2023-08-16T05:10:00Z").unwrap(),
    ));
    let twin = Twin::start_with_clock(
        TwinConfig::single_tenant(TENANT_ID, CLIENT_ID, SECRET, vec![scenario()]),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Some(twin_clock.clone()),
    )
    .await
    .unwrap();
    let lab = ["lab".to_owned()];
    let ops = create_key_with_id("ops", &Scope::ALL, &lab).unwrap();
    let reader = create_key_with_id("reader", &[Scope::Read], &lab).unwrap();
    let base = twin.base_url();
    let toml = format!(
        "[tenants.lab]\ntenant_id = \"{TENANT_ID}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{SECRET}\"\n\
         [tenants.lab.endpoints]\nlogin = \"{base}\"\ngraph = \"{base}\"\nmde_api = \"{base}\"\n\
         [hunter]\nbatch_window_ms = 200\n\
         [gateway]\napi_keys = [{}, {}]\n",
        ops.config_line, reader.config_line
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("culprit.toml");
    std::fs::write(&path, toml).unwrap();
    let settings = Settings::load_from(Some(&path), &[]).unwrap();
    settings.validate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::new();
    let server = tokio::spawn(culprit::serve::serve_with(
        settings,
        None,
        shutdown.clone(),
        Some(listener),
    ));
    Served {
        url,
        ops: ops.key,
        reader: reader.key,
        twin,
        twin_clock,
        shutdown,
        server,
    }
}

async fn submit_lsass(url: &str, key: &SecretString) {
    let mut client =
        pb::correlation_service_client::CorrelationServiceClient::connect(url.to_owned())
            .await
            .unwrap();
    let mut req = tonic::Request::new(pb::SubmitDetectionRequest {
        payload: Some(pb::submit_detection_request::Payload::Raw(
            pb::RawDetection {
                format: pb::RawFormat::VectraJson as i32,
                tenant: "lab".into(),
                body: std::fs::read(scenario().join("ndr/vectra_detections.json")).unwrap(),
            },
        )),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", key.expose_secret()).parse().unwrap(),
    );
    let n = client.submit_detection(req).await.unwrap().into_inner();
    assert_eq!(n.detections.len(), 3);
}

/// Lines of a text panel that are too wide and are not a URL kept whole on purpose.
fn overlong(panel: &str) -> Vec<&str> {
    panel
        .lines()
        .filter(|l| l.chars().count() > WIDTH && !l.trim_start().starts_with("https://"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_against_a_real_gateway() {
    let s = serve().await;
    let g = s.url.as_str();
    let ops = Some(&s.ops);
    submit_lsass(g, &s.ops).await;

    // watch: the three answers as JSON Lines, each with its position.
    let watched = tokio::time::timeout(
        Duration::from_secs(90),
        cli(
            &[
                "watch",
                "--from-oldest",
                "--limit",
                "3",
                "--format",
                "json",
                "--gateway",
                g,
            ],
            ops,
        ),
    )
    .await
    .expect("three answers in time");
    let events = watched.json();
    assert_eq!(events.len(), 3);
    let mut keys = std::collections::BTreeMap::new();
    for e in &events {
        assert_eq!(e["kind"], "new_result");
        assert!(!e["position"].as_str().unwrap().is_empty());
        let c = &e["correlation"];
        keys.insert(
            c["detection_id"].as_str().unwrap().to_owned(),
            c["detection_key"].as_str().unwrap().to_owned(),
        );
    }
    let key_2569 = keys["2569"].clone();
    let key_2570 = keys["2570"].clone();

    // get: the panel of the implant.
    let got = cli(&["get", &key_2569, "--gateway", g], ops).await;
    let panel = got.ok();
    for want in [
        "PROBABLE PROCESS  winx64_payload.exe  (PID 1988)",
        "SHA256",
        "PROCESS TREE",
        "PIVOT",
        "explorer.exe",
    ] {
        assert!(panel.contains(want), "{want:?} missing from\n{panel}");
    }
    assert!(overlong(panel).is_empty(), "{:?}", overlong(panel));
    // URLs stay whole on one line, whatever their length.
    for url in panel
        .split_whitespace()
        .filter(|w| w.starts_with("https://"))
    {
        assert!(panel.lines().any(|l| l.contains(url)));
    }

    // The socket owner svchost.exe: its injector is an "injected by" edge, not its child.
    let injected = cli(&["get", &key_2570, "--gateway", g], ops).await;
    let panel = injected.ok();
    assert!(
        panel.contains("svchost.exe (PID 1400)") || panel.contains("svchost.exe  (PID 1400)"),
        "{panel}"
    );
    let tree: Vec<&str> = panel
        .lines()
        .skip_while(|l| !l.starts_with("PROCESS TREE"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(
        tree.iter()
            .any(|l| l.contains("⇠ injected by winx64_payload.exe 1988")),
        "{tree:#?}"
    );
    assert!(
        !tree
            .iter()
            .any(|l| l.contains("─ winx64_payload.exe") && !l.contains("injected by")),
        "the injector is drawn as a child: {tree:#?}"
    );

    // get by source id, as JSON.
    let by_source = cli(
        &[
            "get",
            "--source",
            "vectra",
            "--source-id",
            "2569",
            "--format",
            "json",
            "--gateway",
            g,
        ],
        ops,
    )
    .await;
    let c = &by_source.json()[0];
    assert_eq!(c["detection_key"], key_2569.as_str());
    assert_eq!(c["probable"]["ProcessId"], 1988, "{c}");

    // list: filters, pages, --all.
    let all = cli(
        &[
            "list",
            "--status",
            "attributed",
            "--format",
            "json",
            "--gateway",
            g,
        ],
        ops,
    )
    .await;
    assert_eq!(all.json().len(), 3);
    let first = cli(
        &[
            "list",
            "--page-size",
            "1",
            "--format",
            "json",
            "--gateway",
            g,
        ],
        ops,
    )
    .await;
    assert_eq!(first.json().len(), 1);
    let token = first
        .err
        .split_whitespace()
        .skip_while(|w| *w != "--page")
        .nth(1)
        .expect("a page token on stderr")
        .to_owned();
    let second = cli(
        &[
            "list",
            "--page-size",
            "1",
            "--page",
            &token,
            "--format",
            "json",
            "--gateway",
            g,
        ],
        ops,
    )
    .await;
    assert_eq!(second.json().len(), 1);
    assert_ne!(second.json()[0], first.json()[0]);
    let every = cli(
        &[
            "list",
            "--page-size",
            "1",
            "--all",
            "--format",
            "json",
            "--gateway",
            g,
        ],
        ops,
    )
    .await;
    let ids: std::collections::BTreeSet<String> = every
        .json()
        .iter()
        .map(|c| c["detection_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let none = cli(&["list", "--device", "no-such-device", "--gateway", g], ops).await;
    assert!(none.ok().is_empty());
    assert!(none.err.contains("no answers match"));
    let text = cli(&["list", "--gateway", g], ops).await;
    assert_eq!(text.ok().lines().count(), 3);

    // isolate by detection: the answer's device, in the twin.
    let isolated = cli(
        &[
            "isolate",
            "--detection",
            &key_2569,
            "--mode",
            "selective",
            "--comment",
            "C2 from winx64_payload.exe",
            "--format",
            "json",
            "--gateway",
            g,
        ],
        ops,
    )
    .await;
    let action = isolated.json()[0].clone();
    assert_eq!(action["type"], "isolate");
    assert_eq!(action["isolation_type"], "selective");
    assert_eq!(action["status"], "pending");
    assert_eq!(action["device_id"], DEVICE);
    assert_eq!(action["requestor"], "ops");
    let action_id = action["id"].as_str().unwrap().to_owned();

    // A second isolation while the first is pending: ALREADY_EXISTS naming the action.
    let again = cli(
        &[
            "isolate",
            "--device",
            DEVICE,
            "--mode",
            "full",
            "--comment",
            "again",
            "--gateway",
            g,
        ],
        ops,
    )
    .await;
    let (code, msg) = again.failed();
    assert_eq!(code, exit::ALREADY_EXISTS, "{msg}");
    assert!(msg.starts_with("ALREADY_EXISTS: "), "{msg}");
    assert!(
        msg.contains(&format!("culprit action {action_id}")),
        "{msg}"
    );

    // action: pending, then done once the twin's clock moves on.
    let pending = cli(&["action", &action_id, "--gateway", g], ops).await;
    assert!(
        pending.ok().contains("isolate (selective) · pending"),
        "{}",
        pending.out
    );
    assert!(pending.out.contains("Follow with `culprit action"));
    s.twin_clock
        .advance(culprit_model::Duration::from_seconds(120));
    let done = cli(
        &["action", &action_id, "--format", "json", "--gateway", g],
        ops,
    )
    .await;
    assert_eq!(done.json()[0]["status"], "succeeded");

    // Already isolated: FAILED_PRECONDITION with the violated state.
    let no_op = cli(
        &[
            "isolate",
            "--device",
            DEVICE,
            "--mode",
            "full",
            "--comment",
            "again",
            "--gateway",
            g,
        ],
        ops,
    )
    .await;
    let (code, msg) = no_op.failed();
    assert_eq!(code, exit::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("precondition DEVICE_STATE"), "{msg}");

    // release, then releasing a free device is refused.
    let released = cli(
        &[
            "release",
            "--device",
            DEVICE,
            "--comment",
            "cleaned",
            "--gateway",
            g,
        ],
        ops,
    )
    .await;
    assert!(
        released.ok().contains("release · pending"),
        "{}",
        released.out
    );
    s.twin_clock
        .advance(culprit_model::Duration::from_seconds(120));
    let (code, msg) = cli(
        &[
            "release",
            "--device",
            DEVICE,
            "--comment",
            "cleaned",
            "--gateway",
            g,
        ],
        ops,
    )
    .await
    .failed();
    assert_eq!(code, exit::FAILED_PRECONDITION);
    assert!(msg.contains("not isolated"), "{msg}");

    // Refusals, each with its exit status and reason.
    let reader = Some(&s.reader);
    let (code, msg) = cli(
        &[
            "isolate",
            "--device",
            DEVICE,
            "--mode",
            "full",
            "--comment",
            "x",
            "--gateway",
            g,
        ],
        reader,
    )
    .await
    .failed();
    assert_eq!(code, exit::PERMISSION_DENIED, "{msg}");
    assert!(
        msg.contains("needs a key with the `respond` scope"),
        "{msg}"
    );

    let (code, msg) = cli(&["get", "vectra:lab:999999:0", "--gateway", g], reader)
        .await
        .failed();
    assert_eq!(code, exit::NOT_FOUND, "{msg}");

    let (code, msg) = cli(&["get", "not-a-key", "--gateway", g], reader)
        .await
        .failed();
    assert_eq!(code, exit::INVALID, "{msg}");
    assert!(msg.contains("field detection_key:"), "{msg}");

    let (code, msg) = cli(&["get", "vectra:other:1:0", "--gateway", g], reader)
        .await
        .failed();
    assert_eq!(code, exit::PERMISSION_DENIED, "{msg}");
    assert!(msg.contains("does not cover tenant `other`"), "{msg}");

    let wrong = SecretString::from("culprit_not-a-real-key");
    let (code, msg) = cli(&["list", "--gateway", g], Some(&wrong)).await.failed();
    assert_eq!(code, exit::UNAUTHENTICATED, "{msg}");
    assert!(
        !msg.contains("not-a-real-key"),
        "the key is never echoed: {msg}"
    );

    let (code, msg) = cli(&["list", "--gateway", g], None).await.failed();
    assert_eq!(code, exit::LOCAL);
    assert!(msg.contains("CULPRIT_API_KEY"), "{msg}");

    let (code, msg) = cli(&["list", "--since", "yesterday", "--gateway", g], ops)
        .await
        .failed();
    assert_eq!(code, exit::LOCAL);
    assert!(msg.contains("--since"), "{msg}");

    s.shutdown.trigger();
    s.server.await.unwrap().unwrap();
    s.twin.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_gateway_is_unavailable() {
    // A port that was just free: nothing listens there.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let key = SecretString::from("culprit_x");
    let out = cli(&["list", "--gateway", &url, "--timeout", "2"], Some(&key)).await;
    let (code, msg) = out.failed();
    assert_eq!(code, exit::UNAVAILABLE, "{msg}");
    assert!(msg.contains("cannot reach the gateway"), "{msg}");
    // `watch` fails at once too when it never connected (it resumes only a stream it had).
    let (code, _) = cli(&["watch", "--gateway", &url, "--timeout", "2"], Some(&key))
        .await
        .failed();
    assert_eq!(code, exit::UNAVAILABLE);
}

/// A `Write` the test can read while a verb runs in another task.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// A gateway over `stores` on `listener` (keys: `ops`); returns its stop handle.
async fn gateway_on(
    listener: TcpListener,
    stores: Arc<MemoryGatewayStores>,
    key: &ApiKeySettings,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), culprit_gateway::GatewayError>>,
) {
    let results = Arc::new(MemoryStores::new());
    let bus = InProcessBus::new(BusConfig::default()).unwrap();
    let handles = Handles {
        results: results.clone(),
        idempotency: results,
        publisher: Arc::new(bus),
        submit: None,
        subscriber: None,
        stores,
        mde: Default::default(),
        probes: Vec::new(),
        clock: Arc::new(SystemClock),
    };
    let settings = GatewaySettings {
        api_keys: vec![key.clone()],
        ..GatewaySettings::default()
    };
    let gw = Gateway::new(GatewayConfig { settings, handles }).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gw.serve(listener, async {
        let _ = stopped.await;
    }));
    (stop, server)
}

fn event(id: u32) -> Vec<u8> {
    let c = pb::Correlation {
        detection_id: id.to_string(),
        detection_key: format!("vectra:lab:{id}:0"),
        source: pb::SourceKind::Vectra as i32,
        tenant: "lab".into(),
        status: pb::Status::InsufficientTelemetry as i32,
        explanation: "no telemetry in the window".into(),
        detection: Some(pb::DetectionSummary {
            detection_type: "Port Scan".into(),
            ..Default::default()
        }),
        computed_at: Some(culprit_proto::convert::timestamp_to_proto(Timestamp::now())),
        ..Default::default()
    };
    pb::CorrelationEvent {
        kind: Some(pb::correlation_event::Kind::NewResult(pb::NewResult {
            correlation: Some(c),
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Polls `cond` until it holds; the bound only turns a hang into a failure (showing `err`).
async fn until(what: &str, err: &Shared, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {what}; stderr: {}",
            err.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_the_gateway_restarts_and_misses_nothing() {
    let created = create_key_with_id("ops", &[Scope::Read], &["lab".to_owned()]).unwrap();
    let key = ApiKeySettings {
        id: "ops".into(),
        hash: culprit_gateway::hash_key(created.key.expose_secret()),
        scopes: vec!["read".into()],
        tenants: vec!["lab".into()],
    };
    // The event log outlives the gateway, as the Redis stream does in production.
    let stores = Arc::new(MemoryGatewayStores::new(1000, 1000));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, server) = gateway_on(listener, stores.clone(), &key).await;
    stores.append("e1", &event(1)).await.unwrap();

    let (out, err) = (Shared::default(), Shared::default());
    let (o, e) = (out.clone(), err.clone());
    let api_key = created.key.clone();
    let url = format!("http://{addr}");
    let watcher = tokio::spawn(async move {
        let parsed = ClientCli::try_parse_from([
            "culprit",
            "watch",
            "--from-oldest",
            "--limit",
            "4",
            "--format",
            "json",
            "--gateway",
            &url,
        ])
        .unwrap();
        let (mut o, mut e) = (o, e);
        let mut io = Io {
            out: &mut o,
            err: &mut e,
            style: Style {
                color: false,
                width: WIDTH,
            },
        };
        run(parsed.command, Some(api_key), &mut io).await
    });
    until("first event", &err, || out.text().lines().count() == 1).await;
    stores.append("e2", &event(2)).await.unwrap();
    until("second event", &err, || out.text().lines().count() == 2).await;

    // The gateway goes away; events keep arriving in the log meanwhile.
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    stores.append("e3", &event(3)).await.unwrap();
    until("the client notices", &err, || {
        err.text().contains("resuming after position")
    })
    .await;

    let listener = TcpListener::bind(addr).await.unwrap();
    let (stop, server) = gateway_on(listener, stores.clone(), &key).await;
    stores.append("e4", &event(4)).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watch ends after 4 events")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");

    let lines: Vec<serde_json::Value> = out
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["correlation"]["detection_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4"], "nothing missed, nothing twice");
    let positions: Vec<&str> = lines
        .iter()
        .map(|l| l["position"].as_str().unwrap())
        .collect();
    let mut sorted = positions.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 4);
    assert!(
        err.text()
            .contains(&format!("resuming after position {}", positions[1])),
        "{}",
        err.text()
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
