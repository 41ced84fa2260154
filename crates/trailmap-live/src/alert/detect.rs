//! Is a stage's conversion dipping? One evaluation of one rule at one moment.
//!
//! Which journeys count: only those whose outcome is known. A journey that entered a minute
//! ago and has not converted yet may well convert tomorrow; counting it as lost makes every
//! recent window look like a dip, and leaving it out while counting the quick converters
//! makes it look like a rise. So the current window ends where the journey's conversion
//! window has fully elapsed (the cohorts in it have had their whole chance), and whatever
//! is still maturing there (a journey that entered its funnel late in a long session) is
//! left out. The price is delay: a rule on a 2 h funnel sees a dip 2 h after the cohorts it
//! hits entered, so alerting funnels should have windows sized for it.
//!
//! Cohorts are sessions, by the minute they began. A session that reaches the stage's
//! first step more than a journey window after it began may still be maturing at an
//! evaluation; it is left out if it has not converted yet but counted if it has, which
//! leans the current window's conversion up a little against a settled baseline (sessions
//! that long are rare: a 30-minute gap cuts them). Grouping by the funnel's entry time
//! would remove that lean.
//!
//! The test: conversion in the current window against the baseline's, one-sided
//! two-proportion z-test (pooled), plus a minimum sample on both sides and a minimum
//! relative drop, so that neither noise nor a small stage nor a statistically real but
//! immaterial wobble fires.

use crate::counts::{BUCKET_MICROS, ByValue, FunnelLevels, bucket_of};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use trailmap_model::alert::{AlertRule, Baseline, Stage};
use trailmap_model::config::JourneyConfig;

const WEEK_MINUTES: i64 = 7 * 24 * 60;

/// Journeys of a stage whose outcome is known: entered the `from` step, and of those, how
/// many reached the `to` step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StageCounts {
    pub entered: i64,
    pub converted: i64,
}

impl StageCounts {
    /// The stage `from → to` of these levels, maturing journeys left out.
    pub fn of(levels: &FunnelLevels, stage: Stage) -> StageCounts {
        StageCounts {
            entered: levels.reached(stage.from) - levels.maturing_between(stage.from, stage.to),
            converted: levels.reached(stage.to),
        }
    }

    pub fn conversion(&self) -> Option<f64> {
        (self.entered > 0).then(|| self.converted.max(0) as f64 / self.entered as f64)
    }
}

/// Minutes, in whole minutes since the epoch, `[start, end)`.
pub type Minutes = Range<i64>;

/// A rule resolved against its journey: the stage by step index, the delay by which the
/// journey's window elapses, all in whole minutes.
#[derive(Debug, Clone)]
pub struct Detector {
    pub name: String,
    pub rule: AlertRule,
    /// Position of the rule's journey among the configured journeys (the live funnels).
    pub funnel: usize,
    pub stage: Stage,
    /// The stage's step names.
    pub from: String,
    pub to: String,
    /// The journey's conversion window, minutes, rounded up.
    pub settle_minutes: i64,
}

fn minutes_up(micros: i64) -> i64 {
    micros.div_euclid(BUCKET_MICROS) + i64::from(micros.rem_euclid(BUCKET_MICROS) != 0)
}

/// The one-sided p-value of "the current conversion is below the baseline's" under the
/// pooled two-proportion z-test; `None` when the test says nothing (empty side, or every
/// journey on both sides converting, or none).
pub fn dip_p_value(current: StageCounts, baseline: StageCounts) -> Option<f64> {
    let (n1, n0) = (current.entered as f64, baseline.entered as f64);
    if n1 <= 0.0 || n0 <= 0.0 {
        return None;
    }
    let (x1, x0) = (
        current.converted.max(0) as f64,
        baseline.converted.max(0) as f64,
    );
    let pooled = (x1 + x0) / (n1 + n0);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n0)).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return None;
    }
    let z = (x0 / n0 - x1 / n1) / se;
    // P(Z >= z) = erfc(z / √2) / 2.
    Some(0.5 * libm::erfc(z / std::f64::consts::SQRT_2))
}

