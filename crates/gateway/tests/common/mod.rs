//! `spawn_app()`: the real gateway on 127.0.0.1:0 with in-memory stores, the in-process bus and
//! (optionally) the MDE twin serving lsass_01 for tenant `acme`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use culprit_bus::{BusConfig, InProcessBus};
use culprit_cache::{Clock, MemoryStores, ResultMeta, ResultStore, SystemClock};
use culprit_gateway::stores::{GatewayStores, MemoryGatewayStores, RedisGatewayStores};
use culprit_gateway::{
    Gateway, GatewayConfig, Handles, Policy, Probe, Scope, bearer, create_key_with_id,
};
use culprit_mde::{ClientConfig, Cloud, Endpoints, MdeClient};
use culprit_mde_twin::{ManualClock as TwinManualClock, TwinConfig, TwinHandle};
use culprit_model::{DetectionKey, Status, Timestamp};
use culprit_proto::v1 as pb;
use culprit_proto::v1::correlation_service_client::CorrelationServiceClient;
use culprit_proto::v1::response_service_client::ResponseServiceClient;
use culprit_settings::{ApiKeySettings, GatewaySettings, ResponsePolicySettings};
use prost::Message;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Request;
use tonic::transport::Channel;

pub const ACME: &str = "acme";
pub const GLOBEX: &str = "globex";
pub const DEVICE: &str = "e28267a8375c8cc082a43a690e5d49796e73a79e";
pub const DEVICE_NAME: &str = "mkt01.pandalab.com";
const TWIN_TENANT: &str = "11111111-2222-3333-4444-555555555555";
const TWIN_CLIENT: &str = "culprit-app";
const TWIN_SECRET: &str = "twin-secret-value";

#[derive(Default)]
pub struct Options {
    pub twin: bool,
    /// Roles of the app registration in the twin (None: all).
    pub twin_roles: Option<Vec<String>>,
    pub policy: ResponsePolicySettings,
    pub probes: Vec<Arc<dyn Probe>>,
    pub rate_limit_per_key: u32,
    pub twin_data: Option<PathBuf>,
    pub clock: Option<Arc<dyn Clock>>,
    pub twin_latency_ms: u64,
    /// Gateway stores on Redis (a fresh prefix) instead of memory.
    pub redis: bool,
    pub tls: culprit_settings::GatewayTlsSettings,
}

pub struct App {
    pub addr: SocketAddr,
    pub channel: Channel,
    pub stores: Arc<dyn GatewayStores>,
    redis: Option<Arc<RedisGatewayStores>>,
    pub results: Arc<MemoryStores>,
    pub bus: InProcessBus,
    pub twin: Option<TwinHandle>,
    pub twin_clock: Arc<TwinManualClock>,
    /// Keys by name: `read`, `submit`, `respond` (acme only, one scope each), `all` (acme,
    /// every scope), `globex` (globex, every scope), `both` (acme and globex, every scope).
    pub keys: BTreeMap<&'static str, SecretString>,
    pub policy: Policy,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), culprit_gateway::GatewayError>>>,
}

pub fn scenario_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/lsass_01")
}

/// Twin time shortly after the recording, so the device is visible.
pub fn twin_start() -> Timestamp {
    Timestamp::parse("2023-08-16T05:10:00Z").unwrap()
}

async fn start_twin(o: &Options, clock: Arc<TwinManualClock>) -> (TwinHandle, MdeClient) {
    let dir = o.twin_data.clone().unwrap_or_else(scenario_dir);
    let mut cfg = TwinConfig::single_tenant(TWIN_TENANT, TWIN_CLIENT, TWIN_SECRET, vec![dir]);
    cfg.faults.latency_ms = o.twin_latency_ms;
    if let Some(roles) = &o.twin_roles {
        cfg.tenants[0].clients[0].roles = roles.clone();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let twin = culprit_mde_twin::Twin::start_with_clock(cfg, listener, Some(clock))
        .await
        .unwrap();
    let base = url::Url::parse(&twin.base_url()).unwrap();
    let mut cc = ClientConfig::new(
        Cloud::Commercial,
        TWIN_TENANT,
        TWIN_CLIENT,
        SecretString::from(TWIN_SECRET),
    );
    cc.endpoints = Some(Endpoints::single(&base));
    (twin, MdeClient::new(cc).unwrap())
}

fn key(
    name: &'static str,
    scopes: &[Scope],
    tenants: &[&str],
    out: &mut BTreeMap<&'static str, SecretString>,
) -> ApiKeySettings {
    let t: Vec<String> = tenants.iter().map(|s| (*s).to_owned()).collect();
    let created = create_key_with_id(name, scopes, &t).unwrap();
    let line = format!("k = {}", created.config_line);
    let parsed: toml::Table = line.parse().unwrap();
    out.insert(name, created.key);
    parsed["k"].clone().try_into().unwrap()
}

pub async fn spawn_app(o: Options) -> App {
    let mut keys = BTreeMap::new();
    let api_keys = vec![
        key("read", &[Scope::Read], &[ACME], &mut keys),
        key("submit", &[Scope::Submit], &[ACME], &mut keys),
        key("respond", &[Scope::Respond], &[ACME], &mut keys),
        key("all", &Scope::ALL, &[ACME], &mut keys),
        key("globex", &Scope::ALL, &[GLOBEX], &mut keys),
        key("both", &Scope::ALL, &[ACME, GLOBEX], &mut keys),
    ];
    let settings = GatewaySettings {
        api_keys,
        rate_limit_per_key: o.rate_limit_per_key,
        policy: o.policy.clone(),
        tls: o.tls.clone(),
        ..GatewaySettings::default()
    };
    let twin_clock = Arc::new(TwinManualClock::new(twin_start()));
    let mut mde = BTreeMap::new();
    let twin = if o.twin {
        let (twin, client) = start_twin(&o, twin_clock.clone()).await;
        mde.insert(ACME.to_owned(), client);
        Some(twin)
    } else {
        None
    };
    let results = Arc::new(MemoryStores::new());
    let redis = if o.redis {
        let url = std::env::var("CULPRIT_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("culprit-gw-test-{:016x}", rand::random::<u64>());
        Some(Arc::new(
            RedisGatewayStores::connect(&url, &prefix, 1000, 1000)
                .await
                .unwrap(),
        ))
    } else {
        None
    };
    let stores: Arc<dyn GatewayStores> = match &redis {
        Some(r) => r.clone(),
        None => Arc::new(MemoryGatewayStores::new(1000, 1000)),
    };
    let bus = InProcessBus::new(BusConfig::default()).unwrap();
    let handles = Handles {
        results: results.clone(),
        idempotency: results.clone(),
        publisher: Arc::new(bus.clone()),
        submit: None,
        subscriber: Some(Arc::new(bus.clone())),
        stores: stores.clone(),
        mde,
        probes: o.probes,
        clock: o.clock.clone().unwrap_or_else(|| Arc::new(SystemClock)),
    };
    let gateway = Gateway::new(GatewayConfig { settings, handles }).unwrap();
    let policy = gateway.policy();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, async {
        let _ = stopped.await;
    }));
    // Lazy: a TLS test dials with its own channel.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    App {
        addr,
        channel,
        stores,
        redis,
        results,
        bus,
        twin,
        twin_clock,
        keys,
        policy,
        stop: Some(stop),
        server: Some(server),
    }
}

