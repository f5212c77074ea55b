//! Advanced Hunting: request bodies for both APIs and one parser for both result shapes.

use culprit_model::{Column, Duration, KustoType, Table, Timestamp, Value};
use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::config::HuntingApi;
use crate::error::MdeError;

/// The most rows either API returns; a result this long was cut.
pub const ROW_LIMIT: usize = 100_000;

/// A hunting result, the same whichever API answered.
#[derive(Clone, Debug, PartialEq)]
pub struct HuntResult {
    pub table: Table,
    /// Exactly [`ROW_LIMIT`] rows came back: there may be more.
    pub truncated: bool,
    pub api: HuntingApi,
    /// The MDE API's `Stats` (execution time, CPU), when present.
    pub stats: Option<Json>,
}

/// Graph's `Timespan` parameter. The MDE API has no such parameter: there the query's own
/// `where Timestamp ...` clause is the only bound (up to 30 days back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HuntSpan {
    /// Back from now.
    Last(Duration),
    /// An explicit range.
    Between(Timestamp, Timestamp),
}

impl HuntSpan {
    /// ISO 8601: `P1DT2H`, or `start/end`.
    pub fn to_iso8601(self) -> String {
        match self {
            HuntSpan::Last(d) => iso_duration(d),
            HuntSpan::Between(a, b) => format!("{}/{}", iso_time(a), iso_time(b)),
        }
    }
}

fn iso_time(t: Timestamp) -> String {
    let s = t.to_kusto_string();
    // Whole seconds as the docs' examples write them; fractions kept when there are any.
    match s.strip_suffix(".0000000Z") {
        Some(whole) => format!("{whole}Z"),
        None => s,
    }
}

fn iso_duration(d: Duration) -> String {
    let secs = (d.0 / culprit_model::timestamp::TICKS_PER_SECOND).max(1);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if rem > 0 {
        out.push('T');
        for (n, unit) in [(h, 'H'), (m, 'M'), (s, 'S')] {
            if n > 0 {
                out.push_str(&format!("{n}{unit}"));
            }
        }
    }
    out
}

#[derive(Serialize)]
struct GraphBody<'a> {
    #[serde(rename = "Query")]
    query: &'a str,
    #[serde(rename = "Timespan", skip_serializing_if = "Option::is_none")]
    timespan: Option<String>,
}

#[derive(Serialize)]
struct MdeBody<'a> {
    #[serde(rename = "Query")]
    query: &'a str,
}

/// The request body, always through serde_json so no query text can break the JSON.
pub fn request_body(
    api: HuntingApi,
    query: &str,
    span: Option<HuntSpan>,
) -> Result<Vec<u8>, MdeError> {
    let out = match api {
        HuntingApi::Graph => serde_json::to_vec(&GraphBody {
            query,
            timespan: span.map(HuntSpan::to_iso8601),
        }),
        HuntingApi::Mde => serde_json::to_vec(&MdeBody { query }),
    };
    out.map_err(|e| MdeError::InvalidInput {
        field: "query",
        reason: e.to_string(),
    })
}

fn decode_err(message: impl Into<String>) -> MdeError {
    MdeError::Decode {
        what: "hunting result",
        message: message.into(),
    }
}

fn get_ci<'a>(obj: &'a Map<String, Json>, key: &str) -> Option<&'a Json> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Parses a 200 body of either API: Graph's `schema`/`results`, MDE's `Schema`/`Results`,
/// schema items with `name`/`type` in either case.
pub fn parse_result(body: &[u8], api: HuntingApi) -> Result<HuntResult, MdeError> {
    let root: Json = serde_json::from_slice(body).map_err(|e| decode_err(e.to_string()))?;
    let Json::Object(root) = root else {
        return Err(decode_err("the body is not a JSON object"));
    };
    let columns = parse_schema(get_ci(&root, "schema"))?;
    let results = match get_ci(&root, "results") {
        Some(Json::Array(rows)) => rows.as_slice(),
        Some(Json::Null) | None => &[],
        Some(_) => return Err(decode_err("`results` is not an array")),
    };
    let mut table = Table::new(columns);
    table.rows.reserve(results.len());
    for (i, row) in results.iter().enumerate() {
        let Json::Object(obj) = row else {
            return Err(decode_err(format!("results[{i}] is not an object")));
        };
        let cells = table
            .columns
            .iter()
            .map(|c| get_ci(obj, &c.name).map_or(Value::Null, |v| cell(c.ty, v)))
            .collect();
        table.rows.push(cells);
    }
    let truncated = table.rows.len() >= ROW_LIMIT;
    Ok(HuntResult {
        table,
        truncated,
        api,
        stats: get_ci(&root, "stats").filter(|s| !s.is_null()).cloned(),
    })
}

fn parse_schema(schema: Option<&Json>) -> Result<Vec<Column>, MdeError> {
    let items = match schema {
        Some(Json::Array(items)) => items,
        Some(Json::Null) | None => return Ok(Vec::new()),
        Some(_) => return Err(decode_err("`schema` is not an array")),
    };
    let mut columns = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Json::Object(obj) = item else {
            return Err(decode_err(format!("schema[{i}] is not an object")));
        };
        let Some(Json::String(name)) = get_ci(obj, "name") else {
            return Err(decode_err(format!("schema[{i}] has no string `name`")));
        };
        let type_name = match get_ci(obj, "type") {
            Some(Json::String(t)) => t.as_str(),
            _ => "",
        };
        // An unknown type keeps its cells as text rather than losing the column.
        let ty = KustoType::from_name(type_name).unwrap_or_else(|| {
            tracing::debug!(column = %name, type_name, "unknown Kusto type, read as string");
            KustoType::String
        });
        columns.push(Column::new(name.clone(), ty));
    }
    Ok(columns)
}

/// One cell through `Value::from_json`, after screening the inputs that function cannot take
/// safely (non-ASCII datetimes slice strings by byte; huge timespans overflow).
pub fn cell(ty: KustoType, v: &Json) -> Value {
    match (ty, v) {
        (KustoType::DateTime, Json::String(s)) if !s.is_ascii() || s.len() > 64 => Value::Null,
        (KustoType::TimeSpan, Json::String(s)) if !timespan_in_range(s) => Value::Null,
        _ => Value::from_json(ty, v),
    }
}

/// `[-][d.]hh:mm:ss[.f]` whose total fits in i64 ticks (checked arithmetic).
fn timespan_in_range(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    if !body.is_ascii() || body.len() > 40 {
        return false;
    }
    let (days, hms) = match body.split_once(':') {
        Some((head, _)) if head.contains('.') => match body.split_once('.') {
            Some((d, rest)) => (d.parse::<i64>().ok(), rest),
            None => (None, body),
        },
        _ => (Some(0), body),
    };
    let mut parts = hms.split(':').map(|p| p.split('.').next().unwrap_or(p));
    let mut num = || parts.next().and_then(|p| p.parse::<i64>().ok());
    let (Some(d), Some(h), Some(m), Some(sec)) = (days, num(), num(), num()) else {
        return false;
    };
    d.checked_mul(24)
        .and_then(|x| x.checked_add(h))
        .and_then(|x| x.checked_mul(60))
        .and_then(|x| x.checked_add(m))
        .and_then(|x| x.checked_mul(60))
        .and_then(|x| x.checked_add(sec))
        .and_then(|x| x.checked_mul(10_000_000))
        // Room for the fraction either way and for negation.
        .is_some_and(|x| x.checked_add(10_000_000).is_some() && x.checked_sub(10_000_000).is_some())
}
