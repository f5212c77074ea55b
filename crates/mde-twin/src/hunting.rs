//! Advanced Hunting on both APIs: Graph `runHuntingQuery` and MDE `advancedqueries/run`, with
//! the tenant's quotas, the row cap, the result-size limit, the timeout and the 30-day window.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use culprit_kql::{Database, EvalOptions, KqlError};
use culprit_model::table::format_timespan;
use culprit_model::{Duration, Table, Timestamp};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};
use serde_json::{Value as Json, json};

use crate::clock::to_real;
use crate::config::{ROLE_ADVANCED_QUERY, ROLE_THREAT_HUNTING};
use crate::errors::{Api, ApiError};
use crate::server::{ForcedExpiry, Shared, Tenant};

/// Marks a response whose rows were cut at the row cap. The real APIs return the capped rows
/// with no flag; this header is the twin's, for tests.
pub const TRUNCATED_HEADER: &str = "x-twin-result-truncated";

pub async fn graph_hunting(
    State(st): State<Shared>,
    expiry: Option<axum::Extension<ForcedExpiry>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    hunt(&st, Api::Graph, expiry.is_some(), &headers, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn mde_hunting(
    State(st): State<Shared>,
    expiry: Option<axum::Extension<ForcedExpiry>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    hunt(&st, Api::Mde, expiry.is_some(), &headers, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn hunt(
    st: &Shared,
    api: Api,
    forced_expiry: bool,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let role = match api {
        Api::Graph => ROLE_THREAT_HUNTING,
        Api::Mde => ROLE_ADVANCED_QUERY,
    };
    let (tenant, _) = st.authorize(api, headers, forced_expiry, &[role])?;
    admit(st, api, &tenant)?;
    let now = st.now();
    let request = parse_request(api, headers, body, now)?;
    let outcome = execute(st, api, &tenant, request).await?;
    render(st, api, outcome, now)
}

/// The call-count quotas, then the CPU budget.
fn admit(st: &Shared, api: Api, tenant: &Tenant) -> Result<(), ApiError> {
    let now = st.now();
    let limits = &st.config.limits;
    let mut live = tenant.live();
    if let Some(t) = live
        .hunting
        .check(now, limits.calls_per_minute, limits.calls_per_hour)
    {
        let message = format!("API calls quota exceeded! maximum allowed {}", t.quota);
        return Err(throttled(api, &message, t.retry_after_secs, now, st));
    }
    let budget = limits.cpu_seconds_per_hour;
    if live.cpu.used(now) >= budget {
        let wait = live.cpu.retry_after(now, budget);
        // The real CPU-quota text is not published (mde-api.md, unknowns 2); this names it.
        let message = format!(
            "Tenant's CPU quota exceeded! maximum allowed {budget} seconds of query time per 01:00:00"
        );
        return Err(throttled(api, &message, wait, now, st));
    }
    Ok(())
}

/// A 429 in the API's shape with Retry-After in real seconds (at least one).
pub fn throttled(api: Api, message: &str, twin_secs: f64, now: Timestamp, st: &Shared) -> ApiError {
    let real = to_real(st.clock.as_ref(), twin_secs).as_secs_f64().ceil();
    let secs = if real.is_finite() && real >= 1.0 {
        real as u64
    } else {
        1
    };
    // The MDE API writes the status as the code, as a string (mde-api.md §2.1).
    let code = match api {
        Api::Graph => "TooManyRequests",
        Api::Mde => "429",
    };
    ApiError::new(api, StatusCode::TOO_MANY_REQUESTS, code, message, now).with_retry_after(secs)
}

#[derive(Debug, PartialEq)]
struct HuntRequest {
    query: String,
    /// Graph's `Timespan`, resolved to instants.
    window: Option<(Timestamp, Timestamp)>,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.starts_with("application/json") || v.starts_with("text/json")
        })
}

fn parse_request(
    api: Api,
    headers: &HeaderMap,
    body: &Bytes,
    now: Timestamp,
) -> Result<HuntRequest, ApiError> {
    let bad = |code: &str, message: &str| {
        ApiError::new(api, StatusCode::BAD_REQUEST, code, message.to_owned(), now)
    };
    let parsed = if is_json(headers) {
        serde_json::from_slice::<Json>(body).ok()
    } else {
        None
    };
    let Some(Json::Object(obj)) = parsed else {
        return Err(match api {
            Api::Graph => bad(
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
            ),
            // The service's answer to a body it cannot read (mde-api.md §2.1).
            Api::Mde => bad("InvalidRequestBody", "Missing query."),
        });
    };
    // Graph takes parameter names in any case; the MDE API only as documented.
    let field = |name: &str| match api {
        Api::Graph => obj
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v),
        Api::Mde => obj.get(name),
    };
    let query = match field("Query") {
        Some(Json::String(q)) => q.clone(),
        Some(_) => return Err(bad("InvalidRequestBody", "Query must be a string.")),
        None => {
            return Err(match api {
                Api::Graph => bad("BadRequest", "The Query field is required."),
                Api::Mde => bad("MissingRequiredParameter", "Missing query."),
            });
        }
    };
    let window = match (api, field("Timespan")) {
        (Api::Graph, Some(Json::String(ts))) => Some(
            parse_timespan(ts, now)
                .map_err(|e| bad("BadRequest", &format!("Invalid Timespan '{ts}': {e}")))?,
        ),
        (Api::Graph, Some(Json::Null) | None) | (Api::Mde, _) => None,
        (Api::Graph, Some(_)) => {
            return Err(bad("BadRequest", "Timespan must be an ISO 8601 string."));
        }
    };
    Ok(HuntRequest { query, window })
}

/// Graph's `Timespan`: `start/end`, `duration/end`, `start/duration`, `duration` (back from
/// now) or a single start (up to now).
fn parse_timespan(s: &str, now: Timestamp) -> Result<(Timestamp, Timestamp), String> {
    let instant = |p: &str| Timestamp::parse(p).map_err(|e| e.to_string());
    let (a, b) = match s.split_once('/') {
        Some((a, b)) => (a.trim(), Some(b.trim())),
        None => (s.trim(), None),
    };
    let is_period = |p: &str| p.starts_with('P') || p.starts_with('p');
    match b {
        None if is_period(a) => Ok((now - iso_duration(a)?, now)),
        None => Ok((instant(a)?, now)),
        Some(b) if is_period(a) => {
            let end = instant(b)?;
            Ok((end - iso_duration(a)?, end))
        }
        Some(b) if is_period(b) => {
            let start = instant(a)?;
            Ok((start, start + iso_duration(b)?))
        }
        Some(b) => Ok((instant(a)?, instant(b)?)),
    }
}

/// `PnYnMnWnDTnHnMnS` (years as 365 days, months as 30).
fn iso_duration(s: &str) -> Result<Duration, String> {
    let body = s
        .strip_prefix(['P', 'p'])
        .ok_or_else(|| format!("'{s}' is not an ISO 8601 duration"))?;
    let (date, time) = body.split_once(['T', 't']).unwrap_or((body, ""));
    let mut total = 0f64;
    for (part, units) in [
        (
            date,
            &[
                ('Y', 365.0 * 86400.0),
                ('M', 30.0 * 86400.0),
                ('W', 7.0 * 86400.0),
                ('D', 86400.0),
            ][..],
        ),
        (time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)][..]),
    ] {
        let mut number = String::new();
        for ch in part.chars() {
            if ch.is_ascii_digit() || ch == '.' || ch == ',' {
                number.push(if ch == ',' { '.' } else { ch });
                continue;
            }
            let unit = units
                .iter()
                .find(|(u, _)| u.eq_ignore_ascii_case(&ch))
                .ok_or_else(|| format!("unexpected '{ch}' in duration '{s}'"))?;
            let n: f64 = number
                .parse()
                .map_err(|_| format!("missing number before '{ch}' in duration '{s}'"))?;
            total += n * unit.1;
            number.clear();
        }
        if !number.is_empty() {
            return Err(format!("number without a unit in duration '{s}'"));
        }
    }
    if body.is_empty() || body.eq_ignore_ascii_case("T") {
        return Err(format!("empty duration '{s}'"));
    }
    Ok(Duration((total * 10_000_000.0) as i64))
}

