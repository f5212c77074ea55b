//! Shared state, routing, bearer-token checks, fault injection and the admin endpoints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use culprit_kql::Database;
use culprit_model::Timestamp;
use serde_json::json;

use crate::actions::Action;
use crate::clock::{ScaledClock, TwinClock};
use crate::config::{ClientConfig, ClockConfig, TwinConfig};
use crate::data::LoadedData;
use crate::errors::{Api, ApiError};
use crate::faults::{Fault, Faults};
use crate::machines::Inventory;
use crate::quota::{CpuBudget, SlidingQuota};
use crate::token::{Claims, Resource, Signer, TokenError};
use crate::{CallCounts, TwinError, entra, hunting, machines_api};

pub type Shared = Arc<AppState>;

#[derive(Debug)]
pub struct AppState {
    pub base_url: String,
    pub clock: Arc<dyn TwinClock>,
    pub config: TwinConfig,
    pub signer: Signer,
    pub faults: Faults,
    tenants: HashMap<String, Arc<Tenant>>,
}

/// One tenant: its apps, its data and what it has done.
#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub clients: Vec<ClientConfig>,
    pub db: Database,
    /// Oldest and newest row time, to skip filtering when the whole data is in the window.
    pub span: Option<(Timestamp, Timestamp)>,
    pub inventory: Inventory,
    live: Mutex<Live>,
}

#[derive(Debug, Default)]
pub struct Live {
    pub hunting: SlidingQuota,
    pub machines: SlidingQuota,
    pub cpu: CpuBudget,
    pub actions: Vec<Action>,
    pub tokens_issued: u64,
}

impl Tenant {
    /// The tenant's mutable state; a poisoned lock still holds consistent counters.
    pub fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AppState {
    pub fn build(
        config: TwinConfig,
        base_url: String,
        clock: Option<Arc<dyn TwinClock>>,
    ) -> Result<Self, TwinError> {
        config.validate().map_err(TwinError::Config)?;
        let mut tenants = HashMap::new();
        let mut newest: Option<Timestamp> = None;
        for tc in &config.tenants {
            let key = tc.tenant_id.to_ascii_lowercase();
            if tenants.contains_key(&key) {
                return Err(TwinError::Config(format!(
                    "tenant {} is configured twice",
                    tc.tenant_id
                )));
            }
            let data = LoadedData::load(&tc.data_dirs)?;
            newest = newest.max(data.newest());
            let span = data.span();
            let db = data.into_database();
            let inventory = Inventory::from_database(&db);
            tenants.insert(
                key,
                Arc::new(Tenant {
                    id: tc.tenant_id.clone(),
                    clients: tc.clients.clone(),
                    db,
                    span,
                    inventory,
                    live: Mutex::new(Live::default()),
                }),
            );
        }
        let clock = clock.unwrap_or_else(|| {
            let start = config.clock.start.unwrap_or_else(|| {
                newest.map_or_else(Timestamp::now, |n| {
                    n + culprit_model::Duration::from_seconds(ClockConfig::DEFAULT_LEAD_SECS)
                })
            });
            Arc::new(ScaledClock::new(start, config.clock.scale))
        });
        Ok(AppState {
            base_url,
            clock,
            faults: Faults::new(config.faults.clone()),
            config,
            signer: Signer::random(),
            tenants,
        })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn tenant(&self, id: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(&id.to_ascii_lowercase()).cloned()
    }

    pub fn call_counts(&self, tenant: &str) -> Option<CallCounts> {
        let t = self.tenant(tenant)?;
        let live = t.live();
        Some(CallCounts {
            tenant: t.id.clone(),
            hunting: live.hunting.counts.clone(),
            machines: live.machines.counts.clone(),
            tokens_issued: live.tokens_issued,
        })
    }

    /// Checks the bearer token of an API call: signature, tenant, expiry, audience, then that
    /// it holds one of `roles`.
    pub fn authorize(
        &self,
        api: Api,
        headers: &HeaderMap,
        forced_expiry: bool,
        roles: &[&str],
    ) -> Result<(Arc<Tenant>, Claims), ApiError> {
        let now = self.now();
        let unauthorized = |graph: &str, mde: &str| {
            let (code, message) = match api {
                Api::Graph => ("InvalidAuthenticationToken", graph),
                Api::Mde => ("Unauthorized", mde),
            };
            ApiError::new(api, StatusCode::UNAUTHORIZED, code, message, now)
        };
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unauthorized(
                    "Access token is empty.",
                    "Authorization header is missing or is not a bearer token",
                )
            })?;
        let claims = self.signer.verify(token).map_err(|e| match e {
            TokenError::Malformed => unauthorized(
                "IDX14100: JWT is not well formed.",
                "The access token is not well formed",
            ),
            TokenError::BadSignature => unauthorized(
                "Access token validation failure. Invalid signature.",
                "The access token's signature is invalid",
            ),
        })?;
        let tenant = self
            .tenant(&claims.tid)
            .ok_or_else(|| unauthorized("Invalid tenant.", "Invalid tenant"))?;
        if forced_expiry || claims.exp <= now.unix_seconds() {
            return Err(unauthorized(
                "Lifetime validation failed, the token is expired.",
                "Expired token",
            ));
        }
        let wanted = match api {
            Api::Graph => Resource::Graph,
            Api::Mde => Resource::Mde,
        };
        if crate::token::resource_of(&claims.aud) != Some(wanted) {
            return Err(unauthorized(
                "Access token validation failure. Invalid audience.",
                "Invalid audience",
            ));
        }
        if !roles.iter().any(|r| claims.roles.iter().any(|c| c == r)) {
            return Err(forbidden(api, roles, &claims.roles, now));
        }
        Ok((tenant, claims))
    }
}

