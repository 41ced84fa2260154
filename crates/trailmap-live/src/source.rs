//! Live sources: what feeds the pipeline canonical batches.
//!
//! A source is a set of partitions (a file, a Kafka partition) that each deliver batches in
//! their own order; each partition holds the watermark back until it has data newer than it,
//! or ends. Sources are read on their own thread, so a blocking reader is fine.
//!
//! [`FileReplay`] replays files, [`BatchReplay`] batches in memory, [`GeneratorSource`] the
//! `gen` model in time order, [`Paced`] plays another source at a rate, and [`Merged`] reads
//! several sources as one, each with its own range of partitions (`trailmap demo`: generated
//! history and HTTP capture together).

use arrow::array::RecordBatch;
use rustc_hash::{FxHashMap, FxHashSet};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use trailmap_gen::{
    CustomerJourney, GenOptions, JourneyModel, device_properties, first_touch_micros,
};
use trailmap_ingest::DeadLetters;
use trailmap_ingest::file::{self, BatchSource, FileInput, IngestOptions, IngestStats};
use trailmap_model::schema::{EventBatchBuilder, EventRow};
use trailmap_model::{Error, IdentityKind, Result};
pub use trailmap_store::{Position, StoredState};

/// One step of a source.
pub enum Feed {
    Batch {
        partition: usize,
        batch: RecordBatch,
        /// Where the source resumes after this batch (Kafka: the partition's next offset);
        /// what a checkpoint records.
        position: Option<Position>,
        /// When the batch's oldest record reached trailmap: the pipeline measures freshness
        /// (how long until an event is in the live map) from here.
        arrived: Instant,
    },
    /// The partition has caught up with its input for now (a Kafka partition at its end);
    /// it no longer holds the watermark back until it delivers again.
    Idle { partition: usize },
    /// The partition has no more input.
    End { partition: usize },
    /// Nothing arrived for a moment. A source that can wait long for input returns this
    /// now and then, so the pipeline can stop it.
    Quiet,
    /// Everything handed on before this is stored (a [`DurableSource`] checkpoint): the
    /// pipeline's state at this point may be kept with it.
    ///
    /// [`DurableSource`]: crate::DurableSource
    Cut(Cut),
}

/// A point in the feed up to which everything is stored, in segments up to `through`.
/// The pipeline passes it through the stitcher and every shard, like a batch, so each
/// snapshots its state as of exactly that point (a barrier), and hands the whole state to
/// `keep`; the source stores it. A state that cannot be kept is simply not kept: the
/// segments remain the truth.
pub struct Cut {
    pub through: u64,
    pub keep: std::sync::mpsc::SyncSender<StoredState>,
}

pub trait LiveSource: Send {
    /// How many partitions feed the watermark.
    fn partitions(&self) -> usize;

    /// The next step, `None` once every partition has ended. May block, but a source
    /// whose input may pause returns [`Feed::Quiet`] at least every 100 ms meanwhile.
    fn next(&mut self) -> Result<Option<Feed>>;

    /// Records read, events and rejections so far.
    fn stats(&self) -> IngestStats;

    /// The pipeline's state the source stored at its last [`Cut`] that it still covers,
    /// to start from instead of replaying everything stored. Asked once, before the first
    /// [`next`](Self::next).
    fn stored_state(&mut self) -> Option<StoredState> {
        None
    }

    /// The pipeline started from the [`stored_state`](Self::stored_state): the stored
    /// input it covers is not to be replayed.
    fn restored(&mut self, _through: u64) {}

    /// The pipeline is stopping: hand on what was read but is still held back (a
    /// micro-batch lingering for more rows), so what [`stats`](Self::stats) counted is in
    /// the map.
    fn drain(&mut self) -> Result<Vec<Feed>> {
        Ok(Vec::new())
    }

    /// A checkpoint is about to record the positions read so far: make what the source
    /// wrote on the side durable (dead letters).
    fn before_checkpoint(&mut self) -> Result<()> {
        Ok(())
    }

    /// A checkpoint recorded these positions (Kafka commits them, for lag monitoring; the
    /// checkpoint, not the commit, is where a restart resumes).
    fn after_checkpoint(&mut self, _positions: &[Position]) {}

    /// When everything the source had handed on was last durable (a store checkpoint);
    /// `None` for a source that stores nothing.
    fn checkpointed_at(&self) -> Option<SystemTime> {
        None
    }

    /// Messages waiting in the source's broker beyond what is durable here (Kafka's
    /// consumer lag); `None` for sources without one.
    fn lag(&self) -> Option<u64> {
        None
    }
}

/// Replays files, each a partition, a batch from each in turn (so files that cover the same
/// period advance together, as topics would).
pub struct FileReplay {
    files: Vec<Option<Box<dyn BatchSource>>>,
    /// The source each file is read as.
    names: Vec<String>,
    next: usize,
    dead: DeadLetters,
    ended: IngestStats,
}

impl FileReplay {
    pub fn open(inputs: &[FileInput], options: &IngestOptions, dead: DeadLetters) -> Result<Self> {
        if inputs.is_empty() {
            return Err(Error::Other(
                "nothing to replay: give at least one input file".into(),
            ));
        }
        let files = inputs
            .iter()
            .map(|i| file::open(i, options).map(Some))
            .collect::<Result<Vec<_>>>()?;
        Ok(FileReplay {
            files,
            names: inputs.iter().map(|i| i.source.name.clone()).collect(),
            next: 0,
            dead,
            ended: IngestStats::default(),
        })
    }

