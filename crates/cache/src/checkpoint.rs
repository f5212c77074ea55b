//! Where a poller keeps its place in a source's stream (a Vectra event checkpoint, a newest
//! timestamp): saved only after the batch before it was handed off, so a restart resumes
//! without losing or re-reading a batch.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Mutex, PoisonError};

use crate::error::check_name;
use crate::{BoxFuture, CacheError};

/// Longest checkpoint value accepted: cursors are short; anything longer is a caller bug.
pub const MAX_CHECKPOINT_LEN: usize = 4096;

/// A named cursor per source, shared by every replica when backed by Redis.
pub trait CheckpointStore: Send + Sync + Debug {
    /// The last value saved under `name`, if any.
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, CacheError>>;

    /// Replaces the value under `name`; it never expires.
    fn save<'a>(&'a self, name: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), CacheError>>;
}

pub(crate) fn check_checkpoint(name: &str, value: &str) -> Result<(), CacheError> {
    check_name("checkpoint name", name)?;
    if value.len() > MAX_CHECKPOINT_LEN {
        return Err(CacheError::invalid(
            "checkpoint value",
            format!("{} bytes, more than {MAX_CHECKPOINT_LEN}", value.len()),
        ));
    }
    Ok(())
}

/// Checkpoints in this process only (embedded mode, tests): lost on restart.
#[derive(Debug, Default)]
pub struct MemoryCheckpoints {
    values: Mutex<HashMap<String, String>>,
}

impl MemoryCheckpoints {
    pub fn new() -> Self {
        Self::default()
    }
}

impl CheckpointStore for MemoryCheckpoints {
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, CacheError>> {
        Box::pin(async move {
            check_name("checkpoint name", name)?;
            let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
            Ok(values.get(name).cloned())
        })
    }

    fn save<'a>(&'a self, name: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            check_checkpoint(name, value)?;
            let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
            values.insert(name.to_owned(), value.to_owned());
            Ok(())
        })
    }
}
