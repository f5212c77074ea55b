//! A stand-in for the Vectra Detect / RUX REST API on its own listener, serving the
//! `ndr/vectra_detections.json` of scenario folders (ndr-formats.md §1.1–1.4):
//!
//! | endpoint | notes |
//! |---|---|
//! | `POST /oauth2/token` | client credentials by HTTP Basic or form; `grant_type=client_credentials` or `refresh_token`; `access_token`, `expires_in`, `refresh_token`, `refresh_expires_in`, `token_type` |
//! | `GET /api/{version}/detections` | `page` (1-based), `page_size`; `count`, absolute `next`/`previous`, `results`; filters `last_timestamp_gte`, `min_id`, `state`, `src_ip`, `type`; `ordering` `id`, `last_timestamp` (or `-…`) |
//! | `GET /api/{version}/detections/{id}` | one detection |
//! | `GET /api/{version}/events/detections` | `from` (checkpoint, inclusive), `limit`; `events`, `next_checkpoint`, `remaining_count` |
//! | `GET /_twin/vectra/calls` | [`VectraCounts`] |
//!
//! API calls take `Authorization: Bearer <access_token>` (v3) or `Token <api token>` (v2).
//! Errors use the Django REST framework's `{"detail": …}` body Vectra answers with; the token
//! endpoint answers OAuth2's `{"error": …}`. Faults are deterministic: every `throttle_every`-th
//! API call is answered 429 with `Retry-After`, every `error_every`-th 503.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use culprit_model::{Duration, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::TwinError;
use crate::clock::{ScaledClock, TwinClock};
use crate::entra::basic_credentials;
use crate::token::constant_time_eq;

/// The Vectra stand-in's settings; every field has a default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VectraTwinConfig {
    /// Scenario folders; each `ndr/vectra_detections.json` (a list page, an array or one
    /// object) is served, merged in folder order.
    pub data_dirs: Vec<PathBuf>,
    /// OAuth2 clients (v3).
    pub clients: Vec<VectraClientConfig>,
    /// Static API tokens (v2 `Authorization: Token …`).
    pub api_tokens: Vec<SecretString>,
    /// Access-token lifetime in twin-clock seconds (Vectra: 21,600).
    pub token_lifetime_secs: u64,
    /// Refresh-token lifetime in twin-clock seconds (Vectra: 86,400).
    pub refresh_lifetime_secs: u64,
    /// Every N-th API call is answered 429 (0: never).
    pub throttle_every: u64,
    /// The `Retry-After` of those 429s, in seconds.
    pub retry_after_secs: u64,
    /// Every N-th API call is answered 503 (0: never).
    pub error_every: u64,
    /// Largest `page_size` / `limit` honoured (larger asks are cut to it).
    pub max_page_size: usize,
}

impl Default for VectraTwinConfig {
    fn default() -> Self {
        VectraTwinConfig {
            data_dirs: Vec::new(),
            clients: Vec::new(),
            api_tokens: Vec::new(),
            token_lifetime_secs: 21_600,
            refresh_lifetime_secs: 86_400,
            throttle_every: 0,
            retry_after_secs: 5,
            error_every: 0,
            max_page_size: 5000,
        }
    }
}

impl VectraTwinConfig {
    /// One OAuth client and one v2 token, serving `data_dirs`.
    pub fn single_client(
        client_id: &str,
        client_secret: &str,
        api_token: &str,
        data_dirs: Vec<PathBuf>,
    ) -> Self {
        VectraTwinConfig {
            data_dirs,
            clients: vec![VectraClientConfig {
                client_id: client_id.to_owned(),
                client_secret: SecretString::from(client_secret.to_owned()),
            }],
            api_tokens: vec![SecretString::from(api_token.to_owned())],
            ..VectraTwinConfig::default()
        }
    }

