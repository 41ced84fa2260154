//! Journeys of input that comes grouped by customer, handed on as each customer's events end.
//!
//! Exports by user and process logs by case come grouped: all of a customer's events
//! together. A command that only aggregates journeys (a funnel) then needs no journey log:
//! a customer's journey is complete when the next customer's events begin, so it is
//! ordered, cut into sessions and handed to the aggregate there and then. Memory is one
//! journey instead of the whole input, and nothing is grouped or gathered afterwards.
//!
//! The journeys are exactly the ones [`JourneyBuilder`](crate::JourneyBuilder) would build,
//! as long as two things hold: no customer's events come back after another customer's
//! ([`NotGrouped::Interleaved`]), and no stitching is needed: batches carry one identity
//! column ([`NotGrouped::Stitching`]). When either fails, the caller reads the input again
//! the general way. The first customers are checked as they come, so an interleaved log
//! (ordered by time, say) is found out within its first batches; after them, a customer met
//! again is found at the end, in the hashes of all customers kept in groups by their top
//! bits (see `met`; one set of millions of hashes, probed at random, cost more than
//! everything else the stream does per customer).
//!
//! A sink that reads only a few touchpoints (a funnel: its steps and exclusions) says so
//! ([`JourneySink::kept_touchpoints`]), and is handed each journey [`Sifted`] to them: the
//! pass that checks a customer's order also picks out their kept events, and the sink never
//! walks the rest.
//!
//! An input read in contiguous parts side by side (a Parquet file's runs of row groups, on
//! one thread each) is streamed by one [`GroupedJourneys::part`] per part: a part cannot
//! tell whether its first customer began in the part before, nor whether its last goes on
//! in the next, so it hands on every journey but those two and keeps their events.
//! [`GroupedJourneys::join`] then joins the pieces in part order into the journeys the
//! whole input holds, and numbers the parts' touchpoints as one stream would have.

mod met;

use crate::Journey;
use crate::journeys::{IdColumn, Names, Sieve, Sifted, column, dictionary, same, session_starts};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::array::{StringArray, UInt32Array};
use arrow::datatypes::TimestampMicrosecondType;
use met::Met;
use rustc_hash::{FxBuildHasher, FxHashSet};
use std::hash::BuildHasher;
use std::ops::Range;
use trailmap_model::config::{Scope, SessionConfig};
use trailmap_model::{IdentityKind, schema};

/// Why an input cannot be streamed journey by journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotGrouped {
    /// Events of a customer come again after another customer's: the customer, when it is
    /// known (the check at the end of the input knows only that some customer does).
    Interleaved(Option<String>),
    /// Events carry several kinds of identifiers: linking them needs the whole input.
    Stitching,
}

impl std::fmt::Display for NotGrouped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotGrouped::Interleaved(Some(c)) => {
                write!(f, "events of customer `{c}` come after another customer's")
            }
            NotGrouped::Interleaved(None) => {
                f.write_str("events of some customer come after another customer's")
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
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
}

impl GroupedSummary {
    /// Adds the counts and times of `other`, streamed apart (the names are left alone).
    fn add(&mut self, other: &GroupedSummary) {
        self.events += other.events;
        self.customers += other.customers;
        self.journeys += other.journeys;
        self.first_ts = [self.first_ts, other.first_ts].into_iter().flatten().min();
        self.last_ts = [self.last_ts, other.last_ts].into_iter().flatten().max();
    }