    /// Where rejected records went.
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead
    }
}

impl LiveSource for FileReplay {
    fn partitions(&self) -> usize {
        self.files.len()
    }

    fn next(&mut self) -> Result<Option<Feed>> {
        let n = self.files.len();
        for _ in 0..n {
            let partition = self.next;
            self.next = (self.next + 1) % n;
            let Some(source) = &mut self.files[partition] else {
                continue;
            };
            return match source.next_batch(&mut self.dead)? {
                Some(batch) => Ok(Some(Feed::Batch {
                    partition,
                    batch,
                    position: None,
                    arrived: Instant::now(),
                })),
                None => {
                    self.ended
                        .add(&source.stats().clone().of_source(&self.names[partition]));
                    self.files[partition] = None;
                    self.dead.flush()?;
                    Ok(Some(Feed::End { partition }))
                }
            };
        }
        Ok(None)
    }

    fn stats(&self) -> IngestStats {
        let mut total = self.ended.clone();
        for (source, name) in self.files.iter().zip(&self.names) {
            if let Some(source) = source {
                total.add(&source.stats().clone().of_source(name));
            }
        }
        total
    }
}

/// Batches already in memory, one partition: for benchmarks (the pipeline without reading)
/// and for replaying what another source produced.
pub struct BatchReplay {
    batches: std::vec::IntoIter<RecordBatch>,
    stats: IngestStats,
    ended: bool,
}

impl BatchReplay {
    pub fn new(batches: Vec<RecordBatch>) -> Self {
        BatchReplay {
            batches: batches.into_iter(),
            stats: IngestStats::default(),
            ended: false,
        }
    }
}

impl LiveSource for BatchReplay {
    fn partitions(&self) -> usize {
        1
    }

    fn next(&mut self) -> Result<Option<Feed>> {
        match self.batches.next() {
            Some(batch) => {
                self.stats.records += batch.num_rows() as u64;
                Ok(Some(Feed::Batch {
                    partition: 0,
                    batch,
                    position: None,
                    arrived: Instant::now(),
                }))
            }
            None if self.ended => Ok(None),
            None => {
                self.ended = true;
                Ok(Some(Feed::End { partition: 0 }))
            }
        }
    }

    fn stats(&self) -> IngestStats {
        self.stats.clone()
    }
}

/// Streams the `gen` model's customers in event-time order, as live traffic arrives: each
/// customer joins at its first touch, and every event (identify calls included, with the
/// identities each source would carry) is emitted when the stream reaches its time. One
/// partition. Memory holds the customers whose journeys are under way.
pub struct GeneratorSource {
    model: JourneyModel,
    opts: GenOptions,
    /// Customers by first touch, then index.
    order: Vec<(i64, u64)>,
    next_customer: usize,
    /// Events due: `(time, customer, index in its journey)`.
    due: BinaryHeap<Reverse<(i64, u64, usize)>>,
    /// Journeys under way, with how many of their events are still due.
    under_way: FxHashMap<u64, (CustomerJourney, usize)>,
    batch_size: usize,
    builder: EventBatchBuilder,
    stats: IngestStats,
    ended: bool,
}

impl GeneratorSource {
    /// Streams `opts`' customers in batches of `batch_size` records, as fast as they are
    /// taken ([`Paced`] plays them at a rate).
    pub fn new(opts: GenOptions, batch_size: usize) -> Self {
        Self::of_model(JourneyModel::default(), opts, batch_size)
    }

    /// The same, walking `model` (one with a dip, say) instead of the default.
    pub fn of_model(model: JourneyModel, opts: GenOptions, batch_size: usize) -> Self {
        let mut order: Vec<(i64, u64)> = (0..opts.customers)
            .map(|i| (first_touch_micros(&opts, i), i))
            .collect();
        order.sort_unstable();
        GeneratorSource {
            model,
            opts,
            order,
            next_customer: 0,
            due: BinaryHeap::new(),
            under_way: FxHashMap::default(),
            batch_size: batch_size.max(1),
            builder: EventBatchBuilder::new(),
            stats: IngestStats::default(),
            ended: false,
        }
    }

    /// Emits the next due event into the builder; false when the stream is done.
    fn emit_next(&mut self) -> bool {
        // Customers join when the stream's time reaches their first touch.
        loop {
            let next_due = self.due.peek().map(|Reverse((t, _, _))| *t);
            match self.order.get(self.next_customer) {
                Some(&(start, index)) if next_due.is_none_or(|due| start < due) => {
                    self.next_customer += 1;
                    let journey = self.model.journey(&self.opts, index);
                    for (i, e) in journey.events.iter().enumerate() {
                        self.due.push(Reverse((e.ts_micros, index, i)));
                    }
                    let n = journey.events.len();
                    if n > 0 {
                        self.under_way.insert(index, (journey, n));
                    }
                }
                _ if next_due.is_some() => break,
                _ => return false,
            }
        }
        let Some(Reverse((_, customer, i))) = self.due.pop() else {
            return false;
        };
        let Some((journey, left)) = self.under_way.get_mut(&customer) else {
            return true;
        };
        let e = &journey.events[i];
        let mut identities = [None; IdentityKind::ALL.len()];
        identities[IdentityKind::UserId.index()] = e.user_id.as_deref();
        identities[IdentityKind::Email.index()] = e.email.as_deref();
        identities[IdentityKind::ContactId.index()] = e.contact_id.as_deref();
        identities[IdentityKind::TicketId.index()] = e.ticket_id.as_deref();
        identities[IdentityKind::AnonymousId.index()] = e.anonymous_id.as_deref();
        self.builder.push(&EventRow {
            event_id: Some(&e.event_id),
            source: e.source.as_str(),
            identities,
            ts: e.ts_micros,
            received_at: None,
            touchpoint: e.touchpoint,
            stage: e.stage,
            channel: Some(e.channel),
            properties: e.device.and_then(device_properties),
        });
        self.stats.records += 1;
        if e.touchpoint.is_some() {
            self.stats.events += 1;
        } else {
            self.stats.links += 1;
        }
        *left -= 1;
        if *left == 0 {
            self.under_way.remove(&customer);
        }
        true
    }
}