impl App {
    pub fn corr(&self) -> CorrelationServiceClient<Channel> {
        CorrelationServiceClient::new(self.channel.clone())
    }

    pub fn resp(&self) -> ResponseServiceClient<Channel> {
        ResponseServiceClient::new(self.channel.clone())
    }

    /// `msg` with the named key's bearer header (`None`: no header).
    pub fn req<T>(&self, key: Option<&str>, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(k) = key {
            let v = bearer(&self.keys[k]);
            r.metadata_mut().insert("authorization", v.parse().unwrap());
        }
        r
    }

    /// Stores an answer as the correlator would.
    pub async fn store(&self, c: &pb::Correlation) {
        let meta = ResultMeta {
            tenant: c.tenant.clone(),
            device_id: c.device.as_ref().map(|d| d.device_id.clone()),
            status: model_status(c.status),
            confidence: c.probable.as_ref().map_or(0.0, |p| p.confidence),
            computed_at: culprit_proto::convert::timestamp_from_proto(
                "computed_at",
                c.computed_at.as_ref().unwrap(),
            )
            .unwrap(),
        };
        self.results
            .put(
                &DetectionKey(c.detection_key.clone()),
                &c.encode_to_vec(),
                &meta,
            )
            .await
            .unwrap();
    }

    /// The twin's recorded machine actions for the tenant.
    pub async fn twin_actions(&self) -> Vec<serde_json::Value> {
        let twin = self.twin.as_ref().unwrap();
        let url = format!("{}/_twin/actions/{TWIN_TENANT}", twin.base_url());
        let body = reqwest_get(&url).await;
        body["value"].as_array().cloned().unwrap_or_default()
    }

    pub async fn audit(&self) -> Vec<culprit_gateway::stores::AuditRecord> {
        let mut v = self.stores.recent(1000).await.unwrap();
        v.reverse();
        v
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.unwrap().unwrap();
        }
        if let Some(t) = self.twin.take() {
            t.shutdown().await;
        }
        if let Some(r) = self.redis.take() {
            r.delete_all().await.unwrap();
        }
    }
}

async fn reqwest_get(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

pub fn model_status(v: i32) -> Status {
    culprit_proto::convert::status_from_proto("status", v).unwrap()
}

pub fn ts(s: &str) -> prost_types::Timestamp {
    culprit_proto::convert::timestamp_to_proto(Timestamp::parse(s).unwrap())
}

/// An attributed answer for lsass_01's C2 detection in `tenant`, with its own id.
pub fn correlation(tenant: &str, id: &str) -> pb::Correlation {
    pb::Correlation {
        detection_id: id.to_owned(),
        detection_key: format!("vectra:{tenant}:{id}:2023-08-16T04:59:22Z"),
        source: pb::SourceKind::Vectra as i32,
        tenant: tenant.to_owned(),
        status: pb::Status::Attributed as i32,
        explanation: "owns 4 of 5 sessions".into(),
        device: Some(pb::DeviceRef {
            device_id: DEVICE.into(),
            device_name: DEVICE_NAME.into(),
            ..Default::default()
        }),
        probable: Some(pb::ProcessAnswer {
            device_id: DEVICE.into(),
            device_name: DEVICE_NAME.into(),
            process_id: 1988,
            file_name: "winx64_payload.exe".into(),
            confidence: 0.97,
            ..Default::default()
        }),
        detection: Some(pb::DetectionSummary {
            detection_type: "Hidden HTTPS Tunnel".into(),
            category: "command_and_control".into(),
            threat: Some(80),
            certainty: Some(90),
            ..Default::default()
        }),
        scorer: "culprit".into(),
        computed_at: Some(ts("2023-08-16T05:05:00Z")),
        ..Default::default()
    }
}
