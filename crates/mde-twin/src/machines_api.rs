//! `/api/machines`, `findbyip`, isolate/unisolate and `/api/machineactions` (mde-api.md §3).

use std::collections::HashMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use culprit_model::{Duration, Timestamp};
use serde_json::{Value as Json, json};

use crate::actions::{Action, ActionType, isolation_of};
use crate::config::{ROLE_MACHINE_ISOLATE, ROLE_MACHINE_READ};
use crate::errors::{Api, ApiError};
use crate::hunting::throttled;
use crate::machines::{Filter, Machine};
use crate::server::{ForcedExpiry, Shared, Tenant};

const MACHINES_CONTEXT: &str = "https://api.securitycenter.microsoft.com/api/$metadata#Machines";
const ACTION_CONTEXT: &str =
    "https://api.securitycenter.microsoft.com/api/$metadata#MachineActions/$entity";
const ACTIONS_CONTEXT: &str =
    "https://api.securitycenter.microsoft.com/api/$metadata#MachineActions";
const READ_ROLES: &[&str] = &[ROLE_MACHINE_READ, "Machine.ReadWrite.All"];
const ISOLATE_ROLES: &[&str] = &[ROLE_MACHINE_ISOLATE];
/// `$top` may not exceed this (get-machines.md).
const MAX_TOP: usize = 10_000;

type Expiry = Option<Extension<ForcedExpiry>>;

fn error(st: &Shared, status: StatusCode, code: &str, message: String) -> ApiError {
    ApiError::new(Api::Mde, status, code, message, st.now())
}

/// Token and role, then the machine-API quota.
fn enter(
    st: &Shared,
    headers: &HeaderMap,
    expiry: &Expiry,
    roles: &[&str],
) -> Result<(std::sync::Arc<Tenant>, crate::token::Claims), ApiError> {
    let (tenant, claims) = st.authorize(Api::Mde, headers, expiry.is_some(), roles)?;
    let now = st.now();
    let limits = &st.config.limits;
    let verdict = tenant.live().machines.check(
        now,
        limits.machine_calls_per_minute,
        limits.machine_calls_per_hour,
    );
    if let Some(t) = verdict {
        let message = format!("API calls quota exceeded! maximum allowed {}", t.quota);
        return Err(throttled(Api::Mde, &message, t.retry_after_secs, now, st));
    }
    Ok((tenant, claims))
}

/// The machine entity with the isolation state its completed actions left. `isolationState`
/// is the twin's addition (the real entity has no such field), so tests can see the effect.
fn machine_json(st: &Shared, tenant: &Tenant, m: &Machine) -> Json {
    let mut v = serde_json::to_value(m).unwrap_or(Json::Null);
    let isolation = isolation_of(&tenant.live().actions, &m.id, st.now(), &st.config.actions);
    if let Json::Object(map) = &mut v {
        map.insert(
            "isolationState".into(),
            json!(match isolation.as_deref() {
                Some("Selective") => "SelectivelyIsolated",
                Some(_) => "Isolated",
                None => "NotIsolated",
            }),
        );
    }
    v
}

/// Machines the service still lists: seen in the retention window and not in the future.
fn visible(st: &Shared, m: &Machine) -> bool {
    let now = st.now();
    let retention = now - Duration::from_days(st.config.limits.lookback_days);
    m.last_seen >= retention && m.first_seen <= now
}

/// OData options with any case of the key (PSMDE sends `$Filter` and `Top`).
fn option<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| {
            let k = k.trim_start_matches('$');
            k.eq_ignore_ascii_case(name)
        })
        .map(|(_, v)| v.as_str())
}

fn paging(st: &Shared, q: &HashMap<String, String>) -> Result<(usize, usize), ApiError> {
    let number = |name: &str, default: usize| -> Result<usize, ApiError> {
        match option(q, name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| {
                error(
                    st,
                    StatusCode::BAD_REQUEST,
                    "ODataError",
                    format!("Invalid value '{v}' for ${name}: expected a non-negative integer"),
                )
            }),
        }
    };
    let top = number("top", MAX_TOP)?;
    if top > MAX_TOP {
        return Err(error(
            st,
            StatusCode::BAD_REQUEST,
            "ODataError",
            format!(
                "The limit of '{MAX_TOP}' for Top query has been exceeded. The value from the incoming request is '{top}'."
            ),
        ));
    }
    Ok((number("skip", 0)?, top))
}

