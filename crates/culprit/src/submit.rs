//! SubmitDetection on the ingest service's path: the gateway hands each normalised detection
//! to the same publisher the webhook and syslog listeners use (publisher confirms, mandatory
//! routing, dedup by detection key shared across all three), so a detection sent twice by
//! different paths is published once.

use culprit_gateway::stores::BoxFuture;
use culprit_gateway::{DetectionSink, SubmitError, Submitted};
use culprit_ingest_server::IngestPublisher;
use culprit_model::Detection;

/// [`DetectionSink`] over the ingest publisher.
#[derive(Debug, Clone)]
pub struct IngestSink(pub IngestPublisher);

impl DetectionSink for IngestSink {
    fn submit(&self, detection: Detection) -> BoxFuture<'_, Result<Submitted, SubmitError>> {
        Box::pin(async move {
            match self.0.publish(detection).await {
                Ok(p) => Ok(Submitted {
                    key: p.key,
                    duplicate: p.duplicate,
                    warnings: p.warnings,
                }),
                Err(e) if e.is_retryable() => Err(SubmitError::Unavailable(e.to_string())),
                Err(e) => Err(SubmitError::Invalid(e.to_string())),
            }
        })
    }
}