    /// Rejects settings the stand-in cannot honour, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.token_lifetime_secs == 0 {
            return Err("vectra.token_lifetime_secs must be at least 1".into());
        }
        if self.refresh_lifetime_secs == 0 {
            return Err("vectra.refresh_lifetime_secs must be at least 1".into());
        }
        if self.max_page_size == 0 {
            return Err("vectra.max_page_size must be at least 1".into());
        }
        for (i, c) in self.clients.iter().enumerate() {
            if c.client_id.trim().is_empty() {
                return Err(format!("vectra.clients[{i}].client_id is empty"));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectraClientConfig {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// What the stand-in was asked, for asserting a client's behaviour.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct VectraCounts {
    /// `grant_type=client_credentials` tokens issued.
    pub tokens_issued: u64,
    /// `grant_type=refresh_token` tokens issued.
    pub tokens_refreshed: u64,
    /// Token requests refused (bad client, bad grant).
    pub token_refusals: u64,
    /// API calls, faulted ones included.
    pub api_calls: u64,
    pub detection_list_calls: u64,
    pub detection_get_calls: u64,
    pub event_calls: u64,
    /// API calls answered 401.
    pub unauthorized: u64,
    /// API calls answered 429 / 503 by the fault schedule.
    pub throttled: u64,
    pub server_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    tokens_issued: AtomicU64,
    tokens_refreshed: AtomicU64,
    token_refusals: AtomicU64,
    api_calls: AtomicU64,
    detection_list_calls: AtomicU64,
    detection_get_calls: AtomicU64,
    event_calls: AtomicU64,
    unauthorized: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
}

fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::SeqCst) + 1
}

impl Counters {
    fn snapshot(&self) -> VectraCounts {
        let g = |c: &AtomicU64| c.load(Ordering::SeqCst);
        VectraCounts {
            tokens_issued: g(&self.tokens_issued),
            tokens_refreshed: g(&self.tokens_refreshed),
            token_refusals: g(&self.token_refusals),
            api_calls: g(&self.api_calls),
            detection_list_calls: g(&self.detection_list_calls),
            detection_get_calls: g(&self.detection_get_calls),
            event_calls: g(&self.event_calls),
            unauthorized: g(&self.unauthorized),
            throttled: g(&self.throttled),
            server_errors: g(&self.server_errors),
        }
    }
}

#[derive(Debug, Default)]
struct Tokens {
    access: HashMap<String, Timestamp>,
    refresh: HashMap<String, Timestamp>,
}

#[derive(Debug)]
struct VectraState {
    base_url: String,
    config: VectraTwinConfig,
    clock: Arc<dyn TwinClock>,
    detections: Vec<Value>,
    events: Vec<Value>,
    tokens: Mutex<Tokens>,
    counters: Counters,
}

impl VectraState {
    fn tokens(&self) -> MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Shared = Arc<VectraState>;

/// Starts the Vectra stand-in.
#[derive(Debug)]
pub struct VectraTwin;

impl VectraTwin {
    /// Loads the detections and serves on `listener`; `clock` `None` runs on real time.
    pub async fn start(
        config: VectraTwinConfig,
        listener: tokio::net::TcpListener,
        clock: Option<Arc<dyn TwinClock>>,
    ) -> Result<VectraTwinHandle, TwinError> {
        config.validate().map_err(TwinError::Config)?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let dirs = config.data_dirs.clone();
        let detections = tokio::task::spawn_blocking(move || load_detections(&dirs))
            .await
            .map_err(|e| TwinError::Config(format!("loading the detections failed: {e}")))??;
        let events = build_events(&detections);
        let clock =
            clock.unwrap_or_else(|| Arc::new(ScaledClock::new(Timestamp::now(), 1.0)) as Arc<_>);
        let state = Arc::new(VectraState {
            base_url,
            config,
            clock,
            detections,
            events,
            tokens: Mutex::new(Tokens::default()),
            counters: Counters::default(),
        });
        let router = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "vectra stand-in stopped");
            }
        });
        Ok(VectraTwinHandle {
            addr,
            state,
            stop: Some(stop),
            task,
        })
    }
}

