//! Assembly: the two Culprit services, gRPC health and reflection, optional (mutual) TLS, the
//! background watch feed and policy, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use culprit_proto::v1::correlation_service_server::CorrelationServiceServer;
use culprit_proto::v1::response_service_server::ResponseServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::KeyRing;
use crate::correlation::CorrelationApi;
use crate::ctx::{Ctx, GatewayConfig};
use crate::fast::FastCorrelationService;
use crate::policy::{Policy, PolicyConfig};
use crate::response::ResponseApi;
use crate::{GatewayError, feed};

const PROBE_TIMEOUT: StdDuration = StdDuration::from_secs(2);

/// A configured gateway, ready to serve.
#[derive(Debug)]
pub struct Gateway {
    ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    policy: PolicyConfig,
}

impl Gateway {
    /// Validates the settings (keys, policy, TLS files are read at serve time).
    pub fn new(cfg: GatewayConfig) -> Result<Self, GatewayError> {
        let s = &cfg.settings;
        let keys = KeyRing::from_settings(&s.api_keys, s.rate_limit_per_key)?;
        let policy = PolicyConfig::from_settings(&s.policy)?;
        let (stop, shutdown) = watch::channel(false);
        Ok(Gateway {
            ctx: Arc::new(Ctx {
                keys,
                h: cfg.handles,
                settings: cfg.settings,
                shutdown,
            }),
            stop,
            policy,
        })
    }

    /// The policy engine over this gateway's state (the server runs it on the policy queue;
    /// exposed for embedding and tests).
    pub fn policy(&self) -> Policy {
        Policy {
            ctx: self.ctx.clone(),
            cfg: self.policy.clone(),
        }
    }

    /// Serves on `listener` until `shutdown` resolves, then reports NOT_SERVING, ends the
    /// watch streams and drains in-flight calls.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let (reporter, health) = tonic_health::server::health_reporter();
        set_all(&reporter, ServingStatus::NotServing).await;
        let reflection_v1 = reflection().build_v1().map_err(server_err)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(server_err)?;
        let mut builder =
            // A span per call in the caller's trace (`traceparent` metadata).
            Server::builder().trace_fn(culprit_metrics::grpc::request_span);
        if let Some(tls) = tls_config(&self.ctx.settings.tls)? {
            builder = builder.tls_config(tls).map_err(server_err)?;
        }
        self.spawn_background().await?;
        tokio::spawn(monitor(self.ctx.clone(), reporter.clone()));
        let stop = self.stop;
        let signal = async move {
            shutdown.await;
            tracing::info!("gateway shutting down");
            let _ = stop.send(true);
            set_all(&reporter, ServingStatus::NotServing).await;
        };
        let router = builder
            .layer(culprit_metrics::grpc::GrpcMetricsLayer::default())
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(FastCorrelationService::new(CorrelationApi {
                ctx: self.ctx.clone(),
            }))
            .add_service(ResponseServiceServer::new(ResponseApi {
                ctx: self.ctx.clone(),
            }));
        router
            // No Nagle: small unary answers would otherwise wait for delayed ACKs (~40 ms).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                signal,
            )
            .await
            .map_err(server_err)
    }

    async fn spawn_background(&self) -> Result<(), GatewayError> {
        let Some(sub) = self.ctx.h.subscriber.clone() else {
            return Ok(());
        };
        // Bound before serving, so nothing published from now on is missed by watchers.
        feed::bind(sub.as_ref()).await?;
        tokio::spawn(feed::run(self.ctx.clone(), sub.clone()));
        // Runs even when off: it then acknowledges (skips) everything, so the policy queue
        // never fills up and blocks the correlator's publishes.
        tokio::spawn(self.policy().run(sub));
        Ok(())
    }
}

/// Serves the gateway: see [`Gateway::serve`].
pub async fn serve(
    cfg: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    Gateway::new(cfg)?.serve(listener, shutdown).await
}

fn server_err(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Server(e.to_string())
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(culprit_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, GatewayError> {
    std::fs::read(path).map_err(|e| GatewayError::config(key, format!("cannot read {path}: {e}")))
}

fn tls_config(
    t: &culprit_settings::GatewayTlsSettings,
) -> Result<Option<ServerTlsConfig>, GatewayError> {
    if t.cert_file.is_empty() {
        if !t.client_ca_file.is_empty() || !t.key_file.is_empty() {
            return Err(GatewayError::config(
                "gateway.tls.cert_file",
                "required when key_file or client_ca_file is set",
            ));
        }
        return Ok(None);
    }
    let cert = read("gateway.tls.cert_file", &t.cert_file)?;
    let key = read("gateway.tls.key_file", &t.key_file)?;
    let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if !t.client_ca_file.is_empty() {
        let ca = read("gateway.tls.client_ca_file", &t.client_ca_file)?;
        cfg = cfg.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(Some(cfg))
}

fn names() -> [&'static str; 3] {
    [
        "",
        <CorrelationServiceServer<CorrelationApi> as NamedService>::NAME,
        <ResponseServiceServer<ResponseApi> as NamedService>::NAME,
    ]
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in names() {
        reporter.set_service_status(name, status).await;
    }
}

async fn probes_pass(ctx: &Ctx) -> bool {
    for p in &ctx.h.probes {
        match tokio::time::timeout(PROBE_TIMEOUT, p.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(probe = p.name(), error = %e, "dependency unreachable");
                return false;
            }
            Err(_) => {
                tracing::warn!(probe = p.name(), "dependency probe timed out");
                return false;
            }
        }
    }
    true
}

/// SERVING only while every probe passes and the server is not stopping.
async fn monitor(ctx: Arc<Ctx>, reporter: HealthReporter) {
    let stop = ctx.shutdown.clone();
    loop {
        let ok = probes_pass(&ctx).await;
        if *stop.borrow() {
            return;
        }
        let status = if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        set_all(&reporter, status).await;
        let pause = if ok { 5 } else { 1 };
        tokio::select! {
            _ = tokio::time::sleep(StdDuration::from_secs(pause)) => {}
            _ = crate::ctx::stopped(stop.clone()) => return,
        }
    }
}
