//! Event-time parsing. Times become microseconds since the epoch, UTC.
//!
//! Without a format, text is read as RFC 3339 / ISO-8601 (with `T` or a space, with or
//! without an offset; no offset means UTC), `YYYY/MM/DD hh:mm:ss`, a bare date, or an epoch
//! number whose unit is `--time-unit` or guessed from its magnitude.

use crate::value::Value;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use trailmap_model::time::{TimeUnit, is_plausible};

#[derive(Debug, Clone, Default)]
pub struct TimeParser {
    format: Option<String>,
    format_has_offset: bool,
    unit: Option<TimeUnit>,
}

/// Naive layouts tried in order when no format is given.
const NAIVE_LAYOUTS: [&str; 4] = [
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y/%m/%dT%H:%M:%S%.f",
];

impl TimeParser {
    pub fn new(format: Option<String>, unit: Option<TimeUnit>) -> Self {
        let format_has_offset = format
            .as_deref()
            .is_some_and(|f| f.contains("%z") || f.contains("%:z") || f.contains("%#z"));
        TimeParser {
            format,
            format_has_offset,
            unit,
        }
    }

    /// Parses a value to microseconds, or says why it cannot.
    pub fn parse(&self, value: &Value<'_>) -> Result<i64, String> {
        let micros = match value {
            Value::Micros(us) => Ok(*us),
            Value::Int(i) => self.epoch(*i),
            Value::Float(f) => {
                let unit = self.unit.unwrap_or_else(|| TimeUnit::guess(*f as i64));
                unit.to_micros_f64(*f)
                    .ok_or_else(|| format!("`{f}` is out of range as a time"))
            }
            Value::Bool(b) => Err(format!("`{b}` is not a time")),
            Value::Str(s) => self.parse_str(s),
        }?;
        if is_plausible(micros) {
            Ok(micros)
        } else {
            Err(format!(
                "time `{}` ({}) is outside 1970..2200; check --time-unit or --time-format",
                value.to_text(),
                format_micros(micros)
            ))
        }
    }

    fn epoch(&self, v: i64) -> Result<i64, String> {
        let unit = self.unit.unwrap_or_else(|| TimeUnit::guess(v));
        unit.to_micros(v)
            .ok_or_else(|| format!("`{v}` is out of range as a time"))
    }

