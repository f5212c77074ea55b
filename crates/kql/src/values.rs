//! Value semantics: equality, ordering, hashing and the string operators, as Kusto defines
//! them (https://learn.microsoft.com/en-us/kusto/query/datatypes-string-operators).

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use culprit_model::{KustoType, Value};

/// The Kusto type a value has.
pub(crate) fn type_of(v: &Value) -> Option<KustoType> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => KustoType::Boolean,
        Value::Int(_) => KustoType::Int64,
        Value::Real(_) => KustoType::Double,
        Value::String(_) => KustoType::String,
        Value::DateTime(_) => KustoType::DateTime,
        Value::TimeSpan(_) => KustoType::TimeSpan,
        Value::Dynamic(_) => KustoType::Object,
    })
}

/// A dynamic scalar as the plain value it holds (`"a"` → string, `5` → long).
pub(crate) fn from_json_scalar(j: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match j {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_f64().map(Value::Real))
            .unwrap_or(Value::Null),
        J::String(s) => Value::String(s.clone()),
        other => Value::Dynamic(other.clone()),
    }
}

/// Value to JSON inside a dynamic (datetimes as their Kusto text).
pub(crate) fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Dynamic(j) => j.clone(),
        other => other.to_json(),
    }
}

/// A dynamic holding a scalar compares as that scalar.
fn unwrap_dynamic(v: &Value) -> std::borrow::Cow<'_, Value> {
    match v {
        Value::Dynamic(j) if !j.is_array() && !j.is_object() => {
            std::borrow::Cow::Owned(from_json_scalar(j))
        }
        v => std::borrow::Cow::Borrowed(v),
    }
}

/// Equality for grouping, `distinct`, joins and `in`: nulls equal each other, numbers compare
/// by value across long and real.
pub(crate) fn key_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Real(y)) | (Value::Real(y), Value::Int(x)) => (*x as f64) == *y,
        (Value::Real(x), Value::Real(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::Dynamic(_), _) | (_, Value::Dynamic(_)) => {
            let (a, b) = (unwrap_dynamic(a), unwrap_dynamic(b));
            match (&*a, &*b) {
                (Value::Dynamic(x), Value::Dynamic(y)) => x == y,
                (Value::Dynamic(_), _) | (_, Value::Dynamic(_)) => false,
                (a, b) => key_eq(a, b),
            }
        }
        (a, b) => a == b,
    }
}

/// A hash consistent with [`key_eq`].
pub(crate) fn hash_value<H: Hasher>(v: &Value, h: &mut H) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Int(i) => (2u8, *i as f64 as i64 == *i, *i).hash(h),
        Value::Real(r) if r.fract() == 0.0 && r.abs() < 9.0e15 => (2u8, true, *r as i64).hash(h),
        Value::Real(r) => (3u8, r.to_bits()).hash(h),
        Value::String(s) => (4u8, s.as_str()).hash(h),
        Value::DateTime(t) => (5u8, t.0).hash(h),
        Value::TimeSpan(d) => (6u8, d.0).hash(h),
        Value::Dynamic(j) => match unwrap_dynamic(v).as_ref() {
            Value::Dynamic(_) => (7u8, j.to_string()).hash(h),
            scalar => hash_value(scalar, h),
        },
    }
}

/// A fast, non-cryptographic hasher (the multiply-rotate scheme of rustc's FxHash): grouping,
/// joins and `dcount` hash every row, and the input is not adversarial.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // A final avalanche so that hashes used as keys spread over all bits.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
}

/// Hash maps and sets keyed by [`hash_one`] values.
pub(crate) type FxBuild = std::hash::BuildHasherDefault<FxHasher>;
pub(crate) type FxMap<K, V> = std::collections::HashMap<K, V, FxBuild>;
pub(crate) type FxSet<K> = std::collections::HashSet<K, FxBuild>;

pub(crate) fn hash_one(v: &Value) -> u64 {
    let mut h = FxHasher::default();
    hash_value(v, &mut h);
    h.finish()
}

pub(crate) fn hash_many<'v>(vs: impl IntoIterator<Item = &'v Value>) -> u64 {
    let mut h = FxHasher::default();
    for v in vs {
        hash_value(v, &mut h);
    }
    h.finish()
}

/// Ordering of two non-null values of comparable types; `None` when they do not compare.
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::Real(y)) => (*x as f64).partial_cmp(y),
        (Value::Real(x), Value::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Value::Real(x), Value::Real(y)) => x.partial_cmp(y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::DateTime(x), Value::DateTime(y)) => Some(x.cmp(y)),
        (Value::TimeSpan(x), Value::TimeSpan(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::DateTime(x), Value::String(s)) => parse_datetime(s).map(|y| x.cmp(&y)),
        (Value::String(s), Value::DateTime(y)) => parse_datetime(s).map(|x| x.cmp(y)),
        (Value::Dynamic(_), _) | (_, Value::Dynamic(_)) => {
            let (a2, b2) = (unwrap_dynamic(a), unwrap_dynamic(b));
            match (&*a2, &*b2) {
                (Value::Dynamic(x), Value::Dynamic(y)) => (x == y).then_some(Ordering::Equal),
                (Value::Dynamic(_), _) | (_, Value::Dynamic(_)) => None,
                (x, y) => compare(x, y),
            }
        }
        _ => None,
    }
}

/// A total order for sorting: nulls placed by the caller, incomparable values by type.
pub(crate) fn sort_cmp(a: &Value, b: &Value) -> Ordering {
    compare(a, b).unwrap_or_else(|| rank(a).cmp(&rank(b)))
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int(_) | Value::Real(_) => 2,
        Value::DateTime(_) => 3,
        Value::TimeSpan(_) => 4,
        Value::String(_) => 5,
        Value::Dynamic(_) => 6,
    }
}

