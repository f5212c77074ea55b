//! The store traits other than the budget, and the values they carry.

use std::fmt::Debug;
use std::net::IpAddr;

use culprit_model::{DetectionKey, Duration, Status, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{BoxFuture, CacheError};

/// Telemetry answers keyed per (tenant, device, time bucket). The caller picks the TTL: long
/// for full answers, short for empty ones (telemetry lands minutes late).
pub trait TelemetryCache: Send + Sync + Debug {
    fn get<'a>(
        &'a self,
        tenant: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>>;

    fn put<'a>(
        &'a self,
        tenant: &'a str,
        key: &'a str,
        bytes: &'a [u8],
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>>;
}

/// The cache key for one device's telemetry in the bucket holding `at` (`bucket` long).
pub fn telemetry_bucket_key(device_id: &str, at: Timestamp, bucket: std::time::Duration) -> String {
    let len = Duration::from_std(bucket).0.max(1);
    let start = at.0.div_euclid(len) * len;
    format!("{device_id}@{start}+{len}")
}

/// What is known about a stored correlation without decoding it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultMeta {
    pub tenant: String,
    pub device_id: Option<String>,
    pub status: Status,
    pub confidence: f64,
    pub computed_at: Timestamp,
}

/// What a `put` found under the key before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    New,
    /// The same bytes were already stored (a redelivery).
    Unchanged,
    /// Different bytes were stored: the caller decides whether the answer moved.
    Changed {
        previous: Vec<u8>,
    },
}

/// Which results `list` returns; every `Some` must match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResultFilter {
    pub tenant: Option<String>,
    pub device_id: Option<String>,
    pub status: Option<Status>,
    pub min_confidence: Option<f64>,
    /// Only results computed at or after this instant.
    pub since: Option<Timestamp>,
}

impl ResultFilter {
    pub fn matches(&self, meta: &ResultMeta) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == meta.tenant)
            && self
                .device_id
                .as_ref()
                .is_none_or(|d| meta.device_id.as_ref() == Some(d))
            && self.status.is_none_or(|s| s == meta.status)
            && self.min_confidence.is_none_or(|c| meta.confidence >= c)
            && self.since.is_none_or(|s| meta.computed_at >= s)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredResult {
    pub key: DetectionKey,
    pub bytes: Vec<u8>,
    pub meta: ResultMeta,
}

/// One page of `list`, newest first. `next_page_token` is opaque; `None` means the end.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ResultPage {
    pub items: Vec<StoredResult>,
    pub next_page_token: Option<String>,
}

/// Correlation results by detection key (the last write wins).
pub trait ResultStore: Send + Sync + Debug {
    fn put<'a>(
        &'a self,
        key: &'a DetectionKey,
        bytes: &'a [u8],
        meta: &'a ResultMeta,
    ) -> BoxFuture<'a, Result<PutOutcome, CacheError>>;

    fn get<'a>(
        &'a self,
        key: &'a DetectionKey,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>>;

    /// Newest first; `limit` in 1..=1000.
    fn list<'a>(
        &'a self,
        filter: &'a ResultFilter,
        page_token: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ResultPage, CacheError>>;
}

/// "Have I seen this key in this scope?", atomically across replicas.
pub trait IdempotencyStore: Send + Sync + Debug {
    /// True exactly once per (scope, key) until `ttl` passes.
    fn first_seen<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, CacheError>>;

    /// [`first_seen`](Self::first_seen) for several keys of one scope, answered in order (a
    /// key repeated in `keys` is first only once). The Redis store sends them in one round
    /// trip. On an error no key of the call is left claimed (best effort: a claim whose
    /// release also fails stays until `ttl`).
    fn first_seen_many<'a>(
        &'a self,
        scope: &'a str,
        keys: &'a [String],
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<Vec<bool>, CacheError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                match self.first_seen(scope, key, ttl).await {
                    Ok(first) => out.push(first),
                    Err(e) => {
                        for (k, _) in keys.iter().zip(&out).filter(|(_, first)| **first) {
                            let _ = self.forget(scope, k).await;
                        }
                        return Err(e);
                    }
                }
            }
            Ok(out)
        })
    }

    /// Whether (scope, key) is claimed now, without claiming it.
    fn seen<'a>(&'a self, scope: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, CacheError>>;

    /// Gives a claim back, so the next `first_seen` is true again: for a caller whose work
    /// after the claim failed (nothing may be lost behind a claim).
    fn forget<'a>(&'a self, scope: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>>;
}

/// Which device held an IP address when. IPv4-mapped IPv6 addresses are the IPv4 address.
pub trait IpLedger: Send + Sync + Debug {
    /// `device_id` held `ip` from `from` to `until` (inclusive).
    fn record<'a>(
        &'a self,
        tenant: &'a str,
        ip: IpAddr,
        device_id: &'a str,
        from: Timestamp,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), CacheError>>;

    /// The devices that held `ip` at any instant of `[from, until]`, sorted, distinct. More than
    /// one means the address is ambiguous for that window.
    fn lookup_window<'a>(
        &'a self,
        tenant: &'a str,
        ip: IpAddr,
        from: Timestamp,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<String>, CacheError>>;

    /// The devices that held `ip` at `at`.
    fn lookup<'a>(
        &'a self,
        tenant: &'a str,
        ip: IpAddr,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<String>, CacheError>> {
        self.lookup_window(tenant, ip, at, at)
    }
}

/// How long the ledger keeps a lease after its end.
pub(crate) const LEDGER_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

pub(crate) fn check_interval(from: Timestamp, until: Timestamp) -> Result<(), CacheError> {
    if until < from {
        return Err(CacheError::invalid(
            "until",
            format!("{until} is before from {from}"),
        ));
    }
    Ok(())
}

pub(crate) fn check_limit(limit: usize) -> Result<(), CacheError> {
    if !(1..=1000).contains(&limit) {
        return Err(CacheError::invalid(
            "limit",
            format!("{limit} is not in 1..=1000"),
        ));
    }
    Ok(())
}

/// The index entry of a result: sorts newest first as a string, ties by key.
pub(crate) fn index_member(key: &DetectionKey, computed_at: Timestamp) -> String {
    let inverted = i128::from(i64::MAX) - i128::from(computed_at.0);
    format!("{inverted:020}|{}", key.as_str())
}

/// The detection key back out of an index entry.
pub(crate) fn key_of_member(member: &str) -> Result<DetectionKey, CacheError> {
    member
        .split_once('|')
        .map(|(_, k)| DetectionKey(k.to_owned()))
        .ok_or_else(|| CacheError::corrupt("result index entry", format!("{member:?} has no '|'")))
}
