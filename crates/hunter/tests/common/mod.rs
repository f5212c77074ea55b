//! Test rig: a hunter on the in-process bus and memory stores, a scripted hunting backend,
//! a clock that follows tokio's (paused) time, and detections with far-apart windows so each
//! one's rows are told apart by time alone.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use culprit_bus::{
    Bus, BusConfig, BusInspector, Consumer, InProcessBus, Message, Publisher, QueueName,
    Subscriber, Topic,
};
use culprit_cache::{BudgetLimits, Clock, Stores};
use culprit_hunter::service::{
    DETECTION_SCHEMA, HEADER_REQUERY, HunterConfig, HunterService, SCHEMA_HEADER,
};
use culprit_hunter::{Answer, HuntError, HuntHooks, HuntingBackend};
use culprit_model::detection::Subject;
use culprit_model::{
    Column, Detection, Direction, HostRef, KustoType, SourceKind, Table, Timestamp, Value, Window,
};
use culprit_proto::TelemetryBundle;
use culprit_proto::v1 as pb;
use culprit_runtime::Shutdown;
use futures::future::BoxFuture;
use prost::Message as _;

pub const TENANT: &str = "lab";
pub const T0: Timestamp = Timestamp::from_unix_seconds(1_780_000_000);
/// Detection windows are this far apart.
const SPACING_HOURS: i64 = 6;
/// Bound on any wait in a test, in (paused) tokio time: turns a hang into a failure.
const PATIENCE: Duration = Duration::from_secs(6 * 3600);

/// "Now" moves with tokio's clock, so paused time drives budget windows and holds too.
#[derive(Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        T0 + culprit_model::Duration::from_std(self.start.elapsed())
    }
}

/// Detection `i` from host 10.0.0.`host`, its 5-minute window `i × 6` hours after T0.
pub fn detection(i: u8, host: u8) -> Detection {
    let start = T0 + culprit_model::Duration::from_hours(SPACING_HOURS * i64::from(i));
    Detection {
        source: SourceKind::Vectra,
        tenant: TENANT.into(),
        source_id: format!("d{i}"),
        revision: "1".into(),
        category: "command & control".into(),
        detection_type: "Hidden HTTPS Tunnel".into(),
        threat: Some(50),
        certainty: Some(50),
        severity: None,
        subject: Subject::Host,
        direction: Direction::Outbound,
        host: HostRef {
            ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, host))),
            ..HostRef::default()
        },
        window: Window::new(start, start + culprit_model::Duration::from_minutes(5)),
        flows: Vec::new(),
        needs_target_list: false,
        summary: None,
        warnings: Vec::new(),
    }
}

/// One `DeviceNetworkEvents` row inside each listed detection's window.
pub fn rows_for(ids: &[u8]) -> Table {
    let mut t = Table::new(vec![
        Column::new("TableName", KustoType::String),
        Column::new("Timestamp", KustoType::DateTime),
        Column::new("DeviceId", KustoType::String),
    ]);
    for i in ids {
        let at = T0
            + culprit_model::Duration::from_hours(SPACING_HOURS * i64::from(*i))
            + culprit_model::Duration::from_minutes(1);
        t.rows.push(vec![
            Value::String("DeviceNetworkEvents".into()),
            Value::DateTime(at),
            Value::String(format!("device-{i}")),
        ]);
    }
    t
}

pub fn all_ips() -> Vec<u8> {
    (0..20).collect()
}

pub fn throttled(retry_after: Option<Duration>) -> HuntError {
    HuntError {
        kind: "throttled".into(),
        message: "throttled by Microsoft (minute quota)".into(),
        retryable: true,
        split: false,
        retry_after,
    }
}

pub fn server_error() -> HuntError {
    HuntError {
        kind: "service".into(),
        message: "HTTP 503 Service Unavailable".into(),
        retryable: true,
        split: false,
        retry_after: None,
    }
}

type Rule = Box<dyn Fn(usize) -> Result<Answer, HuntError> + Send + Sync>;

