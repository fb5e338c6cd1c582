//! Durations (`60`, `60s`, `5m`, `1h`, `7d`) and sizes (`64KiB`, `10MiB`,
//! `1GiB`) as written in the config and on the command line.

use std::time::Duration;

/// Parses a duration: a whole number with an optional unit `ms`, `s`, `m`,
/// `h` or `d` (no unit means seconds).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(mcpsec_core::units::parse_duration("5m"), Ok(Duration::from_secs(300)));
/// assert!(mcpsec_core::units::parse_duration("5 parsecs").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("`{text}` is not a duration; write e.g. `60`, `60s`, `5m`, `1h` or `7d`");
    let n: u64 = num.parse().map_err(|_| bad())?;
    if unit == "ms" {
        return Ok(Duration::from_millis(n));
    }
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).map(Duration::from_secs).ok_or_else(bad)
}

/// Parses a size: a whole number with an optional unit `B`, `KiB`, `MiB`,
/// `GiB` (also `K`, `M`, `G`, `KB`, `MB`, `GB` as binary multiples).
///
/// ```
/// assert_eq!(mcpsec_core::units::parse_size("10MiB"), Ok(10 * 1024 * 1024));
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("`{text}` is not a size; write e.g. `64KiB`, `10MiB` or `1GiB`");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

/// Formats a duration the way `parse_duration` reads it, in its largest
/// whole unit (`7d`, `12h`, `90s`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Lower-case hex of `bytes` (digests, nonces).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Formats a byte count the way people read it (`4.00 KiB`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        let cases = [("60", 60), ("60s", 60), ("5m", 300), ("1h", 3600), ("7d", 604_800)];
        for (text, secs) in cases {
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        for bad in ["", "s", "-1", "1.5h", "1w", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        let cases = [("0", 0), ("64KiB", 65_536), ("10MiB", 10 << 20), ("1GiB", 1 << 30), ("7B", 7)];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "MiB", "1.5MiB", "10 parsecs", "-3"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn format() {
        assert_eq!(format_size(10), "10 B");
        assert_eq!(format_size(4096), "4.00 KiB");
        assert_eq!(format_size(3 << 20), "3.00 MiB");
        for text in ["7d", "12h", "5m", "90s", "250ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(hex(&[0, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
