//! Culprit's shared state: the per-tenant hunting budget, the telemetry cache, the result store,
//! idempotency keys and the IP→device ledger. Each store is a trait with a Redis implementation
//! ([`RedisStores`], shared by every replica) and an in-memory one ([`MemoryStores`], for the
//! embedded mode and tests). Services hold them as `Arc<dyn Trait>`.
//!
//! Time is always injected (a `now` argument or a [`Clock`]), so tests never sleep.

mod budget;
mod clock;
mod error;
mod fallback;
mod keys;
mod memory;
mod redis;
mod stores;

use std::future::Future;
use std::pin::Pin;

pub use budget::{BudgetLimits, HuntBudget, MemoryBudget, Remaining, Spend};
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
