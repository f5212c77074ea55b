//! An offline stand-in for the Microsoft APIs Culprit talks to — Entra ID client-credential
//! tokens, Graph `runHuntingQuery`, MDE `advancedqueries/run`, machines and machine actions —
//! serving recorded Advanced Hunting tables over real HTTP with the real limits and error
//! shapes (see `/work/shared/reference/mde-api.md`).
//!
//! One listener serves every host; point the client's login, Graph and MDE base URLs at
//! [`TwinHandle::base_url`].
//!
//! With [`TwinConfig::with_tls`] (`[tls] enabled = true`) the listener speaks HTTPS only, with a
//! certificate signed by a CA generated at start-up ([`TwinHandle::ca_pem`]) that covers
//! [`DEFAULT_TLS_HOSTS`] (loopback and the public Microsoft hosts, for tests that route those
//! through a proxy to the twin) plus `tls.extra_hosts`; `base_url` and the OpenID
//! configuration then say `https://`.
//!
//! | endpoint | notes |
//! |---|---|
//! | `POST /{tenant}/oauth2/v2.0/token` | form `grant_type=client_credentials`, `client_id`, `client_secret` (or HTTP Basic), `scope=<resource>/.default` |
//! | `POST /{tenant}/oauth2/token` | v1: `resource=` instead of `scope`; numbers as strings |
//! | `GET /{tenant}/v2.0/.well-known/openid-configuration` | endpoints point at the twin |
//! | `POST /v1.0/security/runHuntingQuery` | Graph: `{"Query","Timespan"?}` → `schema`/`results`; role `ThreatHunting.Read.All` |
//! | `POST /api/advancedqueries/run` (and `/api/advancedhunting/run`) | MDE: `{"Query"}` → `Stats`/`Schema`/`Results`; role `AdvancedQuery.Read.All` |
//! | `GET /api/machines` | `$filter` (`eq`, `ne`, `startswith`, `and`/`or`), `$top`, `$skip`; role `Machine.Read.All` |
//! | `GET /api/machines/{id}` | by MDE id or Entra device id |
//! | `GET /api/machines/findbyip(ip='…',timestamp=…)` | machines holding the IP within ±15 min |
//! | `POST /api/machines/{id}/isolate`, `…/unisolate` | `{"Comment","IsolationType"}` → 201 MachineAction; role `Machine.Isolate` |
//! | `GET /api/machineactions`, `GET /api/machineactions/{id}` | Pending → InProgress → Succeeded on the twin clock |
//! | `GET /_twin/calls/{tenant}` | [`CallCounts`]: totals, throttled, most calls in any 60 s / 3,600 s |
//! | `GET /_twin/actions/{tenant}`, `GET /_twin/clock` | recorded machine actions; the twin's now and scale |
//!
//! Twin-only additions, absent from the real services: the machine entity's `isolationState`,
//! the `x-twin-result-truncated: true` header on results cut at the row cap, and `/_twin/*`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), culprit_mde_twin::TwinError> {
//! use culprit_mde_twin::{Twin, TwinConfig};
//! let config = TwinConfig::single_tenant("tenant", "app", "secret", vec!["scenario".into()]);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let twin = Twin::start(config, listener).await?;
//! println!("{}", twin.base_url());
//! twin.shutdown().await;
//! # Ok(()) }
//! ```

mod actions;
pub mod clock;
pub mod config;
mod data;
mod entra;
mod errors;
mod faults;
pub mod generate;
mod hunting;
mod machines;
mod machines_api;
mod quota;
mod server;
mod tls;
mod token;
pub mod vectra;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use clock::{ManualClock, ScaledClock, TwinClock};
pub use config::{
    ActionTiming, ClientConfig, ClockConfig, FaultConfig, Limits, TenantConfig, ThrottleStorm,
    TwinConfig, TwinTlsConfig,
};
pub use data::LoadedData;
pub use quota::WindowCounts;
pub use tls::DEFAULT_TLS_HOSTS;
pub use vectra::{
    VectraClientConfig, VectraCounts, VectraTwin, VectraTwinConfig, VectraTwinHandle,
};

