//! Time-bucketed journey counts: what the live map is made of.
//!
//! Every number here is a signed count, so a customer's contribution can be taken back
//! exactly (a late event reorders a session; two customers turn out to be one) by adding it
//! again with the opposite sign. Counts merge by addition: shards, buckets and windows
//! combine in any order.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Width of a bucket: one minute, in microseconds.
pub const BUCKET_MICROS: i64 = 60_000_000;

/// The bucket (minutes since the epoch) an event time falls in.
#[inline]
pub fn bucket_of(ts: i64) -> i64 {
    ts.div_euclid(BUCKET_MICROS)
}

/// Values a [`Sparse`] holds: counts that add, zero being "nothing counted".
pub trait Count: Copy + Default + PartialEq {
    fn add(&mut self, other: &Self);
}

impl Count for i64 {
    #[inline]
    fn add(&mut self, other: &Self) {
        *self += other;
    }
}

/// One transition's count and total duration (for the mean).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionCount {
    pub count: i64,
    /// Sum of the transitions' durations, µs.
    pub duration_micros: i64,
}

impl Count for TransitionCount {
    #[inline]
    fn add(&mut self, other: &Self) {
        self.count += other.count;
        self.duration_micros += other.duration_micros;
    }
}

/// What is counted per touchpoint; see [`LiveCounts`] for which bucket counts what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TouchpointCounts {
    /// Events.
    pub visits: i64,
    /// Journeys that visit it at least once.
    pub through: i64,
    /// Journeys that start at it.
    pub starts: i64,
    /// Journeys that end at it (so far, for open ones).
    pub exits: i64,
}

impl Count for TouchpointCounts {
    #[inline]
    fn add(&mut self, other: &Self) {
        self.visits += other.visits;
        self.through += other.through;
        self.starts += other.starts;
        self.exits += other.exits;
    }
}

/// Counts by key, sorted by key, holding only keys whose count is not zero.
///
/// A minute's bucket touches a handful to a few dozen touchpoints and transitions, and a
/// live map holds a bucket per minute per segment: a sorted vector is one small allocation
/// with no empty slots (a hash table, or a dense array over every touchpoint, took several
/// times the memory), finds a key in a few compares, and merges with another in one pass.
/// Because zeros are never kept, equal counts are equal vectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sparse<K, V>(Vec<(K, V)>);

impl<K, V> Default for Sparse<K, V> {
    fn default() -> Self {
        Sparse(Vec::new())
    }
}

impl<K: Ord + Copy, V: Count> Sparse<K, V> {
    /// Changes the count of `key` by `f`; a count that becomes zero is dropped.
    #[inline]
    pub(crate) fn update(&mut self, key: K, f: impl FnOnce(&mut V)) {
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => {
                f(&mut self.0[i].1);
                if self.0[i].1 == V::default() {
                    self.0.remove(i);
                }
            }
            Err(i) => {
                let mut v = V::default();
                f(&mut v);
                if v != V::default() {
                    self.0.insert(i, (key, v));
                }
            }
        }
    }

    /// The count of `key` (zero if none).
    pub fn get(&self, key: K) -> V {
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.0[i].1,
            Err(_) => V::default(),
        }
    }

    /// The entries whose key `order` says is equal (`Equal`) to what is asked for, given
    /// that `order` is monotone over the sorted keys: one run, found by binary search.
    pub(crate) fn run(&self, order: impl Fn(&K) -> std::cmp::Ordering) -> &[(K, V)] {
        let from = self.0.partition_point(|(k, _)| order(k).is_lt());
        let to = from + self.0[from..].partition_point(|(k, _)| order(k).is_eq());
        &self.0[from..to]
    }

    /// Keys with their counts (none zero), in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `other`'s counts in, taking them (moved when these are empty).
    fn absorb(&mut self, other: Sparse<K, V>) {
        if self.0.is_empty() {
            *self = other;
        } else {
            self.merge(&other);
        }
    }

    /// Adds `other`'s counts in: one pass over both.
    fn merge(&mut self, other: &Sparse<K, V>) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        let (a, b) = (&self.0, &other.0);
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let (x, y) = (a[i], b[j]);
            match x.0.cmp(&y.0) {
                std::cmp::Ordering::Less => {
                    merged.push(x);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    merged.push(y);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let mut v = x.1;
                    v.add(&y.1);
                    if v != V::default() {
                        merged.push((x.0, v));
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        self.0 = merged;
    }
}

/// Counts of journeys (sessions) over some span of time: one bucket, or a window summed.
///
/// What is counted where: an event in the bucket of its time; a transition `a → b` in the
/// bucket of `b`; a journey, its start, and its funnel level in the bucket of its first
/// event; its exit in the bucket of its last event; "journeys through a touchpoint" in the
/// bucket of the journey's first visit to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveCounts {
    pub events: i64,
    pub journeys: i64,
    /// Visits, journeys through, starts and exits, by touchpoint id.
    pub touchpoints: Sparse<u32, TouchpointCounts>,
    pub transitions: Sparse<(u32, u32), TransitionCount>,
    /// Per configured journey (funnel), journeys by deepest step: `(funnel j, level k)` →
    /// journeys that reached exactly `k` steps (as
    /// [`StepTallies::levels`](trailmap_mine::funnel::StepTallies)).
    pub funnels: Sparse<(u32, u32), i64>,
    /// For funnels broken down by an attribute (alert breakdowns): `(funnel j, value,
    /// level k)` → journeys that entered the funnel with that value and reached exactly
    /// `k` steps (level 0, never entered, has no value).
    pub funnel_values: Sparse<(u32, u32, u32), i64>,
    /// Of those short of the last step, the ones that can still go on, by when: `(funnel j,
    /// value, minute m, level k)` → journeys at level `k` whose window ends by the start of
    /// minute `m` (and after the start of `m - 1`); value [`WHOLE`] for the funnel as a
    /// whole. They are maturing until then; see [`maturing`](Self::maturing).
    pub open_windows: Sparse<(u32, u32, i64, u32), i64>,
}

