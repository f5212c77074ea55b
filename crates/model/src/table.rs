//! A hunting result: typed columns and rows, the shape both hunting APIs return and the KQL
//! evaluator produces. It is the interchange between the twin, the client, the hunter and the
//! attribution engine.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::timestamp::{Duration, Timestamp};

/// Kusto scalar types, by the names the hunting APIs put in a result's schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KustoType {
    Boolean,
    DateTime,
    Object,
    Guid,
    Int32,
    Int64,
    Double,
    String,
    TimeSpan,
    Decimal,
}

impl KustoType {
    /// The schema name the hunting APIs use (`Int64`, `DateTime`, ...).
    pub fn api_name(self) -> &'static str {
        match self {
            KustoType::Boolean => "Boolean",
            KustoType::DateTime => "DateTime",
            KustoType::Object => "Object",
            KustoType::Guid => "Guid",
            KustoType::Int32 => "Int32",
            KustoType::Int64 => "Int64",
            KustoType::Double => "Double",
            KustoType::String => "String",
            KustoType::TimeSpan => "TimeSpan",
            KustoType::Decimal => "Decimal",
        }
    }

    /// Accepts the API names and the KQL names (`long`, `datetime`, `dynamic`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "boolean" | "bool" | "system.boolean" => KustoType::Boolean,
            "datetime" | "date" | "system.datetime" => KustoType::DateTime,
            "object" | "dynamic" | "system.object" | "sbyte" => KustoType::Object,
            "guid" | "uniqueid" | "system.guid" => KustoType::Guid,
            "int32" | "int" | "system.int32" => KustoType::Int32,
            "int64" | "long" | "system.int64" => KustoType::Int64,
            "double" | "real" | "system.double" => KustoType::Double,
            "string" | "system.string" => KustoType::String,
            "timespan" | "time" | "system.timespan" => KustoType::TimeSpan,
            "decimal" | "system.decimal" => KustoType::Decimal,
            _ => return None,
        })
    }
}

impl fmt::Display for KustoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

/// One cell. Dynamic values stay as parsed JSON; the APIs send them as JSON text in strings.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    String(String),
    DateTime(Timestamp),
    TimeSpan(Duration),
    Dynamic(serde_json::Value),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Real(r) if r.fract() == 0.0 => Some(*r as i64),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Real(r) => Some(*r),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_datetime(&self) -> Option<Timestamp> {
        match self {
            Value::DateTime(t) => Some(*t),
            Value::String(s) if !s.is_empty() => Timestamp::parse(s).ok(),
            _ => None,
        }
    }

    /// The value as the hunting APIs write it in a JSON result.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Real(r) => serde_json::Number::from_f64(*r)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::DateTime(t) => serde_json::Value::String(t.to_kusto_string()),
            Value::TimeSpan(d) => serde_json::Value::String(format_timespan(*d)),
            Value::Dynamic(v) => serde_json::Value::String(v.to_string()),
        }
    }

    /// Reads a JSON cell of a column of type `ty`, as the APIs and the scenario files write it.
    /// Anything that does not fit the type becomes null rather than an error: a result with one
    /// odd cell is still a result.
    pub fn from_json(ty: KustoType, v: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match (ty, v) {
            (_, J::Null) => Value::Null,
            (KustoType::String | KustoType::Guid, J::String(s)) => Value::String(s.clone()),
            (KustoType::String | KustoType::Guid, other) => Value::String(other.to_string()),
            (KustoType::Int32 | KustoType::Int64, J::Number(n)) => n
                .as_i64()
                .map(Value::Int)
                .or_else(|| n.as_f64().map(|f| Value::Int(f as i64)))
                .unwrap_or(Value::Null),
            (KustoType::Int32 | KustoType::Int64, J::String(s)) => {
                s.trim().parse().map(Value::Int).unwrap_or(Value::Null)
            }
            (KustoType::Double | KustoType::Decimal, J::Number(n)) => {
                n.as_f64().map(Value::Real).unwrap_or(Value::Null)
            }
            (KustoType::Double | KustoType::Decimal, J::String(s)) => {
                s.trim().parse().map(Value::Real).unwrap_or(Value::Null)
            }
            (KustoType::Boolean, J::Bool(b)) => Value::Bool(*b),
            (KustoType::Boolean, J::Number(n)) => Value::Bool(n.as_i64().unwrap_or(0) != 0),
            (KustoType::Boolean, J::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => Value::Null,
            },
            (KustoType::DateTime, J::String(s)) => Timestamp::parse(s)
                .map(Value::DateTime)
                .unwrap_or(Value::Null),
            (KustoType::TimeSpan, J::String(s)) => parse_timespan(s)
                .map(Value::TimeSpan)
                .unwrap_or(Value::Null),
            (KustoType::Object, J::String(s)) => {
                if s.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(s)
                        .map(Value::Dynamic)
                        .unwrap_or_else(|_| Value::Dynamic(J::String(s.clone())))
                }
            }
            (KustoType::Object, other) => Value::Dynamic(other.clone()),
            _ => Value::Null,
        }
    }
}

