//! Lenient access to JSON fields with error paths that are only rendered when needed.

use std::fmt;
use std::net::IpAddr;

use culprit_model::Timestamp;
use culprit_model::detection::{canonical_ip, parse_ip};
use serde_json::Value;

use crate::IngestError;
pub(crate) use crate::leaf::{Leaf, List, Obj, Scalar};
use crate::time::{parse_epoch_seconds, parse_time};

/// A JSON path built on the stack while walking a document; rendered only on error, so the
/// happy path allocates nothing for it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Path<'a> {
    Root(&'a str),
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    pub(crate) fn key(&'a self, k: &'a str) -> Path<'a> {
        Path::Key(self, k)
    }
    pub(crate) fn index(&'a self, i: usize) -> Path<'a> {
        Path::Index(self, i)
    }
    fn is_empty(&self) -> bool {
        matches!(self, Path::Root(s) if s.is_empty())
    }
    pub(crate) fn render(&self) -> String {
        match self {
            Path::Root("") => "$".to_owned(),
            Path::Root(r) => r.trim_end_matches(':').to_owned(),
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root(s) => f.write_str(s),
            Path::Key(p, k) => {
                fmt::Display::fmt(p, f)?;
                match p {
                    // `line 3: id.orig_h` reads better than `line 3:.id.orig_h`.
                    Path::Root(r) if r.ends_with(':') => f.write_str(" ")?,
                    _ if !p.is_empty() => f.write_str(".")?,
                    _ => {}
                }
                f.write_str(k)
            }
            Path::Index(p, i) => {
                fmt::Display::fmt(p, f)?;
                write!(f, "[{i}]")
            }
        }
    }
}

pub(crate) fn missing(path: &Path<'_>) -> IngestError {
    IngestError::Missing {
        path: path.render(),
    }
}

pub(crate) fn invalid(path: &Path<'_>, reason: impl Into<String>) -> IngestError {
    IngestError::Invalid {
        path: path.render(),
        reason: reason.into(),
    }
}

/// The value of `key`, treating JSON `null` as absent.
pub(crate) fn field<'v>(obj: &'v Value, key: &str) -> Option<&'v Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A string, or a number written as its decimal text (ids switch between the two).
pub(crate) fn text<L: Leaf + ?Sized>(v: &L, path: &Path<'_>) -> Result<String, IngestError> {
    if let Some(s) = v.str() {
        return Ok(s.to_owned());
    }
    v.number_text().ok_or_else(|| {
        invalid(
            path,
            format!("expected a string or number, got {}", v.kind()),
        )
    })
}

/// A non-negative integer given as a JSON number (integral) or as a decimal string.
pub(crate) fn uint<L: Leaf + ?Sized>(v: &L, path: &Path<'_>) -> Result<u64, IngestError> {
    if let Some(u) = v.u64() {
        return Ok(u);
    }
    if let Some(s) = v.str() {
        return s.trim().parse::<u64>().map_err(|_| {
            invalid(
                path,
                format!("expected a non-negative integer, got {:?}", clip(s)),
            )
        });
    }
    match v.f64() {
        // An integral float such as 443.0; the range check keeps the cast exact.
        Some(f) if f.fract() == 0.0 && (0.0..=9.0e15).contains(&f) => Ok(f as u64),
        Some(_) => Err(invalid(
            path,
            format!(
                "expected a non-negative integer, got {}",
                v.number_text().unwrap_or_default()
            ),
        )),
        None => Err(invalid(
            path,
            format!("expected a number or numeric string, got {}", v.kind()),
        )),
    }
}

pub(crate) fn uint_as<T: TryFrom<u64>, L: Leaf + ?Sized>(
    v: &L,
    path: &Path<'_>,
    max: &str,
) -> Result<T, IngestError> {
    let u = uint(v, path)?;
    T::try_from(u).map_err(|_| invalid(path, format!("{u} is out of range (max {max})")))
}

pub(crate) fn port<L: Leaf + ?Sized>(v: &L, path: &Path<'_>) -> Result<u16, IngestError> {
    uint_as::<u16, L>(v, path, "65535")
}

