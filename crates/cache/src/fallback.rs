//! Keeps the hunter working while the shared budget (Redis) is unreachable.
//!
//! While the primary answers, its answer stands and every grant is also logged locally. When it
//! fails, the replica spends from a local [`MemoryBudget`] holding a conservative share of the
//! limits (e.g. `limits / expected replicas`); that log already holds this replica's own recent
//! grants, so the switch itself cannot burst. The primary is probed again at most once per
//! `probe_interval` of caller time, so an outage costs one timeout per interval, not one per
//! call. On recovery the calls granted locally are replayed into the primary (`absorb`), so the
//! shared windows count them.
//!
//! Bound during an outage: in any window, calls <= (calls the primary granted in it) + the sum
//! of the replicas' local shares. With share = limits / replicas that can reach twice the limit
//! in the window straddling the outage's start; choose a smaller fraction where that matters.
//! The API answers an excess with 429, which the hunter honours, so nothing is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use culprit_model::{Duration, Timestamp};

use crate::budget::MemoryBudget;
use crate::{BoxFuture, BudgetLimits, CacheError, HuntBudget, Remaining, Spend};

#[derive(Debug, Default)]
struct Outage {
    /// When the primary failed last; `None` while it is healthy.
    since: Option<Timestamp>,
    last_probe: Option<Timestamp>,
    /// Local grants not yet logged in the primary, per tenant.
    unsynced: HashMap<String, Vec<Timestamp>>,
}

/// A [`HuntBudget`] that degrades to a local share when its primary fails.
#[derive(Debug)]
pub struct FallbackBudget {
    primary: Arc<dyn HuntBudget>,
    local: MemoryBudget,
    probe_interval: Duration,
    outage: Mutex<Outage>,
}

impl FallbackBudget {
    /// `fraction` of the primary's limits is this replica's local share during an outage.
    pub fn new(primary: Arc<dyn HuntBudget>, fraction: f64) -> Result<Self, CacheError> {
        let local = primary.limits().share(fraction)?;
        Self::with_local_limits(primary, local)
    }

    pub fn with_local_limits(
        primary: Arc<dyn HuntBudget>,
        local: BudgetLimits,
    ) -> Result<Self, CacheError> {
        Ok(FallbackBudget {
            primary,
            local: MemoryBudget::new(local)?,
            probe_interval: Duration::from_seconds(1),
            outage: Mutex::new(Outage::default()),
        })
    }

    /// How often (in caller time) a degraded budget asks the primary again. Default 1 s.
    pub fn with_probe_interval(mut self, every: std::time::Duration) -> Self {
        self.probe_interval = Duration::from_std(every);
        self
    }