/// What an evaluation says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Conversion is down by at least the rule's drop, beyond what noise explains.
    Dipping,
    /// It is not.
    Steady,
    /// Too few settled journeys to tell (the minimum sample): the alert stays as it is. A
    /// stage whose traffic dries up has not recovered, and a small one must not fire.
    TooFew,
}

/// One evaluation of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Evaluation {
    /// When (event time, Unix µs).
    pub at: i64,
    /// Settled journeys in the current window and in the baseline.
    pub current: StageCounts,
    pub baseline: StageCounts,
    pub current_conversion: Option<f64>,
    pub baseline_conversion: Option<f64>,
    /// `1 - current / baseline`.
    pub relative_drop: Option<f64>,
    pub p_value: Option<f64>,
    pub verdict: Verdict,
    /// Why it holds or not, for people.
    pub reason: String,
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
}

impl Detector {
    /// `rule` on `journey`, the `funnel`-th configured journey, watching `stage` of it.
    pub fn new(
        name: &str,
        rule: &AlertRule,
        funnel: usize,
        stage: Stage,
        journey: &JourneyConfig,
    ) -> Self {
        let step = |k: usize| journey.steps.get(k).cloned().unwrap_or_default();
        Detector {
            name: name.to_string(),
            rule: rule.clone(),
            funnel,
            stage,
            from: step(stage.from),
            to: step(stage.to),
            settle_minutes: minutes_up(journey.window.micros()),
        }
    }

    /// The current window's minutes and the baseline's, for an evaluation at `at` (µs).
    pub fn windows(&self, at: i64) -> (Minutes, Vec<Minutes>) {
        let end = bucket_of(at) - self.settle_minutes;
        let w = minutes_up(self.rule.window.micros()).max(1);
        let current = end - w..end;
        let baseline = match self.rule.baseline {
            Baseline::Trailing { span } => {
                let b = minutes_up(span.micros()).max(1);
                std::iter::once(end - w - b..end - w).collect()
            }
            Baseline::HourOfWeek { weeks } => (1..=i64::from(weeks))
                .map(|k| current.start - k * WEEK_MINUTES..current.end - k * WEEK_MINUTES)
                .collect(),
        };
        (current, baseline)
    }

    /// Evaluation times in `(after, upto]`: multiples of the rule's interval (µs), in
    /// order, lazily (a span of millions of intervals costs nothing until taken); with a
    /// `cap`, only the latest `cap` of them (a backtest over an absurd span).
    pub fn due(
        &self,
        after: Option<i64>,
        upto: i64,
        cap: Option<usize>,
    ) -> impl Iterator<Item = i64> + use<> {
        let every = self.rule.every.micros().max(1);
        let last = upto.div_euclid(every);
        let mut first = match after {
            Some(t) => t.div_euclid(every).saturating_add(1),
            None => last,
        };
        if let Some(cap) = cap {
            let cap = i64::try_from(cap).unwrap_or(i64::MAX);
            first = first.max(last.saturating_sub(cap).saturating_add(1));
        }
        (first..=last).map(move |k| k.saturating_mul(every))
    }

