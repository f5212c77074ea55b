//! The MDE client against the MDE digital twin over loopback HTTP: every client call in every
//! cloud configuration (tokens in the cloud's scope form, hunting on Graph and on the MDE API,
//! machine lookups, isolation and release), the v1 token form, errors end to end, and the
//! shared, single-flight, refreshed token.
//!
//! Each test starts its own twin on `127.0.0.1:0` with a [`ManualClock`], so quota windows,
//! token lifetimes and machine-action lifecycles move only when a test moves them. Expected
//! values come from the scenario files, read independently of the twin.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns too

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use culprit_mde::{
    ActionStatus, Audience, Cloud, Endpoints, HuntResult, HuntingApi, IsolationState,
    IsolationType, MachineAction, MachineSelector, MdeClient, MdeError, Quota, TokenForm, links,
};
use culprit_mde_twin::config::{
    ROLE_ADVANCED_QUERY, ROLE_MACHINE_ISOLATE, ROLE_MACHINE_READ, ROLE_THREAT_HUNTING, all_roles,
};
use culprit_mde_twin::{
    ClockConfig, LoadedData, ManualClock, TenantConfig, Twin, TwinClock, TwinConfig, TwinHandle,
};
use culprit_model::{Duration, Timestamp, Value};
use secrecy::SecretString;
use serde_json::Value as Json;
use url::Url;

/// A hunting query touching strings, ints, datetimes (with nulls) and a JSON-text column.
const QUERY: &str = "DeviceNetworkEvents | where RemotePort == 8080 \
    | project Timestamp, DeviceName, RemoteIP, RemotePort, InitiatingProcessFileName, \
      InitiatingProcessId, InitiatingProcessCreationTime, AdditionalFields \
    | order by Timestamp asc";
const CHEAP_QUERY: &str = "DeviceInfo | take 1";

fn scenario() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/scenarios/lsass_01")
}

fn jsonl(table: &str) -> Vec<Json> {
    let path = scenario().join("mde").join(format!("{table}.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn random_name(kind: &str) -> String {
    format!("{kind}-{:016x}", rand::random::<u64>())
}

/// What the scenario files say, read without the twin.
#[derive(Debug)]
struct Truth {
    device_id: String,
    device_name: String,
    ip: IpAddr,
    /// When the device reported holding `ip`.
    ip_seen: Timestamp,
    /// `(file name, pid)` of each row [`QUERY`] must return, in time order.
    query_rows: Vec<(String, i64)>,
}

impl Truth {
    fn read() -> Self {
        let info = jsonl("DeviceInfo").remove(0);
        let net = jsonl("DeviceNetworkInfo").remove(0);
        let addresses: Json = serde_json::from_str(net["IPAddresses"].as_str().unwrap()).unwrap();
        let ip = addresses
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["IPAddress"].as_str()?.parse::<IpAddr>().ok())
            .find(IpAddr::is_ipv4)
            .unwrap();
        let mut events: Vec<Json> = jsonl("DeviceNetworkEvents")
            .into_iter()
            .filter(|e| e["RemotePort"] == 8080)
            .collect();
        events.sort_by_key(|e| Timestamp::parse(e["Timestamp"].as_str().unwrap()).unwrap());
        Truth {
            device_id: info["DeviceId"].as_str().unwrap().to_owned(),
            device_name: info["DeviceName"].as_str().unwrap().to_owned(),
            ip,
            ip_seen: Timestamp::parse(net["Timestamp"].as_str().unwrap()).unwrap(),
            query_rows: events
                .iter()
                .map(|e| {
                    let name = e["InitiatingProcessFileName"].as_str().unwrap().to_owned();
                    (name, e["InitiatingProcessId"].as_i64().unwrap())
                })
                .collect(),
        }
    }
}

/// The audiences each cloud's tokens must name (shared/reference/mde-api.md §1.2): Graph, then
/// the MDE API. Written out here rather than read from the client's table, so a wrong table
/// entry fails.
fn documented_audiences(cloud: Cloud) -> [&'static str; 2] {
    const COMMERCIAL_MDE: &str = "https://api.securitycenter.microsoft.com";
    const GOV_MDE: &str = "https://api-gov.securitycenter.microsoft.us";
    match cloud {
        Cloud::Commercial | Cloud::CommercialUs | Cloud::CommercialEu | Cloud::CommercialUk => {
            ["https://graph.microsoft.com", COMMERCIAL_MDE]
        }
        Cloud::Gcc => [
            "https://graph.microsoft.com",
            "https://api-gcc.securitycenter.microsoft.us",
        ],
        Cloud::GccHigh => ["https://graph.microsoft.us", GOV_MDE],
        Cloud::Dod => ["https://dod-graph.microsoft.us", GOV_MDE],
    }
}

/// `(field, value)` of the `scope` / `resource` field of each token request seen.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

#[derive(Clone, Debug)]
struct Recorder {
    twin: String,
    http: reqwest::Client,
    seen: Seen,
}

/// Notes which audience a token request names, then passes it to the twin unchanged.
async fn record_token_request(
    State(r): State<Recorder>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    let audience = url::form_urlencoded::parse(&body)
        .into_owned()
        .find(|(k, _)| k == "scope" || k == "resource");
    r.seen.lock().unwrap().extend(audience);
    let mut forward = r.http.post(format!("{}/{path}", r.twin)).body(body);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        forward = forward.header(header::CONTENT_TYPE, ct.as_bytes());
    }
    let answer = forward.send().await.unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    (status, answer.bytes().await.unwrap().to_vec())
}