impl LiveSource for GeneratorSource {
    fn partitions(&self) -> usize {
        1
    }

    fn next(&mut self) -> Result<Option<Feed>> {
        if self.ended {
            return Ok(None);
        }
        while self.builder.len() < self.batch_size && self.emit_next() {}
        if self.builder.is_empty() {
            self.ended = true;
            return Ok(Some(Feed::End { partition: 0 }));
        }
        Ok(Some(Feed::Batch {
            partition: 0,
            batch: self.builder.finish(),
            position: None,
            arrived: Instant::now(),
        }))
    }

    fn stats(&self) -> IngestStats {
        self.stats.clone()
    }
}

/// Plays another source's records at a fixed rate, as live traffic arrives: record `i`
/// arrives `i / rate` after the first is asked for. Batches are cut so that each holds at
/// most `linger` worth of records and is handed on once its last record has arrived, so no
/// record waits longer than `linger` for its batch (as with a Kafka micro-batch).
pub struct Paced {
    inner: Box<dyn LiveSource>,
    rate: f64,
    /// Records per batch handed on.
    chunk: usize,
    started: Option<Instant>,
    /// Records handed on so far.
    played: u64,
    /// The rest of the inner source's batch being played: partition, rows from `offset`,
    /// and its position, given with its last slice.
    playing: Option<(usize, RecordBatch, usize, Option<Position>)>,
}

impl Paced {
    /// `rate` records per second (at least one batch of one record per `linger`).
    pub fn new(inner: Box<dyn LiveSource>, rate: f64, linger: Duration) -> Result<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Error::Other(format!(
                "a rate is a positive number of records per second, not {rate}"
            )));
        }
        Ok(Paced {
            inner,
            rate,
            chunk: ((rate * linger.as_secs_f64()) as usize).max(1),
            started: None,
            played: 0,
            playing: None,
        })
    }

    /// When record `i` of the stream arrives.
    fn due(&self, started: Instant, i: u64) -> Instant {
        started + Duration::from_secs_f64(i as f64 / self.rate)
    }
}

impl LiveSource for Paced {
    fn partitions(&self) -> usize {
        self.inner.partitions()
    }

    fn next(&mut self) -> Result<Option<Feed>> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let Some((partition, batch, offset, position)) = self.playing.take() else {
            return match self.inner.next()? {
                Some(Feed::Batch {
                    partition,
                    batch,
                    position,
                    ..
                }) => {
                    self.playing = Some((partition, batch, 0, position));
                    self.next()
                }
                other => Ok(other),
            };
        };
        let len = self.chunk.min(batch.num_rows() - offset);
        let slice = batch.slice(offset, len);
        let arrived = self.due(started, self.played);
        self.played += len as u64;
        let last = self.due(started, self.played - 1);
        if let Some(wait) = last.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let position = if offset + len < batch.num_rows() {
            self.playing = Some((partition, batch, offset + len, position));
            None
        } else {
            position
        };
        Ok(Some(Feed::Batch {
            partition,
            batch: slice,
            position,
            arrived,
        }))
    }

    fn stats(&self) -> IngestStats {
        self.inner.stats()
    }

    fn drain(&mut self) -> Result<Vec<Feed>> {
        let mut feeds = Vec::new();
        if let Some((partition, batch, offset, position)) = self.playing.take() {
            feeds.push(Feed::Batch {
                partition,
                batch: batch.slice(offset, batch.num_rows() - offset),
                position,
                arrived: Instant::now(),
            });
        }
        feeds.extend(self.inner.drain()?);
        Ok(feeds)
    }

    fn before_checkpoint(&mut self) -> Result<()> {
        self.inner.before_checkpoint()
    }

    fn after_checkpoint(&mut self, positions: &[Position]) {
        self.inner.after_checkpoint(positions);
    }

    fn checkpointed_at(&self) -> Option<SystemTime> {
        self.inner.checkpointed_at()
    }

    fn stored_state(&mut self) -> Option<StoredState> {
        self.inner.stored_state()
    }

    fn restored(&mut self, through: u64) {
        self.inner.restored(through);
    }
}

