//! Shared by the scale and fault tests: a synthetic tenant served by the twin on a scaled
//! clock, the services (`culprit serve --role …`) against the local RabbitMQ and Redis under a
//! random prefix, a sensor posting the tenant's Vectra detections to the ingest role's webhook,
//! and the bookkeeping that proves one stored result and one `NewResult` event
//! per detection with the twin's quotas never exceeded.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a part

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use culprit::pipeline::{TWIN_CLIENT_ID, TWIN_TENANT_ID};
use culprit::serve::Role;
use culprit_bus::{Bus, BusConfig, Consumer, Message, QueueName, RabbitBus, Topic};
use culprit_cache::{RedisStores, ResultFilter, ResultStore};
use culprit_hunter::service::DETECTION_SCHEMA;
use culprit_mde_twin::{CallCounts, FaultConfig, Twin, TwinConfig, TwinHandle};
use culprit_model::{Correlation, Detection, DetectionKey, Status};
use culprit_proto::v1 as pb;
use culprit_runtime::Shutdown;
use culprit_settings::Settings;
use futures::StreamExt as _;
use prost::Message as _;
use secrecy::SecretString;
use tokio::time::Instant;

/// The Culprit tenant name the synthetic detections belong to.
pub const TENANT: &str = "lab";

/// The run's webhook source (`POST /v1/sources/{WEBHOOK_SOURCE}/detections`), of `TENANT`.
pub const WEBHOOK_SOURCE: &str = "vectra_lab";

/// Twin seconds per real second: the 60 s quota window is 3 s of real time.
pub const SCALE: f64 = 20.0;
/// The hunters' budget windows are scaled a little less than the twin's clock: a 5% longer
/// window absorbs the request latency between the budget's grant and the twin's count, as
/// `BudgetLimits` recommends against the real service.
pub const BUDGET_SCALE: f64 = 19.0;

