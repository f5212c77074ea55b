//! `culprit serve`: the services. With no role every role runs in this process (in-process bus
//! and memory stores unless RabbitMQ and Redis are configured); with a role, one service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use culprit_bus::{Bus, BusConfig, InProcessBus, RabbitBus};
use culprit_cache::{BudgetLimits, Clock, RedisStores, Stores, SystemClock};
use culprit_correlator::service::CorrelatorService;
use culprit_hunter::HuntingBackend;
use culprit_hunter::service::{HunterConfig, HunterService};
use culprit_runtime::Shutdown;
use culprit_settings::Settings;
use secrecy::ExposeSecret;
use url::Url;

use crate::pipeline;

/// Which service this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Ingest,
    Hunter,
    Correlator,
    Gateway,
}

/// How long in-flight work may take to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(30);

/// Runs until SIGTERM or Ctrl-C, then drains.
pub async fn serve(settings: Settings, role: Option<Role>) -> Result<()> {
    let shutdown = Shutdown::new();
    shutdown.install_signal_handlers();
    let gateway = match role {
        None | Some(Role::Gateway) => Some(
            tokio::net::TcpListener::bind(&settings.gateway.listen)
                .await
                .with_context(|| format!("gateway.listen {}", settings.gateway.listen))?,
        ),
        _ => None,
    };
    serve_with(settings, role, shutdown, gateway).await
}

/// As [`serve`], with the stop signal and the gateway's listener given (tests bind port 0).
/// The metrics endpoint listens on `telemetry.metrics_listen` when that is set.
pub async fn serve_with(
    settings: Settings,
    role: Option<Role>,
    shutdown: Shutdown,
    gateway: Option<tokio::net::TcpListener>,
) -> Result<()> {
    let metrics = match settings.telemetry.metrics_listen.trim() {
        "" => None,
        addr => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("telemetry.metrics_listen {addr}"))?,
        ),
    };
    serve_observed(settings, role, shutdown, gateway, metrics).await
}

