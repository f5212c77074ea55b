//! The Vectra API poller's sink: raw detection objects from the API → the publisher.

use culprit_cache::BoxFuture;
use culprit_vectra_poller::{DetectionSink, SinkError};

use crate::{IngestPublisher, Source};

/// Hands a poller's batches to the publisher under its source (and so its tenant). `Ok` once
/// every detection is confirmed and every unreadable one dead-lettered, so the poller may move
/// its checkpoint; a transient failure is an error, and the poller resubmits the batch
/// (duplicates are absorbed by key).
#[derive(Debug, Clone)]
pub struct PollerSink {
    pub publisher: IngestPublisher,
    pub source: Source,
}

impl DetectionSink for PollerSink {
    fn submit<'a>(&'a self, raw: Vec<serde_json::Value>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let report = self
                .publisher
                .ingest_values(&self.source, raw)
                .await
                .map_err(|e| SinkError::new(e.to_string()))?;
            if !report.rejected.is_empty() {
                tracing::warn!(source = %self.source.name, rejected = report.rejected.len(), "Vectra API detections dead-lettered");
            }
            Ok(())
        })
    }
}