pub fn amqp_url() -> String {
    std::env::var("CULPRIT_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn redis_url() -> String {
    std::env::var("CULPRIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn prefix() -> String {
    format!("culprit-scale-{:016x}", rand::random::<u64>())
}

/// One detection and the process its attribution must name.
#[derive(Debug, Clone)]
pub struct Work {
    /// The Vectra v3 detection object as the sensor sends it (the webhook's body).
    pub raw: serde_json::Value,
    /// What the ingest parser makes of `raw`: the key and host the run must answer for.
    pub detection: Detection,
    pub expected: &'static str,
}

/// A tenant of `devices` copies of the bundled lsass_01 workstation (each with its own id,
/// name and address) and `per_device` detections per device, all in the recorded window so
/// that a batch covers many devices and many detections of each.
#[derive(Debug)]
pub struct SyntheticTenant {
    pub dir: tempfile::TempDir,
    pub work: Vec<Work>,
}

const DEVICE_ID: &str = "e28267a8375c8cc082a43a690e5d49796e73a79e";
const DEVICE_NAME: &str = "mkt01.pandalab.com";
const DEVICE_IP: &str = "192.168.1.41";

fn device_id(k: usize) -> String {
    format!("5c{k:038x}")
}
fn device_name(k: usize) -> String {
    format!("ws{k:05}.pandalab.com")
}
fn device_ip(k: usize) -> String {
    format!("10.{}.{}.41", 20 + k / 250, k % 250)
}

pub fn synthetic_tenant(devices: usize, per_device: usize) -> SyntheticTenant {
    let source = culprit::scenario::bundled();
    let dir = tempfile::tempdir().unwrap();
    let mde = dir.path().join("mde");
    std::fs::create_dir_all(&mde).unwrap();
    for entry in std::fs::read_dir(source.join("mde")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = String::with_capacity(text.len() * devices);
        for k in 0..devices {
            let (id, name, ip) = (device_id(k), device_name(k), device_ip(k));
            // The lsass handle-open audit rows (a third of the recording) are not evidence the
            // attribution uses; leaving them out keeps each bundle, and the run, smaller.
            for line in text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.contains("\"OpenProcessApiCall\""))
            {
                out.push_str(
                    &line
                        .replace(DEVICE_ID, &id)
                        .replace(DEVICE_NAME, &name)
                        .replace(DEVICE_IP, &ip),
                );
                out.push('\n');
            }
        }
        std::fs::write(mde.join(path.file_name().unwrap()), out).unwrap();
    }
    // The scenario's Vectra page, one object per detection, rewritten per device: what a
    // tenant's sensor would send. The detections are the parser's reading of those objects.
    let page: serde_json::Value = serde_json::from_slice(
        &std::fs::read(source.join("ndr").join("vectra_detections.json")).unwrap(),
    )
    .unwrap();
    let originals = page["results"].as_array().unwrap();
    let expected = |id: &str| match id {
        "2568" => "msedge.exe",
        "2569" => "winx64_payload.exe",
        "2570" => "svchost.exe",
        other => panic!("unexpected detection {other} in lsass_01"),
    };
    let mut work = Vec::with_capacity(devices * per_device);
    for k in 0..devices {
        for c in 0..per_device {
            let original = &originals[c % originals.len()];
            let original_id = original["id"].to_string();
            let mut raw = original.clone();
            raw["id"] = format!("{original_id}-{k}-{c}").into();
            raw["src_ip"] = device_ip(k).into();
            raw["src_host"]["id"] = (10_000 + k).into();
            raw["src_host"]["ip"] = device_ip(k).into();
            raw["src_host"]["name"] = format!("WS{k:05}").into();
            let detection = culprit_ingest::vectra::parse_detection(&raw, TENANT)
                .unwrap_or_else(|e| panic!("the rewritten detection {original_id} parses: {e}"));
            assert_eq!(detection.host.ip, Some(device_ip(k).parse().unwrap()));
            work.push(Work {
                raw,
                detection,
                expected: expected(&original_id),
            });
        }
    }
    SyntheticTenant { dir, work }
}

/// The twin serving the synthetic tenant on a clock `SCALE` times faster than real time.
#[derive(Debug)]
pub struct TwinSetup {
    pub twin: TwinHandle,
    pub secret: String,
}

pub async fn start_twin(data: &Path, scale: f64, faults: FaultConfig) -> TwinSetup {
    let secret = format!("scale-{:032x}", rand::random::<u128>());
    let mut config =
        TwinConfig::single_tenant(TWIN_TENANT_ID, TWIN_CLIENT_ID, &secret, vec![data.into()]);
    config.clock.scale = scale;
    // Tokens live an hour of real time, as they would against the real service.
    config.token_lifetime_secs = (3599.0 * scale) as u64;
    config.faults = faults;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let twin = Twin::start(config, listener).await.unwrap();
    TwinSetup { twin, secret }
}

impl TwinSetup {
    pub fn calls(&self) -> CallCounts {
        self.twin.call_counts(TWIN_TENANT_ID)
    }
}

/// What a run's services are configured with.
#[derive(Debug, Clone)]
pub struct Plan {
    pub prefix: String,
    pub redis_url: String,
    pub batch_window_ms: u64,
    pub max_batch: usize,
    pub requery_after_secs: Vec<f64>,
    pub budget_scale: f64,
    pub prefetch: u16,
    /// The bearer token of the run's webhook source.
    pub webhook_token: String,
    /// How long ingest waits for the broker's confirm before answering 503: shorter than a
    /// broker restart, so that senders see the 503 and retry as they would in production.
    pub ingest_ack_timeout_secs: u64,
}

impl Plan {
    pub fn new(prefix: &str) -> Self {
        Plan {
            prefix: prefix.to_owned(),
            redis_url: redis_url(),
            batch_window_ms: 200,
            max_batch: 50,
            // One re-query, at +1 minute of twin time: every detection is hunted twice (the
            // default +5 and +15 minutes would add a third round and 45 s of waiting).
            requery_after_secs: vec![60.0 / SCALE],
            budget_scale: BUDGET_SCALE,
            prefetch: 64,
            webhook_token: format!("{:032x}", rand::random::<u128>()),
            ingest_ack_timeout_secs: 2,
        }
    }
}

/// Writes the configuration file every service of the run reads.
pub fn write_config(dir: &Path, twin: &TwinSetup, plan: &Plan) -> PathBuf {
    let base = twin.twin.base_url();
    let requery = plan
        .requery_after_secs
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let toml = format!(
        r#"[tenants.{TENANT}]
tenant_id = "{TWIN_TENANT_ID}"
client_id = "{TWIN_CLIENT_ID}"
client_secret = "{secret}"
[tenants.{TENANT}.endpoints]
login = "{base}"
graph = "{base}"
mde_api = "{base}"

[hunter]
batch_window_ms = {window}
max_batch = {max_batch}
budget_time_scale = {budget_scale:?}
requery_after_secs = [{requery}]

[bus]
kind = "rabbitmq"
url = "{amqp}"
prefix = "{prefix}"
prefetch = {prefetch}
max_attempts = 5
retry_delays_secs = {RETRY_DELAYS_SECS:?}

[store]
kind = "redis"
url = "{redis}"
key_prefix = "{prefix}"

[ingest]
webhook_listen = "127.0.0.1:0"
ack_timeout_secs = {ack_timeout}
[ingest.sources.{WEBHOOK_SOURCE}]
kind = "webhook"
tenant = "{TENANT}"
format = "vectra_json"
token = "{token}"
"#,
        secret = twin.secret,
        window = plan.batch_window_ms,
        max_batch = plan.max_batch,
        budget_scale = plan.budget_scale,
        amqp = amqp_url(),
        prefix = plan.prefix,
        redis = plan.redis_url,
        prefetch = plan.prefetch,
        ack_timeout = plan.ingest_ack_timeout_secs,
        token = plan.webhook_token,
    );
    let path = dir.join(format!("culprit-{:08x}.toml", rand::random::<u32>()));
    std::fs::write(&path, toml).unwrap();
    path
}

pub fn load_settings(path: &Path) -> Settings {
    let settings = Settings::load_from(Some(path), &[]).unwrap();
    settings.validate().unwrap();
    settings
}

/// One role of `culprit serve` running in this process (its own bus connection and stores,
/// as a separate process would have).
#[derive(Debug)]
pub struct Service {
    pub role: Role,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

pub fn start_role(config: &Path, role: Role) -> Service {
    let settings = load_settings(config);
    let shutdown = Shutdown::new();
    let sd = shutdown.clone();
    let task = tokio::spawn(async move {
        culprit::serve::serve_with(settings, Some(role), sd, None)
            .await
            .map_err(|e| format!("{e:#}"))
    });
    Service {
        role,
        shutdown,
        task,
    }
}

impl Service {
    /// SIGTERM's path: stop consuming, finish in-flight work, return.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let r = tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .unwrap_or_else(|_| panic!("{:?} did not drain within 60 s", self.role))
            .unwrap();
        if let Err(e) = r {
            panic!("{:?} ended with an error: {e}", self.role);
        }
    }
}

/// The `culprit` binary: cargo names it to tests; an example finds it beside its own
/// directory (`target/<profile>/examples/..`).
pub fn culprit_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_culprit") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile.join("culprit");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build --release -p culprit --bin culprit)",
        bin.display()
    );
    bin
}