fn forbidden(api: Api, needed: &[&str], held: &[String], now: Timestamp) -> ApiError {
    let message = match api {
        Api::Graph => format!(
            "Missing application roles. API required roles: {}. Application roles: {}.",
            needed.join(", "),
            if held.is_empty() {
                "none".to_owned()
            } else {
                held.join(", ")
            }
        ),
        Api::Mde => format!(
            "The application does not have any of the required application roles ({}) to access the resource.",
            needed.join(", ")
        ),
    };
    ApiError::new(api, StatusCode::FORBIDDEN, "Forbidden", message, now)
}

/// Marks a call whose token the fault injector expired.
#[derive(Clone, Copy, Debug)]
pub struct ForcedExpiry;

pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route(
            "/v1.0/security/runHuntingQuery",
            post(hunting::graph_hunting),
        )
        .route("/api/advancedqueries/run", post(hunting::mde_hunting))
        .route("/api/advancedhunting/run", post(hunting::mde_hunting))
        .route("/api/machines", get(machines_api::list))
        .route("/api/machines/{id}", get(machines_api::get_one))
        .route("/api/machines/{id}/isolate", post(machines_api::isolate))
        .route(
            "/api/machines/{id}/unisolate",
            post(machines_api::unisolate),
        )
        .route("/api/machineactions", get(machines_api::list_actions))
        .route("/api/machineactions/{id}", get(machines_api::get_action))
        .layer(middleware::from_fn_with_state(state.clone(), inject_faults));
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(entra::token_v2))
        .route("/{tenant}/oauth2/token", post(entra::token_v1))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(entra::openid_configuration),
        )
        .route("/_twin/calls/{tenant}", get(admin_calls))
        .route("/_twin/actions/{tenant}", get(admin_actions))
        .route("/_twin/clock", get(admin_clock))
        .merge(api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), json_errors))
        .with_state(state)
}

/// Rewrites axum's own plain-text rejections (a path that is not UTF-8, a wrong method, a body
/// over the size limit) into the service's JSON error shape, which clients parse blindly.
async fn json_errors(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let now = st.now();
    if path.contains("/oauth2/") {
        return crate::errors::AadError::new("invalid_request", 900144, text, now).into_response();
    }
    let code = match status {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        s if s.is_server_error() => "InternalServerError",
        _ => "BadRequest",
    };
    ApiError::new(api_of(&path), status, code, text, now).into_response()
}

async fn not_found(State(st): State<Shared>, req: Request) -> Response {
    let api = api_of(req.uri().path());
    ApiError::new(
        api,
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Resource not found for the segment '{}'.", req.uri().path()),
        st.now(),
    )
    .into_response()
}

fn api_of(path: &str) -> Api {
    if path.starts_with("/v1.0/") || path.starts_with("/beta/") {
        Api::Graph
    } else {
        Api::Mde
    }
}

/// Applies the configured faults to an API call before it is handled.
async fn inject_faults(State(st): State<Shared>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let api = api_of(&path);
    let hunting = path.ends_with("/runHuntingQuery") || path.ends_with("/run");
    let (fault, latency_ms) = st.faults.next(hunting);
    if latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency_ms)).await;
    }
    let now = st.now();
    match fault {
        Fault::None => {}
        Fault::ExpireToken => {
            req.extensions_mut().insert(ForcedExpiry);
        }
        Fault::Drop => return dropped_connection(),
        Fault::ServerError => return server_error(api, now),
        Fault::Throttle(secs) => {
            let message = format!(
                "API calls quota exceeded! maximum allowed {} per 00:01:00",
                st.config.limits.calls_per_minute
            );
            return hunting::throttled(api, &message, secs as f64, now, &st).into_response();
        }
    }
    next.run(req).await
}

fn server_error(api: Api, now: Timestamp) -> Response {
    match api {
        Api::Graph => ApiError::new(
            api,
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceNotAvailable",
            "The service is temporarily unavailable. Please try again later.",
            now,
        )
        .into_response(),
        Api::Mde => ApiError::internal(api, now).into_response(),
    }
}

/// A response whose body fails at once: hyper then resets the connection, which a client sees
/// as a dropped connection.
fn dropped_connection() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other(
            "connection dropped by fault injection",
        ))
    });
    Response::new(Body::from_stream(stream))
}

async fn admin_calls(State(st): State<Shared>, Path(tenant): Path<String>) -> Response {
    match st.call_counts(&tenant) {
        Some(c) => axum::Json(c).into_response(),
        None => unknown_tenant(&st, &tenant),
    }
}

async fn admin_clock(State(st): State<Shared>) -> Response {
    axum::Json(json!({ "now": st.now(), "scale": st.clock.scale() })).into_response()
}

async fn admin_actions(State(st): State<Shared>, Path(tenant): Path<String>) -> Response {
    let Some(t) = st.tenant(&tenant) else {
        return unknown_tenant(&st, &tenant);
    };
    let now = st.now();
    let value: Vec<_> = t
        .live()
        .actions
        .iter()
        .map(|a| a.to_json(now, &st.config.actions))
        .collect();
    axum::Json(json!({ "tenant": t.id, "value": value })).into_response()
}

fn unknown_tenant(st: &AppState, tenant: &str) -> Response {
    ApiError::new(
        Api::Mde,
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("The twin serves no tenant '{tenant}'"),
        st.now(),
    )
    .into_response()
}