pub(crate) fn score<L: Leaf + ?Sized>(v: &L, path: &Path<'_>) -> Result<u32, IngestError> {
    uint_as::<u32, L>(v, path, "4294967295")
}

pub(crate) fn ip<L: Leaf + ?Sized>(v: &L, path: &Path<'_>) -> Result<IpAddr, IngestError> {
    match v.str() {
        // Plain addresses parse directly; `parse_ip` handles brackets, zones and spaces.
        Some(s) => s
            .parse::<IpAddr>()
            .ok()
            .map(canonical_ip)
            .or_else(|| parse_ip(s))
            .ok_or_else(|| invalid(path, format!("not an IP address: {:?}", clip(s)))),
        None => Err(invalid(
            path,
            format!("expected an IP address string, got {}", v.kind()),
        )),
    }
}

/// ISO-8601 with any offset, or epoch seconds (number or numeric string).
pub(crate) fn time<L: Leaf + ?Sized>(v: &L, path: &Path<'_>) -> Result<Timestamp, IngestError> {
    let r = if let Some(s) = v.str() {
        parse_time(s)
    } else if let Some(i) = v.i64() {
        parse_epoch_seconds(i as f64)
    } else if let Some(t) = v.number_text() {
        // The shortest round-trip text is what the sender wrote; parse it exactly.
        parse_time(&t)
    } else {
        Err(format!("expected a timestamp, got {}", v.kind()))
    };
    r.map_err(|reason| invalid(path, reason))
}

/// An id for a record that has none: `h` + 16 hex digits of the SHA-1 of its JSON text,
/// stable across re-delivery of the same record (serde_json writes object keys sorted).
pub(crate) fn digest_id(v: &Value) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(v.to_string().as_bytes());
    let mut id = String::from("h");
    for b in digest.iter().take(8) {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// Up to 64 characters of untrusted text for an error message.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The first present of `keys` (alternative spellings), converted; absent gives
/// `Missing` naming the first key and its alternatives.
pub(crate) fn required<T>(
    obj: &Value,
    keys: &[&str],
    path: &Path<'_>,
    conv: impl FnOnce(&Value, &Path<'_>) -> Result<T, IngestError>,
) -> Result<T, IngestError> {
    for k in keys {
        if let Some(v) = field(obj, k) {
            return conv(v, &path.key(k));
        }
    }
    let first = keys.first().copied().unwrap_or("?");
    let mut p = path.key(first).render();
    if keys.len() > 1 {
        p.push_str(&format!(" (or {})", keys[1..].join(", ")));
    }
    Err(IngestError::Missing { path: p })
}

pub(crate) fn non_empty_text<L: Leaf + ?Sized>(
    v: &L,
    path: &Path<'_>,
) -> Result<String, IngestError> {
    let t = text(v, path)?;
    if t.trim().is_empty() {
        return Err(invalid(path, "empty"));
    }
    Ok(t)
}

/// Warnings collected for optional fields that were present but unusable.
#[derive(Debug, Default)]
pub(crate) struct Warnings(pub(crate) Vec<String>);

impl Warnings {
    /// The value, or `None` with a warning recorded.
    pub(crate) fn keep<T>(&mut self, r: Result<T, IngestError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e.to_string());
                None
            }
        }
    }

    /// An optional field: absent or null gives `None` silently; present but bad gives `None`
    /// and a warning.
    pub(crate) fn opt<T>(
        &mut self,
        obj: &Value,
        key: &str,
        path: &Path<'_>,
        conv: impl FnOnce(&Value, &Path<'_>) -> Result<T, IngestError>,
    ) -> Option<T> {
        let v = field(obj, key)?;
        self.keep(conv(v, &path.key(key)))
    }

    /// As [`Warnings::opt`] for a typed field already read (`None` = absent or null).
    pub(crate) fn get<T, L: Leaf>(
        &mut self,
        v: Option<&L>,
        path: &Path<'_>,
        key: &str,
        conv: impl FnOnce(&L, &Path<'_>) -> Result<T, IngestError>,
    ) -> Option<T> {
        let v = v?;
        self.keep(conv(v, &path.key(key)))
    }

    pub(crate) fn push(&mut self, msg: String) {
        self.0.push(msg);
    }
}
