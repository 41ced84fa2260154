//! Results as people and programs read them: names instead of ids, sorted, rates computed.
//!
//! These are the JSON shapes of `trailmap paths | funnel | dropoffs | kpis` (and, later, of
//! the SQL table functions and the HTTP API), so they live here, once.

use crate::dropoffs::{Dropoffs, ratio};
use crate::funnel::{Funnel, StepTallies, TrendPeriod};
use crate::graph::JourneyGraph;
use crate::hist::{DurationSummary, HUMAN_BINS};
use crate::kpi::Kpis;
use crate::paths::PathStats;
use crate::tree::{Direction, PathTree};
use serde::Serialize;
use std::cmp::Reverse;
use trailmap_model::config::{CountBy, StepOrder};

/// What a journey that ended does "next".
pub const END: &str = "(end)";
/// The bucket for everything below a budget.
pub const OTHER: &str = "other";

/// Touchpoint (and attribute value) names by id.
#[derive(Clone, Copy)]
pub struct Names<'a> {
    pub touchpoints: &'a [String],
}

impl<'a> Names<'a> {
    pub fn touchpoint(&self, id: u32) -> &'a str {
        if id == u32::MAX {
            return END;
        }
        self.touchpoints
            .get(id as usize)
            .map_or("(unknown)", String::as_str)
    }
}

#[derive(Debug, Serialize)]
pub struct Count {
    pub touchpoint: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct TransitionRow {
    pub from: String,
    pub to: String,
    pub count: u64,
    #[serde(flatten)]
    pub duration: DurationSummary,
}

#[derive(Debug, Serialize)]
pub struct VariantRow {
    pub path: Vec<String>,
    pub count: u64,
    /// Share of journeys following exactly this path.
    pub share: f64,
}

#[derive(Debug, Serialize)]
pub struct LoopRow {
    pub touchpoints: Vec<String>,
    pub transitions: u64,
}

#[derive(Debug, Serialize)]
pub struct BackAndForthRow {
    pub a: String,
    pub b: String,
    /// Occurrences of a → b → a.
    pub count: u64,
    pub journeys: u64,
}

/// `trailmap paths`.
#[derive(Debug, Serialize)]
pub struct PathsReport {
    pub events: u64,
    pub journeys: u64,
    pub transitions: Vec<TransitionRow>,
    pub starts: Vec<Count>,
    pub ends: Vec<Count>,
    pub distinct_variants: usize,
    pub variants: Vec<VariantRow>,
    /// Touchpoints customers circle between (strongly connected on the journey graph).
    pub loops: Vec<LoopRow>,
    pub back_and_forth: Vec<BackAndForthRow>,
    /// Touchpoints followed by themselves.
    pub repeats: Vec<Count>,
}

fn counts(it: impl Iterator<Item = (u32, u64)>, names: Names<'_>) -> Vec<Count> {
    let mut v: Vec<Count> = it
        .map(|(t, count)| Count {
            touchpoint: names.touchpoint(t).to_string(),
            count,
        })
        .collect();
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.touchpoint.cmp(&b.touchpoint))
    });
    v
}

/// `limit` 0 keeps everything.
fn top<T>(mut v: Vec<T>, limit: usize) -> Vec<T> {
    if limit > 0 {
        v.truncate(limit);
    }
    v
}

