//! Gateway stores on Redis, under `{prefix}:gateway:`. The watch log is a stream (positions are
//! stream ids); one tailer task per process blocks on `XREAD` and wakes the watchers.

use std::fmt;
use std::time::Duration as StdDuration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::streams::{StreamRangeReply, StreamReadReply};
use ::redis::{Client, Script, cmd};
use culprit_model::Timestamp;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::{
    AuditRecord, AuditSink, BoxFuture, EventLog, HOUR_MS, IsolationCounter, LoggedEvent, ReadError,
    ReleaseSchedule, ScheduledRelease, millis,
};
use crate::GatewayError;

/// Appends once per dedup key: the marker and the entry are written together or not at all.
const APPEND: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
end
return false
";

/// Sliding-hour counter: drop the old, take a slot if one is free.
const TAKE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[3])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// Claims due releases: whoever removes them performs them.
const TAKE_DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do redis.call('ZREM', KEYS[1], m) end
return due
";

const DEDUP_TTL_MS: u64 = 7 * 24 * 3_600_000;

/// Every gateway store on one Redis.
pub struct RedisGatewayStores {
    conn: ConnectionManager,
    url: String,
    prefix: String,
    event_retention: u64,
    audit_retention: u64,
    changed: watch::Sender<u64>,
    tailer: AbortHandle,
    append: Script,
    take: Script,
    take_due: Script,
}

