//! Observability wiring for `culprit serve`: tracing with the role's service name (OTLP export
//! when configured) and the metrics endpoint's probes and scrape-time readings.

use std::sync::Arc;

use culprit_bus::{Bus, QueueName};
use culprit_cache::{Clock, HuntBudget, Stores};
use culprit_gateway::{BusProbe, StoreProbe};
use culprit_metrics::{Metrics, MetricsServer, Refresh};
use culprit_settings::Settings;
use culprit_telemetry::{Telemetry, TelemetryConfig};
use futures::future::BoxFuture;

use crate::serve::Role;

/// `service.name` of the role's spans: `culprit` when every role runs in this process.
pub fn service_name(role: Option<Role>) -> &'static str {
    match role {
        None => "culprit",
        Some(Role::Ingest) => "culprit-ingest",
        Some(Role::Hunter) => "culprit-hunter",
        Some(Role::Correlator) => "culprit-correlator",
        Some(Role::Gateway) => "culprit-gateway",
    }
}

/// The tracing set-up `settings.telemetry` asks for.
pub fn telemetry_config(settings: &Settings, role: Option<Role>) -> TelemetryConfig {
    let t = &settings.telemetry;
    TelemetryConfig {
        log_format: t.log_format.clone(),
        log_filter: t.log_filter.clone(),
        service_name: service_name(role).to_owned(),
        otlp_endpoint: Some(t.otlp_endpoint.clone()).filter(|e| !e.trim().is_empty()),
        ..TelemetryConfig::default()
    }
}

/// Flushes the last spans to the collector (blocking, off the async workers).
pub async fn shutdown_telemetry(telemetry: Telemetry) {
    let flushed = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match flushed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "spans lost at exit"),
        Err(e) => tracing::warn!(error = %e, "spans lost at exit"),
    }
}

/// The metrics endpoint of a process: ready when the bus and the result store answer;
/// queue depths and (where hunting runs) the tenants' budgets read at scrape time.
pub fn metrics_server(
    settings: &Settings,
    role: Option<Role>,
    bus: Arc<dyn Bus>,
    stores: &Stores,
    clock: Arc<dyn Clock>,
) -> MetricsServer {
    let mut server = MetricsServer::new(culprit_metrics::metrics().clone())
        .probe(Arc::new(BusProbe {
            bus: bus.clone(),
            queue: QueueName::Hunt,
        }))
        .probe(Arc::new(StoreProbe(stores.results.clone())))
        .refresh(Arc::new(QueueDepths(bus)));
    if role.is_none_or(|r| r == Role::Hunter) {
        server = server.refresh(Arc::new(BudgetLeft {
            budget: stores.budget.clone(),
            clock,
            tenants: settings.tenants.keys().cloned().collect(),
        }));
    }
    server
}

struct QueueDepths(Arc<dyn Bus>);

impl Refresh for QueueDepths {
    fn refresh<'a>(&'a self, metrics: &'a Metrics) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for queue in QueueName::STANDARD {
                match self.0.queue_depth(queue.clone()).await {
                    Ok(depth) => metrics.queue_depth(queue.as_str(), depth),
                    Err(e) => tracing::debug!(queue = %queue, error = %e, "queue depth unknown"),
                }
            }
        })
    }
}

struct BudgetLeft {
    budget: Arc<dyn HuntBudget>,
    clock: Arc<dyn Clock>,
    tenants: Vec<String>,
}

impl Refresh for BudgetLeft {
    fn refresh<'a>(&'a self, metrics: &'a Metrics) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for tenant in &self.tenants {
                match self.budget.remaining(tenant, self.clock.now()).await {
                    Ok(left) => metrics.budget_left(tenant, left.per_minute, left.per_hour),
                    Err(e) => tracing::debug!(tenant, error = %e, "hunting budget unknown"),
                }
            }
        })
    }
}