    /// The touchpoints some event had (names given ahead that no event had are left out).
    pub fn seen_touchpoints(&self) -> Vec<String> {
        (self.touchpoints.iter().zip(&self.seen))
            .filter(|(_, seen)| **seen)
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// Where [`GroupedJourneys`] hands its journeys. Any `FnMut(&Journey)` is one (it needs
/// neither the customer's name nor the end of batches).
pub trait JourneySink {
    /// A complete journey of the customer named `customer` (its identifier, normalized,
    /// as [`JourneyLog::customer_key`](crate::JourneyLog::customer_key) names it).
    fn journey(&mut self, journey: &Journey<'_>, customer: &str);

    /// An input batch is done: every journey it completed was handed on. `touchpoints`
    /// names the touchpoint ids so far. An error stops the stream with it.
    fn batch_end(&mut self, _touchpoints: &[String]) -> Result<(), String> {
        Ok(())
    }

    /// The touchpoints (ids) whose events this sink reads, when it needs no others: the
    /// stream then hands every journey sifted to them, to [`sifted`](Self::sifted), never
    /// whole. `None` (the default): whole journeys, to [`journey`](Self::journey). Asked
    /// once, before the first journey.
    fn kept_touchpoints(&self) -> Option<Vec<u32>> {
        None
    }

    /// A journey sifted to the [kept touchpoints](Self::kept_touchpoints). A sink that
    /// keeps touchpoints must read these: it is given nothing else.
    fn sifted(&mut self, _journey: &Sifted<'_>, _customer: &str) {}
}

impl<F: FnMut(&Journey<'_>)> JourneySink for F {
    fn journey(&mut self, journey: &Journey<'_>, _customer: &str) {
        self(journey)
    }
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
    /// Hashes of every customer met: a hash met twice means the input is not grouped. (A
    /// collision says so wrongly, and costs a second read, never a wrong answer.)
    met: Met,
    /// The hashes of the first `early` customers, as a set, to find out early.
    early_met: FxHashSet<u64>,
    early: usize,
    hasher: FxBuildHasher,
    /// The customer whose events are being collected, normalized.
    current: Option<(IdentityKind, String)>,
    /// Its events from earlier batches (or split by rows that are not its events), in
    /// arrival order.
    ts: Vec<i64>,
    touchpoint: Vec<u32>,
    /// The batch's touchpoint ids per row (`NO_TOUCHPOINT` for none), and per dictionary
    /// value.
    tp_rows: Vec<u32>,
    tp_map: Vec<u32>,
    /// Reused buffers: where a batch's runs of one identifier end, orders, session starts.
    run_ends: Vec<u32>,
    order: Vec<usize>,
    sorted: (Vec<i64>, Vec<u32>),
    starts: Vec<usize>,
    summary: GroupedSummary,
    /// The sink's sieve, when it keeps only some touchpoints; asked for before the first
    /// journey (`None` until then).
    sieve: Option<Option<Sieve>>,
    /// Streaming one part of an input (see [`part`](Self::part)): the first customer is
    /// kept, not handed on, and becomes `head` when the next customer begins.
    part: bool,
    head: Option<Piece>,
}

/// The events a part of an input has of a customer who may have events in the part before
/// or after it, in arrival order.
#[derive(Debug, Clone)]
struct Piece {
    kind: IdentityKind,
    /// Normalized, as the stream names customers.
    customer: String,
    ts: Vec<i64>,
    /// The part's touchpoint ids.
    touchpoint: Vec<u32>,
}

/// What streaming one part of an input left for [`GroupedJourneys::join`].
#[derive(Debug, Clone)]
pub struct GroupedPart {
    /// The part's first customer's events and, when another customer followed, its last
    /// customer's. Every other customer's journey was handed on.
    head: Option<Piece>,
    tail: Option<Piece>,
    /// The part's own touchpoint names by id, and which ones some event had.
    touchpoints: Vec<String>,
    seen: Vec<bool>,
    /// Hashes of the customers the part met, but its first (a customer met twice in the
    /// part is found by the join).
    met: Met,
    /// What the part handed on.
    summary: GroupedSummary,
}

/// What [`GroupedJourneys::join`] gives besides the joined journeys.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The whole input's, as one stream would have said it.
    pub summary: GroupedSummary,
    /// Per part, its touchpoint ids as ids of [`summary`](Self::summary)'s touchpoints:
    /// aggregates of a part renumber their touchpoints with it before they are merged.
    pub touchpoint_ids: Vec<Vec<u32>>,
}

/// A batch's columns as the stream reads them.
struct Rows<'a> {
    ts: &'a arrow::array::TimestampMicrosecondArray,
    /// No row lacks a touchpoint or a time: a customer's rows are all events.
    clean: bool,
}

impl GroupedJourneys {
    pub fn new(scope: Scope, sessions: &SessionConfig) -> Self {
        GroupedJourneys {
            scope,
            gap: sessions.gap.micros(),
            max_duration: sessions.max_duration.micros(),
            touchpoints: Names::default(),
            seen: Vec::new(),
            met: Met::default(),
            early_met: FxHashSet::default(),
            early: GroupedJourneys::EARLY_CUSTOMERS,
            hasher: FxBuildHasher,
            current: None,
            ts: Vec::new(),
            touchpoint: Vec::new(),
            tp_rows: Vec::new(),
            tp_map: Vec::new(),
            run_ends: Vec::new(),
            order: Vec::new(),
            sorted: (Vec::new(), Vec::new()),
            starts: Vec::new(),
            summary: GroupedSummary::default(),
            sieve: None,
            part: false,
            head: None,
        }
    }

    /// Streams one of the contiguous parts of an input read side by side: ends with
    /// [`finish_part`](Self::finish_part), and the parts are joined by
    /// [`join`](Self::join). `scope`, `sessions` and the names given ahead must be the same
    /// for every part and for the joining stream.
    pub fn part(scope: Scope, sessions: &SessionConfig) -> Self {
        GroupedJourneys {
            part: true,
            ..GroupedJourneys::new(scope, sessions)
        }
    }

    /// Customers checked as they come by default (see [`check_early`](Self::check_early)).
    pub const EARLY_CUSTOMERS: usize = 1 << 16;

    /// How many of the first customers are checked as they come (default
    /// [`EARLY_CUSTOMERS`](Self::EARLY_CUSTOMERS)); a customer met again after them is
    /// found when the input ends. (A reader of an input in parts gives each part a share
    /// of the default: a set of a part's first customers costs more to fill than the rest
    /// of its checks.)
    pub fn check_early(mut self, customers: usize) -> Self {
        self.early = customers;
        // Made room for at once: growing it rehashed every hash met so far several times.
        self.early_met.reserve(customers.saturating_add(1));
        self
    }

    /// The id of a touchpoint name, given before any event has it (a funnel's steps are
    /// resolved before the input is read).
    pub fn touchpoint_id(&mut self, name: &str) -> u32 {
        let id = self.touchpoints.id(name);
        self.seen.resize(self.touchpoints.names.len(), false);
        id
    }

    /// Adds a canonical batch, handing every journey completed by it to `sink`.
    pub fn push_batch<S: JourneySink + ?Sized>(
        &mut self,
        batch: &RecordBatch,
        sink: &mut S,
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
        let missing = self.map_touchpoints(dictionary(column(batch, schema::TOUCHPOINT)?)?);
        let rows = Rows {
            ts,
            clean: !missing && ts.null_count() == 0,
        };
        // Rows of the current customer in this batch not handed on or buffered yet: runs of
        // one identifier, contiguous.
        let mut open: Range<usize> = 0..0;
        let mut row = 0;
        let n = batch.num_rows();
        let mut run_ends = std::mem::take(&mut self.run_ends);
        find_run_ends(&id, n, &mut run_ends);
        for &end in &run_ends {
            let end = end as usize;
            let value = (!id.is_null(row))
                .then(|| kind.normalize(id.value(row)))
                .flatten();
            match value {
                // No identifier (or a blank one): not events of anyone.
                None => {}
                Some(value)
                    if self
                        .current
                        .as_ref()
                        .is_some_and(|(k, c)| *k == kind && same(c, &value)) =>
                {
                    if open.end == row && !open.is_empty() {
                        open.end = end;
                    } else {
                        self.buffer(&rows, open);
                        open = row..end;
                    }
                }
                Some(value) => {
                    if self.part && self.head.is_none() {
                        // A part's first customer may have begun in the part before: it is
                        // kept for the join, and met there.
                        self.buffer(&rows, open);
                        self.head = self.take_piece();
                    } else {
                        self.hand_on(&rows, open, sink);
                    }
                    if !(self.part && self.current.is_none()) {
                        self.meet(kind, &value)?;
                    }
                    let current = self.current.get_or_insert_with(|| (kind, String::new()));
                    current.0 = kind;
                    current.1.clear();
                    current.1.push_str(&value);
                    open = row..end;
                }
            }
            row = end;
        }
        self.run_ends = run_ends;
        // The current customer may go on in the next batch.
        self.buffer(&rows, open);
        sink.batch_end(&self.touchpoints.names)?;
        Ok(())
    }

    /// Records a new customer; an error when it was met before (among the early ones).
    fn meet(&mut self, kind: IdentityKind, value: &str) -> Result<(), GroupedError> {
        let hash = self.hasher.hash_one((kind.index(), value));
        self.met.push(hash);
        if self.met.len() <= self.early && !self.early_met.insert(hash) {
            return Err(GroupedError::NotGrouped(NotGrouped::Interleaved(Some(
                value.to_string(),
            ))));
        }
        Ok(())
    }

    /// Fills the batch's touchpoint id per row, naming each dictionary value the first time
    /// a row uses it. Whether some row has none.
    fn map_touchpoints(&mut self, (keys, values): (&UInt32Array, &StringArray)) -> bool {
        self.tp_map.clear();
        self.tp_map.resize(values.len(), UNMAPPED);
        let nulls = keys.nulls().filter(|n| n.null_count() > 0);
        // Values are named in the order rows first use them (the order the builder meets
        // them); a batch's dictionary is small, so this pass mostly ends within its first
        // rows, and the ids per row are then one lookup each.
        let mut unnamed = values.len();
        for (row, &key) in keys.values().iter().enumerate() {
            if unnamed == 0 {
                break;
            }
            if self.tp_map.get(key as usize) == Some(&UNMAPPED)
                && !nulls.is_some_and(|n| n.is_null(row))
            {
                self.name_touchpoint(key as usize, values);
                unnamed -= 1;
            }
        }
        let tp_map = &self.tp_map[..];
        // Keys out of the dictionary, and values never named (null rows' keys), are no
        // touchpoint.
        let id = |key: u32| match tp_map.get(key as usize) {
            Some(&UNMAPPED) | None => NO_TOUCHPOINT,
            Some(&id) => id,
        };
        self.tp_rows.clear();
        match nulls {
            None => self.tp_rows.extend(keys.values().iter().map(|&k| id(k))),
            // A null row's key is arbitrary: it has no touchpoint.
            Some(nulls) => self.tp_rows.extend(
                (keys.values().iter().zip(nulls.iter()))
                    .map(|(&k, valid)| if valid { id(k) } else { NO_TOUCHPOINT }),
            ),
        }
        nulls.is_some() || self.tp_rows.contains(&NO_TOUCHPOINT)
    }

    #[cold]
    fn name_touchpoint(&mut self, key: usize, values: &StringArray) -> u32 {
        let id = if values.is_null(key) {
            NO_TOUCHPOINT
        } else {
            let id = self.touchpoint_id(values.value(key));
            self.seen[id as usize] = true;
            id
        };
        self.tp_map[key] = id;
        id
    }

    /// Appends the events among `rows` of the batch to the current customer's buffer.
    fn buffer(&mut self, batch: &Rows<'_>, rows: Range<usize>) {
        if batch.clean {
            self.ts.extend_from_slice(&batch.ts.values()[rows.clone()]);
            self.touchpoint.extend_from_slice(&self.tp_rows[rows]);
            return;
        }
        for row in rows {
            match self.tp_rows[row] {
                // Identity-only records, and events without a time, as the builder skips them.
                NO_TOUCHPOINT => {}
                _ if batch.ts.is_null(row) => {}
                tp => {
                    self.ts.push(batch.ts.value(row));
                    self.touchpoint.push(tp);
                }
            }
        }
    }

    /// Hands on the current customer's journey: its buffered events, then `rows` of the
    /// batch (straight from the batch when nothing is buffered and every row is an event).
    fn hand_on<S: JourneySink + ?Sized>(
        &mut self,
        batch: &Rows<'_>,
        rows: Range<usize>,
        sink: &mut S,
    ) {
        if self.ts.is_empty() && batch.clean && !rows.is_empty() {
            let ts = &batch.ts.values()[rows.clone()];
            let tp = std::mem::take(&mut self.tp_rows);
            self.emit(ts, &tp[rows], sink);
            self.tp_rows = tp;
            return;
        }
        self.buffer(batch, rows);
        self.hand_on_buffered(sink);
    }

    /// Hands on the current customer's buffered events.
    fn hand_on_buffered<S: JourneySink + ?Sized>(&mut self, sink: &mut S) {
        let (ts, tp) = (
            std::mem::take(&mut self.ts),
            std::mem::take(&mut self.touchpoint),
        );
        self.emit(&ts, &tp, sink);
        (self.ts, self.touchpoint) = (ts, tp);
        self.ts.clear();
        self.touchpoint.clear();
    }

    /// The current customer's events, taken out of the stream.
    fn take_piece(&mut self) -> Option<Piece> {
        let (kind, customer) = self.current.clone()?;
        Some(Piece {
            kind,
            customer,
            ts: std::mem::take(&mut self.ts),
            touchpoint: std::mem::take(&mut self.touchpoint),
        })
    }

    /// Ends a part (see [`part`](Self::part)): its first and last customers' events, kept
    /// for [`join`](Self::join), and what it handed on. A customer of the part met again
    /// after another's is found by the join, with those met in two parts.
    pub fn finish_part<S: JourneySink + ?Sized>(mut self, sink: &mut S) -> GroupedPart {
        // Nothing is lost when the sink fails here: the part is read and handed on.
        let _ = sink.batch_end(&self.touchpoints.names);
        let met = std::mem::take(&mut self.met);
        let last = self.take_piece();
        let (head, tail) = match self.head.take() {
            Some(head) => (Some(head), last),
            None => (last, None),
        };
        GroupedPart {
            head,
            tail,
            touchpoints: self.touchpoints.names,
            seen: self.seen,
            met,
            summary: self.summary,
        }
    }

    /// Joins the parts of one input, in their order, as one stream of it would have read it:
    /// the customers the parts kept are joined across parts and handed to `sink`, the
    /// touchpoints numbered in the order one stream meets them, and the grouping checked
    /// over all customers of all parts. Called on a new stream, given the same names ahead
    /// as the parts.
    pub fn join<S: JourneySink + ?Sized>(
        mut self,
        parts: Vec<GroupedPart>,
        sink: &mut S,
    ) -> Result<Joined, NotGrouped> {
        let mut touchpoint_ids = Vec::with_capacity(parts.len());
        let mut handed_on = GroupedSummary::default();
        let mut met = Vec::with_capacity(parts.len() + 1);
        for part in parts {
            // Names in part order, each part's in its own order of meeting them: the order
            // one stream of the whole input meets them.
            let ids: Vec<u32> = (part.touchpoints.iter())
                .map(|name| self.touchpoint_id(name))
                .collect();
            for (&id, _) in ids.iter().zip(&part.seen).filter(|(_, seen)| **seen) {
                self.seen[id as usize] = true;
            }
            for (piece, is_head) in [(part.head, true), (part.tail, false)] {
                let Some(piece) = piece else { continue };
                let continues = (self.current.as_ref())
                    .is_some_and(|(k, c)| *k == piece.kind && same(c, &piece.customer));
                if !continues {
                    self.hand_on_buffered(sink);
                    // A part met its last customer, not its first.
                    if is_head {
                        self.met
                            .push(self.hasher.hash_one((piece.kind.index(), &piece.customer)));
                    }
                    self.current = Some((piece.kind, piece.customer));
                }
                self.ts.extend_from_slice(&piece.ts);
                (self.touchpoint).extend(piece.touchpoint.iter().map(|&t| ids[t as usize]));
            }
            met.push(part.met);
            handed_on.add(&part.summary);
            touchpoint_ids.push(ids);
        }
        self.hand_on_buffered(sink);
        let _ = sink.batch_end(&self.touchpoints.names);
        // The customers joined here: the parts' first customers that did not go on from the
        // part before.
        met.push(std::mem::take(&mut self.met));
        if Met::any_repeat(&met) {
            return Err(NotGrouped::Interleaved(None));
        }
        let mut summary = self.summary;
        summary.add(&handed_on);
        summary.touchpoints = self.touchpoints.names;
        summary.seen = self.seen;
        Ok(Joined {
            summary,
            touchpoint_ids,
        })
    }

    /// Hands on the last journey and says what was streamed, or that a customer met again
    /// after the early ones (see [`check_early`](Self::check_early)) makes the input not
    /// grouped after all.
    pub fn finish<S: JourneySink + ?Sized>(
        mut self,
        sink: &mut S,
    ) -> Result<GroupedSummary, NotGrouped> {
        self.hand_on_buffered(sink);
        // Nothing is lost when the sink fails here: the input is read and handed on.
        let _ = sink.batch_end(&self.touchpoints.names);
        if self.met.len() > self.early && Met::any_repeat(std::slice::from_ref(&self.met)) {
            return Err(NotGrouped::Interleaved(None));
        }
        let mut summary = self.summary;
        summary.touchpoints = self.touchpoints.names;
        summary.seen = self.seen;
        Ok(summary)
    }

    /// Orders a customer's events by (time, arrival), cuts them into sessions when the
    /// scope asks, and hands them on.
    fn emit<S: JourneySink + ?Sized>(&mut self, ts: &[i64], touchpoint: &[u32], sink: &mut S) {
        let n = ts.len();
        if n == 0 {
            return;
        }
        let sieve = self
            .sieve
            .get_or_insert_with(|| sink.kept_touchpoints().map(|kept| Sieve::new(&kept)));
        // A customer is sifted in the pass that checks their order (most are in order).
        let sifted = self.scope == Scope::Customer
            && sieve
                .as_mut()
                .is_some_and(|sieve| sieve.fill(ts, touchpoint));
        let (ts, touchpoint) = if sifted || ts.is_sorted() {
            (ts, touchpoint)
        } else {
            // Out of order: a stable sort by time keeps ties in arrival order.
            self.order.clear();
            self.order.extend(0..n);
            self.order.sort_by_key(|&i| ts[i]);
            let (sorted_ts, sorted_tp) = &mut self.sorted;
            sorted_ts.clear();
            sorted_tp.clear();
            sorted_ts.extend(self.order.iter().map(|&i| ts[i]));
            sorted_tp.extend(self.order.iter().map(|&i| touchpoint[i]));
            (&sorted_ts[..], &sorted_tp[..])
        };
        let customer = u32::try_from(self.summary.customers).unwrap_or(u32::MAX);
        let customer_name = self.current.as_ref().map_or("", |(_, name)| name.as_str());
        let start = usize::try_from(self.summary.events).unwrap_or(usize::MAX);
        let mut hand = |r: Range<usize>| {
            let journey = Journey {
                customer,
                start: start + r.start,
                ts: &ts[r.clone()],
                touchpoint: &touchpoint[r],
            };
            match sieve {
                Some(sieve) if sifted => {
                    sink.sifted(&sieve.sifted(customer, journey.start, ts), customer_name)
                }
                Some(sieve) => sink.sifted(&sieve.sift(&journey), customer_name),
                None => sink.journey(&journey, customer_name),
            }
        };
        match self.scope {
            Scope::Customer => {
                hand(0..n);
                self.summary.journeys += 1;
            }
            Scope::Session => {
                self.starts.clear();
                session_starts(ts, self.gap, self.max_duration, |i| self.starts.push(i));
                self.starts.push(n);
                for w in self.starts.windows(2) {
                    hand(w[0]..w[1]);
                }
                self.summary.journeys += self.starts.len() as u64 - 1;
            }
        }
        let s = &mut self.summary;
        s.events += n as u64;
        s.customers += 1;
        s.first_ts = Some(s.first_ts.map_or(ts[0], |t| t.min(ts[0])));
        s.last_ts = Some(s.last_ts.map_or(ts[n - 1], |t| t.max(ts[n - 1])));
    }
}

/// Where each run of rows that share one raw identifier (or have none) ends, in order; the
/// last is `n`. Dictionary keys without nulls (the Parquet reader's) are compared without
/// a branch per row (see [`key_changes`]): a loop per run mispredicts its exit once a
/// customer.
fn find_run_ends(id: &IdColumn<'_>, n: usize, ends: &mut Vec<u32>) {
    ends.clear();
    if n == 0 {
        return;
    }
    match id {
        IdColumn::Dict { keys, .. } if keys.null_count() == 0 => {
            key_changes(&keys.values()[..n], ends);
            ends.push(n as u32);
        }
        _ => {
            let mut row = 0;
            while row < n {
                row = run_end(id, row, n);
                ends.push(row as u32);
            }
        }
    }
}

/// Appends each `i` where `keys[i - 1] != keys[i]`, in order. Sixteen keys at a time are
/// compared with their successors in four SSE2 compares into a mask whose set bits are
/// the changes (a customer has ~16 events, so a mask holds one or two): twice as fast as
/// a store per row.
#[cfg(target_arch = "x86_64")]
fn key_changes(keys: &[u32], ends: &mut Vec<u32>) {
    use std::arch::x86_64::{
        __m128i, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_loadu_si128, _mm_movemask_ps,
    };
    const LANES: usize = 16;
    let mut i = 0;
    while i + LANES < keys.len() {
        // Keys i..=i + 16: each of the first sixteen against the next.
        let chunk = &keys[i..=i + LANES];
        let equal = |at: usize| {
            // SAFETY: `at + 1 + 4 <= 17 = chunk.len()`: both loads read within `chunk`
            // (unaligned loads need no alignment), and SSE2 is part of x86_64.
            unsafe {
                let a = _mm_loadu_si128(chunk.as_ptr().add(at).cast::<__m128i>());
                let b = _mm_loadu_si128(chunk.as_ptr().add(at + 1).cast::<__m128i>());
                _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(a, b))) as u32
            }
        };
        let mut changes = !(equal(0) | equal(4) << 4 | equal(8) << 8 | equal(12) << 12) & 0xffff;
        while changes != 0 {
            ends.push((i + changes.trailing_zeros() as usize + 1) as u32);
            changes &= changes - 1;
        }
        i += LANES;
    }
    key_changes_from(keys, i, ends);
}