struct Outcome {
    table: Table,
    truncated: bool,
    elapsed: f64,
}

/// The tenant's tables as the query may see them: the lookback window (and Graph's Timespan),
/// ending at the twin's now.
fn view(tenant: &Tenant, from: Timestamp, to: Timestamp) -> Database {
    if tenant.span.is_none_or(|(lo, hi)| lo >= from && hi <= to) {
        return tenant.db.clone();
    }
    let mut db = Database::new();
    for name in tenant.db.table_names() {
        if let Some(t) = tenant.db.table(&name) {
            db.insert_columnar(name, t.filter_time(from, to));
        }
    }
    db
}

async fn execute(
    st: &Shared,
    api: Api,
    tenant: &Arc<Tenant>,
    request: HuntRequest,
) -> Result<Outcome, ApiError> {
    let now = st.now();
    let limits = st.config.limits.clone();
    let lookback = now - Duration::from_days(limits.lookback_days);
    let (from, to) = match request.window {
        Some((a, b)) => (a.max(lookback), b.min(now)),
        None => (lookback, now),
    };
    let job_tenant = tenant.clone();
    let cap = limits.row_cap;
    let job = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let db = view(&job_tenant, from, to);
        let opts = EvalOptions {
            now,
            row_limit: Some(cap.saturating_add(1)),
        };
        let result = culprit_kql::run(&request.query, &db, &opts);
        (result, started.elapsed().as_secs_f64())
    });
    let limit = to_real(st.clock.as_ref(), limits.timeout_secs);
    let bad = |code: &str, message: String| {
        ApiError::new(api, StatusCode::BAD_REQUEST, code, message, now)
    };
    let (result, elapsed) = match tokio::time::timeout(limit, job).await {
        Ok(Ok(done)) => done,
        Ok(Err(join)) => {
            tracing::error!(error = %join, "the KQL engine failed on a query");
            return Err(ApiError::internal(api, now));
        }
        Err(_) => {
            // The engine cannot be interrupted; its thread finishes on its own.
            tenant.live().cpu.charge(now, limits.timeout_secs);
            return Err(bad(
                "BadRequest",
                format!(
                    "Query execution has exceeded the allowed time limit of {} seconds. Optimize your query and try again.",
                    limits.timeout_secs
                ),
            ));
        }
    };
    // Charge at least a millisecond so that a zero budget still bites.
    tenant.live().cpu.charge(now, elapsed.max(0.001));
    let mut table = result.map_err(|e| bad("BadRequest", query_error_message(&e)))?;
    let truncated = table.rows.len() > cap;
    table.rows.truncate(cap);
    Ok(Outcome {
        table,
        truncated,
        elapsed,
    })
}

