//! Time parsing shared by the parsers: every source's clock text into a UTC [`Timestamp`].

use culprit_model::Timestamp;
use culprit_model::timestamp::TICKS_PER_SECOND;

/// Seconds either side of the epoch we accept; beyond this the tick count would overflow.
const MAX_EPOCH_SECONDS: f64 = 9.0e11;

/// ISO-8601 / RFC 3339 with any offset (`Z`, `+02:00`, `+0200`, `-0400`), or epoch seconds
/// written as text (`"1692161643.25"`, as JSON syslog and Zeek write them).
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    // The common shape first, before any trimming or copying.
    if let Some(fast) = fast_rfc3339(s.as_bytes()) {
        return Ok(fast);
    }
    let t = s.trim();
    // The model's parser slices by byte offset; only ASCII input is a timestamp anyway.
    if !t.is_ascii() {
        return Err(format!("not a timestamp: {:?}", crate::json::clip(t)));
    }
    if let Some(fast) = fast_rfc3339(t.as_bytes()) {
        return Ok(fast);
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return decimal_ticks(t)
            .map(Timestamp)
            .ok_or_else(|| format!("not epoch seconds: {t:?}"));
    }
    Timestamp::parse(t).map_err(|e| e.to_string())
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM|±HHMM)` without allocating: the shape every
/// sensor writes, parsed some twenty times faster than the general path. `None` sends the
/// text to the general parser (which also reports the error).
fn fast_rfc3339(s: &[u8]) -> Option<Timestamp> {
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = s.get(from..from + len)?;
        digits.iter().try_fold(0i64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let sep = |i: usize, c: u8| s.get(i) == Some(&c);
    if !(sep(4, b'-')
        && sep(7, b'-')
        && matches!(s.get(10), Some(b'T' | b't'))
        && sep(13, b':')
        && sep(16, b':'))
    {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut frac: i64 = 0;
    if sep(i, b'.') {
        i += 1;
        let start = i;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 7 {
                frac = frac * 10 + i64::from(s[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..7 {
            frac *= 10;
        }
    }
    let offset = match s.get(i)? {
        b'Z' | b'z' if s.len() == i + 1 => 0,
        sign @ (b'+' | b'-') => {
            let (h, m) = match s.len() - i {
                6 if sep(i + 3, b':') => (num(i + 1, 2)?, num(i + 4, 2)?),
                5 => (num(i + 1, 2)?, num(i + 3, 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(Timestamp(secs * TICKS_PER_SECOND + frac))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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
    let secs = t.0.div_euclid(TICKS_PER_SECOND);
    let frac = t.0.rem_euclid(TICKS_PER_SECOND);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        let mut out = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60
        );
        if frac != 0 {
            let digits = format!("{frac:07}");
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
        out.push('Z');
        return out;
    }
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
    fn fast_path_agrees_with_the_general_parser() {
        for s in [
            "2023-08-16T04:54:03Z",
            "2023-08-16T04:54:03.547423+0000",
            "2020-02-29T23:59:59.9999999-0930",
            "1999-12-31T00:00:00.1+14:00",
            "2024-01-02T03:04:05.123456789Z",
            "1969-07-20T20:17:40Z",
            "2100-03-01t00:00:00z",
        ] {
            let fast = fast_rfc3339(s.as_bytes());
            assert!(fast.is_some(), "{s}");
            assert_eq!(fast, Timestamp::parse(s).ok(), "{s}");
        }
        for s in [
            "2023-02-29T00:00:00Z",
            "2023-08-16T24:00:00Z",
            "2023-08-16T04:54:03",
            "2023-08-16T04:54:03.Z",
            "2023-08-16T04:54:03+2",
        ] {
            assert_eq!(fast_rfc3339(s.as_bytes()), None, "{s}");
        }
    }

    proptest::proptest! {
        #[test]
        fn revision_matches_the_model_formatter(ticks in -60_000_000_000_000_000i64..2_000_000_000_000_000_000) {
            let t = Timestamp(ticks);
            let k = t.to_kusto_string();
            let (head, frac) = k.trim_end_matches('Z').split_once('.').unwrap();
            let frac = frac.trim_end_matches('0');
            let expected = if frac.is_empty() { format!("{head}Z") } else { format!("{head}.{frac}Z") };
            proptest::prop_assert_eq!(revision_string(t), expected);
            let (y, m, d) = civil_from_days(t.unix_seconds().div_euclid(86_400));
            proptest::prop_assert_eq!(days_from_civil(y, m, d), t.unix_seconds().div_euclid(86_400));
        }
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
