//! Durations as people write them in config and flags, and event-time units.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// A wall-clock time as µs since the Unix epoch (negative before it).
pub fn unix_micros(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

/// A non-negative duration in microseconds, written `30m`, `24h`, `1d 12h`, `90s` or `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(pub i64);

impl Span {
    pub const ZERO: Span = Span(0);

    pub fn from_secs(secs: i64) -> Span {
        Span(secs * MICROS_PER_SECOND)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// As a std duration (a negative span, which parsing never gives, is zero).
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_micros(self.0.max(0) as u64)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Span, String> {
        let s = s.trim();
        if s == "0" {
            return Ok(Span::ZERO);
        }
        let d = humantime::parse_duration(s).map_err(|e| {
            format!("`{s}` is not a duration ({e}); write it like `30m`, `24h` or `7d`")
        })?;
        i64::try_from(d.as_micros())
            .map(Span)
            .map_err(|_| format!("`{s}` is too long a duration"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.duration()))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Span, D::Error> {
        let s = String::deserialize(de)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

/// The unit of numeric timestamps (epoch offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    S,
    Ms,
    Us,
}

impl TimeUnit {
    pub fn to_micros(self, value: i64) -> Option<i64> {
        match self {
            TimeUnit::S => value.checked_mul(MICROS_PER_SECOND),
            TimeUnit::Ms => value.checked_mul(1000),
            TimeUnit::Us => Some(value),
        }
    }

    pub fn to_micros_f64(self, value: f64) -> Option<i64> {
        let scale = match self {
            TimeUnit::S => 1e6,
            TimeUnit::Ms => 1e3,
            TimeUnit::Us => 1.0,
        };
        let v = (value * scale).round();
        (v.is_finite() && v.abs() < 9.0e18).then_some(v as i64)
    }

    /// Guesses the unit of an epoch number by magnitude, as most log tools do: seconds until
    /// the year 5138, then milliseconds, then microseconds.
    pub fn guess(value: i64) -> TimeUnit {
        let v = value.unsigned_abs();
        if v < 100_000_000_000 {
            TimeUnit::S
        } else if v < 100_000_000_000_000 {
            TimeUnit::Ms
        } else {
            TimeUnit::Us
        }
    }
}

impl FromStr for TimeUnit {
    type Err = String;

    fn from_str(s: &str) -> Result<TimeUnit, String> {
        match s {
            "s" => Ok(TimeUnit::S),
            "ms" => Ok(TimeUnit::Ms),
            "us" | "µs" => Ok(TimeUnit::Us),
            other => Err(format!("`{other}` is not a time unit; use s, ms or us")),
        }
    }
}

/// Event times outside `[1970-01-01, 2200-01-01)` are rejected as absurd: they come from
/// unit mix-ups (milliseconds read as seconds) or placeholder dates, never from behaviour.
pub const MIN_PLAUSIBLE_MICROS: i64 = 0;
pub const MAX_PLAUSIBLE_MICROS: i64 = 7_258_118_400 * MICROS_PER_SECOND;

#[inline]
pub fn is_plausible(micros: i64) -> bool {
    (MIN_PLAUSIBLE_MICROS..MAX_PLAUSIBLE_MICROS).contains(&micros)
}

/// Whether every one of `micros` is plausible (see [`is_plausible`]). Times of this era are
/// below 2^52 µs (year 2112) and not negative: OR-ing them all and looking at the high bits
/// is one vectorised pass, where a range check per value is not. Anything else is checked
/// value by value.
pub fn all_plausible(micros: &[i64]) -> bool {
    const ERA: u64 = 1 << 52;
    const _: () = assert!(MIN_PLAUSIBLE_MICROS == 0 && ERA <= MAX_PLAUSIBLE_MICROS as u64);
    micros.iter().fold(0u64, |bits, &t| bits | t as u64) < ERA
        || micros.iter().all(|&t| is_plausible(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_plausible_is_each_plausible() {
        let era = 1i64 << 52;
        let edges = [
            i64::MIN,
            -1,
            0,
            1,
            1_700_000_000_000_000,
            era - 1,
            era,
            MAX_PLAUSIBLE_MICROS - 1,
            MAX_PLAUSIBLE_MICROS,
            i64::MAX,
        ];
        for &a in &edges {
            for &b in &edges {
                let times = [1_700_000_000_000_000, a, 5, b];
                assert_eq!(
                    all_plausible(&times),
                    times.iter().all(|&t| is_plausible(t)),
                    "{times:?}"
                );
            }
        }
        assert!(all_plausible(&[]));
    }

    #[test]
    fn unix_micros_counts_from_the_epoch_both_ways() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(
            unix_micros(UNIX_EPOCH + Duration::from_micros(1_500)),
            1_500
        );
        assert_eq!(unix_micros(UNIX_EPOCH - Duration::from_micros(7)), -7);
    }

    #[test]
    fn spans_parse_like_people_write_them() {
        assert_eq!("30m".parse::<Span>().unwrap(), Span::from_secs(1800));
        assert_eq!(
            "1d 12h".parse::<Span>().unwrap(),
            Span::from_secs(36 * 3600)
        );
        assert_eq!("0".parse::<Span>().unwrap(), Span::ZERO);
        assert!("thirty".parse::<Span>().unwrap_err().contains("30m"));
    }

    #[test]
    fn units_guess_by_magnitude() {
        assert_eq!(TimeUnit::guess(1_511_658_000), TimeUnit::S);
        assert_eq!(TimeUnit::guess(1_511_658_000_000), TimeUnit::Ms);
        assert_eq!(TimeUnit::guess(1_511_658_000_000_000), TimeUnit::Us);
    }
}
