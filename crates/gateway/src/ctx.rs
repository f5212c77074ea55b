//! What every service of the gateway shares.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use culprit_bus::{BusInspector, Publisher, QueueName, Subscriber};
use culprit_cache::{Clock, IdempotencyStore, ResultStore};
use culprit_mde::MdeClient;
use culprit_model::{Detection, DetectionKey};
use culprit_proto::v1 as pb;
use culprit_settings::GatewaySettings;
use prost::Message;
use tokio::sync::watch;
use tonic::Status;

use crate::auth::KeyRing;
use crate::status::{Refusal, correlation_not_found, failed_precondition, invalid, reason};
use crate::stores::{BoxFuture, GatewayStores};

/// A dependency whose reachability gates gRPC health (the same checks as `/readyz`).
pub use culprit_metrics::Probe;

/// The result store answers (a read of a key that never exists).
#[derive(Debug)]
pub struct StoreProbe(pub Arc<dyn ResultStore>);

impl Probe for StoreProbe {
    fn name(&self) -> &str {
        "store"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let key = DetectionKey("health:probe:0:0".to_owned());
            self.0.get(&key).await.map(drop).map_err(|e| e.to_string())
        })
    }
}

/// The bus answers: the depth of `queue` (one the process consumes) can be read.
#[derive(Debug)]
pub struct BusProbe {
    pub bus: Arc<dyn BusInspector>,
    pub queue: QueueName,
}

impl Probe for BusProbe {
    fn name(&self) -> &str {
        "bus"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.bus
                .queue_depth(self.queue.clone())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// A detection SubmitDetection handed on: its key, whether it was already known, warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub key: DetectionKey,
    pub duplicate: bool,
    pub warnings: Vec<String>,
}

/// Why a submission could not be handed on.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The bus or the dedup store failed: the client should retry (UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// The detection cannot be published (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
}

/// Where SubmitDetection hands each normalised detection. A deployment passes the ingest
/// service's publisher (publisher confirms, mandatory routing, dedup shared with the webhook
/// and syslog paths); without one the gateway publishes on `Handles::publisher` itself.
pub trait DetectionSink: Send + Sync + fmt::Debug {
    fn submit(&self, detection: Detection) -> BoxFuture<'_, Result<Submitted, SubmitError>>;
}

/// The shared state and the services the gateway talks to.
#[derive(Clone)]
pub struct Handles {
    /// Correlations by detection key; the bytes are an encoded `culprit.v1.Correlation`.
    pub results: Arc<dyn ResultStore>,
    /// SubmitDetection duplicates and the policy's once-per-(tenant, device, detection) rule.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// SubmitDetection publishes to `Topic::Detections` (when `submit` is `None`).
    pub publisher: Arc<dyn Publisher>,
    /// The ingest path SubmitDetection uses when set (see [`DetectionSink`]).
    pub submit: Option<Arc<dyn DetectionSink>>,
    /// Consumes `culprit.correlations` for the watch log and the policy; `None`: neither runs
    /// in this process (read-only gateway).
    pub subscriber: Option<Arc<dyn Subscriber>>,
    /// The watch log, audit trail, isolation counter and release schedule.
    pub stores: Arc<dyn GatewayStores>,
    /// One MDE client per Culprit tenant name.
    pub mde: BTreeMap<String, MdeClient>,
    /// Health is SERVING only while every probe passes.
    pub probes: Vec<Arc<dyn Probe>>,
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for Handles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handles")
            .field("results", &self.results)
            .field("stores", &self.stores)
            .field("tenants", &self.mde.keys().collect::<Vec<_>>())
            .field("probes", &self.probes)
            .finish_non_exhaustive()
    }
}

/// Everything [`crate::serve`] needs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub settings: GatewaySettings,
    pub handles: Handles,
}

/// Per-process state behind every service.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub keys: KeyRing,
    pub h: Handles,
    pub settings: GatewaySettings,
    /// Becomes true when the server begins to shut down: streams end.
    pub shutdown: watch::Receiver<bool>,
}

impl Ctx {
    pub fn mde(&self, tenant: &str) -> Result<&MdeClient, Status> {
        self.h.mde.get(tenant).ok_or_else(|| {
            failed_precondition(
                reason::TENANT_NOT_CONNECTED,
                "TENANT",
                tenant,
                format!("tenant `{tenant}` has no Microsoft Defender connection configured"),
            )
        })
    }

    /// The stored answer for `key`, decoded; NOT_FOUND when there is none.
    pub async fn correlation(&self, key: &str) -> Result<pb::Correlation, Status> {
        let bytes = self.stored(key).await?;
        decode_correlation(key, &bytes)
    }

    /// The stored answer's bytes (an encoded `culprit.v1.Correlation`); NOT_FOUND when none.
    pub async fn stored(&self, key: &str) -> Result<Vec<u8>, Status> {
        self.h
            .results
            .get(&DetectionKey(key.to_owned()))
            .await
            .map_err(|e| unavailable("result store", &e))?
            .ok_or_else(|| {
                correlation_not_found(format!("no answer (yet) for detection `{key}`"), key)
            })
    }
}

pub(crate) fn decode_correlation(key: &str, bytes: &[u8]) -> Result<pb::Correlation, Status> {
    pb::Correlation::decode(bytes).map_err(|e| {
        tracing::error!(detection_key = key, error = %e, "stored answer is not a culprit.v1.Correlation");
        Refusal::new(
            tonic::Code::Internal,
            reason::INTERNAL,
            format!("the stored answer for `{key}` is unreadable"),
        )
        .meta("detection_key", key)
        .build()
    })
}

pub(crate) use crate::status::unavailable;

/// The tenant inside `{source}:{tenant}:{id}:{revision}` (revisions may contain `:`).
pub(crate) fn tenant_of_key<'k>(key: &'k str, field: &str) -> Result<&'k str, Status> {
    let mut parts = key.splitn(4, ':');
    let (source, tenant, id, rev) = (parts.next(), parts.next(), parts.next(), parts.next());
    match (source, tenant, id, rev) {
        (Some(s), Some(t), Some(i), Some(_))
            if culprit_model::SourceKind::parse(s).is_some() && !t.is_empty() && !i.is_empty() =>
        {
            Ok(t)
        }
        _ => Err(invalid(
            field,
            format!("{key:?} is not a detection key `{{source}}:{{tenant}}:{{id}}:{{revision}}`"),
        )),
    }
}

/// Resolves once the server is stopping (the guard `wait_for` returns is not `Send`).
pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
