//! Journeys and funnels built by hand, for the mining tests.
#![allow(dead_code)]

use trailmap_mine::funnel::{FunnelSpec, Modes};
use trailmap_model::config::{CountBy, StepOrder};
use trailmap_sessionize::Journey;

/// Journeys as owned columns; `journeys()` lends them out like a log does.
pub struct Journeys {
    pub ts: Vec<Vec<i64>>,
    pub tp: Vec<Vec<u32>>,
}

impl Journeys {
    /// Journeys from (ts, touchpoint) events in arrival order: sorted by time, ties in
    /// arrival order, as the sessionizer orders them.
    pub fn new(journeys: &[Vec<(i64, u32)>]) -> Self {
        let mut out = Journeys {
            ts: Vec::new(),
            tp: Vec::new(),
        };
        for j in journeys {
            let mut j = j.clone();
            j.sort_by_key(|e| e.0);
            out.ts.push(j.iter().map(|e| e.0).collect());
            out.tp.push(j.iter().map(|e| e.1).collect());
        }
        out
    }

    /// Journey `i`, with `start` its first event's index in the concatenated columns.
    pub fn get(&self, i: usize) -> Journey<'_> {
        let start = self.ts[..i].iter().map(Vec::len).sum();
        Journey {
            customer: i as u32,
            start,
            ts: &self.ts[i],
            touchpoint: &self.tp[i],
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }
}

/// A funnel spec with defaults: ordered, customers, no gaps, no exclusions.
pub fn spec(steps: &[u32], window: i64, modes: Modes) -> FunnelSpec {
    FunnelSpec {
        steps: steps.to_vec(),
        window,
        modes,
        order: if modes.strict_order {
            StepOrder::Strict
        } else {
            StepOrder::Ordered
        },
        exclusions: Vec::new(),
        count: CountBy::Customers,
        min_gap: vec![0; steps.len().saturating_sub(1)],
        max_gap: vec![0; steps.len().saturating_sub(1)],
        as_of: i64::MAX / 2,
        trend: None,
    }
}

/// Every mode combination ClickHouse accepts.
pub fn all_modes() -> Vec<Modes> {
    let mut out = Vec::new();
    for bits in 0..32u32 {
        let m = Modes {
            strict_deduplication: bits & 1 != 0,
            strict_order: bits & 2 != 0,
            strict_increase: bits & 4 != 0,
            strict_once: bits & 8 != 0,
            allow_reentry: bits & 16 != 0,
        };
        if !m.allow_reentry || m.strict_order {
            out.push(m);
        }
    }
    out
}