/// Several sources read as one, each on its own reader thread, each keeping its own range of
/// partitions: the first source's partitions come first (`0..a`), then the second's
/// (`a..a + b`), and so on. So each partition still holds the watermark back on its own
/// terms: a generator replaying January is not made late by HTTP calls captured now, and
/// the captured calls are not late behind the generator's history, since the pipeline's
/// watermark is the least over partitions. A capture partition that has caught up says
/// [`Feed::Idle`] and stops holding the watermark back until it delivers again.
///
/// A reader hands on each step of its source as soon as it has it (a bounded channel, so a
/// source that is not taken from waits): a source that blocks (a paced replay sleeping
/// until its records are due, a capture waiting for calls) never delays the other, and a
/// busy one does not starve a slow one. While nothing arrives, [`next`](LiveSource::next)
/// says [`Feed::Quiet`] every 100 ms instead of spinning; the sources' own `Quiet`s are not
/// passed on. The merged stream ends once every source has ended.
///
/// Statistics are summed; [`drain`](LiveSource::drain) stops the readers, then drains each
/// source; the checkpoint hooks go to every source (each gets back only the positions it
/// delivered), [`checkpointed_at`](LiveSource::checkpointed_at) is the oldest of theirs and
/// [`lag`](LiveSource::lag) the sum. Only the last source may deliver partitions beyond
/// the count it gave when merged (a Kafka topic gaining partitions): anywhere else they would
/// collide with the next source's range, which is an error.
pub struct Merged {
    inner: Vec<Merging>,
    /// The readers' steps: which source, what it said.
    steps: Receiver<(usize, Result<Feed>)>,
    /// Given to the readers when they start; dropped then, so the channel closes once every
    /// reader has stopped.
    tx: Option<SyncSender<(usize, Result<Feed>)>>,
    stop: Arc<AtomicBool>,
}

/// One of the merged sources.
struct Merging {
    /// Its first partition in the merged numbering.
    offset: usize,
    partitions: usize,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    /// `(topic, partition)` of the positions it delivered, for
    /// [`after_checkpoint`](LiveSource::after_checkpoint).
    delivered: FxHashSet<(String, i32)>,
}

/// A merged source and what it last said, shared by its reader and the [`Merged`].
struct Shared {
    /// Locked by the reader for each step, by the [`Merged`] for the checkpoint hooks and
    /// the final drain.
    source: Mutex<Box<dyn LiveSource>>,
    /// The source's statistics, checkpoint time and lag after its latest step (read
    /// without waiting for a step under way).
    view: Mutex<(IngestStats, Option<SystemTime>, Option<u64>)>,
    /// The [`Merged`] waits for the lock: the reader lets it have it before its next step.
    wanted: AtomicBool,
}

impl Shared {
    fn refresh(&self, source: &dyn LiveSource) {
        *lock(&self.view) = (source.stats(), source.checkpointed_at(), source.lag());
    }

    /// `f` on the source, between two of its reader's steps.
    fn with<R>(&self, f: impl FnOnce(&mut dyn LiveSource) -> R) -> R {
        self.wanted.store(true, Ordering::Release);
        let mut source = lock(&self.source);
        self.wanted.store(false, Ordering::Release);
        let r = f(source.as_mut());
        self.refresh(source.as_ref());
        r
    }
}

/// A lock whose holder panicked is still usable: the panic is reported when the reader is
/// joined.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long [`Merged::next`] waits for a step before it says [`Feed::Quiet`].
const QUIET: Duration = Duration::from_millis(100);