/// A running Vectra stand-in.
#[derive(Debug)]
pub struct VectraTwinHandle {
    addr: std::net::SocketAddr,
    state: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl VectraTwinHandle {
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the Vectra base URL (`/oauth2/token`, `/api/...`).
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    pub fn counts(&self) -> VectraCounts {
        self.state.counters.snapshot()
    }

    /// How many detections and detection events are served.
    pub fn detection_count(&self) -> usize {
        self.state.detections.len()
    }

    pub fn event_count(&self) -> usize {
        self.state.events.len()
    }

    /// Forgets every issued access token, as a server restart or key rotation would: the
    /// next call with one is answered 401.
    pub fn revoke_access_tokens(&self) {
        self.state.tokens().access.clear();
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn load_detections(dirs: &[PathBuf]) -> Result<Vec<Value>, TwinError> {
    let mut all = Vec::new();
    for dir in dirs {
        let path = dir.join("ndr").join("vectra_detections.json");
        let data_err = |reason: String| TwinError::Data {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read(&path).map_err(|e| data_err(e.to_string()))?;
        let doc: Value = serde_json::from_slice(&text).map_err(|e| data_err(e.to_string()))?;
        let items = match doc {
            Value::Array(items) => items,
            Value::Object(mut page) if page.contains_key("results") => {
                match page.remove("results") {
                    Some(Value::Array(items)) => items,
                    _ => return Err(data_err("results is not an array".into())),
                }
            }
            obj @ Value::Object(_) => vec![obj],
            _ => {
                return Err(data_err(
                    "neither a list page, an array nor an object".into(),
                ));
            }
        };
        for (i, d) in items.into_iter().enumerate() {
            if d.get("id").and_then(id_of).is_none() {
                return Err(data_err(format!("detection {i} has no numeric id")));
            }
            all.push(d);
        }
    }
    Ok(all)
}

/// An id that may arrive as a number or a string.
fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn detection_id(d: &Value) -> u64 {
    d.get("id").and_then(id_of).unwrap_or(0)
}

fn str_field<'a>(d: &'a Value, key: &str) -> Option<&'a str> {
    d.get(key).and_then(Value::as_str)
}

/// One `created` event per detection, in the order the detections were created; event ids
/// count from 1.
fn build_events(detections: &[Value]) -> Vec<Value> {
    let mut order: Vec<&Value> = detections.iter().collect();
    order.sort_by(|a, b| {
        let key = |d: &Value| {
            str_field(d, "created_timestamp")
                .or_else(|| str_field(d, "first_timestamp"))
                .and_then(|s| Timestamp::parse(s).ok())
        };
        key(a)
            .cmp(&key(b))
            .then(detection_id(a).cmp(&detection_id(b)))
    });
    order
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let host = d.get("src_host").filter(|h| h.is_object());
            let account = d.get("src_account").filter(|a| a.is_object());
            let (entity, entity_type) = match (host, account) {
                (Some(h), _) => (Some(h), "host"),
                (None, Some(a)) => (Some(a), "account"),
                (None, None) => (None, "host"),
            };
            let pick = |k: &str| d.get(k).cloned().unwrap_or(Value::Null);
            json!({
                "id": i as u64 + 1,
                "detection_id": detection_id(d),
                "change_type": "created",
                "event_timestamp": pick("created_timestamp"),
                "category": pick("category"),
                "threat": pick("threat"),
                "certainty": pick("certainty"),
                "d_type_vname": d.get("detection_type").or_else(|| d.get("detection")).cloned().unwrap_or(Value::Null),
                "detection_type": d.get("detection_type").or_else(|| d.get("detection")).cloned().unwrap_or(Value::Null),
                "triaged": d.get("is_triaged").cloned().unwrap_or(Value::Bool(false)),
                "detection_href": d.get("detection_url").or_else(|| d.get("url")).cloned().unwrap_or(Value::Null),
                "entity_id": entity.and_then(|e| e.get("id")).cloned().unwrap_or(Value::Null),
                "entity_name": entity.and_then(|e| e.get("name")).cloned().unwrap_or(Value::Null),
                "entity_type": entity_type,
                "src_host": pick("src_host"),
                "src_account": pick("src_account"),
                "summary": pick("summary"),
                "grouped_details": pick("grouped_details"),
                "tags": d.get("tags").cloned().unwrap_or_else(|| json!([])),
                "url": pick("url"),
            })
        })
        .collect()
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/api/{version}/detections", get(list_detections))
        .route("/api/{version}/detections/{id}", get(get_detection))
        .route("/api/{version}/events/detections", get(detection_events))
        .route("/_twin/vectra/calls", get(calls))
        .with_state(state)
}

/// A Django REST framework error: `{"detail": …}`.
fn detail(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "detail": message }))).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn new_token() -> String {
    // 40 hex characters, like the service's opaque tokens.
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{}", &b[..8])
}

