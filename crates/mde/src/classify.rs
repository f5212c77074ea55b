//! Turns a non-success HTTP answer (status, `Retry-After`, body bytes) into an [`MdeError`].
//! Pure and total: any byte sequence gives an error value, never a panic.

use std::time::Duration;

use culprit_model::Timestamp;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::config::HuntingApi;
use crate::error::{MdeError, Quota};

/// What was being asked, so a 403 can name the missing role and a 404 the missing thing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Token { tenant: String },
    Hunt(HuntingApi),
    Machine { what: String },
    Isolate { machine_id: String },
    Release { machine_id: String },
    Action { action_id: String },
}

impl Call {
    /// The application role this call needs.
    pub fn role(&self) -> Option<&'static str> {
        match self {
            Call::Token { .. } => None,
            Call::Hunt(HuntingApi::Graph) => Some("ThreatHunting.Read.All"),
            Call::Hunt(HuntingApi::Mde) => Some("AdvancedQuery.Read.All"),
            Call::Machine { .. } | Call::Action { .. } => Some("Machine.Read.All"),
            Call::Isolate { .. } | Call::Release { .. } => Some("Machine.Isolate"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Call::Token { tenant } => format!("token endpoint for tenant {tenant}"),
            Call::Hunt(api) => format!("{} hunting endpoint", api.as_str()),
            Call::Machine { what } => what.clone(),
            Call::Isolate { machine_id } | Call::Release { machine_id } => {
                format!("machine {machine_id}")
            }
            Call::Action { action_id } => format!("machine action {action_id}"),
        }
    }
}

const KNOWN_ROLES: [&str; 6] = [
    "ThreatHunting.Read.All",
    "AdvancedQuery.Read.All",
    "Machine.ReadWrite.All",
    "Machine.Read.All",
    "Machine.Isolate",
    "AdvancedHunting.Read.All",
];

/// The parts of an error body we use: a code and a readable message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    /// OAuth `error_codes` (AADSTS numbers).
    pub aadsts: Vec<i64>,
}

/// Reads the MDE/Graph `{"error":{"code","message"}}` shape, the OAuth
/// `{"error","error_description"}` shape, or describes a non-JSON body without echoing it.
pub fn error_body(body: &[u8]) -> ErrorBody {
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return ErrorBody {
            message: describe_non_json(body),
            ..ErrorBody::default()
        };
    };
    let field = |o: &serde_json::Map<String, serde_json::Value>, k: &str| {
        o.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    match field(&obj, "error") {
        Some(serde_json::Value::Object(inner)) => ErrorBody {
            code: sanitize(&text(field(&inner, "code"))),
            message: sanitize(&text(field(&inner, "message"))),
            aadsts: Vec::new(),
        },
        Some(serde_json::Value::String(code)) => ErrorBody {
            code: sanitize(&code),
            message: sanitize(first_line(&text(field(&obj, "error_description")))),
            aadsts: match field(&obj, "error_codes") {
                Some(serde_json::Value::Array(a)) => {
                    a.iter().filter_map(serde_json::Value::as_i64).collect()
                }
                _ => Vec::new(),
            },
        },
        _ => ErrorBody {
            code: sanitize(&text(field(&obj, "code"))),
            message: sanitize(&text(field(&obj, "message"))),
            aadsts: Vec::new(),
        },
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// Control characters out, at most 400 characters: server text goes into logs and panels.
pub(crate) fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect();
    if s.chars().count() > 400 {
        out.push('…');
    }
    out.trim().to_owned()
}

fn describe_non_json(body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        return "empty body".to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    // An HTML error page: its title says enough; the rest is markup.
    let title = lower.find("<title>").and_then(|start| {
        let from = start + "<title>".len();
        lower[from..]
            .find("</title>")
            .and_then(|len| text.get(from..from + len))
    });
    match title {
        Some(t) => format!("HTML page ({} bytes): {}", body.len(), sanitize(t)),
        None if lower.contains("<html") => format!("HTML page ({} bytes)", body.len()),
        None => format!("non-JSON body ({} bytes): {}", body.len(), sanitize(&text)),
    }
}

/// `Retry-After` as seconds or an HTTP date (relative to `now`), at most one day.
pub fn parse_retry_after(value: Option<&str>, now: Timestamp) -> Option<Duration> {
    let v = value?.trim();
    let secs = match v.parse::<u64>() {
        Ok(s) => s,
        Err(_) => {
            let when = OffsetDateTime::parse(v, &Rfc2822).ok()?;
            let delta = Timestamp::from_offset(when).unix_seconds() - now.unix_seconds();
            u64::try_from(delta.max(0)).ok()?
        }
    };
    Some(Duration::from_secs(secs.min(86_400)))
}

/// Which quota a throttling message names.
pub fn quota_of(message: &str) -> Quota {
    let m = message.to_ascii_lowercase();
    if m.contains("per 00:01:00") || m.contains("per minute") || m.contains("/min") {
        Quota::PerMinute
    } else if m.contains("per 01:00:00") || m.contains("per hour") || m.contains("/h") {
        Quota::PerHour
    } else if m.contains("cpu") || m.contains("resource") || m.contains("running time") {
        Quota::Cpu
    } else {
        Quota::Unknown
    }
}

/// Classifies a non-2xx answer.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    call: &Call,
    now: Timestamp,
) -> MdeError {
    let eb = error_body(body);
    if status == 429 || eb.code == "TooManyRequests" || eb.code == "429" {
        return MdeError::Throttled {
            quota: quota_of(&eb.message),
            retry_after: parse_retry_after(retry_after, now),
        };
    }
    if let Call::Token { tenant } = call
        && (400..500).contains(&status)
    {
        return classify_token(tenant, eb);
    }
    match status {
        401 => MdeError::Unauthorized {
            code: eb.code,
            message: eb.message,
            hint: "check that the application has admin consent for this API and that the \
                   `cloud` setting matches the tenant (the token audience must match the host)",
        },
        403 => MdeError::Forbidden {
            missing_role: named_role(&eb.message)
                .or_else(|| {
                    (eb.code != "DisabledFeature")
                        .then(|| call.role())
                        .flatten()
                })
                .map(str::to_owned),
            message: eb.message,
        },
        404 => MdeError::NotFound {
            what: call.describe(),
            message: eb.message,
        },
        408 | 500..=599 => MdeError::Service {
            status,
            message: if eb.message.is_empty() {
                eb.code
            } else {
                eb.message
            },
        },
        _ => classify_client_error(status, eb, call),
    }
}

