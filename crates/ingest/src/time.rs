//! Time parsing shared by the parsers: every source's clock text into a UTC [`Timestamp`].

use culprit_model::Timestamp;
use culprit_model::timestamp::TICKS_PER_SECOND;

/// Seconds either side of the epoch we accept; beyond this the tick count would overflow.
const MAX_EPOCH_SECONDS: f64 = 9.0e11;

/// ISO-8601 / RFC 3339 with any offset (`Z`, `+02:00`, `+0200`, `-0400`), or epoch seconds
/// written as text (`"1692161643.25"`, as JSON syslog and Zeek write them).
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    let t = s.trim();
    // The model's parser slices by byte offset; only ASCII input is a timestamp anyway.
    if !t.is_ascii() {
        return Err(format!("not a timestamp: {:?}", crate::json::clip(t)));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return decimal_ticks(t)
            .map(Timestamp)
            .ok_or_else(|| format!("not epoch seconds: {t:?}"));
    }
    Timestamp::parse(t).map_err(|e| e.to_string())
}

/// Non-negative decimal seconds (`1692161643.549491`) as exact 100 ns ticks: going through
/// `f64` would move a 2023 timestamp by up to a tick. Digits beyond the seventh decimal are
/// truncated.
pub(crate) fn decimal_ticks(s: &str) -> Option<i64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut ticks: i64 = 0;
    for i in 0..7 {
        let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        ticks = ticks * 10 + d;
    }
    if secs as f64 > MAX_EPOCH_SECONDS {
        return None;
    }
    secs.checked_mul(TICKS_PER_SECOND)?.checked_add(ticks)
}

/// Epoch seconds with a fraction (Zeek `ts`, JSON syslog `vectra_timestamp`).
pub fn parse_epoch_seconds(secs: f64) -> Result<Timestamp, String> {
    if !secs.is_finite() || secs.abs() > MAX_EPOCH_SECONDS {
        return Err(format!("epoch seconds out of range: {secs}"));
    }
    // Rounding to whole ticks drops float noise below 100 ns.
    Ok(Timestamp((secs * TICKS_PER_SECOND as f64).round() as i64))
}

/// Epoch milliseconds (CEF `start`/`end`, `rt`).
pub fn parse_epoch_millis(ms: i64) -> Result<Timestamp, String> {
    ms.checked_mul(TICKS_PER_SECOND / 1000)
        .filter(|_| (ms / 1000).unsigned_abs() as f64 <= MAX_EPOCH_SECONDS)
        .map(Timestamp)
        .ok_or_else(|| format!("epoch milliseconds out of range: {ms}"))
}

/// The revision text of a timestamp: RFC 3339 UTC with `Z`, fraction only when there is one
/// (`2023-08-16T04:59:22Z`), so the same instant written differently gives the same key.
pub fn revision_string(t: Timestamp) -> String {
    let s = t.to_kusto_string();
    if t.0.rem_euclid(TICKS_PER_SECOND) == 0 {
        // `to_kusto_string` always writes `.fffffffZ`; drop the zero fraction.
        match s.split_once('.') {
            Some((head, _)) => format!("{head}Z"),
            None => s,
        }
    } else {
        let trimmed = s.trim_end_matches('Z').trim_end_matches('0');
        format!("{trimmed}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_with_and_without_colon_agree() {
        let a = parse_time("2023-08-16T06:54:03.547423+0200").unwrap();
        let b = parse_time("2023-08-16T06:54:03.547423+02:00").unwrap();
        let c = parse_time("2023-08-16T04:54:03.547423Z").unwrap();
        assert_eq!(a, c);
        assert_eq!(b, c);
    }

    #[test]
    fn negative_offset_moves_forward_to_utc() {
        let t = parse_time("2023-08-16T00:54:03-0400").unwrap();
        assert_eq!(t, parse_time("2023-08-16T04:54:03Z").unwrap());
    }

    #[test]
    fn epoch_text_and_revision() {
        let t = parse_time("1692161662").unwrap();
        assert_eq!(revision_string(t), "2023-08-16T04:54:22Z");
        let f = parse_time("1692161662.25").unwrap();
        assert_eq!(revision_string(f), "2023-08-16T04:54:22.25Z");
        let z = parse_time("1692161643.549491").unwrap();
        assert_eq!(z, parse_time("2023-08-16T04:54:03.549491Z").unwrap());
        assert!(parse_time(".").is_err());
        assert!(parse_time("1.2.3").is_err());
        assert!(parse_time("99999999999999999999").is_err());
        assert!(parse_time("2023-08-1é").is_err());
        assert!(parse_epoch_millis(i64::MAX).is_err());
        assert_eq!(
            parse_epoch_millis(1_589_424_950_000).unwrap(),
            Timestamp::from_unix_seconds(1_589_424_950)
        );
    }
}