/// A role as a child process of the real binary; killed on drop.
#[derive(Debug)]
pub struct ChildService {
    pub child: std::process::Child,
    pub log: PathBuf,
}

pub fn spawn_role(config: &Path, role: &str, log_dir: &Path) -> ChildService {
    let log = log_dir.join(format!("{role}-{:08x}.log", rand::random::<u32>()));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(culprit_bin())
        .args(["serve", "--role", role, "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    ChildService { child, log }
}

impl ChildService {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status within `grace`.
    pub async fn terminate(mut self, grace: Duration) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {grace:?} of SIGTERM; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `culprit serve --role ingest` as a child process, and its webhook's detections URL.
#[derive(Debug)]
pub struct Ingest {
    pub service: ChildService,
    pub url: String,
}

/// Starts the ingest role with its webhook on a port the system picks, and reads where from
/// the service's own log line.
pub async fn start_ingest(config: &Path, log_dir: &Path) -> Ingest {
    let log = log_dir.join(format!("ingest-{:08x}.log", rand::random::<u32>()));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(culprit_bin())
        .args(["serve", "--role", "ingest", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn,culprit_ingest_server=info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut service = ChildService { child, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&service.log).unwrap_or_default();
        if let Some(addr) = webhook_addr(&text) {
            let url = format!("http://{addr}/v1/sources/{WEBHOOK_SOURCE}/detections");
            return Ingest { service, url };
        }
        if let Some(status) = service.child.try_wait().unwrap() {
            panic!("the ingest role exited ({status}) before listening; log:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "the ingest role did not report its webhook address within 60 s; log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The address in the `ingest webhook listening listen=Some(127.0.0.1:PORT)` line.
fn webhook_addr(log: &str) -> Option<std::net::SocketAddr> {
    const HOST: &str = "127.0.0.1:";
    let line = log
        .lines()
        .find(|l| l.contains("ingest webhook listening"))?;
    let rest = &line[line.find(HOST)?..];
    let end = rest[HOST.len()..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(rest.len(), |i| HOST.len() + i);
    rest[..end].parse().ok()
}

/// What the senders saw.
#[derive(Debug, Default)]
pub struct SendStats {
    /// POSTs made, retries included.
    pub posts: AtomicU64,
    /// POSTs answered 503 and sent again.
    pub retried: AtomicU64,
    /// Detections the webhook reported as duplicates of ones already published.
    pub duplicates: AtomicU64,
}

/// A sensor posting to the run's webhook source: one detection object per POST, sent again
/// after `Retry-After` when the answer is 503, as a real sender does.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    url: String,
    token: String,
    pub stats: Arc<SendStats>,
}

/// POSTs in flight at once.
pub const SENDERS: usize = 8;

impl Sender {
    pub fn new(url: &str, token: &str) -> Sender {
        Sender {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            url: url.to_owned(),
            token: token.to_owned(),
            stats: Arc::default(),
        }
    }

    /// Posts `w` until it is answered 202. Any answer but 202 or 503, or a failed connection,
    /// is a failure of the ingest service: none of the faults may cause one.
    pub async fn send(&self, w: &Work) {
        let body = serde_json::to_vec(&w.raw).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.stats.posts.fetch_add(1, Ordering::Relaxed);
            let resp = self
                .client
                .post(&self.url)
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {}: {e}", self.url));
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let text = resp.text().await.unwrap();
            match status.as_u16() {
                202 => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    let d = &v["detections"];
                    assert_eq!(d.as_array().map(Vec::len), Some(1), "{v}");
                    assert_eq!(
                        d[0]["key"].as_str(),
                        Some(w.detection.key().as_str()),
                        "the webhook's key is the parser's"
                    );
                    if d[0]["duplicate"] == true {
                        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                503 => {
                    let wait = Duration::from_secs(retry_after.unwrap_or(1));
                    assert!(
                        Instant::now() + wait < deadline,
                        "the webhook answered 503 for 120 s: {text}"
                    );
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                }
                _ => panic!("the webhook answered {status}: {text}"),
            }
        }
    }

    /// Posts every detection of `work`, `SENDERS` at a time.
    pub async fn send_all(&self, work: &[Work]) {
        futures::stream::iter(work)
            .for_each_concurrent(SENDERS, |w| self.send(w))
            .await;
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// The test's own connection to the run's bus.
pub async fn connect_bus(prefix: &str) -> RabbitBus {
    let cfg = BusConfig {
        url: SecretString::from(amqp_url()),
        prefix: prefix.to_owned(),
        // The services' delays: `delete_topology` removes the retry queues this bus knows of.
        retry_delays: RETRY_DELAYS_SECS
            .iter()
            .map(|s| Duration::from_secs_f64(*s))
            .collect(),
        max_attempts: 5,
        ..BusConfig::default()
    };
    let rabbit = RabbitBus::connect(cfg).await.unwrap_or_else(|e| {
        panic!(
            "these tests need RabbitMQ at {} (set CULPRIT_TEST_AMQP_URL): {e}",
            amqp_url()
        )
    });
    rabbit.declare_topology().await.unwrap();
    rabbit
}

/// Publishes a detection as the ingest service does: protobuf, the schema header, keyed by
/// the detection key. A failed publish (the broker away) is retried, as a sender retries a
/// 503: a duplicate that results must be absorbed downstream.
pub async fn publish_detection(bus: &dyn Bus, d: &Detection) {
    let payload = pb::Detection::from(d).encode_to_vec();
    let msg = Message::new(d.key().as_str(), payload)
        .with_header(culprit_bus::HEADER_SCHEMA_VERSION, DETECTION_SCHEMA);
    publish_retrying(bus, msg).await;
}

pub async fn publish_retrying(bus: &dyn Bus, msg: Message) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match bus.publish(Topic::Detections, msg.clone()).await {
            Ok(()) => return,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "publishing for 120 s failed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A consumer of `culprit.correlations`, as a SOAR integration binds one.
pub struct Watch {
    consumer: Box<dyn Consumer>,
    pub new_results: BTreeMap<DetectionKey, usize>,
    pub changed: BTreeMap<DetectionKey, usize>,
    /// The first `NewResult`'s answer per key, to tell a repeated event from a contradicting one.
    first_answer: BTreeMap<DetectionKey, Answer>,
    /// Keys whose repeated `NewResult` named another status or process than the first.
    pub contradicted: Vec<DetectionKey>,
    /// The run's queue prefix, when known: a timeout then shows where the work is.
    pub prefix: Option<String>,
}

/// What a `NewResult` says: status and the probable process's identity.
type Answer = (i32, Option<(String, u32, String)>);

fn answer(c: Option<&pb::Correlation>) -> Answer {
    let c = c.cloned().unwrap_or_default();
    let p = c.probable.map(|p| (p.device_id, p.process_id, p.file_name));
    (c.status, p)
}

/// How many `NewResult` events a detection may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Events {
    /// Exactly one.
    ExactlyOnce,
    /// At least one, repeats saying the same: a broker restart can take a publish's confirm
    /// with it, and the correlator then publishes again rather than risk losing the event
    /// (at-least-once; consumers deduplicate by the message id, the detection key).
    RepeatsAllowed,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("new_results", &self.new_results.len())
            .field("changed", &self.changed.len())
            .finish()
    }
}

impl Watch {
    pub async fn bind(bus: &dyn Bus) -> Watch {
        let queue = QueueName::Custom("watch".into());
        bus.bind(queue.clone(), Topic::Correlations).await.unwrap();
        Watch {
            consumer: bus.subscribe(queue, 256).await.unwrap(),
            new_results: BTreeMap::new(),
            changed: BTreeMap::new(),
            first_answer: BTreeMap::new(),
            contradicted: Vec::new(),
            prefix: None,
        }
    }

    /// Takes events until `done` holds; panics at `deadline` (which only turns a hang into a
    /// failure).
    pub async fn until(&mut self, deadline: Instant, done: impl Fn(&Watch) -> bool) {
        while !done(self) {
            let d = tokio::time::timeout_at(deadline, self.consumer.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out with {} new results and {} changes\n{}",
                        self.new_results.len(),
                        self.changed.len(),
                        self.prefix.as_deref().map(queue_table).unwrap_or_default()
                    )
                })
                .expect("the correlations consumer stays open");
            self.settle(d).await;
        }
    }

    /// Takes whatever arrives within `quiet` of the previous event: for the final count after
    /// the services have stopped (nothing more can be published).
    pub async fn drain(&mut self, quiet: Duration) {
        while let Ok(Some(d)) = tokio::time::timeout(quiet, self.consumer.next()).await {
            self.settle(d).await;
        }
    }

    /// Counts an event once. A broker restart closes the channel under an ack: the broker then
    /// hands the same event again, flagged redelivered, and that copy is not a second event.
    async fn settle(&mut self, d: culprit_bus::Delivery) {
        let key = DetectionKey(d.message.message_id.clone());
        let ev = pb::CorrelationEvent::decode(d.message.payload.as_slice()).unwrap();
        let seen = match ev.kind {
            Some(pb::correlation_event::Kind::NewResult(_)) => self.new_results.contains_key(&key),
            _ => self.changed.contains_key(&key),
        };
        if !(d.redelivered && seen) {
            self.take(&d.message);
        }
        match d.ack().await {
            Ok(()) | Err(culprit_bus::BusError::ChannelClosed { .. }) => {}
            Err(e) => panic!("ack on the correlations queue: {e}"),
        }
    }

    fn take(&mut self, m: &Message) {
        let ev = pb::CorrelationEvent::decode(m.payload.as_slice()).unwrap();
        let key = DetectionKey(m.message_id.clone());
        match ev.kind {
            Some(pb::correlation_event::Kind::NewResult(nr)) => {
                let a = answer(nr.correlation.as_ref());
                match self.first_answer.get(&key) {
                    Some(first) if *first != a => self.contradicted.push(key.clone()),
                    Some(_) => {}
                    None => {
                        self.first_answer.insert(key.clone(), a);
                    }
                }
                *self.new_results.entry(key).or_default() += 1
            }
            Some(pb::correlation_event::Kind::AttributionChanged(_)) => {
                *self.changed.entry(key).or_default() += 1
            }
            None => panic!("event for {key} without a kind"),
        }
    }
}

/// Messages ready or unacknowledged in every queue of the run but `except` and the
/// dead-letter queues, which keep what they get (from the broker's own view, retry and delay
/// queues included).
pub fn queued(prefix: &str, except: &[&str]) -> Option<u64> {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages",
            "messages_unacknowledged",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0;
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [name, ready, unacked] = cols[..] else {
            continue;
        };
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let rest = rest.trim_start_matches('.');
        if rest.ends_with(".dlq") || except.contains(&rest) {
            continue;
        }
        total += ready.parse::<u64>().ok()? + unacked.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The run's queues as the broker sees them: name, ready, unacknowledged, consumers.
pub fn queue_table(prefix: &str) -> String {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("rabbitmqctl: {e}"),
    }
}

/// Waits until the run's queues (hunt, correlate, retry and re-query delays) stay empty over
/// three polls and the twin's call count stops moving: every re-query has been made.
pub async fn wait_quiet(prefix: &str, twin: &TwinSetup, deadline: Instant) {
    let mut calm = 0;
    let mut last_calls = u64::MAX;
    let mut polls = 0u32;
    while calm < 3 {
        assert!(
            Instant::now() < deadline,
            "the queues of {prefix} did not empty: {:?} queued\n{}",
            queued(prefix, &["watch", "policy"]),
            queue_table(prefix)
        );
        polls += 1;
        if polls.is_multiple_of(20) {
            // A long wait is worth seeing where: which queue holds what, and who consumes it.
            eprintln!(
                "still waiting ({polls} polls): {:?} queued, twin hunting calls {:?}\n{}",
                queued(prefix, &["watch", "policy"]),
                twin.calls().hunting,
                queue_table(prefix)
            );
        }
        let calls = twin.calls().hunting.total;
        if queued(prefix, &["watch", "policy"]) == Some(0) && calls == last_calls {
            calm += 1;
        } else {
            calm = 0;
        }
        last_calls = calls;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every stored result under the run's prefix, by key, decoded.
pub async fn stored_results(results: &dyn ResultStore) -> BTreeMap<DetectionKey, Vec<Correlation>> {
    let mut out: BTreeMap<DetectionKey, Vec<Correlation>> = BTreeMap::new();
    let filter = ResultFilter::default();
    let mut token: Option<String> = None;
    loop {
        let page = results.list(&filter, token.as_deref(), 1000).await.unwrap();
        for item in page.items {
            let c = Correlation::try_from(pb::Correlation::decode(item.bytes.as_slice()).unwrap())
                .unwrap();
            out.entry(item.key).or_default().push(c);
        }
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    out
}

pub async fn result_store(url: &str, prefix: &str) -> Arc<RedisStores> {
    Arc::new(RedisStores::connect(url, prefix).await.unwrap_or_else(|e| {
        panic!("these tests need Redis at {url} (set CULPRIT_TEST_REDIS_URL): {e}")
    }))
}

/// The run's verdict: one `NewResult` event and one stored result per detection, each naming
/// the expected process; the twin's quotas never exceeded nor hit.
pub async fn assert_complete(
    work: &[Work],
    watch: &Watch,
    results: &dyn ResultStore,
    twin: &TwinSetup,
    allow_hunt_failures: bool,
    events: Events,
) {
    let want: BTreeSet<DetectionKey> = work.iter().map(|w| w.detection.key()).collect();
    assert_eq!(want.len(), work.len(), "the detections' keys are distinct");
    let got: BTreeSet<DetectionKey> = watch.new_results.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "events: missing {missing:?}, unexpected {extra:?}"
    );
    let twice: Vec<_> = watch.new_results.iter().filter(|(_, n)| **n != 1).collect();
    match events {
        Events::ExactlyOnce => assert!(
            twice.is_empty(),
            "more than one NewResult: {:?}",
            &twice[..twice.len().min(5)]
        ),
        Events::RepeatsAllowed => eprintln!(
            "{} detections got a repeated NewResult (the same answer)",
            twice.len()
        ),
    }
    assert!(
        watch.contradicted.is_empty(),
        "a repeated NewResult contradicts the first: {:?}",
        &watch.contradicted[..watch.contradicted.len().min(5)]
    );

    let stored = stored_results(results).await;
    assert_eq!(
        stored.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "stored results are exactly the detections"
    );
    let dup: Vec<_> = stored
        .iter()
        .filter(|(_, v)| v.len() != 1)
        .take(5)
        .collect();
    assert!(dup.is_empty(), "a key stored twice: {dup:?}");
    let mut wrong = Vec::new();
    let mut failed = 0;
    for w in work {
        let c = &stored[&w.detection.key()][0];
        let ok = c.status == Status::Attributed
            && c.probable
                .as_ref()
                .is_some_and(|p| p.file_name == w.expected);
        if !ok {
            if allow_hunt_failures && c.status != Status::Attributed {
                failed += 1;
                continue;
            }
            wrong.push(format!(
                "{}: {:?} {:?} ({})",
                c.detection_id,
                c.status,
                c.probable.as_ref().map(|p| p.file_name.clone()),
                c.explanation
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    // A hunt that failed after every retry is an honest answer, but not the usual one.
    assert!(failed * 20 <= work.len(), "{failed} hunts failed");

    let calls = twin.calls();
    assert!(
        calls.hunting.max_in_60s <= 45 && calls.hunting.max_in_3600s <= 1500,
        "quota exceeded: {calls:?}"
    );
    assert_eq!(
        calls.hunting.throttled, 0,
        "the twin had to throttle: {calls:?}"
    );
    // Each detection is hunted twice (first answer, one re-query): batching must bring that
    // to well under one call per detection.
    assert!(
        calls.hunting.total * 10 <= work.len() as u64 * 2,
        "batching: {} hunting calls for {} detections (first hunts and re-queries)",
        calls.hunting.total,
        work.len()
    );
    eprintln!(
        "{} detections, {} hunting calls, {} attribution changes; twin counts {calls:?}",
        work.len(),
        calls.hunting.total,
        watch.changed.values().sum::<usize>()
    );
}

/// Runs a `redis-server` with append-only persistence on a free port, in its own directory.
#[derive(Debug)]
pub struct OwnRedis {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = OwnRedis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.launch().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ping = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "ping"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&ping.stdout).trim() == "PONG" {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server outright; what it acknowledged is on disk (appendfsync always).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.launch().await;
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One run: the tenant, the twin, the configuration file, the test's bus connection and
/// watch queue, and the result store the services write.
pub struct Run {
    pub prefix: String,
    pub tenant: SyntheticTenant,
    pub twin: TwinSetup,
    pub plan: Plan,
    pub config: PathBuf,
    pub bus: Arc<RabbitBus>,
    pub watch: Watch,
    pub results: Arc<RedisStores>,
    pub dir: tempfile::TempDir,
    /// The ingest role the detections enter through; taken when `finish` stops it.
    pub ingest: Option<Ingest>,
    pub sender: Sender,
    /// What `finish` accepts of the events.
    pub events: Events,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("prefix", &self.prefix).finish()
    }
}

/// The services' retry delays (`bus.retry_delays_secs`), short so that a retried message
/// comes back within a test.
pub const RETRY_DELAYS_SECS: [f64; 3] = [0.1, 0.3, 1.0];

/// The bound on one run: it only turns a hang into a failure.
pub const RUN_LIMIT: Duration = Duration::from_secs(600);

impl Run {
    pub async fn new(
        devices: usize,
        per_device: usize,
        faults: FaultConfig,
        adjust: impl FnOnce(&mut Plan),
    ) -> Run {
        if let Ok(filter) = std::env::var("CULPRIT_TEST_LOG") {
            let _ = culprit_telemetry::init("text", &filter);
        }
        let prefix = prefix();
        let tenant = synthetic_tenant(devices, per_device);
        let twin = start_twin(tenant.dir.path(), SCALE, faults).await;
        let mut plan = Plan::new(&prefix);
        adjust(&mut plan);
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &twin, &plan);
        let bus = Arc::new(connect_bus(&prefix).await);
        let mut watch = Watch::bind(bus.as_ref()).await;
        watch.prefix = Some(prefix.clone());
        let results = result_store(&plan.redis_url, &prefix).await;
        let ingest = start_ingest(&config, dir.path()).await;
        let sender = Sender::new(&ingest.url, &plan.webhook_token);
        Run {
            prefix,
            tenant,
            twin,
            plan,
            config,
            bus,
            watch,
            results,
            dir,
            ingest: Some(ingest),
            sender,
            events: Events::ExactlyOnce,
        }
    }

    /// Two hunters and a correlator, each a `culprit serve --role` of its own.
    pub fn start_services(&self) -> Vec<Service> {
        vec![
            start_role(&self.config, Role::Hunter),
            start_role(&self.config, Role::Hunter),
            start_role(&self.config, Role::Correlator),
        ]
    }

    /// Posts every detection to the ingest webhook from a task of its own, as the stream
    /// arrives.
    pub fn publish_all(&self) -> tokio::task::JoinHandle<()> {
        self.publish_range(0..self.tenant.work.len())
    }

    /// Posts the detections `range` of the tenant's work to the ingest webhook.
    pub fn publish_range(&self, range: Range<usize>) -> tokio::task::JoinHandle<()> {
        let sender = self.sender.clone();
        let work = self.tenant.work[range].to_vec();
        tokio::spawn(async move {
            let started = Instant::now();
            sender.send_all(&work).await;
            eprintln!(
                "webhook: {} detections accepted in {:.1} s",
                work.len(),
                started.elapsed().as_secs_f64()
            );
        })
    }

    pub async fn wait_results(&mut self, n: usize, deadline: Instant) {
        self.watch
            .until(deadline, |w| w.new_results.len() >= n)
            .await;
    }

    /// Waits for every answer and every re-query, stops the services, takes the last events
    /// and checks the verdict.
    pub async fn finish(
        &mut self,
        services: Vec<Service>,
        deadline: Instant,
        allow_hunt_failures: bool,
    ) {
        let n = self.tenant.work.len();
        let started = Instant::now();
        self.wait_results(n, deadline).await;
        let answered = started.elapsed();
        wait_quiet(&self.prefix, &self.twin, deadline).await;
        eprintln!(
            "finish: every detection answered after {:.1} s, queues quiet after {:.1} s more",
            answered.as_secs_f64(),
            (started.elapsed() - answered).as_secs_f64()
        );
        if let Some(ingest) = self.ingest.take() {
            let status = ingest.service.terminate(Duration::from_secs(60)).await;
            assert!(
                status.success(),
                "the ingest role exits 0 on SIGTERM: {status}"
            );
        }
        for s in services {
            s.stop().await;
        }
        self.watch.drain(Duration::from_secs(1)).await;
        let stats = &self.sender.stats;
        eprintln!(
            "webhook: {} POSTs, {} answered 503 and sent again, {} reported duplicate",
            stats.posts.load(Ordering::Relaxed),
            stats.retried.load(Ordering::Relaxed),
            stats.duplicates.load(Ordering::Relaxed)
        );
        assert_complete(
            &self.tenant.work,
            &self.watch,
            self.results.as_ref(),
            &self.twin,
            allow_hunt_failures,
            self.events,
        )
        .await;
    }

    pub async fn cleanup(self) {
        // The ingest dead-letter queue exists once ingest dead-lettered something.
        let ingest_dlq = QueueName::Custom(culprit_ingest_server::DEAD_LETTER_QUEUE.into());
        self.bus.delete_queue(&ingest_dlq).await.unwrap();
        // The re-query delay queues are not part of the topology `delete_topology` removes.
        let delays: Vec<Duration> = self
            .plan
            .requery_after_secs
            .iter()
            .map(|s| Duration::from_secs_f64(*s))
            .collect();
        self.bus
            .delete_delay_queues(&QueueName::Hunt, &delays)
            .await
            .unwrap();
        self.bus.delete_topology().await.unwrap();
        self.results.delete_all().await.unwrap();
        self.twin.twin.shutdown().await;
    }
}
