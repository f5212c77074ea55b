//! Checkpoints on Redis: one plain string per name, `{prefix}:checkpoint:{name}`, no TTL.

use ::redis::cmd;

use super::RedisStores;
use crate::checkpoint::check_checkpoint;
use crate::error::check_name;
use crate::keys::enc;
use crate::{BoxFuture, CacheError, CheckpointStore};

impl RedisStores {
    fn checkpoint_key(&self, name: &str) -> String {
        self.key(&["checkpoint", &enc(name)])
    }
}

impl CheckpointStore for RedisStores {
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, CacheError>> {
        Box::pin(async move {
            check_name("checkpoint name", name)?;
            let k = self.checkpoint_key(name);
            self.run("checkpoint load", true, |mut c| {
                let k = k.clone();
                async move {
                    cmd("GET")
                        .arg(k)
                        .query_async::<Option<String>>(&mut c)
                        .await
                }
            })
            .await
        })
    }

    fn save<'a>(&'a self, name: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            check_checkpoint(name, value)?;
            let k = self.checkpoint_key(name);
            // SET is idempotent, so retrying after a dropped connection is safe.
            self.run("checkpoint save", true, |mut c| {
                let k = k.clone();
                async move { cmd("SET").arg(k).arg(value).query_async::<()>(&mut c).await }
            })
            .await
        })
    }
}
