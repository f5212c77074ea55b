//! The configured sources, bound and run until shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use culprit_cache::CheckpointStore;
use culprit_vectra_poller::{PollMode, Poller, PollerConfig, VectraAuth};

use culprit_runtime::Shutdown;
use culprit_settings::{IngestSettings, IngestSourceSettings};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::{TcpListener, UdpSocket};
use tokio_rustls::TlsAcceptor;

use crate::syslog::{self, SyslogConfig};
use crate::webhook::{self, WebhookConfig, WebhookSource};
use crate::{Format, IngestPublisher, PollerSink, PublisherConfig, Source};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A setting is missing or unusable.
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    /// A listener could not be bound.
    #[error("{field}: cannot listen on {addr}: {source}")]
    Bind {
        field: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

enum Listener {
    Udp(UdpSocket, SyslogConfig),
    Tcp(TcpListener, Option<TlsAcceptor>, SyslogConfig),
}

impl std::fmt::Debug for Listener {
    // The TLS acceptor has no Debug; whether there is one is what matters.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listener::Udp(s, cfg) => f.debug_tuple("Udp").field(s).field(cfg).finish(),
            Listener::Tcp(t, tls, cfg) => f
                .debug_tuple("Tcp")
                .field(t)
                .field(&tls.as_ref().map(|_| "tls"))
                .field(cfg)
                .finish(),
        }
    }
}

/// Every source of the configuration: webhook and syslog listeners bound, Vectra API pollers
/// built ([`IngestService::with_pollers`]).
#[derive(Debug)]
pub struct IngestService {
    publisher: IngestPublisher,
    webhook: Option<(TcpListener, WebhookConfig)>,
    syslog: Vec<(String, Listener)>,
    pollers: Vec<Poller>,
}

