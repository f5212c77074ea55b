//! The per-tenant hunting budget: two sliding windows (by default 45 calls in any 60 s and
//! 1,500 in any 3,600 s) shared by every replica.
//!
//! Both implementations keep a sliding-window *log*: the instants of the calls granted within
//! the longer window. A call at `t` is granted only if fewer than `limit` logged calls lie in
//! `(t - window, t]` for each tier. Because a grant is logged at `t >= every logged instant`
//! (a caller whose clock lags is stamped at the newest entry instead), every half-open window
//! `[s, s + window)` then holds at most `limit` calls: bursts included, no window boundary to
//! game.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::{Mutex, PoisonError};

use culprit_model::{Duration, Timestamp};

use crate::error::check_name;
use crate::{BoxFuture, CacheError};

/// The answer to "may I call the hunting API now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// The call is logged against the budget: make it.
    Granted,
    /// Not now: after this long a call would fit both windows (if nobody else spends first).
    Wait(std::time::Duration),
}

/// Calls still available right now in each window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remaining {
    pub per_minute: u32,
    pub per_hour: u32,
}

/// The two tiers. `minute` and `hour` are the window lengths: the defaults are the real
/// quota; tests and time-scaled runs shrink them. To absorb clock skew between replicas and
/// the API's own clock, lengthen the windows slightly (e.g. 61 s) rather than the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetLimits {
    pub per_minute: u32,
    pub per_hour: u32,
    pub minute: std::time::Duration,
    pub hour: std::time::Duration,
}

impl Default for BudgetLimits {
    fn default() -> Self {
        BudgetLimits {
            per_minute: 45,
            per_hour: 1500,
            minute: std::time::Duration::from_secs(60),
            hour: std::time::Duration::from_secs(3600),
        }
    }
}

impl BudgetLimits {
    /// The same limits over windows divided by `factor` (for time-scaled test runs).
    pub fn time_scaled(self, factor: u32) -> Self {
        let f = factor.max(1);
        BudgetLimits {
            minute: self.minute / f,
            hour: self.hour / f,
            ..self
        }
    }

    /// A conservative share: each limit multiplied by `fraction` and rounded down.
    pub fn share(self, fraction: f64) -> Result<Self, CacheError> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(CacheError::invalid(
                "fraction",
                format!("{fraction} is not in (0, 1]"),
            ));
        }
        let part = |n: u32| (f64::from(n) * fraction).floor() as u32;
        Ok(BudgetLimits {
            per_minute: part(self.per_minute),
            per_hour: part(self.per_hour),
            ..self
        })
    }

    /// Windows must be at least a millisecond (Redis expiry resolution) and ordered.
    pub fn validate(&self) -> Result<(), CacheError> {
        if self.minute < std::time::Duration::from_millis(1) {
            return Err(CacheError::invalid("minute", "window shorter than 1 ms"));
        }
        if self.hour < self.minute {
            return Err(CacheError::invalid(
                "hour",
                "window shorter than the minute window",
            ));
        }
        if self.hour > std::time::Duration::from_secs(86_400 * 366) {
            return Err(CacheError::invalid("hour", "window longer than a year"));
        }
        Ok(())
    }

    pub(crate) fn minute_ticks(&self) -> i64 {
        Duration::from_std(self.minute).0
    }
    pub(crate) fn hour_ticks(&self) -> i64 {
        Duration::from_std(self.hour).0
    }
}

/// A shared, two-tier hunting budget per tenant.
pub trait HuntBudget: Send + Sync + Debug {
    /// Logs one call for `tenant` at `now` if it fits both windows.
    fn try_spend<'a>(
        &'a self,
        tenant: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Spend, CacheError>>;

    /// What is left at `now`, without spending (for metrics).
    fn remaining<'a>(
        &'a self,
        tenant: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Remaining, CacheError>>;

    /// Logs calls that were made without asking this budget (replayed by [`FallbackBudget`]
    /// after an outage), so the shared windows see them.
    ///
    /// [`FallbackBudget`]: crate::FallbackBudget
    fn absorb<'a>(
        &'a self,
        tenant: &'a str,
        at: &'a [Timestamp],
    ) -> BoxFuture<'a, Result<(), CacheError>>;

    fn limits(&self) -> BudgetLimits;

    /// The hunting API asked for a pause (a 429 with `Retry-After`): no call for `tenant` is
    /// granted before `until`, by any replica sharing this budget. A later hold wins.
    fn hold<'a>(
        &'a self,
        tenant: &'a str,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), CacheError>>;
}