/// A login host on loopback that records token requests on their way to the twin.
async fn recording_login(twin: &TwinHandle) -> (Url, Seen) {
    let seen = Seen::default();
    let recorder = Recorder {
        twin: twin.base_url(),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        seen: seen.clone(),
    };
    let app = axum::Router::new()
        .route("/{*path}", post(record_token_request))
        .with_state(recorder);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// The client's clock reads the twin's [`ManualClock`]; while `step_secs` is non-zero every
/// read also moves it on, which stands in for time passing between polls.
#[derive(Debug)]
struct TwinTime {
    clock: Arc<ManualClock>,
    step_secs: AtomicI64,
}

impl culprit_mde::Clock for TwinTime {
    fn now(&self) -> Timestamp {
        let step = self.step_secs.load(Ordering::SeqCst);
        if step > 0 {
            self.clock.advance(Duration::from_seconds(step));
        }
        self.clock.now()
    }
}

/// One twin serving one tenant with the scenario's data, and the credentials of its apps.
struct Lab {
    twin: TwinHandle,
    clock: Arc<ManualClock>,
    time: Arc<TwinTime>,
    tenant: String,
    secret: String,
    lifetime_secs: u64,
}

impl Lab {
    /// One app holding every role.
    async fn start() -> (Lab, String) {
        let app = random_name("app");
        (Lab::with_apps(&[(&app, all_roles())]).await, app)
    }

    async fn with_apps(apps: &[(&str, Vec<String>)]) -> Lab {
        let tenant = random_name("tenant");
        let secret = random_name("secret");
        let clients = apps
            .iter()
            .map(|(id, roles)| culprit_mde_twin::ClientConfig {
                client_id: (*id).to_owned(),
                client_secret: SecretString::from(secret.clone()),
                roles: roles.clone(),
            })
            .collect();
        let config = TwinConfig {
            tenants: vec![TenantConfig {
                tenant_id: tenant.clone(),
                clients,
                data_dirs: vec![scenario()],
            }],
            ..TwinConfig::default()
        };
        // Start where the twin's own clock would: shortly after the newest row.
        let newest = LoadedData::load(&[scenario()]).unwrap().newest().unwrap();
        let start = newest + Duration::from_seconds(ClockConfig::DEFAULT_LEAD_SECS);
        let clock = Arc::new(ManualClock::new(start));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let lifetime_secs = config.token_lifetime_secs;
        let twin_clock: Arc<dyn TwinClock> = clock.clone();
        let twin = Twin::start_with_clock(config, listener, Some(twin_clock))
            .await
            .unwrap();
        let time = Arc::new(TwinTime {
            clock: clock.clone(),
            step_secs: AtomicI64::new(0),
        });
        Lab {
            twin,
            clock,
            time,
            tenant,
            secret,
            lifetime_secs,
        }
    }

    /// Login, Graph and MDE API on the twin; the cloud's own portal for links.
    fn config(&self, cloud: Cloud, app: &str) -> culprit_mde::ClientConfig {
        let secret = SecretString::from(self.secret.clone());
        let mut cfg = culprit_mde::ClientConfig::new(cloud, &self.tenant, app, secret);
        let mut endpoints = Endpoints::single(&Url::parse(&self.twin.base_url()).unwrap());
        endpoints.portal = cloud.endpoints().portal;
        cfg.endpoints = Some(endpoints);
        cfg
    }

    /// As [`Lab::config`], with the token requests going through a recording login host.
    async fn recorded_config(&self, cloud: Cloud, app: &str) -> (culprit_mde::ClientConfig, Seen) {
        let (login, seen) = recording_login(&self.twin).await;
        let mut cfg = self.config(cloud, app);
        if let Some(e) = cfg.endpoints.as_mut() {
            e.login = login;
        }
        (cfg, seen)
    }

    /// A client on the twin's clock.
    fn client(&self, cfg: culprit_mde::ClientConfig) -> MdeClient {
        MdeClient::with_clock(cfg, self.time.clone()).unwrap()
    }

    fn tokens_issued(&self) -> u64 {
        self.twin.call_counts(&self.tenant).tokens_issued
    }

    fn advance(&self, secs: i64) {
        self.clock.advance(Duration::from_seconds(secs));
    }
}

/// The process columns of a hunting result, in row order.
fn processes(r: &HuntResult) -> Vec<(String, i64)> {
    let name = r.table.column_index("InitiatingProcessFileName").unwrap();
    let pid = r.table.column_index("InitiatingProcessId").unwrap();
    r.table
        .rows
        .iter()
        .map(|row| {
            let n = row[name].as_str().unwrap().to_owned();
            (n, row[pid].as_i64().unwrap())
        })
        .collect()
}

/// Graph and MDE hunting give the same typed table, and it holds what the files hold.
async fn hunt_both_apis(client: &MdeClient, truth: &Truth) {
    let graph = client.hunt(QUERY, None).await.unwrap();
    let mde = client.hunt_via(HuntingApi::Mde, QUERY, None).await.unwrap();
    assert_eq!((graph.api, mde.api), (HuntingApi::Graph, HuntingApi::Mde));
    assert_eq!(graph.table, mde.table, "both API shapes parse to one table");
    assert!(!graph.truncated);
    assert_eq!(processes(&graph), truth.query_rows);
    let created = graph
        .table
        .column_index("InitiatingProcessCreationTime")
        .unwrap();
    assert!(
        graph.table.rows.iter().any(|r| r[created] == Value::Null),
        "null datetimes stay null"
    );
    let time = graph.table.column_index("Timestamp").unwrap();
    assert!(
        graph
            .table
            .rows
            .iter()
            .all(|r| matches!(r[time], Value::DateTime(_)))
    );
}

/// Every selector names the scenario's one machine.
async fn look_up_machines(client: &MdeClient, truth: &Truth) {
    let by_id = client
        .resolve(&MachineSelector::Id(truth.device_id.clone()))
        .await
        .unwrap();
    assert_eq!(
        by_id.computer_dns_name.as_deref(),
        Some(&*truth.device_name)
    );
    assert_eq!(by_id.isolation_state.as_deref(), Some("NotIsolated"));
    let selectors = [
        MachineSelector::DnsName(truth.device_name.clone()),
        MachineSelector::LastIp(truth.ip),
        MachineSelector::IpAt(truth.ip, truth.ip_seen),
    ];
    for s in &selectors {
        let m = client.resolve(s).await.unwrap();
        assert_eq!(m.id, truth.device_id, "{s:?}");
    }
    let listed = client.machines_top(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, truth.device_id);
}

/// Polls with the client's clock ticking, so the twin moves the action on between polls.
async fn wait_final(lab: &Lab, client: &MdeClient, action: &MachineAction) -> MachineAction {
    lab.time.step_secs.store(5, Ordering::SeqCst);
    let done = client
        .wait_for_action(
            &action.id,
            StdDuration::from_millis(1),
            StdDuration::from_secs(600),
        )
        .await;
    lab.time.step_secs.store(0, Ordering::SeqCst);
    let done = done.unwrap();
    assert_eq!(done.status, ActionStatus::Succeeded);
    assert_eq!(done.id, action.id);
    done
}

/// Isolate, see it pending, poll it to Succeeded, see the machine isolated, release.
async fn isolate_and_release(lab: &Lab, client: &MdeClient, machine_id: &str) {
    let comment = random_name("isolate");
    let isolate = client
        .isolate(machine_id, IsolationType::Full, &comment)
        .await
        .unwrap();
    assert_eq!(isolate.status, ActionStatus::Pending);
    assert_eq!(isolate.action_type, "Isolate");
    assert_eq!(isolate.scope.as_deref(), Some("Full"));
    assert_eq!(isolate.requestor_comment.as_deref(), Some(&*comment));
    let state = client.isolation_state(machine_id).await.unwrap();
    assert!(
        matches!(&state, IsolationState::Pending(a) if a.id == isolate.id),
        "{state:?}"
    );
    wait_final(lab, client, &isolate).await;
    let state = client.isolation_state(machine_id).await.unwrap();
    assert!(
        matches!(&state, IsolationState::Isolated(a) if a.id == isolate.id),
        "{state:?}"
    );
    let machine = client.machine(machine_id).await.unwrap();
    assert_eq!(machine.isolation_state.as_deref(), Some("Isolated"));

    let release = client
        .release(machine_id, "release after test")
        .await
        .unwrap();
    assert_eq!(release.action_type, "Unisolate");
    wait_final(lab, client, &release).await;
    let state = client.isolation_state(machine_id).await.unwrap();
    assert!(
        matches!(&state, IsolationState::NotIsolated(Some(a)) if a.id == release.id),
        "{state:?}"
    );
    let machine = client.machine(machine_id).await.unwrap();
    assert_eq!(machine.isolation_state.as_deref(), Some("NotIsolated"));
}

/// Every call of the client, in one cloud configuration.
async fn exercise_cloud(cloud: Cloud) {
    let truth = Truth::read();
    let (lab, app) = Lab::start().await;
    let (cfg, seen) = lab.recorded_config(cloud, &app).await;
    let client = lab.client(cfg);
    // The twin grants a token only the roles of the audience it names, so these prove each
    // token was issued for the Graph or the MDE resource of this cloud's scope.
    let graph_roles = client.granted_roles(Audience::Graph).await.unwrap();
    assert_eq!(graph_roles, Some(vec![ROLE_THREAT_HUNTING.to_owned()]));
    let mut mde_roles = client.granted_roles(Audience::Mde).await.unwrap().unwrap();
    mde_roles.sort();
    let mut expected = vec![ROLE_ADVANCED_QUERY, ROLE_MACHINE_ISOLATE, ROLE_MACHINE_READ];
    expected.sort_unstable();
    assert_eq!(mde_roles, expected);

    hunt_both_apis(&client, &truth).await;
    look_up_machines(&client, &truth).await;
    isolate_and_release(&lab, &client, &truth.device_id).await;
    assert_eq!(lab.tokens_issued(), 2, "one token per audience, reused");
    let scopes: Vec<(String, String)> = documented_audiences(cloud)
        .iter()
        .map(|a| ("scope".to_owned(), format!("{a}/.default")))
        .collect();
    assert_eq!(*seen.lock().unwrap(), scopes, "v2 scope form of this cloud");

    let page = links::device_page(client.portal(), &truth.device_id).unwrap();
    assert_eq!(page.host_str(), cloud.endpoints().portal.host_str());
    lab.twin.shutdown().await;
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "non-text panic".to_owned()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_works_against_the_twin_in_every_cloud() {
    let runs: Vec<_> = Cloud::ALL
        .into_iter()
        .map(|cloud| (cloud, tokio::spawn(exercise_cloud(cloud))))
        .collect();
    let mut failures = Vec::new();
    for (cloud, run) in runs {
        if let Err(e) = run.await {
            failures.push(format!("{cloud:?}: {}", panic_text(e)));
        }
    }
    assert!(
        failures.is_empty(),
        "failed clouds:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn v1_resource_tokens_work_against_the_twin() {
    let truth = Truth::read();
    let (lab, app) = Lab::start().await;
    let (mut cfg, seen) = lab.recorded_config(Cloud::Commercial, &app).await;
    cfg.token_form = TokenForm::V1Resource;
    let client = lab.client(cfg);
    hunt_both_apis(&client, &truth).await;
    let m = client.machine(&truth.device_id).await.unwrap();
    assert_eq!(m.id, truth.device_id);
    assert_eq!(lab.tokens_issued(), 2);
    let resources: Vec<(String, String)> = documented_audiences(Cloud::Commercial)
        .iter()
        .map(|a| ("resource".to_owned(), (*a).to_owned()))
        .collect();
    assert_eq!(
        *seen.lock().unwrap(),
        resources,
        "v1 resource form, no /.default"
    );
}

#[tokio::test]
async fn a_wrong_secret_is_invalid_client() {
    let (lab, app) = Lab::start().await;
    let mut cfg = lab.config(Cloud::Commercial, &app);
    cfg.client_secret = SecretString::from(random_name("wrong"));
    let err = lab.client(cfg).hunt(CHEAP_QUERY, None).await.unwrap_err();
    assert!(matches!(err, MdeError::InvalidClient { .. }), "{err:?}");
    assert_eq!(lab.tokens_issued(), 0);
}

#[tokio::test]
async fn an_unknown_tenant_is_named() {
    let (lab, app) = Lab::start().await;
    let mut cfg = lab.config(Cloud::Commercial, &app);
    let other = random_name("tenant");
    cfg.tenant_id = other.clone();
    let err = lab.client(cfg).hunt(CHEAP_QUERY, None).await.unwrap_err();
    assert!(
        matches!(&err, MdeError::UnknownTenant { tenant, .. } if *tenant == other),
        "{err:?}"
    );
}

#[tokio::test]
async fn missing_roles_are_forbidden_and_named() {
    let app = random_name("app");
    let roles = vec![ROLE_ADVANCED_QUERY.to_owned(), ROLE_MACHINE_READ.to_owned()];
    let lab = Lab::with_apps(&[(&app, roles)]).await;
    let client = lab.client(lab.config(Cloud::Commercial, &app));
    let missing = |e: &MdeError| match e {
        MdeError::Forbidden { missing_role, .. } => missing_role.clone(),
        other => panic!("expected Forbidden, got {other:?}"),
    };
    let err = client.hunt(CHEAP_QUERY, None).await.unwrap_err();
    assert_eq!(missing(&err).as_deref(), Some(ROLE_THREAT_HUNTING));
    assert!(err.to_string().contains(ROLE_THREAT_HUNTING));
    let truth = Truth::read();
    let err = client
        .isolate(&truth.device_id, IsolationType::Full, "no role")
        .await
        .unwrap_err();
    assert_eq!(missing(&err).as_deref(), Some(ROLE_MACHINE_ISOLATE));
    // The roles it does hold still work: the check is per role, not all or nothing.
    let r = client
        .hunt_via(HuntingApi::Mde, CHEAP_QUERY, None)
        .await
        .unwrap();
    assert_eq!(r.table.rows.len(), 1);
}

#[tokio::test]
async fn the_46th_hunt_in_a_twin_minute_is_throttled() {
    let (lab, app) = Lab::start().await;
    let client = lab.client(lab.config(Cloud::Commercial, &app));
    let per_minute = TwinConfig::default().limits.calls_per_minute;
    for i in 0..per_minute {
        let api = if i % 2 == 0 {
            HuntingApi::Graph
        } else {
            HuntingApi::Mde
        };
        client.hunt_via(api, CHEAP_QUERY, None).await.unwrap();
    }
    let err = client.hunt(CHEAP_QUERY, None).await.unwrap_err();
    // All calls came at one twin instant, so the window frees up one minute later.
    assert!(
        matches!(
            err,
            MdeError::Throttled {
                quota: Quota::PerMinute,
                retry_after: Some(d)
            } if d == StdDuration::from_secs(60)
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let counts = lab.twin.call_counts(&lab.tenant).hunting;
    assert_eq!((counts.total, counts.throttled), (46, 1));
    lab.advance(60);
    client.hunt(CHEAP_QUERY, None).await.unwrap();
}

#[tokio::test]
async fn a_bad_query_is_bad_query_with_the_message() {
    let (lab, app) = Lab::start().await;
    let client = lab.client(lab.config(Cloud::Commercial, &app));
    for api in [HuntingApi::Graph, HuntingApi::Mde] {
        let err = client
            .hunt_via(api, "DeviceNetworkEvents | wher RemotePort ==", None)
            .await
            .unwrap_err();
        match &err {
            MdeError::BadQuery { message, .. } => {
                assert!(message.to_ascii_lowercase().contains("syntax"), "{message}");
            }
            other => panic!("{api:?}: expected BadQuery, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_second_isolation_while_one_is_pending_is_refused() {
    let truth = Truth::read();
    let (lab, app) = Lab::start().await;
    let client = lab.client(lab.config(Cloud::Commercial, &app));
    let first = client
        .isolate(&truth.device_id, IsolationType::Selective, "first")
        .await
        .unwrap();
    assert_eq!(first.scope.as_deref(), Some("Selective"));
    let err = client
        .isolate(&truth.device_id, IsolationType::Selective, "second")
        .await
        .unwrap_err();
    match &err {
        MdeError::ActiveRequestAlreadyExists {
            machine_id,
            pending_action_id,
            ..
        } => {
            assert_eq!(machine_id, &truth.device_id);
            assert_eq!(pending_action_id.as_deref(), Some(&*first.id));
        }
        other => panic!("expected ActiveRequestAlreadyExists, got {other:?}"),
    }
    // A release is refused too while the isolation is still running.
    let err = client
        .release(&truth.device_id, "too early")
        .await
        .unwrap_err();
    assert!(
        matches!(err, MdeError::ActiveRequestAlreadyExists { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unknown_machine_is_not_found() {
    let (lab, app) = Lab::start().await;
    let client = lab.client(lab.config(Cloud::Commercial, &app));
    let id = format!("{:040x}", rand::random::<u128>());
    let not_found = |r: Result<_, MdeError>| match r {
        Err(MdeError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    };
    not_found(client.machine(&id).await.map(|_| ()));
    not_found(
        client
            .isolate(&id, IsolationType::Full, "x")
            .await
            .map(|_| ()),
    );
    let name = MachineSelector::DnsName(random_name("host"));
    not_found(client.resolve(&name).await.map(|_| ()));
    not_found(client.action(&random_name("action")).await.map(|_| ()));
}

/// 20 hunts at once: one token request.
async fn concurrent_hunts(client: &MdeClient, n: usize) {
    let runs: Vec<_> = (0..n)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.hunt(CHEAP_QUERY, None).await })
        })
        .collect();
    for run in runs {
        let r = run.await.unwrap().unwrap();
        assert_eq!(r.table.rows.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_hunts_share_one_token_refreshed_before_expiry() {
    let (lab, app) = Lab::start().await;
    let client = lab.client(lab.config(Cloud::Commercial, &app));
    concurrent_hunts(&client, 20).await;
    assert_eq!(lab.tokens_issued(), 1);
    assert_eq!(lab.twin.call_counts(&lab.tenant).hunting.total, 20);
    // The client reads the twin's clock, so it refreshes before the twin would reject it.
    lab.advance(i64::try_from(lab.lifetime_secs).unwrap() + 1);
    client.hunt(CHEAP_QUERY, None).await.unwrap();
    assert_eq!(lab.tokens_issued(), 2);
}

#[tokio::test]
async fn a_token_the_twin_expired_is_replaced_after_the_401() {
    let (lab, app) = Lab::start().await;
    // On the system clock the client cannot know the twin's token has expired (clock skew).
    let client = MdeClient::new(lab.config(Cloud::Commercial, &app)).unwrap();
    client.hunt(CHEAP_QUERY, None).await.unwrap();
    assert_eq!(lab.tokens_issued(), 1);
    lab.advance(i64::try_from(lab.lifetime_secs).unwrap() + 1);
    client.hunt(CHEAP_QUERY, None).await.unwrap();
    assert_eq!(lab.tokens_issued(), 2);
}
