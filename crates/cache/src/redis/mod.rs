//! Every store on one Redis, shared by all replicas. Keys live under a configurable prefix
//! (tests use random ones). The connection is a [`ConnectionManager`]: after Redis restarts the
//! next command reconnects; scripts are re-loaded on `NOSCRIPT`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration as StdDuration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, RedisResult, Script, cmd};
use culprit_model::{Duration, Timestamp};

use crate::error::{check_name, check_ttl};
use crate::keys::enc;
use crate::{
    BoxFuture, BudgetLimits, CacheError, HuntBudget, IdempotencyStore, Remaining, Spend,
    TelemetryCache,
};

mod checkpoint;
mod ledger;
mod results;

/// Whose clock stamps the budget log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BudgetClock {
    /// The `now` passed to `try_spend` (deterministic tests, one clock for all callers).
    #[default]
    Caller,
    /// Redis's `TIME`: one clock for every replica, so their skew cannot matter.
    Server,
}

/// All stores on Redis.
pub struct RedisStores {
    conn: ConnectionManager,
    url: String,
    prefix: String,
    limits: BudgetLimits,
    clock: BudgetClock,
    /// The budget generation this process last saw (lost-data detection, see `budget.lua`).
    generation: Mutex<Option<String>>,
    replica: u64,
    counter: AtomicU64,
    budget_script: Script,
    put_script: Script,
}

impl std::fmt::Debug for RedisStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStores")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("limits", &self.limits)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The URL without user or password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Retrying once is safe only where repeating the command cannot change the answer's meaning.
fn is_reconnect(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

fn manager_config() -> ConnectionManagerConfig {
    // Short timeouts: a hunter waiting on a dead Redis should fall back within a second.
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(StdDuration::from_secs(1)))
        .set_response_timeout(Some(StdDuration::from_secs(2)))
        .set_number_of_retries(2)
        .set_min_delay(StdDuration::from_millis(50))
        .set_max_delay(StdDuration::from_millis(500))
}

fn micros(t: Timestamp) -> i64 {
    t.0.div_euclid(10)
}

impl RedisStores {
    /// Connects now; fails (naming the URL, without credentials) if Redis is unreachable.
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, CacheError> {
        let stores = Self::connect_lazy(url, key_prefix)?;
        stores.ping().await?;
        Ok(stores)
    }

