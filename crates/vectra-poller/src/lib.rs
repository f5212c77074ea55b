//! Polls the Vectra API for detections and hands each raw detection object to a
//! [`DetectionSink`] (the ingest service's publisher), keeping its place in a
//! [`CheckpointStore`] so that a restart resumes where the last confirmed batch ended.
//!
//! - **Auth**: v3 OAuth2 client credentials at `{base}/oauth2/token` (HTTP Basic), renewed before
//!   it expires (by its refresh token while that is valid) and once more on a 401; or the v2
//!   static `Authorization: Token …`.
//! - **[`PollMode::Events`]** (default): the v3.5 `events/detections` stream from the stored
//!   checkpoint; the detection each event names is fetched whole and handed off; the checkpoint
//!   becomes `next_checkpoint` only after the sink confirmed the batch.
//! - **[`PollMode::Detections`]**: the detection list ordered by `last_timestamp`, from the
//!   stored newest `last_timestamp`, following `next`. Detections with the checkpoint's exact
//!   timestamp are handed off again after a restart (the sink dedupes by detection key). A page
//!   list that shifts while it is read can skip a detection until it next changes: prefer the
//!   event stream where the API has it.
//! - **Faults**: 429 waits `Retry-After`; 5xx and transport errors back off with jitter
//!   ([`culprit_runtime::Backoff`]); other refusals are logged and retried after a backoff.
//!   TLS certificates are always verified (an extra CA may be trusted with `ca_file`).
//!   Secrets are [`SecretString`]s and never appear in logs, errors or `Debug`.

mod api;
mod clock;
mod poll;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use culprit_cache::{BoxFuture, CacheError, CheckpointStore};
use culprit_runtime::Shutdown;
use secrecy::SecretString;
use url::Url;

pub use clock::{PollClock, SteppedClock, TokioClock};

/// Where raw detections go. `Ok` means every item is safely handed off (published with
/// confirms, or dead-lettered with its reason); `Err` means none may be assumed handed off: the
/// poller keeps its checkpoint, backs off and submits the same batch again, so the sink must
/// absorb duplicates (by detection key).
pub trait DetectionSink: Send + Sync + std::fmt::Debug {
    fn submit<'a>(&'a self, raw: Vec<serde_json::Value>) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// The sink could not take a batch.
#[derive(Debug, thiserror::Error)]
#[error("sink refused the batch: {reason}")]
pub struct SinkError {
    pub reason: String,
}

impl SinkError {
    pub fn new(reason: impl Into<String>) -> Self {
        SinkError {
            reason: reason.into(),
        }
    }
}

/// How the poller proves who it is.
#[derive(Clone, Debug)]
pub enum VectraAuth {
    /// v3 (RUX / SaaS): OAuth2 client credentials at `{base_url}/oauth2/token`.
    OAuth {
        client_id: String,
        client_secret: SecretString,
    },
    /// v2 (Detect, on-prem brain): the static `Authorization: Token …`.
    Token(SecretString),
}

/// Which API the poller reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PollMode {
    /// `GET /api/v3.5/events/detections?from=…`: a durable cursor over detection changes.
    #[default]
    Events,
    /// `GET /api/{api_version}/detections?ordering=last_timestamp&last_timestamp_gte=…`.
    Detections,
}

/// One Vectra source.
#[derive(Clone, Debug)]
pub struct PollerConfig {
    /// The source's name: its checkpoint is stored as `vectra:{name}`.
    pub name: String,
    /// The tenant the source belongs to (for logs; the sink knows its tenant).
    pub tenant: String,
    /// `https://<tenant>.<region>.portal.vectra.ai` or `https://<brain>`.
    pub base_url: Url,
    pub auth: VectraAuth,
    pub mode: PollMode,
    /// The detections API version (`v3.3`; a v2 brain: `v2.5`).
    pub api_version: String,
    /// `page_size` of list pages and `limit` of event pages.
    pub page_size: u32,
    /// Pause after a pass that found nothing more.
    pub poll_interval: Duration,
    pub request_timeout: Duration,
    /// Extra CA certificates (PEM) to trust; verification itself cannot be turned off.
    pub ca_file: Option<PathBuf>,
    /// Where to start when the store holds no checkpoint: an event checkpoint (events mode,
    /// default `0`, i.e. everything the API still holds) or an RFC 3339 time (detections mode,
    /// default: no lower bound).
    pub start_checkpoint: Option<String>,
    /// First and largest pause between retries of failing calls (jittered, doubling).
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// The longest `Retry-After` honoured; longer asks are cut to it.
    pub max_retry_after: Duration,
}