/// `[-][d.]hh:mm:ss[.fffffff]`, the form Kusto writes timespans in.
pub fn format_timespan(d: Duration) -> String {
    let neg = d.0 < 0;
    let t = d.0.unsigned_abs();
    let ticks_per_sec = 10_000_000u64;
    let frac = t % ticks_per_sec;
    let secs = t / ticks_per_sec;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if days > 0 {
        out.push_str(&format!("{days}."));
    }
    out.push_str(&format!("{h:02}:{m:02}:{s:02}"));
    if frac > 0 {
        out.push_str(&format!(".{frac:07}"));
    }
    out
}

/// Parses what [`format_timespan`] writes.
pub fn parse_timespan(s: &str) -> Option<Duration> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (days, hms) = match body.split_once(':') {
        Some((head, _)) if head.contains('.') => {
            let (d, rest) = body.split_once('.')?;
            (d.parse::<i64>().ok()?, rest)
        }
        _ => (0, body),
    };
    let mut parts = hms.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec_part = parts.next()?;
    let (s_whole, frac) = sec_part.split_once('.').unwrap_or((sec_part, ""));
    let s: i64 = s_whole.parse().ok()?;
    let mut frac_ticks = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(7).collect();
        let padded = format!("{digits:0<7}");
        frac_ticks = padded.parse().ok()?;
    }
    // Checked: a huge day count must be refused, not wrap.
    let total = days
        .checked_mul(24)?
        .checked_add(h)?
        .checked_mul(60)?
        .checked_add(m)?
        .checked_mul(60)?
        .checked_add(s)?
        .checked_mul(10_000_000)?
        .checked_add(frac_ticks)?;
    Some(Duration(if neg { -total } else { total }))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: KustoType,
}

impl Column {
    pub fn new(name: impl Into<String>, ty: KustoType) -> Self {
        Column {
            name: name.into(),
            ty,
        }
    }
}

/// Rows under a schema. Row vectors are as long as `columns`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(columns: Vec<Column>) -> Self {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    /// Position of a column, matched without regard to case: the Graph and MDE APIs differ in
    /// the case of some names.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .or_else(|| {
                self.columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(name))
            })
    }

    /// A name → index map for reading many rows by column name.
    pub fn index(&self) -> ColumnIndex {
        ColumnIndex {
            by_name: self
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.to_ascii_lowercase(), i))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Builds a table from JSON objects (one per row) under a known schema; keys not in the
    /// schema are ignored and missing keys are null.
    pub fn from_json_objects<'a>(
        columns: Vec<Column>,
        objects: impl IntoIterator<Item = &'a serde_json::Map<String, serde_json::Value>>,
    ) -> Self {
        let mut t = Table::new(columns);
        for obj in objects {
            t.push_json_object(obj);
        }
        t
    }

    /// Appends one row from a JSON object keyed by column name (streaming loaders call this
    /// a line at a time).
    pub fn push_json_object(&mut self, obj: &serde_json::Map<String, serde_json::Value>) {
        let row = self
            .columns
            .iter()
            .map(|c| {
                obj.get(&c.name)
                    .map(|v| Value::from_json(c.ty, v))
                    .unwrap_or(Value::Null)
            })
            .collect();
        self.rows.push(row);
    }

    /// Rows as JSON objects keyed by column name, as the hunting APIs' `results` are.
    pub fn to_json_objects(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.rows
            .iter()
            .map(|row| {
                self.columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| (c.name.clone(), v.to_json()))
                    .collect()
            })
            .collect()
    }
}

/// Case-insensitive column lookup, built once per table.
#[derive(Clone, Debug, Default)]
pub struct ColumnIndex {
    by_name: HashMap<String, usize>,
}

impl ColumnIndex {
    pub fn get(&self, name: &str) -> Option<usize> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_round_trip() {
        for s in [
            "00:05:00",
            "1.02:00:00",
            "-00:00:01.5000000",
            "00:00:00.0000001",
        ] {
            let d = parse_timespan(s).unwrap();
            assert_eq!(format_timespan(d), s);
        }
        assert_eq!(parse_timespan("00:01:00"), Some(Duration::from_minutes(1)));
        assert_eq!(parse_timespan("nonsense"), None);
        assert_eq!(parse_timespan("99999999999999.00:00:00"), None);
    }

    #[test]
    fn cells_follow_their_column_type() {
        use serde_json::json;
        assert_eq!(Value::from_json(KustoType::Int64, &json!(5)), Value::Int(5));
        assert_eq!(
            Value::from_json(KustoType::Int64, &json!("7")),
            Value::Int(7)
        );
        assert_eq!(
            Value::from_json(KustoType::Int64, &json!(null)),
            Value::Null
        );
        assert_eq!(
            Value::from_json(KustoType::Object, &json!("{\"a\":1}")),
            Value::Dynamic(json!({"a": 1}))
        );
        assert_eq!(Value::from_json(KustoType::Object, &json!("")), Value::Null);
        assert!(matches!(
            Value::from_json(KustoType::DateTime, &json!("2023-08-16T04:54:30.9870000Z")),
            Value::DateTime(_)
        ));
        assert_eq!(
            Value::from_json(KustoType::DateTime, &json!("garbage")),
            Value::Null
        );
    }

    #[test]
    fn column_lookup_ignores_case() {
        let t = Table::new(vec![Column::new("DeviceId", KustoType::String)]);
        assert_eq!(t.column_index("deviceid"), Some(0));
        assert_eq!(t.index().get("DEVICEID"), Some(0));
        assert_eq!(t.column_index("missing"), None);
    }
}