/// The value that stands for a whole funnel, not broken down.
pub const WHOLE: u32 = u32::MAX;

/// A funnel's levels by breakdown value ([`WHOLE`] alone when not broken down).
pub type ByValue = BTreeMap<u32, FunnelLevels>;

/// The minute by whose start a window ending at `end` (µs) has elapsed.
#[inline]
pub fn window_elapsed_by(end: i64) -> i64 {
    bucket_of(end.saturating_sub(1)) + 1
}

impl LiveCounts {
    #[inline]
    pub(crate) fn touchpoint(&mut self, touchpoint: u32, f: impl FnOnce(&mut TouchpointCounts)) {
        self.touchpoints.update(touchpoint, f);
    }

    #[cfg(test)]
    fn visit(&mut self, touchpoint: u32, by: i64) {
        self.touchpoint(touchpoint, |c| c.visits += by);
    }

    /// An event, and whether it is its journey's first visit to the touchpoint.
    #[inline]
    pub(crate) fn visit_through(&mut self, touchpoint: u32, first_visit: bool, by: i64) {
        self.touchpoint(touchpoint, |c| {
            c.visits += by;
            if first_visit {
                c.through += by;
            }
        });
    }

    #[inline]
    pub(crate) fn start(&mut self, touchpoint: u32, by: i64) {
        self.touchpoint(touchpoint, |c| c.starts += by);
    }

    #[inline]
    pub(crate) fn exit(&mut self, touchpoint: u32, by: i64) {
        self.touchpoint(touchpoint, |c| c.exits += by);
    }

    #[inline]
    pub(crate) fn transition(&mut self, from: u32, to: u32, duration: i64, by: i64) {
        self.transitions.update((from, to), |t| {
            t.count += by;
            t.duration_micros += by * duration;
        });
    }

    pub(crate) fn funnel_level(&mut self, funnel: usize, level: usize, by: i64) {
        self.funnels
            .update((funnel as u32, level as u32), |n| *n += by);
    }

    /// A journey of funnel `funnel` that entered with breakdown `value` reached `level`.
    pub(crate) fn value_level(&mut self, funnel: usize, value: u32, level: usize, by: i64) {
        self.funnel_values
            .update((funnel as u32, value, level as u32), |n| *n += by);
    }

    /// A journey of funnel `funnel` (of breakdown `value`, or [`WHOLE`]) stopped at
    /// `level` with its window ending at `end` (µs).
    pub(crate) fn open_window(
        &mut self,
        funnel: usize,
        value: u32,
        end: i64,
        level: usize,
        by: i64,
    ) {
        let key = (funnel as u32, value, window_elapsed_by(end), level as u32);
        self.open_windows.update(key, |n| *n += by);
    }

    /// Journeys of funnel `j` still maturing as of minute `as_of` (minutes since the epoch),
    /// by the level they stopped at: short of the last step, with a window that has not
    /// elapsed by the start of that minute. Maturity is decided at whole minutes, so this
    /// is what batch mining says with `as_of` at the start of the minute. (Per breakdown
    /// value: [`LiveMap::funnel_levels_by_value`].)
    pub fn maturing(&self, j: usize, as_of: i64) -> Vec<i64> {
        let mut levels = Vec::new();
        self.add_maturing(j, as_of, &mut levels);
        levels
    }

    /// Adds funnel `j`'s journeys (as a whole) maturing as of minute `as_of`.
    fn add_maturing(&self, j: usize, as_of: i64, into: &mut Vec<i64>) {
        // Keys sort by funnel, value, then minute: the ones asked for are one run.
        let asked = (j as u32, WHOLE);
        let windows = self.open_windows.run(|&(f, v, by, _)| {
            (f, v).cmp(&asked).then(if by > as_of {
                std::cmp::Ordering::Equal
            } else {
                std::cmp::Ordering::Less
            })
        });
        for &((_, _, _, level), n) in windows {
            add_level(into, level as usize, n);
        }
    }

