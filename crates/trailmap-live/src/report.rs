//! The live map with names: what `trailmap serve --exit-at-end` prints and the HTTP API will
//! return (`/api/map`).

use crate::counts::LiveCounts;
use crate::pipeline::Names;
use serde::Serialize;
use trailmap_mine::dropoffs::ratio;

/// One touchpoint of the map.
#[derive(Debug, Clone, Serialize, PartialEq)]
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
pub struct MapEdge {
    pub from: String,
    pub to: String,
    pub count: i64,
    pub mean_seconds: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunnelStep {
    pub name: String,
    /// Journeys whose deepest step is at least this one.
    pub reached: i64,
    pub conversion_from_previous: f64,
    pub conversion_from_first: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunnelReport {
    pub name: String,
    pub steps: Vec<FunnelStep>,
}

/// The journey map over some window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MapReport {
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
    pub fn new(counts: &LiveCounts, names: &Names) -> MapReport {
        let name = |id: u32| {
            names
                .touchpoints
                .get(id as usize)
                .cloned()
                .unwrap_or_else(|| format!("#{id}"))
        };
        let mut nodes: Vec<MapNode> = counts
            .visits
            .iter()
            .map(|(id, events)| {
                let (journeys, exits) = (counts.through.get(id), counts.exits.get(id));
                MapNode {
                    id: name(id),
                    touchpoint: name(id),
                    stage: names.stages.get(id as usize).cloned().flatten(),
                    events,
                    journeys,
                    starts: counts.starts.get(id),
                    exits,
                    exit_rate: share(exits, journeys),
                }
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
                let reached: Vec<i64> = (0..journey.steps.len())
                    .map(|k| counts.reached(j, k))
                    .collect();
                FunnelReport {
                    name: funnel.clone(),
                    steps: journey
                        .steps
                        .iter()
                        .enumerate()
                        .map(|(k, step)| FunnelStep {
                            name: step.clone(),
                            reached: reached[k],
                            conversion_from_previous: if k == 0 {
                                1.0
                            } else {
                                share(reached[k], reached[k - 1])
                            },
                            conversion_from_first: share(reached[k], reached[0]),
                        })
                        .collect(),
                }
            })
            .collect();
        MapReport {
            events: counts.events,
            journeys: counts.journeys,
            nodes,
            edges,
            funnels,
        }
    }
}
