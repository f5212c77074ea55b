//! State the gateway owns beyond `culprit-cache`: the watch event log, the audit trail, the
//! hourly isolation counter and the automatic-release schedule. Each is a small trait with a
//! Redis implementation (shared by replicas) and an in-memory one (embedded mode, tests).

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use culprit_model::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::GatewayError;

mod memory;
mod redis;

pub use memory::MemoryGatewayStores;
pub use redis::RedisGatewayStores;

/// Boxed so the traits stay dyn-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One event of the watch log at its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Opaque, strictly increasing within the log.
    pub position: String,
    /// An encoded `culprit.v1.CorrelationEvent` (position unset).
    pub payload: Vec<u8>,
}

/// Why a read from a position failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("after_position {position:?} is not a position of this log: {reason}")]
    InvalidPosition { position: String, reason: String },
    /// Events after the position were trimmed: the client must re-sync (ListCorrelations).
    #[error(
        "after_position {position:?} is older than the oldest retained event ({oldest}): events after it were trimmed; re-sync with ListCorrelations and watch from now"
    )]
    Expired { position: String, oldest: String },
    #[error(transparent)]
    Backend(#[from] GatewayError),
}

/// The append-only log behind `WatchCorrelations`.
pub trait EventLog: Send + Sync + Debug {
    /// Appends `payload` unless `dedup_key` was appended before (redeliveries); the new
    /// position, or `None` for a duplicate. Atomic: a failed call appended nothing.
    fn append<'a>(
        &'a self,
        dedup_key: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<String>, GatewayError>>;

    /// At most `limit` events strictly after `after` (`None`: from the oldest retained).
    fn read_after<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<LoggedEvent>, ReadError>>;

    /// The newest position, if any event was ever retained.
    fn last_position(&self) -> BoxFuture<'_, Result<Option<String>, GatewayError>>;

    /// Changes whenever an event may have been appended (by this or another replica).
    fn subscribe(&self) -> watch::Receiver<u64>;
}

/// How a response attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Sent to MDE and accepted.
    Allowed,
    /// Refused by Culprit (auth, policy, preconditions).
    Denied,
    /// The policy in dry-run: what it would have done.
    DryRun,
    /// MDE or the network failed.
    Failed,
}

/// One response attempt: who, what, why, outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: Timestamp,
    /// The API key's id, `policy`, or `unauthenticated`.
    pub actor: String,
    /// `isolate` or `release`.
    pub action: String,
    pub tenant: String,
    pub device_id: Option<String>,
    pub detection_key: Option<String>,
    /// `Full` or `Selective` for isolation.
    pub isolation_type: Option<String>,
    /// Why: the caller's comment, or the policy's reason.
    pub comment: String,
    pub outcome: Outcome,
    /// The gRPC code returned (`OK`, `PERMISSION_DENIED`, ...).
    pub code: String,
    pub detail: String,
    /// The MDE machine action, when one was created or is pending.
    pub action_id: Option<String>,
}

/// The append-only audit trail.
pub trait AuditSink: Send + Sync + Debug {
    fn record<'a>(&'a self, record: &'a AuditRecord) -> BoxFuture<'a, Result<(), GatewayError>>;
    /// The newest `limit` records, newest first.
    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditRecord>, GatewayError>>;
}

/// Isolations per tenant in a sliding hour, shared by replicas.
pub trait IsolationCounter: Send + Sync + Debug {
    /// Takes one slot if fewer than `limit` were taken in the hour before `now`.
    fn try_take<'a>(
        &'a self,
        scope: &'a str,
        tenant: &'a str,
        now: Timestamp,
        limit: u32,
    ) -> BoxFuture<'a, Result<bool, GatewayError>>;
}

/// A release the policy owes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRelease {
    pub tenant: String,
    pub device_id: String,
    pub detection_key: String,
    pub due: Timestamp,
}

/// Automatic releases, claimed atomically so one replica performs each.
pub trait ReleaseSchedule: Send + Sync + Debug {
    fn schedule<'a>(
        &'a self,
        release: &'a ScheduledRelease,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;
    /// Removes and returns at most `limit` releases due at `now`.
    fn take_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ScheduledRelease>, GatewayError>>;
}

/// Everything above at once, for `Arc<dyn GatewayStores>`.
pub trait GatewayStores: EventLog + AuditSink + IsolationCounter + ReleaseSchedule {}

impl<T: EventLog + AuditSink + IsolationCounter + ReleaseSchedule> GatewayStores for T {}

pub(crate) const HOUR_MS: i64 = 3_600_000;

pub(crate) fn millis(t: Timestamp) -> i64 {
    t.0.div_euclid(10_000)
}