impl PollerConfig {
    pub fn new(name: &str, tenant: &str, base_url: Url, auth: VectraAuth, mode: PollMode) -> Self {
        PollerConfig {
            name: name.to_owned(),
            tenant: tenant.to_owned(),
            base_url,
            auth,
            mode,
            api_version: "v3.3".to_owned(),
            page_size: 500,
            poll_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            ca_file: None,
            start_checkpoint: None,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(120),
            max_retry_after: Duration::from_secs(900),
        }
    }

    /// The key of this source's checkpoint.
    pub fn checkpoint_name(&self) -> String {
        format!("vectra:{}", self.name)
    }

    /// Rejects settings the poller cannot use, naming the field.
    pub fn validate(&self) -> Result<(), PollerError> {
        let bad = |field: &'static str, reason: &str| {
            Err(PollerError::Config {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.name.trim().is_empty() {
            return bad("name", "is empty");
        }
        match self.base_url.scheme() {
            "https" | "http" => {}
            _ => return bad("url", "must be an http:// or https:// URL"),
        }
        if self.base_url.host_str().is_none() {
            return bad("url", "has no host");
        }
        if !self.base_url.username().is_empty() || self.base_url.password().is_some() {
            return bad(
                "url",
                "must not carry credentials (use client_id/client_secret or api_token)",
            );
        }
        let v = self.api_version.as_str();
        let ok_version = v
            .strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == '.'));
        if !ok_version {
            return bad("api_version", "must look like v3.3 or v2.5");
        }
        if self.page_size == 0 || self.page_size > 5000 {
            return bad("page_size", "must be between 1 and 5000");
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval_secs", "must be at least 1 second");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout_secs", "must be at least 1 second");
        }
        if self.backoff_base.is_zero() || self.backoff_cap < self.backoff_base {
            return bad("backoff", "base must be positive and not above the cap");
        }
        if let VectraAuth::OAuth { client_id, .. } = &self.auth
            && client_id.trim().is_empty()
        {
            return bad("client_id", "is empty");
        }
        if let Some(cp) = &self.start_checkpoint {
            let ok = match self.mode {
                PollMode::Events => cp.trim().parse::<u64>().is_ok(),
                PollMode::Detections => !cp.trim().is_empty(),
            };
            if !ok {
                return bad(
                    "start_checkpoint",
                    "must be an event id (events mode) or an RFC 3339 time (detections mode)",
                );
            }
        }
        Ok(())
    }
}

/// Why a poll failed. Messages name the endpoint, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    #[error("vectra poller config: {field} {reason}")]
    Config { field: &'static str, reason: String },
    /// The credentials were refused (token endpoint or API after a fresh token).
    #[error("vectra authentication failed at {endpoint}: {reason}")]
    Auth { endpoint: String, reason: String },
    /// A 4xx other than 401/429 (or a 404 where a list was expected).
    #[error("vectra API refused {endpoint}: HTTP {status}: {detail}")]
    Refused {
        endpoint: String,
        status: u16,
        detail: String,
    },
    /// A 2xx whose body is not what the API documents.
    #[error("vectra API answered {endpoint} with an unexpected body: {reason}")]
    BadResponse { endpoint: String, reason: String },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("checkpoint store: {0}")]
    Checkpoint(#[from] CacheError),
    /// Shutdown fired while waiting; the batch in hand (if any) was not handed off.
    #[error("stopped by shutdown")]
    Shutdown,
}