/// How long a hold still blocks at `now`, if it does.
pub(crate) fn held(until: Option<Timestamp>, now: Timestamp) -> Option<Spend> {
    let until = until?;
    (until > now).then(|| Spend::Wait((until - now).to_std()))
}

/// A sliding-window log, in ticks, sorted ascending.
#[derive(Debug, Default, Clone)]
pub(crate) struct SlidingLog {
    entries: VecDeque<i64>,
}

/// What one tier says: `Some(wait)` in ticks when it is full.
fn tier_wait(entries: &VecDeque<i64>, t: i64, now: i64, limit: u32, window: i64) -> Option<i64> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if limit == 0 {
        return Some(window);
    }
    // The limit-th newest call is the one that must leave the window first.
    let idx = entries.len().checked_sub(limit)?;
    let blocking = *entries.get(idx)?;
    (blocking > t - window).then(|| (blocking + window - now).max(1))
}

impl SlidingLog {
    /// The instant a grant would be logged at: never before the newest entry.
    fn effective(&self, now: i64) -> i64 {
        self.entries.back().map_or(now, |&b| b.max(now))
    }

    fn trim(&mut self, t: i64, hour: i64) {
        while self.entries.front().is_some_and(|&e| e <= t - hour) {
            self.entries.pop_front();
        }
    }

    pub(crate) fn try_spend(&mut self, now: Timestamp, limits: &BudgetLimits) -> Spend {
        let t = self.effective(now.0);
        self.trim(t, limits.hour_ticks());
        let minute = tier_wait(
            &self.entries,
            t,
            now.0,
            limits.per_minute,
            limits.minute_ticks(),
        );
        let hour = tier_wait(
            &self.entries,
            t,
            now.0,
            limits.per_hour,
            limits.hour_ticks(),
        );
        match minute.max(hour) {
            Some(wait) => Spend::Wait(Duration(wait).to_std()),
            None => {
                self.entries.push_back(t);
                Spend::Granted
            }
        }
    }

    pub(crate) fn remaining(&mut self, now: Timestamp, limits: &BudgetLimits) -> Remaining {
        let t = self.effective(now.0);
        self.trim(t, limits.hour_ticks());
        let in_minute = self
            .entries
            .iter()
            .filter(|&&e| e > t - limits.minute_ticks())
            .count();
        let left =
            |limit: u32, used: usize| limit.saturating_sub(u32::try_from(used).unwrap_or(u32::MAX));
        Remaining {
            per_minute: left(limits.per_minute, in_minute),
            per_hour: left(limits.per_hour, self.entries.len()),
        }
    }

