//! The directly-follows graph, start and end touchpoints, variants and back-and-forth
//! loops, all in one pass over the journeys.
//!
//! Semantics are pm4py's: a transition is two consecutive events of a journey (events in
//! time order, ties in arrival order); a journey of one event has a start and an end and no
//! transition; a variant is a journey's whole touchpoint sequence.

use crate::fold::Aggregate;
use crate::hist::DurationHistogram;
use hashbrown::HashTable;
use rustc_hash::{FxHashMap, FxHasher};
use std::hash::Hasher;
use trailmap_sessionize::Journey;

/// Touchpoint catalogs up to this size index transitions through a dense `n × n` table
/// (4 MiB at most); larger ones through a hash map.
const DENSE_LIMIT: usize = 1024;

/// One directly-follows relation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransitionStats {
    pub count: u64,
    pub durations: DurationHistogram,
}

/// Back-and-forth between two touchpoints: `a → b → a`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackAndForth {
    /// Occurrences of `a → b → a`.
    pub count: u64,
    /// Journeys with at least one.
    pub journeys: u64,
    /// The last journey counted (its first event's index), so each counts once.
    last_journey: usize,
}

/// Options of a [`PathStats`] pass.
#[derive(Debug, Clone, Copy)]
pub struct PathOptions {
    /// Record transition durations (a histogram update per transition).
    pub durations: bool,
    /// Collect variants (an arena holding each distinct sequence once).
    pub variants: bool,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            durations: true,
            variants: true,
        }
    }
}

/// Paths over a set of journeys.
#[derive(Debug, Clone)]
pub struct PathStats {
    options: PathOptions,
    pub journeys: u64,
    pub events: u64,
    /// Transition slots: `(from, to)` and their statistics.
    keys: Vec<(u32, u32)>,
    stats: Vec<TransitionStats>,
    /// `from * dense_n + to` → slot + 1 (0 = none), for catalogs up to [`DENSE_LIMIT`].
    dense: Vec<u32>,
    dense_n: usize,
    /// Slots of transitions outside the dense table.
    sparse: FxHashMap<(u32, u32), u32>,
    starts: Vec<u64>,
    ends: Vec<u64>,
    variants: Variants,
    back_and_forth: FxHashMap<(u32, u32), BackAndForth>,
}

impl PathStats {
    /// An empty state for a catalog of `touchpoints` names (more may appear; they take the
    /// slower path).
    pub fn new(touchpoints: usize, options: PathOptions) -> Self {
        let dense_n = if touchpoints <= DENSE_LIMIT {
            touchpoints
        } else {
            0
        };
        PathStats {
            options,
            journeys: 0,
            events: 0,
            keys: Vec::new(),
            stats: Vec::new(),
            dense: vec![0; dense_n * dense_n],
            dense_n,
            sparse: FxHashMap::default(),
            starts: Vec::new(),
            ends: Vec::new(),
            variants: Variants::default(),
            back_and_forth: FxHashMap::default(),
        }
    }

    #[inline]
    fn slot(&mut self, from: u32, to: u32) -> usize {
        let (f, t) = (from as usize, to as usize);
        if f < self.dense_n && t < self.dense_n {
            let cell = &mut self.dense[f * self.dense_n + t];
            if *cell == 0 {
                self.keys.push((from, to));
                self.stats.push(TransitionStats::default());
                *cell = self.keys.len() as u32;
            }
            return *cell as usize - 1;
        }
        let next = self.keys.len() as u32;
        let slot = *self.sparse.entry((from, to)).or_insert(next);
        if slot == next {
            self.keys.push((from, to));
            self.stats.push(TransitionStats::default());
        }
        slot as usize
    }

    fn bump(counts: &mut Vec<u64>, tp: u32, by: u64) {
        let i = tp as usize;
        if i >= counts.len() {
            counts.resize(i + 1, 0);
        }
        counts[i] += by;
    }

    /// Transitions `(from, to, stats)`, in no particular order.
    pub fn transitions(&self) -> impl Iterator<Item = (u32, u32, &TransitionStats)> {
        self.keys
            .iter()
            .zip(&self.stats)
            .map(|(&(f, t), s)| (f, t, s))
    }

    /// Journeys starting at each touchpoint, `(touchpoint, count)`, zeros left out.
    pub fn starts(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        nonzero(&self.starts)
    }

    /// Journeys ending at each touchpoint.
    pub fn ends(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        nonzero(&self.ends)
    }