    /// Funnel `j`'s levels, with those maturing as of minute `as_of` (none without one).
    pub fn funnel(&self, j: usize, as_of: Option<i64>) -> FunnelLevels {
        let mut f = FunnelLevels::default();
        f.add_bucket(self, j, as_of);
        f
    }

    /// Adds other counts into these.
    pub fn merge(&mut self, other: &LiveCounts) {
        self.events += other.events;
        self.journeys += other.journeys;
        self.touchpoints.merge(&other.touchpoints);
        self.transitions.merge(&other.transitions);
        self.funnels.merge(&other.funnels);
        self.funnel_values.merge(&other.funnel_values);
        self.open_windows.merge(&other.open_windows);
    }

    /// Adds other counts in, taking them.
    fn absorb(&mut self, other: LiveCounts) {
        self.events += other.events;
        self.journeys += other.journeys;
        self.touchpoints.absorb(other.touchpoints);
        self.transitions.absorb(other.transitions);
        self.funnels.absorb(other.funnels);
        self.funnel_values.absorb(other.funnel_values);
        self.open_windows.absorb(other.open_windows);
    }

    /// Whether nothing is counted (everything retracted).
    pub fn is_empty(&self) -> bool {
        self.events == 0
            && self.journeys == 0
            && self.touchpoints.is_empty()
            && self.transitions.is_empty()
            && self.funnels.is_empty()
            && self.funnel_values.is_empty()
            && self.open_windows.is_empty()
    }
}

/// One journey's funnel levels over some entry minutes: what an alert rule reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunnelLevels {
    /// Journeys by deepest level (`levels[k]` reached exactly `k` steps).
    pub levels: Vec<i64>,
    /// Of those, the ones still maturing (window not elapsed), by level.
    pub maturing: Vec<i64>,
}

fn add_level(levels: &mut Vec<i64>, level: usize, by: i64) {
    if levels.len() <= level {
        levels.resize(level + 1, 0);
    }
    levels[level] += by;
}

fn add_levels(into: &mut Vec<i64>, from: &[i64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

impl FunnelLevels {
    pub fn merge(&mut self, other: &FunnelLevels) {
        add_levels(&mut self.levels, &other.levels);
        add_levels(&mut self.maturing, &other.maturing);
    }

    /// Adds funnel `j` of one bucket's counts, with its journeys maturing as of minute
    /// `as_of` (none without one).
    fn add_bucket(&mut self, c: &LiveCounts, j: usize, as_of: Option<i64>) {
        for &((_, level), n) in c.funnels.run(|&(f, _)| f.cmp(&(j as u32))) {
            add_level(&mut self.levels, level as usize, n);
        }
        if let Some(as_of) = as_of {
            c.add_maturing(j, as_of, &mut self.maturing);
        }
    }

    /// Journeys whose deepest step is at least step `k` (0-based), as
    /// [`StepTallies::reached`](trailmap_mine::funnel::StepTallies::reached).
    pub fn reached(&self, k: usize) -> i64 {
        self.levels.iter().skip(k + 1).sum()
    }

    /// `(entered, converted, maturing)` of a funnel whose last step is `last` (0-based):
    /// journeys that reached the first step, the last, and those still maturing.
    pub fn outcome(&self, last: usize) -> (i64, i64, i64) {
        (
            self.reached(0),
            self.reached(last),
            self.maturing.iter().sum(),
        )
    }

    /// Journeys that reached step `from` but not step `to` and can still go on.
    pub fn maturing_between(&self, from: usize, to: usize) -> i64 {
        self.maturing.iter().take(to + 1).skip(from + 1).sum()
    }
}

/// Adds levels by value into others (shards' answers).
pub fn merge_by_value(into: &mut ByValue, from: &ByValue) {
    for (&v, levels) in from {
        into.entry(v).or_default().merge(levels);
    }
}

const MINUTES_PER_DAY: i64 = 24 * 60;

/// Funnel levels by UTC day of entry, per funnel: what a funnel's trend chart reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunnelTrend {
    /// Days since the epoch → per funnel (config order), its levels.
    pub days: BTreeMap<i64, Vec<FunnelLevels>>,
}

impl FunnelTrend {
    pub fn merge(&mut self, other: &FunnelTrend) {
        for (&day, theirs) in &other.days {
            let mine = self.days.entry(day).or_default();
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), FunnelLevels::default());
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                a.merge(b);
            }
        }
    }
}

/// Buckets from which [`LiveMap::sum`] splits the work across two threads.
const PARALLEL_SUM: usize = 1024;

