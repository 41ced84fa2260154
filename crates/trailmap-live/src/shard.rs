//! A shard of customers: their open sessions, and what those contribute to the live map.
//!
//! A customer's retained events are those of sessions that could still change: a session is
//! final once the watermark, less the allowed lateness, has passed its last event by more
//! than the session gap, because no event the pipeline still accepts can join it then. Final
//! sessions' events are dropped; what they contributed stays in the map.
//!
//! Every change to a customer (an event in order, a late one, a merge with another
//! customer) takes back the contribution of the sessions it can affect and adds theirs
//! again, recomputed from the events: the live map is always exactly the sum over sessions
//! of what batch mining would count for them.

use crate::counts::{LiveCounts, LiveMap, WHOLE, bucket_of};
use hashbrown::HashTable;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use trailmap_mine::fold::Aggregate;
use trailmap_mine::funnel::Attempt;
use trailmap_mine::{Funnel, FunnelSpec};
use trailmap_sessionize::{Journey, session_starts, starts_session};

/// An event as a shard keeps it: 24 bytes (held for every open session, so it counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEvent {
    /// Event time, µs since the epoch.
    pub ts: i64,
    /// Arrival order across the pipeline: ties in time keep it, as batch does.
    pub seq: u64,
    pub touchpoint: u32,
    /// Value id of the attribute alert breakdowns use (0 = none; see
    /// [`Stitcher::keep_attribute`](crate::stitch::Stitcher::keep_attribute)): it fills
    /// what would be padding.
    pub value: u32,
}

const _: () = assert!(std::mem::size_of::<LiveEvent>() == 24);

impl LiveEvent {
    #[inline]
    fn order(&self) -> (i64, u64) {
        (self.ts, self.seq)
    }
}

/// Session rules and funnels a shard applies, in µs.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub gap: i64,
    pub max_duration: i64,
    pub lateness: i64,
    /// Configured journeys, resolved against the pipeline's touchpoint ids.
    pub funnels: Vec<FunnelSpec>,
    /// Per journey: whether its levels are also kept by the events' breakdown value
    /// ([`LiveEvent::value`]), for alert rules with a breakdown.
    pub by_value: Vec<bool>,
    /// Keep the map per segment too: each session counted again in the map of its first
    /// event's value (`[segments] by`).
    pub segmented: bool,
}

/// The maps a session of segment `value` counts in: the whole map, and its segment's when
/// segments are kept.
fn targets<'a>(
    map: &'a mut LiveMap,
    segments: &'a mut Option<FxHashMap<u32, LiveMap>>,
    value: u32,
) -> impl Iterator<Item = &'a mut LiveMap> {
    std::iter::once(map).chain(segments.as_mut().map(|s| s.entry(value).or_default()))
}

/// What a shard did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShardStats {
    pub events: u64,
    /// Events that arrived behind a later event of their customer, inside the lateness
    /// horizon: they corrected what was counted.
    pub corrected: u64,
    /// Customers merged into another (identity links between customers with open state).
    pub merged: u64,
    /// Sessions whose contribution became final and whose events were dropped.
    pub sessions_final: u64,
}

/// One configured funnel, run through the batch [`Funnel`] aggregate one session at a time;
/// the change in its tallies is the session's contribution.
struct FunnelProbe {
    funnel: Funnel<'static>,
    levels: Vec<u64>,
    /// Touchpoints that can change a journey's level (steps and exclusions); under strict
    /// order, every event can.
    matters: Vec<bool>,
    every_event_matters: bool,
    /// Levels are also kept by the value of the event that entered the funnel.
    by_value: bool,
}

impl FunnelProbe {
    fn matters(&self, touchpoint: u32) -> bool {
        self.every_event_matters
            || self
                .matters
                .get(touchpoint as usize)
                .copied()
                .unwrap_or(false)
    }
}

/// A customer with open sessions: 32 bytes and its events.
#[derive(Debug, Serialize, Deserialize)]
struct Customer {
    id: u32,
    /// Index of the last session's first event.
    last: u32,
    /// Retained events, ordered by (time, arrival).
    events: Vec<LiveEvent>,
}

