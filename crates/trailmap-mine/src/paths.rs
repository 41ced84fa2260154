//! The directly-follows graph, start and end touchpoints, variants and back-and-forth
//! loops, all in one pass over the journeys.
//!
//! Semantics are pm4py's: a transition is two consecutive events of a journey (events in
//! time order, ties in arrival order); a journey of one event has a start and an end and no
//! transition; a variant is a journey's whole touchpoint sequence.

use crate::fold::Aggregate;
use crate::hist::DurationHistogram;
use rustc_hash::{FxHashMap, FxHasher};
use std::hash::Hasher;
use trailmap_sessionize::Journey;

/// Touchpoint catalogs up to this size index transitions through a dense `n × n` table
/// (4 MiB at most); larger ones through a hash map.
const DENSE_LIMIT: usize = 1024;

/// One directly-follows relation `from → to`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransitionStats {
    pub count: u64,
    pub durations: DurationHistogram,
    /// Back-and-forth that this transition closes: `to → from → to`.
    back_and_forth: BackAndForth,
}

/// Back-and-forth between two touchpoints: `a → b → a`.
#[derive(Debug, Clone, Copy)]
pub struct BackAndForth {
    /// Occurrences of `a → b → a`.
    pub count: u64,
    /// Journeys with at least one.
    pub journeys: u64,
    /// The last journey counted (its first event's index), so each counts once.
    last_journey: usize,
}

/// Equal counts (which journey came last is bookkeeping, not part of the result).
impl PartialEq for BackAndForth {
    fn eq(&self, other: &Self) -> bool {
        (self.count, self.journeys) == (other.count, other.journeys)
    }
}

impl Eq for BackAndForth {}

impl Default for BackAndForth {
    fn default() -> Self {
        BackAndForth {
            count: 0,
            journeys: 0,
            // No journey starts here: the first one seen always counts.
            last_journey: usize::MAX,
        }
    }
}

/// Options of a [`PathStats`] pass.
#[derive(Debug, Clone, Copy)]
pub struct PathOptions {
    /// Record transition durations (a histogram update per transition).
    pub durations: bool,
    /// Collect variants (each distinct sequence once, borrowed from the log).
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

/// Paths over a set of journeys that live for `'log`.
#[derive(Debug, Clone)]
pub struct PathStats<'log> {
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
    variants: Variants<'log>,
}

impl<'log> PathStats<'log> {
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
        }
    }

    #[inline]
    fn slot(&mut self, from: u32, to: u32) -> usize {
        let (f, t) = (from as usize, to as usize);
        if f < self.dense_n && t < self.dense_n {
            let cell = self.dense[f * self.dense_n + t];
            if cell != 0 {
                return cell as usize - 1;
            }
        }
        self.new_or_sparse_slot(from, to)
    }

    /// A transition seen for the first time, or one outside the dense table.
    #[cold]
    #[inline(never)]
    fn new_or_sparse_slot(&mut self, from: u32, to: u32) -> usize {
        let (f, t) = (from as usize, to as usize);
        let next = self.keys.len() as u32;
        let slot = if f < self.dense_n && t < self.dense_n {
            self.dense[f * self.dense_n + t] = next + 1;
            next
        } else {
            *self.sparse.entry((from, to)).or_insert(next)
        };
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
    pub fn variants(&self) -> Vec<(&'log [u32], u64)> {
        self.variants.distinct()
    }

    /// `a → b → a` loops, keyed `(a, b)`.
    pub fn back_and_forth(&self) -> impl Iterator<Item = ((u32, u32), &BackAndForth)> {
        // Transition `b → a` holds the loops it closes.
        self.transitions()
            .filter(|(_, _, s)| s.back_and_forth.count > 0)
            .map(|(b, a, s)| ((a, b), &s.back_and_forth))
    }
}

fn nonzero(counts: &[u64]) -> impl Iterator<Item = (u32, u64)> + '_ {
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(t, &c)| (t as u32, c))
}

impl<'log> Aggregate<'log> for PathStats<'log> {
    fn add(&mut self, journey: &Journey<'log>) {
        let (tp, ts) = (journey.touchpoint, journey.ts);
        let (Some(&first), Some(&last)) = (tp.first(), tp.last()) else {
            return;
        };
        self.journeys += 1;
        self.events += tp.len() as u64;
        Self::bump(&mut self.starts, first, 1);
        Self::bump(&mut self.ends, last, 1);
        // One pass over the transitions: counts, durations and `a → b → a` (`before` is
        // the touchpoint two back; u32::MAX, no touchpoint's id, at the start).
        let (mut before, mut prev) = (u32::MAX, first);
        for i in 1..tp.len() {
            let next = tp[i];
            let slot = self.slot(prev, next);
            let stats = &mut self.stats[slot];
            stats.count += 1;
            if self.options.durations {
                stats.durations.record(ts[i].saturating_sub(ts[i - 1]));
            }
            if next == before && next != prev {
                let loop_ = &mut stats.back_and_forth;
                loop_.count += 1;
                if loop_.last_journey != journey.start {
                    loop_.journeys += 1;
                    loop_.last_journey = journey.start;
                }
            }
            (before, prev) = (prev, next);
        }
        if self.options.variants {
            self.variants.add(tp);
        }
    }

    fn seal(&mut self) {
        self.variants.compact();
    }

    fn merge(&mut self, other: Self) {
        self.journeys += other.journeys;
        self.events += other.events;
        for ((from, to), stats) in other.keys.into_iter().zip(other.stats) {
            let slot = self.slot(from, to);
            let mine = &mut self.stats[slot];
            mine.count += stats.count;
            mine.durations.merge(&stats.durations);
            mine.back_and_forth.count += stats.back_and_forth.count;
            // Parts hold disjoint journeys, so journey counts add.
            mine.back_and_forth.journeys += stats.back_and_forth.journeys;
        }
        for (t, c) in nonzero(&other.starts) {
            Self::bump(&mut self.starts, t, c);
        }
        for (t, c) in nonzero(&other.ends) {
            Self::bump(&mut self.ends, t, c);
        }
        self.variants.merge(other.variants);
    }
}