impl Merged {
    /// Merges `sources` in this order (their partition ranges follow each other).
    pub fn new(sources: Vec<Box<dyn LiveSource>>) -> Self {
        let (tx, steps) = sync_channel(2 * sources.len().max(1));
        let mut offset = 0;
        let inner = sources
            .into_iter()
            .map(|source| {
                let partitions = source.partitions();
                let view = (source.stats(), source.checkpointed_at(), source.lag());
                let merging = Merging {
                    offset,
                    partitions,
                    shared: Arc::new(Shared {
                        source: Mutex::new(source),
                        view: Mutex::new(view),
                        wanted: AtomicBool::new(false),
                    }),
                    reader: None,
                    delivered: FxHashSet::default(),
                };
                offset += partitions;
                merging
            })
            .collect();
        Merged {
            inner,
            steps,
            tx: Some(tx),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The first partition of source `index` (in [`new`](Self::new)'s order) in the merged
    /// numbering.
    pub fn offset(&self, index: usize) -> usize {
        self.inner[index].offset
    }

    /// Starts the readers, the first time the stream is read.
    fn start(&mut self) -> Result<()> {
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        for (index, merging) in self.inner.iter_mut().enumerate() {
            let (shared, tx, stop) = (merging.shared.clone(), tx.clone(), self.stop.clone());
            let reader = std::thread::Builder::new()
                .name(format!("trailmap-merged-{index}"))
                .spawn(move || read(index, &shared, &tx, &stop))
                .map_err(|e| Error::Other(format!("cannot start a merged source's reader: {e}")))?;
            merging.reader = Some(reader);
        }
        Ok(())
    }

    /// `feed` from source `index`, in the merged partition numbering.
    fn place(&mut self, index: usize, feed: Feed) -> Result<Feed> {
        let last = index + 1 == self.inner.len();
        let merging = &mut self.inner[index];
        let (offset, partitions) = (merging.offset, merging.partitions);
        let at = |partition: usize| {
            if partition < partitions || last {
                Ok(offset + partition)
            } else {
                Err(Error::Other(format!(
                    "merged source {index} delivered partition {partition}, beyond the \
                     {partitions} it had when merged (only the last merged source may gain \
                     partitions)"
                )))
            }
        };
        Ok(match feed {
            Feed::Batch {
                partition,
                batch,
                position,
                arrived,
            } => {
                let partition = at(partition)?;
                if let Some(p) = &position {
                    merging.delivered.insert((p.topic.clone(), p.partition));
                }
                Feed::Batch {
                    partition,
                    batch,
                    position,
                    arrived,
                }
            }
            Feed::Idle { partition } => Feed::Idle {
                partition: at(partition)?,
            },
            Feed::End { partition } => Feed::End {
                partition: at(partition)?,
            },
            Feed::Quiet => Feed::Quiet,
            // Merged sources do not keep the pipeline's state (a cut of one would be taken
            // while the others' input is not stored).
            Feed::Cut(_) => Feed::Quiet,
        })
    }

    /// Waits for the readers that have stopped; an error if one panicked.
    fn join(&mut self) -> Result<()> {
        let mut panicked = false;
        for merging in &mut self.inner {
            if let Some(reader) = merging.reader.take() {
                panicked |= reader.join().is_err();
            }
        }
        if panicked {
            return Err(Error::Other("a merged source's reader panicked".into()));
        }
        Ok(())
    }
}

/// A reader: the source's steps into the channel until it ends, fails, or is stopped.
fn read(index: usize, shared: &Shared, out: &SyncSender<(usize, Result<Feed>)>, stop: &AtomicBool) {
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        // Checkpoint hooks and the drain wait at most one step.
        while shared.wanted.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let step = {
            let mut source = lock(&shared.source);
            let step = source.next();
            shared.refresh(source.as_ref());
            step
        };
        let step = match step {
            Ok(Some(Feed::Quiet)) => continue,
            Ok(Some(feed)) => Ok(feed),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = step.is_err();
        // A closed channel: the merged source is gone.
        if out.send((index, step)).is_err() || failed {
            return;
        }
    }
}

impl LiveSource for Merged {
    fn partitions(&self) -> usize {
        self.inner.iter().map(|m| m.partitions).sum()
    }

    fn next(&mut self) -> Result<Option<Feed>> {
        self.start()?;
        match self.steps.recv_timeout(QUIET) {
            Ok((index, step)) => Ok(Some(self.place(index, step?)?)),
            Err(RecvTimeoutError::Timeout) => Ok(Some(Feed::Quiet)),
            // Every reader has stopped: every source has ended.
            Err(RecvTimeoutError::Disconnected) => {
                self.join()?;
                Ok(None)
            }
        }
    }

    fn stats(&self) -> IngestStats {
        let mut total = IngestStats::default();
        for merging in &self.inner {
            total.add(&lock(&merging.shared.view).0);
        }
        total
    }

    fn drain(&mut self) -> Result<Vec<Feed>> {
        // The readers stop after the step they are taking; what they took is handed on.
        self.stop.store(true, Ordering::Release);
        self.tx = None;
        let mut feeds = Vec::new();
        while let Ok((index, step)) = self.steps.recv() {
            feeds.push(self.place(index, step?)?);
        }
        self.join()?;
        for index in 0..self.inner.len() {
            let held = self.inner[index].shared.with(|s| s.drain())?;
            for feed in held {
                if !matches!(feed, Feed::Quiet) {
                    feeds.push(self.place(index, feed)?);
                }
            }
        }
        Ok(feeds)
    }

    fn before_checkpoint(&mut self) -> Result<()> {
        for merging in &self.inner {
            merging.shared.with(|s| s.before_checkpoint())?;
        }
        Ok(())
    }

    fn after_checkpoint(&mut self, positions: &[Position]) {
        for merging in &self.inner {
            let own: Vec<Position> = positions
                .iter()
                .filter(|p| merging.delivered.contains(&(p.topic.clone(), p.partition)))
                .cloned()
                .collect();
            if !own.is_empty() {
                merging.shared.with(|s| s.after_checkpoint(&own));
            }
        }
    }

    fn checkpointed_at(&self) -> Option<SystemTime> {
        self.inner
            .iter()
            .filter_map(|m| lock(&m.shared.view).1)
            .min()
    }

    fn lag(&self) -> Option<u64> {
        self.inner
            .iter()
            .filter_map(|m| lock(&m.shared.view).2)
            .reduce(|a, b| a + b)
    }
}

impl Drop for Merged {
    /// The readers stop at their next step (or when they next hand one on, the channel
    /// being closed).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stitch::Stitcher;
    use arrow::array::{Array, TimestampMicrosecondArray};
    use trailmap_model::IdentityKind;
    use trailmap_model::schema::TS;

    /// A batch of `n` events at seconds `from..from + n`.
    fn batch(from: i64, n: i64) -> RecordBatch {
        let mut b = EventBatchBuilder::new();
        for s in from..from + n {
            let mut row = EventRow {
                source: "test",
                ts: s * 1_000_000,
                touchpoint: Some("home_view"),
                ..Default::default()
            };
            row.identities[IdentityKind::CustomerId.index()] = Some("c");
            b.push(&row);
        }
        b.finish()
    }

    fn seconds(batch: &RecordBatch) -> Vec<i64> {
        let ts = batch
            .column_by_name(TS)
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .expect("ts column");
        (0..ts.len()).map(|i| ts.value(i) / 1_000_000).collect()
    }

    #[test]
    fn paced_input_comes_in_linger_sized_slices_in_order() {
        let inner = BatchReplay::new(vec![batch(0, 25), batch(25, 10)]);
        // 1000 records/s, 10 ms linger: 10 records a batch.
        let mut paced =
            Paced::new(Box::new(inner), 1000.0, Duration::from_millis(10)).expect("rate");
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        let mut arrivals = Vec::new();
        while let Some(feed) = paced.next().expect("next") {
            match feed {
                Feed::Batch { batch, arrived, .. } => {
                    sizes.push(batch.num_rows());
                    all.extend(seconds(&batch));
                    arrivals.push(arrived);
                }
                Feed::End { .. } => {}
                _ => panic!("unexpected feed"),
            }
        }
        assert_eq!(sizes, [10, 10, 5, 10]);
        assert_eq!(all, (0..35).collect::<Vec<_>>());
        // Each batch arrives when its first record is due: 10 ms apart, then 5 ms.
        let gaps: Vec<u128> = arrivals
            .windows(2)
            .map(|w| (w[1] - w[0]).as_micros())
            .collect();
        assert_eq!(gaps, [10_000, 10_000, 5_000]);
    }

    #[test]
    fn a_rate_must_be_positive() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let inner = BatchReplay::new(Vec::new());
            assert!(Paced::new(Box::new(inner), rate, Duration::from_millis(100)).is_err());
        }
    }

    /// A source the test scripts: it hands on what is sent to it (`Quiet` every 100 ms
    /// meanwhile) and ends when the sender is dropped.
    struct Scripted {
        partitions: usize,
        feeds: Receiver<Result<Feed>>,
        /// What [`drain`](LiveSource::drain) hands on.
        held: Vec<Feed>,
        records: u64,
        checkpoints: Arc<Mutex<Vec<Position>>>,
        checkpointed_at: Option<SystemTime>,
        lag: Option<u64>,
    }

    fn scripted(partitions: usize) -> (Scripted, std::sync::mpsc::Sender<Result<Feed>>) {
        let (tx, feeds) = std::sync::mpsc::channel();
        let source = Scripted {
            partitions,
            feeds,
            held: Vec::new(),
            records: 0,
            checkpoints: Arc::default(),
            checkpointed_at: None,
            lag: None,
        };
        (source, tx)
    }

    impl LiveSource for Scripted {
        fn partitions(&self) -> usize {
            self.partitions
        }

        fn next(&mut self) -> Result<Option<Feed>> {
            match self.feeds.recv_timeout(QUIET) {
                Ok(Ok(feed)) => {
                    if let Feed::Batch { batch, .. } = &feed {
                        self.records += batch.num_rows() as u64;
                    }
                    Ok(Some(feed))
                }
                Ok(Err(e)) => Err(e),
                Err(RecvTimeoutError::Timeout) => Ok(Some(Feed::Quiet)),
                Err(RecvTimeoutError::Disconnected) => Ok(None),
            }
        }

        fn stats(&self) -> IngestStats {
            IngestStats {
                records: self.records,
                ..IngestStats::default()
            }
        }

        fn drain(&mut self) -> Result<Vec<Feed>> {
            for feed in &self.held {
                if let Feed::Batch { batch, .. } = feed {
                    self.records += batch.num_rows() as u64;
                }
            }
            Ok(std::mem::take(&mut self.held))
        }

        fn after_checkpoint(&mut self, positions: &[Position]) {
            lock(&self.checkpoints).extend_from_slice(positions);
        }

        fn checkpointed_at(&self) -> Option<SystemTime> {
            self.checkpointed_at
        }

        fn lag(&self) -> Option<u64> {
            self.lag
        }
    }

    fn fed(partition: usize, batch: RecordBatch) -> Result<Feed> {
        Ok(Feed::Batch {
            partition,
            batch,
            position: None,
            arrived: Instant::now(),
        })
    }

    /// What a feed is, comparably: kind, partition, rows.
    fn shape(feed: &Feed) -> (&'static str, usize, usize) {
        match feed {
            Feed::Batch {
                partition, batch, ..
            } => ("batch", *partition, batch.num_rows()),
            Feed::Idle { partition } => ("idle", *partition, 0),
            Feed::End { partition } => ("end", *partition, 0),
            Feed::Quiet => ("quiet", 0, 0),
            Feed::Cut(cut) => ("cut", 0, cut.through as usize),
        }
    }

    /// Reads `source` (leaving out `Quiet`) up to and including the first feed `until`
    /// matches; fails after 10 s, or if the stream ends first.
    fn read_until(
        source: &mut dyn LiveSource,
        mut until: impl FnMut(&Feed) -> bool,
    ) -> Vec<(&'static str, usize, usize)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            assert!(Instant::now() < deadline, "waited 10 s; saw {seen:?}");
            let feed = source.next().expect("next").expect("the stream ended");
            if !matches!(feed, Feed::Quiet) {
                seen.push(shape(&feed));
            }
            if until(&feed) {
                return seen;
            }
        }
    }