    /// Decides at `at` for each breakdown value worth watching: the `top` values with the
    /// most settled journeys (current window and baseline together; ties by name) among
    /// those with levels and the `known` ones (watched before), and every known value that
    /// is `active` (pending or firing) whatever its rank, so an alert whose value fell out
    /// of the top still resolves. Levels are by value id; `names` names them.
    pub fn evaluate_values(
        &self,
        at: i64,
        current: &ByValue,
        baseline: &ByValue,
        names: &[String],
        top: usize,
        known: &[(String, bool)],
    ) -> Vec<(String, Evaluation)> {
        let id_of = |name: &str| {
            (0..names.len())
                .find(|&v| names[v] == name)
                .map(|v| v as u32)
        };
        let mut candidates: std::collections::BTreeMap<String, Option<u32>> = current
            .keys()
            .chain(baseline.keys())
            .map(|&v| {
                let name = names
                    .get(v as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("#{v}"));
                (name, Some(v))
            })
            .collect();
        for (name, _) in known {
            candidates
                .entry(name.clone())
                .or_insert_with(|| id_of(name));
        }
        let settled = |by: &ByValue, v: Option<u32>| {
            v.and_then(|v| by.get(&v))
                .map_or(0, |l| StageCounts::of(l, self.stage).entered)
        };
        let mut ranked: Vec<(i64, String, Option<u32>)> = candidates
            .into_iter()
            .map(|(name, v)| (settled(current, v) + settled(baseline, v), name, v))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let (chosen, rest) = ranked.split_at(top.min(ranked.len()));
        let active = |name: &str| known.iter().any(|(n, a)| n == name && *a);
        let empty = FunnelLevels::default();
        chosen
            .iter()
            .chain(rest.iter().filter(|(_, name, _)| active(name)))
            .map(|(_, name, v)| {
                let of = |by: &ByValue| v.and_then(|v| by.get(&v)).unwrap_or(&empty).clone();
                let mut e = self.evaluate(at, &of(current), &of(baseline));
                // A value with no journeys at all, now or in the baseline, is gone (an
                // ended campaign, a retired device): its alert is over. (The stage as a
                // whole drying up is no recovery; one of its values vanishing is.)
                if e.current.entered == 0 && e.baseline.entered == 0 {
                    e.verdict = Verdict::Steady;
                    e.reason = "no journeys with this value in the window or the baseline: gone"
                        .to_string();
                }
                (name.clone(), e)
            })
            .collect()
    }

    /// Decides at `at` from the current window's levels and the baseline's.
    pub fn evaluate(&self, at: i64, current: &FunnelLevels, baseline: &FunnelLevels) -> Evaluation {
        let (current, baseline) = (
            StageCounts::of(current, self.stage),
            StageCounts::of(baseline, self.stage),
        );
        let (now, before) = (current.conversion(), baseline.conversion());
        let relative_drop = match (now, before) {
            (Some(now), Some(before)) if before > 0.0 => Some(1.0 - now / before),
            _ => None,
        };
        let p_value = dip_p_value(current, baseline);
        let min = i64::try_from(self.rule.min_sample).unwrap_or(i64::MAX);
        let alpha = 1.0 - self.rule.confidence;
        let (verdict, reason) = if current.entered < min {
            (
                Verdict::TooFew,
                format!(
                    "too few settled journeys in the window: {} < {min}",
                    current.entered
                ),
            )
        } else if baseline.entered < min {
            (
                Verdict::TooFew,
                format!(
                    "too few settled journeys in the baseline: {} < {min}",
                    baseline.entered
                ),
            )
        } else {
            let drop = relative_drop.unwrap_or(0.0);
            let p = p_value.unwrap_or(1.0);
            let summary = format!(
                "conversion {} vs {} baseline ({:+.0}%), p = {p:.2e}",
                percent(now),
                percent(before),
                -drop * 100.0
            );
            if drop < self.rule.drop {
                (
                    Verdict::Steady,
                    format!(
                        "{summary}: less than the {:.0}% drop that matters",
                        self.rule.drop * 100.0
                    ),
                )
            } else if p >= alpha {
                (
                    Verdict::Steady,
                    format!(
                        "{summary}: could be noise at {:.1}% confidence",
                        self.rule.confidence * 100.0
                    ),
                )
            } else {
                (Verdict::Dipping, summary)
            }
        };
        Evaluation {
            at,
            current,
            baseline,
            current_conversion: now,
            baseline_conversion: before,
            relative_drop,
            p_value,
            verdict,
            reason,
        }
    }
}

