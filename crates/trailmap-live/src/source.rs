//! Live sources: what feeds the pipeline canonical batches.
//!
//! A source is a set of partitions (a file, a Kafka partition) that each deliver batches in
//! their own order; each partition holds the watermark back until it has data newer than it,
//! or ends. Sources are read on their own thread, so a blocking reader is fine.

use arrow::array::RecordBatch;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant, SystemTime};
use trailmap_gen::{
    CustomerJourney, GenOptions, JourneyModel, device_properties, first_touch_micros,
};
use trailmap_ingest::DeadLetters;
use trailmap_ingest::file::{self, BatchSource, FileInput, IngestOptions, IngestStats};
use trailmap_model::schema::{EventBatchBuilder, EventRow};
use trailmap_model::{Error, IdentityKind, Result};
pub use trailmap_store::Position;

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
}

pub trait LiveSource: Send {
    /// How many partitions feed the watermark.
    fn partitions(&self) -> usize;

    /// The next step, `None` once every partition has ended. May block, but a source
    /// whose input may pause returns [`Feed::Quiet`] at least every 100 ms meanwhile.
    fn next(&mut self) -> Result<Option<Feed>>;

    /// Records read, events and rejections so far.
    fn stats(&self) -> IngestStats;

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
                    self.ended.add(source.stats());
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
        for source in self.files.iter().flatten() {
            total.add(source.stats());
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
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
