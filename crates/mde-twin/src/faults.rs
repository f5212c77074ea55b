//! Deterministic fault injection: the fate of API call number n is a pure function of the seed
//! and n, so two runs that make the same calls see the same faults.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::FaultConfig;

/// What happens to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Answer 503.
    ServerError,
    /// Cut the connection.
    Drop,
    /// Treat the token as expired.
    ExpireToken,
    /// Answer 429 (a throttle storm); the payload is Retry-After seconds.
    Throttle(u64),
}

#[derive(Debug)]
pub struct Faults {
    config: FaultConfig,
    calls: AtomicU64,
    hunting_calls: AtomicU64,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Faults {
            config,
            calls: AtomicU64::new(0),
            hunting_calls: AtomicU64::new(0),
        }
    }

    /// Draws the next call's fate and its added latency in milliseconds.
    pub fn next(&self, hunting: bool) -> (Fault, u64) {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let c = &self.config;
        let latency = c.latency_ms
            + match c.latency_jitter_ms {
                0 => 0,
                j => draw(c.seed, n, 0) % (j + 1),
            };
        if hunting {
            let h = self.hunting_calls.fetch_add(1, Ordering::SeqCst);
            if let Some(storm) = &c.throttle_storm
                && h >= storm.after_calls
                && h < storm.after_calls.saturating_add(storm.calls)
            {
                return (Fault::Throttle(storm.retry_after_secs), latency);
            }
        }
        let fault = if unit(c.seed, n, 1) < c.drop_rate {
            Fault::Drop
        } else if unit(c.seed, n, 2) < c.error_rate_5xx {
            Fault::ServerError
        } else if unit(c.seed, n, 3) < c.token_expiry_rate {
            Fault::ExpireToken
        } else {
            Fault::None
        };
        (fault, latency)
    }
}

/// splitmix64 over (seed, call, stream): independent draws per kind of fault.
fn draw(seed: u64, n: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(seed: u64, n: u64, stream: u64) -> f64 {
    (draw(seed, n, stream) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ThrottleStorm;

    fn fates(seed: u64) -> Vec<Fault> {
        let f = Faults::new(FaultConfig {
            seed,
            error_rate_5xx: 0.3,
            drop_rate: 0.1,
            ..FaultConfig::default()
        });
        (0..200).map(|_| f.next(true).0).collect()
    }

    #[test]
    fn same_seed_same_fates_and_rates_are_roughly_honoured() {
        let a = fates(7);
        assert_eq!(a, fates(7));
        assert_ne!(a, fates(8));
        let errors = a.iter().filter(|f| **f == Fault::ServerError).count();
        let drops = a.iter().filter(|f| **f == Fault::Drop).count();
        assert!((30..90).contains(&errors), "{errors}");
        assert!((5..40).contains(&drops), "{drops}");
    }

    #[test]
    fn a_storm_throttles_exactly_its_calls() {
        let f = Faults::new(FaultConfig {
            throttle_storm: Some(ThrottleStorm {
                after_calls: 2,
                calls: 3,
                retry_after_secs: 9,
            }),
            ..FaultConfig::default()
        });
        let got: Vec<Fault> = (0..6).map(|_| f.next(true).0).collect();
        let t = Fault::Throttle(9);
        assert_eq!(got, [Fault::None, Fault::None, t, t, t, Fault::None]);
    }
}
