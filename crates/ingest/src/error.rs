//! One error type for every parser: each variant names where (a JSON path such as
//! `results[2].grouped_details[0].sessions[1].dst_port`, or `line 3` / `line 3: id.orig_h`)
//! and why.

/// Why an input, or one record of it, was not turned into a detection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The bytes are not the format at all (not JSON, bad framing, no `CEF:` header...).
    #[error("{path}: malformed input: {reason}")]
    Malformed { path: String, reason: String },
    /// A field the detection cannot exist without is absent or null.
    #[error("{path}: required field is missing")]
    Missing { path: String },
    /// A required field is present but unusable.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// A well-formed record that is not a detection (an EVE `flow` event, a CEF health message):
    /// not an error of the sender, so a service should drop it rather than dead-letter it.
    #[error("{path}: skipped: {reason}")]
    Skipped { path: String, reason: String },
}

impl IngestError {
    /// Where in the input the problem is.
    pub fn path(&self) -> &str {
        match self {
            IngestError::Malformed { path, .. }
            | IngestError::Missing { path }
            | IngestError::Invalid { path, .. }
            | IngestError::Skipped { path, .. } => path,
        }
    }

    /// True for records that are valid but not detections.
    pub fn is_skip(&self) -> bool {
        matches!(self, IngestError::Skipped { .. })
    }
}