fn config_error(field: impl Into<String>, reason: impl Into<String>) -> ServiceError {
    ServiceError::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

fn non_empty(secret: &SecretString) -> Option<SecretString> {
    (!secret.expose_secret().is_empty()).then(|| secret.clone())
}

impl IngestService {
    /// The publisher's settings from `[ingest]`.
    pub fn publisher_config(settings: &IngestSettings) -> PublisherConfig {
        PublisherConfig {
            dedup_window: Duration::from_secs(settings.dedup_window_secs.max(1)),
            ack_timeout: Duration::from_secs(settings.ack_timeout_secs.max(1)),
            ..PublisherConfig::default()
        }
    }

    /// The source `name` as the publisher sees it; its format defaults to `vectra_json` for
    /// `vectra_api` sources.
    pub fn source(name: &str, s: &IngestSourceSettings) -> Result<Source, ServiceError> {
        let field = format!("ingest.sources.{name}");
        if s.tenant.trim().is_empty() {
            return Err(config_error(format!("{field}.tenant"), "missing (empty)"));
        }
        let format = match (s.kind.as_str(), s.format.as_str()) {
            ("vectra_api", "") => Format::VectraJson,
            (_, f) => Format::parse(f).ok_or_else(|| {
                config_error(
                    format!("{field}.format"),
                    format!(
                        "{f:?} is not one of vectra_json, vectra_syslog, suricata_eve, zeek_notice"
                    ),
                )
            })?,
        };
        Ok(Source::new(name, s.tenant.clone(), format))
    }

    /// Binds the webhook and every syslog listener of `settings`.
    pub async fn bind(
        settings: &IngestSettings,
        publisher: IngestPublisher,
    ) -> Result<Self, ServiceError> {
        let mut webhook_sources = Vec::new();
        let mut syslog = Vec::new();
        for (name, s) in &settings.sources {
            let field = format!("ingest.sources.{name}");
            let source = Self::source(name, s)?;
            match s.kind.as_str() {
                "webhook" => {
                    let (token, hmac_secret) = (non_empty(&s.token), non_empty(&s.hmac_secret));
                    if token.is_none() && hmac_secret.is_none() {
                        return Err(config_error(field, "a webhook needs token or hmac_secret"));
                    }
                    webhook_sources.push(WebhookSource {
                        source,
                        token,
                        hmac_secret,
                    });
                }
                "syslog_udp" | "syslog_tcp" | "syslog_tls" => {
                    if source.format != Format::VectraSyslog {
                        return Err(config_error(
                            format!("{field}.format"),
                            "syslog sources read vectra_syslog",
                        ));
                    }
                    let cfg = SyslogConfig {
                        source,
                        allowed_peers: SyslogConfig::parse_peers(
                            &format!("{field}.allowed_peers"),
                            &s.allowed_peers,
                        )?,
                        in_flight: settings.tcp_in_flight.max(1),
                        max_frame_bytes: settings.max_frame_bytes.max(1),
                    };
                    let listener = bind_syslog(&field, s, cfg).await?;
                    syslog.push((name.clone(), listener));
                }
                "vectra_api" => {}
                other => {
                    return Err(config_error(
                        format!("{field}.kind"),
                        format!(
                            "{other:?} is not one of webhook, syslog_udp, syslog_tcp, syslog_tls, vectra_api"
                        ),
                    ));
                }
            }
        }
        let webhook = match (settings.webhook_listen.as_str(), webhook_sources.is_empty()) {
            ("", true) => None,
            ("", false) => {
                return Err(config_error(
                    "ingest.webhook_listen",
                    "missing (empty) while webhook sources are configured",
                ));
            }
            (addr, _) => {
                let listener =
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServiceError::Bind {
                            field: "ingest.webhook_listen".into(),
                            addr: addr.to_owned(),
                            source,
                        })?;
                let cfg = WebhookConfig {
                    sources: webhook_sources,
                    max_body_bytes: settings.max_body_bytes.max(1),
                };
                Some((listener, cfg))
            }
        };
        Ok(IngestService {
            publisher,
            webhook,
            syslog,
            pollers: Vec::new(),
        })
    }

    /// Adds a poller for every `vectra_api` source of `settings`, keeping its place in
    /// `checkpoints` and handing its detections to this service's publisher.
    pub fn with_pollers(
        mut self,
        settings: &IngestSettings,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Result<Self, ServiceError> {
        for (name, s) in settings
            .sources
            .iter()
            .filter(|(_, s)| s.kind == "vectra_api")
        {
            let config = poller_config(name, s)?;
            let sink = Arc::new(PollerSink {
                publisher: self.publisher.clone(),
                source: Self::source(name, s)?,
            });
            let poller = Poller::new(config, sink, checkpoints.clone())
                .map_err(|e| config_error(format!("ingest.sources.{name}.api"), e.to_string()))?;
            self.pollers.push(poller);
        }
        Ok(self)
    }

    /// Where the webhook listens.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook.as_ref()?.0.local_addr().ok()
    }

    /// Where the syslog source `name` listens.
    pub fn syslog_addr(&self, name: &str) -> Option<SocketAddr> {
        let (_, l) = self.syslog.iter().find(|(n, _)| n == name)?;
        match l {
            Listener::Udp(s, _) => s.local_addr().ok(),
            Listener::Tcp(t, _, _) => t.local_addr().ok(),
        }
    }

    /// Runs every listener as a task `shutdown` tracks: when it fires they stop accepting,
    /// finish the input in flight (until confirmed) and end.
    pub fn spawn(self, shutdown: &Shutdown) {
        if let Some((listener, cfg)) = self.webhook {
            let router = webhook::router(self.publisher.clone(), cfg);
            let sd = shutdown.clone();
            tracing::info!(listen = ?listener.local_addr().ok(), "ingest webhook listening");
            shutdown.spawn(async move {
                let stop = {
                    let sd = sd.clone();
                    async move { sd.triggered().await }
                };
                if let Err(e) = webhook::serve(listener, router, stop).await {
                    tracing::error!(error = %e, "ingest webhook stopped");
                }
            });
        }
        for poller in self.pollers {
            let sd = shutdown.clone();
            shutdown.spawn(async move { poller.run(sd).await });
        }
        for (name, listener) in self.syslog {
            let (publisher, sd) = (self.publisher.clone(), shutdown.clone());
            match listener {
                Listener::Udp(socket, cfg) => {
                    tracing::info!(source = %name, listen = ?socket.local_addr().ok(), "syslog UDP listening");
                    shutdown.spawn(syslog::run_udp(socket, publisher, cfg, sd));
                }
                Listener::Tcp(tcp, tls, cfg) => {
                    tracing::info!(source = %name, listen = ?tcp.local_addr().ok(), tls = tls.is_some(), "syslog TCP listening");
                    shutdown.spawn(syslog::run_tcp(tcp, tls, publisher, cfg, sd));
                }
            }
        }
    }
}

