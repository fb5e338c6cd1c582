//! RFC 3339 timestamps (UTC) without a date-time dependency: formatting a
//! given instant and parsing one back. Nothing here reads the clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats `t` as RFC 3339 UTC with second precision, e.g.
/// `2026-11-24T14:37:48Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = unix_secs(t);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Formats `t` as RFC 3339 UTC with microseconds, e.g.
/// `2026-11-24T14:37:48.123456Z`. Fixed width, so these strings sort in
/// time order.
pub fn rfc3339_micros(t: SystemTime) -> String {
    let secs = unix_secs(t);
    let micros = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.subsec_micros(),
        Err(_) => 0,
    };
    let base = rfc3339(UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64));
    format!("{}.{micros:06}Z", &base[..base.len() - 1])
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Parses an RFC 3339 timestamp (`2026-11-24T14:37:48Z`, optional
/// fraction, `Z` or a `+hh:mm`/`-hh:mm` offset).
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("`{text}` is not an RFC 3339 time such as 2026-11-24T14:37:48Z");
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| text.get(r).and_then(|s| s.parse::<i64>().ok()).ok_or_else(bad);
    let (y, mo, d, h, mi, s) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let padded = format!("{:0<9}", &frac[..digits.min(9)]);
        nanos = padded.parse().map_err(|_| bad())?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && &rest[3..4] == ":" => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (num(text.len() - 5..text.len() - 3)? * 3600 + num(text.len() - 2..text.len())? * 60)
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    if secs < 0 {
        return Err(bad());
    }
    Ok(UNIX_EPOCH + Duration::new(secs as u64, nanos))
}

/// Howard Hinnant's `days_from_civil`: (y, m, d) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (y, m, d).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_531_068)), "2026-11-24T14:37:48Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_micros(UNIX_EPOCH + Duration::from_micros(1_500_001)), "1970-01-01T00:00:01.500001Z");
    }

    #[test]
    fn parse_round_trips() {
        for secs in [0u64, 951_782_400, 1_795_531_068, 4_102_444_800] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Ok(t));
        }
        let t = UNIX_EPOCH + Duration::from_micros(1_795_531_068_123_456);
        assert_eq!(parse_rfc3339(&rfc3339_micros(t)), Ok(t));
        assert_eq!(parse_rfc3339("2026-11-24T15:37:48+01:00"), parse_rfc3339("2026-11-24T14:37:48Z"));
        for bad in ["", "2026-11-24", "2026-13-01T00:00:00Z", "2026-11-24T14:37:48", "yesterday"] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
