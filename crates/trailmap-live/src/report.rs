//! The live map with names: what `trailmap serve --exit-at-end` prints and the HTTP API will
//! return (`/api/map`).

use crate::counts::{BUCKET_MICROS, FunnelTrend, LiveCounts, bucket_of};
use crate::pipeline::Names;
use serde::Serialize;
use trailmap_mine::dropoffs::ratio;
use trailmap_mine::report::micros_string;

/// One touchpoint of the map.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MapNode {
    /// Stable id: the touchpoint name.
    pub id: String,
    pub touchpoint: String,
    pub stage: Option<String>,
    pub events: i64,
    /// Journeys that visit it.
    pub journeys: i64,
    pub starts: i64,
    pub exits: i64,
    /// `exits / journeys`.
    pub exit_rate: f64,
}

/// One transition of the map.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MapEdge {
    pub from: String,
    pub to: String,
    pub count: i64,
    pub mean_seconds: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunnelStep {
    pub name: String,
    /// Journeys whose deepest step is at least this one.
    pub reached: i64,
    pub conversion_from_previous: f64,
    pub conversion_from_first: f64,
    /// Reached the previous step, not this one, and their window has elapsed.
    pub dropped: i64,
    /// Reached the previous step, not this one, and their window has not elapsed yet.
    pub maturing: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunnelReport {
    pub name: String,
    /// Journeys that reached the first step.
    pub entered: i64,
    /// Journeys that reached the last step.
    pub converted: i64,
    /// Entered journeys short of the last step whose window has not elapsed.
    pub maturing: i64,
    /// `converted / (entered - maturing)`: conversion of the journeys whose outcome is
    /// known (what an alert on conversion compares).
    pub settled_conversion: f64,
    pub steps: Vec<FunnelStep>,
    /// By UTC day of entry, oldest first (days with journeys only).
    pub trend: Vec<TrendPoint>,
    /// With `breakdown=`: the funnel per segment value, busiest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Vec<FunnelSegment>>,
}

/// A funnel's numbers for one segment value.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunnelSegment {
    pub value: String,
    pub entered: i64,
    pub converted: i64,
    pub maturing: i64,
    pub settled_conversion: f64,
    /// Journeys whose deepest step is at least each step.
    pub reached: Vec<i64>,
}

impl FunnelSegment {
    /// `funnel`'s numbers, as the value's.
    pub fn of(value: &str, funnel: &FunnelReport) -> FunnelSegment {
        FunnelSegment {
            value: value.to_string(),
            entered: funnel.entered,
            converted: funnel.converted,
            maturing: funnel.maturing,
            settled_conversion: funnel.settled_conversion,
            reached: funnel.steps.iter().map(|s| s.reached).collect(),
        }
    }
}

/// A funnel's journeys that entered on one day.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrendPoint {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    pub entered: i64,
    pub converted: i64,
    pub maturing: i64,
    /// `converted / (entered - maturing)`; 0 when none is settled.
    pub settled_conversion: f64,
}

/// The journey map over some window.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MapReport {
    /// The "now" funnel maturity was decided at (RFC 3339; the start of the watermark's
    /// minute), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    pub events: i64,
    pub journeys: i64,
    /// By events, most first.
    pub nodes: Vec<MapNode>,
    /// By count, most first.
    pub edges: Vec<MapEdge>,
    pub funnels: Vec<FunnelReport>,
}

fn share(part: i64, whole: i64) -> f64 {
    ratio(part.max(0) as u64, whole.max(0) as u64)
}

impl MapReport {
    /// Fills each funnel's `trend` from `trend` (the same window's levels by day).
    pub fn set_trend(&mut self, trend: &FunnelTrend) {
        for (j, funnel) in self.funnels.iter_mut().enumerate() {
            let last = funnel.steps.len().saturating_sub(1);
            funnel.trend = trend
                .days
                .iter()
                .filter_map(|(&day, per_funnel)| {
                    let (entered, converted, maturing) = per_funnel.get(j)?.outcome(last);
                    if entered == 0 {
                        return None;
                    }
                    Some(TrendPoint {
                        day: micros_string(day * 24 * 60 * BUCKET_MICROS)[..10].to_string(),
                        entered,
                        converted,
                        maturing,
                        settled_conversion: share(converted, entered - maturing),
                    })
                })
                .collect();
        }
    }

    /// The map of `counts`; funnel journeys are maturing as of the minute holding `as_of`
    /// (µs; the pipeline's watermark), or none are without one.
    pub fn new(counts: &LiveCounts, names: &Names, as_of: Option<i64>) -> MapReport {
        let as_of_minute = as_of.map(bucket_of);
        let name = |id: u32| {
            names
                .touchpoints
                .get(id as usize)
                .cloned()
                .unwrap_or_else(|| format!("#{id}"))
        };
        let mut nodes: Vec<MapNode> = counts
            .touchpoints
            .iter()
            .filter(|(_, c)| c.visits != 0)
            .map(|(&id, c)| MapNode {
                id: name(id),
                touchpoint: name(id),
                stage: names.stages.get(id as usize).cloned().flatten(),
                events: c.visits,
                journeys: c.through,
                starts: c.starts,
                exits: c.exits,
                exit_rate: share(c.exits, c.through),
            })
            .collect();
        nodes.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.id.cmp(&b.id)));
        let mut edges: Vec<MapEdge> = counts
            .transitions
            .iter()
            .map(|(&(a, b), t)| MapEdge {
                from: name(a),
                to: name(b),
                count: t.count,
                mean_seconds: if t.count > 0 {
                    t.duration_micros as f64 / t.count as f64 / 1e6
                } else {
                    0.0
                },
            })
            .collect();
        edges.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
        });
        let funnels = names
            .funnels
            .iter()
            .enumerate()
            .map(|(j, (funnel, journey))| {
                let n = journey.steps.len();
                let levels = counts.funnel(j, as_of_minute);
                let reached: Vec<i64> = (0..n).map(|k| levels.reached(k)).collect();
                // Stopped at step k (0-based) = level k + 1.
                let maturing_at = |k: usize| levels.maturing.get(k + 1).copied().unwrap_or(0);
                let (entered, converted, maturing_total) = levels.outcome(n - 1);
                FunnelReport {
                    name: funnel.clone(),
                    entered,
                    converted,
                    maturing: maturing_total,
                    settled_conversion: share(converted, entered - maturing_total),
                    steps: journey
                        .steps
                        .iter()
                        .enumerate()
                        .map(|(k, step)| {
                            let (previous, maturing) = if k == 0 {
                                (reached[0], 0)
                            } else {
                                (reached[k - 1], maturing_at(k - 1))
                            };
                            FunnelStep {
                                name: step.clone(),
                                reached: reached[k],
                                conversion_from_previous: share(reached[k], previous),
                                conversion_from_first: share(reached[k], reached[0]),
                                dropped: previous - reached[k] - maturing,
                                maturing,
                            }
                        })
                        .collect(),
                    trend: Vec::new(),
                    breakdown: None,
                }
            })
            .collect();
        MapReport {
            as_of: as_of_minute.map(|m| micros_string(m * BUCKET_MICROS)),
            events: counts.events,
            journeys: counts.journeys,
            nodes,
            edges,
            funnels,
        }
    }
}
