//! Bus configuration, naming and reconnect backoff.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};

use crate::{BusError, QueueName, Topic};

/// Configuration of both bus implementations.
#[derive(Clone)]
pub struct BusConfig {
    /// AMQP URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`. Secret: it holds credentials.
    pub url: SecretString,
    /// Prefix of every exchange and queue name (`culprit`).
    pub prefix: String,
    /// Delay before attempt n+1 after attempt n failed (`retry_delays[n-1]`, the last one
    /// repeating). One retry queue per entry. Changing them on an existing broker needs a new
    /// prefix or deleting the retry queues (their TTL is fixed at declaration).
    pub retry_delays: Vec<Duration>,
    /// Attempts before [`crate::Delivery::retry`] dead-letters instead.
    pub max_attempts: u32,
    /// RabbitMQ `x-delivery-limit`: a message that came back unsettled more than this many
    /// times (e.g. it crashes its consumer) goes to the dead-letter queue with reason
    /// [`crate::DELIVERY_LIMIT_REASON`]. `None`: no limit.
    pub delivery_limit: Option<u32>,
    /// How long a publish keeps retrying across a broker outage before failing.
    pub publish_timeout: Duration,
    /// In-process bus: messages a queue holds (ready, unacked and delayed) before publishers wait.
    pub queue_capacity: usize,
    /// In-process bus: dead letters kept per queue (oldest dropped, with a warning, beyond).
    pub dead_letter_capacity: usize,
    /// Reconnect backoff.
    pub reconnect: ReconnectConfig,
}

/// Jittered exponential backoff for (re)connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectConfig {
    /// First delay.
    pub initial_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
    /// How long [`crate::RabbitBus::connect`] keeps trying before it fails.
    pub connect_timeout: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix: "culprit".to_owned(),
            retry_delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
            max_attempts: 5,
            delivery_limit: Some(20),
            publish_timeout: Duration::from_secs(30),
            queue_capacity: 10_000,
            dead_letter_capacity: 10_000,
            reconnect: ReconnectConfig::default(),
        }
    }
}

impl fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusConfig")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("retry_delays", &self.retry_delays)
            .field("max_attempts", &self.max_attempts)
            .field("delivery_limit", &self.delivery_limit)
            .field("publish_timeout", &self.publish_timeout)
            .field("queue_capacity", &self.queue_capacity)
            .field("dead_letter_capacity", &self.dead_letter_capacity)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

impl BusConfig {
    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }

    /// Checks every field; the error names the field and the reason.
    pub fn validate(&self) -> Result<(), BusError> {
        let fail = |field, reason: &str| {
            Err(BusError::Config {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.prefix.is_empty() || self.prefix.len() > 64 {
            return fail("prefix", "must have 1 to 64 characters");
        }
        if !self
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return fail(
                "prefix",
                "may only contain ASCII letters, digits, '_', '-' and '.'",
            );
        }
        if self.max_attempts == 0 {
            return fail("max_attempts", "must be at least 1");
        }
        if self.max_attempts > 1 && self.retry_delays.is_empty() {
            return fail(
                "retry_delays",
                "needs at least one delay when max_attempts > 1",
            );
        }
        let max_ttl = Duration::from_millis(u64::from(u32::MAX >> 1));
        if self
            .retry_delays
            .iter()
            .any(|d| d.is_zero() || *d > max_ttl)
        {
            return fail(
                "retry_delays",
                "each delay must be between 1 ms and 24 days",
            );
        }
        if self.delivery_limit == Some(0) {
            return fail(
                "delivery_limit",
                "must be at least 1 (or None for no limit)",
            );
        }
        if self.queue_capacity == 0 {
            return fail("queue_capacity", "must be at least 1");
        }
        if self.dead_letter_capacity == 0 {
            return fail("dead_letter_capacity", "must be at least 1");
        }
        if self.reconnect.initial_delay.is_zero()
            || self.reconnect.max_delay < self.reconnect.initial_delay
        {
            return fail(
                "reconnect",
                "initial_delay must be positive and at most max_delay",
            );
        }
        Ok(())
    }

    /// Delay before the attempt after `failed_attempt` (1-based), and the retry queue's index.
    pub(crate) fn retry_slot(&self, failed_attempt: u32) -> (usize, Duration) {
        let last = self.retry_delays.len().saturating_sub(1);
        let index = (failed_attempt.saturating_sub(1) as usize).min(last);
        let delay = self
            .retry_delays
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(1));
        (index + 1, delay)
    }

    pub(crate) fn names(&self) -> Names {
        Names {
            prefix: self.prefix.clone(),
        }
    }
}

