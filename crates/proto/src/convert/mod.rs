//! Conversions between `culprit-model`'s domain types and the `culprit.v1` messages.
//!
//! Model → proto cannot fail (`From`); proto → model validates (`TryFrom`) and every
//! [`ConvertError`] names the offending field by its path in the message
//! (`flows[1].sessions[0].first`), since proto input comes from other processes and clients.

mod correlation;
mod detection;
mod table;

pub use correlation::status_from_proto;
pub use table::{TelemetryBundle, table_to_proto};

use culprit_model::Timestamp;
use culprit_model::timestamp::TICKS_PER_SECOND;

/// Why a message could not become a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{field}: required but missing")]
    Missing { field: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl ConvertError {
    pub(crate) fn missing(field: &str) -> Self {
        ConvertError::Missing {
            field: field.to_owned(),
        }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        ConvertError::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// The path of the offending field.
    pub fn field(&self) -> &str {
        match self {
            ConvertError::Missing { field } | ConvertError::Invalid { field, .. } => field,
        }
    }

    /// Places the error under its enclosing field (`flows[2]` + `remote_port`).
    pub(crate) fn within(self, parent: &str) -> Self {
        let join = |f: String| format!("{parent}.{f}");
        match self {
            ConvertError::Missing { field } => ConvertError::Missing { field: join(field) },
            ConvertError::Invalid { field, reason } => ConvertError::Invalid {
                field: join(field),
                reason,
            },
        }
    }
}

/// Converts each item, naming a failure's field under `name[index]`.
pub(crate) fn each<P, M>(
    name: &str,
    items: Vec<P>,
    convert: impl Fn(P) -> Result<M, ConvertError>,
) -> Result<Vec<M>, ConvertError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, p)| convert(p).map_err(|e| e.within(&format!("{name}[{i}]"))))
        .collect()
}

/// Converts an optional sub-message, naming a failure's field under `name`.
pub(crate) fn nested<P, M>(
    name: &str,
    item: Option<P>,
    convert: impl Fn(P) -> Result<M, ConvertError>,
) -> Result<Option<M>, ConvertError> {
    item.map(|p| convert(p).map_err(|e| e.within(name)))
        .transpose()
}

/// A sub-message the domain type cannot do without.
pub(crate) fn required<P, M>(
    name: &str,
    item: Option<P>,
    convert: impl Fn(P) -> Result<M, ConvertError>,
) -> Result<M, ConvertError> {
    nested(name, item, convert)?.ok_or_else(|| ConvertError::missing(name))
}

/// 100 ns ticks → seconds and nanoseconds (nanos always in `0..1e9`, as the type demands).
pub fn timestamp_to_proto(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.0.div_euclid(TICKS_PER_SECOND),
        // rem_euclid is below 10^7, so the product fits an i32.
        nanos: (t.0.rem_euclid(TICKS_PER_SECOND) * 100) as i32,
    }
}

/// Seconds and nanoseconds → 100 ns ticks; nanoseconds below 100 are dropped.
pub fn timestamp_from_proto(
    field: &str,
    t: &prost_types::Timestamp,
) -> Result<Timestamp, ConvertError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(ConvertError::invalid(
            field,
            format!("nanos {} is outside 0..1000000000", t.nanos),
        ));
    }
    // In i128: near i64::MIN the seconds part alone is below the range that the sum is in.
    let ticks = i128::from(t.seconds) * i128::from(TICKS_PER_SECOND) + i128::from(t.nanos / 100);
    i64::try_from(ticks)
        .map(Timestamp)
        .map_err(|_| ConvertError::invalid(field, format!("{} s is out of range", t.seconds)))
}

pub(crate) fn opt_time(
    field: &str,
    t: Option<prost_types::Timestamp>,
) -> Result<Option<Timestamp>, ConvertError> {
    t.map(|t| timestamp_from_proto(field, &t)).transpose()
}

pub(crate) fn req_time(
    field: &str,
    t: Option<prost_types::Timestamp>,
) -> Result<Timestamp, ConvertError> {
    opt_time(field, t)?.ok_or_else(|| ConvertError::missing(field))
}

pub(crate) fn opt_time_to_proto(t: Option<Timestamp>) -> Option<prost_types::Timestamp> {
    t.map(timestamp_to_proto)
}

/// A prost enum field (an `i32`) as its Rust enum; values this build does not know are
/// rejected rather than guessed.
pub(crate) fn known_enum<E: TryFrom<i32>>(field: &str, v: i32) -> Result<E, ConvertError> {
    E::try_from(v).map_err(|_| ConvertError::invalid(field, format!("unknown enum value {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_before_the_epoch() {
        for ticks in [
            0,
            1,
            -1,
            16_921_664_709_870_000,
            -5_000_000,
            i64::MAX / 1000,
        ] {
            let t = Timestamp(ticks);
            let p = timestamp_to_proto(t);
            assert!((0..1_000_000_000).contains(&p.nanos), "nanos of {ticks}");
            assert_eq!(timestamp_from_proto("t", &p), Ok(t));
        }
    }

    #[test]
    fn bad_timestamps_name_the_field() {
        let nanos = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        let err = timestamp_from_proto("window.start", &nanos).unwrap_err();
        assert_eq!(err.field(), "window.start");
        let far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(
            timestamp_from_proto("computed_at", &far)
                .unwrap_err()
                .to_string()
                .starts_with("computed_at: ")
        );
    }

    #[test]
    fn nested_errors_carry_the_whole_path() {
        let e = ConvertError::missing("first")
            .within("sessions[0]")
            .within("flows[1]");
        assert_eq!(e.field(), "flows[1].sessions[0].first");
        assert_eq!(
            e.to_string(),
            "flows[1].sessions[0].first: required but missing"
        );
    }
}
