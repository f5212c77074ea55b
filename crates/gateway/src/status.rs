//! Every refusal the gateway returns, with `google.rpc` error details (`grpc-status-details-bin`)
//! so clients can act without parsing messages: an `ErrorInfo` (reason, domain `culprit`,
//! metadata) always, plus `BadRequest` for invalid arguments, `PreconditionFailure` for state,
//! role and policy refusals, and `RetryInfo` when waiting helps.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every Culprit error.
pub const ERROR_DOMAIN: &str = "culprit";

/// `ErrorInfo.reason` values (stable: clients match on them).
pub mod reason {
    /// A request field is missing or invalid; `BadRequest` names it.
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    /// No `authorization: Bearer` header, or not a usable one.
    pub const API_KEY_MISSING: &str = "API_KEY_MISSING";
    /// The bearer key matches no configured key.
    pub const API_KEY_UNKNOWN: &str = "API_KEY_UNKNOWN";
    /// The key lacks the method's scope; metadata `scope`.
    pub const SCOPE_MISSING: &str = "SCOPE_MISSING";
    /// The key does not cover the named tenant; metadata `tenant`.
    pub const TENANT_NOT_ALLOWED: &str = "TENANT_NOT_ALLOWED";
    /// The key is over its rate; `RetryInfo` says when to retry.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// No answer (yet) for the detection.
    pub const CORRELATION_NOT_FOUND: &str = "CORRELATION_NOT_FOUND";
    /// MDE knows no such machine or action.
    pub const MDE_NOT_FOUND: &str = "MDE_NOT_FOUND";
    /// The detection's answer names several devices (or none).
    pub const DEVICE_AMBIGUOUS: &str = "DEVICE_AMBIGUOUS";
    /// The device is already isolated.
    pub const ALREADY_ISOLATED: &str = "ALREADY_ISOLATED";
    /// The device is not isolated: nothing to release.
    pub const NOT_ISOLATED: &str = "NOT_ISOLATED";
    /// An action is pending on the device; metadata `action_id`.
    pub const ACTION_PENDING: &str = "ACTION_PENDING";
    /// Culprit's MDE application lacks a role; metadata `missing_role`.
    pub const MDE_ROLE_MISSING: &str = "MDE_ROLE_MISSING";
    /// Culprit's MDE credentials for the tenant are not usable.
    pub const MDE_CREDENTIALS: &str = "MDE_CREDENTIALS";
    /// The tenant has no MDE connection configured.
    pub const TENANT_NOT_CONNECTED: &str = "TENANT_NOT_CONNECTED";
    /// MDE rejected the request's content.
    pub const MDE_REJECTED: &str = "MDE_REJECTED";
    /// A dependency (store, bus, event log, MDE) failed; retrying may help.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// A watch position is older than the retained events.
    pub const POSITION_EXPIRED: &str = "POSITION_EXPIRED";
    /// The client's deadline passed first.
    pub const DEADLINE: &str = "DEADLINE";
    /// Something unexpected inside Culprit or MDE.
    pub const INTERNAL: &str = "INTERNAL";
}

/// A refusal being built: code, message, details, metadata.
#[derive(Debug)]
pub(crate) struct Refusal {
    code: Code,
    message: String,
    reason: String,
    info: HashMap<String, String>,
    details: ErrorDetails,
    metadata: MetadataMap,
}

impl Refusal {
    pub fn new(code: Code, reason: &str, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            reason: reason.to_owned(),
            info: HashMap::new(),
            details: ErrorDetails::new(),
            metadata: MetadataMap::new(),
        }
    }

    /// Adds `ErrorInfo.metadata[key] = value`.
    pub fn meta(mut self, key: &str, value: impl Into<String>) -> Self {
        self.info.insert(key.to_owned(), value.into());
        self
    }

    /// Also sets the ASCII response header `key` (for clients without detail decoding).
    pub fn header(mut self, key: &'static str, value: &str) -> Self {
        if let Ok(v) = value.parse() {
            self.metadata.insert(key, v);
        }
        self
    }

    pub fn field(mut self, field: &str, description: &str) -> Self {
        self.details.add_bad_request_violation(field, description);
        self
    }

    pub fn precondition(mut self, kind: &str, subject: &str, description: &str) -> Self {
        self.details
            .add_precondition_failure_violation(kind, subject, description);
        self
    }

    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.details.set_retry_info(Some(delay));
        self
    }

    pub fn build(mut self) -> Status {
        self.details
            .set_error_info(self.reason, ERROR_DOMAIN, self.info);
        Status::with_error_details_and_metadata(
            self.code,
            self.message,
            self.details,
            self.metadata,
        )
    }
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Self {
        r.build()
    }
}

/// INVALID_ARGUMENT naming `field` (message `field: description`).
pub(crate) fn invalid(field: &str, description: impl Display) -> Status {
    let description = description.to_string();
    Refusal::new(
        Code::InvalidArgument,
        reason::INVALID_ARGUMENT,
        format!("{field}: {description}"),
    )
    .meta("field", field)
    .field(field, &description)
    .build()
}

/// INVALID_ARGUMENT from a proto conversion error, its field under `prefix` (may be empty).
pub(crate) fn invalid_convert(prefix: &str, e: &culprit_proto::ConvertError) -> Status {
    let field = if prefix.is_empty() {
        e.field().to_owned()
    } else {
        format!("{prefix}.{}", e.field())
    };
    let description = match e {
        culprit_proto::ConvertError::Missing { .. } => "required but missing".to_owned(),
        culprit_proto::ConvertError::Invalid { reason, .. } => reason.clone(),
    };
    invalid(&field, description)
}

/// UNAVAILABLE: a dependency failed; worth a retry shortly.
pub(crate) fn unavailable(what: &str, e: &dyn std::error::Error) -> Status {
    tracing::warn!(error = %e, "{what} failed");
    Refusal::new(
        Code::Unavailable,
        reason::UNAVAILABLE,
        format!("{what} unavailable: {e}"),
    )
    .meta("dependency", what)
    .retry_after(Duration::from_secs(1))
    .build()
}

/// The stored answer for a detection does not exist (yet).
pub(crate) fn correlation_not_found(message: String, key: &str) -> Status {
    Refusal::new(Code::NotFound, reason::CORRELATION_NOT_FOUND, message)
        .meta("detection_key", key)
        .build()
}

/// FAILED_PRECONDITION with one violation `kind` about `subject`.
pub(crate) fn failed_precondition(
    reason: &str,
    kind: &str,
    subject: &str,
    message: impl Into<String>,
) -> Status {
    let message = message.into();
    Refusal::new(Code::FailedPrecondition, reason, message.clone())
        .precondition(kind, subject, &message)
        .build()
}

/// The `ErrorInfo` of a status, if it carries Culprit's details.
pub fn error_info(s: &Status) -> Option<tonic_types::ErrorInfo> {
    s.get_error_details()
        .error_info()
        .filter(|i| i.domain == ERROR_DOMAIN)
        .cloned()
}