/// As [`serve_with`], with the metrics endpoint's listener given too.
pub async fn serve_observed(
    settings: Settings,
    role: Option<Role>,
    shutdown: Shutdown,
    gateway: Option<tokio::net::TcpListener>,
    metrics: Option<tokio::net::TcpListener>,
) -> Result<()> {
    let bus = bus(&settings, role).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let stores = stores(&settings, clock.clone())?;
    if let Some(listener) = metrics {
        let server =
            crate::observe::metrics_server(&settings, role, bus.clone(), &stores, clock.clone());
        tracing::info!(listen = ?listener.local_addr().ok(), "metrics endpoint listening");
        let sd = shutdown.clone();
        shutdown.spawn(async move {
            if let Err(e) = server
                .serve(listener, async move { sd.triggered().await })
                .await
            {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    let runs = |r: Role| role.is_none_or(|x| x == r);
    if runs(Role::Ingest) {
        if role.is_some() && settings.ingest.sources.is_empty() {
            bail!(
                "--role ingest: no source is configured; add an [ingest.sources.NAME] section \
                 (webhook, syslog_udp, syslog_tcp, syslog_tls or vectra_api)"
            );
        }
        let publisher = culprit_ingest_server::IngestPublisher::new(
            bus.clone(),
            stores.idempotency.clone(),
            culprit_ingest_server::IngestService::publisher_config(&settings.ingest),
        );
        // Vectra API pollers keep their place where the other shared state lives.
        let checkpoints: Arc<dyn culprit_cache::CheckpointStore> =
            match settings.store.kind.as_str() {
                "memory" => Arc::new(culprit_cache::MemoryCheckpoints::default()),
                _ => Arc::new(RedisStores::connect_lazy(
                    settings.store.url.expose_secret(),
                    &settings.store.key_prefix,
                )?),
            };
        culprit_ingest_server::IngestService::bind(&settings.ingest, publisher)
            .await?
            .with_pollers(&settings.ingest, checkpoints)?
            .spawn(&shutdown);
    }
    if runs(Role::Hunter) {
        let backends = backends(&settings)?;
        let hunter = HunterService::new(
            bus.clone(),
            stores.budget.clone(),
            clock.clone(),
            backends,
            hunter_config(&settings),
        )
        .with_stores(&stores);
        let sd = shutdown.clone();
        shutdown.spawn(async move {
            if let Err(e) = hunter.run(sd).await {
                tracing::error!(error = %e, "hunter stopped");
            }
        });
    }
    if runs(Role::Correlator) {
        let portals = portals(&settings)?;
        let correlator = CorrelatorService {
            bus: bus.clone(),
            results: stores.results.clone(),
            clock: clock.clone(),
            options: crate::cli::engine_options(&settings, None)?,
            links: Arc::new(move |c| {
                let portal = portals.get(&c.tenant)?;
                pipeline::links(portal, c)
            }),
            prefetch: settings.bus.prefetch,
            handled: Some(stores.idempotency.clone()),
        };
        let sd = shutdown.clone();
        shutdown.spawn(async move {
            if let Err(e) = correlator.run(sd).await {
                tracing::error!(error = %e, "correlator stopped");
            }
        });
    }
    if let Some(listener) = gateway.filter(|_| runs(Role::Gateway)) {
        let config = gateway_config(&settings, bus.clone(), &stores, clock.clone()).await?;
        tracing::info!(listen = ?listener.local_addr().ok(), "gRPC gateway listening");
        let sd = shutdown.clone();
        shutdown.spawn(async move {
            if let Err(e) =
                culprit_gateway::serve(config, listener, async move { sd.triggered().await }).await
            {
                tracing::error!(error = %e, "gateway stopped");
            }
        });
    }
    tracing::info!(role = ?role, bus = %settings.bus.kind, store = %settings.store.kind, "serving");
    shutdown.triggered().await;
    match shutdown.drain(GRACE).await {
        culprit_runtime::Drained::Clean => Ok(()),
        culprit_runtime::Drained::TimedOut => {
            bail!("in-flight work did not finish within {} s", GRACE.as_secs())
        }
    }
}

async fn bus(settings: &Settings, role: Option<Role>) -> Result<Arc<dyn Bus>> {
    let b = &settings.bus;
    let cfg = BusConfig {
        url: b.url.clone(),
        prefix: b.prefix.clone(),
        max_attempts: b.max_attempts,
        retry_delays: b
            .retry_delays_secs
            .iter()
            .map(|s| Duration::from_secs_f64(s.max(0.0)))
            .collect(),
        ..BusConfig::default()
    };
    match b.kind.as_str() {
        "in_process" => {
            if role.is_some() {
                bail!(
                    "bus.kind = \"in_process\" needs every role in one process: drop --role or use rabbitmq"
                );
            }
            Ok(Arc::new(InProcessBus::new(cfg)?))
        }
        _ => {
            let rabbit = RabbitBus::connect(cfg).await?;
            rabbit.declare_topology().await?;
            Ok(Arc::new(rabbit))
        }
    }
}

fn hunter_config(settings: &Settings) -> HunterConfig {
    let h = &settings.hunter;
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    HunterConfig {
        batch_window: Duration::from_millis(h.batch_window_ms),
        max_batch: h.max_batch,
        prefetch: settings.bus.prefetch,
        reach: crate::cli::reach(settings),
        requery_after: h.requery_after_secs.iter().copied().map(secs).collect(),
        cache_ttl: Duration::from_secs(h.cache_secs),
        empty_cache_ttl: Duration::from_secs(h.empty_cache_secs),
        hunt_attempts: h.hunt_attempts,
        // Within the process's own grace, so the drain still ends cleanly.
        shutdown_grace: GRACE.saturating_sub(Duration::from_secs(5)),
        ..HunterConfig::default()
    }
}

fn stores(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Stores> {
    // A time-scaled run (tests, the soak bench) shrinks the windows, never the limits.
    let scale = settings.hunter.budget_time_scale;
    let limits = BudgetLimits {
        per_minute: settings.hunter.calls_per_minute,
        per_hour: settings.hunter.calls_per_hour,
        minute: Duration::from_secs_f64(60.0 / scale),
        hour: Duration::from_secs_f64(3600.0 / scale),
    };
    match settings.store.kind.as_str() {
        "memory" => Ok(Stores::memory(clock, limits)?),
        _ => {
            let redis = RedisStores::connect_lazy(
                settings.store.url.expose_secret(),
                &settings.store.key_prefix,
            )?
            .with_limits(limits)?;
            // While Redis is away each replica may spend a quarter of the tenant's budget.
            Ok(Stores::redis(redis, 0.25)?)
        }
    }
}

async fn gateway_config(
    settings: &Settings,
    bus: Arc<dyn Bus>,
    stores: &Stores,
    clock: Arc<dyn Clock>,
) -> Result<culprit_gateway::GatewayConfig> {
    let gateway_stores: Arc<dyn culprit_gateway::stores::GatewayStores> =
        match settings.store.kind.as_str() {
            "memory" => Arc::new(culprit_gateway::stores::MemoryGatewayStores::from_settings(
                &settings.gateway,
            )),
            _ => Arc::new(
                culprit_gateway::stores::RedisGatewayStores::connect_with_settings(
                    settings.store.url.expose_secret(),
                    &settings.store.key_prefix,
                    &settings.gateway,
                )
                .await?,
            ),
        };
    let mde = settings
        .tenants
        .iter()
        .map(|(name, t)| Ok((name.clone(), pipeline::configured_client(name, t)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    Ok(culprit_gateway::GatewayConfig {
        settings: settings.gateway.clone(),
        handles: culprit_gateway::Handles {
            results: stores.results.clone(),
            idempotency: stores.idempotency.clone(),
            publisher: bus.clone(),
            // The ingest path: confirms, mandatory, dedup shared with webhook and syslog.
            submit: Some(Arc::new(crate::submit::IngestSink(
                culprit_ingest_server::IngestPublisher::new(
                    bus.clone(),
                    stores.idempotency.clone(),
                    culprit_ingest_server::IngestService::publisher_config(&settings.ingest),
                ),
            ))),
            subscriber: Some(bus.clone()),
            stores: gateway_stores,
            mde,
            probes: vec![
                Arc::new(culprit_gateway::StoreProbe(stores.results.clone())),
                Arc::new(culprit_gateway::BusProbe {
                    bus,
                    queue: culprit_bus::QueueName::Policy,
                }),
            ],
            clock,
        },
    })
}

fn backends(settings: &Settings) -> Result<BTreeMap<String, Arc<dyn HuntingBackend>>> {
    if settings.tenants.is_empty() {
        bail!("the configuration names no tenant: add a [tenants.NAME] section");
    }
    settings
        .tenants
        .iter()
        .map(|(name, t)| Ok((name.clone(), pipeline::configured_tenant(name, t)?.backend)))
        .collect()
}

fn portals(settings: &Settings) -> Result<BTreeMap<String, Url>> {
    settings
        .tenants
        .iter()
        .map(|(name, t)| {
            let client =
                pipeline::configured_client(name, t).with_context(|| format!("tenants.{name}"))?;
            Ok((name.clone(), client.portal().clone()))
        })
        .collect()
}
