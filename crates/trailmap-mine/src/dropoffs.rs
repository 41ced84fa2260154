//! Drop-offs: where journeys end, and where they stall before a goal.
//!
//! Per touchpoint: journeys through it (counted once however often they pass), exits
//! (journeys whose last touchpoint it is) and the exit rate. With a goal touchpoint: of the
//! journeys through each touchpoint, those that never reached the goal, and the last
//! touchpoints of journeys that never reached it (where people gave up).

use crate::fold::Aggregate;
use trailmap_sessionize::Journey;

#[derive(Debug, Clone, Default)]
pub struct Dropoffs {
    goal: Option<u32>,
    pub journeys: u64,
    /// Journeys that reached the goal.
    pub converted: u64,
    through: Vec<u64>,
    exits: Vec<u64>,
    /// Journeys through the touchpoint that never reached the goal.
    abandoned: Vec<u64>,
    /// Last touchpoints of journeys that never reached the goal.
    last_before_abandon: Vec<u64>,
    /// Per touchpoint, the last journey (first event index + 1) counted through it.
    seen: Vec<usize>,
}

/// One touchpoint's row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TouchpointDropoff {
    pub touchpoint: u32,
    pub journeys: u64,
    pub exits: u64,
    pub abandoned: u64,
    pub last_before_abandon: u64,
}

impl TouchpointDropoff {
    pub fn exit_rate(&self) -> f64 {
        ratio(self.exits, self.journeys)
    }
    pub fn abandon_rate(&self) -> f64 {
        ratio(self.abandoned, self.journeys)
    }
}

pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn bump(v: &mut Vec<u64>, i: u32, by: u64) {
    let i = i as usize;
    if i >= v.len() {
        v.resize(i + 1, 0);
    }
    v[i] += by;
}

impl Dropoffs {
    pub fn new(goal: Option<u32>) -> Self {
        Dropoffs {
            goal,
            ..Default::default()
        }
    }

    pub fn goal(&self) -> Option<u32> {
        self.goal
    }

    /// Rows for every touchpoint seen, by touchpoint id.
    pub fn rows(&self) -> Vec<TouchpointDropoff> {
        let get = |v: &Vec<u64>, i: usize| v.get(i).copied().unwrap_or(0);
        (0..self.through.len())
            .filter(|&i| self.through[i] > 0)
            .map(|i| TouchpointDropoff {
                touchpoint: i as u32,
                journeys: self.through[i],
                exits: get(&self.exits, i),
                abandoned: get(&self.abandoned, i),
                last_before_abandon: get(&self.last_before_abandon, i),
            })
            .collect()
    }
}

impl Aggregate<'_> for Dropoffs {
    fn add(&mut self, journey: &Journey<'_>) {
        let tp = journey.touchpoint;
        let Some(&last) = tp.last() else {
            return;
        };
        self.journeys += 1;
        bump(&mut self.exits, last, 1);
        let stamp = journey.start + 1;
        let converted = self.goal.is_some_and(|g| tp.contains(&g));
        if converted {
            self.converted += 1;
        } else if self.goal.is_some() {
            bump(&mut self.last_before_abandon, last, 1);
        }
        for &t in tp {
            let i = t as usize;
            if i >= self.seen.len() {
                self.seen.resize(i + 1, 0);
            }
            if self.seen[i] == stamp {
                continue;
            }
            self.seen[i] = stamp;
            bump(&mut self.through, t, 1);
            if self.goal.is_some() && !converted {
                bump(&mut self.abandoned, t, 1);
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.journeys += other.journeys;
        self.converted += other.converted;
        for (mine, theirs) in [
            (&mut self.through, other.through),
            (&mut self.exits, other.exits),
            (&mut self.abandoned, other.abandoned),
            (&mut self.last_before_abandon, other.last_before_abandon),
        ] {
            for (i, c) in theirs.into_iter().enumerate() {
                if c > 0 {
                    bump(mine, i as u32, c);
                }
            }
        }
    }
}