    pub(crate) fn absorb(&mut self, at: &[Timestamp], limits: &BudgetLimits) {
        for t in at {
            let pos = self.entries.partition_point(|&e| e <= t.0);
            self.entries.insert(pos, t.0);
        }
        let newest = self.effective(i64::MIN);
        self.trim(newest, limits.hour_ticks());
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The in-process budget: one [`SlidingLog`] per tenant behind a mutex.
#[derive(Debug)]
pub struct MemoryBudget {
    limits: BudgetLimits,
    logs: Mutex<HashMap<String, SlidingLog>>,
    holds: Mutex<HashMap<String, Timestamp>>,
}

impl MemoryBudget {
    pub fn new(limits: BudgetLimits) -> Result<Self, CacheError> {
        limits.validate()?;
        Ok(Self::unvalidated(limits))
    }

    pub(crate) fn unvalidated(limits: BudgetLimits) -> Self {
        MemoryBudget {
            limits,
            logs: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn hold_now(&self, tenant: &str, until: Timestamp) -> Result<(), CacheError> {
        check_name("tenant", tenant)?;
        let mut holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        let h = holds.entry(tenant.to_owned()).or_insert(until);
        *h = (*h).max(until);
        Ok(())
    }

    fn hold_of(&self, tenant: &str, now: Timestamp) -> Option<Spend> {
        let mut holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        let until = holds.get(tenant).copied();
        let out = held(until, now);
        if out.is_none() && until.is_some() {
            holds.remove(tenant);
        }
        out
    }

    fn with_log<T>(&self, tenant: &str, f: impl FnOnce(&mut SlidingLog) -> T) -> T {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        let log = logs.entry(tenant.to_owned()).or_default();
        let out = f(log);
        // Idle tenants leave no trace.
        if log.is_empty() {
            logs.remove(tenant);
        }
        out
    }

    pub(crate) fn spend_now(&self, tenant: &str, now: Timestamp) -> Result<Spend, CacheError> {
        check_name("tenant", tenant)?;
        if let Some(wait) = self.hold_of(tenant, now) {
            return Ok(wait);
        }
        Ok(self.with_log(tenant, |log| log.try_spend(now, &self.limits)))
    }

    pub(crate) fn absorb_now(&self, tenant: &str, at: &[Timestamp]) -> Result<(), CacheError> {
        check_name("tenant", tenant)?;
        self.with_log(tenant, |log| log.absorb(at, &self.limits));
        Ok(())
    }
}

impl HuntBudget for MemoryBudget {
    fn try_spend<'a>(
        &'a self,
        tenant: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Spend, CacheError>> {
        Box::pin(async move { self.spend_now(tenant, now) })
    }

    fn remaining<'a>(
        &'a self,
        tenant: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Remaining, CacheError>> {
        Box::pin(async move {
            check_name("tenant", tenant)?;
            Ok(self.with_log(tenant, |log| log.remaining(now, &self.limits)))
        })
    }

    fn absorb<'a>(
        &'a self,
        tenant: &'a str,
        at: &'a [Timestamp],
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move { self.absorb_now(tenant, at) })
    }

    fn limits(&self) -> BudgetLimits {
        self.limits
    }

    fn hold<'a>(
        &'a self,
        tenant: &'a str,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move { self.hold_now(tenant, until) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: Timestamp = Timestamp::from_unix_seconds(1_700_000_000);

    fn wait_ticks(s: Spend) -> Option<i64> {
        match s {
            Spend::Granted => None,
            Spend::Wait(d) => Some(Duration::from_std(d).0),
        }
    }

    /// Any `limit + 1` consecutive grants must span at least the window, i.e. every
    /// half-open window holds at most `limit` grants.
    fn max_in_any_window(grants: &[i64], window: i64) -> usize {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..grants.len() {
            while grants[hi] - grants[lo] >= window {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    fn in_window(grants: &[i64], now: i64, window: i64) -> usize {
        grants.iter().filter(|&&g| g > now - window).count()
    }

    #[test]
    fn grants_45_then_waits_exactly_until_the_first_leaves_the_minute() {
        let limits = BudgetLimits::default();
        let mut log = SlidingLog::default();
        for i in 0..45 {
            let at = T0 + Duration::from_millis(100 * i);
            assert_eq!(log.try_spend(at, &limits), Spend::Granted, "call {i}");
        }
        let now = T0 + Duration::from_millis(4_500);
        let wait = log.try_spend(now, &limits);
        // The first call (at T0) leaves the window at T0 + 60 s.
        assert_eq!(wait, Spend::Wait(std::time::Duration::from_millis(55_500)));
        let due = T0 + Duration::from_seconds(60);
        assert!(matches!(
            log.try_spend(due - Duration(1), &limits),
            Spend::Wait(_)
        ));
        assert_eq!(log.try_spend(due, &limits), Spend::Granted);
        // The second call left at T0 + 60.1 s: one more slot then, not before.
        assert_eq!(
            log.try_spend(due, &limits),
            Spend::Wait(std::time::Duration::from_millis(100))
        );
    }

    #[test]
    fn the_hour_tier_caps_a_steady_caller_at_1500() {
        let limits = BudgetLimits::default();
        let mut log = SlidingLog::default();
        let mut now = T0;
        let mut granted = Vec::new();
        // Ask as soon as allowed for two hours.
        while now < T0 + Duration::from_hours(2) {
            match log.try_spend(now, &limits) {
                Spend::Granted => granted.push(now.0),
                Spend::Wait(d) => now = now + Duration::from_std(d),
            }
        }
        let hour = Duration::from_hours(1).0;
        let first_hour = granted.iter().filter(|&&g| g < T0.0 + hour).count();
        assert_eq!(first_hour, 1500);
        assert_eq!(max_in_any_window(&granted, hour), 1500);
        assert_eq!(max_in_any_window(&granted, Duration::from_minutes(1).0), 45);
        // Once the hour is spent (after 33⅓ busy minutes) nothing until the first call ages out.
        let last_of_first_hour = granted[1499];
        assert_eq!(granted[1500], granted[0] + hour);
        assert!(last_of_first_hour < T0.0 + Duration::from_minutes(34).0);
    }

    #[test]
    fn a_lagging_clock_is_stamped_at_the_newest_call() {
        let limits = BudgetLimits {
            per_minute: 2,
            ..BudgetLimits::default()
        };
        let mut log = SlidingLog::default();
        assert_eq!(
            log.try_spend(T0 + Duration::from_seconds(30), &limits),
            Spend::Granted
        );
        // A replica whose clock is 40 s behind must not see the window as emptier.
        assert_eq!(
            log.try_spend(T0 - Duration::from_seconds(10), &limits),
            Spend::Granted
        );
        let late = log.try_spend(T0 + Duration::from_seconds(31), &limits);
        assert_eq!(late, Spend::Wait(std::time::Duration::from_secs(59)));
    }

    #[test]
    fn limits_are_validated_and_shared() {
        assert!(BudgetLimits::default().validate().is_ok());
        let bad = BudgetLimits {
            hour: std::time::Duration::from_secs(1),
            ..BudgetLimits::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(CacheError::InvalidInput { field: "hour", .. })
        ));
        let half = BudgetLimits::default().share(0.5).unwrap();
        assert_eq!((half.per_minute, half.per_hour), (22, 750));
        assert!(BudgetLimits::default().share(0.0).is_err());
        assert!(BudgetLimits::default().share(1.5).is_err());
        let fast = BudgetLimits::default().time_scaled(600);
        assert_eq!(fast.minute, std::time::Duration::from_millis(100));
        assert_eq!(fast.hour, std::time::Duration::from_secs(6));
    }

    #[test]
    fn a_zero_share_never_grants() {
        let limits = BudgetLimits::default().share(0.01).unwrap();
        assert_eq!(limits.per_minute, 0);
        let mut log = SlidingLog::default();
        assert!(matches!(log.try_spend(T0, &limits), Spend::Wait(_)));
    }

    #[tokio::test]
    async fn memory_budget_keeps_tenants_apart_and_reports_remaining() {
        let b = MemoryBudget::new(BudgetLimits::default()).unwrap();
        for _ in 0..45 {
            assert_eq!(b.try_spend("a", T0).await.unwrap(), Spend::Granted);
        }
        assert!(matches!(
            b.try_spend("a", T0).await.unwrap(),
            Spend::Wait(_)
        ));
        assert_eq!(b.try_spend("b", T0).await.unwrap(), Spend::Granted);
        let left = b.remaining("a", T0).await.unwrap();
        assert_eq!(
            left,
            Remaining {
                per_minute: 0,
                per_hour: 1455
            }
        );
        let later = b
            .remaining("a", T0 + Duration::from_seconds(60))
            .await
            .unwrap();
        assert_eq!(
            later,
            Remaining {
                per_minute: 45,
                per_hour: 1455
            }
        );
        b.absorb("b", &[T0, T0]).await.unwrap();
        assert_eq!(b.remaining("b", T0).await.unwrap().per_minute, 42);
        assert!(matches!(
            b.try_spend("", T0).await,
            Err(CacheError::InvalidInput {
                field: "tenant",
                ..
            })
        ));
    }

    /// Gaps between attempts: bursts (0), sub-second, seconds, idle half-minutes; ~35
    /// attempts a minute on average, so both tiers fill up in every case.
    fn gap() -> impl Strategy<Value = i64> {
        prop_oneof![
            5 => Just(0i64),
            5 => 0i64..10_000_000,
            2 => 0i64..50_000_000,
            1 => 0i64..300_000_000,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Over a long random schedule: never more than the limit in ANY window of either
        /// tier; every Wait is due to a full tier and is exactly as long as needed.
        #[test]
        fn never_exceeds_either_window_and_waits_are_tight(
            gaps in proptest::collection::vec(gap(), 3000..6000)
        ) {
            let limits = BudgetLimits::default();
            let (minute, hour) = (limits.minute_ticks(), limits.hour_ticks());
            let mut log = SlidingLog::default();
            let mut granted: Vec<i64> = Vec::new();
            let mut now = T0.0;
            let mut hour_full = 0;
            for g in gaps {
                now += g;
                let before = log.clone();
                match wait_ticks(log.try_spend(Timestamp(now), &limits)) {
                    None => granted.push(now),
                    Some(w) => {
                        let full = in_window(&granted, now, minute) >= 45
                            || in_window(&granted, now, hour) >= 1500;
                        prop_assert!(full, "waited with room at {}", now);
                        hour_full += usize::from(in_window(&granted, now, hour) >= 1500);
                        let mut early = before.clone();
                        let too_early = early.try_spend(Timestamp(now + w - 1), &limits);
                        prop_assert!(matches!(too_early, Spend::Wait(_)));
                        let mut due = before;
                        prop_assert_eq!(due.try_spend(Timestamp(now + w), &limits), Spend::Granted);
                    }
                }
            }
            prop_assert!(max_in_any_window(&granted, minute) <= 45);
            prop_assert!(max_in_any_window(&granted, hour) <= 1500);
            // The schedule really pressed on the hourly cap, not only the minute one.
            prop_assert!(hour_full > 0);
        }
    }
}
