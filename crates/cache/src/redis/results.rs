//! The result store on Redis: one hash per detection key and lexicographic indexes (global and
//! per tenant) whose members sort newest first.

use ::redis::{cmd, pipe};
use culprit_model::DetectionKey;

use super::RedisStores;
use crate::error::check_name;
use crate::keys::enc;
use crate::stores::{check_limit, index_member, key_of_member};
use crate::{
    BoxFuture, CacheError, PutOutcome, ResultFilter, ResultMeta, ResultPage, ResultStore,
    StoredResult,
};

/// Index entries read per round trip while listing.
const BATCH: usize = 200;

impl RedisStores {
    fn result_key(&self, key: &DetectionKey) -> String {
        self.key(&["result", &enc(key.as_str())])
    }

    fn index_key(&self, tenant: Option<&str>) -> String {
        match tenant {
            Some(t) => self.key(&["results", "idx", &enc(t)]),
            None => self.key(&["results", "idx"]),
        }
    }

    async fn put_result(
        &self,
        key: &DetectionKey,
        bytes: &[u8],
        meta: &ResultMeta,
    ) -> Result<PutOutcome, CacheError> {
        check_name("detection_key", key.as_str())?;
        check_name("meta.tenant", &meta.tenant)?;
        let meta_json =
            serde_json::to_string(meta).map_err(|e| CacheError::invalid("meta", e.to_string()))?;
        let keys = [
            self.result_key(key),
            self.index_key(None),
            self.index_key(Some(&meta.tenant)),
        ];
        let member = index_member(key, meta.computed_at);
        // No retry: a lost reply after the write would turn "new" into "unchanged".
        let (code, previous): (i64, Vec<u8>) = self
            .run("result put", false, |mut c| {
                let mut inv = self.put_script.prepare_invoke();
                inv.key(&keys[..])
                    .arg(bytes)
                    .arg(&meta_json)
                    .arg(&member)
                    .arg(&meta.tenant);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        match code {
            0 => Ok(PutOutcome::New),
            1 => Ok(PutOutcome::Unchanged),
            2 => Ok(PutOutcome::Changed { previous }),
            other => Err(CacheError::corrupt(
                "result put reply",
                format!("code {other}"),
            )),
        }
    }

    /// One batch of index members after `after`, and their stored (meta, bytes).
    async fn index_batch(
        &self,
        index: &str,
        after: Option<&str>,
    ) -> Result<Vec<(String, Option<String>, Option<Vec<u8>>)>, CacheError> {
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let members: Vec<String> = self
            .run("result list", true, |mut c| {
                let start = start.clone();
                async move {
                    cmd("ZRANGE")
                        .arg(index)
                        .arg(start)
                        .arg("+")
                        .arg("BYLEX")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(BATCH)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let keys = members
            .iter()
            .map(|m| key_of_member(m).map(|k| self.result_key(&k)))
            .collect::<Result<Vec<_>, _>>()?;
        let rows: Vec<(Option<String>, Option<Vec<u8>>)> = self
            .run("result list", true, |mut c| {
                let mut p = pipe();
                for k in &keys {
                    p.cmd("HMGET").arg(k).arg("meta").arg("bytes");
                }
                async move {
                    p.query_async::<Vec<(Option<String>, Option<Vec<u8>>)>>(&mut c)
                        .await
                }
            })
            .await?;
        Ok(members
            .into_iter()
            .zip(rows)
            .map(|(m, (meta, bytes))| (m, meta, bytes))
            .collect())
    }

    async fn list_results(
        &self,
        filter: &ResultFilter,
        token: Option<&str>,
        limit: usize,
    ) -> Result<ResultPage, CacheError> {
        check_limit(limit)?;
        let index = self.index_key(filter.tenant.as_deref());
        let mut page = ResultPage::default();
        let mut last: Option<String> = None;
        let mut cursor = token.map(str::to_owned);
        loop {
            let batch = self.index_batch(&index, cursor.as_deref()).await?;
            let exhausted = batch.len() < BATCH;
            for (member, meta, bytes) in batch {
                cursor = Some(member.clone());
                // A result deleted between the two reads is skipped.
                let (Some(meta), Some(bytes)) = (meta, bytes) else {
                    continue;
                };
                let meta: ResultMeta = serde_json::from_str(&meta)
                    .map_err(|e| CacheError::corrupt("result meta", e.to_string()))?;
                if !filter.matches(&meta) {
                    continue;
                }
                if page.items.len() == limit {
                    page.next_page_token = last;
                    return Ok(page);
                }
                let key = key_of_member(&member)?;
                last = Some(member);
                page.items.push(StoredResult { key, bytes, meta });
            }
            if exhausted {
                return Ok(page);
            }
        }
    }
}

impl ResultStore for RedisStores {
    fn put<'a>(
        &'a self,
        key: &'a DetectionKey,
        bytes: &'a [u8],
        meta: &'a ResultMeta,
    ) -> BoxFuture<'a, Result<PutOutcome, CacheError>> {
        Box::pin(self.put_result(key, bytes, meta))
    }

    fn get<'a>(
        &'a self,
        key: &'a DetectionKey,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>> {
        Box::pin(async move {
            let k = self.result_key(key);
            self.run("result get", true, |mut c| {
                let k = k.clone();
                async move { cmd("HGET").arg(k).arg("bytes").query_async(&mut c).await }
            })
            .await
        })
    }

    fn list<'a>(
        &'a self,
        filter: &'a ResultFilter,
        page_token: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ResultPage, CacheError>> {
        Box::pin(self.list_results(filter, page_token, limit))
    }
}