/// `maps` summed, taking them: a minute only one map has is moved, not copied, and the
/// buckets of two maps are joined in one pass over both (they are in minute order).
fn fold(maps: Vec<LiveMap>) -> LiveMap {
    let mut maps = maps.into_iter().peekable();
    let mut sum = maps.next().unwrap_or_default();
    if maps.peek().is_none() {
        sum.prune();
        return sum;
    }
    for m in maps {
        let mut theirs = m.buckets.into_iter().peekable();
        let mut mine = std::mem::take(&mut sum.buckets).into_iter().peekable();
        sum.buckets = std::iter::from_fn(|| match (mine.peek(), theirs.peek()) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                let (minute, mut counts) = mine.next()?;
                counts.absorb(theirs.next()?.1);
                Some((minute, counts))
            }
            (Some(a), Some(b)) if a.0 < b.0 => mine.next(),
            (Some(_), None) => mine.next(),
            _ => theirs.next(),
        })
        .filter(|(_, c)| !c.is_empty())
        .collect();
    }
    sum
}

/// A map's buckets: minutes in order, and their counts beside them.
///
/// Every event looks up its minute's bucket (in the whole map and in its segment's), so
/// the lookup is the shard's hottest path. Live lookups land near the live edge: the last
/// bucket used, or one a few minutes back (a session's start, a customer's previous event),
/// so the search gallops back from the newest minute over a vector of minutes alone (a few
/// compares in cache) where a `BTreeMap` walked its tree from the root every time. New
/// minutes come at the live edge too, within the lateness horizon of the watermark, so an
/// insert moves only the few buckets after it.
#[derive(Debug, Clone, Default)]
struct Minutes {
    /// Sorted, distinct.
    minutes: Vec<i64>,
    /// `counts[i]` is minute `minutes[i]`'s.
    counts: Vec<LiveCounts>,
    /// Where the last lookup ended.
    hint: usize,
}

impl PartialEq for Minutes {
    fn eq(&self, other: &Self) -> bool {
        self.minutes == other.minutes && self.counts == other.counts
    }
}

impl Eq for Minutes {}

impl Minutes {
    /// The bucket of `minute`, created if missing.
    fn entry(&mut self, minute: i64) -> &mut LiveCounts {
        let i = if self.minutes.get(self.hint) == Some(&minute) {
            self.hint
        } else {
            match search_from_end(&self.minutes, minute) {
                Ok(i) => i,
                Err(i) => {
                    self.minutes.insert(i, minute);
                    self.counts.insert(i, LiveCounts::default());
                    i
                }
            }
        };
        self.hint = i;
        &mut self.counts[i]
    }

    fn len(&self) -> usize {
        self.minutes.len()
    }

    fn is_empty(&self) -> bool {
        self.minutes.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (i64, &LiveCounts)> {
        self.minutes.iter().copied().zip(&self.counts)
    }

    fn values(&self) -> impl Iterator<Item = &LiveCounts> {
        self.counts.iter()
    }

    /// The buckets of minutes in `[from, to)`.
    fn range(&self, from: i64, to: i64) -> impl Iterator<Item = (i64, &LiveCounts)> {
        let start = self.minutes.partition_point(|&m| m < from);
        let end = self.minutes.partition_point(|&m| m < to).max(start);
        self.minutes[start..end]
            .iter()
            .copied()
            .zip(&self.counts[start..end])
    }

    /// Keeps the buckets whose counts `keep` says.
    fn retain(&mut self, mut keep: impl FnMut(&LiveCounts) -> bool) {
        // Usually every bucket is kept: then nothing moves.
        let Some(first) = self.counts.iter().position(|c| !keep(c)) else {
            return;
        };
        let mut kept = first;
        for i in first + 1..self.minutes.len() {
            if keep(&self.counts[i]) {
                self.minutes.swap(kept, i);
                self.counts.swap(kept, i);
                kept += 1;
            }
        }
        self.minutes.truncate(kept);
        self.counts.truncate(kept);
        self.hint = 0;
    }

    /// Takes the buckets from `minute` on.
    fn split_off(&mut self, minute: i64) -> Minutes {
        let at = self.minutes.partition_point(|&m| m < minute);
        self.hint = 0;
        Minutes {
            minutes: self.minutes.split_off(at),
            counts: self.counts.split_off(at),
            hint: 0,
        }
    }

    /// Appends `later`, whose minutes all come after these.
    fn append(&mut self, later: &mut Minutes) {
        debug_assert!(match (self.minutes.last(), later.minutes.first()) {
            (Some(a), Some(b)) => a < b,
            _ => true,
        });
        self.minutes.append(&mut later.minutes);
        self.counts.append(&mut later.counts);
    }
}

/// Where `minute` is in the sorted `minutes` (`Err`: where it would go), searched from the
/// end: steps back 1, 2, 4, ... until a smaller minute, then a binary search between.
fn search_from_end(minutes: &[i64], minute: i64) -> Result<usize, usize> {
    let (mut lo, mut hi, mut step) = (minutes.len().saturating_sub(1), minutes.len(), 1);
    // Every minute at `hi` or after is at least `minute`.
    while lo > 0 && minutes[lo] >= minute {
        hi = lo;
        lo = lo.saturating_sub(step);
        step *= 2;
    }
    let at = lo + minutes[lo..hi].partition_point(|&m| m < minute);
    match minutes.get(at) {
        Some(&m) if m == minute => Ok(at),
        _ => Err(at),
    }
}

impl FromIterator<(i64, LiveCounts)> for Minutes {
    /// From buckets in any order; a minute given twice keeps its counts summed.
    fn from_iter<I: IntoIterator<Item = (i64, LiveCounts)>>(iter: I) -> Self {
        let mut entries: Vec<(i64, LiveCounts)> = iter.into_iter().collect();
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            entries.sort_by_key(|e| e.0);
            entries.dedup_by(|later, earlier| {
                if later.0 != earlier.0 {
                    return false;
                }
                earlier.1.absorb(std::mem::take(&mut later.1));
                true
            });
        }
        let (minutes, counts) = entries.into_iter().unzip();
        Minutes {
            minutes,
            counts,
            hint: 0,
        }
    }
}

