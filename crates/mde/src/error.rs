//! Every way a call to Microsoft can fail, classified so callers act on a variant, not a string.

use std::time::Duration;

use serde::Serialize;

/// Which quota a 429 names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quota {
    /// Calls per minute (45 for hunting, 100 for machine APIs).
    PerMinute,
    /// Calls per hour (1,500).
    PerHour,
    /// Query CPU / running-time allocation.
    Cpu,
    /// The body did not say (HTML, empty, or an unknown message).
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum MdeError {
    #[error("throttled by Microsoft ({quota:?} quota){}", fmt_retry(*.retry_after))]
    Throttled {
        quota: Quota,
        retry_after: Option<Duration>,
    },
    #[error("hunting query too expensive (it exceeded the allowed limits): {message}")]
    TooExpensive { message: String },
    #[error("hunting result too large: {message}")]
    ResultTooLarge { message: String },
    #[error("hunting query rejected ({code}): {message}")]
    BadQuery { code: String, message: String },
    #[error("request rejected with HTTP {status} ({code}): {message}")]
    BadRequest {
        status: u16,
        code: String,
        message: String,
    },
    #[error("access token rejected (HTTP 401, {code}): {message}. {hint}")]
    Unauthorized {
        code: String,
        message: String,
        hint: &'static str,
    },
    #[error("forbidden: {}{message}", fmt_role(.missing_role.as_deref()))]
    Forbidden {
        missing_role: Option<String>,
        message: String,
    },
    #[error("not found: {what}: {message}")]
    NotFound { what: String, message: String },
    #[error("machine {machine_id} already has a pending action of this kind{}: {message}",
        .pending_action_id.as_ref().map(|a| format!(" ({a})")).unwrap_or_default())]
    ActiveRequestAlreadyExists {
        machine_id: String,
        message: String,
        /// The pending action, when the machine's action list shows it.
        pending_action_id: Option<String>,
    },
    #[error("machine {machine_id} is already isolated: {message}")]
    AlreadyIsolated { machine_id: String, message: String },
    #[error("{what} matched {count} machines ({}), expected exactly one", .ids.join(", "))]
    Ambiguous {
        what: String,
        count: usize,
        ids: Vec<String>,
    },
    #[error(
        "Entra ID rejected the client credentials ({message}): check the client id and create a new client secret if it is wrong or expired"
    )]
    InvalidClient { message: String },
    #[error(
        "Entra ID does not allow this application here ({message}): check the client id, that the app registration exists in this tenant and cloud, and that an admin consented to it"
    )]
    UnauthorizedClient { message: String },
    #[error(
        "Entra ID does not know tenant `{tenant}` ({message}): check the tenant id and that the cloud setting matches the tenant's cloud"
    )]
    UnknownTenant { tenant: String, message: String },
    #[error("Entra ID refused the token request ({error}): {message}. {hint}")]
    TokenRejected {
        error: String,
        message: String,
        hint: &'static str,
    },
    #[error("Microsoft service error (HTTP {status}): {message}")]
    Service { status: u16, message: String },
    #[error("the request timed out")]
    Timeout,
    #[error("machine action {action_id} still {status} at the deadline")]
    ActionDeadline { action_id: String, status: String },
    #[error("transport error: {message}")]
    Transport { message: String },
    #[error("certificate not trusted: set tls.ca_file or fix the proxy's CA ({host}: {detail})")]
    UntrustedCertificate {
        /// The host whose certificate (or the proxy's stand-in for it) was rejected.
        host: String,
        /// rustls's reason, e.g. `UnknownIssuer` or `NotValidForName`.
        detail: String,
    },
    #[error("cannot decode the response of {what}: {message}")]
    Decode { what: &'static str, message: String },
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    #[error("invalid configuration `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
}

fn fmt_retry(d: Option<Duration>) -> String {
    d.map(|d| format!(", retry after {} s", d.as_secs()))
        .unwrap_or_default()
}

fn fmt_role(role: Option<&str>) -> String {
    role.map(|r| format!("the application lacks the `{r}` role (grant it and consent): "))
        .unwrap_or_default()
}

impl MdeError {
    /// Worth retrying later (after `Retry-After` for throttling).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            MdeError::Throttled { .. }
                | MdeError::Service { .. }
                | MdeError::Timeout
                | MdeError::Transport { .. }
        )
    }

    /// A short stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            MdeError::Throttled { .. } => "throttled",
            MdeError::TooExpensive { .. } => "too_expensive",
            MdeError::ResultTooLarge { .. } => "result_too_large",
            MdeError::BadQuery { .. } => "bad_query",
            MdeError::BadRequest { .. } => "bad_request",
            MdeError::Unauthorized { .. } => "unauthorized",
            MdeError::Forbidden { .. } => "forbidden",
            MdeError::NotFound { .. } => "not_found",
            MdeError::ActiveRequestAlreadyExists { .. } => "active_request_already_exists",
            MdeError::AlreadyIsolated { .. } => "already_isolated",
            MdeError::Ambiguous { .. } => "ambiguous",
            MdeError::InvalidClient { .. } => "invalid_client",
            MdeError::UnauthorizedClient { .. } => "unauthorized_client",
            MdeError::UnknownTenant { .. } => "unknown_tenant",
            MdeError::TokenRejected { .. } => "token_rejected",
            MdeError::Service { .. } => "service",
            MdeError::Timeout => "timeout",
            MdeError::ActionDeadline { .. } => "action_deadline",
            MdeError::Transport { .. } => "transport",
            MdeError::UntrustedCertificate { .. } => "untrusted_certificate",
            MdeError::Decode { .. } => "decode",
            MdeError::InvalidInput { .. } => "invalid_input",
            MdeError::InvalidConfig { .. } => "invalid_config",
        }
    }

    /// For throttling: how long to wait, if the server said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MdeError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            return MdeError::Timeout;
        }
        if let Some(detail) = rejected_certificate(e) {
            let host = e
                .url()
                .and_then(|u| u.host_str())
                .unwrap_or("the server")
                .to_owned();
            return MdeError::UntrustedCertificate { host, detail };
        }
        // The chain names the cause (connection refused, reset, TLS); URLs carry no secrets.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        MdeError::Transport { message }
    }
}

/// rustls's reason when the error chain holds a rejected server certificate. rustls's error
/// travels inside `io::Error`s (sometimes nested), whose `source()` skips it, so each link is
/// unwrapped too.
fn rejected_certificate(e: &reqwest::Error) -> Option<String> {
    let mut link: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = link {
        let mut candidate = Some(err);
        while let Some(c) = candidate {
            if let Some(rustls::Error::InvalidCertificate(cert)) = c.downcast_ref::<rustls::Error>()
            {
                return Some(format!("{cert:?}"));
            }
            candidate = c
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|i| i as &(dyn std::error::Error + 'static));
        }
        link = err.source();
    }
    None
}
