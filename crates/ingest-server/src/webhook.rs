//! The detection webhook: `POST /v1/sources/{source}/detections`.
//!
//! The body is the source's format: for `vectra_json` one detection object, an array of them,
//! or a Vectra list page; for the line formats (`vectra_syslog`, `suricata_eve`,
//! `zeek_notice`) newline-delimited records. Answers:
//!
//! | status | when |
//! |---|---|
//! | 202 | every detection of the body is confirmed by the broker (or a duplicate of one) |
//! | 400 | a record could not be read: the body names each record, field and reason; the body was dead-lettered, its good records published |
//! | 401 | no credentials (`Authorization: Bearer …` or `X-Culprit-Signature: sha256=<hex>`) |
//! | 403 | wrong credentials for this source |
//! | 404 | no such source |
//! | 413 | body over `ingest.max_body_bytes` |
//! | 503 + `Retry-After` | broker blocked or unreachable, or the idempotency store failed: send the same body again |

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::publisher::rejection_summary;
use crate::{IngestPublisher, IngestReport, PublishError, Source};

/// Header carrying `sha256=<hex>`: HMAC-SHA256 of the raw body under the source's key.
pub const SIGNATURE_HEADER: &str = "x-culprit-signature";
/// Seconds a sender is asked to wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u64 = 2;

/// A webhook source and the credentials it accepts (either one suffices).
#[derive(Debug, Clone)]
pub struct WebhookSource {
    pub source: Source,
    /// Bearer token; `None`: bearer auth is off for this source.
    pub token: Option<SecretString>,
    /// HMAC-SHA256 key; `None`: signatures are off for this source.
    pub hmac_secret: Option<SecretString>,
}

/// The webhook's sources and limits.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub sources: Vec<WebhookSource>,
    /// Larger bodies are answered 413 without being read further.
    pub max_body_bytes: usize,
}

#[derive(Debug)]
struct AppState {
    publisher: IngestPublisher,
    sources: Vec<WebhookSource>,
    max_body_bytes: usize,
}

/// The webhook's routes.
pub fn router(publisher: IngestPublisher, config: WebhookConfig) -> Router {
    let state = Arc::new(AppState {
        publisher,
        sources: config.sources,
        max_body_bytes: config.max_body_bytes,
    });
    Router::new()
        .route("/v1/sources/{source}/detections", post(receive))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes the requests in
/// flight (each one until its detections are confirmed or failed).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    answer(status, json!({ "error": message.into() }))
}

fn retry_later(message: impl Into<String>) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}

async fn receive(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let Some(ws) = state.sources.iter().find(|s| s.source.name == name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("source `{name}` is not configured"),
        );
    };
    let headers = request.headers().clone();
    let bearer = bearer(&headers);
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    if bearer.is_none() && signature.is_none() {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            format!("credentials required: Authorization: Bearer <token> or {SIGNATURE_HEADER}"),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"culprit-ingest\""),
        );
        return r;
    }
    // A valid token admits the sender before its body is read; a signature needs the body.
    let token_ok = matches!((&ws.token, &bearer), (Some(t), Some(b)) if token_matches(t, b));
    if !token_ok && (signature.is_none() || ws.hmac_secret.is_none()) {
        return forbidden(&name);
    }
    if content_length(&headers).is_some_and(|n| n > state.max_body_bytes) {
        return too_large(state.max_body_bytes);
    }
    let body = match axum::body::to_bytes(request.into_body(), state.max_body_bytes).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => return too_large(state.max_body_bytes),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: unreadable: {e}")),
    };
    if !token_ok {
        let valid = match (&ws.hmac_secret, &signature) {
            (Some(key), Some(sig)) => signature_matches(key, sig, &body),
            _ => false,
        };
        if !valid {
            return forbidden(&name);
        }
    }
    if state.publisher.blocked() {
        return retry_later("RabbitMQ blocks publishing (memory or disk alarm); retry");
    }
    match state.publisher.ingest(&ws.source, &body).await {
        Ok(report) => reply(report),
        Err(e @ PublishError::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => {
            tracing::warn!(source = %name, error = %e, "webhook input not published; sender told to retry");
            retry_later(format!("{e}; retry"))
        }
    }
}

fn forbidden(name: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        format!("credentials are not valid for source `{name}`"),
    )
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body: larger than the {limit} bytes allowed (ingest.max_body_bytes)"),
    )
}

fn reply(report: IngestReport) -> Response {
    let detections: Vec<serde_json::Value> = report
        .published
        .iter()
        .map(|p| json!({"key": p.key.as_str(), "duplicate": p.duplicate, "warnings": p.warnings}))
        .collect();
    if report.rejected.is_empty() {
        return answer(
            StatusCode::ACCEPTED,
            json!({
                "accepted": report.published.len(),
                "skipped": report.skipped,
                "detections": detections,
            }),
        );
    }
    let rejected: Vec<serde_json::Value> = report
        .rejected
        .iter()
        .map(|r| json!({"index": r.index, "reason": r.reason}))
        .collect();
    answer(
        StatusCode::BAD_REQUEST,
        json!({
            "error": format!("{} record(s) rejected and dead-lettered: {}", report.rejected.len(), rejection_summary(&report.rejected)),
            "rejected": rejected,
            "accepted": report.published.len(),
            "skipped": report.skipped,
            "detections": detections,
        }),
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Compares digests, so neither the length nor the content of the token leaks through timing.
fn token_matches(expected: &SecretString, presented: &str) -> bool {
    let a = Sha256::digest(expected.expose_secret().as_bytes());
    let b = Sha256::digest(presented.as_bytes());
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// `sha256=<hex>` over `body`; `verify_slice` compares in constant time.
fn signature_matches(key: &SecretString, header: &str, body: &[u8]) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(sig) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `sha256=<hex>` of `body` under `key`: what a sender puts in [`SIGNATURE_HEADER`].
pub fn sign(key: &[u8], body: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("sha256=");
    // HMAC accepts keys of any length, so this cannot fail.
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) {
        mac.update(body);
        for b in mac.finalize().into_bytes() {
            let _ = write!(out, "{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let key = SecretString::from("k3y");
        let sig = sign(b"k3y", b"{\"id\":1}");
        assert!(signature_matches(&key, &sig, b"{\"id\":1}"));
        assert!(!signature_matches(&key, &sig, b"{\"id\":2}"));
        assert!(!signature_matches(
            &SecretString::from("other"),
            &sig,
            b"{\"id\":1}"
        ));
        assert!(!signature_matches(&key, "sha256=zz", b"{\"id\":1}"));
        assert!(!signature_matches(&key, "md5=00", b"{\"id\":1}"));
    }

    #[test]
    fn tokens_compare_whole() {
        let t = SecretString::from("s3cret-token");
        assert!(token_matches(&t, "s3cret-token"));
        assert!(!token_matches(&t, "s3cret-toke"));
        assert!(!token_matches(&t, ""));
    }
}