/// `[ingest.sources.NAME.api]` as the poller's configuration; errors name the key.
fn poller_config(name: &str, s: &IngestSourceSettings) -> Result<PollerConfig, ServiceError> {
    let field = |k: &str| format!("ingest.sources.{name}.api.{k}");
    let a = &s.api;
    let url = a
        .url
        .parse()
        .map_err(|e| config_error(field("url"), format!("{:?}: {e}", a.url)))?;
    let auth = match a.auth.as_str() {
        "oauth" => VectraAuth::OAuth {
            client_id: a.client_id.clone(),
            client_secret: non_empty(&a.client_secret)
                .ok_or_else(|| config_error(field("client_secret"), "missing (empty)"))?,
        },
        "token" => VectraAuth::Token(
            non_empty(&a.api_token)
                .ok_or_else(|| config_error(field("api_token"), "missing (empty)"))?,
        ),
        other => {
            return Err(config_error(
                field("auth"),
                format!("{other:?} is not one of oauth, token"),
            ));
        }
    };
    let mode = match a.mode.as_str() {
        "events" => PollMode::Events,
        "detections" => PollMode::Detections,
        other => {
            return Err(config_error(
                field("mode"),
                format!("{other:?} is not one of events, detections"),
            ));
        }
    };
    let mut config = PollerConfig::new(name, &s.tenant, url, auth, mode);
    config.api_version.clone_from(&a.api_version);
    config.page_size = a.page_size;
    config.poll_interval = Duration::from_secs(a.poll_interval_secs);
    config.request_timeout = Duration::from_secs(a.request_timeout_secs);
    config.ca_file = Some(PathBuf::from(&a.ca_file)).filter(|_| !a.ca_file.is_empty());
    config.start_checkpoint = Some(a.start_checkpoint.clone()).filter(|c| !c.is_empty());
    Ok(config)
}

async fn bind_syslog(
    field: &str,
    s: &IngestSourceSettings,
    cfg: SyslogConfig,
) -> Result<Listener, ServiceError> {
    let bind_error = |source| ServiceError::Bind {
        field: format!("{field}.listen"),
        addr: s.listen.clone(),
        source,
    };
    if s.listen.is_empty() {
        return Err(config_error(format!("{field}.listen"), "missing (empty)"));
    }
    if s.kind == "syslog_udp" {
        let socket = UdpSocket::bind(&s.listen).await.map_err(bind_error)?;
        return Ok(Listener::Udp(socket, cfg));
    }
    if cfg.allowed_peers.is_empty() {
        return Err(config_error(
            format!("{field}.allowed_peers"),
            "empty; list the CIDRs allowed to send",
        ));
    }
    let tls = if s.kind == "syslog_tls" {
        if s.tls.cert_file.is_empty() || s.tls.key_file.is_empty() {
            return Err(config_error(
                format!("{field}.tls"),
                "cert_file and key_file are required",
            ));
        }
        Some(syslog::tls_acceptor(
            &format!("{field}.tls"),
            Path::new(&s.tls.cert_file),
            Path::new(&s.tls.key_file),
        )?)
    } else {
        None
    };
    let tcp = TcpListener::bind(&s.listen).await.map_err(bind_error)?;
    Ok(Listener::Tcp(tcp, tls, cfg))
}