fn named_role(message: &str) -> Option<&'static str> {
    KNOWN_ROLES.into_iter().find(|r| {
        message
            .to_ascii_lowercase()
            .contains(&r.to_ascii_lowercase())
    })
}

fn classify_client_error(status: u16, eb: ErrorBody, call: &Call) -> MdeError {
    let lower = eb.message.to_ascii_lowercase();
    let machine_id = match call {
        Call::Isolate { machine_id } | Call::Release { machine_id } => Some(machine_id.clone()),
        _ => None,
    };
    if lower.contains("exceeded the allowed limits") {
        return MdeError::TooExpensive {
            message: eb.message,
        };
    }
    if lower.contains("allowed result size") || lower.contains("result size") {
        return MdeError::ResultTooLarge {
            message: eb.message,
        };
    }
    if let Some(machine_id) = machine_id {
        if eb.code.eq_ignore_ascii_case("ActiveRequestAlreadyExists")
            || lower.contains("activerequestalreadyexists")
        {
            return MdeError::ActiveRequestAlreadyExists {
                machine_id,
                message: eb.message,
                pending_action_id: None,
            };
        }
        if eb.code.eq_ignore_ascii_case("AlreadyIsolated") || lower.contains("already isolated") {
            return MdeError::AlreadyIsolated {
                machine_id,
                message: eb.message,
            };
        }
    }
    match call {
        Call::Hunt(_) if status == 400 => MdeError::BadQuery {
            code: eb.code,
            message: eb.message,
        },
        _ => MdeError::BadRequest {
            status,
            code: eb.code,
            message: eb.message,
        },
    }
}

fn classify_token(tenant: &str, eb: ErrorBody) -> MdeError {
    let message = if eb.message.is_empty() {
        eb.code.clone()
    } else {
        eb.message.clone()
    };
    let lower = message.to_ascii_lowercase();
    let has = |n: i64, s: &str| eb.aadsts.contains(&n) || message.contains(s);
    // The codes first; the wording only for `invalid_request`, whose AADSTS number is
    // unverified.
    let unknown_tenant = has(90002, "AADSTS90002")
        || has(900023, "AADSTS900023")
        || eb.code == "invalid_tenant"
        || (eb.code == "invalid_request"
            && lower.contains("tenant")
            && (lower.contains("not found") || lower.contains("does not exist")));
    match eb.code.as_str() {
        "invalid_client" => MdeError::InvalidClient { message },
        "unauthorized_client" => MdeError::UnauthorizedClient { message },
        _ if has(700016, "AADSTS700016") => MdeError::UnauthorizedClient { message },
        _ if unknown_tenant => MdeError::UnknownTenant {
            tenant: tenant.to_owned(),
            message,
        },
        "invalid_resource" => MdeError::TokenRejected {
            error: eb.code,
            message,
            hint: "the API is not provisioned or consented in this tenant, or the `cloud` setting is wrong",
        },
        "invalid_scope" => MdeError::TokenRejected {
            error: eb.code,
            message,
            hint: "the scope does not fit this cloud; check the `cloud` setting",
        },
        _ => MdeError::TokenRejected {
            error: eb.code,
            message,
            hint: "check the tenant id, client id and secret",
        },
    }
}
