//! Journeys of input that comes grouped by customer, handed on as each customer's events end.
//!
//! Exports by user and process logs by case come grouped: all of a customer's events
//! together. A command that only aggregates journeys (a funnel) then needs no journey log:
//! a customer's journey is complete when the next customer's events begin, so it is
//! ordered, cut into sessions and handed to the aggregate there and then. Memory is one
//! journey instead of the whole input, and nothing is grouped or gathered afterwards.
//!
//! The journeys are exactly the ones [`JourneyBuilder`](crate::JourneyBuilder) would build,
//! as long as two things hold, which [`GroupedJourneys::push_batch`] checks as it goes:
//! no customer's events come back after another customer's ([`NotGrouped::Interleaved`]),
//! and no stitching is needed: batches carry one identity column ([`NotGrouped::Stitching`]).
//! When either fails, the caller reads the input again the general way.

use crate::Journey;
use crate::journeys::{IdColumn, Names, column, dictionary, same, session_starts};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use rustc_hash::{FxBuildHasher, FxHashSet};
use std::hash::BuildHasher;
use trailmap_model::config::{Scope, SessionConfig};
use trailmap_model::{IdentityKind, schema};

/// Why an input cannot be streamed journey by journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotGrouped {
    /// Events of this customer come again after another customer's.
    Interleaved(String),
    /// Events carry several kinds of identifiers: linking them needs the whole input.
    Stitching,
}

impl std::fmt::Display for NotGrouped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotGrouped::Interleaved(c) => {
                write!(f, "events of customer `{c}` come after another customer's")
            }
            NotGrouped::Stitching => f.write_str("events carry several kinds of identifiers"),
        }
    }
}

/// What [`GroupedJourneys::push_batch`] can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupedError {
    /// The input is not one this reader can stream; read it the general way.
    NotGrouped(NotGrouped),
    /// The batch is not a canonical event batch.
    Batch(String),
}

impl From<String> for GroupedError {
    fn from(e: String) -> Self {
        GroupedError::Batch(e)
    }
}

/// What was streamed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupedSummary {
    /// Touchpoint names by id: the journeys' ids index this.
    pub touchpoints: Vec<String>,
    /// Per touchpoint id, whether some event had it (names can be given ahead of the input).
    pub seen: Vec<bool>,
    pub events: u64,
    pub customers: u64,
    pub journeys: u64,
    /// Identity-only records.
    pub identity_links: u64,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
}

/// Sentinels of the per-batch touchpoint map; names never get these ids.
const UNMAPPED: u32 = u32::MAX;
const NO_TOUCHPOINT: u32 = u32::MAX - 1;

/// Turns canonical batches of customer-grouped input into journeys, one customer at a time.
pub struct GroupedJourneys {
    scope: Scope,
    gap: i64,
    max_duration: i64,
    touchpoints: Names,
    seen: Vec<bool>,
    /// Hashes of the customers met so far: meeting one again after another customer means
    /// the input is not grouped. (A collision says so wrongly, and costs a second read,
    /// never a wrong answer.)
    met: FxHashSet<u64>,
    hasher: FxBuildHasher,
    /// The customer whose events are being collected, normalized.
    current: Option<(IdentityKind, String)>,
    /// Its events so far, in arrival order.
    ts: Vec<i64>,
    touchpoint: Vec<u32>,
    /// Reused buffers: the per-batch touchpoint map, orders and session starts.
    tp_map: Vec<u32>,
    order: Vec<usize>,
    sorted: (Vec<i64>, Vec<u32>),
    starts: Vec<usize>,
    summary: GroupedSummary,
}

impl GroupedJourneys {
    pub fn new(scope: Scope, sessions: &SessionConfig) -> Self {
        GroupedJourneys {
            scope,
            gap: sessions.gap.micros(),
            max_duration: sessions.max_duration.micros(),
            touchpoints: Names::default(),
            seen: Vec::new(),
            met: FxHashSet::default(),
            hasher: FxBuildHasher,
            current: None,
            ts: Vec::new(),
            touchpoint: Vec::new(),
            tp_map: Vec::new(),
            order: Vec::new(),
            sorted: (Vec::new(), Vec::new()),
            starts: Vec::new(),
            summary: GroupedSummary::default(),
        }
    }

    /// The id of a touchpoint name, given before any event has it (a funnel's steps are
    /// resolved before the input is read).
    pub fn touchpoint_id(&mut self, name: &str) -> u32 {
        let id = self.touchpoints.id(name);
        self.seen.resize(self.touchpoints.names.len(), false);
        id
    }

    /// The latest event time of the journeys handed on so far: the last event's time will
    /// be at least this.
    pub fn latest(&self) -> Option<i64> {
        self.summary.last_ts
    }

