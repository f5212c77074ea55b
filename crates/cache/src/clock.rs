//! Injected time, so expiry logic is testable without sleeping.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};

use culprit_model::{Duration, Timestamp};

/// A source of "now".
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    ticks: AtomicI64,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            ticks: AtomicI64::new(start.0),
        }
    }
    pub fn set(&self, at: Timestamp) {
        self.ticks.store(at.0, Ordering::SeqCst);
    }
    pub fn advance(&self, by: Duration) {
        self.ticks.fetch_add(by.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.ticks.load(Ordering::SeqCst))
    }
}