    /// Connects on first use: a service can start while Redis is down.
    pub fn connect_lazy(url: &str, key_prefix: &str) -> Result<Self, CacheError> {
        check_name("key_prefix", key_prefix)?;
        let shown = redact(url);
        let client = Client::open(url).map_err(|e| {
            CacheError::invalid(
                "redis url",
                format!("{shown} is not a Redis URL ({:?})", e.kind()),
            )
        })?;
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config()).map_err(
            |source| CacheError::Redis {
                url: shown.clone(),
                op: "connect",
                source,
            },
        )?;
        Ok(RedisStores {
            conn,
            url: shown,
            prefix: key_prefix.to_owned(),
            limits: BudgetLimits::default(),
            clock: BudgetClock::default(),
            generation: Mutex::new(None),
            replica: rand::random(),
            counter: AtomicU64::new(0),
            budget_script: Script::new(include_str!("budget.lua")),
            put_script: Script::new(include_str!("put_result.lua")),
        })
    }

    pub fn with_limits(mut self, limits: BudgetLimits) -> Result<Self, CacheError> {
        limits.validate()?;
        self.limits = limits;
        Ok(self)
    }

    pub fn with_budget_clock(mut self, clock: BudgetClock) -> Self {
        self.clock = clock;
        self
    }

    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        self.run("ping", true, |mut c| async move {
            cmd("PING").query_async::<String>(&mut c).await
        })
        .await
        .map(drop)
    }

    /// Deletes every key under this prefix (tests, decommissioning). Returns how many.
    pub async fn delete_all(&self) -> Result<u64, CacheError> {
        let pattern = format!("{}:*", glob_escape(&self.prefix));
        let mut cursor = 0u64;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run("scan", true, |mut c| {
                    let p = pattern.clone();
                    async move {
                        cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(p)
                            .arg("COUNT")
                            .arg(500)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            if !keys.is_empty() {
                deleted += self
                    .run("del", true, |mut c| {
                        let k = keys.clone();
                        async move { cmd("DEL").arg(k).query_async::<u64>(&mut c).await }
                    })
                    .await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    fn nonce(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{n}", self.replica)
    }

    /// Runs one operation; on a dropped connection, once more if `retry` (the manager has
    /// started reconnecting by then).
    async fn run<T, F, Fut>(&self, op: &'static str, retry: bool, f: F) -> Result<T, CacheError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let first = f(self.conn.clone()).await;
        let result = match first {
            Err(e) if retry && is_reconnect(&e) => f(self.conn.clone()).await,
            other => other,
        };
        result.map_err(|source| CacheError::Redis {
            url: self.url.clone(),
            op,
            source,
        })
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What `budget.lua` answers.
struct BudgetReply {
    granted: bool,
    wait_us: i64,
    remaining: Remaining,
}

impl RedisStores {
    async fn budget_call(
        &self,
        tenant: &str,
        now: Timestamp,
        mode: &str,
        absorb: &[Timestamp],
    ) -> Result<BudgetReply, CacheError> {
        check_name("tenant", tenant)?;
        let t = enc(tenant);
        let keys = [
            self.key(&["budget", &t, "log"]),
            self.key(&["budget", &t, "gen"]),
            self.key(&["budget", "marker"]),
        ];
        let now_arg = match self.clock {
            BudgetClock::Caller => micros(now).to_string(),
            BudgetClock::Server => String::new(),
        };
        let known = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        let fresh = format!("{:016x}", rand::random::<u64>());
        let nonce = self.nonce();
        let l = self.limits;
        let args: Vec<String> = [
            now_arg,
            l.per_minute.to_string(),
            l.per_hour.to_string(),
            (Duration::from_std(l.minute).0 / 10).to_string(),
            (Duration::from_std(l.hour).0 / 10).to_string(),
            mode.to_owned(),
            known,
            fresh,
            nonce,
        ]
        .into_iter()
        .chain(absorb.iter().map(|a| micros(*a).to_string()))
        .collect();
        let (granted, wait_us, rem_min, rem_hour, generation): (i64, i64, i64, i64, String) = self
            .run("hunt budget", true, |mut c| {
                let mut inv = self.budget_script.prepare_invoke();
                inv.key(&keys[..]).arg(&args[..]);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(generation);
        let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        Ok(BudgetReply {
            granted: granted == 1,
            wait_us,
            remaining: Remaining {
                per_minute: clamp(rem_min),
                per_hour: clamp(rem_hour),
            },
        })
    }
}

impl HuntBudget for RedisStores {
    fn try_spend<'a>(
        &'a self,
        tenant: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Spend, CacheError>> {
        Box::pin(async move {
            if let Some(wait) = crate::budget::held(self.hold_until(tenant).await?, now) {
                return Ok(wait);
            }
            let r = self.budget_call(tenant, now, "spend", &[]).await?;
            Ok(if r.granted {
                Spend::Granted
            } else {
                Spend::Wait(StdDuration::from_micros(r.wait_us.max(1).unsigned_abs()))
            })
        })
    }

    fn remaining<'a>(
        &'a self,
        tenant: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Remaining, CacheError>> {
        Box::pin(async move { Ok(self.budget_call(tenant, now, "peek", &[]).await?.remaining) })
    }

    fn absorb<'a>(
        &'a self,
        tenant: &'a str,
        at: &'a [Timestamp],
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            if at.is_empty() {
                return Ok(());
            }
            // "Now" for lost-data bookkeeping: the latest replayed call, in the caller's clock.
            let latest = at.iter().copied().max().unwrap_or_default();
            self.budget_call(tenant, latest, "absorb", at)
                .await
                .map(drop)
        })
    }

    fn limits(&self) -> BudgetLimits {
        self.limits
    }

    fn hold<'a>(
        &'a self,
        tenant: &'a str,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            check_name("tenant", tenant)?;
            let k = self.key(&["budget", &enc(tenant), "hold"]);
            // The value is the end in the callers' clock; the TTL (a day at most) only keeps
            // stale holds from piling up.
            let until_us = micros(until);
            self.run("hunt budget hold", true, |mut c| {
                let k = k.clone();
                async move {
                    ::redis::Script::new(HOLD_SCRIPT)
                        .key(k)
                        .arg(until_us)
                        .arg(HOLD_TTL_MS)
                        .invoke_async::<i64>(&mut c)
                        .await
                }
            })
            .await
            .map(drop)
        })
    }
}

/// Keeps the later of the stored and the new hold.
const HOLD_SCRIPT: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";
const HOLD_TTL_MS: u64 = 86_400_000;

impl RedisStores {
    /// The tenant's hold (see [`HuntBudget::hold`]), if one is stored.
    async fn hold_until(&self, tenant: &str) -> Result<Option<Timestamp>, CacheError> {
        check_name("tenant", tenant)?;
        let k = self.key(&["budget", &enc(tenant), "hold"]);
        let us: Option<i64> = self
            .run("hunt budget hold", true, |mut c| {
                let k = k.clone();
                async move { cmd("GET").arg(k).query_async(&mut c).await }
            })
            .await?;
        Ok(us.map(|us| Timestamp(us.saturating_mul(10))))
    }
}

impl TelemetryCache for RedisStores {
    fn get<'a>(
        &'a self,
        tenant: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>> {
        Box::pin(async move {
            check_name("tenant", tenant)?;
            check_name("key", key)?;
            let k = self.key(&["tcache", &enc(tenant), &enc(key)]);
            self.run("cache get", true, |mut c| {
                let k = k.clone();
                async move { cmd("GET").arg(k).query_async(&mut c).await }
            })
            .await
        })
    }

    fn put<'a>(
        &'a self,
        tenant: &'a str,
        key: &'a str,
        bytes: &'a [u8],
        ttl: StdDuration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            check_name("tenant", tenant)?;
            check_name("key", key)?;
            let ms = check_ttl(ttl)?;
            let k = self.key(&["tcache", &enc(tenant), &enc(key)]);
            self.run("cache put", true, |mut c| {
                let k = k.clone();
                async move {
                    cmd("SET")
                        .arg(k)
                        .arg(bytes)
                        .arg("PX")
                        .arg(ms)
                        .exec_async(&mut c)
                        .await
                }
            })
            .await
        })
    }
}

