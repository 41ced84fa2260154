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

    #[test]
    fn absurd_times_are_rejected() {
        let p = TimeParser::new(None, Some(TimeUnit::S));
        assert!(parse(&p, "-5").unwrap_err().contains("outside"));
        assert!(parse(&TimeParser::default(), "9999-01-01T00:00:00Z").is_err());
        assert!(parse(&TimeParser::default(), "").is_err());
    }
}
