//! The two ways through the API; both hand off a batch, then save the checkpoint after it.

use culprit_runtime::Shutdown;
use serde_json::Value;
use url::Url;

use crate::{Poller, PollerError};

/// A checkpoint that may arrive as a number or a string.
fn cursor(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        Value::String(s) => s.trim().parse::<u64>().ok().map(|n| n.to_string()),
        _ => None,
    }
}

impl Poller {
    async fn load_checkpoint(&self) -> Result<Option<String>, PollerError> {
        let stored = self
            .checkpoints
            .load(&self.config.checkpoint_name())
            .await?;
        Ok(stored.or_else(|| self.config.start_checkpoint.clone()))
    }

    async fn save_checkpoint(&self, value: &str) -> Result<(), PollerError> {
        self.checkpoints
            .save(&self.config.checkpoint_name(), value)
            .await?;
        Ok(())
    }

    async fn submit(&self, batch: Vec<Value>) -> Result<(), PollerError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.sink.submit(batch).await?;
        Ok(())
    }

    /// The v3.5 event stream: events from the checkpoint, their detections fetched whole.
    pub(crate) async fn poll_events(&self, shutdown: &Shutdown) -> Result<u64, PollerError> {
        let mut from = self.load_checkpoint().await?.unwrap_or_else(|| "0".into());
        let mut handed = 0u64;
        loop {
            let mut url = self.api.url("api/v3.5/events/detections")?;
            url.query_pairs_mut()
                .append_pair("from", &from)
                .append_pair("limit", &self.config.page_size.to_string())
                .append_pair("ordering", "id")
                .append_pair("include_info_category", "true");
            let endpoint = url.path().to_owned();
            let bad = |reason: String| PollerError::BadResponse {
                endpoint: endpoint.clone(),
                reason,
            };
            let page =
                self.api
                    .get_json(&url, shutdown)
                    .await?
                    .ok_or_else(|| PollerError::Refused {
                        endpoint: endpoint.clone(),
                        status: 404,
                        detail: "the event stream is not available (API older than v3.5?)".into(),
                    })?;
            let events = match page.get("events") {
                Some(Value::Array(e)) => e,
                _ => return Err(bad("no events array".into())),
            };
            let next = cursor(page.get("next_checkpoint"))
                .ok_or_else(|| bad("no next_checkpoint".into()))?;
            let remaining = page
                .get("remaining_count")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            // One fetch per detection, however many of its events the page holds.
            let mut ids: Vec<String> = Vec::new();
            for (i, e) in events.iter().enumerate() {
                match id_text(e.get("detection_id")) {
                    Some(id) if !ids.contains(&id) => ids.push(id),
                    Some(_) => {}
                    None => {
                        tracing::warn!(source = %self.config.name, event = i, "vectra event without a detection_id; skipped")
                    }
                }
            }
            let mut batch = Vec::with_capacity(ids.len());
            for id in &ids {
                let url = self
                    .api
                    .url(&format!("api/{}/detections/{id}", self.config.api_version))?;
                match self.api.get_json(&url, shutdown).await? {
                    Some(d) if d.is_object() => batch.push(d),
                    Some(_) => {
                        return Err(PollerError::BadResponse {
                            endpoint: url.path().to_owned(),
                            reason: "the detection is not a JSON object".into(),
                        });
                    }
                    // Deleted since the event: nothing to hand off.
                    None => {
                        tracing::warn!(source = %self.config.name, detection = %id, "vectra detection named by an event is gone (404); skipped")
                    }
                }
            }
            handed += batch.len() as u64;
            self.submit(batch).await?;
            if next != from {
                self.save_checkpoint(&next).await?;
            }
            if events.is_empty() || remaining == 0 || next == from || shutdown.is_triggered() {
                return Ok(handed);
            }
            from = next;
        }
    }

    /// The detection list by `last_timestamp`, following `next`.
    pub(crate) async fn poll_detections(&self, shutdown: &Shutdown) -> Result<u64, PollerError> {
        let since = self.load_checkpoint().await?;
        let mut url = self
            .api
            .url(&format!("api/{}/detections", self.config.api_version))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("ordering", "last_timestamp")
                .append_pair("page_size", &self.config.page_size.to_string());
            if let Some(t) = &since {
                q.append_pair("last_timestamp_gte", t);
            }
        }
        let mut newest = since.clone();
        let mut handed = 0u64;
        let mut pages = 0u32;
        loop {
            let endpoint = url.path().to_owned();
            let page =
                self.api
                    .get_json(&url, shutdown)
                    .await?
                    .ok_or_else(|| PollerError::Refused {
                        endpoint: endpoint.clone(),
                        status: 404,
                        detail: format!(
                            "no detections list (api_version {}?)",
                            self.config.api_version
                        ),
                    })?;
            let results = match page.get("results") {
                Some(Value::Array(r)) => r,
                _ => {
                    return Err(PollerError::BadResponse {
                        endpoint,
                        reason: "no results array".into(),
                    });
                }
            };
            for d in results {
                if let Some(t) = d.get("last_timestamp").and_then(Value::as_str)
                    && newest.as_deref().is_none_or(|n| later(t, n))
                {
                    newest = Some(t.to_owned());
                }
            }
            let batch: Vec<Value> = results.iter().filter(|d| d.is_object()).cloned().collect();
            handed += batch.len() as u64;
            self.submit(batch).await?;
            if let Some(n) = &newest
                && newest != since
            {
                self.save_checkpoint(n).await?;
            }
            pages += 1;
            let next = match page.get("next") {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => return Ok(handed),
            };
            if shutdown.is_triggered() {
                return Ok(handed);
            }
            url = self.follow(next, &endpoint)?;
            if pages > 1_000_000 {
                return Err(PollerError::BadResponse {
                    endpoint,
                    reason: "more than a million pages; next links loop".into(),
                });
            }
        }
    }

    /// A `next` link, accepted only on the configured origin: the token must not be sent
    /// anywhere else.
    fn follow(&self, next: &str, endpoint: &str) -> Result<Url, PollerError> {
        let url = self
            .api
            .base()
            .join(next)
            .map_err(|e| PollerError::BadResponse {
                endpoint: endpoint.to_owned(),
                reason: format!("next is not a URL: {e}"),
            })?;
        if url.origin() != self.api.base().origin() {
            return Err(PollerError::BadResponse {
                endpoint: endpoint.to_owned(),
                reason: format!(
                    "next points at another origin ({}), not followed",
                    url.origin().ascii_serialization()
                ),
            });
        }
        Ok(url)
    }
}

/// `a` after `b`, comparing as times when both parse, else as text (same-format ISO strings
/// order the same way).
fn later(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x > y,
        _ => a > b,
    }
}