    /// A capture source decoding Segment calls with the clickstream mapping.
    fn capture_source(
        dir: &std::path::Path,
        linger: Duration,
    ) -> (crate::CaptureSource, crate::CaptureInlet) {
        let (source, inlet) = crate::capture(
            &trailmap_model::config::SourceConfig::of_kind(
                trailmap_model::config::SourceKind::Clickstream,
            ),
            &IngestOptions::default(),
            DeadLetters::new(dir.join("dead.ndjson"), None),
            16,
        )
        .expect("capture");
        (source.with_linger(linger), inlet)
    }

    /// A Segment track call at `millis` (Unix).
    fn call(user: &str, millis: i64) -> Vec<u8> {
        format!(r#"{{"type":"track","userId":"{user}","event":"Signed Up","timestamp":{millis}}}"#)
            .into_bytes()
    }

    fn now_millis() -> i64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64
    }

    #[test]
    fn merged_sources_keep_their_own_partition_ranges() {
        let (a, to_a) = scripted(2);
        let (b, to_b) = scripted(1);
        let mut merged = Merged::new(vec![Box::new(a), Box::new(b)]);
        assert_eq!(merged.partitions(), 3);
        assert_eq!((merged.offset(0), merged.offset(1)), (0, 2));
        for feed in [
            fed(0, batch(0, 3)),
            fed(1, batch(0, 2)),
            Ok(Feed::Idle { partition: 1 }),
            Ok(Feed::End { partition: 0 }),
            Ok(Feed::End { partition: 1 }),
        ] {
            to_a.send(feed).expect("send");
        }
        for feed in [
            fed(0, batch(0, 4)),
            Ok(Feed::Idle { partition: 0 }),
            Ok(Feed::End { partition: 0 }),
        ] {
            to_b.send(feed).expect("send");
        }
        drop((to_a, to_b));
        let mut seen = Vec::new();
        while let Some(feed) = merged.next().expect("next") {
            if !matches!(feed, Feed::Quiet) {
                seen.push(shape(&feed));
            }
        }
        // Each source's steps in its own order, on its own partitions.
        let (from_a, from_b): (Vec<_>, Vec<_>) = seen.into_iter().partition(|f| f.1 < 2);
        assert_eq!(
            from_a,
            [
                ("batch", 0, 3),
                ("batch", 1, 2),
                ("idle", 1, 0),
                ("end", 0, 0),
                ("end", 1, 0)
            ]
        );
        assert_eq!(from_b, [("batch", 2, 4), ("idle", 2, 0), ("end", 2, 0)]);
        assert_eq!(merged.stats().records, 9);
        assert!(merged.next().expect("next").is_none(), "ended stays ended");
    }