/// The parser's or evaluator's complaint, with its line and column.
fn query_error_message(e: &KqlError) -> String {
    match e {
        KqlError::Syntax {
            line,
            column,
            message,
        } => format!(
            "Syntax error: Query could not be parsed at line {line}, column {column} ([{line},{column}]): {message}"
        ),
        KqlError::Semantic {
            line,
            column,
            message,
        } => {
            format!("Semantic error: {message} at line {line}, column {column} ([{line},{column}])")
        }
        KqlError::Unsupported { .. } => format!("{e}"),
    }
}

/// Rows as JSON objects in column order, without building a JSON tree per row.
struct Rows<'a>(&'a Table);
struct Row<'a>(&'a Table, usize);

impl Serialize for Rows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.rows.len()))?;
        for i in 0..self.0.rows.len() {
            seq.serialize_element(&Row(self.0, i))?;
        }
        seq.end()
    }
}

impl Serialize for Row<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let cells = &self.0.rows[self.1];
        let mut map = s.serialize_map(Some(cells.len()))?;
        for (c, v) in self.0.columns.iter().zip(cells) {
            map.serialize_entry(&c.name, &v.to_json())?;
        }
        map.end()
    }
}

fn render(st: &Shared, api: Api, o: Outcome, now: Timestamp) -> Result<Response, ApiError> {
    let internal = |_| ApiError::internal(api, now);
    let results = serde_json::to_vec(&Rows(&o.table)).map_err(internal)?;
    if results.len() > st.config.limits.max_result_bytes {
        return Err(ApiError::new(
            api,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Query execution has exceeded the allowed result size. Optimize your query by limiting the number of results and try again",
            now,
        ));
    }
    let (name_key, type_key) = match api {
        Api::Graph => ("name", "type"),
        Api::Mde => ("Name", "Type"),
    };
    let schema: Vec<Json> = o
        .table
        .columns
        .iter()
        .map(|c| json!({ name_key: c.name, type_key: c.ty.api_name() }))
        .collect();
    let schema = serde_json::to_string(&schema).map_err(internal)?;
    let head = match api {
        Api::Graph => format!(
            "{{\"@odata.context\":\"https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults\",\"schema\":{schema},\"results\":"
        ),
        Api::Mde => {
            let stats = stats(&o, results.len());
            format!("{{\"Stats\":{stats},\"Schema\":{schema},\"Results\":")
        }
    };
    let mut body = Vec::with_capacity(head.len() + results.len() + 1);
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(&results);
    body.push(b'}');
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if o.truncated {
        h.insert(TRUNCATED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// `Stats` as the M365D documentation shows it (mde-api.md §2.1).
fn stats(o: &Outcome, size: usize) -> Json {
    let cpu = format_timespan(Duration::from_std(std::time::Duration::from_secs_f64(
        o.elapsed.max(0.0),
    )));
    let zero = json!({"hits": 0, "misses": 0, "total": 0});
    json!({
        "ExecutionTime": o.elapsed,
        "resource_usage": {
            "cache": {"memory": zero, "disk": zero},
            "cpu": {"user": cpu, "kernel": "00:00:00", "total cpu": cpu},
            "memory": {"peak_per_node": size},
        },
        "dataset_statistics": [{"table_row_count": o.table.rows.len(), "table_size": size}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn timespans_in_every_documented_form() {
        let now = t("2024-02-15T08:00:00Z");
        assert_eq!(
            parse_timespan("2024-02-01T08:00:00Z/2024-02-15T08:00:00Z", now),
            Ok((t("2024-02-01T08:00:00Z"), now))
        );
        assert_eq!(
            parse_timespan("P14D/2024-02-15T08:00:00Z", now),
            Ok((t("2024-02-01T08:00:00Z"), now))
        );
        assert_eq!(
            parse_timespan("2024-02-01T08:00:00Z/P1DT2H", now),
            Ok((t("2024-02-01T08:00:00Z"), t("2024-02-02T10:00:00Z")))
        );
        assert_eq!(
            parse_timespan("PT30M", now),
            Ok((t("2024-02-15T07:30:00Z"), now))
        );
        assert_eq!(
            parse_timespan("2024-02-15T07:00:00Z", now),
            Ok((t("2024-02-15T07:00:00Z"), now))
        );
        assert!(parse_timespan("P", now).is_err());
        assert!(parse_timespan("P3X", now).is_err());
        assert!(parse_timespan("yesterday", now).is_err());
    }

    #[test]
    fn bodies_follow_each_api_conventions() {
        let now = t("2024-02-15T08:00:00Z");
        let mut json_headers = HeaderMap::new();
        json_headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = Bytes::from_static(br#"{"query":"T","timespan":"P1D"}"#);
        let graph = parse_request(Api::Graph, &json_headers, &body, now).unwrap();
        assert_eq!(graph.query, "T");
        assert!(graph.window.is_some());
        let mde = parse_request(Api::Mde, &json_headers, &body, now).unwrap_err();
        assert_eq!(mde.code, "MissingRequiredParameter");
        let text = parse_request(Api::Mde, &HeaderMap::new(), &body, now).unwrap_err();
        assert_eq!(text.code, "InvalidRequestBody");
    }
}
