//! The in-process stores, for the embedded mode and tests. Same semantics as Redis; expiry
//! follows the injected [`Clock`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use culprit_model::{DetectionKey, Duration, Timestamp};

use crate::budget::MemoryBudget;
use crate::error::{check_name, check_ttl};
use crate::stores::{LEDGER_RETENTION, check_interval, check_limit, index_member};
use crate::{
    BoxFuture, BudgetLimits, CacheError, Clock, HuntBudget, IdempotencyStore, IpLedger, PutOutcome,
    Remaining, ResultFilter, ResultMeta, ResultPage, ResultStore, Spend, StoredResult, SystemClock,
    TelemetryCache,
};

/// Purge expired cache and idempotency entries every this many writes.
const PURGE_EVERY: u64 = 1024;

#[derive(Debug, Default)]
struct Expiring {
    entries: HashMap<(String, String), (Vec<u8>, Timestamp)>,
    writes: u64,
}

impl Expiring {
    fn get(&self, k: &(String, String), now: Timestamp) -> Option<&Vec<u8>> {
        self.entries
            .get(k)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v)
    }

    fn put(&mut self, k: (String, String), v: Vec<u8>, expires: Timestamp, now: Timestamp) {
        self.writes += 1;
        if self.writes.is_multiple_of(PURGE_EVERY) {
            self.entries.retain(|_, (_, exp)| *exp > now);
        }
        self.entries.insert(k, (v, expires));
    }
}

#[derive(Debug, Default)]
struct Results {
    by_key: HashMap<DetectionKey, (Vec<u8>, ResultMeta)>,
    /// Index member (newest first) -> key.
    index: BTreeMap<String, DetectionKey>,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    from: Timestamp,
    until: Timestamp,
}

/// (tenant, canonical IP) -> (device, lease).
type Ledger = HashMap<(String, IpAddr), Vec<(String, Lease)>>;

/// Every store in process memory.
#[derive(Debug)]
pub struct MemoryStores {
    clock: Arc<dyn Clock>,
    budget: MemoryBudget,
    cache: Mutex<Expiring>,
    idempotency: Mutex<Expiring>,
    results: Mutex<Results>,
    ledger: Mutex<Ledger>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for MemoryStores {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStores {
    /// Wall clock, the real quota.
    pub fn new() -> Self {
        let budget = MemoryBudget::unvalidated(BudgetLimits::default());
        Self::build(Arc::new(SystemClock), budget)
    }

    /// An injected clock (tests) and custom budget limits.
    pub fn with_clock(clock: Arc<dyn Clock>, limits: BudgetLimits) -> Result<Self, CacheError> {
        Ok(Self::build(clock, MemoryBudget::new(limits)?))
    }

    fn build(clock: Arc<dyn Clock>, budget: MemoryBudget) -> Self {
        MemoryStores {
            clock,
            budget,
            cache: Mutex::default(),
            idempotency: Mutex::default(),
            results: Mutex::default(),
            ledger: Mutex::default(),
        }
    }

    fn put_result(
        &self,
        key: &DetectionKey,
        bytes: &[u8],
        meta: &ResultMeta,
    ) -> Result<PutOutcome, CacheError> {
        check_name("detection_key", key.as_str())?;
        check_name("meta.tenant", &meta.tenant)?;
        let mut r = lock(&self.results);
        let previous = r.by_key.insert(key.clone(), (bytes.to_vec(), meta.clone()));
        if let Some((_, old)) = &previous {
            r.index.remove(&index_member(key, old.computed_at));
        }
        r.index
            .insert(index_member(key, meta.computed_at), key.clone());
        Ok(match previous {
            None => PutOutcome::New,
            Some((old, _)) if old == bytes => PutOutcome::Unchanged,
            Some((old, _)) => PutOutcome::Changed { previous: old },
        })
    }

    fn list_results(
        &self,
        filter: &ResultFilter,
        token: Option<&str>,
        limit: usize,
    ) -> Result<ResultPage, CacheError> {
        check_limit(limit)?;
        let r = lock(&self.results);
        let start = token.map_or(Bound::Unbounded, |t| Bound::Excluded(t.to_owned()));
        let mut page = ResultPage::default();
        let mut last = None;
        for (member, key) in r.index.range((start, Bound::Unbounded)) {
            let Some((bytes, meta)) = r.by_key.get(key) else {
                continue;
            };
            if !filter.matches(meta) {
                continue;
            }
            if page.items.len() == limit {
                page.next_page_token = last;
                break;
            }
            last = Some(member.clone());
            page.items.push(StoredResult {
                key: key.clone(),
                bytes: bytes.clone(),
                meta: meta.clone(),
            });
        }
        Ok(page)
    }
}

impl HuntBudget for MemoryStores {
    fn try_spend<'a>(
        &'a self,
        tenant: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Spend, CacheError>> {
        self.budget.try_spend(tenant, now)
    }
    fn remaining<'a>(
        &'a self,
        tenant: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Remaining, CacheError>> {
        self.budget.remaining(tenant, now)
    }
    fn absorb<'a>(
        &'a self,
        tenant: &'a str,
        at: &'a [Timestamp],
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        self.budget.absorb(tenant, at)
    }
    fn limits(&self) -> BudgetLimits {
        self.budget.limits()
    }
    fn hold<'a>(
        &'a self,
        tenant: &'a str,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        self.budget.hold(tenant, until)
    }
}