    /// Distinct variants and their counts, in no particular order.
    pub fn variants(&self) -> impl Iterator<Item = (&[u32], u64)> {
        self.variants.iter()
    }

    pub fn num_variants(&self) -> usize {
        self.variants.table.len()
    }

    /// `a → b → a` loops, keyed `(a, b)`.
    pub fn back_and_forth(&self) -> impl Iterator<Item = ((u32, u32), &BackAndForth)> {
        self.back_and_forth.iter().map(|(&k, v)| (k, v))
    }
}

fn nonzero(counts: &[u64]) -> impl Iterator<Item = (u32, u64)> + '_ {
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(t, &c)| (t as u32, c))
}

impl Aggregate for PathStats {
    fn add(&mut self, journey: &Journey<'_>) {
        let (tp, ts) = (journey.touchpoint, journey.ts);
        let (Some(&first), Some(&last)) = (tp.first(), tp.last()) else {
            return;
        };
        self.journeys += 1;
        self.events += tp.len() as u64;
        Self::bump(&mut self.starts, first, 1);
        Self::bump(&mut self.ends, last, 1);
        for i in 1..tp.len() {
            let slot = self.slot(tp[i - 1], tp[i]);
            let stats = &mut self.stats[slot];
            stats.count += 1;
            if self.options.durations {
                stats.durations.record(ts[i].saturating_sub(ts[i - 1]));
            }
        }
        for i in 2..tp.len() {
            if tp[i] == tp[i - 2] && tp[i] != tp[i - 1] {
                let loop_ = self.back_and_forth.entry((tp[i], tp[i - 1])).or_default();
                loop_.count += 1;
                if loop_.journeys == 0 || loop_.last_journey != journey.start {
                    loop_.journeys += 1;
                    loop_.last_journey = journey.start;
                }
            }
        }
        if self.options.variants {
            self.variants.add(tp, 1);
        }
    }

    fn merge(&mut self, other: Self) {
        self.journeys += other.journeys;
        self.events += other.events;
        for ((from, to), stats) in other.keys.into_iter().zip(other.stats) {
            let slot = self.slot(from, to);
            let mine = &mut self.stats[slot];
            mine.count += stats.count;
            mine.durations.merge(&stats.durations);
        }
        for (t, c) in nonzero(&other.starts) {
            Self::bump(&mut self.starts, t, c);
        }
        for (t, c) in nonzero(&other.ends) {
            Self::bump(&mut self.ends, t, c);
        }
        // The larger table absorbs the smaller, re-using the stored hashes.
        let (mut into, from) = if self.variants.table.len() >= other.variants.table.len() {
            (std::mem::take(&mut self.variants), other.variants)
        } else {
            (other.variants, std::mem::take(&mut self.variants))
        };
        into.table.reserve(from.table.len(), |e| e.0);
        for &(hash, start, len, count) in from.table.iter() {
            into.add_hashed(hash, &from.arena[start..start + len], count);
        }
        self.variants = into;
        for (key, theirs) in other.back_and_forth {
            let mine = self.back_and_forth.entry(key).or_default();
            mine.count += theirs.count;
            // Parts hold disjoint journeys, so journey counts add.
            mine.journeys += theirs.journeys;
        }
    }
}

/// Distinct touchpoint sequences with counts; each sequence stored once in an arena.
#[derive(Debug, Clone, Default)]
struct Variants {
    arena: Vec<u32>,
    /// (hash, start in arena, length, count)
    table: HashTable<(u64, usize, usize, u64)>,
}

fn hash_path(path: &[u32]) -> u64 {
    let mut h = FxHasher::default();
    h.write_usize(path.len());
    for &t in path {
        h.write_u32(t);
    }
    h.finish()
}

impl Variants {
    fn add(&mut self, path: &[u32], count: u64) {
        self.add_hashed(hash_path(path), path, count);
    }

    fn add_hashed(&mut self, hash: u64, path: &[u32], count: u64) {
        let arena = &self.arena;
        match self.table.find_mut(hash, |&(h, start, len, _)| {
            h == hash && &arena[start..start + len] == path
        }) {
            Some(entry) => entry.3 += count,
            None => {
                let start = self.arena.len();
                self.arena.extend_from_slice(path);
                self.table
                    .insert_unique(hash, (hash, start, path.len(), count), |e| e.0);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&[u32], u64)> {
        self.table
            .iter()
            .map(|&(_, start, len, count)| (&self.arena[start..start + len], count))
    }
}