async fn token(State(st): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (id, secret) = match basic_credentials(&headers) {
        Some(c) => c,
        None => (
            field("client_id").unwrap_or_default().to_owned(),
            field("client_secret").unwrap_or_default().to_owned(),
        ),
    };
    let known = st.config.clients.iter().any(|c| {
        constant_time_eq(c.client_id.as_bytes(), id.as_bytes())
            && constant_time_eq(
                c.client_secret.expose_secret().as_bytes(),
                secret.as_bytes(),
            )
    });
    if !known {
        bump(&st.counters.token_refusals);
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client id or secret.",
        );
    }
    let now = st.clock.now();
    match field("grant_type") {
        Some("client_credentials") => {
            bump(&st.counters.tokens_issued);
        }
        Some("refresh_token") => {
            let presented = field("refresh_token").unwrap_or_default();
            let mut tokens = st.tokens();
            match tokens.refresh.remove(presented) {
                Some(exp) if exp > now => {}
                _ => {
                    drop(tokens);
                    bump(&st.counters.token_refusals);
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "Invalid or expired refresh token.",
                    );
                }
            }
            drop(tokens);
            bump(&st.counters.tokens_refreshed);
        }
        Some(_) => {
            bump(&st.counters.token_refusals);
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be client_credentials or refresh_token.",
            );
        }
        None => {
            bump(&st.counters.token_refusals);
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing grant_type.",
            );
        }
    }
    let access = new_token();
    let refresh = new_token();
    let lifetime = st.config.token_lifetime_secs;
    let refresh_lifetime = st.config.refresh_lifetime_secs;
    {
        let mut tokens = st.tokens();
        // Expired entries are dropped as new ones come in, so the maps stay small.
        tokens.access.retain(|_, exp| *exp > now);
        tokens.refresh.retain(|_, exp| *exp > now);
        let secs = |s: u64| Duration::from_seconds(i64::try_from(s).unwrap_or(i64::MAX));
        tokens.access.insert(access.clone(), now + secs(lifetime));
        tokens
            .refresh
            .insert(refresh.clone(), now + secs(refresh_lifetime));
    }
    let mut r = axum::Json(json!({
        "access_token": access,
        "expires_in": lifetime,
        "refresh_token": refresh,
        "refresh_expires_in": refresh_lifetime,
        "token_type": "Bearer",
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Counts the call, applies the fault schedule and checks the credentials; `Err` is the
/// response to send instead.
// The error is the response itself, built once and returned at once: boxing buys nothing.
#[allow(clippy::result_large_err)]
fn admit(st: &VectraState, headers: &HeaderMap) -> Result<(), Response> {
    let n = bump(&st.counters.api_calls);
    let cfg = &st.config;
    if cfg.throttle_every > 0 && n.is_multiple_of(cfg.throttle_every) {
        bump(&st.counters.throttled);
        let secs = cfg.retry_after_secs;
        let mut r = detail(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Request was throttled. Expected available in {secs} seconds."),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Err(r);
    }
    if cfg.error_every > 0 && n.is_multiple_of(cfg.error_every) {
        bump(&st.counters.server_errors);
        return Err(detail(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service temporarily unavailable, try again later.",
        ));
    }
    let unauthorized = |message: &str, scheme: &'static str| {
        bump(&st.counters.unauthorized);
        let mut r = detail(StatusCode::UNAUTHORIZED, message);
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
        r
    };
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(unauthorized(
            "Authentication credentials were not provided.",
            "Bearer",
        ));
    };
    if let Some(token) = auth.strip_prefix("Bearer ") {
        let now = st.clock.now();
        return match st.tokens().access.get(token.trim()) {
            Some(exp) if *exp > now => Ok(()),
            Some(_) => Err(unauthorized("Token has expired.", "Bearer")),
            None => Err(unauthorized("Invalid token.", "Bearer")),
        };
    }
    if let Some(token) = auth.strip_prefix("Token ") {
        let ok = cfg
            .api_tokens
            .iter()
            .any(|t| constant_time_eq(t.expose_secret().as_bytes(), token.trim().as_bytes()));
        return if ok {
            Ok(())
        } else {
            Err(unauthorized("Invalid token.", "Token"))
        };
    }
    Err(unauthorized(
        "Authentication credentials were not provided.",
        "Bearer",
    ))
}

// The error is the response itself, built once and returned at once: boxing buys nothing.
#[allow(clippy::result_large_err)]
fn positive(q: &HashMap<String, String>, name: &str, default: usize) -> Result<usize, Response> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(detail(
                StatusCode::BAD_REQUEST,
                &format!("{name} must be a positive integer, not {v:?}."),
            )),
        },
    }
}

fn timestamp_of(d: &Value, key: &str) -> Option<Timestamp> {
    str_field(d, key).and_then(|s| Timestamp::parse(s).ok())
}

fn field_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