/// The text a value has for string operators (`tostring`).
pub(crate) fn to_text(v: &Value) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    match v {
        Value::Null => Cow::Borrowed(""),
        Value::String(s) => Cow::Borrowed(s),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::Int(i) => Cow::Owned(i.to_string()),
        Value::Real(r) => Cow::Owned(r.to_string()),
        Value::DateTime(t) => Cow::Owned(t.to_kusto_string()),
        Value::TimeSpan(d) => Cow::Owned(culprit_model::table::format_timespan(*d)),
        Value::Dynamic(serde_json::Value::String(s)) => Cow::Borrowed(s),
        Value::Dynamic(serde_json::Value::Null) => Cow::Borrowed(""),
        Value::Dynamic(j) => Cow::Owned(j.to_string()),
    }
}

fn is_term_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// Byte ranges where ASCII `needle` occurs in ASCII `hay`, ignoring case.
fn find_all_ascii_ci(hay: &str, needle: &str) -> Vec<(usize, usize)> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    if n.is_empty() || n.len() > h.len() {
        return Vec::new();
    }
    (0..=h.len() - n.len())
        .filter(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
        .map(|i| (i, i + n.len()))
        .collect()
}

/// Term matching of `has`, `hasprefix`, `hassuffix`: the needle must start (prefix) and/or end
/// (suffix) at a term boundary, a term being a run of alphanumeric characters
/// (https://learn.microsoft.com/en-us/kusto/query/datatypes-string-operators#what-is-a-term).
pub(crate) fn has_term(
    hay: &str,
    needle: &str,
    need_start: bool,
    need_end: bool,
    case_sensitive: bool,
) -> bool {
    if needle.is_empty() {
        return true;
    }
    if !(case_sensitive || hay.is_ascii() && needle.is_ascii()) {
        return has_term(
            &hay.to_lowercase(),
            &needle.to_lowercase(),
            need_start,
            need_end,
            true,
        );
    }
    let hits: Vec<(usize, usize)> = if case_sensitive {
        hay.match_indices(needle)
            .map(|(i, m)| (i, i + m.len()))
            .collect()
    } else {
        find_all_ascii_ci(hay, needle)
    };
    let first_is_term = needle.chars().next().is_some_and(is_term_char);
    let last_is_term = needle.chars().next_back().is_some_and(is_term_char);
    hits.iter().any(|&(a, b)| {
        let before_ok = !need_start
            || !first_is_term
            || !hay[..a].chars().next_back().is_some_and(is_term_char);
        let after_ok =
            !need_end || !last_is_term || !hay[b..].chars().next().is_some_and(is_term_char);
        before_ok && after_ok
    })
}

pub(crate) fn contains(hay: &str, needle: &str, case_sensitive: bool) -> bool {
    if case_sensitive || needle.is_empty() {
        hay.contains(needle)
    } else if hay.is_ascii() && needle.is_ascii() {
        !find_all_ascii_ci(hay, needle).is_empty()
    } else {
        hay.to_lowercase().contains(&needle.to_lowercase())
    }
}

pub(crate) fn starts_with(hay: &str, needle: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        return hay.starts_with(needle);
    }
    match hay.get(..needle.len()) {
        Some(head) if hay.is_ascii() && needle.is_ascii() => head.eq_ignore_ascii_case(needle),
        _ => hay.to_lowercase().starts_with(&needle.to_lowercase()),
    }
}

pub(crate) fn ends_with(hay: &str, needle: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        return hay.ends_with(needle);
    }
    match hay
        .len()
        .checked_sub(needle.len())
        .and_then(|i| hay.get(i..))
    {
        Some(tail) if hay.is_ascii() && needle.is_ascii() => tail.eq_ignore_ascii_case(needle),
        _ => hay.to_lowercase().ends_with(&needle.to_lowercase()),
    }
}

pub(crate) fn eq_ci(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// `Timestamp::parse` for text from queries and data: only ASCII text can be a datetime, and
/// the parser slices by byte.
pub(crate) fn parse_datetime(s: &str) -> Option<culprit_model::Timestamp> {
    if !s.is_ascii() {
        return None;
    }
    culprit_model::Timestamp::parse(s).ok()
}

/// `[-][d.]hh:mm[:ss[.fffffff]]` with checked arithmetic: overflow is no timespan.
pub(crate) fn parse_timespan(s: &str) -> Option<culprit_model::Duration> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    if !body.is_ascii() || body.len() > 40 {
        return None;
    }
    let mut parts = body.split(':');
    let head = parts.next()?;
    let (days, hours) = match head.split_once('.') {
        Some((d, h)) => (d.parse::<i64>().ok()?, h.parse::<i64>().ok()?),
        None => (0, head.parse::<i64>().ok()?),
    };
    let minutes: i64 = parts.next()?.parse().ok()?;
    let (secs, frac) = match parts.next() {
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            (whole.parse::<i64>().ok()?, frac)
        }
        None => (0, ""),
    };
    if parts.next().is_some() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().take(7).collect();
    let frac_ticks: i64 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<7}").parse().ok()?
    };
    let total = days
        .checked_mul(24)?
        .checked_add(hours)?
        .checked_mul(60)?
        .checked_add(minutes)?
        .checked_mul(60)?
        .checked_add(secs)?
        .checked_mul(10_000_000)?
        .checked_add(frac_ticks)?;
    Some(culprit_model::Duration(if neg { -total } else { total }))
}