impl PathsReport {
    /// `top_variants` and `top_loops`: how many to list (0 = all).
    pub fn new(paths: &PathStats, names: Names<'_>, top_variants: usize, top_loops: usize) -> Self {
        let mut transitions: Vec<TransitionRow> = paths
            .transitions()
            .map(|(f, t, s)| TransitionRow {
                from: names.touchpoint(f).to_string(),
                to: names.touchpoint(t).to_string(),
                count: s.count,
                duration: s.durations.summary(),
            })
            .collect();
        transitions.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
        });
        // Most common first, ties by path names. Inputs with a million distinct variants are
        // common, so the top k are selected first and only they are sorted.
        let mut variants: Vec<(&[u32], u64)> = paths.variants();
        let distinct_variants = variants.len();
        let order = |a: &(&[u32], u64), b: &(&[u32], u64)| {
            // Lexicographic by names: the first touchpoint that differs, else the shorter.
            b.1.cmp(&a.1)
                .then_with(|| match a.0.iter().zip(b.0).position(|(x, y)| x != y) {
                    Some(i) => names.touchpoint(a.0[i]).cmp(names.touchpoint(b.0[i])),
                    None => a.0.len().cmp(&b.0.len()),
                })
        };
        if top_variants > 0 && variants.len() > top_variants {
            // The k-th largest count first, comparing counts alone (a variant's path lies
            // somewhere in the log; reading it is a cache miss): only variants at least that
            // common can be listed, and names break the ties among those.
            variants.select_nth_unstable_by(top_variants - 1, |a, b| b.1.cmp(&a.1));
            let least = variants[top_variants - 1].1;
            variants.retain(|v| v.1 >= least);
            if variants.len() > top_variants {
                variants.select_nth_unstable_by(top_variants - 1, order);
                variants.truncate(top_variants);
            }
        }
        variants.sort_unstable_by(order);
        let variants = variants
            .into_iter()
            .map(|(p, count)| VariantRow {
                path: p.iter().map(|&t| names.touchpoint(t).to_string()).collect(),
                count,
                share: ratio(count, paths.journeys),
            })
            .collect();
        let loops = JourneyGraph::new(paths)
            .loops()
            .into_iter()
            .filter(|l| l.touchpoints.len() > 1)
            .map(|l| LoopRow {
                touchpoints: l
                    .touchpoints
                    .iter()
                    .map(|&t| names.touchpoint(t).to_string())
                    .collect(),
                transitions: l.transitions,
            })
            .collect();
        let mut back: Vec<BackAndForthRow> = paths
            .back_and_forth()
            .map(|((a, b), l)| BackAndForthRow {
                a: names.touchpoint(a).to_string(),
                b: names.touchpoint(b).to_string(),
                count: l.count,
                journeys: l.journeys,
            })
            .collect();
        back.sort_by(|x, y| {
            y.journeys
                .cmp(&x.journeys)
                .then_with(|| y.count.cmp(&x.count))
                .then_with(|| (&x.a, &x.b).cmp(&(&y.a, &y.b)))
        });
        let repeats = counts(
            paths
                .transitions()
                .filter(|(f, t, _)| f == t)
                .map(|(f, _, s)| (f, s.count)),
            names,
        );
        PathsReport {
            events: paths.events,
            journeys: paths.journeys,
            transitions,
            starts: counts(paths.starts(), names),
            ends: counts(paths.ends(), names),
            distinct_variants,
            variants,
            loops: top(loops, top_loops),
            back_and_forth: top(back, top_loops),
            repeats: top(repeats, top_loops),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TreeNodeRow {
    pub id: usize,
    pub step: usize,
    pub touchpoint: String,
    pub parent: Option<usize>,
    pub count: u64,
    pub ends: u64,
}

/// `trailmap paths --from X` / `--to X`.
#[derive(Debug, Serialize)]
pub struct TreeReport {
    pub anchor: String,
    pub direction: Direction,
    /// Journeys that contain the anchor.
    pub journeys: u64,
    pub nodes: Vec<TreeNodeRow>,
}

impl TreeReport {
    pub fn new(
        tree: &PathTree,
        anchor: &str,
        direction: Direction,
        names: Names<'_>,
        min_count: u64,
        budget: usize,
    ) -> Self {
        TreeReport {
            anchor: anchor.to_string(),
            direction,
            journeys: tree.journeys(),
            nodes: tree
                .prune(min_count, budget)
                .into_iter()
                .map(|n| TreeNodeRow {
                    id: n.id,
                    step: n.step,
                    touchpoint: n
                        .touchpoint
                        .map_or(OTHER, |t| names.touchpoint(t))
                        .to_string(),
                    parent: n.parent,
                    count: n.count,
                    ends: n.ends,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DropoffRow {
    pub touchpoint: String,
    pub journeys: u64,
    pub exits: u64,
    pub exit_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandon_rate: Option<f64>,
}

/// `trailmap dropoffs`.
#[derive(Debug, Serialize)]
pub struct DropoffsReport {
    pub journeys: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    /// Journeys that reached the goal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converted: Option<u64>,
    pub touchpoints: Vec<DropoffRow>,
    /// Last touchpoints of journeys that never reached the goal.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_before_abandon: Vec<Count>,
    /// With funnel steps: what journeys did right after the step they stopped at.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<NextAfterStep>,
}

#[derive(Debug, Serialize)]
pub struct NextAfterStep {
    pub name: String,
    /// Journeys whose deepest step this is (maturing ones left out).
    pub stopped: u64,
    pub next: Vec<Count>,
}

impl DropoffsReport {
    pub fn new(d: &Dropoffs, names: Names<'_>, top_last: usize) -> Self {
        let goal = d.goal();
        let mut touchpoints: Vec<DropoffRow> = d
            .rows()
            .into_iter()
            .map(|r| DropoffRow {
                touchpoint: names.touchpoint(r.touchpoint).to_string(),
                journeys: r.journeys,
                exits: r.exits,
                exit_rate: r.exit_rate(),
                abandoned: goal.map(|_| r.abandoned),
                abandon_rate: goal.map(|_| r.abandon_rate()),
            })
            .collect();
        touchpoints.sort_by(|a, b| {
            b.exits
                .cmp(&a.exits)
                .then_with(|| a.touchpoint.cmp(&b.touchpoint))
        });
        let last = if goal.is_some() {
            counts(
                d.rows()
                    .iter()
                    .map(|r| (r.touchpoint, r.last_before_abandon))
                    .filter(|(_, c)| *c > 0),
                names,
            )
        } else {
            Vec::new()
        };
        DropoffsReport {
            journeys: d.journeys,
            goal: goal.map(|g| names.touchpoint(g).to_string()),
            converted: goal.map(|_| d.converted),
            touchpoints,
            last_before_abandon: top(last, top_last),
            steps: Vec::new(),
        }
    }
}

/// What happened next after each funnel step, for journeys that stopped there.
pub fn next_after_steps(
    f: &Funnel<'_>,
    step_names: &[String],
    names: Names<'_>,
    top_next: usize,
) -> Vec<NextAfterStep> {
    let n = step_names.len();
    (0..n.saturating_sub(1))
        .map(|k| {
            let next = counts(
                f.next_after
                    .iter()
                    .filter(|((step, _), _)| *step as usize == k)
                    .map(|((_, t), c)| (t, c)),
                names,
            );
            NextAfterStep {
                name: step_names[k].clone(),
                stopped: next.iter().map(|c| c.count).sum(),
                next: top(next, top_next),
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct Bin {
    pub bin: &'static str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct StepRow {
    pub name: String,
    /// Journeys (or attempts) whose deepest step is at least this one.
    pub reached: u64,
    pub conversion_from_previous: f64,
    pub conversion_from_first: f64,
    /// Reached the previous step, not this one, and their window has elapsed.
    pub dropped: u64,
    /// Reached the previous step, not this one, and their window has not elapsed yet.
    pub maturing: u64,
    pub time_from_previous: DurationSummary,
    pub time_from_first: DurationSummary,
    pub time_to_convert_histogram: Vec<Bin>,
    /// For journeys that stopped at this step: what they did next.
    pub next_after_dropoff: Vec<Count>,
}

#[derive(Debug, Serialize)]
pub struct BreakdownRow {
    pub value: String,
    pub entered: u64,
    pub converted: u64,
    pub conversion: f64,
    pub maturing: u64,
    /// Reached, per step.
    pub reached: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct TrendRow {
    /// First day of the period (UTC).
    pub period: String,
    pub entered: u64,
    pub converted: u64,
    pub conversion: f64,
    /// Entered in this period and still inside their window.
    pub maturing: u64,
}

/// `trailmap funnel`.
#[derive(Debug, Serialize)]
pub struct FunnelReport {
    /// Journeys considered (customers, or sessions with `--scope session`).
    pub customers: u64,
    pub count: &'static str,
    pub attempts: u64,
    pub excluded: u64,
    pub window_seconds: f64,
    pub modes: Vec<&'static str>,
    pub order: &'static str,
    pub as_of: String,
    pub entered: u64,
    pub converted: u64,
    pub conversion: f64,
    pub steps: Vec<StepRow>,
    /// ClickHouse's level distribution: `levels[k]` journeys reached exactly `k` steps.
    pub levels: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown_by: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breakdown: Vec<BreakdownRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trend: Vec<TrendRow>,
}

fn day_string(days: i64) -> String {
    chrono::DateTime::from_timestamp(days * 86_400, 0)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_else(|| format!("day {days}"))
}

pub fn micros_string(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

fn summarize(t: &StepTallies, n: usize) -> (u64, u64, f64, u64) {
    let entered = t.entered();
    let converted = t.reached(n - 1);
    let maturing = t.maturing.iter().sum();
    (entered, converted, ratio(converted, entered), maturing)
}

/// How to present a funnel's breakdown.
pub struct BreakdownNames<'a> {
    pub by: &'a str,
    pub values: &'a [String],
    /// Values listed; the rest are summed into `other`.
    pub top: usize,
}

impl FunnelReport {
    pub fn new(
        f: &Funnel<'_>,
        step_names: &[String],
        names: Names<'_>,
        breakdown: Option<BreakdownNames<'_>>,
    ) -> Self {
        let spec = f.spec();
        let n = spec.num_steps();
        let t = &f.tallies;
        let first = t.reached(0);
        let next = next_after_steps(f, step_names, names, 5);
        let steps = (0..n)
            .map(|k| {
                let reached = t.reached(k);
                let (previous, maturing) = if k == 0 {
                    (reached, 0)
                } else {
                    (t.reached(k - 1), t.maturing_at(k - 1))
                };
                StepRow {
                    name: step_names[k].clone(),
                    reached,
                    conversion_from_previous: ratio(reached, previous),
                    conversion_from_first: ratio(reached, first),
                    dropped: previous - reached - maturing,
                    maturing,
                    time_from_previous: f.from_previous[k].summary(),
                    time_from_first: f.from_first[k].summary(),
                    time_to_convert_histogram: if k == 0 {
                        Vec::new()
                    } else {
                        HUMAN_BINS
                            .iter()
                            .zip(f.bins[k])
                            .map(|(&(bin, _), count)| Bin { bin, count })
                            .collect()
                    },
                    next_after_dropoff: next
                        .get(k)
                        .map(|s| {
                            s.next
                                .iter()
                                .map(|c| Count {
                                    touchpoint: c.touchpoint.clone(),
                                    count: c.count,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        let (entered, converted, conversion, _) = summarize(t, n);
        let (breakdown_by, breakdown) = match breakdown {
            None => (None, Vec::new()),
            Some(b) => {
                let mut rows: Vec<(&u32, &StepTallies)> = f.breakdown.iter().collect();
                let value = |id: u32| {
                    b.values
                        .get(id as usize)
                        .map_or("(unknown)", String::as_str)
                };
                rows.sort_by(|x, y| {
                    y.1.entered()
                        .cmp(&x.1.entered())
                        .then_with(|| value(*x.0).cmp(value(*y.0)))
                });
                let row = |name: String, tallies: &StepTallies| {
                    let (entered, converted, conversion, maturing) = summarize(tallies, n);
                    BreakdownRow {
                        value: name,
                        entered,
                        converted,
                        conversion,
                        maturing,
                        reached: (0..n).map(|k| tallies.reached(k)).collect(),
                    }
                };
                let mut out: Vec<BreakdownRow> = rows
                    .iter()
                    .take(b.top)
                    .map(|(id, tallies)| row(value(**id).to_string(), tallies))
                    .collect();
                if rows.len() > b.top {
                    let mut rest = StepTallies {
                        levels: vec![0; n + 1],
                        maturing: vec![0; n + 1],
                    };
                    for (_, tallies) in &rows[b.top..] {
                        for (a, x) in rest.levels.iter_mut().zip(&tallies.levels) {
                            *a += x;
                        }
                        for (a, x) in rest.maturing.iter_mut().zip(&tallies.maturing) {
                            *a += x;
                        }
                    }
                    out.push(row(OTHER.to_string(), &rest));
                }
                (Some(b.by.to_string()), out)
            }
        };
        let mut trend: Vec<(&i64, &StepTallies)> = f.trend.iter().collect();
        trend.sort_by_key(|(day, _)| **day);
        let trend = trend
            .into_iter()
            .map(|(&day, tallies)| {
                let (entered, converted, conversion, maturing) = summarize(tallies, n);
                TrendRow {
                    period: day_string(day),
                    entered,
                    converted,
                    conversion,
                    maturing,
                }
            })
            .collect();
        let m = spec.modes;
        let modes = [
            (m.strict_deduplication, "strict_deduplication"),
            (m.strict_order, "strict_order"),
            (m.strict_increase, "strict_increase"),
            (m.strict_once, "strict_once"),
            (m.allow_reentry, "allow_reentry"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        FunnelReport {
            customers: f.journeys,
            count: match spec.count {
                CountBy::Customers => "customers",
                CountBy::Attempts => "attempts",
            },
            attempts: f.attempts,
            excluded: f.excluded,
            window_seconds: spec.window as f64 / 1e6,
            modes,
            order: match spec.order {
                StepOrder::Ordered => "ordered",
                StepOrder::Strict => "strict",
                StepOrder::Unordered => "unordered",
            },
            as_of: micros_string(spec.as_of),
            entered,
            converted,
            conversion,
            steps,
            levels: t.levels.clone(),
            breakdown_by,
            breakdown,
            trend,
        }
    }
}

/// Trend periods by name.
pub fn parse_trend(text: &str) -> Result<TrendPeriod, String> {
    match text {
        "day" => Ok(TrendPeriod::Day),
        "week" => Ok(TrendPeriod::Week),
        other => Err(format!("`{other}` is not a trend period; use day or week")),
    }
}

#[derive(Debug, Serialize)]
pub struct ValueCount {
    pub value: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct KpiRow {
    pub name: String,
    pub from: String,
    pub to: String,
    /// Stage of the `from` touchpoint, as the catalog assigns it.
    pub stage: Option<String>,
    pub within_seconds: f64,
    pub instances: u64,
    pub met: u64,
    pub breached: u64,
    pub pending: u64,
    /// Met over decided (met + breached) instances.
    pub met_rate: f64,
    pub journeys: u64,
    pub journeys_met: u64,
    /// Share of journeys with the `from` touchpoint whose instances were all met.
    pub journey_met_rate: f64,
    #[serde(flatten)]
    pub duration: DurationSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaches_by_attribute: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breaches_by: Vec<ValueCount>,
}

impl KpiRow {
    pub fn all(
        k: &Kpis<'_>,
        stages: &[Option<String>],
        attribute: Option<(&str, &[String])>,
    ) -> Vec<KpiRow> {
        k.specs()
            .iter()
            .zip(&k.tallies)
            .map(|(spec, t)| {
                let mut by: Vec<ValueCount> = match attribute {
                    Some((_, values)) => t
                        .breaches_by
                        .iter()
                        .map(|(&v, &count)| ValueCount {
                            value: values.get(v as usize).cloned().unwrap_or_default(),
                            count,
                        })
                        .collect(),
                    None => Vec::new(),
                };
                by.sort_by_key(|v| (Reverse(v.count), v.value.clone()));
                KpiRow {
                    name: spec.name.clone(),
                    from: spec.from_name.clone(),
                    to: spec.to_name.clone(),
                    stage: stages.get(spec.from as usize).cloned().flatten(),
                    within_seconds: spec.within as f64 / 1e6,
                    instances: t.instances,
                    met: t.met,
                    breached: t.breached,
                    pending: t.pending,
                    met_rate: ratio(t.met, t.met + t.breached),
                    journeys: t.journeys,
                    journeys_met: t.journeys_met,
                    journey_met_rate: ratio(t.journeys_met, t.journeys),
                    duration: t.durations.summary(),
                    breaches_by_attribute: attribute.map(|(a, _)| a.to_string()),
                    breaches_by: by,
                }
            })
            .collect()
    }
}
