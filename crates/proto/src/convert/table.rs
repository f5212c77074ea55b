//! Table ⇄ `culprit.v1.Table`, and the telemetry bundle the hunter hands the correlator.

use culprit_model::{
    Column, Detection, DetectionKey, Duration, KustoType, Table, Telemetry, Timestamp, Value,
};

use super::{ConvertError, each, known_enum, nested, opt_time, opt_time_to_proto};
use crate::v1 as pb;
use crate::v1::value::Kind;

fn kusto_type_to_proto(t: KustoType) -> pb::KustoType {
    match t {
        KustoType::Boolean => pb::KustoType::Boolean,
        KustoType::DateTime => pb::KustoType::DateTime,
        KustoType::Object => pb::KustoType::Object,
        KustoType::Guid => pb::KustoType::Guid,
        KustoType::Int32 => pb::KustoType::Int32,
        KustoType::Int64 => pb::KustoType::Int64,
        KustoType::Double => pb::KustoType::Double,
        KustoType::String => pb::KustoType::String,
        KustoType::TimeSpan => pb::KustoType::TimeSpan,
        KustoType::Decimal => pb::KustoType::Decimal,
    }
}

fn kusto_type_from_proto(field: &str, v: i32) -> Result<KustoType, ConvertError> {
    Ok(match known_enum(field, v)? {
        pb::KustoType::Unspecified => return Err(ConvertError::missing(field)),
        pb::KustoType::Boolean => KustoType::Boolean,
        pb::KustoType::DateTime => KustoType::DateTime,
        pb::KustoType::Object => KustoType::Object,
        pb::KustoType::Guid => KustoType::Guid,
        pb::KustoType::Int32 => KustoType::Int32,
        pb::KustoType::Int64 => KustoType::Int64,
        pb::KustoType::Double => KustoType::Double,
        pb::KustoType::String => KustoType::String,
        pb::KustoType::TimeSpan => KustoType::TimeSpan,
        pb::KustoType::Decimal => KustoType::Decimal,
    })
}

fn value_to_proto(v: &Value) -> pb::Value {
    let kind = match v {
        Value::Null => None,
        Value::Bool(b) => Some(Kind::BoolValue(*b)),
        Value::Int(i) => Some(Kind::IntValue(*i)),
        Value::Real(r) => Some(Kind::RealValue(*r)),
        Value::String(s) => Some(Kind::StringValue(s.clone())),
        Value::DateTime(t) => Some(Kind::DatetimeTicks(t.0)),
        Value::TimeSpan(d) => Some(Kind::TimespanTicks(d.0)),
        Value::Dynamic(j) => Some(Kind::DynamicJson(j.to_string())),
    };
    pb::Value { kind }
}

fn value_from_proto(v: pb::Value) -> Result<Value, ConvertError> {
    Ok(match v.kind {
        None => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::IntValue(i)) => Value::Int(i),
        Some(Kind::RealValue(r)) => Value::Real(r),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::DatetimeTicks(t)) => Value::DateTime(Timestamp(t)),
        Some(Kind::TimespanTicks(d)) => Value::TimeSpan(Duration(d)),
        Some(Kind::DynamicJson(text)) => serde_json::from_str(&text)
            .map(Value::Dynamic)
            .map_err(|e| ConvertError::invalid("dynamic_json", format!("not JSON: {e}")))?,
    })
}

/// A model table under its hunting-table name (the model's table carries no name).
pub fn table_to_proto(name: &str, t: &Table) -> pb::Table {
    pb::Table {
        name: name.to_owned(),
        columns: t
            .columns
            .iter()
            .map(|c| pb::Column {
                name: c.name.clone(),
                r#type: kusto_type_to_proto(c.ty).into(),
            })
            .collect(),
        rows: t
            .rows
            .iter()
            .map(|r| pb::Row {
                values: r.iter().map(value_to_proto).collect(),
            })
            .collect(),
    }
}

fn column_from_proto(c: pb::Column) -> Result<Column, ConvertError> {
    if c.name.is_empty() {
        return Err(ConvertError::missing("name"));
    }
    Ok(Column::new(
        c.name,
        kusto_type_from_proto("type", c.r#type)?,
    ))
}

/// Every row must have one value per column: the model indexes rows by column position.
fn row_from_proto(width: usize, r: pb::Row) -> Result<Vec<Value>, ConvertError> {
    if r.values.len() != width {
        return Err(ConvertError::invalid(
            "values",
            format!("{} values for {width} columns", r.values.len()),
        ));
    }
    each("values", r.values, value_from_proto)
}

/// The table's name is dropped (the model's table carries none); read it from the message.
impl TryFrom<pb::Table> for Table {
    type Error = ConvertError;

    fn try_from(t: pb::Table) -> Result<Self, Self::Error> {
        let columns = each("columns", t.columns, column_from_proto)?;
        let width = columns.len();
        let rows = each("rows", t.rows, |r| row_from_proto(width, r))?;
        Ok(Table { columns, rows })
    }
}

/// The telemetry fetched for one detection, as the domain sees `culprit.v1.TelemetryBundle`.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryBundle {
    pub detection_key: DetectionKey,
    /// The detection itself, so the correlator needs nothing else.
    pub detection: Option<Detection>,
    /// Hunting tables by name (`DeviceNetworkEvents`, ...).
    pub tables: Vec<(String, Table)>,
    pub fetched_at: Option<Timestamp>,
    /// 0 for the first hunt; 1, 2, ... for re-queries.
    pub requery: u32,
    /// Hunting failed for good: (kind, message).
    pub hunt_failure: Option<(String, String)>,
    /// The service's row cap cut the answer.
    pub truncated: bool,
}

