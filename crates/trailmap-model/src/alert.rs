//! Alert rules (`[alerts.NAME]`) and where notifications go (`[alerting]`).
//!
//! A rule watches the conversion of one stage of a configured journey (from one step to a
//! later one, or the whole funnel) and says when it dips below its baseline by more than
//! noise explains. Detection itself lives in `trailmap-live` (`alert`); these are the
//! definitions, checked when the config is loaded.

use crate::config::JourneyConfig;
use crate::time::Span;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the current window's conversion is compared with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Baseline {
    /// The cohorts of the `span` just before the current window.
    Trailing { span: Span },
    /// The same hours of the week as the current window, over the `weeks` weeks before it
    /// (for traffic with a weekly rhythm: Monday mornings compared with Monday mornings).
    HourOfWeek { weeks: u32 },
}

impl Default for Baseline {
    fn default() -> Self {
        Baseline::Trailing {
            span: Span::from_secs(24 * 3600),
        }
    }
}

/// One alert rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// A configured journey (`[journeys.NAME]`).
    pub journey: String,
    /// The stage watched: conversion from step `from` to step `to` (step touchpoints of the
    /// journey, `from` before `to`). Absent: the first and the last step (the whole funnel).
    pub from: Option<String>,
    pub to: Option<String>,
    /// How often the rule is evaluated, in event time.
    #[serde(default = "defaults::every")]
    pub every: Span,
    /// The current window: journeys that entered within this span are compared with the
    /// baseline. It ends where the journey's conversion window has fully elapsed, so every
    /// journey in it has had its full chance to convert.
    #[serde(default = "defaults::window")]
    pub window: Span,
    #[serde(default)]
    pub baseline: Baseline,
    /// Fewer settled journeys than this in the current window (or the baseline) never fire.
    #[serde(default = "defaults::min_sample")]
    pub min_sample: u64,
    /// The relative drop that matters: 0.2 = conversion at least 20% below the baseline.
    #[serde(default = "defaults::drop")]
    pub drop: f64,
    /// Confidence of the one-sided two-proportion test that conversion fell at all (the
    /// `drop` threshold is checked on top), in (0.5, 1). Each evaluation tests at this
    /// level; overlapping windows evaluated every interval make false alarms over a day
    /// likelier than `1 - confidence`, which `for` and `drop` keep in check.
    #[serde(default = "defaults::confidence")]
    pub confidence: f64,
    /// The dip must hold this long (pending) before the alert fires, as Prometheus `for`.
    #[serde(rename = "for", default)]
    pub hold: Span,
    /// Extra labels sent with notifications (team, severity, …).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Alert on each of the top values of an attribute (`{ by = "device", top = 3 }`)
    /// instead of on the stage as a whole: a dip on mobile alone shows as one.
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
}

/// What a rule with a breakdown alerts on: each of the top values of an attribute.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Breakdown {
    /// The attribute: a column (`channel`, `source`, an identity column) or a property of
    /// the events (`device`, or `properties.KEY` to be explicit), as
    /// `trailmap funnel --breakdown` takes it. A journey's value is the one of the event that
    /// entered the funnel (its first step). The live pipeline keeps one attribute per event,
    /// so every rule with a breakdown must name the same one.
    pub by: String,
    /// The values alerted on: the `top` with the most settled journeys in the current
    /// window and the baseline together, at each evaluation. A value that leaves the top
    /// while its alert is pending or firing is still evaluated until that ends.
    #[serde(default = "defaults::top")]
    pub top: usize,
}

mod defaults {
    use crate::time::Span;

    pub fn every() -> Span {
        Span::from_secs(60)
    }
    pub fn window() -> Span {
        Span::from_secs(3600)
    }
    pub fn min_sample() -> u64 {
        200
    }
    pub fn drop() -> f64 {
        0.2
    }
    pub fn confidence() -> f64 {
        0.99
    }
    pub fn top() -> usize {
        5
    }
}

/// A rule resolved against its journey: step indices instead of names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// 0-based steps of the journey.
    pub from: usize,
    pub to: usize,
}

impl AlertRule {
    /// The stage this rule watches in `journey`; `(field, message)` when a step is unknown
    /// or out of order.
    pub fn stage(&self, journey: &JourneyConfig) -> Result<Stage, (String, String)> {
        let find = |field: &str, step: &Option<String>, default: usize| match step {
            None => Ok(default),
            Some(name) => journey.steps.iter().position(|s| s == name).ok_or_else(|| {
                (
                    field.to_string(),
                    format!(
                        "`{name}` is not a step of the journey (steps: {})",
                        journey.steps.join(", ")
                    ),
                )
            }),
        };
        let last = journey.steps.len().saturating_sub(1);
        let stage = Stage {
            from: find("from", &self.from, 0)?,
            to: find("to", &self.to, last)?,
        };
        if stage.from >= stage.to {
            return Err((
                "to".into(),
                "must be a later step of the journey than `from`".into(),
            ));
        }
        Ok(stage)
    }

    /// What the types cannot check, given the configured journeys; `(field, message)`.
    pub fn validate(
        &self,
        journeys: &BTreeMap<String, JourneyConfig>,
    ) -> Result<Stage, (String, String)> {
        let journey = journeys.get(&self.journey).ok_or_else(|| {
            (
                "journey".to_string(),
                format!(
                    "`{}` is not a configured journey (configured: {})",
                    self.journey,
                    journeys.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let positive = |field: &str, span: Span| {
            if span.micros() <= 0 {
                Err((
                    field.to_string(),
                    "must be longer than 0, like \"1h\"".into(),
                ))
            } else {
                Ok(())
            }
        };
        positive("every", self.every)?;
        positive("window", self.window)?;
        match self.baseline {
            Baseline::Trailing { span } => positive("baseline.span", span)?,
            Baseline::HourOfWeek { weeks: 0 } => {
                return Err(("baseline.weeks".into(), "must be at least 1".into()));
            }
            Baseline::HourOfWeek { .. } if self.window.micros() > 7 * 86_400_000_000 => {
                return Err((
                    "window".into(),
                    "must be at most 7d with an hour_of_week baseline".into(),
                ));
            }
            Baseline::HourOfWeek { .. } => {}
        }
        if self.min_sample == 0 {
            return Err(("min_sample".into(), "must be at least 1".into()));
        }
        if !(self.drop > 0.0 && self.drop < 1.0) {
            return Err((
                "drop".into(),
                "must be a fraction between 0 and 1, like 0.2 for a 20% drop".into(),
            ));
        }
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return Err((
                "confidence".into(),
                "must be between 0.5 and 1, like 0.99".into(),
            ));
        }
        if self.hold.micros() < 0 {
            return Err(("for".into(), "must not be negative".into()));
        }
        if let Some(b) = &self.breakdown {
            if b.by.trim().is_empty() {
                return Err((
                    "breakdown.by".into(),
                    "must name an attribute, like \"channel\" or \"device\"".into(),
                ));
            }
            if b.top == 0 {
                return Err(("breakdown.top".into(), "must be at least 1".into()));
            }
        }
        self.stage(journey)
    }
}

/// Where alert notifications go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Webhook URLs that get an Alertmanager-style JSON payload (`"version": "4"`) when an
    /// alert fires and when it resolves.
    pub webhooks: Vec<String>,
    /// A failed delivery is retried this many times, with backoff doubling from one second.
    pub retries: u32,
    /// Where alert states are kept across restarts, relative to `storage.data_dir` unless
    /// absolute.
    pub state_file: String,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            webhooks: Vec::new(),
            retries: 5,
            state_file: "alerts.json".into(),
        }
    }
}