fn parse_filter(
    st: &Shared,
    q: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<Option<Filter>, ApiError> {
    option(q, "filter")
        .map(|f| {
            Filter::parse(f, allowed).map_err(|e| {
                error(
                    st,
                    StatusCode::BAD_REQUEST,
                    "ODataError",
                    format!("The query specified in the URI is not valid. {e}"),
                )
            })
        })
        .transpose()
}

type Reply = Result<Response, ApiError>;

/// `value` in an OData collection.
fn collection(context: &str, value: Vec<Json>) -> Response {
    axum::Json(json!({"@odata.context": context, "value": value})).into_response()
}

/// An entity with its `@odata.context`.
fn entity(status: StatusCode, context: &str, mut v: Json) -> Response {
    if let Json::Object(map) = &mut v {
        map.insert("@odata.context".into(), json!(context));
    }
    (status, axum::Json(v)).into_response()
}

pub async fn list(
    State(st): State<Shared>,
    expiry: Expiry,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let (tenant, _) = enter(&st, &headers, &expiry, READ_ROLES)?;
    let filter = parse_filter(&st, &q, crate::machines::MACHINE_FILTERABLE)?;
    let (skip, top) = paging(&st, &q)?;
    let all: Vec<Json> = tenant
        .inventory
        .machines
        .iter()
        .filter(|m| visible(&st, m))
        .map(|m| machine_json(&st, &tenant, m))
        .collect();
    // With no recent machines at all the service answers 404, not an empty list.
    if all.is_empty() {
        let message = "No machines found".to_owned();
        return Err(error(&st, StatusCode::NOT_FOUND, "NotFound", message));
    }
    let value: Vec<Json> = all
        .into_iter()
        .filter(|m| filter.as_ref().is_none_or(|f| f.matches(m)))
        .skip(skip)
        .take(top)
        .collect();
    Ok(collection(MACHINES_CONTEXT, value))
}

pub async fn get_one(
    State(st): State<Shared>,
    expiry: Expiry,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    let (tenant, _) = enter(&st, &headers, &expiry, READ_ROLES)?;
    if let Some(args) = strip_call(&id, "findbyip") {
        return find_by_ip(&st, &tenant, args);
    }
    let m = tenant
        .inventory
        .find(&id)
        .filter(|m| visible(&st, m))
        .ok_or_else(|| machine_not_found(&st, &id))?;
    let context = format!("{MACHINES_CONTEXT}/$entity");
    Ok(entity(
        StatusCode::OK,
        &context,
        machine_json(&st, &tenant, m),
    ))
}

fn machine_not_found(st: &Shared, id: &str) -> ApiError {
    error(
        st,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("Machine {id} was not found"),
    )
}

/// `name(args)` → `args`.
fn strip_call<'a>(segment: &'a str, name: &str) -> Option<&'a str> {
    let rest = segment.get(..name.len())?;
    if !rest.eq_ignore_ascii_case(name) {
        return None;
    }
    segment[name.len()..].strip_prefix('(')?.strip_suffix(')')
}

/// `ip='10.1.2.3',timestamp=2019-09-22T08:44:05Z` → its two values.
fn find_by_ip_args(args: &str) -> Result<(String, String), String> {
    let mut ip = None;
    let mut timestamp = None;
    for part in args.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("expected name=value, got '{part}'"))?;
        let v = v.trim().trim_matches('\'').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "ip" => ip = Some(v),
            "timestamp" => timestamp = Some(v),
            other => return Err(format!("unknown parameter '{other}'")),
        }
    }
    Ok((
        ip.ok_or("the 'ip' parameter is required")?,
        timestamp.ok_or("the 'timestamp' parameter is required")?,
    ))
}

fn find_by_ip(st: &Shared, tenant: &Tenant, args: &str) -> Reply {
    let bad = |code: &str, message: String| error(st, StatusCode::BAD_REQUEST, code, message);
    let (ip, timestamp) =
        find_by_ip_args(args).map_err(|e| bad("InvalidInput", format!("findbyip: {e}")))?;
    if ip.parse::<std::net::IpAddr>().is_err() {
        let message = format!("'{ip}' is not a valid IP address");
        return Err(bad("InvalidIpAddress", message));
    }
    let at = Timestamp::parse(&timestamp).map_err(|_| {
        bad(
            "InvalidInput",
            format!("'{timestamp}' is not a valid timestamp"),
        )
    })?;
    let now = st.now();
    let days = st.config.limits.lookback_days;
    if at < now - Duration::from_days(days) || at > now {
        let message = format!("The timestamp must be within the last {days} days");
        return Err(bad("InvalidInput", message));
    }
    let value: Vec<Json> = tenant
        .inventory
        .find_by_ip(&ip, at)
        .into_iter()
        .map(|m| machine_json(st, tenant, m))
        .collect();
    Ok(collection(MACHINES_CONTEXT, value))
}

pub async fn isolate(
    State(st): State<Shared>,
    expiry: Expiry,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    act(&st, &expiry, &headers, &id, &body, ActionType::Isolate)
}

pub async fn unisolate(
    State(st): State<Shared>,
    expiry: Expiry,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    act(&st, &expiry, &headers, &id, &body, ActionType::Unisolate)
}

