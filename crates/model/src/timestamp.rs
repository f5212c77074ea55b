//! UTC instants at 100 ns resolution, the resolution of Kusto's `datetime`.
//!
//! A plain `i64` of ticks keeps telemetry rows `Copy`, hashable and cheap to compare, which the
//! evaluator and the attribution engine do millions of times.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Ticks of 100 ns in one second.
pub const TICKS_PER_SECOND: i64 = 10_000_000;

/// A UTC instant, in 100 ns ticks since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// A signed span of time, in 100 ns ticks (Kusto's `timespan`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Duration(pub i64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid timestamp {input:?}: {reason}")]
pub struct TimestampError {
    pub input: String,
    pub reason: String,
}

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub const fn from_seconds(s: i64) -> Self {
        Duration(s * TICKS_PER_SECOND)
    }
    pub const fn from_millis(ms: i64) -> Self {
        Duration(ms * 10_000)
    }
    pub const fn from_minutes(m: i64) -> Self {
        Duration(m * 60 * TICKS_PER_SECOND)
    }
    pub const fn from_hours(h: i64) -> Self {
        Duration(h * 3600 * TICKS_PER_SECOND)
    }
    pub const fn from_days(d: i64) -> Self {
        Duration(d * 86_400 * TICKS_PER_SECOND)
    }
    pub fn as_seconds_f64(self) -> f64 {
        self.0 as f64 / TICKS_PER_SECOND as f64
    }
    pub fn abs(self) -> Self {
        Duration(self.0.saturating_abs())
    }
    pub fn to_std(self) -> std::time::Duration {
        let t = self.0.max(0) as u64;
        std::time::Duration::new(t / 10_000_000, ((t % 10_000_000) * 100) as u32)
    }
    pub fn from_std(d: std::time::Duration) -> Self {
        Duration(i64::try_from(d.as_nanos() / 100).unwrap_or(i64::MAX))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }
}
impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(d.0))
    }
}
impl std::ops::Sub<Timestamp> for Timestamp {
    type Output = Duration;
    fn sub(self, o: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(o.0))
    }
}
impl std::ops::Add for Duration {
    type Output = Duration;
    fn add(self, o: Duration) -> Duration {
        Duration(self.0.saturating_add(o.0))
    }
}
impl std::ops::Neg for Duration {
    type Output = Duration;
    fn neg(self) -> Duration {
        Duration(self.0.saturating_neg())
    }
}

impl Timestamp {
    pub const fn from_unix_seconds(s: i64) -> Self {
        Timestamp(s * TICKS_PER_SECOND)
    }
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(TICKS_PER_SECOND)
    }
    pub fn unix_seconds_f64(self) -> f64 {
        self.0 as f64 / TICKS_PER_SECOND as f64
    }
    pub fn now() -> Self {
        Self::from_offset(OffsetDateTime::now_utc())
    }
    pub fn from_offset(t: OffsetDateTime) -> Self {
        Timestamp(i64::try_from(t.unix_timestamp_nanos() / 100).unwrap_or(i64::MAX))
    }
    pub fn to_offset(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 100)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// Parses RFC 3339 with any offset or fraction, and the space-separated and offset-less
    /// forms that logs and Kusto accept (taken as UTC).
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let err = |reason: &str| TimestampError {
            input: s.chars().take(64).collect(),
            reason: reason.to_owned(),
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        // Every form accepted is ASCII; checking first makes the byte offsets below safe.
        if !t.is_ascii() {
            return Err(err("not an ASCII date-time"));
        }
        let mut owned = t.replacen(' ', "T", 1);
        if owned.len() == 10 {
            owned.push_str("T00:00:00Z");
        }
        let tail_at = 10.min(owned.len());
        let tail = &owned[tail_at..];
        let has_offset = owned.ends_with('Z')
            || owned.ends_with('z')
            || tail.contains('+')
            || tail.contains('-');
        if !has_offset {
            owned.push('Z');
        }
        // Suricata writes offsets without a colon (+0200); RFC 3339 wants one.
        if let Some(pos) = owned[tail_at..].rfind(['+', '-']) {
            let pos = pos + tail_at;
            let off = &owned[pos + 1..];
            if off.len() == 4 && off.bytes().all(|b| b.is_ascii_digit()) {
                owned = format!("{}{}:{}", &owned[..pos + 1], &off[..2], &off[2..]);
            }
        }
        let odt = OffsetDateTime::parse(&owned, &Rfc3339).map_err(|e| err(&e.to_string()))?;
        Ok(Self::from_offset(odt))
    }

    /// Seven fractional digits and `Z`, as the hunting APIs write datetimes.
    pub fn to_kusto_string(self) -> String {
        let secs = self.0.div_euclid(TICKS_PER_SECOND);
        let frac = self.0.rem_euclid(TICKS_PER_SECOND);
        let base = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
            base.year(),
            u8::from(base.month()),
            base.day(),
            base.hour(),
            base.minute(),
            base.second(),
            frac
        )
    }

    /// Milliseconds and `Z`: what people read in panels.
    pub fn to_millis_string(self) -> String {
        let s = self.to_kusto_string();
        format!("{}Z", &s[..23])
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_kusto_string())
    }
}
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_kusto_string())
    }
}
impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_kusto_string())
    }
}
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_sources_write() {
        let a = Timestamp::parse("2023-08-16T04:54:30.9870000Z").unwrap();
        assert_eq!(a.to_kusto_string(), "2023-08-16T04:54:30.9870000Z");
        let b = Timestamp::parse("2023-08-16T06:54:30.987+0200").unwrap();
        assert_eq!(a, b);
        let c = Timestamp::parse("2023-08-16T01:54:30.987-03:00").unwrap();
        assert_eq!(a, c);
        let d = Timestamp::parse("2023-08-16 04:54:30.987").unwrap();
        assert_eq!(a, d);
        assert_eq!(
            Timestamp::parse("2023-08-16").unwrap().to_kusto_string(),
            "2023-08-16T00:00:00.0000000Z"
        );
        assert!(Timestamp::parse("").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
        // A multi-byte character where the date ends must not split a character.
        assert!(Timestamp::parse("2020-01-0\u{e9}1T00:00:00Z").is_err());
    }

    #[test]
    fn before_the_epoch_formats_correctly() {
        let t = Timestamp::parse("1969-12-31T23:59:59.5Z").unwrap();
        assert_eq!(t.to_kusto_string(), "1969-12-31T23:59:59.5000000Z");
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_text_never_panics(s in "\\PC{0,40}") {
            let _ = Timestamp::parse(&s);
            let _ = crate::table::parse_timespan(&s);
        }

        #[test]
        fn kusto_string_round_trips(ticks in -60_000_000_000_000_000i64..60_000_000_000_000_000i64) {
            let t = Timestamp(ticks);
            proptest::prop_assert_eq!(Timestamp::parse(&t.to_kusto_string()).unwrap(), t);
        }
    }
}
