//! Culprit's shared state: the per-tenant hunting budget, the telemetry cache, the result store,
//! idempotency keys and the IP→device ledger. Each store is a trait with a Redis implementation
//! ([`RedisStores`], shared by every replica) and an in-memory one ([`MemoryStores`], for the
//! embedded mode and tests). Services hold them as `Arc<dyn Trait>`; [`Stores`] bundles them.
//!
//! Time is always injected (a `now` argument or a [`Clock`]), so tests never sleep.
//!
//! # The budget's guarantees
//!
//! - **Windows**: a sliding-window log per tenant; a call is granted only if each tier has
//!   fewer than its limit in `(t - window, t]`, and grants are logged in non-decreasing order,
//!   so every half-open window of either length holds at most its limit, bursts included.
//! - **Replicas**: on Redis the check-and-log is one Lua script (`src/redis/budget.lua`), so
//!   concurrent replicas cannot both take the last slot. Use [`BudgetClock::Server`] to stamp
//!   calls with Redis's clock when replica clocks may be skewed.
//! - **Redis away**: [`FallbackBudget`] spends a local share (see its docs for the bound) and
//!   replays those calls into Redis when it answers again.
//! - **Redis back without the data**: a generation marker (`{prefix}:budget:marker`, never
//!   expired) is written alongside the logs, and each process remembers the generation it saw.
//!   A process that finds the marker gone, or replaced without a recorded loss, starts a new
//!   generation stamped `lost_at`; every tenant's log from before it is then filled with a full
//!   hour of calls at `lost_at`, i.e. the current windows count as spent (up to an hour without
//!   hunting, the only safe assumption when the calls made are unknown). Not detectable: Redis
//!   and every replica restarting together, since then nobody remembers the old generation.

mod budget;
mod checkpoint;
mod clock;
mod error;
mod fallback;
mod keys;
mod memory;
mod redis;
mod stores;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use budget::{BudgetLimits, HuntBudget, MemoryBudget, Remaining, Spend};
pub use checkpoint::{CheckpointStore, MAX_CHECKPOINT_LEN, MemoryCheckpoints};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::CacheError;
pub use fallback::FallbackBudget;
pub use memory::MemoryStores;
pub use redis::{BudgetClock, RedisStores};
pub use stores::{
    IdempotencyStore, IpLedger, PutOutcome, ResultFilter, ResultMeta, ResultPage, ResultStore,
    StoredResult, TelemetryCache, telemetry_bucket_key,
};

/// The future every store method returns: boxed so the traits stay dyn-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Every store a service may need, as shared trait objects.
#[derive(Clone, Debug)]
pub struct Stores {
    pub budget: Arc<dyn HuntBudget>,
    pub cache: Arc<dyn TelemetryCache>,
    pub results: Arc<dyn ResultStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub ledger: Arc<dyn IpLedger>,
}

impl Stores {
    /// Embedded mode: everything in this process.
    pub fn memory(clock: Arc<dyn Clock>, limits: BudgetLimits) -> Result<Self, CacheError> {
        let m = Arc::new(MemoryStores::with_clock(clock, limits)?);
        Ok(Stores {
            budget: m.clone(),
            cache: m.clone(),
            results: m.clone(),
            idempotency: m.clone(),
            ledger: m,
        })
    }

    /// Distributed mode: everything on Redis, the budget behind a [`FallbackBudget`] that
    /// spends `local_fraction` of the limits while Redis is unreachable.
    pub fn redis(stores: RedisStores, local_fraction: f64) -> Result<Self, CacheError> {
        let r = Arc::new(stores);
        Ok(Stores {
            budget: Arc::new(FallbackBudget::new(r.clone(), local_fraction)?),
            cache: r.clone(),
            results: r.clone(),
            idempotency: r.clone(),
            ledger: r,
        })
    }
}