impl Customer {
    fn new(id: u32) -> Customer {
        Customer {
            id,
            last: 0,
            events: Vec::new(),
        }
    }

    /// Index of the last session's first event.
    fn last_start(&self) -> usize {
        self.last as usize
    }

    fn set_last_start(&mut self, i: usize) {
        // A customer's retained events are far fewer than 2^32 (they are its open sessions').
        self.last = u32::try_from(i).unwrap_or(u32::MAX);
    }
}

fn hash_id(id: u32) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(id)
}

/// Customers with open sessions, by id, the id kept in the entry (32 bytes a customer
/// where a map from id to customer takes 40).
#[derive(Default)]
struct Customers {
    table: HashTable<Customer>,
}

impl Customers {
    fn len(&self) -> usize {
        self.table.len()
    }

    fn capacity(&self) -> usize {
        self.table.capacity()
    }

    fn values(&self) -> impl Iterator<Item = &Customer> {
        self.table.iter()
    }

    fn remove(&mut self, id: u32) -> Option<Customer> {
        self.table
            .find_entry(hash_id(id), |c| c.id == id)
            .ok()
            .map(|e| e.remove().0)
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut Customer> {
        self.table.find_mut(hash_id(id), |c| c.id == id)
    }

    fn insert(&mut self, customer: Customer) {
        self.table
            .insert_unique(hash_id(customer.id), customer, |c| hash_id(c.id));
    }

    fn shrink_to(&mut self, n: usize) {
        self.table.shrink_to(n, |c| hash_id(c.id));
    }
}

/// A shard's state between two messages, for a snapshot: open customers, the expiry
/// queue, the maps and counts. Funnel probes and scratch space are rebuilt from the config.
#[derive(Serialize)]
struct ShardParts<'a> {
    customers: Vec<&'a Customer>,
    expiry: Vec<(i64, u32)>,
    watermark: i64,
    map: &'a LiveMap,
    segments: &'a Option<FxHashMap<u32, LiveMap>>,
    stats: ShardStats,
    /// When the maps are next pruned depends on it; kept, so they prune as a clean run's.
    advances: u64,
}

#[derive(Deserialize)]
struct OwnedShardParts {
    customers: Vec<Customer>,
    expiry: Vec<(i64, u32)>,
    watermark: i64,
    map: LiveMap,
    segments: Option<FxHashMap<u32, LiveMap>>,
    stats: ShardStats,
    advances: u64,
}

pub struct Shard {
    config: ShardConfig,
    customers: Customers,
    /// One `(time, customer)` per customer with open sessions, the time at most its last
    /// event's: when the watermark passes it, the customer is looked at and, if it went on
    /// since, queued again at its last event. (Queuing at every new event would hold one
    /// entry per event instead of one per customer.)
    expiry: BinaryHeap<Reverse<(i64, u32)>>,
    watermark: i64,
    map: LiveMap,
    /// The map per segment value, when segments are kept.
    segments: Option<FxHashMap<u32, LiveMap>>,
    probes: Vec<FunnelProbe>,
    /// Scratch: the funnels' level changes `(funnel, level, by)` and attempts `(funnel,
    /// attempt)` for one session.
    level_deltas: Vec<(usize, usize, i64)>,
    attempts: Vec<(usize, Attempt)>,
    /// Per touchpoint, the stamp of the last session that visited it.
    seen: Vec<u64>,
    stamp: u64,
    ts: Vec<i64>,
    touchpoint: Vec<u32>,
    starts: Vec<usize>,
    advances: u64,
    pub stats: ShardStats,
}

