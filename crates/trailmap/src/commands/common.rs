//! What the mining commands share: names to ids, the data's "now", numbers for people.

use anyhow::Context;
use trailmap_sessionize::JourneyLog;

/// A touchpoint's id in the log, if any event has it.
pub fn touchpoint_id(log: &JourneyLog, name: &str) -> Option<u32> {
    log.touchpoints
        .iter()
        .position(|t| t == name)
        .map(|i| i as u32)
}

/// The id of a touchpoint some event has (its position in `touchpoints`); a name no event
/// has is an error that lists what there is.
pub fn require_touchpoint(touchpoints: &[String], flag: &str, name: &str) -> anyhow::Result<u32> {
    touchpoints
        .iter()
        .position(|t| t == name)
        .map(|i| i as u32)
        .with_context(|| {
            format!(
                "{flag} {name}: no event has this touchpoint; touchpoints in the input: {}",
                known(touchpoints)
            )
        })
}

/// Touchpoint names, for error messages.
pub fn known(touchpoints: &[String]) -> String {
    let mut names: Vec<&str> = touchpoints.iter().map(String::as_str).collect();
    if names.is_empty() {
        return "none (no events were read)".into();
    }
    names.sort_unstable();
    if names.len() > 40 {
        format!("{}, … ({} in all)", names[..40].join(", "), names.len())
    } else {
        names.join(", ")
    }
}

/// Warns about step or exclusion names no event has: they match nothing.
pub fn warn_unknown(touchpoints: &[String], unknown: &[String]) {
    for name in unknown {
        eprintln!(
            "warning: no event has touchpoint `{name}`; it matches nothing (touchpoints: {})",
            known(touchpoints)
        );
    }
}

/// The data's "now": `--as-of` (RFC 3339) or the last event's time.
pub fn as_of(log: &JourneyLog, flag: Option<&str>) -> anyhow::Result<i64> {
    match flag {
        Some(text) => instant("--as-of", text),
        None => Ok(log.last_time().unwrap_or(0)),
    }
}

/// An RFC 3339 time given to `flag`, in µs since the epoch.
pub fn instant(flag: &str, text: &str) -> anyhow::Result<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .with_context(|| {
            format!("{flag} {text}: not an RFC 3339 time; write it like 2026-01-31T00:00:00Z")
        })
}

/// Seconds for people: "42s", "3m 20s", "5.2h", "3.1d".
pub fn duration(seconds: Option<f64>) -> String {
    let Some(s) = seconds else {
        return String::new();
    };
    if s < 60.0 {
        format!("{s:.0}s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else if s < 86_400.0 {
        format!("{:.1}h", s / 3600.0)
    } else {
        format!("{:.1}d", s / 86_400.0)
    }
}

/// A rate as a percentage with one decimal.
pub fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// A line of table output. Errors (a closed pipe) are returned, not panicked on.
pub fn say(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{text}")
}

/// A section title above a table.
pub fn title(text: &str) -> std::io::Result<()> {
    say(&format!("\n{text}"))
}

/// `--dip`: a known change of behaviour injected into generated journeys (`gen`, `serve
/// --generate`), for testing what should notice it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DipArgs {
    /// From --dip-from until --dip-until, customers go from touchpoint FROM to TO FACTOR
    /// times as often (the rest leave), e.g. `checkout_view:purchase:0.4`. The ground truth
    /// (--truth) stays the normal model's.
    #[arg(long, value_name = "FROM:TO:FACTOR", requires = "dip_from")]
    pub dip: Option<String>,

    /// When the dip starts (RFC 3339, event time).
    #[arg(long, value_name = "TIME", requires = "dip")]
    pub dip_from: Option<String>,

    /// When it ends (RFC 3339) [default: never].
    #[arg(long, value_name = "TIME", requires = "dip")]
    pub dip_until: Option<String>,

    /// Only for visitors on this kind of device (desktop, mobile, tablet: the clickstream's
    /// `properties.device`) [default: all].
    #[arg(long, value_name = "KIND", requires = "dip")]
    pub dip_device: Option<String>,
}

impl DipArgs {
    /// `model` with the dip, if one is asked for.
    pub fn apply(
        &self,
        model: trailmap_gen::JourneyModel,
    ) -> anyhow::Result<trailmap_gen::JourneyModel> {
        let (Some(dip), Some(from)) = (&self.dip, &self.dip_from) else {
            return Ok(model);
        };
        let parts: Vec<&str> = dip.split(':').collect();
        let [a, b, factor] = parts[..] else {
            anyhow::bail!(
                "--dip {dip}: write it as FROM:TO:FACTOR, like checkout_view:purchase:0.4"
            );
        };
        let factor: f64 = factor
            .parse()
            .with_context(|| format!("--dip {dip}: `{factor}` is not a number"))?;
        let starts = instant("--dip-from", from)?;
        let ends = match &self.dip_until {
            Some(t) => instant("--dip-until", t)?,
            None => i64::MAX,
        };
        anyhow::ensure!(starts < ends, "--dip-until must come after --dip-from");
        let device = self.dip_device.as_deref();
        Ok(model.with_dip_on(a, b, factor, starts, ends, device)?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_naturally() {
        assert_eq!(super::duration(Some(42.4)), "42s");
        assert_eq!(super::duration(Some(200.0)), "3m 20s");
        assert_eq!(super::duration(Some(5.0 * 3600.0)), "5.0h");
        assert_eq!(super::duration(Some(3.0 * 86_400.0)), "3.0d");
        assert_eq!(super::duration(None), "");
    }
}