/// A hunting backend answering from a script: queued answers first, then its standing rule.
/// Records when each call came and how many detections its query covered.
pub struct Scripted {
    queued: Mutex<VecDeque<Result<Answer, HuntError>>>,
    rule: Rule,
    calls: Mutex<Vec<(tokio::time::Instant, usize)>>,
    queries: Mutex<Vec<String>>,
    called: tokio::sync::Notify,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripted")
            .field("calls", &self.calls())
            .finish()
    }
}

impl Scripted {
    fn with(
        rule: impl Fn(usize) -> Result<Answer, HuntError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Scripted {
            queued: Mutex::new(VecDeque::new()),
            rule: Box::new(rule),
            calls: Mutex::new(Vec::new()),
            queries: Mutex::new(Vec::new()),
            called: tokio::sync::Notify::new(),
        })
    }
    /// Rows for every detection's window.
    pub fn answering() -> Arc<Self> {
        Self::with(|_| {
            Ok(Answer {
                table: rows_for(&all_ips()),
                truncated: false,
            })
        })
    }
    /// No rows at all.
    pub fn empty() -> Arc<Self> {
        Self::with(|_| {
            Ok(Answer {
                table: rows_for(&[]),
                truncated: false,
            })
        })
    }
    /// The same error every time.
    pub fn failing(e: HuntError) -> Arc<Self> {
        Self::with(move |_| Err(e.clone()))
    }
    pub fn by_size(
        rule: impl Fn(usize) -> Result<Answer, HuntError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Self::with(rule)
    }
    pub fn push(&self, answer: Result<Answer, HuntError>) {
        self.queued.lock().unwrap().push_back(answer);
    }
    pub fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
    pub fn times(&self) -> Vec<tokio::time::Instant> {
        self.calls.lock().unwrap().iter().map(|c| c.0).collect()
    }
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
    pub fn sizes(&self) -> Vec<usize> {
        self.calls.lock().unwrap().iter().map(|c| c.1).collect()
    }
    /// Waits until at least `n` calls were made.
    pub async fn wait_calls(&self, n: usize) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let notified = self.called.notified();
                if self.calls() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("the backend was called in time");
    }
}

impl HuntingBackend for Scripted {
    fn hunt<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<Answer, HuntError>> {
        Box::pin(async move {
            // Each detection with an address adds one `let ipsN = ...` to the query.
            let size = query.matches("let ips").count();
            self.calls
                .lock()
                .unwrap()
                .push((tokio::time::Instant::now(), size));
            self.queries.lock().unwrap().push(query.to_owned());
            self.called.notify_waiters();
            let queued = self.queued.lock().unwrap().pop_front();
            queued.unwrap_or_else(|| (self.rule)(size))
        })
    }
}

/// Hooks with no budget: throttling sleeps.
pub struct NoHooks;

impl HuntHooks for NoHooks {
    fn spend(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn throttled(&self, retry_after: Option<Duration>) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(retry_after.unwrap_or_default()))
    }
}

/// The hunter settings these tests start from: a 2 s batch window, no re-query.
pub fn config() -> HunterConfig {
    HunterConfig {
        batch_window: Duration::from_secs(2),
        max_batch: 50,
        prefetch: 64,
        requery_after: Vec::new(),
        ..HunterConfig::default()
    }
}

pub fn bus_config() -> BusConfig {
    BusConfig {
        retry_delays: vec![
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(30),
        ],
        max_attempts: 5,
        ..BusConfig::default()
    }
}

/// One hunter worker and what it talks to.
pub struct Rig {
    pub bus: Arc<InProcessBus>,
    pub stores: Stores,
    pub clock: Arc<TokioClock>,
    pub backend: Arc<Scripted>,
    pub shutdown: Shutdown,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    bundles: tokio::sync::Mutex<Box<dyn Consumer>>,
}