impl Shard {
    pub fn new(config: ShardConfig) -> Shard {
        let probes = config
            .funnels
            .iter()
            .enumerate()
            .map(|(j, spec)| {
                let mut spec = spec.clone();
                // Maturity is a property of the query's "now", decided when reading.
                spec.as_of = i64::MAX;
                spec.trend = None;
                let mut matters = Vec::new();
                for &tp in spec.steps.iter().chain(&spec.exclusions) {
                    if tp != u32::MAX {
                        if matters.len() <= tp as usize {
                            matters.resize(tp as usize + 1, false);
                        }
                        matters[tp as usize] = true;
                    }
                }
                let mut funnel = Funnel::new(spec, None);
                funnel.record_attempts();
                funnel.levels_only();
                FunnelProbe {
                    levels: vec![0; funnel.spec().num_steps() + 1],
                    every_event_matters: funnel.spec().modes.strict_order,
                    matters,
                    funnel,
                    by_value: config.by_value.get(j).copied().unwrap_or(false),
                }
            })
            .collect();
        let segments = config.segmented.then(FxHashMap::default);
        Shard {
            config,
            customers: Customers::default(),
            expiry: BinaryHeap::new(),
            watermark: i64::MIN,
            map: LiveMap::default(),
            segments,
            probes,
            level_deltas: Vec::new(),
            attempts: Vec::new(),
            seen: Vec::new(),
            stamp: 0,
            ts: Vec::new(),
            touchpoint: Vec::new(),
            starts: Vec::new(),
            advances: 0,
            stats: ShardStats::default(),
        }
    }

    pub fn map(&self) -> &LiveMap {
        &self.map
    }

