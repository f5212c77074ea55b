//! The twin's notion of "now". Quota windows, token expiry, the 30-day lookback and machine
//! action lifecycles all read it, so tests can move time instead of waiting for it.

use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use culprit_model::{Duration, Timestamp};

/// A source of twin time.
pub trait TwinClock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
    /// Twin seconds per real second: how the twin turns its own waits (Retry-After, the query
    /// timeout) into real ones.
    fn scale(&self) -> f64;
}

/// Real time, shifted to `start` and sped up by `scale`.
#[derive(Debug)]
pub struct ScaledClock {
    start: Timestamp,
    scale: f64,
    origin: Instant,
}

impl ScaledClock {
    pub fn new(start: Timestamp, scale: f64) -> Self {
        // A zero, negative or NaN scale would stop or reverse time; fall back to real time.
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        ScaledClock {
            start,
            scale,
            origin: Instant::now(),
        }
    }
}

impl TwinClock for ScaledClock {
    fn now(&self) -> Timestamp {
        let real = self.origin.elapsed().as_secs_f64();
        let ticks = real * self.scale * culprit_model::timestamp::TICKS_PER_SECOND as f64;
        self.start + Duration(ticks as i64)
    }
    fn scale(&self) -> f64 {
        self.scale
    }
}

/// Time that moves only when told to: for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = *now + by;
    }
    pub fn set(&self, to: Timestamp) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl TwinClock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn scale(&self) -> f64 {
        1.0
    }
}

/// A twin-clock span as real time, for Retry-After and timeouts.
pub fn to_real(clock: &dyn TwinClock, twin_secs: f64) -> std::time::Duration {
    let real = (twin_secs / clock.scale()).max(0.0);
    std::time::Duration::try_from_secs_f64(real).unwrap_or(std::time::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_unix_seconds(100));
        assert_eq!(c.now(), Timestamp::from_unix_seconds(100));
        c.advance(Duration::from_seconds(61));
        assert_eq!(c.now(), Timestamp::from_unix_seconds(161));
    }

    #[test]
    fn scaled_clock_starts_at_start_and_rejects_bad_scales() {
        let c = ScaledClock::new(Timestamp::from_unix_seconds(1000), f64::NAN);
        assert_eq!(c.scale(), 1.0);
        let now = c.now();
        assert!(now >= Timestamp::from_unix_seconds(1000));
        assert!(now < Timestamp::from_unix_seconds(1060));
        let fast = ScaledClock::new(Timestamp::from_unix_seconds(0), 60.0);
        assert_eq!(to_real(&fast, 60.0), std::time::Duration::from_secs(1));
    }
}