    #[test]
    fn the_merged_stream_ends_only_when_every_source_has_ended() {
        let dir = tempfile::tempdir().expect("tmp");
        let (capture, inlet) = capture_source(dir.path(), Duration::from_millis(10));
        let history = BatchReplay::new(vec![batch(0, 5)]);
        let mut merged = Merged::new(vec![Box::new(history), Box::new(capture)]);
        let mut seen = read_until(&mut merged, |f| matches!(f, Feed::End { partition: 0 }));

        // The history has ended; the capture has not: quiet, not the end, and not spinning.
        let started = Instant::now();
        let mut steps = Vec::new();
        while started.elapsed() < Duration::from_millis(500) {
            let feed = merged
                .next()
                .expect("next")
                .expect("the capture has not ended");
            steps.push(shape(&feed));
        }
        assert!(steps.contains(&("quiet", 0, 0)), "{steps:?}");
        assert!(
            steps.len() <= 8,
            "spinning: {} steps in 500 ms",
            steps.len()
        );
        // The capture said it caught up (before or after the history ended).
        seen.extend(steps);
        assert!(seen.contains(&("idle", 1, 0)), "{seen:?}");

        inlet
            .offer(vec![call("u1", now_millis()), call("u2", now_millis())])
            .expect("offer");
        let seen = read_until(&mut merged, |f| matches!(f, Feed::Batch { .. }));
        assert_eq!(seen.last(), Some(&("batch", 1, 2)));
        assert_eq!(merged.stats().records, 7);

        // The last inlet gone, the capture ends, and with it the merged stream.
        drop(inlet);
        read_until(&mut merged, |f| matches!(f, Feed::End { partition: 1 }));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match merged.next().expect("next") {
                None => break,
                Some(feed) => assert!(
                    matches!(feed, Feed::Quiet | Feed::Idle { .. }),
                    "{:?}",
                    shape(&feed)
                ),
            }
            assert!(Instant::now() < deadline, "never ended");
        }
    }

    #[test]
    fn a_quiet_capture_neither_holds_history_back_nor_makes_it_late() {
        let dir = tempfile::tempdir().expect("tmp");
        let (capture, inlet) = capture_source(dir.path(), Duration::from_millis(10));
        let (history, to_history) = scripted(1);
        let mut merged = Merged::new(vec![Box::new(history), Box::new(capture)]);
        let hour = 3_600_000_000;
        let mut stitcher = Stitcher::new(1, merged.partitions(), hour, &[]);
        let mut step = |merged: &mut Merged, until: &mut dyn FnMut(&Feed) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                assert!(Instant::now() < deadline, "waited 10 s");
                let feed = merged.next().expect("next").expect("not ended");
                let done = until(&feed);
                match feed {
                    Feed::Batch {
                        partition, batch, ..
                    } => {
                        let routed = stitcher.push(partition, &batch).expect("push");
                        assert!(routed.late.is_empty(), "late on partition {partition}");
                    }
                    Feed::Idle { partition } => stitcher.idle_partition(partition),
                    Feed::End { partition } => stitcher.end_partition(partition),
                    Feed::Quiet | Feed::Cut(_) => {}
                }
                if done {
                    return stitcher.watermark();
                }
            }
        };
        // January 2026 (seconds), the generator's kind of history.
        let january = 1_767_225_600;
        to_history.send(fed(0, batch(january, 10))).expect("send");
        // Until the capture has caught up, it holds the watermark back; then it does not.
        let (mut history_in, mut caught_up) = (false, false);
        let mark = step(&mut merged, &mut |f| {
            history_in |= matches!(f, Feed::Batch { partition: 0, .. });
            caught_up |= matches!(f, Feed::Idle { partition: 1 });
            history_in && caught_up
        });
        assert_eq!(mark, (january + 9) * 1_000_000);

        // A call captured now is not late, and does not carry the watermark off to now.
        inlet.offer(vec![call("u1", now_millis())]).expect("offer");
        let mark = step(&mut merged, &mut |f| {
            matches!(f, Feed::Batch { partition: 1, .. })
        });
        assert_eq!(mark, (january + 9) * 1_000_000);
        step(&mut merged, &mut |f| {
            matches!(f, Feed::Idle { partition: 1 })
        });

        // History goes on, hours on but still long before now: not late either.
        to_history
            .send(fed(0, batch(january + 5 * 3_600, 10)))
            .expect("send");
        let mark = step(&mut merged, &mut |f| {
            matches!(f, Feed::Batch { partition: 0, .. })
        });
        assert_eq!(mark, (january + 5 * 3_600 + 9) * 1_000_000);
        assert_eq!(stitcher.stats.late, 0);
        assert_eq!(stitcher.stats.events, 21);
        assert!(
            stitcher.newest() > Some(mark),
            "the captured call is the newest"
        );
    }

    #[test]
    fn draining_stops_the_readers_and_hands_on_what_each_source_holds() {
        let (mut a, to_a) = scripted(1);
        a.held = vec![fed(0, batch(0, 2)).expect("feed")];
        let (mut b, _to_b) = scripted(2);
        b.held = vec![fed(1, batch(0, 5)).expect("feed")];
        let mut merged = Merged::new(vec![Box::new(a), Box::new(b)]);
        to_a.send(fed(0, batch(0, 3))).expect("send");
        read_until(&mut merged, |f| matches!(f, Feed::Batch { .. }));
        // Neither source has ended; the drain still returns, within a step or so.
        let started = Instant::now();
        let drained: Vec<_> = merged.drain().expect("drain").iter().map(shape).collect();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(drained, [("batch", 0, 2), ("batch", 2, 5)]);
        assert_eq!(merged.stats().records, 10);
        assert!(merged.next().expect("next").is_none());
    }

    #[test]
    fn a_busy_source_does_not_starve_a_slow_one() {
        /// Hands on a batch whenever asked, forever.
        struct Endless;
        impl LiveSource for Endless {
            fn partitions(&self) -> usize {
                1
            }
            fn next(&mut self) -> Result<Option<Feed>> {
                fed(0, batch(0, 1)).map(Some)
            }
            fn stats(&self) -> IngestStats {
                IngestStats::default()
            }
        }
        let dir = tempfile::tempdir().expect("tmp");
        let (capture, inlet) = capture_source(dir.path(), Duration::from_millis(10));
        let mut merged = Merged::new(vec![Box::new(Endless), Box::new(capture)]);
        read_until(&mut merged, |f| {
            matches!(f, Feed::Batch { partition: 0, .. })
        });
        inlet.offer(vec![call("u1", now_millis())]).expect("offer");
        let started = Instant::now();
        let seen = read_until(&mut merged, |f| {
            matches!(f, Feed::Batch { partition: 1, .. })
        });
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the capture waited {:?} behind {} batches",
            started.elapsed(),
            seen.len()
        );
        assert!(
            seen.iter().any(|f| f.1 == 0),
            "the busy source went on: {seen:?}"
        );
    }

    #[test]
    fn checkpoint_hooks_are_forwarded_and_combined() {
        let position = |topic: &str, next_offset| Position {
            topic: topic.into(),
            partition: 0,
            next_offset,
        };
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let (mut a, to_a) = scripted(1);
        let (mut b, to_b) = scripted(1);
        (a.checkpointed_at, a.lag) = (Some(at(200)), Some(3));
        (b.checkpointed_at, b.lag) = (Some(at(100)), None);
        let (seen_a, seen_b) = (a.checkpoints.clone(), b.checkpoints.clone());
        let mut merged = Merged::new(vec![Box::new(a), Box::new(b)]);
        assert_eq!(merged.checkpointed_at(), Some(at(100)), "the oldest");
        assert_eq!(merged.lag(), Some(3));
        for (to, topic) in [(&to_a, "a"), (&to_b, "b")] {
            to.send(Ok(Feed::Batch {
                partition: 0,
                batch: batch(0, 1),
                position: Some(position(topic, 10)),
                arrived: Instant::now(),
            }))
            .expect("send");
        }
        let mut batches = 0;
        read_until(&mut merged, |f| {
            batches += usize::from(matches!(f, Feed::Batch { .. }));
            batches == 2
        });
        merged.before_checkpoint().expect("before");
        merged.after_checkpoint(&[position("a", 10), position("b", 10)]);
        assert_eq!(*lock(&seen_a), [position("a", 10)]);
        assert_eq!(*lock(&seen_b), [position("b", 10)]);
    }

    #[test]
    fn errors_and_partitions_out_of_range_are_reported() {
        let (a, to_a) = scripted(1);
        let (b, to_b) = scripted(1);
        let mut merged = Merged::new(vec![Box::new(a), Box::new(b)]);
        // The last source may gain partitions: they follow its range.
        to_b.send(fed(2, batch(0, 1))).expect("send");
        let seen = read_until(&mut merged, |f| matches!(f, Feed::Batch { .. }));
        assert_eq!(seen, [("batch", 3, 1)]);
        // Any other would run into the next source's range.
        to_a.send(fed(1, batch(0, 1))).expect("send");
        let error = loop {
            match merged.next() {
                Ok(Some(Feed::Quiet)) => continue,
                Ok(other) => panic!("{:?}", other.as_ref().map(shape)),
                Err(e) => break e.to_string(),
            }
        };
        assert!(error.contains("beyond the 1 it had"), "{error}");
        // A source's error is the merged stream's.
        to_b.send(Err(Error::Other("broker gone".into())))
            .expect("send");
        let error = loop {
            match merged.next() {
                Ok(Some(Feed::Quiet)) => continue,
                Ok(other) => panic!("{:?}", other.as_ref().map(shape)),
                Err(e) => break e.to_string(),
            }
        };
        assert!(error.contains("broker gone"), "{error}");
    }
}