impl Rig {
    pub async fn start(backend: Arc<Scripted>, config: HunterConfig) -> Rig {
        let bus = Arc::new(InProcessBus::new(bus_config()).unwrap());
        let clock = Arc::new(TokioClock::new());
        let stores = Stores::memory(clock.clone(), BudgetLimits::default()).unwrap();
        let mut backends: BTreeMap<String, Arc<dyn HuntingBackend>> = BTreeMap::new();
        backends.insert(TENANT.into(), backend.clone());
        let dyn_bus: Arc<dyn Bus> = bus.clone();
        let hunter = HunterService::new(
            dyn_bus,
            stores.budget.clone(),
            clock.clone(),
            backends,
            config,
        )
        .with_stores(&stores);
        let bundles = bus.subscribe(QueueName::Correlate, 64).await.unwrap();
        let shutdown = Shutdown::new();
        let sd = shutdown.clone();
        let worker = tokio::spawn(async move { hunter.run(sd).await.unwrap() });
        Rig {
            bus,
            stores,
            clock,
            backend,
            shutdown,
            worker: Mutex::new(Some(worker)),
            bundles: tokio::sync::Mutex::new(bundles),
        }
    }

    pub async fn publish(&self, d: &Detection) {
        let msg = Message::new(d.key().as_str(), pb::Detection::from(d).encode_to_vec())
            .with_header(SCHEMA_HEADER, DETECTION_SCHEMA);
        self.bus.publish(Topic::Detections, msg).await.unwrap();
    }

    /// A re-query message as the hunter schedules it, delivered at once.
    pub async fn publish_requery(&self, d: &Detection, n: u32) {
        let msg = Message::new(d.key().as_str(), pb::Detection::from(d).encode_to_vec())
            .with_header(SCHEMA_HEADER, DETECTION_SCHEMA)
            .with_header(HEADER_REQUERY, n.to_string());
        self.bus.publish(Topic::Detections, msg).await.unwrap();
    }

    /// Waits until the worker took everything published so far off the queue.
    pub async fn wait_taken(&self) {
        for _ in 0..10_000 {
            if self.bus.queue_depth(QueueName::Hunt).await.unwrap() == 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the worker did not take its deliveries");
    }

    /// The next `n` bundles, in arrival order, acknowledged.
    pub async fn bundles(&self, n: usize) -> Vec<TelemetryBundle> {
        let mut consumer = self.bundles.lock().await;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let d = tokio::time::timeout(PATIENCE, consumer.next())
                .await
                .unwrap_or_else(|_| panic!("bundle {} of {n} did not come", out.len() + 1))
                .expect("bus open");
            let p = pb::TelemetryBundle::decode(d.message.payload.as_slice()).unwrap();
            out.push(TelemetryBundle::try_from(p).unwrap());
            d.ack().await.unwrap();
        }
        out
    }

    /// Publishes a detection of its own (host 250) and waits for its bundle: everything
    /// published before it has been handled by then. Fails if another bundle comes first.
    pub async fn wait_idle(&self) {
        let sentinel = detection(19, 250);
        self.publish(&sentinel).await;
        let b = self.bundles(1).await;
        assert_eq!(
            b[0].detection_key,
            sentinel.key(),
            "an unexpected bundle came before the sentinel's"
        );
    }

    pub async fn assert_no_more_bundles(&self) {
        let mut consumer = self.bundles.lock().await;
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
            panic!("unexpected bundle for {}", d.message.message_id);
        }
    }

    /// Nothing waiting, nothing dead-lettered.
    pub async fn assert_settled(&self) {
        assert_eq!(self.bus.queue_depth(QueueName::Hunt).await.unwrap(), 0);
        let dead = self.bus.dead_letters(QueueName::Hunt, 10).await.unwrap();
        assert!(dead.is_empty(), "dead letters: {dead:?}");
    }

    /// Whether the worker returned (within the patience bound).
    pub async fn stopped(&self) -> bool {
        let worker = self.worker.lock().unwrap().take();
        match worker {
            Some(w) => tokio::time::timeout(PATIENCE, w).await.is_ok(),
            None => true,
        }
    }
}