impl TelemetryBundle {
    /// The typed rows the attribution engine reads, and how many rows could not be placed.
    pub fn telemetry(&self) -> (Telemetry, usize) {
        let mut telemetry = Telemetry::default();
        let skipped = self
            .tables
            .iter()
            .map(|(name, table)| telemetry.add_table(name, table))
            .sum();
        (telemetry, skipped)
    }
}

impl From<&TelemetryBundle> for pb::TelemetryBundle {
    fn from(b: &TelemetryBundle) -> Self {
        pb::TelemetryBundle {
            detection_key: b.detection_key.0.clone(),
            detection: b.detection.as_ref().map(pb::Detection::from),
            tables: b
                .tables
                .iter()
                .map(|(name, t)| table_to_proto(name, t))
                .collect(),
            fetched_at: opt_time_to_proto(b.fetched_at),
            requery: b.requery,
            hunt_failure: b
                .hunt_failure
                .as_ref()
                .map(|(kind, message)| pb::HuntFailure {
                    kind: kind.clone(),
                    message: message.clone(),
                }),
            truncated: b.truncated,
        }
    }
}

fn named_table_from_proto(t: pb::Table) -> Result<(String, Table), ConvertError> {
    if t.name.is_empty() {
        return Err(ConvertError::missing("name"));
    }
    let name = t.name.clone();
    Ok((name, Table::try_from(t)?))
}

impl TryFrom<pb::TelemetryBundle> for TelemetryBundle {
    type Error = ConvertError;

