//! Touchpoint KPIs / SLAs: "`quote_sent` within 24h of `quote_requested`".
//!
//! Every occurrence of the `from` touchpoint is an instance, answered by the first `to`
//! after it in the journey. An instance is met when that comes within the limit, breached
//! when it comes later or has not come although the limit has passed by `as_of`, and
//! pending otherwise (not yet due). A journey meets the KPI when all its instances are met.

use crate::fold::Aggregate;
use crate::hist::DurationHistogram;
use rustc_hash::FxHashMap;
use trailmap_sessionize::Journey;

#[derive(Debug, Clone)]
pub struct KpiSpec {
    pub name: String,
    /// Touchpoint ids (`u32::MAX` when no event has the touchpoint) and their names.
    pub from: u32,
    pub to: u32,
    pub from_name: String,
    pub to_name: String,
    /// Limit in microseconds.
    pub within: i64,
}

/// One KPI's tallies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KpiTally {
    pub instances: u64,
    pub met: u64,
    pub breached: u64,
    pub pending: u64,
    /// Journeys with at least one instance, and those whose instances were all met.
    pub journeys: u64,
    pub journeys_met: u64,
    /// Time from `from` to `to`, for answered instances.
    pub durations: DurationHistogram,
    /// Breaches by the `from` event's attribute value (channel, say), when one is kept.
    pub breaches_by: FxHashMap<u32, u64>,
}

#[derive(Debug, Clone)]
pub struct Kpis<'a> {
    specs: Vec<KpiSpec>,
    as_of: i64,
    attribute: Option<&'a [u32]>,
    pub tallies: Vec<KpiTally>,
}

impl<'a> Kpis<'a> {
    pub fn new(specs: Vec<KpiSpec>, as_of: i64, attribute: Option<&'a [u32]>) -> Self {
        let tallies = vec![KpiTally::default(); specs.len()];
        Kpis {
            specs,
            as_of,
            attribute,
            tallies,
        }
    }

    pub fn specs(&self) -> &[KpiSpec] {
        &self.specs
    }
}

impl Aggregate<'_> for Kpis<'_> {
    fn add(&mut self, journey: &Journey<'_>) {
        let (ts, tp) = (journey.ts, journey.touchpoint);
        for (spec, tally) in self.specs.iter().zip(&mut self.tallies) {
            // Backwards, so the next `to` of every position is known in one pass.
            let mut next_to: Option<usize> = None;
            let (mut instances, mut met) = (0u64, 0u64);
            for i in (0..tp.len()).rev() {
                if tp[i] == spec.from {
                    instances += 1;
                    let met_now = match next_to {
                        Some(j) => {
                            let took = ts[j].saturating_sub(ts[i]);
                            tally.durations.record(took);
                            Some(took <= spec.within)
                        }
                        None if self.as_of.saturating_sub(ts[i]) > spec.within => Some(false),
                        None => None,
                    };
                    match met_now {
                        Some(true) => met += 1,
                        Some(false) => {
                            tally.breached += 1;
                            if let Some(attr) = self.attribute {
                                *tally
                                    .breaches_by
                                    .entry(attr[journey.start + i])
                                    .or_default() += 1;
                            }
                        }
                        None => tally.pending += 1,
                    }
                }
                // After the `from` check: when `from` and `to` are one touchpoint, an event
                // answers the instances before it, not itself.
                if tp[i] == spec.to {
                    next_to = Some(i);
                }
            }
            if instances > 0 {
                tally.instances += instances;
                tally.met += met;
                tally.journeys += 1;
                if met == instances {
                    tally.journeys_met += 1;
                }
            }
        }
    }

    fn merge(&mut self, other: Self) {
        for (a, b) in self.tallies.iter_mut().zip(other.tallies) {
            a.instances += b.instances;
            a.met += b.met;
            a.breached += b.breached;
            a.pending += b.pending;
            a.journeys += b.journeys;
            a.journeys_met += b.journeys_met;
            a.durations.merge(&b.durations);
            for (k, v) in b.breaches_by {
                *a.breaches_by.entry(k).or_default() += v;
            }
        }
    }
}