impl fmt::Debug for RedisGatewayStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisGatewayStores")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisGatewayStores {
    fn drop(&mut self) {
        self.tailer.abort();
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn config(response_timeout: StdDuration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(StdDuration::from_secs(1)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_min_delay(StdDuration::from_millis(50))
        .set_max_delay(StdDuration::from_millis(500))
}

/// A stream id as (milliseconds, sequence), for ordering.
fn parse_id(p: &str) -> Option<(u64, u64)> {
    let (ms, seq) = p.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

impl RedisGatewayStores {
    /// Connects (failing if Redis is unreachable) and starts the watch tailer. Must run inside
    /// a tokio runtime.
    pub async fn connect(
        url: &str,
        prefix: &str,
        event_retention: u64,
        audit_retention: u64,
    ) -> Result<Self, GatewayError> {
        let shown = redact(url);
        let err = |op: &'static str, e: ::redis::RedisError| GatewayError::Redis {
            url: shown.clone(),
            op,
            reason: e.to_string(),
        };
        let client = Client::open(url).map_err(|e| err("open", e))?;
        let conn =
            ConnectionManager::new_with_config(client.clone(), config(StdDuration::from_secs(2)))
                .await
                .map_err(|e| err("connect", e))?;
        let stream = format!("{prefix}:gateway:events");
        // The tailer starts after the entry that is newest now, so an append made after
        // `connect` returns always wakes watchers (`$` would race with the tailer's start).
        let start = newest_id(&conn, &stream)
            .await
            .map_err(|e| err("xrevrange", e))?
            .unwrap_or_else(|| "0-0".to_owned());
        let changed = watch::Sender::new(0);
        let tailer = tokio::spawn(tail(client, stream, start, changed.clone(), shown.clone()));
        Ok(RedisGatewayStores {
            conn,
            url: shown,
            prefix: prefix.to_owned(),
            event_retention: event_retention.max(1),
            audit_retention: audit_retention.max(1),
            changed,
            tailer: tailer.abort_handle(),
            append: Script::new(APPEND),
            take: Script::new(TAKE),
            take_due: Script::new(TAKE_DUE),
        })
    }

    /// [`RedisGatewayStores::connect`] with retention from `gateway.watch_retention` and
    /// `gateway.audit_retention`; `prefix` is `store.key_prefix`.
    pub async fn connect_with_settings(
        url: &str,
        prefix: &str,
        s: &culprit_settings::GatewaySettings,
    ) -> Result<Self, GatewayError> {
        Self::connect(url, prefix, s.watch_retention, s.audit_retention).await
    }

    fn key(&self, name: &str) -> String {
        format!("{}:gateway:{name}", self.prefix)
    }

    fn fail(&self, op: &'static str) -> impl Fn(::redis::RedisError) -> GatewayError + '_ {
        move |e| GatewayError::Redis {
            url: self.url.clone(),
            op,
            reason: e.to_string(),
        }
    }

    /// Deletes every gateway key under the prefix (tests).
    pub async fn delete_all(&self) -> Result<(), GatewayError> {
        let mut c = self.conn.clone();
        let keys: Vec<String> = cmd("KEYS")
            .arg(format!("{}:gateway:*", self.prefix))
            .query_async(&mut c)
            .await
            .map_err(self.fail("keys"))?;
        if !keys.is_empty() {
            cmd("DEL")
                .arg(keys)
                .query_async::<()>(&mut c)
                .await
                .map_err(self.fail("del"))?;
        }
        Ok(())
    }

    async fn range(&self, start: &str, limit: usize) -> Result<Vec<LoggedEvent>, GatewayError> {
        let mut c = self.conn.clone();
        let reply: StreamRangeReply = cmd("XRANGE")
            .arg(self.key("events"))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut c)
            .await
            .map_err(self.fail("xrange"))?;
        Ok(reply
            .ids
            .into_iter()
            .map(|e| LoggedEvent {
                payload: e.get::<Vec<u8>>("e").unwrap_or_default(),
                position: e.id,
            })
            .collect())
    }
}

/// The id of the stream's newest entry.
async fn newest_id(
    conn: &ConnectionManager,
    stream: &str,
) -> Result<Option<String>, ::redis::RedisError> {
    let mut c = conn.clone();
    let reply: StreamRangeReply = cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut c)
        .await?;
    Ok(reply.ids.into_iter().next().map(|e| e.id))
}

/// Blocks on the stream and bumps `changed` when entries arrive. Its own connection, because
/// a blocking read would stall every other command pipelined on a shared one.
async fn tail(
    client: Client,
    stream: String,
    mut last: String,
    changed: watch::Sender<u64>,
    url: String,
) {
    let mut conn: Option<ConnectionManager> = None;
    loop {
        let c = match &mut conn {
            Some(c) => c,
            None => match ConnectionManager::new_with_config(
                client.clone(),
                config(StdDuration::from_secs(10)),
            )
            .await
            {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::warn!(%url, error = %e, "watch tailer cannot connect to redis");
                    tokio::time::sleep(StdDuration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let reply: Result<Option<StreamReadReply>, _> = cmd("XREAD")
            .arg("BLOCK")
            .arg(5000)
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last)
            .query_async(c)
            .await;
        match reply {
            Ok(Some(r)) => {
                if let Some(id) = r
                    .keys
                    .iter()
                    .flat_map(|k| &k.ids)
                    .map(|i| &i.id)
                    .next_back()
                {
                    last.clone_from(id);
                }
                changed.send_modify(|n| *n += 1);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%url, error = %e, "watch tailer read failed");
                // Wake watchers anyway: they re-read from their position, so nothing is lost.
                changed.send_modify(|n| *n += 1);
                tokio::time::sleep(StdDuration::from_millis(500)).await;
            }
        }
    }
}

impl EventLog for RedisGatewayStores {
    fn append<'a>(
        &'a self,
        dedup_key: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<String>, GatewayError>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let id: Option<String> = self
                .append
                .key(self.key("events"))
                .key(self.key(&format!("events:seen:{dedup_key}")))
                .arg(payload)
                .arg(self.event_retention)
                .arg(DEDUP_TTL_MS)
                .invoke_async(&mut c)
                .await
                .map_err(self.fail("append event"))?;
            if id.is_some() {
                self.changed.send_modify(|n| *n += 1);
            }
            Ok(id)
        })
    }

    fn read_after<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<LoggedEvent>, ReadError>> {
        Box::pin(async move {
            let Some(after) = after else {
                return Ok(self.range("-", limit).await?);
            };
            let Some(pos) = parse_id(after) else {
                return Err(ReadError::InvalidPosition {
                    position: after.to_owned(),
                    reason: "expected <milliseconds>-<sequence>".into(),
                });
            };
            // A position older than the oldest entry means its entry (and maybe more) was
            // trimmed; say so rather than silently skip.
            if let Some(oldest) = self.range("-", 1).await?.into_iter().next()
                && parse_id(&oldest.position).is_some_and(|o| pos < o)
            {
                return Err(ReadError::Expired {
                    position: after.to_owned(),
                    oldest: oldest.position,
                });
            }
            Ok(self.range(&format!("({after}"), limit).await?)
        })
    }

    fn last_position(&self) -> BoxFuture<'_, Result<Option<String>, GatewayError>> {
        Box::pin(async move {
            newest_id(&self.conn, &self.key("events"))
                .await
                .map_err(self.fail("xrevrange"))
        })
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl AuditSink for RedisGatewayStores {
    fn record<'a>(&'a self, record: &'a AuditRecord) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let json = serde_json::to_string(record).map_err(|e| GatewayError::Decode {
                what: "audit record",
                reason: e.to_string(),
            })?;
            let mut c = self.conn.clone();
            cmd("XADD")
                .arg(self.key("audit"))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.audit_retention)
                .arg("*")
                .arg("record")
                .arg(json)
                .query_async::<String>(&mut c)
                .await
                .map_err(self.fail("append audit"))?;
            Ok(())
        })
    }

    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditRecord>, GatewayError>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let reply: StreamRangeReply = cmd("XREVRANGE")
                .arg(self.key("audit"))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut c)
                .await
                .map_err(self.fail("read audit"))?;
            reply
                .ids
                .iter()
                .map(|e| {
                    let json: String = e.get("record").unwrap_or_default();
                    serde_json::from_str(&json).map_err(|err| GatewayError::Decode {
                        what: "audit record",
                        reason: format!("{}: {err}", e.id),
                    })
                })
                .collect()
        })
    }
}