    fn try_from(b: pb::TelemetryBundle) -> Result<Self, Self::Error> {
        if b.detection_key.is_empty() {
            return Err(ConvertError::missing("detection_key"));
        }
        let detection_key = DetectionKey(b.detection_key);
        let detection = nested("detection", b.detection, Detection::try_from)?;
        if let Some(d) = &detection {
            let own = d.key();
            if own != detection_key {
                return Err(ConvertError::invalid(
                    "detection_key",
                    format!("{detection_key} is not the detection's key {own}"),
                ));
            }
        }
        Ok(TelemetryBundle {
            detection_key,
            detection,
            tables: each("tables", b.tables, named_table_from_proto)?,
            fetched_at: opt_time("fetched_at", b.fetched_at)?,
            requery: b.requery,
            hunt_failure: b.hunt_failure.map(|f| (f.kind, f.message)),
            truncated: b.truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::detection::sample_detection;
    use prost::Message;
    use serde_json::json;

    const ALL_TYPES: [KustoType; 10] = [
        KustoType::Boolean,
        KustoType::DateTime,
        KustoType::Object,
        KustoType::Guid,
        KustoType::Int32,
        KustoType::Int64,
        KustoType::Double,
        KustoType::String,
        KustoType::TimeSpan,
        KustoType::Decimal,
    ];

    /// One column per Kusto type and a row holding every kind of value, plus a row of nulls.
    fn sample_table() -> Table {
        let columns = ALL_TYPES
            .iter()
            .map(|t| Column::new(format!("c_{t}"), *t))
            .collect();
        let mut t = Table::new(columns);
        t.rows.push(vec![
            Value::Bool(true),
            Value::DateTime(Timestamp(16_921_664_709_870_001)),
            Value::Dynamic(json!([{"IPAddress": "10.0.2.15"}, 1.5, null, "x"])),
            Value::String("2f1b7d1e-0000-4000-8000-000000000000".into()),
            Value::Int(-7),
            Value::Int(i64::MIN),
            Value::Real(-0.125),
            Value::String("ünïcode \"quoted\"".into()),
            Value::TimeSpan(Duration(-15_000_000)),
            Value::Real(1e300),
        ]);
        t.rows.push(vec![Value::Null; ALL_TYPES.len()]);
        t
    }

    #[test]
    fn tables_round_trip_through_the_wire() {
        let t = sample_table();
        let bytes = table_to_proto("DeviceEvents", &t).encode_to_vec();
        let p = pb::Table::decode(bytes.as_slice()).unwrap();
        assert_eq!(p.name, "DeviceEvents");
        assert_eq!(Table::try_from(p).unwrap(), t);
    }

    #[test]
    fn bundles_round_trip_and_yield_telemetry() {
        let detection = sample_detection();
        let cols = vec![
            Column::new("Timestamp", KustoType::DateTime),
            Column::new("DeviceId", KustoType::String),
            Column::new("InitiatingProcessId", KustoType::Int64),
        ];
        let mut network = Table::new(cols);
        network.rows.push(vec![
            Value::DateTime(detection.window.start),
            Value::String("d1".into()),
            Value::Int(1988),
        ]);
        let bundle = TelemetryBundle {
            detection_key: detection.key(),
            detection: Some(detection),
            tables: vec![
                ("DeviceNetworkEvents".into(), network),
                ("Other".into(), sample_table()),
            ],
            fetched_at: Some(Timestamp(42)),
            requery: 2,
            hunt_failure: Some(("forbidden".into(), "missing ThreatHunting.Read.All".into())),
            truncated: true,
        };
        let bytes = pb::TelemetryBundle::from(&bundle).encode_to_vec();
        let back =
            TelemetryBundle::try_from(pb::TelemetryBundle::decode(bytes.as_slice()).unwrap())
                .unwrap();
        assert_eq!(back, bundle);
        let (telemetry, skipped) = back.telemetry();
        assert_eq!(skipped, 0);
        assert_eq!(telemetry.network.len(), 1);
        assert_eq!(telemetry.network[0].initiating.process_id, Some(1988));
    }

    fn table_error(edit: impl Fn(&mut pb::Table)) -> ConvertError {
        let mut p = table_to_proto("T", &sample_table());
        edit(&mut p);
        Table::try_from(p).unwrap_err()
    }

    #[test]
    fn bad_tables_name_the_field() {
        assert_eq!(
            table_error(|p| p.columns[3].r#type = 0).field(),
            "columns[3].type"
        );
        assert_eq!(
            table_error(|p| p.columns[1].r#type = 99).field(),
            "columns[1].type"
        );
        assert_eq!(
            table_error(|p| p.columns[0].name.clear()).field(),
            "columns[0].name"
        );
        let short = table_error(|p| {
            p.rows[1].values.pop();
        });
        assert_eq!(short.field(), "rows[1].values");
        assert!(
            short.to_string().contains("9 values for 10 columns"),
            "{short}"
        );
        let json = table_error(|p| p.rows[0].values[2].kind = Some(Kind::DynamicJson("{".into())));
        assert_eq!(json.field(), "rows[0].values[2].dynamic_json");
    }

    #[test]
    fn a_bundle_must_name_its_detection_consistently() {
        let detection = sample_detection();
        let mut p = pb::TelemetryBundle::from(&TelemetryBundle {
            detection_key: detection.key(),
            detection: Some(detection),
            tables: vec![],
            fetched_at: None,
            requery: 0,
            hunt_failure: None,
            truncated: false,
        });
        p.detection_key = "vectra:acme:2569:older".into();
        let err = TelemetryBundle::try_from(p.clone()).unwrap_err();
        assert_eq!(err.field(), "detection_key");
        p.detection_key.clear();
        assert_eq!(
            TelemetryBundle::try_from(p.clone()).unwrap_err(),
            ConvertError::missing("detection_key")
        );
        p.detection_key = "k".into();
        p.detection = None;
        p.tables.push(pb::Table::default());
        assert_eq!(
            TelemetryBundle::try_from(p).unwrap_err().field(),
            "tables[0].name"
        );
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let json = prop_oneof![
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z\\\\\"\u{e9}]{0,8}".prop_map(serde_json::Value::from),
        ];
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            // NaN is never equal to itself; every other double must survive.
            any::<f64>()
                .prop_filter("not NaN", |f| !f.is_nan())
                .prop_map(Value::Real),
            ".{0,16}".prop_map(Value::String),
            any::<i64>().prop_map(|t| Value::DateTime(Timestamp(t))),
            any::<i64>().prop_map(|d| Value::TimeSpan(Duration(d))),
            proptest::collection::vec(json, 0..4)
                .prop_map(|items| Value::Dynamic(serde_json::Value::Array(items))),
        ]
    }

    proptest::proptest! {
        #[test]
        fn any_row_round_trips(row in proptest::collection::vec(any_value(), 1..6)) {
            let columns = (0..row.len()).map(|i| Column::new(format!("c{i}"), KustoType::Object)).collect();
            let mut t = Table::new(columns);
            t.rows.push(row);
            let bytes = table_to_proto("T", &t).encode_to_vec();
            let back = Table::try_from(pb::Table::decode(bytes.as_slice()).unwrap()).unwrap();
            proptest::prop_assert_eq!(back, t);
        }
    }
}