impl IntoIterator for Minutes {
    type Item = (i64, LiveCounts);
    type IntoIter = std::iter::Zip<std::vec::IntoIter<i64>, std::vec::IntoIter<LiveCounts>>;

    fn into_iter(self) -> Self::IntoIter {
        self.minutes.into_iter().zip(self.counts)
    }
}

/// Kept as the map from minute to counts it always was, so stored states still read.
impl Serialize for Minutes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Minutes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<i64, LiveCounts>::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
}

/// Counts by minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveMap {
    buckets: Minutes,
}

impl LiveMap {
    /// The bucket of an event time, created if missing.
    pub(crate) fn at(&mut self, ts: i64) -> &mut LiveCounts {
        self.buckets.entry(bucket_of(ts))
    }

    /// Drops buckets whose counts were all retracted.
    pub(crate) fn prune(&mut self) {
        self.buckets.retain(|c| !c.is_empty());
    }

    /// Counts of events with time in `[from, to)` (µs), summed over their buckets. Buckets
    /// are whole minutes: a bound inside a minute takes that minute whole.
    pub fn window(&self, from: i64, to: i64) -> LiveCounts {
        let mut sum = LiveCounts::default();
        if from >= to {
            return sum;
        }
        for (_, c) in self.buckets.range(bucket_of(from), bucket_of(to - 1) + 1) {
            sum.merge(c);
        }
        sum
    }

    /// Every funnel's journeys that entered between `from` and `to` (µs), by UTC day of
    /// entry (days since the epoch), maturing as of the start of minute `as_of`: the trend
    /// of each funnel, in one pass over the window.
    pub fn funnel_trend(&self, from: i64, to: i64, as_of: i64) -> FunnelTrend {
        let mut trend = FunnelTrend::default();
        if from >= to {
            return trend;
        }
        for (minute, c) in self.buckets.range(bucket_of(from), bucket_of(to - 1) + 1) {
            if c.funnels.is_empty() && c.open_windows.is_empty() {
                continue;
            }
            let day = minute.div_euclid(MINUTES_PER_DAY);
            let per_funnel = trend.days.entry(day).or_default();
            let funnels = c
                .funnels
                .iter()
                .map(|(&(j, _), _)| j)
                .chain(c.open_windows.iter().map(|(&(j, _, _, _), _)| j))
                .max()
                .map_or(0, |j| j as usize + 1);
            if per_funnel.len() < funnels {
                per_funnel.resize(funnels, FunnelLevels::default());
            }
            for (j, f) in per_funnel.iter_mut().enumerate().take(funnels) {
                f.add_bucket(c, j, Some(as_of));
            }
        }
        trend
    }

    /// Funnel `j`'s journeys that entered in the given ranges of minutes (since the epoch;
    /// journeys count in the minute of their first event), with those maturing as of the
    /// start of minute `as_of`. Only the funnel is read, so long spans stay cheap.
    pub fn funnel_levels(
        &self,
        j: usize,
        minutes: &[std::ops::Range<i64>],
        as_of: i64,
    ) -> FunnelLevels {
        let mut sum = FunnelLevels::default();
        for c in self.in_ranges(minutes) {
            sum.add_bucket(c, j, Some(as_of));
        }
        sum
    }

