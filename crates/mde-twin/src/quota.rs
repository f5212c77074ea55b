//! Per-tenant call quotas in sliding 60 s and 3,600 s windows on the twin clock, and the
//! bookkeeping tests read to prove a client never exceeded them.

use std::collections::VecDeque;

use culprit_model::{Duration, Timestamp};
use serde::Serialize;

const MINUTE: Duration = Duration::from_seconds(60);
const HOUR: Duration = Duration::from_seconds(3600);

/// What a throttled call is told.
#[derive(Clone, Debug, PartialEq)]
pub struct Throttle {
    /// The quota in the real service's words: `45 per 00:01:00`.
    pub quota: String,
    /// Twin seconds until a call would be admitted.
    pub retry_after_secs: f64,
}

/// Counts for one family of calls (hunting, or machines) of one tenant.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct WindowCounts {
    /// Every call that reached the quota check, admitted or not.
    pub total: u64,
    /// Calls answered 429 by the quota (not by an injected storm).
    pub throttled: u64,
    /// The most calls seen in any 60 s window, counting throttled ones.
    pub max_in_60s: u64,
    /// The most calls seen in any 3,600 s window, counting throttled ones.
    pub max_in_3600s: u64,
}

/// A sliding-window log of call times. Throttled calls are logged too: the service documents
/// that retrying before Retry-After keeps a client throttled longer.
#[derive(Debug, Default)]
pub struct SlidingQuota {
    calls: VecDeque<Timestamp>,
    pub counts: WindowCounts,
}

impl SlidingQuota {
    /// Records a call at `now` and says whether it is over `per_minute` / `per_hour`.
    pub fn check(&mut self, now: Timestamp, per_minute: u32, per_hour: u32) -> Option<Throttle> {
        while self.calls.front().is_some_and(|t| *t <= now - HOUR) {
            self.calls.pop_front();
        }
        let in_hour = self.calls.len() as u64;
        let in_minute = self.calls.iter().filter(|t| **t > now - MINUTE).count() as u64;
        self.calls.push_back(now);
        self.counts.total += 1;
        self.counts.max_in_60s = self.counts.max_in_60s.max(in_minute + 1);
        self.counts.max_in_3600s = self.counts.max_in_3600s.max(in_hour + 1);
        let verdict = if in_minute >= u64::from(per_minute) {
            Some(self.throttle(now, MINUTE, per_minute, "00:01:00"))
        } else if in_hour >= u64::from(per_hour) {
            Some(self.throttle(now, HOUR, per_hour, "01:00:00"))
        } else {
            None
        };
        if verdict.is_some() {
            self.counts.throttled += 1;
        }
        verdict
    }

    /// When enough calls leave the window for one more to fit.
    fn throttle(&self, now: Timestamp, window: Duration, limit: u32, label: &str) -> Throttle {
        let in_window: Vec<Timestamp> = self
            .calls
            .iter()
            .copied()
            .filter(|t| *t > now - window)
            .collect();
        // With n calls in the window (this one included) the next fits once n - limit + 1 of
        // the oldest have left it.
        let leave = in_window.len().saturating_sub(limit as usize);
        let wait = in_window
            .get(leave)
            .map(|t| (*t + window - now).as_seconds_f64())
            .unwrap_or(window.as_seconds_f64());
        Throttle {
            quota: format!("{limit} per {label}"),
            retry_after_secs: wait.max(0.0),
        }
    }
}

/// Query running time charged in a sliding hour.
#[derive(Debug, Default)]
pub struct CpuBudget {
    spent: VecDeque<(Timestamp, f64)>,
}

impl CpuBudget {
    /// Seconds spent in the hour before `now`.
    pub fn used(&mut self, now: Timestamp) -> f64 {
        while self.spent.front().is_some_and(|(t, _)| *t <= now - HOUR) {
            self.spent.pop_front();
        }
        self.spent.iter().map(|(_, s)| s).sum()
    }

    pub fn charge(&mut self, now: Timestamp, seconds: f64) {
        self.spent.push_back((now, seconds));
    }

    /// Twin seconds until the hour's spending falls under `budget`.
    pub fn retry_after(&self, now: Timestamp, budget: f64) -> f64 {
        let mut remaining: f64 = self.spent.iter().map(|(_, s)| s).sum();
        for (t, s) in &self.spent {
            remaining -= s;
            if remaining < budget {
                return (*t + HOUR - now).as_seconds_f64().max(0.0);
            }
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_700_000_000 + s)
    }

    #[test]
    fn the_46th_call_in_a_minute_is_throttled_until_the_window_moves() {
        let mut q = SlidingQuota::default();
        for i in 0..45 {
            assert_eq!(q.check(at(i), 45, 1500), None, "call {i}");
        }
        let t = q.check(at(45), 45, 1500).unwrap();
        assert_eq!(t.quota, "45 per 00:01:00");
        // Calls at 0 and 1 must leave (46 logged incl. this one): the one at 1 leaves at 61.
        assert_eq!(t.retry_after_secs, 16.0);
        assert_eq!(q.check(at(61), 45, 1500), None);
        assert_eq!(q.counts.throttled, 1);
        assert_eq!(q.counts.max_in_60s, 46);
    }

    #[test]
    fn the_hourly_quota_bites_when_the_minute_does_not() {
        let mut q = SlidingQuota::default();
        for i in 0..10 {
            assert!(q.check(at(i * 100), 45, 10).is_none());
        }
        let t = q.check(at(1000), 45, 10).unwrap();
        assert_eq!(t.quota, "10 per 01:00:00");
        assert_eq!(t.retry_after_secs, 2700.0);
        assert_eq!(q.counts.max_in_3600s, 11);
    }

    #[test]
    fn cpu_spent_expires_after_an_hour() {
        let mut c = CpuBudget::default();
        c.charge(at(0), 5.0);
        c.charge(at(10), 5.0);
        assert_eq!(c.used(at(20)), 10.0);
        assert_eq!(c.retry_after(at(20), 6.0), 3580.0);
        assert_eq!(c.used(at(3601)), 5.0);
    }
}