/// `Comment` (required) and, for isolation, `IsolationType` (default Full).
fn action_body(
    st: &Shared,
    body: &Bytes,
    kind: ActionType,
) -> Result<(String, Option<String>), ApiError> {
    let bad =
        |code: &str, message: &str| error(st, StatusCode::BAD_REQUEST, code, message.to_owned());
    let Ok(Json::Object(obj)) = serde_json::from_slice::<Json>(body) else {
        return Err(bad(
            "InvalidRequestBody",
            "The request body is not a valid JSON object.",
        ));
    };
    let comment = match obj.get("Comment") {
        Some(Json::String(c)) if !c.trim().is_empty() => c.clone(),
        Some(Json::String(_)) | None | Some(Json::Null) => {
            return Err(bad("MissingRequiredParameter", "Comment is required."));
        }
        Some(_) => return Err(bad("InvalidInput", "Comment must be a string.")),
    };
    if kind == ActionType::Unisolate {
        return Ok((comment, None));
    }
    let scope = match obj.get("IsolationType") {
        None | Some(Json::Null) => "Full".to_owned(),
        Some(Json::String(s)) => match ["Full", "Selective", "UnManagedDevice"]
            .iter()
            .find(|t| t.eq_ignore_ascii_case(s))
        {
            Some(t) => (*t).to_owned(),
            None => {
                return Err(bad(
                    "InvalidInput",
                    &format!(
                        "IsolationType '{s}' is not valid: use Full, Selective or UnManagedDevice."
                    ),
                ));
            }
        },
        Some(_) => return Err(bad("InvalidInput", "IsolationType must be a string.")),
    };
    Ok((comment, Some(scope)))
}

/// Records an isolate or unisolate request unless one is still running on the machine.
fn act(
    st: &Shared,
    expiry: &Expiry,
    headers: &HeaderMap,
    id: &str,
    body: &Bytes,
    kind: ActionType,
) -> Reply {
    let (tenant, claims) = enter(st, headers, expiry, ISOLATE_ROLES)?;
    let machine = tenant
        .inventory
        .find(id)
        .filter(|m| visible(st, m))
        .ok_or_else(|| machine_not_found(st, id))?;
    let (comment, scope) = action_body(st, body, kind)?;
    let now = st.now();
    let timing = &st.config.actions;
    let mut live = tenant.live();
    if live
        .actions
        .iter()
        .any(|a| a.machine_id == machine.id && a.status(now, timing).is_active())
    {
        let message = "Action is already in progress".to_owned();
        return Err(error(
            st,
            StatusCode::BAD_REQUEST,
            "ActiveRequestAlreadyExists",
            message,
        ));
    }
    let action = Action {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        scope,
        requestor: claims.appid.clone(),
        comment,
        machine_id: machine.id.clone(),
        computer_dns_name: machine.computer_dns_name.clone(),
        created: now,
    };
    let v = action.to_json(now, timing);
    live.actions.push(action);
    Ok(entity(StatusCode::CREATED, ACTION_CONTEXT, v))
}

pub async fn get_action(
    State(st): State<Shared>,
    expiry: Expiry,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    let (tenant, _) = enter(&st, &headers, &expiry, READ_ROLES)?;
    let now = st.now();
    let found = tenant
        .live()
        .actions
        .iter()
        .find(|a| a.id.eq_ignore_ascii_case(&id))
        .map(|a| a.to_json(now, &st.config.actions));
    let v = found.ok_or_else(|| {
        error(
            &st,
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("Machine action {id} was not found"),
        )
    })?;
    Ok(entity(StatusCode::OK, ACTION_CONTEXT, v))
}

pub async fn list_actions(
    State(st): State<Shared>,
    expiry: Expiry,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let (tenant, _) = enter(&st, &headers, &expiry, READ_ROLES)?;
    let filter = parse_filter(&st, &q, crate::machines::ACTION_FILTERABLE)?;
    let (skip, top) = paging(&st, &q)?;
    let now = st.now();
    let value: Vec<Json> = tenant
        .live()
        .actions
        .iter()
        .map(|a| a.to_json(now, &st.config.actions))
        .filter(|a| filter.as_ref().is_none_or(|f| f.matches(a)))
        .skip(skip)
        .take(top)
        .collect();
    Ok(collection(ACTIONS_CONTEXT, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findbyip_arguments_parse() {
        assert_eq!(
            strip_call(
                "findbyip(ip='10.1.2.3',timestamp=2019-09-22T08:44:05Z)",
                "findbyip"
            ),
            Some("ip='10.1.2.3',timestamp=2019-09-22T08:44:05Z")
        );
        assert_eq!(strip_call("abc", "findbyip"), None);
        assert_eq!(
            find_by_ip_args("ip='10.1.2.3',timestamp=2019-09-22T08:44:05Z"),
            Ok(("10.1.2.3".into(), "2019-09-22T08:44:05Z".into()))
        );
        assert!(find_by_ip_args("ip='10.1.2.3'").is_err());
        assert!(find_by_ip_args("nonsense").is_err());
    }
}