#[cfg(test)]
// Lists of one range of minutes are meant: a window is a list of ranges.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use trailmap_model::time::Span;

    fn rule() -> AlertRule {
        AlertRule {
            journey: "j".into(),
            from: None,
            to: None,
            every: Span::from_secs(60),
            window: Span::from_secs(3600),
            baseline: Baseline::Trailing {
                span: Span::from_secs(6 * 3600),
            },
            min_sample: 100,
            drop: 0.2,
            confidence: 0.99,
            hold: Span::ZERO,
            labels: Default::default(),
            breakdown: None,
        }
    }

    /// A two-step journey with a conversion window of `micros`.
    fn journey(micros: i64) -> JourneyConfig {
        let mut j = JourneyConfig::of_steps(vec!["a".into(), "b".into()]);
        j.window = Span(micros);
        j
    }

    fn levels(entered: i64, converted: i64) -> FunnelLevels {
        // Two steps: level 1 = entered only, level 2 = converted.
        FunnelLevels {
            levels: vec![0, entered - converted, converted],
            maturing: vec![],
        }
    }

    #[test]
    fn the_p_value_matches_a_textbook_case() {
        // 30/100 vs 45/100: z = 0.15 / sqrt(0.375 * 0.625 * 0.02) = 2.191, P(Z >= z) = 0.01423.
        let p = dip_p_value(
            StageCounts {
                entered: 100,
                converted: 30,
            },
            StageCounts {
                entered: 100,
                converted: 45,
            },
        )
        .unwrap();
        assert!((p - 0.01423).abs() < 1e-4, "{p}");
        assert_eq!(
            dip_p_value(
                StageCounts::default(),
                StageCounts {
                    entered: 5,
                    converted: 1
                }
            ),
            None
        );
        assert_eq!(
            dip_p_value(
                StageCounts {
                    entered: 5,
                    converted: 5
                },
                StageCounts {
                    entered: 5,
                    converted: 5
                }
            ),
            None
        );
    }

    #[test]
    fn windows_end_where_the_journey_window_has_elapsed() {
        let d = Detector::new(
            "r",
            &rule(),
            0,
            Stage { from: 0, to: 1 },
            &journey(2 * 3600 * 1_000_000 + 1),
        );
        assert_eq!(d.settle_minutes, 121);
        let at = 1000 * BUCKET_MICROS + 30_000_000;
        let (current, baseline) = d.windows(at);
        assert_eq!(current, 1000 - 121 - 60..1000 - 121);
        assert_eq!(baseline, vec![current.start - 360..current.start]);
        let mut weekly = rule();
        weekly.baseline = Baseline::HourOfWeek { weeks: 2 };
        let d = Detector::new(
            "r",
            &weekly,
            0,
            Stage { from: 0, to: 1 },
            &journey(BUCKET_MICROS),
        );
        let (current, baseline) = d.windows(at);
        assert_eq!(
            baseline[1],
            current.start - 2 * WEEK_MINUTES..current.end - 2 * WEEK_MINUTES
        );
    }

    #[test]
    fn evaluations_fall_on_multiples_of_the_interval() {
        let d = Detector::new("r", &rule(), 0, Stage { from: 0, to: 1 }, &journey(1));
        let m = BUCKET_MICROS;
        assert_eq!(
            d.due(None, 5 * m + 3, None).collect::<Vec<_>>(),
            vec![5 * m]
        );
        assert_eq!(
            d.due(Some(5 * m), 7 * m, None).collect::<Vec<_>>(),
            vec![6 * m, 7 * m]
        );
        assert_eq!(d.due(Some(7 * m), 7 * m + 59, None).count(), 0);
        // Lazily: a leap in event time costs only what is taken.
        assert_eq!(
            d.due(Some(0), 1_000_000 * m, None)
                .take(2)
                .collect::<Vec<_>>(),
            vec![m, 2 * m]
        );
        // A cap keeps the latest instants.
        assert_eq!(
            d.due(Some(0), 1_000_000 * m, Some(2)).collect::<Vec<_>>(),
            vec![999_999 * m, 1_000_000 * m]
        );
        assert_eq!(d.due(Some(0), i64::MAX, Some(1)).count(), 1);
        assert_eq!(d.due(Some(0), 3 * m, Some(usize::MAX)).count(), 3);
    }

    #[test]
    fn a_dip_needs_sample_size_effect_and_confidence() {
        let d = Detector::new("r", &rule(), 0, Stage { from: 0, to: 1 }, &journey(1));
        let baseline = levels(3000, 900);
        // 30% -> 15% on 400 journeys: fires.
        let e = d.evaluate(0, &levels(400, 60), &baseline);
        assert_eq!(e.verdict, Verdict::Dipping, "{}", e.reason);
        assert!((e.relative_drop.unwrap() - 0.5).abs() < 1e-9);
        // The same halving on 40 journeys: below the minimum sample.
        let e = d.evaluate(0, &levels(40, 6), &baseline);
        assert!(
            e.verdict == Verdict::TooFew && e.reason.contains("too few"),
            "{}",
            e.reason
        );
        // 30% -> 27%: real perhaps, but under the 20% that matters.
        let e = d.evaluate(0, &levels(20_000, 5400), &baseline);
        assert!(
            e.verdict == Verdict::Steady && e.reason.contains("drop that matters"),
            "{}",
            e.reason
        );
        // 30% -> 22% on 100 journeys: a big drop, but noise can do that.
        let e = d.evaluate(0, &levels(100, 22), &baseline);
        assert!(
            e.verdict == Verdict::Steady && e.reason.contains("noise"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn maturing_journeys_count_on_neither_side() {
        // Three steps; the stage is step 0 -> step 2.
        let f = FunnelLevels {
            levels: vec![0, 50, 30, 20],
            maturing: vec![0, 10, 5, 0],
        };
        let s = StageCounts::of(&f, Stage { from: 0, to: 2 });
        assert_eq!(
            s,
            StageCounts {
                entered: 100 - 15,
                converted: 20
            }
        );
        let s = StageCounts::of(&f, Stage { from: 1, to: 2 });
        assert_eq!(
            s,
            StageCounts {
                entered: 50 - 5,
                converted: 20
            }
        );
    }

    #[test]
    fn a_breakdown_watches_the_top_values_and_the_active_ones() {
        let d = Detector::new("r", &rule(), 0, Stage { from: 0, to: 1 }, &journey(1));
        let names: Vec<String> = ["(none)", "a", "b", "c"].map(String::from).into();
        let by = |n: [(u32, i64, i64); 3]| -> ByValue {
            n.into_iter().map(|(v, e, c)| (v, levels(e, c))).collect()
        };
        // c is small, and dipping far below its baseline.
        let current = by([(1, 300, 90), (2, 200, 60), (3, 150, 10)]);
        let baseline = by([(1, 3000, 900), (2, 2000, 600), (3, 500, 150)]);
        let watched = |top, known: &[(String, bool)]| -> Vec<(String, Verdict)> {
            d.evaluate_values(0, &current, &baseline, &names, top, known)
                .into_iter()
                .map(|(v, e)| (v, e.verdict))
                .collect()
        };
        let steady = |v: &str| (v.to_string(), Verdict::Steady);
        assert_eq!(watched(2, &[]), [steady("a"), steady("b")]);
        // Firing on c: still evaluated, out of the top as it is.
        let c_firing = [("c".to_string(), true)];
        assert_eq!(
            watched(2, &c_firing),
            [steady("a"), steady("b"), ("c".into(), Verdict::Dipping)]
        );
        // A value watched before keeps its place while the top has room; with no journeys
        // at all, now or in the baseline, it is gone: steady, so a firing alert on it ends.
        let known = [("z".to_string(), false)];
        let all = watched(5, &known);
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(all[3], ("z".into(), Verdict::Steady));
        assert_eq!(watched(3, &known).len(), 3);
        let z_firing = [("z".to_string(), true)];
        assert_eq!(watched(3, &z_firing)[3], ("z".into(), Verdict::Steady));
        // A small value (journeys, but fewer than the minimum) stays too few to judge.
        let thin = by([(1, 300, 90), (2, 200, 60), (3, 20, 2)]);
        let e = d.evaluate_values(0, &thin, &baseline, &names, 3, &[]);
        assert_eq!(e[2].1.verdict, Verdict::TooFew);
    }
}