    fn parse_str(&self, raw: &str) -> Result<i64, String> {
        let s = raw.trim();
        if let Some(format) = &self.format {
            let parsed = if self.format_has_offset {
                DateTime::parse_from_str(s, format).map(|d| d.timestamp_micros())
            } else {
                NaiveDateTime::parse_from_str(s, format)
                    .map(|d| d.and_utc().timestamp_micros())
                    .or_else(|e| {
                        // A date-only format yields no time of day: read it as midnight.
                        NaiveDate::parse_from_str(s, format)
                            .map(|d| {
                                d.and_hms_opt(0, 0, 0)
                                    .map(|t| t.and_utc().timestamp_micros())
                            })
                            .ok()
                            .flatten()
                            .ok_or(e)
                    })
            };
            return parsed
                .map_err(|e| format!("cannot parse `{s}` with time format `{format}`: {e}"));
        }
        if looks_numeric(s) {
            if let Ok(i) = s.parse::<i64>() {
                return self.epoch(i);
            }
            if let Ok(f) = s.parse::<f64>() {
                return self.parse(&Value::Float(f));
            }
        }
        if self.unit.is_some() {
            return Err(format!("`{s}` is not an epoch number (--time-unit is set)"));
        }
        if let Some(us) = utc_rfc3339(s.as_bytes()) {
            return Ok(us);
        }
        if let Ok(d) = DateTime::parse_from_rfc3339(s) {
            return Ok(d.timestamp_micros());
        }
        // RFC 3339 without the colon in the offset, or with a space before it.
        for layout in [
            "%Y-%m-%dT%H:%M:%S%.f%z",
            "%Y-%m-%d %H:%M:%S%.f%z",
            "%Y-%m-%d %H:%M:%S%.f %z",
        ] {
            if let Ok(d) = DateTime::parse_from_str(s, layout) {
                return Ok(d.timestamp_micros());
            }
        }
        let naive = s.strip_suffix(['Z', 'z']).unwrap_or(s);
        for layout in NAIVE_LAYOUTS {
            if let Ok(d) = NaiveDateTime::parse_from_str(naive, layout) {
                return Ok(d.and_utc().timestamp_micros());
            }
        }
        for layout in ["%Y-%m-%d", "%Y/%m/%d"] {
            if let Ok(d) = NaiveDate::parse_from_str(naive, layout)
                && let Some(t) = d.and_hms_opt(0, 0, 0)
            {
                return Ok(t.and_utc().timestamp_micros());
            }
        }
        Err(format!(
            "cannot parse `{s}` as a time; expected ISO-8601 (2024-05-01T10:00:00+02:00) or an \
             epoch number, or pass --time-format"
        ))
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the shape most event times have (Segment's, for
/// one), read digit by digit: chrono's general RFC 3339 parser was a tenth of decoding a
/// Segment call. It gives what that parser gives, truncated to microseconds as
/// `timestamp_micros` does; anything else (an offset, a lowercase `t` or `z`, a leap second,
/// more than nine fraction digits, a day the month does not have) is left to it (`None`).
fn utc_rfc3339(s: &[u8]) -> Option<i64> {
    let (&b'Z', s) = s.split_last()? else {
        return None;
    };
    if s.len() < 19 || [s[4], s[7], s[10], s[13], s[16]] != *b"--T::" {
        return None;
    }
    let digits = |from: usize, to: usize| {
        s[from..to].iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let micros = match &s[19..] {
        [] => 0,
        [b'.', fraction @ ..]
            if (1..=9).contains(&fraction.len()) && fraction.iter().all(u8::is_ascii_digit) =>
        {
            let shown = fraction.len().min(6);
            digits(20, 20 + shown)? * 10i64.pow((6 - shown) as u32)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60 * 1_000_000 + second * 1_000_000 + micros)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn looks_numeric(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|b| *b == b'.').count() <= 1
}

/// RFC 3339 text of a microsecond timestamp, for messages and properties.
pub fn format_micros(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{us}µs"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn parse(p: &TimeParser, s: &str) -> Result<i64, String> {
        p.parse(&Value::Str(Cow::Borrowed(s)))
    }

    const T: i64 = 1_413_976_541_000_000; // 2014-10-22T11:15:41Z

    #[test]
    fn iso_with_and_without_offsets() {
        let p = TimeParser::default();
        assert_eq!(parse(&p, "2014-10-22T11:15:41Z"), Ok(T));
        assert_eq!(parse(&p, "2014-10-22T13:15:41+02:00"), Ok(T));
        assert_eq!(parse(&p, "2014-10-22 13:15:41.000000+02:00"), Ok(T));
        assert_eq!(parse(&p, "2014-10-22T13:15:41.000+0200"), Ok(T));
        assert_eq!(parse(&p, "2014-10-22 11:15:41"), Ok(T));
        assert_eq!(parse(&p, "2014/10/22 11:15:41.000"), Ok(T));
        assert_eq!(parse(&p, "2014-10-22T11:15:41.5Z"), Ok(T + 500_000));
    }

    #[test]
    fn epoch_numbers_by_unit_or_magnitude() {
        let p = TimeParser::default();
        assert_eq!(parse(&p, "1413976541"), Ok(T));
        assert_eq!(parse(&p, "1413976541000"), Ok(T));
        assert_eq!(p.parse(&Value::Int(1_413_976_541_000_000)), Ok(T));
        let ms = TimeParser::new(None, Some(TimeUnit::Ms));
        assert_eq!(parse(&ms, "1413976541000"), Ok(T));
        assert!(parse(&ms, "2014-10-22").is_err());
    }

    #[test]
    fn strftime_formats() {
        let p = TimeParser::new(Some("%d.%m.%Y %H:%M".into()), None);
        assert_eq!(parse(&p, "22.10.2014 11:15"), Ok(T - 41_000_000));
        let z = TimeParser::new(Some("%d/%m/%Y %H:%M:%S %z".into()), None);
        assert_eq!(parse(&z, "22/10/2014 13:15:41 +0200"), Ok(T));
        let d = TimeParser::new(Some("%Y%m%d".into()), None);
        assert_eq!(
            parse(&d, "20141022"),
            Ok(T - (11 * 3600 + 15 * 60 + 41) * 1_000_000)
        );
        assert!(parse(&p, "yesterday").unwrap_err().contains("%d.%m.%Y"));
    }

    /// The digit-by-digit reading of `...Z` times agrees with chrono's RFC 3339 parser on
    /// every date it takes, and leaves it what it does not.
    #[test]
    fn utc_times_read_as_chrono_reads_them() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let chrono = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|d| d.timestamp_micros())
        };
        let mut taken = 0;
        for _ in 0..20_000 {
            let fraction: String = (0..rng.random_range(0..11))
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect();
            let s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{}",
                rng.random_range(1960..2250),
                rng.random_range(0..14),
                rng.random_range(0..33),
                rng.random_range(0..25),
                rng.random_range(0..61),
                rng.random_range(0..62),
                if rng.random_bool(0.8) { "." } else { "" },
                fraction,
            ) + ["Z", "z", "+00:00", ""][rng.random_range(0..4)];
            match utc_rfc3339(s.as_bytes()) {
                Some(us) => {
                    taken += 1;
                    assert_eq!(Some(us), chrono(&s), "{s}");
                }
                None => {
                    // Left to chrono: only what it refuses, or what this does not read
                    // (another suffix, a leap second, more than nine fraction digits).
                    let fraction = s
                        .split_once('.')
                        .map_or(0, |(_, f)| f.bytes().take_while(u8::is_ascii_digit).count());
                    let leap = &s[17..19] == "60";
                    assert!(
                        !s.ends_with('Z') || leap || fraction > 9 || chrono(&s).is_none(),
                        "{s} was left to chrono"
                    );
                }
            }
        }
        assert!(taken > 2_000, "only {taken} taken");
        assert_eq!(utc_rfc3339(b"2014-10-22T11:15:41Z"), Some(T));
        assert_eq!(
            utc_rfc3339(b"2014-10-22T11:15:41.1234567Z"),
            Some(T + 123_456)
        );
        assert_eq!(
            utc_rfc3339(b"2024-02-29T00:00:00Z"),
            chrono("2024-02-29T00:00:00Z")
        );
        assert_eq!(utc_rfc3339(b"2023-02-29T00:00:00Z"), None);
    }

    #[test]
    fn absurd_times_are_rejected() {
        let p = TimeParser::new(None, Some(TimeUnit::S));
        assert!(parse(&p, "-5").unwrap_err().contains("outside"));
        assert!(parse(&TimeParser::default(), "9999-01-01T00:00:00Z").is_err());
        assert!(parse(&TimeParser::default(), "").is_err());
    }
}
