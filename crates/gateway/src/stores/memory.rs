//! In-memory gateway stores (embedded mode and tests).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use culprit_model::Timestamp;
use tokio::sync::watch;

use super::{
    AuditRecord, AuditSink, BoxFuture, EventLog, HOUR_MS, IsolationCounter, LoggedEvent, ReadError,
    ReleaseSchedule, ScheduledRelease, millis,
};
use crate::GatewayError;

#[derive(Debug, Default)]
struct State {
    /// Position of the next event (positions start at 1).
    next: u64,
    events: VecDeque<(u64, Vec<u8>)>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    audit: VecDeque<AuditRecord>,
    taken: HashMap<String, VecDeque<i64>>,
    releases: Vec<ScheduledRelease>,
}

/// Every gateway store in one process.
#[derive(Debug)]
pub struct MemoryGatewayStores {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    event_retention: usize,
    audit_retention: usize,
}

impl MemoryGatewayStores {
    /// Keeps at most `event_retention` watch events and `audit_retention` audit records.
    pub fn new(event_retention: usize, audit_retention: usize) -> Self {
        MemoryGatewayStores {
            state: Mutex::new(State {
                next: 1,
                ..State::default()
            }),
            changed: watch::Sender::new(0),
            event_retention: event_retention.max(1),
            audit_retention: audit_retention.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update below leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryGatewayStores {
    /// Retention from `gateway.watch_retention` and `gateway.audit_retention`.
    pub fn from_settings(s: &culprit_settings::GatewaySettings) -> Self {
        let cap = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Self::new(cap(s.watch_retention), cap(s.audit_retention))
    }
}

impl Default for MemoryGatewayStores {
    fn default() -> Self {
        Self::new(100_000, 100_000)
    }
}

fn parse_position(p: &str) -> Result<u64, ReadError> {
    p.parse::<u64>().map_err(|_| ReadError::InvalidPosition {
        position: p.to_owned(),
        reason: "not a decimal number".into(),
    })
}

impl EventLog for MemoryGatewayStores {
    fn append<'a>(
        &'a self,
        dedup_key: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<String>, GatewayError>> {
        Box::pin(async move {
            let mut s = self.lock();
            if !s.seen.insert(dedup_key.to_owned()) {
                return Ok(None);
            }
            s.seen_order.push_back(dedup_key.to_owned());
            // Remember more keys than events so a late redelivery of a trimmed event is
            // still recognised.
            while s.seen_order.len() > self.event_retention.saturating_mul(2) {
                if let Some(old) = s.seen_order.pop_front() {
                    s.seen.remove(&old);
                }
            }
            let pos = s.next;
            s.next += 1;
            s.events.push_back((pos, payload.to_vec()));
            while s.events.len() > self.event_retention {
                s.events.pop_front();
            }
            drop(s);
            self.changed.send_modify(|n| *n += 1);
            Ok(Some(pos.to_string()))
        })
    }

    fn read_after<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<LoggedEvent>, ReadError>> {
        Box::pin(async move {
            let after = after.map(parse_position).transpose()?;
            let s = self.lock();
            if let Some(a) = after {
                if a >= s.next {
                    return Err(ReadError::InvalidPosition {
                        position: a.to_string(),
                        reason: "it is ahead of the log".into(),
                    });
                }
                if let Some((oldest, _)) = s.events.front()
                    && a + 1 < *oldest
                {
                    return Err(ReadError::Expired {
                        position: a.to_string(),
                        oldest: oldest.to_string(),
                    });
                }
            }
            let from = after.unwrap_or(0);
            Ok(s.events
                .iter()
                .filter(|(p, _)| *p > from)
                .take(limit)
                .map(|(p, b)| LoggedEvent {
                    position: p.to_string(),
                    payload: b.clone(),
                })
                .collect())
        })
    }

    fn last_position(&self) -> BoxFuture<'_, Result<Option<String>, GatewayError>> {
        Box::pin(async move {
            let s = self.lock();
            Ok((s.next > 1).then(|| (s.next - 1).to_string()))
        })
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl AuditSink for MemoryGatewayStores {
    fn record<'a>(&'a self, record: &'a AuditRecord) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let mut s = self.lock();
            s.audit.push_back(record.clone());
            while s.audit.len() > self.audit_retention {
                s.audit.pop_front();
            }
            Ok(())
        })
    }

    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditRecord>, GatewayError>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .audit
                .iter()
                .rev()
                .take(limit)
                .cloned()
                .collect())
        })
    }
}

impl IsolationCounter for MemoryGatewayStores {
    fn try_take<'a>(
        &'a self,
        scope: &'a str,
        tenant: &'a str,
        now: Timestamp,
        limit: u32,
    ) -> BoxFuture<'a, Result<bool, GatewayError>> {
        Box::pin(async move {
            let now = millis(now);
            let mut s = self.lock();
            let log = s.taken.entry(format!("{scope}|{tenant}")).or_default();
            while log.front().is_some_and(|t| *t <= now - HOUR_MS) {
                log.pop_front();
            }
            if log.len() >= limit as usize {
                return Ok(false);
            }
            log.push_back(now);
            Ok(true)
        })
    }
}

impl ReleaseSchedule for MemoryGatewayStores {
    fn schedule<'a>(
        &'a self,
        release: &'a ScheduledRelease,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            self.lock().releases.push(release.clone());
            Ok(())
        })
    }

    fn take_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ScheduledRelease>, GatewayError>> {
        Box::pin(async move {
            let mut s = self.lock();
            let mut due = Vec::new();
            let mut i = 0;
            while i < s.releases.len() && due.len() < limit {
                if s.releases[i].due <= now {
                    due.push(s.releases.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            Ok(due)
        })
    }
}
