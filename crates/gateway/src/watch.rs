//! `WatchCorrelations`: a task per watcher reads the event log from its position, filters, and
//! waits for the log to change. The log is the only source, so a client resuming from the last
//! position it received misses nothing and sees nothing twice.

use std::collections::BTreeSet;
use std::sync::Arc;

use culprit_proto::convert::status_from_proto;
use culprit_proto::v1 as pb;
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Code, Status};

use crate::auth::Principal;
use crate::ctx::{Ctx, unavailable};
use crate::status::{Refusal, invalid, invalid_convert, reason};
use crate::stores::{LoggedEvent, ReadError};

const BATCH: usize = 256;

/// Which events a watcher receives.
#[derive(Debug, Clone)]
pub(crate) struct WatchFilter {
    tenants: Option<BTreeSet<String>>,
    device_id: String,
    statuses: BTreeSet<i32>,
    min_confidence: Option<f64>,
}

impl WatchFilter {
    pub fn new(p: &Principal, r: &pb::WatchCorrelationsRequest) -> Result<Self, Status> {
        for (i, s) in r.statuses.iter().enumerate() {
            status_from_proto(&format!("statuses[{i}]"), *s)
                .map_err(|e| invalid_convert("", &e))?;
        }
        Ok(WatchFilter {
            tenants: p.narrow(&r.tenants)?,
            device_id: r.device_id.clone(),
            statuses: r.statuses.iter().copied().collect(),
            min_confidence: r.min_confidence,
        })
    }

    pub fn matches(&self, c: &pb::Correlation) -> bool {
        let device = c.device.as_ref().map(|d| d.device_id.as_str());
        let confidence = c.probable.as_ref().map_or(0.0, |p| p.confidence);
        self.tenants.as_ref().is_none_or(|t| t.contains(&c.tenant))
            && (self.device_id.is_empty() || device == Some(self.device_id.as_str()))
            && (self.statuses.is_empty() || self.statuses.contains(&c.status))
            && self.min_confidence.is_none_or(|m| confidence >= m)
    }
}

/// The answer an event is about (the current one for a change).
pub(crate) fn subject(e: &pb::CorrelationEvent) -> Option<&pb::Correlation> {
    match &e.kind {
        Some(pb::correlation_event::Kind::NewResult(n)) => n.correlation.as_ref(),
        Some(pb::correlation_event::Kind::AttributionChanged(c)) => c.current.as_ref(),
        None => None,
    }
}

fn read_status(e: ReadError) -> Status {
    match e {
        ReadError::InvalidPosition { ref reason, .. } => invalid("after_position", reason),
        ReadError::Expired { ref oldest, .. } => {
            Refusal::new(Code::OutOfRange, reason::POSITION_EXPIRED, e.to_string())
                .meta("oldest_position", oldest.clone())
                .build()
        }
        ReadError::Backend(b) => unavailable("event log", &b),
    }
}

/// Validates the start, then streams from it until the client leaves or the server stops.
pub(crate) async fn spawn_watch(
    ctx: Arc<Ctx>,
    filter: WatchFilter,
    after: String,
    from_oldest: bool,
) -> Result<mpsc::Receiver<Result<pb::CorrelationEvent, Status>>, Status> {
    let log = &ctx.h.stores;
    let start = if !after.is_empty() {
        // Fails now (not mid-stream) on a bad or expired position.
        log.read_after(Some(&after), 1).await.map_err(read_status)?;
        Some(after)
    } else if from_oldest {
        None
    } else {
        log.last_position()
            .await
            .map_err(|e| unavailable("event log", &e))?
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(ctx, filter, start, tx));
    Ok(rx)
}

type Tx = mpsc::Sender<Result<pb::CorrelationEvent, Status>>;

async fn run(ctx: Arc<Ctx>, filter: WatchFilter, mut pos: Option<String>, tx: Tx) {
    let mut changed = ctx.h.stores.subscribe();
    let shutdown = ctx.shutdown.clone();
    loop {
        // Mark the change seen before reading, so an append during the read wakes us.
        changed.borrow_and_update();
        let batch = match ctx.h.stores.read_after(pos.as_deref(), BATCH).await {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Err(read_status(e))).await;
                return;
            }
        };
        let full = batch.len() == BATCH;
        for event in batch {
            pos = Some(event.position.clone());
            if !forward(&filter, event, &tx).await {
                return;
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = tx.closed() => return,
            _ = crate::ctx::stopped(shutdown.clone()) => {
                let _ = tx.send(Err(Refusal::new(
                    Code::Unavailable,
                    reason::UNAVAILABLE,
                    "server shutting down: reconnect with after_position",
                )
                .meta("dependency", "gateway")
                .meta("resume_after", pos.clone().unwrap_or_default())
                .build())).await;
                return;
            }
        }
    }
}

/// Sends one event if it matches; false when the client is gone.
async fn forward(filter: &WatchFilter, event: LoggedEvent, tx: &Tx) -> bool {
    let mut e = match pb::CorrelationEvent::decode(event.payload.as_slice()) {
        Ok(e) => e,
        Err(err) => {
            tracing::error!(position = %event.position, error = %err, "undecodable watch event skipped");
            return true;
        }
    };
    if !subject(&e).is_some_and(|c| filter.matches(c)) {
        return true;
    }
    e.position = event.position;
    tx.send(Ok(e)).await.is_ok()
}