impl IdempotencyStore for RedisStores {
    fn first_seen<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        ttl: StdDuration,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            check_name("scope", scope)?;
            check_name("key", key)?;
            let ms = check_ttl(ttl)?;
            let k = self.key(&["idem", &enc(scope), &enc(key)]);
            // No retry: a lost reply after the SET would make the retry answer "seen" and
            // drop the only delivery.
            let set: Option<String> = self
                .run("idempotency", false, |mut c| {
                    let k = k.clone();
                    async move {
                        cmd("SET")
                            .arg(k)
                            .arg(1)
                            .arg("NX")
                            .arg("PX")
                            .arg(ms)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            Ok(set.is_some())
        })
    }

    fn first_seen_many<'a>(
        &'a self,
        scope: &'a str,
        keys: &'a [String],
        ttl: StdDuration,
    ) -> BoxFuture<'a, Result<Vec<bool>, CacheError>> {
        Box::pin(async move {
            check_name("scope", scope)?;
            for key in keys {
                check_name("key", key)?;
            }
            let ms = check_ttl(ttl)?;
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let ks: Vec<String> = keys
                .iter()
                .map(|key| self.key(&["idem", &enc(scope), &enc(key)]))
                .collect();
            // One pipeline, not a transaction: each SET NX stands alone, as `first_seen` does.
            // No retry, for the same reason as there.
            let sets: Result<Vec<Option<String>>, CacheError> = self
                .run("idempotency", false, |mut c| {
                    let mut p = ::redis::pipe();
                    for k in &ks {
                        p.cmd("SET").arg(k).arg(1).arg("NX").arg("PX").arg(ms);
                    }
                    async move { p.query_async(&mut c).await }
                })
                .await;
            match sets {
                Ok(sets) => Ok(sets.into_iter().map(|s| s.is_some()).collect()),
                Err(e) => {
                    // Which SETs landed is unknown: release every key, so the sender's retry
                    // publishes (a duplicate is absorbed downstream; a lost detection is not).
                    let released = self
                        .run("idempotency", true, |mut c| {
                            let ks = ks.clone();
                            async move { cmd("DEL").arg(ks).query_async::<i64>(&mut c).await }
                        })
                        .await;
                    if let Err(f) = released {
                        tracing::error!(error = %f, keys = ks.len(), "could not release ingest claims after a failed batch claim");
                    }
                    Err(e)
                }
            }
        })
    }

    fn seen<'a>(&'a self, scope: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            check_name("scope", scope)?;
            check_name("key", key)?;
            let k = self.key(&["idem", &enc(scope), &enc(key)]);
            let n: i64 = self
                .run("idempotency", true, |mut c| {
                    let k = k.clone();
                    async move { cmd("EXISTS").arg(k).query_async(&mut c).await }
                })
                .await?;
            Ok(n > 0)
        })
    }

    fn forget<'a>(&'a self, scope: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let k = self.key(&["idem", &enc(scope), &enc(key)]);
            // Deleting twice is harmless, so this one may be retried.
            let _: i64 = self
                .run("idempotency", true, |mut c| {
                    let k = k.clone();
                    async move { cmd("DEL").arg(k).query_async(&mut c).await }
                })
                .await?;
            Ok(())
        })
    }
}