    /// The buckets of the given ranges of minutes.
    fn in_ranges<'a>(
        &'a self,
        minutes: &'a [std::ops::Range<i64>],
    ) -> impl Iterator<Item = &'a LiveCounts> {
        minutes
            .iter()
            .filter(|r| !r.is_empty())
            .flat_map(|r| self.buckets.range(r.start, r.end).map(|(_, c)| c))
    }

    /// Funnel `j`'s levels as [`funnel_levels`](Self::funnel_levels) has them (under
    /// [`WHOLE`]) or, `by_value`, as
    /// [`funnel_levels_by_value`](Self::funnel_levels_by_value) has them.
    pub fn funnel_levels_by(
        &self,
        j: usize,
        minutes: &[std::ops::Range<i64>],
        as_of: i64,
        by_value: bool,
    ) -> ByValue {
        if by_value {
            self.funnel_levels_by_value(j, minutes, as_of)
        } else {
            ByValue::from([(WHOLE, self.funnel_levels(j, minutes, as_of))])
        }
    }

    /// The same, by the breakdown value journeys entered with (for a funnel the shards
    /// break down): every value seen in the minutes, in one pass.
    pub fn funnel_levels_by_value(
        &self,
        j: usize,
        minutes: &[std::ops::Range<i64>],
        as_of: i64,
    ) -> ByValue {
        let mut by = ByValue::new();
        let j32 = j as u32;
        // Keys sort by funnel first: funnel `j`'s entries are one run of each.
        for c in self.in_ranges(minutes) {
            for &((_, v, level), n) in c.funnel_values.run(|&(f, _, _)| f.cmp(&j32)) {
                add_level(&mut by.entry(v).or_default().levels, level as usize, n);
            }
            for &((_, v, elapsed_by, level), n) in c.open_windows.run(|&(f, _, _, _)| f.cmp(&j32)) {
                if v != WHOLE && elapsed_by > as_of {
                    add_level(&mut by.entry(v).or_default().maturing, level as usize, n);
                }
            }
        }
        by
    }

    /// Journeys (sessions) counted, without summing anything else.
    pub fn journeys(&self) -> i64 {
        self.buckets.values().map(|c| c.journeys).sum()
    }

    /// Everything counted.
    pub fn total(&self) -> LiveCounts {
        let mut sum = LiveCounts::default();
        for c in self.buckets.values() {
            sum.merge(c);
        }
        sum
    }

    /// The sum of `maps`, taking them.
    ///
    /// The end of a run waits for this (the shards' maps summed into one), so a large sum
    /// is split by time and its halves summed on two threads; the first map of each half
    /// is kept as it is and the others merged into it.
    pub fn sum(maps: Vec<LiveMap>) -> LiveMap {
        let mut maps: Vec<LiveMap> = maps.into_iter().filter(|m| !m.buckets.is_empty()).collect();
        let split = maps
            .first()
            .filter(|first| maps.len() > 1 && first.buckets.len() >= PARALLEL_SUM)
            .map(|first| first.buckets.minutes[first.buckets.len() / 2]);
        let Some(split) = split else {
            return fold(maps);
        };
        let later: Vec<LiveMap> = maps
            .iter_mut()
            .map(|m| LiveMap {
                buckets: m.buckets.split_off(split),
            })
            .collect();
        let (mut early, mut late) = std::thread::scope(|scope| {
            let later = scope.spawn(|| fold(later));
            let early = fold(maps);
            let later = later
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            (early, later)
        });
        early.buckets.append(&mut late.buckets);
        early
    }

    /// Adds another map's buckets into this one.
    pub fn merge(&mut self, other: &LiveMap) {
        // The sum's ordered join, over a copy of `other`'s buckets.
        *self = fold(vec![std::mem::take(self), other.clone()]);
    }

    /// Non-empty buckets: `(minute since the epoch, counts)`.
    pub fn buckets(&self) -> impl Iterator<Item = (i64, &LiveCounts)> {
        self.buckets.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.values().all(LiveCounts::is_empty)
    }
}