    /// Its state, for a snapshot of the pipeline.
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        let parts = ShardParts {
            customers: self.customers.values().collect(),
            expiry: self.expiry.iter().map(|Reverse(e)| *e).collect(),
            watermark: self.watermark,
            map: &self.map,
            segments: &self.segments,
            stats: self.stats,
            advances: self.advances,
        };
        postcard::to_stdvec(&parts).map_err(|e| format!("encoding a shard: {e}"))
    }

    /// The shard a [`snapshot`](Self::snapshot) was taken of, under the same `config`.
    pub fn restore(config: ShardConfig, bytes: &[u8]) -> Result<Shard, String> {
        let p: OwnedShardParts =
            postcard::from_bytes(bytes).map_err(|e| format!("decoding a shard: {e}"))?;
        if p.segments.is_some() != config.segmented {
            return Err("it was taken with other [segments]".into());
        }
        let mut shard = Shard::new(config);
        for customer in p.customers {
            if shard.customers.get_mut(customer.id).is_some()
                || customer.last_start() >= customer.events.len().max(1)
                || !customer.events.is_sorted_by_key(LiveEvent::order)
            {
                return Err(format!("customer {} is inconsistent in it", customer.id));
            }
            shard.customers.insert(customer);
        }
        shard.expiry = p.expiry.into_iter().map(Reverse).collect();
        shard.watermark = p.watermark;
        shard.map = p.map;
        shard.segments = p.segments;
        shard.stats = p.stats;
        shard.advances = p.advances;
        Ok(shard)
    }

    /// The whole map and each segment's.
    pub fn into_maps(self) -> (LiveMap, FxHashMap<u32, LiveMap>) {
        (self.map, self.segments.unwrap_or_default())
    }

    /// The map of each segment value (none when segments are not kept).
    pub fn segments(&self) -> impl Iterator<Item = (u32, &LiveMap)> {
        self.segments.iter().flatten().map(|(&v, m)| (v, m))
    }

    /// The map of one segment value, or the whole map (`None`); an empty map for a value
    /// this shard never counted.
    pub fn map_of(&self, segment: Option<u32>) -> &LiveMap {
        static EMPTY: std::sync::OnceLock<LiveMap> = std::sync::OnceLock::new();
        match segment {
            None => &self.map,
            Some(v) => self
                .segments
                .as_ref()
                .and_then(|s| s.get(&v))
                .unwrap_or_else(|| EMPTY.get_or_init(LiveMap::default)),
        }
    }

    /// Customers with open sessions.
    pub fn open_customers(&self) -> usize {
        self.customers.len()
    }

    /// Memory held for open sessions, in bytes: the customer table, their events and the
    /// expiry queue (the live map's buckets are counted apart).
    pub fn state_bytes(&self) -> usize {
        let table = self.customers.capacity() * (std::mem::size_of::<Customer>() + 1);
        let events: usize = self
            .customers
            .values()
            .map(|c| c.events.capacity() * std::mem::size_of::<LiveEvent>())
            .sum();
        table + events + self.expiry.capacity() * std::mem::size_of::<Reverse<(i64, u32)>>()
    }

    /// Events held for open sessions.
    pub fn retained_events(&self) -> usize {
        self.customers.values().map(|c| c.events.len()).sum()
    }

    /// Adds events of one customer (any order; the stitcher has already set aside events
    /// beyond the lateness horizon).
    pub fn push(&mut self, customer: u32, events: &[LiveEvent]) {
        self.stats.events += events.len() as u64;
        let mut state = self
            .customers
            .remove(customer)
            .unwrap_or_else(|| Customer::new(customer));
        let old_last = state.events.last().map(|e| e.ts);
        // The common case, events after the customer's last: each extends the last session
        // or starts one, and only that changes.
        let mut last = state.events.last().copied();
        let split = events
            .iter()
            .take_while(|e| {
                let in_order = last.is_none_or(|l| l.order() <= e.order());
                last = Some(**e);
                in_order
            })
            .count();
        // The last session's funnel levels are taken back at most once for the run and
        // counted again once at its end (or when a new session starts), not around every
        // event: a funnel runs over the whole session, so per event that was quadratic.
        let mut unsettled = 0;
        for &e in &events[..split] {
            unsettled = self.append(&mut state, e, unsettled);
        }
        self.settle(&state, unsettled);
        if split < events.len() {
            self.insert(&mut state, &events[split..], false);
        }
        self.keep(customer, state, old_last);
    }

    /// Puts a customer back, queued for expiry if it had no open sessions before.
    fn keep(&mut self, customer: u32, state: Customer, old_last: Option<i64>) {
        if old_last.is_none()
            && let Some(last) = state.events.last()
        {
            self.expiry.push(Reverse((last.ts, customer)));
        }
        debug_assert_eq!(state.id, customer);
        self.customers.insert(state);
    }

    /// Adds one event after all of the customer's: the last session grows by it, or it
    /// starts a new session; counts change by exactly that difference. Funnel levels are
    /// left to [`settle`](Self::settle): `unsettled` has a bit for each funnel whose level
    /// the last session does not count at the moment, and the bits after this event are
    /// returned.
    fn append(&mut self, state: &mut Customer, e: LiveEvent, unsettled: u64) -> u64 {
        let all = self.all_funnels();
        let Some(&last) = state.events.last() else {
            push_event(&mut state.events, e);
            state.set_last_start(0);
            self.contribute_events(&[e], 1);
            return all;
        };
        let session_start = state.events[state.last_start()].ts;
        let (gap, max) = (self.config.gap, self.config.max_duration);
        if starts_session(last.ts, e.ts, session_start, gap, max) {
            self.settle(state, unsettled);
            state.set_last_start(state.events.len());
            push_event(&mut state.events, e);
            self.contribute_events(&[e], 1);
            return all;
        }
        let last_start = state.last_start();
        let first = state.events[last_start];
        let revisit = state.events[last_start..]
            .iter()
            .any(|x| x.touchpoint == e.touchpoint);
        // Consecutive events often share a minute: then one bucket lookup serves both.
        let same_minute = bucket_of(last.ts) == bucket_of(e.ts);
        for m in targets(&mut self.map, &mut self.segments, first.value) {
            if !same_minute {
                m.at(last.ts).exit(last.touchpoint, -1);
            }
            let b = m.at(e.ts);
            if same_minute {
                b.exit(last.touchpoint, -1);
            }
            b.events += 1;
            b.touchpoint(e.touchpoint, |c| {
                c.exits += 1;
                c.visits += 1;
                c.through += i64::from(!revisit);
            });
            b.transition(last.touchpoint, e.touchpoint, e.ts - last.ts, 1);
        }
        // Funnels this event can change, whose level is still counted: taken back now,
        // while the session is as it was when they were counted.
        let retract = self
            .probes
            .iter()
            .enumerate()
            .filter(|(j, p)| unsettled & (1 << j) == 0 && p.matters(e.touchpoint))
            .fold(0u64, |m, (j, _)| m | 1 << j);
        if retract != 0 {
            self.funnel_levels(&state.events[last_start..], first.ts, retract, -1);
        }
        push_event(&mut state.events, e);
        unsettled | retract
    }

    /// Counts the last session's level in the funnels whose bit is set in `unsettled`.
    fn settle(&mut self, state: &Customer, unsettled: u64) {
        if unsettled == 0 {
            return;
        }
        let session = &state.events[state.last_start()..];
        if let Some(first) = session.first() {
            self.funnel_levels(session, first.ts, unsettled, 1);
        }
    }

    /// A bit for every configured funnel.
    fn all_funnels(&self) -> u64 {
        match self.probes.len() {
            0 => 0,
            n => u64::MAX >> (64 - n),
        }
    }

    /// Takes a customer's open state away (its open sessions' contributions retracted),
    /// to be adopted by the customer it merged into, on this shard or another.
    pub fn evict(&mut self, customer: u32) -> Vec<LiveEvent> {
        let Some(state) = self.customers.remove(customer) else {
            return Vec::new();
        };
        self.contribute_from(&state.events, 0, -1);
        state.events
    }

    /// Takes in the open state of a customer that merged into `customer`.
    pub fn adopt(&mut self, customer: u32, events: &[LiveEvent]) {
        if !events.is_empty() {
            self.stats.merged += 1;
            let mut state = self
                .customers
                .remove(customer)
                .unwrap_or_else(|| Customer::new(customer));
            let old_last = state.events.last().map(|e| e.ts);
            self.insert(&mut state, events, true);
            self.keep(customer, state, old_last);
        }
    }

    /// Merges customer `from` into `into`, both on this shard.
    pub fn merge(&mut self, from: u32, into: u32) {
        let events = self.evict(from);
        self.adopt(into, &events);
    }

    /// Moves the watermark: sessions that became final drop their events.
    pub fn advance(&mut self, watermark: i64) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        let horizon = watermark.saturating_sub(self.config.lateness);
        let gap = self.config.gap;
        while let Some(&Reverse((last, customer))) = self.expiry.peek() {
            if last.saturating_add(gap) >= horizon {
                break;
            }
            self.expiry.pop();
            let Some(state) = self.customers.get_mut(customer) else {
                continue;
            };
            let events = &mut state.events;
            let Some(now_last) = events.last().map(|e| e.ts) else {
                self.customers.remove(customer);
                continue;
            };
            if now_last.saturating_add(gap) < horizon {
                self.stats.sessions_final += count_sessions(events, &self.config, &mut self.starts);
                self.customers.remove(customer);
                continue;
            }
            self.expiry.push(Reverse((now_last, customer)));
            // The customer went on after this entry: drop only its sessions that are final.
            self.starts.clear();
            let ts: Vec<i64> = events.iter().map(|e| e.ts).collect();
            let starts = &mut self.starts;
            session_starts(&ts, gap, self.config.max_duration, |i| starts.push(i));
            let mut keep_from = 0;
            for &s in starts.iter().skip(1) {
                if ts[s - 1].saturating_add(gap) >= horizon {
                    break;
                }
                keep_from = s;
                self.stats.sessions_final += 1;
            }
            events.drain(..keep_from);
            if events.capacity() > 2 * events.len() {
                events.shrink_to(events.len() + events.len() / 2);
            }
            state.set_last_start(state.last_start() - keep_from);
        }
        // Buckets emptied by retractions cost nothing but a little memory; sweep now and then,
        // and give back table space a burst of customers left behind.
        self.advances += 1;
        if self.advances.is_multiple_of(256) || watermark == i64::MAX {
            self.map.prune();
            if let Some(segments) = &mut self.segments {
                segments.values_mut().for_each(LiveMap::prune);
                segments.retain(|_, m| !m.is_empty());
            }
            if self.customers.len() * 4 < self.customers.capacity() {
                self.customers.shrink_to(self.customers.len() * 2);
            }
            if self.expiry.len() * 4 < self.expiry.capacity() {
                self.expiry.shrink_to(self.expiry.len() * 2);
            }
        }
    }

    /// Counts of `[from, to)`, of one segment or of everything.
    pub fn window(&self, from: i64, to: i64, segment: Option<u32>) -> LiveCounts {
        self.map_of(segment).window(from, to)
    }

    /// Adds events anywhere in the customer's history (late ones, or a merged customer's):
    /// the sessions from the one before the first new event on are taken back and redone.
    fn insert(&mut self, state: &mut Customer, new: &[LiveEvent], merging: bool) {
        let Some(first_new) = new.iter().map(LiveEvent::order).min() else {
            return;
        };
        let mut events = std::mem::take(&mut state.events);
        let pos = events.partition_point(|e| e.order() < first_new);
        if pos < events.len() && !merging {
            self.stats.corrected += new.len() as u64;
        }
        // Sessions before the one holding the event just before the insertion point keep
        // their bounds and contributions; from that session on, everything is redone.
        let from = if pos == 0 {
            0
        } else {
            self.session_start_of(&events, pos - 1)
        };
        self.contribute_from(&events, from, -1);
        events.reserve_exact(new.len());
        events.extend_from_slice(new);
        events[from..].sort_unstable_by_key(LiveEvent::order);
        self.contribute_from(&events, from, 1);
        // `contribute_from` left the retained events' session starts in `starts`, from `from`.
        state.set_last_start(from + self.starts.last().copied().unwrap_or(0));
        state.events = events;
    }

    /// Index of the start of the session holding event `i`.
    fn session_start_of(&mut self, events: &[LiveEvent], i: usize) -> usize {
        self.session_bounds(events);
        let k = self.starts.partition_point(|&s| s <= i);
        self.starts[k - 1]
    }

    /// Session starts of retained events into `self.starts`.
    fn session_bounds(&mut self, events: &[LiveEvent]) {
        self.ts.clear();
        self.ts.extend(events.iter().map(|e| e.ts));
        self.starts.clear();
        let starts = &mut self.starts;
        session_starts(&self.ts, self.config.gap, self.config.max_duration, |i| {
            starts.push(i)
        });
    }

    /// Adds (`sign` 1) or takes back (-1) the contribution of every session starting at or
    /// after event `from` (itself a session start).
    fn contribute_from(&mut self, events: &[LiveEvent], from: usize, sign: i64) {
        let tail = &events[from..];
        if tail.is_empty() {
            return;
        }
        self.session_bounds(tail);
        let starts = std::mem::take(&mut self.starts);
        for (k, &s) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(tail.len());
            self.contribute(&tail[s..end], sign);
        }
        self.starts = starts;
    }

    /// One session's contribution: see [`LiveCounts`] for which bucket counts what.
    fn contribute(&mut self, session: &[LiveEvent], sign: i64) {
        self.contribute_events(session, sign);
        if let Some(first) = session.first()
            && !self.probes.is_empty()
        {
            self.funnel_levels(session, first.ts, self.all_funnels(), sign);
        }
    }

    /// A session's counts but its funnel levels, in the whole map and its segment's.
    fn contribute_events(&mut self, session: &[LiveEvent], sign: i64) {
        let Some(first) = session.first() else {
            return;
        };
        let Shard {
            map,
            segments,
            seen,
            stamp,
            ..
        } = self;
        for m in targets(map, segments, first.value) {
            *stamp += 1;
            count_session(m, session, sign, seen, *stamp);
        }
    }

    /// Adds (or takes back) a session's level in the funnels whose bit is set in `which`,
    /// and when its window ends if it can still go on, in the bucket of the session's start
    /// (of the whole map and of the session's segment).
    fn funnel_levels(&mut self, session: &[LiveEvent], start: i64, which: u64, sign: i64) {
        let Some(segment) = session.first().map(|e| e.value) else {
            return;
        };
        let Shard {
            map,
            segments,
            probes,
            ts,
            touchpoint,
            level_deltas,
            attempts,
            ..
        } = self;
        ts.clear();
        ts.extend(session.iter().map(|e| e.ts));
        touchpoint.clear();
        touchpoint.extend(session.iter().map(|e| e.touchpoint));
        let journey = Journey {
            customer: 0,
            start: 0,
            ts,
            touchpoint,
        };
        // Each funnel runs once; what they say is counted in every map the session is in,
        // in the bucket of its start, looked up once per map.
        level_deltas.clear();
        attempts.clear();
        for (j, probe) in probes.iter_mut().enumerate() {
            if which & (1 << j) == 0 {
                continue;
            }
            probe.funnel.add(&journey);
            for (k, (now, before)) in probe
                .funnel
                .tallies
                .levels
                .iter()
                .zip(probe.levels.iter_mut())
                .enumerate()
            {
                if now != before {
                    level_deltas.push((j, k, sign * (now - *before) as i64));
                    *before = *now;
                }
            }
            if let Some(made) = &mut probe.funnel.attempts_made {
                attempts.extend(made.drain(..).map(|a| (j, a)));
            }
        }
        for (i, m) in targets(map, segments, segment).enumerate() {
            let bucket = m.at(start);
            for &(j, k, by) in level_deltas.iter() {
                bucket.funnel_level(j, k, by);
            }
            for &(j, a) in attempts.iter() {
                if let Some(end) = a.window_end {
                    bucket.open_window(j, WHOLE, end, a.level, sign);
                }
                // Alert breakdowns read the whole map only.
                if i == 0 && probes[j].by_value {
                    let value = session[a.entry].value;
                    bucket.value_level(j, value, a.level, sign);
                    if let Some(end) = a.window_end {
                        bucket.open_window(j, value, end, a.level, sign);
                    }
                }
            }
        }
    }
}