#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    #[error("scenario data at {path}: {reason}")]
    Data { path: PathBuf, reason: String },
    #[error("twin config: {0}")]
    Config(String),
    #[error("twin listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Calls a tenant made, for asserting that a client kept within its quotas.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CallCounts {
    pub tenant: String,
    /// Graph and MDE hunting calls together (they share the tenant's quota).
    pub hunting: WindowCounts,
    /// Machine and machine-action calls.
    pub machines: WindowCounts,
    pub tokens_issued: u64,
}

/// Starts twins.
#[derive(Debug)]
pub struct Twin;

impl Twin {
    /// Loads the tenants' data and serves on `listener` with a clock built from the config.
    pub async fn start(
        config: TwinConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<TwinHandle, TwinError> {
        Self::start_with_clock(config, listener, None).await
    }

    /// As [`Twin::start`], with an injected clock (tests use a [`ManualClock`]); `None` builds
    /// a [`ScaledClock`] from `config.clock`.
    pub async fn start_with_clock(
        config: TwinConfig,
        listener: tokio::net::TcpListener,
        clock: Option<Arc<dyn TwinClock>>,
    ) -> Result<TwinHandle, TwinError> {
        let addr = listener.local_addr()?;
        let tls = if config.tls.enabled {
            let extra = config.tls.extra_hosts.clone();
            let generated = tokio::task::spawn_blocking(move || tls::generate(&extra))
                .await
                .map_err(|e| TwinError::Config(format!("generating the CA failed: {e}")))??;
            Some(generated)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{addr}");
        let state =
            tokio::task::spawn_blocking(move || server::AppState::build(config, base_url, clock))
                .await
                .map_err(|e| TwinError::Config(format!("loading the data failed: {e}")))??;
        let state = Arc::new(state);
        let router = server::router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let (task, tls) = match tls {
            Some(t) => {
                let listener = tls::TlsListener::new(listener, t.acceptor)?;
                let info = TlsInfo {
                    ca_pem: t.ca_pem,
                    hosts: t.hosts,
                };
                (spawn_server(listener, router, stopped), Some(info))
            }
            None => (spawn_server(listener, router, stopped), None),
        };
        Ok(TwinHandle {
            addr,
            state,
            tls,
            stop: Some(stop),
            task,
        })
    }
}

/// Serves `router` on `listener` until `stopped` fires, then lets in-flight requests finish.
fn spawn_server<L>(
    listener: L,
    router: axum::Router,
    stopped: oneshot::Receiver<()>,
) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "twin server stopped");
        }
    })
}

/// The generated CA and the names its server certificate covers.
#[derive(Debug)]
struct TlsInfo {
    ca_pem: String,
    hosts: Vec<String>,
}

/// A running twin.
#[derive(Debug)]
pub struct TwinHandle {
    addr: SocketAddr,
    state: Arc<server::AppState>,
    tls: Option<TlsInfo>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TwinHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS on): the login host, the Graph host and
    /// the MDE API host at once.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// With TLS on: the generated CA certificate (PEM) a client must trust.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// With TLS on: the DNS names and IP addresses the server certificate covers.
    pub fn tls_hosts(&self) -> &[String] {
        self.tls
            .as_ref()
            .map(|t| t.hosts.as_slice())
            .unwrap_or_default()
    }

    /// The tenant's call counts; all zero for a tenant the twin does not serve.
    pub fn call_counts(&self, tenant: &str) -> CallCounts {
        self.state
            .call_counts(tenant)
            .unwrap_or_else(|| CallCounts {
                tenant: tenant.to_owned(),
                ..CallCounts::default()
            })
    }

    /// The twin's clock (a [`ManualClock`] passed in can also be advanced directly).
    pub fn clock(&self) -> Arc<dyn TwinClock> {
        self.state.clock.clone()
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
