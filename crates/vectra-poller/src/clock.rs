//! The poller's time: token expiry and every wait go through a [`PollClock`], so tests step
//! time instead of sleeping.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use culprit_cache::BoxFuture;

pub trait PollClock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()>;
}

/// Real time through tokio (so a paused tokio runtime also pauses the poller).
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioClock;

impl PollClock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

type AdvanceHook = Box<dyn Fn(Duration) + Send + Sync>;

/// A clock that moves only when slept on: each sleep returns at once, advancing the clock by
/// the requested time and recording it. An optional hook sees each advance (tests move a
/// server stand-in's clock in step).
pub struct SteppedClock {
    start: Instant,
    state: Mutex<Stepped>,
    on_advance: Option<AdvanceHook>,
}

#[derive(Debug, Default)]
struct Stepped {
    elapsed: Duration,
    sleeps: Vec<Duration>,
}

impl std::fmt::Debug for SteppedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SteppedClock")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Default for SteppedClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SteppedClock {
    pub fn new() -> Self {
        SteppedClock {
            start: Instant::now(),
            state: Mutex::new(Stepped::default()),
            on_advance: None,
        }
    }

    /// Calls `hook` with every advance.
    pub fn with_hook(hook: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        SteppedClock {
            on_advance: Some(Box::new(hook)),
            ..Self::new()
        }
    }

    /// Moves the clock without a sleep (a test's "time passes").
    pub fn advance(&self, d: Duration) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed += d;
        if let Some(hook) = &self.on_advance {
            hook(d);
        }
    }

    /// Every sleep asked for so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sleeps
            .clone()
    }

    pub fn elapsed(&self) -> Duration {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed
    }
}

impl PollClock for SteppedClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sleeps
            .push(d);
        self.advance(d);
        // Still yields, so a loop of zero-length sleeps cannot starve other tasks.
        Box::pin(tokio::task::yield_now())
    }
}