/// Polls one Vectra source.
#[derive(Debug)]
pub struct Poller {
    config: PollerConfig,
    api: api::Api,
    sink: Arc<dyn DetectionSink>,
    checkpoints: Arc<dyn CheckpointStore>,
    clock: Arc<dyn PollClock>,
}

impl Poller {
    /// Checks the config and builds the HTTP client (reading `ca_file`); polls nothing yet.
    pub fn new(
        config: PollerConfig,
        sink: Arc<dyn DetectionSink>,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Result<Self, PollerError> {
        Self::with_clock(config, sink, checkpoints, Arc::new(TokioClock))
    }

    /// As [`Poller::new`] with an injected clock (tests use a [`SteppedClock`]).
    pub fn with_clock(
        config: PollerConfig,
        sink: Arc<dyn DetectionSink>,
        checkpoints: Arc<dyn CheckpointStore>,
        clock: Arc<dyn PollClock>,
    ) -> Result<Self, PollerError> {
        config.validate()?;
        let api = api::Api::new(&config, clock.clone())?;
        Ok(Poller {
            config,
            api,
            sink,
            checkpoints,
            clock,
        })
    }

    pub fn config(&self) -> &PollerConfig {
        &self.config
    }

    /// Polls until `shutdown` fires. A batch the sink is taking is finished and its checkpoint
    /// saved before this returns. Errors never end the loop: they are logged and retried after
    /// a jittered backoff.
    pub async fn run(&self, shutdown: Shutdown) {
        let mut failures =
            culprit_runtime::Backoff::new(self.config.backoff_base, self.config.backoff_cap);
        tracing::info!(
            source = %self.config.name,
            tenant = %self.config.tenant,
            url = %self.config.base_url,
            mode = ?self.config.mode,
            "vectra poller started"
        );
        loop {
            if shutdown.is_triggered() {
                break;
            }
            let pause = match self.pass(&shutdown).await {
                Ok(n) => {
                    failures.reset();
                    if n > 0 {
                        tracing::info!(source = %self.config.name, detections = n, "vectra poll handed off detections");
                    }
                    self.config.poll_interval
                }
                Err(PollerError::Shutdown) => break,
                Err(e) => {
                    let d = failures.next_delay();
                    tracing::warn!(source = %self.config.name, error = %e, retry_in_ms = d.as_millis() as u64, "vectra poll failed");
                    d
                }
            };
            if self.pause(pause, &shutdown).await.is_err() {
                break;
            }
        }
        tracing::info!(source = %self.config.name, "vectra poller stopped");
    }

    /// One pass until the API has nothing more; returns how many detections were handed off.
    /// Transient faults (429, 5xx, transport) are retried inside; other errors end the pass
    /// with the checkpoint at the last confirmed batch.
    pub async fn poll_once(&self) -> Result<u64, PollerError> {
        self.pass(&Shutdown::new()).await
    }

    /// As [`Poller::poll_once`], stopping between batches (or in a wait) when `shutdown` fires.
    pub async fn poll_once_until(&self, shutdown: &Shutdown) -> Result<u64, PollerError> {
        self.pass(shutdown).await
    }

    async fn pass(&self, shutdown: &Shutdown) -> Result<u64, PollerError> {
        match self.config.mode {
            PollMode::Events => self.poll_events(shutdown).await,
            PollMode::Detections => self.poll_detections(shutdown).await,
        }
    }

    /// Sleeps on the injected clock; `Err` when shutdown fired first.
    async fn pause(&self, d: Duration, shutdown: &Shutdown) -> Result<(), PollerError> {
        if shutdown.is_triggered() {
            return Err(PollerError::Shutdown);
        }
        tokio::select! {
            biased;
            _ = shutdown.triggered() => Err(PollerError::Shutdown),
            _ = self.clock.sleep(d) => Ok(()),
        }
    }
}