async fn list_detections(
    State(st): State<Shared>,
    Path(version): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&st, &headers) {
        return r;
    }
    bump(&st.counters.detection_list_calls);
    let page = match positive(&q, "page", 1) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let page_size = match positive(&q, "page_size", 50) {
        Ok(p) => p.min(st.config.max_page_size),
        Err(r) => return r,
    };
    let since = match q.get("last_timestamp_gte") {
        None => None,
        Some(v) => match Timestamp::parse(v) {
            Ok(t) => Some(t),
            Err(_) => {
                return detail(
                    StatusCode::BAD_REQUEST,
                    &format!("last_timestamp_gte: {v:?} is not an ISO-8601 time."),
                );
            }
        },
    };
    let min_id = match q.get("min_id").map(|v| v.trim().parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return detail(StatusCode::BAD_REQUEST, "min_id must be an integer.");
        }
    };
    let mut rows: Vec<&Value> = st
        .detections
        .iter()
        .filter(|d| since.is_none_or(|t| timestamp_of(d, "last_timestamp").is_some_and(|l| l >= t)))
        .filter(|d| min_id.is_none_or(|m| detection_id(d) >= m))
        .filter(|d| {
            ["state", "src_ip", "type"].iter().all(|k| {
                q.get(*k)
                    .is_none_or(|want| field_text(d.get(*k)).as_deref() == Some(want.as_str()))
            })
        })
        .collect();
    let ordering = q.get("ordering").map(String::as_str).unwrap_or("id");
    let (desc, key) = match ordering.strip_prefix('-') {
        Some(k) => (true, k),
        None => (false, ordering),
    };
    match key {
        "id" => rows.sort_by_key(|d| detection_id(d)),
        "last_timestamp" => {
            rows.sort_by_key(|d| (timestamp_of(d, "last_timestamp"), detection_id(d)))
        }
        other => {
            return detail(
                StatusCode::BAD_REQUEST,
                &format!("ordering: {other:?} is not supported (id, last_timestamp)."),
            );
        }
    }
    if desc {
        rows.reverse();
    }
    let count = rows.len();
    let start = (page - 1).saturating_mul(page_size);
    if start >= count && page > 1 {
        return detail(StatusCode::NOT_FOUND, "Invalid page.");
    }
    let results: Vec<Value> = rows
        .iter()
        .skip(start)
        .take(page_size)
        .map(|d| (*d).clone())
        .collect();
    let link = |p: usize| {
        let mut url = format!("{}/api/{version}/detections?", st.base_url);
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        let mut keys: Vec<&String> = q.keys().filter(|k| k.as_str() != "page").collect();
        keys.sort();
        for k in keys {
            ser.append_pair(k, &q[k]);
        }
        ser.append_pair("page", &p.to_string());
        url.push_str(&ser.finish());
        Value::String(url)
    };
    let next = if start + page_size < count {
        link(page + 1)
    } else {
        Value::Null
    };
    let previous = if page > 1 {
        link(page - 1)
    } else {
        Value::Null
    };
    axum::Json(json!({
        "count": count,
        "next": next,
        "previous": previous,
        "results": results,
    }))
    .into_response()
}

async fn get_detection(
    State(st): State<Shared>,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&st, &headers) {
        return r;
    }
    bump(&st.counters.detection_get_calls);
    let Ok(id) = id.trim().parse::<u64>() else {
        return detail(StatusCode::NOT_FOUND, "Not found.");
    };
    match st.detections.iter().find(|d| detection_id(d) == id) {
        Some(d) => axum::Json(d.clone()).into_response(),
        None => detail(StatusCode::NOT_FOUND, "Not found."),
    }
}

async fn detection_events(
    State(st): State<Shared>,
    Path(_version): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&st, &headers) {
        return r;
    }
    bump(&st.counters.event_calls);
    let from = match q.get("from").map(|v| v.trim().parse::<u64>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return detail(
                StatusCode::BAD_REQUEST,
                "from must be a checkpoint (a non-negative integer).",
            );
        }
    };
    let limit = match positive(&q, "limit", 100) {
        Ok(l) => l.min(st.config.max_page_size),
        Err(r) => return r,
    };
    let event_id = |e: &Value| e.get("id").and_then(Value::as_u64).unwrap_or(0);
    let pending: Vec<&Value> = st.events.iter().filter(|e| event_id(e) >= from).collect();
    let events: Vec<Value> = pending.iter().take(limit).map(|e| (*e).clone()).collect();
    let next_checkpoint = events.last().map_or(from, |e| event_id(e) + 1);
    let remaining = pending.len().saturating_sub(events.len());
    axum::Json(json!({
        "events": events,
        "next_checkpoint": next_checkpoint,
        "remaining_count": remaining,
    }))
    .into_response()
}

async fn calls(State(st): State<Shared>) -> Response {
    axum::Json(st.counters.snapshot()).into_response()
}