    /// Adds a canonical batch, handing every journey completed by it to `sink`.
    pub fn push_batch(
        &mut self,
        batch: &RecordBatch,
        sink: &mut impl FnMut(&Journey<'_>),
    ) -> Result<(), GroupedError> {
        let ts = column(batch, schema::TS)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| "`ts` is not timestamp(µs)".to_string())?;
        let mut ids = IdentityKind::ALL.iter().filter_map(|k| {
            let c = IdColumn::of(batch.column_by_name(k.column())?.as_ref())?;
            (c.null_count() < c.len()).then_some((*k, c))
        });
        let Some((kind, id)) = ids.next() else {
            // No row names anyone: nothing to add (the general path counts them unidentified).
            return Ok(());
        };
        if ids.next().is_some() {
            return Err(GroupedError::NotGrouped(NotGrouped::Stitching));
        }
        let (tp_keys, tp_values) = dictionary(column(batch, schema::TOUCHPOINT)?)?;
        self.tp_map.clear();
        self.tp_map.resize(tp_values.len(), UNMAPPED);
        // The identifier of the last event row, to see a repeat without normalizing it.
        let mut last: Option<usize> = None;
        for row in 0..batch.num_rows() {
            let repeat = last.is_some_and(|prev| match id {
                IdColumn::Dict { keys, .. } => {
                    keys.is_valid(row) && keys.value(row) == keys.value(prev)
                }
                IdColumn::Text(text) => {
                    text.is_valid(row) && same(text.value(prev), text.value(row))
                }
            });
            let value = if repeat {
                None
            } else {
                // Blank identifiers are none, as the stitcher has them.
                match (!id.is_null(row))
                    .then(|| kind.normalize(id.value(row)))
                    .flatten()
                {
                    Some(v) => Some(v),
                    None => continue,
                }
            };
            let tp = match tp_keys.is_valid(row) {
                true => self.touchpoint_of(tp_keys.value(row), tp_values),
                false => NO_TOUCHPOINT,
            };
            if tp == NO_TOUCHPOINT {
                self.summary.identity_links += 1;
                continue;
            }
            if ts.is_null(row) {
                continue;
            }
            if let Some(value) = value {
                let known = self
                    .current
                    .as_ref()
                    .is_some_and(|(k, c)| *k == kind && c.as_str() == value.as_ref());
                if !known {
                    self.flush(sink);
                    let hash = self.hasher.hash_one((kind.index(), value.as_ref()));
                    if !self.met.insert(hash) {
                        return Err(GroupedError::NotGrouped(NotGrouped::Interleaved(
                            value.into_owned(),
                        )));
                    }
                    let current = self.current.get_or_insert_with(|| (kind, String::new()));
                    current.0 = kind;
                    current.1.clear();
                    current.1.push_str(&value);
                }
                last = Some(row);
            }
            self.ts.push(ts.value(row));
            self.touchpoint.push(tp);
        }
        Ok(())
    }

    /// The global id of a batch's touchpoint key, named the first time a row uses it.
    #[inline]
    fn touchpoint_of(&mut self, key: u32, values: &arrow::array::StringArray) -> u32 {
        let Some(&id) = self.tp_map.get(key as usize) else {
            return NO_TOUCHPOINT;
        };
        if id != UNMAPPED {
            return id;
        }
        let id = if values.is_null(key as usize) {
            NO_TOUCHPOINT
        } else {
            let id = self.touchpoints.id(values.value(key as usize));
            self.seen.resize(self.touchpoints.names.len(), false);
            self.seen[id as usize] = true;
            id
        };
        self.tp_map[key as usize] = id;
        id
    }

    /// Hands on the last journey and says what was streamed.
    pub fn finish(mut self, sink: &mut impl FnMut(&Journey<'_>)) -> GroupedSummary {
        self.flush(sink);
        let mut summary = self.summary;
        summary.touchpoints = self.touchpoints.names;
        summary.seen = self.seen;
        summary
    }

    /// Orders the current customer's events by (time, arrival), cuts them into sessions
    /// when the scope asks, and hands them on.
    fn flush(&mut self, sink: &mut impl FnMut(&Journey<'_>)) {
        let n = self.ts.len();
        if n == 0 {
            return;
        }
        let (ts, touchpoint) = if self.ts.windows(2).all(|w| w[0] <= w[1]) {
            (&self.ts, &self.touchpoint)
        } else {
            // Out of order: a stable sort by time keeps ties in arrival order.
            self.order.clear();
            self.order.extend(0..n);
            let ts = &self.ts;
            self.order.sort_by_key(|&i| ts[i]);
            let (sorted_ts, sorted_tp) = &mut self.sorted;
            sorted_ts.clear();
            sorted_tp.clear();
            sorted_ts.extend(self.order.iter().map(|&i| self.ts[i]));
            sorted_tp.extend(self.order.iter().map(|&i| self.touchpoint[i]));
            (&*sorted_ts, &*sorted_tp)
        };
        let customer = u32::try_from(self.summary.customers).unwrap_or(u32::MAX);
        let start = usize::try_from(self.summary.events).unwrap_or(usize::MAX);
        let journey = |r: std::ops::Range<usize>| Journey {
            customer,
            start: start + r.start,
            ts: &ts[r.clone()],
            touchpoint: &touchpoint[r],
        };
        match self.scope {
            Scope::Customer => {
                sink(&journey(0..n));
                self.summary.journeys += 1;
            }
            Scope::Session => {
                self.starts.clear();
                session_starts(ts, self.gap, self.max_duration, |i| self.starts.push(i));
                self.starts.push(n);
                for w in self.starts.windows(2) {
                    sink(&journey(w[0]..w[1]));
                }
                self.summary.journeys += self.starts.len() as u64 - 1;
            }
        }
        let s = &mut self.summary;
        s.events += n as u64;
        s.customers += 1;
        s.first_ts = Some(s.first_ts.map_or(ts[0], |t| t.min(ts[0])));
        s.last_ts = Some(s.last_ts.map_or(ts[n - 1], |t| t.max(ts[n - 1])));
        self.ts.clear();
        self.touchpoint.clear();
    }
}