/// Names of exchanges and queues under the prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn exchange(&self, topic: Topic) -> String {
        format!("{}.{}", self.prefix, topic.as_str())
    }

    pub(crate) fn dlx(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    pub(crate) fn queue(&self, queue: &QueueName) -> String {
        format!("{}.{}", self.prefix, queue.as_str())
    }

    pub(crate) fn dlq(&self, queue: &QueueName) -> String {
        format!("{}.{}.dlq", self.prefix, queue.as_str())
    }

    /// The queue where messages for `queue` wait `ms` milliseconds.
    pub(crate) fn delay(&self, queue: &QueueName, ms: u64) -> String {
        format!("{}.{}.delay.{ms}", self.prefix, queue.as_str())
    }

    /// Retry queue `n`, 1-based.
    pub(crate) fn retry(&self, queue: &QueueName, n: usize) -> String {
        format!("{}.{}.retry.{n}", self.prefix, queue.as_str())
    }
}

/// Replaces the password in `scheme://user:password@host/...` with `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split(':').next().unwrap_or_default();
    let masked = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        user.to_owned()
    };
    format!("{}{masked}{}", &url[..scheme_end], &rest[at..])
}

/// Jittered exponential backoff: attempt n waits a random time in [d/2, d] with
/// d = min(max, initial · 2ⁿ), so replicas reconnecting together spread out.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    config: ReconnectConfig,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(config: &ReconnectConfig) -> Self {
        Self {
            config: config.clone(),
            attempt: 0,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self
            .config
            .initial_delay
            .saturating_mul(factor)
            .min(self.config.max_delay);
        let ceiling_ms = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let ms = rand::rng().random_range(ceiling_ms.div_ceil(2)..=ceiling_ms);
        Duration::from_millis(ms)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_url("amqp://user@host/vh"), "amqp://user@host/vh");
        assert_eq!(
            redact_url("amqp://u:p@ss@host/x@y"),
            "amqp://u:***@host/x@y"
        );
        let cfg = BusConfig {
            url: "amqp://guest:hunter2@h/%2f".into(),
            ..BusConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = [
            (
                BusConfig {
                    prefix: "a b".into(),
                    ..BusConfig::default()
                },
                "prefix",
            ),
            (
                BusConfig {
                    max_attempts: 0,
                    ..BusConfig::default()
                },
                "max_attempts",
            ),
            (
                BusConfig {
                    retry_delays: vec![],
                    ..BusConfig::default()
                },
                "retry_delays",
            ),
            (
                BusConfig {
                    queue_capacity: 0,
                    ..BusConfig::default()
                },
                "queue_capacity",
            ),
        ];
        for (cfg, field) in bad {
            match cfg.validate() {
                Err(BusError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(BusConfig::default().validate().is_ok());
    }

    #[test]
    fn retry_slots_grow_then_repeat_the_last_delay() {
        let cfg = BusConfig::default();
        assert_eq!(cfg.retry_slot(1), (1, Duration::from_secs(1)));
        assert_eq!(cfg.retry_slot(2), (2, Duration::from_secs(5)));
        assert_eq!(cfg.retry_slot(4), (4, Duration::from_secs(120)));
        assert_eq!(cfg.retry_slot(9), (4, Duration::from_secs(120)));
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let config = ReconnectConfig {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            connect_timeout: Duration::from_secs(1),
        };
        let mut backoff = Backoff::new(&config);
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay()).collect();
        for (n, d) in delays.iter().enumerate() {
            let ceiling = (100u64 << n).min(1000);
            let ms = d.as_millis() as u64;
            assert!(ms >= ceiling / 2 && ms <= ceiling, "attempt {n}: {ms} ms");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
