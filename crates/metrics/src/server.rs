//! The per-process HTTP endpoint: `/metrics` (OpenMetrics text), `/healthz` (the process
//! answers) and `/readyz` (every dependency answers: bus, store).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::{BoxFuture, join_all};
use tokio::net::TcpListener;

use crate::Metrics;

/// A dependency `/readyz` checks.
pub trait Probe: Send + Sync + std::fmt::Debug {
    /// Short name for the report (`store`, `bus`).
    fn name(&self) -> &str;
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Values read at scrape time (queue depth, budget left), before `/metrics` renders.
pub trait Refresh: Send + Sync {
    fn refresh<'a>(&'a self, metrics: &'a Metrics) -> BoxFuture<'a, ()>;
}

/// The endpoint's configuration: what to render, what to probe.
#[derive(Clone)]
pub struct MetricsServer {
    metrics: Metrics,
    probes: Vec<Arc<dyn Probe>>,
    refreshers: Vec<Arc<dyn Refresh>>,
    timeout: Duration,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let probes: Vec<&str> = self.probes.iter().map(|p| p.name()).collect();
        f.debug_struct("MetricsServer")
            .field("probes", &probes)
            .field("refreshers", &self.refreshers.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Serves `metrics` with no probe; a probe or refresher gets `timeout` (2 s) to answer.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            probes: Vec::new(),
            refreshers: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }

    /// Adds a readiness check.
    #[must_use]
    pub fn probe(mut self, probe: Arc<dyn Probe>) -> Self {
        self.probes.push(probe);
        self
    }

    /// Adds a scrape-time refresher.
    #[must_use]
    pub fn refresh(mut self, refresh: Arc<dyn Refresh>) -> Self {
        self.refreshers.push(refresh);
        self
    }

    /// How long one probe or refresher may take.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The routes, for embedding or for tests.
    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(render))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .with_state(Arc::new(self))
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Runs every probe (concurrently, each bounded by the timeout): the failures by name.
    pub async fn failing(&self) -> Vec<(String, String)> {
        let checks = self.probes.iter().map(|p| async move {
            let outcome = match tokio::time::timeout(self.timeout, p.check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", self.timeout)),
            };
            outcome.err().map(|e| (p.name().to_owned(), e))
        });
        join_all(checks).await.into_iter().flatten().collect()
    }
}

async fn render(State(s): State<Arc<MetricsServer>>) -> Response {
    let refreshes = s.refreshers.iter().map(|r| async {
        // A slow dependency leaves the previous value in place rather than stalling scrapes.
        let _ = tokio::time::timeout(s.timeout, r.refresh(&s.metrics)).await;
    });
    join_all(refreshes).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn ready(State(s): State<Arc<MetricsServer>>) -> Response {
    let failing = s.failing().await;
    if failing.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let body: String = failing
        .iter()
        .map(|(name, e)| format!("{name}: {e}\n"))
        .collect();
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}