#[cfg(not(target_arch = "x86_64"))]
fn key_changes(keys: &[u32], ends: &mut Vec<u32>) {
    key_changes_from(keys, 0, ends);
}

/// [`key_changes`] from `keys[from]` on, a key at a time.
fn key_changes_from(keys: &[u32], from: usize, ends: &mut Vec<u32>) {
    for (i, pair) in keys.windows(2).enumerate().skip(from) {
        if pair[0] != pair[1] {
            ends.push(i as u32 + 1);
        }
    }
}

/// The end of the run of rows from `row` that share one raw identifier (or have none), for
/// text identifiers and dictionaries with nulls.
fn run_end(id: &IdColumn<'_>, row: usize, n: usize) -> usize {
    let mut end = row + 1;
    if id.is_null(row) {
        while end < n && id.is_null(end) {
            end += 1;
        }
    } else {
        let value = id.value(row);
        while end < n && !id.is_null(end) && same(id.value(end), value) {
            end += 1;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::key_changes;

    #[test]
    fn key_changes_are_where_a_key_differs_from_the_one_before() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..80 {
            for density in [1, 3, 16, 40] {
                let mut key = 0u32;
                let keys: Vec<u32> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        if seed.is_multiple_of(density) {
                            key = key.wrapping_add(1 + (seed >> 40) as u32 % 3);
                        }
                        key
                    })
                    .collect();
                let expected: Vec<u32> = (1..keys.len())
                    .filter(|&i| keys[i - 1] != keys[i])
                    .map(|i| i as u32)
                    .collect();
                let mut changes = Vec::new();
                key_changes(&keys, &mut changes);
                assert_eq!(changes, expected, "{keys:?}");
            }
        }
    }

    #[test]
    fn identifiers_are_the_same_when_their_bytes_are() {
        use crate::journeys::same;
        for len in 0..40usize {
            let a: String = (0..len)
                .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
                .collect();
            assert!(same(&a, &a.clone()), "{a}");
            for at in 0..len {
                let mut b = a.clone().into_bytes();
                b[at] = b'#';
                let b = String::from_utf8(b).unwrap();
                assert!(!same(&a, &b), "{a} {b}");
            }
            assert!(!same(&a, &format!("{a}z")), "{a}");
        }
    }
}
