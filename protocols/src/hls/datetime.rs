//! EXT-X-PROGRAM-DATE-TIME values: ISO 8601 date-times with a zone (RFC 3339 profile).

use std::fmt;

/// A moment as milliseconds since the UNIX epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct DateTime {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    pub unix_millis: i64,
}

const DAY_MS: i64 = 86_400_000;

impl DateTime {
    /// The moment `unix_millis` after the epoch.
    pub const fn from_unix_millis(unix_millis: i64) -> Self {
        Self { unix_millis }
    }

    /// Parse `YYYY-MM-DDThh:mm:ss[.fff…](Z|±hh:mm|±hhmm)`.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = b.get(r)?;
            part.iter().all(u8::is_ascii_digit).then(|| {
                part.iter()
                    .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
            })
        };
        if b.get(4) != Some(&b'-')
            || b.get(7) != Some(&b'-')
            || !matches!(b.get(10), Some(b'T' | b't'))
            || b.get(13) != Some(&b':')
            || b.get(16) != Some(&b':')
        {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let mut at = 19;
        let mut millis = 0i64;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let start = at;
            while b.get(at).is_some_and(u8::is_ascii_digit) {
                if at - start < 3 {
                    millis = millis * 10 + i64::from(b[at] - b'0');
                }
                at += 1;
            }
            if at == start {
                return None;
            }
            for _ in (at - start)..3 {
                millis *= 10;
            }
        }
        let offset_minutes = match b.get(at) {
            Some(b'Z' | b'z') if at + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) => {
                let hh = num(at + 1..at + 3)?;
                let rest = &b[at + 3..];
                let mm = match rest {
                    [b':', ..] if rest.len() == 3 => num(at + 4..at + 6)?,
                    _ if rest.len() == 2 => num(at + 3..at + 5)?,
                    [] => 0,
                    _ => return None,
                };
                let m = hh * 60 + mm;
                if *sign == b'+' {
                    m
                } else {
                    -m
                }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let ms =
            days * DAY_MS + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000 + millis;
        Some(Self { unix_millis: ms })
    }
}

impl fmt::Display for DateTime {
    /// `YYYY-MM-DDThh:mm:ss.fffZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.unix_millis.div_euclid(DAY_MS);
        let ms = self.unix_millis.rem_euclid(DAY_MS);
        let (y, m, d) = civil_from_days(days);
        let (s, milli) = (ms / 1000, ms % 1000);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the era-based method of H. Hinnant).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t = DateTime::from_unix_millis(1_763_705_400_123);
        assert_eq!(t.to_string(), "2025-11-21T06:10:00.123Z");
        assert_eq!(DateTime::parse("2025-11-21T06:10:00.123Z"), Some(t));
        assert_eq!(DateTime::parse("2025-11-21T08:10:00.123+02:00"), Some(t));
        assert_eq!(DateTime::parse("2025-11-21T01:10:00.1234-0500"), Some(t));
        assert_eq!(
            DateTime::parse("1970-01-01T00:00:00Z"),
            Some(DateTime::from_unix_millis(0))
        );
        assert_eq!(
            DateTime::from_unix_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            DateTime::parse("2024-02-29T00:00:00.000Z")
                .map(|t| t.to_string())
                .as_deref(),
            Some("2024-02-29T00:00:00.000Z")
        );
        for bad in [
            "",
            "2025-11-21",
            "2025-13-01T00:00:00Z",
            "2025-11-21T06:10:00",
            "2025-11-21T06:10:00.Z",
            "2025-11-21T06:10:00Zjunk",
        ] {
            assert_eq!(DateTime::parse(bad), None, "{bad}");
        }
    }
}