    /// True while spending from the local share.
    pub fn is_degraded(&self) -> bool {
        self.lock().since.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outage> {
        self.outage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether to skip the primary this time (degraded and probed recently).
    fn skip_primary(&self, now: Timestamp) -> bool {
        let mut o = self.lock();
        if o.since.is_none() {
            return false;
        }
        if o.last_probe.is_some_and(|p| now - p < self.probe_interval) {
            return true;
        }
        o.last_probe = Some(now);
        false
    }

    fn enter_outage(&self, now: Timestamp, err: &CacheError) {
        let mut o = self.lock();
        if o.since.is_none() {
            // Logged once per outage, not once per call.
            tracing::warn!(error = %err, "shared hunting budget unreachable; spending a local share");
            o.since = Some(now);
            o.last_probe = Some(now);
        }
    }

    /// Back to the primary: replay local grants; keep those it would not take.
    async fn recover(&self) {
        let unsynced = {
            let mut o = self.lock();
            let Some(since) = o.since.take() else { return };
            tracing::info!(%since, "shared hunting budget reachable again");
            std::mem::take(&mut o.unsynced)
        };
        for (tenant, at) in unsynced {
            if let Err(e) = self.primary.absorb(&tenant, &at).await {
                tracing::warn!(error = %e, tenant, "could not replay local grants");
                self.lock().unsynced.entry(tenant).or_default().extend(at);
            }
        }
    }

    fn spend_locally(&self, tenant: &str, now: Timestamp) -> Result<Spend, CacheError> {
        let spend = self.local.spend_now(tenant, now)?;
        if spend == Spend::Granted {
            let mut o = self.lock();
            o.unsynced.entry(tenant.to_owned()).or_default().push(now);
        }
        Ok(spend)
    }

    async fn spend(&self, tenant: &str, now: Timestamp) -> Result<Spend, CacheError> {
        if self.skip_primary(now) {
            return self.spend_locally(tenant, now);
        }
        match self.primary.try_spend(tenant, now).await {
            Ok(spend) => {
                self.recover().await;
                if spend == Spend::Granted {
                    self.local.absorb_now(tenant, &[now])?;
                }
                Ok(spend)
            }
            Err(e) if e.is_backend() => {
                self.enter_outage(now, &e);
                self.spend_locally(tenant, now)
            }
            Err(e) => Err(e),
        }
    }
}

impl HuntBudget for FallbackBudget {
    fn try_spend<'a>(
        &'a self,
        tenant: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Spend, CacheError>> {
        Box::pin(self.spend(tenant, now))
    }

    fn remaining<'a>(
        &'a self,
        tenant: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Remaining, CacheError>> {
        Box::pin(async move {
            if !self.is_degraded() {
                match self.primary.remaining(tenant, now).await {
                    Err(e) if e.is_backend() => {}
                    other => return other,
                }
            }
            self.local.remaining(tenant, now).await
        })
    }

    fn absorb<'a>(
        &'a self,
        tenant: &'a str,
        at: &'a [Timestamp],
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            self.local.absorb_now(tenant, at)?;
            self.primary.absorb(tenant, at).await
        })
    }

    fn limits(&self) -> BudgetLimits {
        self.primary.limits()
    }

    fn hold<'a>(
        &'a self,
        tenant: &'a str,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            // Held locally in any case, so an outage does not forget the pause.
            self.local.hold_now(tenant, until)?;
            match self.primary.hold(tenant, until).await {
                Err(e) if e.is_backend() => {
                    tracing::warn!(error = %e, tenant, "could not share a hunting pause");
                    Ok(())
                }
                other => other,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    const T0: Timestamp = Timestamp::from_unix_seconds(1_700_000_000);

    /// A primary that can be switched off, counting the calls it receives.
    #[derive(Debug)]
    struct Flaky {
        inner: MemoryBudget,
        down: AtomicBool,
        calls: AtomicUsize,
    }

    impl Flaky {
        fn new() -> Arc<Self> {
            Arc::new(Flaky {
                inner: MemoryBudget::new(BudgetLimits::default()).unwrap(),
                down: AtomicBool::new(false),
                calls: AtomicUsize::new(0),
            })
        }
        fn check(&self) -> Result<(), CacheError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(CacheError::corrupt("test", "primary down"));
            }
            Ok(())
        }
    }

    impl HuntBudget for Flaky {
        fn try_spend<'a>(
            &'a self,
            tenant: &'a str,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Spend, CacheError>> {
            Box::pin(async move {
                self.check()?;
                self.inner.try_spend(tenant, now).await
            })
        }
        fn remaining<'a>(
            &'a self,
            tenant: &'a str,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Remaining, CacheError>> {
            Box::pin(async move {
                self.check()?;
                self.inner.remaining(tenant, now).await
            })
        }
        fn absorb<'a>(
            &'a self,
            tenant: &'a str,
            at: &'a [Timestamp],
        ) -> BoxFuture<'a, Result<(), CacheError>> {
            Box::pin(async move {
                self.check()?;
                self.inner.absorb(tenant, at).await
            })
        }
        fn limits(&self) -> BudgetLimits {
            self.inner.limits()
        }
        fn hold<'a>(
            &'a self,
            tenant: &'a str,
            until: Timestamp,
        ) -> BoxFuture<'a, Result<(), CacheError>> {
            Box::pin(async move {
                self.check()?;
                self.inner.hold(tenant, until).await
            })
        }
    }

    #[tokio::test]
    async fn an_outage_spends_the_local_share_and_recovery_replays_it() {
        let primary = Flaky::new();
        let b = FallbackBudget::new(primary.clone(), 1.0 / 3.0).unwrap();
        assert_eq!(b.try_spend("t", T0).await.unwrap(), Spend::Granted);
        primary.down.store(true, Ordering::SeqCst);

        // A third of 45 is 15, and the call already made through the primary counts.
        let mut granted = 1;
        let now = T0 + Duration::from_seconds(1);
        while b.try_spend("t", now).await.unwrap() == Spend::Granted {
            granted += 1;
        }
        assert_eq!(granted, 15);
        assert!(b.is_degraded());
        // The primary saw the first call and the one that failed, not one per later call.
        assert_eq!(primary.calls.load(Ordering::SeqCst), 2);

        primary.down.store(false, Ordering::SeqCst);
        let later = T0 + Duration::from_seconds(2);
        assert_eq!(b.try_spend("t", later).await.unwrap(), Spend::Granted);
        assert!(!b.is_degraded());
        // The primary now knows the 14 local grants plus its own two.
        let left = primary.inner.remaining("t", later).await.unwrap();
        assert_eq!(left.per_minute, 45 - 16);
    }

    #[tokio::test]
    async fn bad_input_is_not_an_outage() {
        let b = FallbackBudget::new(Flaky::new(), 0.5).unwrap();
        assert!(matches!(
            b.try_spend("", T0).await,
            Err(CacheError::InvalidInput {
                field: "tenant",
                ..
            })
        ));
        assert!(!b.is_degraded());
    }

    #[tokio::test]
    async fn remaining_falls_back_too() {
        let primary = Flaky::new();
        let b = FallbackBudget::new(primary.clone(), 0.5).unwrap();
        primary.down.store(true, Ordering::SeqCst);
        let left = b.remaining("t", T0).await.unwrap();
        assert_eq!(
            left,
            Remaining {
                per_minute: 22,
                per_hour: 750
            }
        );
    }
}