#[cfg(test)]
// Lists of one range of minutes are meant: a window is a list of ranges.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn a_retracted_contribution_leaves_nothing() {
        let mut m = LiveMap::default();
        for by in [1, -1] {
            let c = m.at(90_000_000);
            c.events += by;
            c.visit(3, by);
            c.transition(3, 4, 5_000_000, by);
            c.funnel_level(1, 2, by);
        }
        m.prune();
        assert!(m.is_empty());
        assert!(m.total().is_empty());
        assert_eq!(m.total(), LiveCounts::default());
    }

    #[test]
    fn a_sum_split_across_threads_equals_merging_one_by_one() {
        let m = BUCKET_MICROS;
        // Three maps over overlapping and disjoint minutes, some counts cancelling out.
        let maps: Vec<LiveMap> = (0..3i64)
            .map(|k| {
                let mut map = LiveMap::default();
                for minute in (k * 500)..(k * 500 + 2 * PARALLEL_SUM as i64) {
                    let c = map.at(minute * m);
                    let by = if k == 2 && minute % 7 == 0 { -1 } else { 1 };
                    c.events += by;
                    c.visit((minute % 5) as u32, by);
                    c.transition(1, (minute % 3) as u32, 1_000_000, by);
                    c.funnel_level(0, (minute % 4) as usize, by);
                    c.open_window(0, WHOLE, (minute + 30) * m, 1, by);
                }
                map
            })
            .collect();
        let mut one_by_one = LiveMap::default();
        for map in &maps {
            one_by_one.merge(map);
        }
        let sum = LiveMap::sum(maps);
        assert_eq!(sum, one_by_one);
        assert!(sum.buckets().count() > 2 * PARALLEL_SUM);
        assert_eq!(LiveMap::sum(Vec::new()), LiveMap::default());
    }

    #[test]
    fn a_journey_matures_at_the_first_minute_its_window_has_elapsed_by() {
        let m = BUCKET_MICROS;
        assert_eq!(window_elapsed_by(10 * m), 10);
        assert_eq!(window_elapsed_by(10 * m + 1), 11);
        assert_eq!(window_elapsed_by(11 * m - 1), 11);
        let mut c = LiveCounts::default();
        // Stopped at level 1, window ends 10 minutes in; at level 2, ends half a minute later.
        c.open_window(0, WHOLE, 10 * m, 1, 1);
        c.open_window(0, WHOLE, 10 * m + m / 2, 2, 1);
        c.open_window(1, WHOLE, 100 * m, 1, 1);
        assert_eq!(c.maturing(0, 9), vec![0, 1, 1]);
        // As of the start of minute 10 the first window has ended (end = now is not open).
        assert_eq!(c.maturing(0, 10), vec![0, 0, 1]);
        assert_eq!(c.maturing(0, 11), Vec::<i64>::new());
        assert_eq!(c.maturing(1, 11), vec![0, 1]);
        c.open_window(0, WHOLE, 10 * m, 1, -1);
        assert_eq!(c.maturing(0, 9), vec![0, 0, 1]);
    }

    #[test]
    fn trends_split_a_window_by_day_of_entry() {
        let mut m = LiveMap::default();
        let day = 24 * 60 * BUCKET_MICROS;
        let at = |d: i64, minute: i64| d * day + minute * BUCKET_MICROS;
        m.at(at(3, 10)).funnel_level(0, 2, 4);
        m.at(at(3, 20)).funnel_level(0, 1, 1);
        m.at(at(3, 20)).open_window(0, WHOLE, at(5, 0), 1, 1);
        m.at(at(4, 0)).funnel_level(1, 1, 7);
        m.at(at(6, 5)).funnel_level(0, 1, 2);
        let t = m.funnel_trend(at(3, 0), at(6, 0), bucket_of(at(4, 0)));
        // Day 6 is outside; day 3 has funnel 0 only, day 4 funnel 1 only.
        assert_eq!(t.days.keys().copied().collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(t.days[&3][0].levels, vec![0, 1, 4]);
        assert_eq!(t.days[&3][0].maturing, vec![0, 1]);
        assert_eq!(t.days[&4][1].levels, vec![0, 7]);
        // As of day 5 the window has elapsed; trends of parts merge into the whole.
        let late = m.funnel_trend(at(3, 0), at(6, 0), bucket_of(at(5, 0)));
        assert!(late.days[&3][0].maturing.iter().all(|&n| n == 0));
        let mut parts = m.funnel_trend(at(3, 0), at(4, 0), bucket_of(at(4, 0)));
        parts.merge(&m.funnel_trend(at(4, 0), at(6, 0), bucket_of(at(4, 0))));
        assert_eq!(parts, t);
    }

    #[test]
    fn funnel_levels_read_only_the_asked_minutes() {
        let mut m = LiveMap::default();
        let minute = |k: i64| k * BUCKET_MICROS;
        m.at(minute(1)).funnel_level(0, 3, 2);
        m.at(minute(2)).funnel_level(0, 1, 5);
        m.at(minute(2)).open_window(0, WHOLE, minute(10), 1, 4);
        m.at(minute(3)).funnel_level(0, 2, 7);
        m.at(minute(3)).funnel_level(1, 2, 9);
        let f = m.funnel_levels(0, &[1..3], 5);
        assert_eq!(f.levels, vec![0, 5, 0, 2]);
        assert_eq!(f.maturing, vec![0, 4]);
        assert_eq!((f.reached(0), f.reached(2)), (7, 2));
        assert_eq!(f.maturing_between(0, 2), 4);
        assert_eq!(f.maturing_between(1, 2), 0);
        // As of minute 10 the window has elapsed; two ranges add up; empty ranges add nothing.
        let g = m.funnel_levels(0, &[1..2, 3..4, 5..5], 10);
        assert_eq!(g.levels, vec![0, 0, 7, 2]);
        assert!(g.maturing.iter().all(|&n| n == 0));
    }

    #[test]
    fn a_search_from_the_end_finds_what_a_binary_search_does() {
        for len in 0..40 {
            let minutes: Vec<i64> = (0..len).map(|i| 2 * i).collect();
            for minute in -2..2 * len + 2 {
                assert_eq!(
                    search_from_end(&minutes, minute),
                    minutes.binary_search(&minute),
                    "{minute} in {len}"
                );
            }
        }
    }

    /// The old layout of a map, for what stored states hold.
    #[derive(Serialize)]
    struct TreeMap {
        buckets: BTreeMap<i64, LiveCounts>,
    }

    proptest::proptest! {
        /// Buckets kept in a sorted vector (with a remembered position) hold what a
        /// `BTreeMap` would, whatever order minutes come in: looked up, merged, windowed,
        /// split and joined; and they are stored as the `BTreeMap` was, byte for byte.
        #[test]
        fn minutes_hold_what_a_tree_would(
            ops in proptest::collection::vec((0i64..40, 1i64..4, proptest::bool::ANY), 0..120),
            split in 0i64..40,
        ) {
            let (mut map, mut other) = (LiveMap::default(), LiveMap::default());
            let (mut tree, mut both) = (BTreeMap::<i64, LiveCounts>::new(), BTreeMap::<i64, LiveCounts>::new());
            for &(minute, by, mine) in &ops {
                let ts = minute * 60_000_000 + 1;
                let (m, t) = if mine { (&mut map, &mut tree) } else { (&mut other, &mut BTreeMap::new()) };
                m.at(ts).events += by;
                t.entry(minute).or_default().events += by;
                both.entry(minute).or_default().events += by;
            }
            let listed: Vec<(i64, i64)> = map.buckets().map(|(m, c)| (m, c.events)).collect();
            let expected: Vec<(i64, i64)> = tree.iter().map(|(&m, c)| (m, c.events)).collect();
            proptest::prop_assert_eq!(listed, expected);
            let stored = postcard::to_allocvec(&map).expect("encode");
            let as_tree = postcard::to_allocvec(&TreeMap { buckets: tree.clone() }).expect("encode");
            proptest::prop_assert_eq!(&stored, &as_tree);
            let read: LiveMap = postcard::from_bytes(&stored).expect("decode");
            proptest::prop_assert_eq!(&read, &map);
            let window = map.window(split * 60_000_000, (split + 7) * 60_000_000).events;
            let in_tree: i64 = tree.range(split..split + 7).map(|(_, c)| c.events).sum();
            proptest::prop_assert_eq!(window, in_tree);
            let mut merged = map.clone();
            merged.merge(&other);
            let listed: Vec<(i64, i64)> = merged.buckets().map(|(m, c)| (m, c.events)).collect();
            let expected: Vec<(i64, i64)> = both.iter().map(|(&m, c)| (m, c.events)).collect();
            proptest::prop_assert_eq!(&listed, &expected);
            proptest::prop_assert_eq!(LiveMap::sum(vec![map.clone(), other.clone()]), merged.clone());
            let mut early = merged.clone();
            let mut late = LiveMap { buckets: early.buckets.split_off(split) };
            proptest::prop_assert!(early.buckets().all(|(m, _)| m < split));
            proptest::prop_assert!(late.buckets().all(|(m, _)| m >= split));
            early.buckets.append(&mut late.buckets);
            proptest::prop_assert_eq!(early, merged);
        }

        /// Counts kept apart and merged equal the same counts kept in one, whatever the
        /// split; zeros are never kept, so equal counts are equal vectors.
        #[test]
        fn sparse_counts_merge_as_if_kept_together(
            ops in proptest::collection::vec((0u32..12, -3i64..4, proptest::bool::ANY), 0..80)
        ) {
            let (mut whole, mut a, mut b) =
                (Sparse::<u32, i64>::default(), Sparse::default(), Sparse::default());
            for &(key, by, first) in &ops {
                whole.update(key, |n| *n += by);
                let part = if first { &mut a } else { &mut b };
                part.update(key, |n| *n += by);
            }
            let mut expected = std::collections::BTreeMap::new();
            for &(key, by, _) in &ops {
                *expected.entry(key).or_insert(0) += by;
            }
            expected.retain(|_, n| *n != 0);
            let got: Vec<(u32, i64)> = whole.iter().map(|(&k, &n)| (k, n)).collect();
            proptest::prop_assert_eq!(&got, &expected.into_iter().collect::<Vec<_>>());
            for (key, _, _) in &ops {
                proptest::prop_assert_eq!(whole.get(*key), got.iter().find(|e| e.0 == *key).map_or(0, |e| e.1));
            }
            a.merge(&b);
            proptest::prop_assert_eq!(a, whole);
        }
    }

    #[test]
    fn windows_take_whole_minutes() {
        let mut m = LiveMap::default();
        m.at(0).visit(1, 1);
        m.at(BUCKET_MICROS).visit(1, 2);
        m.at(-1).visit(1, 4);
        let visits = |c: LiveCounts| c.touchpoints.get(1).visits;
        assert_eq!(visits(m.window(0, BUCKET_MICROS)), 1);
        assert_eq!(visits(m.window(1, BUCKET_MICROS + 1)), 3);
        assert_eq!(visits(m.window(-BUCKET_MICROS, 0)), 4);
        assert_eq!(visits(m.total()), 7);
        assert!(m.window(5, 5).is_empty());
    }
}
