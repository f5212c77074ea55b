//! Error bodies in the shapes the real services send (mde-api.md §1.4, §2.1–2.3).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use culprit_model::Timestamp;
use serde_json::json;
use uuid::Uuid;

/// Which service's conventions a response follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// Microsoft Graph (`/v1.0/...`): `{"error":{"code","message","innerError":{..}}}`.
    Graph,
    /// The MDE API (`/api/...`): `{"error":{"code","message","target"}}`.
    Mde,
}

/// An API error, rendered in the service's own shape.
#[derive(Debug)]
pub struct ApiError {
    pub api: Api,
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub now: Timestamp,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(
        api: Api,
        status: StatusCode,
        code: &str,
        message: impl Into<String>,
        now: Timestamp,
    ) -> Self {
        ApiError {
            api,
            status,
            code: code.to_owned(),
            message: message.into(),
            now,
            retry_after: None,
        }
    }

    /// A 500 with no message, as the MDE API sends it (common-errors.md).
    pub fn internal(api: Api, now: Timestamp) -> Self {
        ApiError::new(
            api,
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "",
            now,
        )
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = Uuid::new_v4().to_string();
        let body = match self.api {
            Api::Graph => json!({"error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": graph_date(self.now),
                    "request-id": request_id,
                    "client-request-id": request_id,
                }
            }}),
            Api::Mde => json!({"error": {
                "code": self.code,
                "message": self.message,
                "target": request_id,
            }}),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        resp
    }
}

/// Graph's `innerError.date`: seconds precision, no fraction.
fn graph_date(now: Timestamp) -> String {
    let s = now.to_kusto_string();
    format!("{}Z", &s[..19])
}

/// An Entra ID token-endpoint error (`invalid_client`, `AADSTSnnnn: ...`).
#[derive(Debug)]
pub struct AadError {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub description: String,
    pub now: Timestamp,
}

impl AadError {
    pub fn new(error: &'static str, code: u32, description: String, now: Timestamp) -> Self {
        // Observed: invalid_client comes back 401, the rest 400 (mde-api.md §1.4).
        let status = if error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        AadError {
            status,
            error,
            code,
            description,
            now,
        }
    }
}

impl IntoResponse for AadError {
    fn into_response(self) -> Response {
        let trace = Uuid::new_v4().to_string();
        let correlation = Uuid::new_v4().to_string();
        let stamp = self.now.to_kusto_string();
        let stamp_space = format!("{} {}Z", &stamp[..10], &stamp[11..19]);
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {stamp_space}",
            self.code, self.description
        );
        let body = json!({
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": stamp_space,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        (self.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_dates_have_no_fraction() {
        let t = Timestamp::parse("2023-08-16T04:54:30.9870000Z").unwrap_or_default();
        assert_eq!(graph_date(t), "2023-08-16T04:54:30Z");
    }
}