/// Distinct touchpoint sequences with counts, each sequence the journey's own slice of the
/// log (with a million distinct variants in 20M events, copying them would copy the log's
/// touchpoints once more).
///
/// Journeys are appended as they come and compacted in runs: sorted by hash, equal
/// sequences folded. A hash table would do the same with a cache miss per journey and a
/// serial re-insert of one part into the other at merge; sorted runs merge in one linear
/// pass. Compacting whenever the appended part is as large as the compacted one bounds the
/// memory by twice the distinct variants (plus a small batch) and the work by a sort.
#[derive(Debug, Clone, Default)]
struct Variants<'log> {
    /// Distinct sequences, ordered by (hash, sequence).
    counted: Vec<Variant<'log>>,
    /// Journeys appended since the last compaction.
    pending: Vec<Variant<'log>>,
}

#[derive(Debug, Clone, Copy)]
struct Variant<'log> {
    hash: u64,
    path: &'log [u32],
    count: u64,
}

impl Variant<'_> {
    fn order(&self, other: &Self) -> std::cmp::Ordering {
        // Sequences are read only when hashes are equal: a read is a cache miss.
        self.hash
            .cmp(&other.hash)
            .then_with(|| self.path.cmp(other.path))
    }
}

/// Appended journeys compacted at once, at least: below this, compaction is more call than
/// work.
const VARIANT_BATCH: usize = 1 << 14;

/// A sequence's hash, two touchpoints per step (the multiply chain is the cost).
fn hash_path(path: &[u32]) -> u64 {
    let mut h = FxHasher::default();
    h.write_usize(path.len());
    let mut pairs = path.chunks_exact(2);
    for pair in &mut pairs {
        h.write_u64(u64::from(pair[0]) | u64::from(pair[1]) << 32);
    }
    if let [last] = pairs.remainder() {
        h.write_u32(*last);
    }
    h.finish()
}

impl<'log> Variants<'log> {
    fn add(&mut self, path: &'log [u32]) {
        self.pending.push(Variant {
            hash: hash_path(path),
            path,
            count: 1,
        });
        if self.pending.len() >= self.counted.len().max(VARIANT_BATCH) {
            self.compact();
        }
    }

    /// Folds the appended journeys into the distinct sequences.
    fn compact(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_unstable_by(Variant::order);
        let counted = std::mem::take(&mut self.counted);
        self.counted = merge_sorted(counted, pending);
    }

    fn merge(&mut self, mut other: Variants<'log>) {
        self.compact();
        other.compact();
        let counted = std::mem::take(&mut self.counted);
        self.counted = merge_sorted(counted, other.counted);
    }

    fn distinct(&self) -> Vec<(&'log [u32], u64)> {
        let compacted;
        let counted = if self.pending.is_empty() {
            &self.counted
        } else {
            let mut copy = self.clone();
            copy.compact();
            compacted = copy.counted;
            &compacted
        };
        counted.iter().map(|v| (v.path, v.count)).collect()
    }
}

/// Two runs ordered by [`Variant::order`] (each may repeat a sequence) as one run of
/// distinct sequences.
fn merge_sorted<'log>(a: Vec<Variant<'log>>, b: Vec<Variant<'log>>) -> Vec<Variant<'log>> {
    let mut out: Vec<Variant<'log>> = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => {
                if x.order(y).is_le() {
                    a.next()
                } else {
                    b.next()
                }
            }
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        let Some(v) = next else { break };
        match out.last_mut() {
            Some(last) if last.hash == v.hash && last.path == v.path => last.count += v.count,
            _ => out.push(v),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    /// Many more journeys than a compaction batch, few distinct sequences and many: the
    /// distinct variants and counts are those of a plain count, added in one part or in
    /// several merged ones.
    #[test]
    fn variants_compacted_in_runs_count_every_journey() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for alphabet in [2u32, 50] {
            let paths: Vec<Vec<u32>> = (0..5 * VARIANT_BATCH)
                .map(|_| {
                    let len = rng.random_range(1..6);
                    (0..len).map(|_| rng.random_range(0..alphabet)).collect()
                })
                .collect();
            let mut expected: HashMap<&[u32], u64> = HashMap::new();
            for p in &paths {
                *expected.entry(p).or_default() += 1;
            }
            let mut whole = Variants::default();
            let mut parts = [
                Variants::default(),
                Variants::default(),
                Variants::default(),
            ];
            for (i, p) in paths.iter().enumerate() {
                whole.add(p);
                parts[i % 3].add(p);
            }
            let [mut merged, b, c] = parts;
            merged.merge(b);
            merged.merge(c);
            for v in [whole, merged] {
                let got: HashMap<&[u32], u64> = v.distinct().into_iter().collect();
                assert_eq!(got.len(), v.distinct().len(), "each sequence once");
                assert_eq!(got, expected);
            }
        }
    }
}