impl TelemetryCache for MemoryStores {
    fn get<'a>(
        &'a self,
        tenant: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>> {
        Box::pin(async move {
            check_name("tenant", tenant)?;
            check_name("key", key)?;
            let k = (tenant.to_owned(), key.to_owned());
            Ok(lock(&self.cache).get(&k, self.clock.now()).cloned())
        })
    }

    fn put<'a>(
        &'a self,
        tenant: &'a str,
        key: &'a str,
        bytes: &'a [u8],
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            check_name("tenant", tenant)?;
            check_name("key", key)?;
            check_ttl(ttl)?;
            let now = self.clock.now();
            let k = (tenant.to_owned(), key.to_owned());
            lock(&self.cache).put(k, bytes.to_vec(), now + Duration::from_std(ttl), now);
            Ok(())
        })
    }
}

impl ResultStore for MemoryStores {
    fn put<'a>(
        &'a self,
        key: &'a DetectionKey,
        bytes: &'a [u8],
        meta: &'a ResultMeta,
    ) -> BoxFuture<'a, Result<PutOutcome, CacheError>> {
        Box::pin(async move { self.put_result(key, bytes, meta) })
    }

    fn get<'a>(
        &'a self,
        key: &'a DetectionKey,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>> {
        Box::pin(async move { Ok(lock(&self.results).by_key.get(key).map(|(b, _)| b.clone())) })
    }

    fn list<'a>(
        &'a self,
        filter: &'a ResultFilter,
        page_token: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ResultPage, CacheError>> {
        Box::pin(async move { self.list_results(filter, page_token, limit) })
    }
}

impl IdempotencyStore for MemoryStores {
    fn first_seen<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            check_name("scope", scope)?;
            check_name("key", key)?;
            check_ttl(ttl)?;
            let now = self.clock.now();
            let k = (scope.to_owned(), key.to_owned());
            let mut seen = lock(&self.idempotency);
            if seen.get(&k, now).is_some() {
                return Ok(false);
            }
            seen.put(k, Vec::new(), now + Duration::from_std(ttl), now);
            Ok(true)
        })
    }

    fn seen<'a>(&'a self, scope: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            check_name("scope", scope)?;
            check_name("key", key)?;
            let k = (scope.to_owned(), key.to_owned());
            Ok(lock(&self.idempotency).get(&k, self.clock.now()).is_some())
        })
    }

    fn forget<'a>(&'a self, scope: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            lock(&self.idempotency)
                .entries
                .remove(&(scope.to_owned(), key.to_owned()));
            Ok(())
        })
    }
}

impl IpLedger for MemoryStores {
    fn record<'a>(
        &'a self,
        tenant: &'a str,
        ip: IpAddr,
        device_id: &'a str,
        from: Timestamp,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            check_name("tenant", tenant)?;
            check_name("device_id", device_id)?;
            check_interval(from, until)?;
            let mut ledger = lock(&self.ledger);
            let leases = ledger
                .entry((tenant.to_owned(), ip.to_canonical()))
                .or_default();
            let horizon = until - Duration::from_std(LEDGER_RETENTION);
            leases.retain(|(_, l)| l.until >= horizon);
            leases.push((device_id.to_owned(), Lease { from, until }));
            Ok(())
        })
    }

    fn lookup_window<'a>(
        &'a self,
        tenant: &'a str,
        ip: IpAddr,
        from: Timestamp,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<String>, CacheError>> {
        Box::pin(async move {
            check_name("tenant", tenant)?;
            check_interval(from, until)?;
            let ledger = lock(&self.ledger);
            let mut devices: Vec<String> = ledger
                .get(&(tenant.to_owned(), ip.to_canonical()))
                .into_iter()
                .flatten()
                .filter(|(_, l)| l.from <= until && l.until >= from)
                .map(|(d, _)| d.clone())
                .collect();
            devices.sort();
            devices.dedup();
            Ok(devices)
        })
    }
}