impl IsolationCounter for RedisGatewayStores {
    fn try_take<'a>(
        &'a self,
        scope: &'a str,
        tenant: &'a str,
        now: Timestamp,
        limit: u32,
    ) -> BoxFuture<'a, Result<bool, GatewayError>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let member = format!("{}-{:016x}", millis(now), rand::random::<u64>());
            let taken: i64 = self
                .take
                .key(self.key(&format!("isolations:{scope}:{tenant}")))
                .arg(millis(now))
                .arg(limit)
                .arg(HOUR_MS)
                .arg(member)
                .invoke_async(&mut c)
                .await
                .map_err(self.fail("count isolations"))?;
            Ok(taken == 1)
        })
    }
}

impl ReleaseSchedule for RedisGatewayStores {
    fn schedule<'a>(
        &'a self,
        release: &'a ScheduledRelease,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let json = serde_json::to_string(release).map_err(|e| GatewayError::Decode {
                what: "scheduled release",
                reason: e.to_string(),
            })?;
            let mut c = self.conn.clone();
            cmd("ZADD")
                .arg(self.key("releases"))
                .arg(millis(release.due))
                .arg(json)
                .query_async::<i64>(&mut c)
                .await
                .map_err(self.fail("schedule release"))?;
            Ok(())
        })
    }

    fn take_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ScheduledRelease>, GatewayError>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let due: Vec<String> = self
                .take_due
                .key(self.key("releases"))
                .arg(millis(now))
                .arg(limit)
                .invoke_async(&mut c)
                .await
                .map_err(self.fail("take due releases"))?;
            due.iter()
                .map(|j| {
                    serde_json::from_str(j).map_err(|e| GatewayError::Decode {
                        what: "scheduled release",
                        reason: e.to_string(),
                    })
                })
                .collect()
        })
    }
}