/// A session's counts (but its funnel levels) into `map`; `stamp` is new for this call,
/// `seen` remembers per touchpoint the stamp of the last session that visited it.
fn count_session(
    map: &mut LiveMap,
    session: &[LiveEvent],
    sign: i64,
    seen: &mut Vec<u64>,
    stamp: u64,
) {
    let (Some(first), Some(last)) = (session.first(), session.last()) else {
        return;
    };
    // A session's events mostly share few minutes: a bucket is looked up again only when
    // the minute changes (after the loop, `b` is the last event's bucket).
    let mut minute = bucket_of(first.ts);
    let mut b = map.at(first.ts);
    b.journeys += sign;
    b.start(first.touchpoint, sign);
    let mut prev: Option<&LiveEvent> = None;
    for e in session {
        let tp = e.touchpoint as usize;
        if seen.len() <= tp {
            seen.resize(tp + 1, 0);
        }
        let first_visit = seen[tp] != stamp;
        seen[tp] = stamp;
        if bucket_of(e.ts) != minute {
            minute = bucket_of(e.ts);
            b = map.at(e.ts);
        }
        b.events += sign;
        b.visit_through(e.touchpoint, first_visit, sign);
        if let Some(p) = prev {
            b.transition(p.touchpoint, e.touchpoint, e.ts - p.ts, sign);
        }
        prev = Some(e);
    }
    b.exit(last.touchpoint, sign);
}

/// Appends an event, growing the list by half (from one) when full: an open customer holds a
/// handful of events, and `Vec`'s doubling from four would leave a third of that unused.
fn push_event(events: &mut Vec<LiveEvent>, e: LiveEvent) {
    if events.len() == events.capacity() {
        events.reserve_exact((events.len() / 2).max(1));
    }
    events.push(e);
}

fn count_sessions(events: &[LiveEvent], config: &ShardConfig, scratch: &mut Vec<usize>) -> u64 {
    scratch.clear();
    let ts: Vec<i64> = events.iter().map(|e| e.ts).collect();
    session_starts(&ts, config.gap, config.max_duration, |i| scratch.push(i));
    scratch.len() as u64
}
