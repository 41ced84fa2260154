//! Decoding off the polling thread.
//!
//! The source's thread polls the consumer and copies each message into its partition's
//! [`Chunk`]; worker threads (one per core, at most [`MAX_WORKERS`]) decode chunks into the
//! partitions' micro-batches, each partition always on the same worker. Polling
//! (librdkafka's queue, copying payloads) overlaps decoding, and partitions decode in
//! parallel.
//!
//! Everything that orders a partition's feeds goes through its worker's FIFO queue of
//! [`Work`]: chunks, flushes, and the `Idle`/`End` marks, so a mark always comes after the
//! batches of what was read before it. Each piece of work answers with exactly one
//! [`Done`], and a worker answers in the order it was asked (answers of different
//! partitions may interleave):
//! the rejections it found (to be sent as dead letters before anything is handed on), the
//! stats it counted and the feeds it made. The source hands feeds on only after it has
//! sent the letters of the same and earlier answers, so a batch's position never covers a
//! message whose dead letter was not sent yet.
//!
//! The queue of work is bounded: when decoding falls behind, the source's thread blocks on
//! it and stops polling (librdkafka's own prefetch queue is bounded too). Answers are not
//! bounded, but the source collects them before it polls again, so there are never more
//! than the work items in flight.

use rdkafka::message::{BorrowedMessage, Message};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use trailmap_ingest::{IngestStats, JsonDecoder};
use trailmap_live::{Feed, Position};
use trailmap_model::time::unix_micros;
use trailmap_model::{Error, Result};

/// Messages a chunk holds before it is handed to the worker: enough to make the hand-over
/// cheap per message, few enough that the worker starts early.
pub const CHUNK_MESSAGES: usize = 256;
/// Work items queued for each worker before the polling thread waits (with
/// [`CHUNK_MESSAGES`], what is read ahead of decoding).
const QUEUE: usize = 8;
/// Decode threads at most: the polling thread, librdkafka's and the pipeline's want cores
/// too.
pub const MAX_WORKERS: usize = 4;

/// One message as read, its bytes in its chunk.
struct Raw {
    offset: i64,
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
    /// The Kafka timestamp, in ms since the epoch.
    timestamp: Option<i64>,
    /// When it was read.
    read: Instant,
}

/// Messages of one partition read since they were last handed to the worker.
#[derive(Default)]
pub struct Chunk {
    /// Keys and payloads, back to back.
    bytes: Vec<u8>,
    messages: Vec<Raw>,
}

impl Chunk {
    pub fn push(&mut self, message: &BorrowedMessage<'_>) {
        let mut copy = |b: Option<&[u8]>| {
            b.map(|b| {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(b);
                start..self.bytes.len()
            })
        };
        let key = copy(message.key());
        let payload = copy(message.payload());
        self.messages.push(Raw {
            offset: message.offset(),
            key,
            payload,
            timestamp: message.timestamp().to_millis(),
            read: Instant::now(),
        });
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    fn bytes(&self, range: &Option<Range<usize>>) -> Option<&[u8]> {
        range.as_ref().and_then(|r| self.bytes.get(r.clone()))
    }

    #[cfg(test)]
    pub fn push_raw(&mut self, offset: i64, payload: Option<&[u8]>) {
        let payload = payload.map(|p| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(p);
            start..self.bytes.len()
        });
        self.messages.push(Raw {
            offset,
            key: None,
            payload,
            timestamp: None,
            read: Instant::now(),
        });
    }
}

/// What a worker is asked to do, in the order the source needs it done.
pub enum Work {
    /// A partition seen for the first time.
    Open {
        slot: usize,
        decoder: Box<JsonDecoder>,
        topic: String,
        partition: i32,
    },
    Decode {
        slot: usize,
        chunk: Chunk,
    },
    /// Hand on the slot's pending batch, then `then` (its `Idle` or `End`).
    Flush {
        slot: usize,
        then: Option<Feed>,
    },
    /// A feed to pass on after everything asked before it (`Idle`, `End`).
    Mark(Feed),
}

/// A message the decoder rejected, for the dead letters.
pub struct Rejection {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub reason: String,
}

/// The answer to one [`Work`].
#[derive(Default)]
pub struct Done {
    pub rejected: Vec<Rejection>,
    pub stats: IngestStats,
    pub feeds: Vec<Feed>,
}

/// One partition as the worker sees it: its micro-batch in the making.
struct WorkerSlot {
    decoder: Box<JsonDecoder>,
    topic: String,
    partition: i32,
    /// The offset after the last message decoded; negative before the first.
    next: i64,
    /// When the oldest row of the pending batch reached Kafka: freshness counts from here.
    produced: Option<Instant>,
}

impl Work {
    /// The partition (slot) the work is about, which picks its worker.
    fn slot(&self) -> usize {
        match self {
            Work::Open { slot, .. } | Work::Decode { slot, .. } | Work::Flush { slot, .. } => *slot,
            Work::Mark(Feed::Batch { partition, .. })
            | Work::Mark(Feed::Idle { partition })
            | Work::Mark(Feed::End { partition }) => *partition,
            // Not about a partition (the Kafka source never marks these).
            Work::Mark(Feed::Quiet | Feed::Cut(_)) => 0,
        }
    }
}

/// A decode worker's state: its partitions' decoders and pending batches.
pub struct Decoding {
    /// By slot index; `None` for the partitions of other workers.
    slots: Vec<Option<WorkerSlot>>,
    batch_size: usize,
    /// Where each partition resumes after a rebalance (shared with the consumer's
    /// context): updated as batches are handed on.
    resume: Arc<Mutex<HashMap<(String, i32), i64>>>,
}

impl Decoding {
    pub fn new(batch_size: usize, resume: Arc<Mutex<HashMap<(String, i32), i64>>>) -> Self {
        Decoding {
            slots: Vec::new(),
            batch_size,
            resume,
        }
    }

    pub fn run(&mut self, work: Work) -> Done {
        let mut done = Done::default();
        match work {
            Work::Open {
                slot,
                decoder,
                topic,
                partition,
            } => {
                if self.slots.len() <= slot {
                    self.slots.resize_with(slot + 1, || None);
                }
                self.slots[slot] = Some(WorkerSlot {
                    decoder,
                    topic,
                    partition,
                    next: -1,
                    produced: None,
                });
            }
            Work::Decode { slot, chunk } => self.decode(slot, &chunk, &mut done),
            Work::Flush { slot, then } => {
                self.flush(slot, &mut done);
                done.feeds.extend(then);
            }
            Work::Mark(feed) => done.feeds.push(feed),
        }
        done
    }

    fn decode(&mut self, ix: usize, chunk: &Chunk, done: &mut Done) {
        for m in &chunk.messages {
            let Some(Some(slot)) = self.slots.get_mut(ix) else {
                return;
            };
            slot.next = m.offset + 1;
            let payload = chunk.bytes(&m.payload);
            let decoded = match payload {
                Some(payload) => slot.decoder.decode(payload),
                None => Err("empty message: no payload".to_string()),
            };
            match decoded {
                Ok(outcome) => done.stats.count(outcome),
                Err(reason) => {
                    done.stats.count_rejected();
                    *done
                        .stats
                        .rejected_by_source
                        .entry(slot.decoder.source_name().to_string())
                        .or_default() += 1;
                    done.rejected.push(Rejection {
                        topic: slot.topic.clone(),
                        partition: slot.partition,
                        offset: m.offset,
                        key: chunk.bytes(&m.key).map(<[u8]>::to_vec),
                        payload: payload.map(<[u8]>::to_vec),
                        reason,
                    });
                }
            }
            if slot.produced.is_none() && slot.decoder.pending() > 0 {
                slot.produced = Some(produced_at(m.timestamp, m.read));
            }
            if slot.decoder.pending() >= self.batch_size {
                self.flush(ix, done);
            }
        }
    }

    /// Hands on the partition's pending batch.
    fn flush(&mut self, ix: usize, done: &mut Done) {
        let Some(Some(slot)) = self.slots.get_mut(ix) else {
            return;
        };
        let arrived = slot.produced.take().unwrap_or_else(Instant::now);
        if let Some(batch) = slot.decoder.take_batch() {
            let position = (slot.next >= 0).then(|| Position {
                topic: slot.topic.clone(),
                partition: slot.partition,
                next_offset: slot.next,
            });
            if let (Some(p), Ok(mut resume)) = (&position, self.resume.lock()) {
                resume.insert((p.topic.clone(), p.partition), p.next_offset);
            }
            done.feeds.push(Feed::Batch {
                partition: ix,
                batch,
                position,
                arrived,
            });
        }
    }
}

/// When a message reached Kafka (its timestamp: create or log-append time), as an instant
/// of this process's clock, so freshness counts the time it spent in the broker; when it
/// was read if it has no timestamp, or one ahead of this clock.
fn produced_at(timestamp_ms: Option<i64>, read: Instant) -> Instant {
    let Some(ms) = timestamp_ms else {
        return read;
    };
    let now = Instant::now();
    let wall = unix_micros(std::time::SystemTime::now()) / 1000;
    let age = Duration::from_millis(wall.saturating_sub(ms).max(0) as u64);
    now.checked_sub(age).unwrap_or(now).min(read)
}

/// The worker threads and the source's ends of their queues.
pub struct Worker {
    /// One queue per worker; slot `i` is decoded by worker `i % len`.
    work: Vec<SyncSender<Work>>,
    /// Every worker answers here.
    done: Receiver<Done>,
    /// Work sent whose answer has not been collected.
    in_flight: usize,
    threads: Vec<JoinHandle<()>>,
}

fn stopped() -> Error {
    Error::Other("a Kafka decode thread stopped".into())
}

impl Worker {
    /// Starts `workers` threads (at least one), each with a `Decoding` from `decoding`.
    pub fn start(workers: usize, decoding: impl Fn() -> Decoding) -> Result<Worker> {
        let (outbox, done): (Sender<Done>, _) = std::sync::mpsc::channel();
        let mut pool = Worker {
            work: Vec::new(),
            done,
            in_flight: 0,
            threads: Vec::new(),
        };
        for n in 0..workers.max(1) {
            let (work, inbox) = std::sync::mpsc::sync_channel::<Work>(QUEUE);
            let (outbox, mut decoding) = (outbox.clone(), decoding());
            let thread = std::thread::Builder::new()
                .name(format!("kafka-decode-{n}"))
                .spawn(move || {
                    while let Ok(work) = inbox.recv() {
                        if outbox.send(decoding.run(work)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| Error::Other(format!("cannot start a Kafka decode thread: {e}")))?;
            pool.work.push(work);
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Queues work on its partition's worker; blocks while that queue is full
    /// (backpressure).
    pub fn send(&mut self, work: Work) -> Result<()> {
        let queue = self
            .work
            .get(work.slot() % self.work.len().max(1))
            .ok_or_else(stopped)?;
        queue.send(work).map_err(|_| stopped())?;
        self.in_flight += 1;
        Ok(())
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// An answer if one is there.
    pub fn try_done(&mut self) -> Result<Option<Done>> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        match self.done.try_recv() {
            Ok(done) => {
                self.in_flight -= 1;
                Ok(Some(done))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(stopped()),
        }
    }

    /// The next answer, waiting up to `wait` for it (`None` if nothing is in flight or it
    /// did not come in time).
    pub fn wait_done(&mut self, wait: Duration) -> Result<Option<Done>> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        match self.done.recv_timeout(wait) {
            Ok(done) => {
                self.in_flight -= 1;
                Ok(Some(done))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(stopped()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the queues ends the threads once they have answered what they hold.
        self.work.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailmap_ingest::Projection;
    use trailmap_model::Catalog;
    use trailmap_model::config::{SourceConfig, SourceKind};

    fn decoder() -> JsonDecoder {
        let source = SourceConfig::of_kind(SourceKind::Generic);
        let mapping = source.mapping().expect("mapping");
        JsonDecoder::new(
            &source,
            &mapping,
            Arc::new(Catalog::passthrough()),
            Projection::default(),
        )
        .expect("decoder")
    }

    fn event(i: i64) -> Vec<u8> {
        format!(
            r#"{{"customer_id":"c{i}","ts":{},"touchpoint":"a"}}"#,
            1_700_000_000 + i
        )
        .into_bytes()
    }

    fn open(partition: i32) -> Work {
        Work::Open {
            slot: partition as usize,
            decoder: Box::new(decoder()),
            topic: "t".into(),
            partition,
        }
    }

    /// (partition, rows, next offset) of each batch, and the other feeds by name.
    fn shape(feeds: &[Feed]) -> Vec<String> {
        feeds
            .iter()
            .map(|f| match f {
                Feed::Batch {
                    partition,
                    batch,
                    position,
                    ..
                } => format!(
                    "batch {partition}: {} rows to {:?}",
                    batch.num_rows(),
                    position.as_ref().map(|p| p.next_offset)
                ),
                Feed::Idle { partition } => format!("idle {partition}"),
                Feed::End { partition } => format!("end {partition}"),
                Feed::Quiet => "quiet".into(),
                Feed::Cut(cut) => format!("cut {}", cut.through),
            })
            .collect()
    }

    #[test]
    fn batches_cut_by_size_cover_their_rejections_and_marks_follow() {
        let resume = Arc::new(Mutex::new(HashMap::new()));
        let mut d = Decoding::new(2, resume.clone());
        d.run(open(0));
        let mut chunk = Chunk::default();
        chunk.push_raw(10, Some(&event(0)));
        chunk.push_raw(11, Some(&event(1)));
        chunk.push_raw(12, Some(b"{oops"));
        chunk.push_raw(13, Some(&event(3)));
        chunk.push_raw(14, None);
        let done = d.run(Work::Decode { slot: 0, chunk });
        assert_eq!(shape(&done.feeds), ["batch 0: 2 rows to Some(12)"]);
        let rejected: Vec<_> = done
            .rejected
            .iter()
            .map(|r| (r.offset, r.reason.split(':').next().unwrap_or_default()))
            .collect();
        assert_eq!(rejected, [(12, "invalid JSON"), (14, "empty message")]);
        assert_eq!(done.rejected[0].payload.as_deref(), Some(&b"{oops"[..]));
        assert_eq!((done.stats.records, done.stats.events), (5, 3));
        assert_eq!(done.stats.rejected_by_source.get("generic"), Some(&2));
        // The flush hands on row 13 with a position past the rejection at 14, then the mark.
        let done = d.run(Work::Flush {
            slot: 0,
            then: Some(Feed::Idle { partition: 0 }),
        });
        assert_eq!(
            shape(&done.feeds),
            ["batch 0: 1 rows to Some(15)", "idle 0"]
        );
        assert_eq!(
            resume
                .lock()
                .map(|r| r.get(&("t".into(), 0)).copied())
                .ok()
                .flatten(),
            Some(15)
        );
        // Nothing pending: a flush hands on only its mark.
        let done = d.run(Work::Flush {
            slot: 0,
            then: Some(Feed::End { partition: 0 }),
        });
        assert_eq!(shape(&done.feeds), ["end 0"]);
    }

    /// Through the threads, with chunks of three partitions interleaved: each partition's
    /// rows arrive once and in order, and each `End` after its partition's batches.
    #[test]
    fn the_workers_answer_in_partition_order() {
        for workers in [1, 2] {
            answers_in_order(workers);
        }
    }

    fn answers_in_order(workers: usize) {
        let resume = Arc::new(Mutex::new(HashMap::new()));
        let mut worker =
            Worker::start(workers, || Decoding::new(7, resume.clone())).expect("worker");
        let mut answers = Vec::new();
        let mut send = |worker: &mut Worker, work: Work| {
            worker.send(work).expect("send");
            while let Some(done) = worker.try_done().expect("answer") {
                answers.push(done);
            }
        };
        for partition in 0..3 {
            send(&mut worker, open(partition));
        }
        let mut next = [0i64; 3];
        for round in 0..40 {
            for (slot, next) in next.iter_mut().enumerate() {
                let mut chunk = Chunk::default();
                for _ in 0..(round % 5 + slot) {
                    chunk.push_raw(*next, Some(&event(*next)));
                    *next += 1;
                }
                send(&mut worker, Work::Decode { slot, chunk });
            }
        }
        for slot in 0..3 {
            send(
                &mut worker,
                Work::Flush {
                    slot,
                    then: Some(Feed::End { partition: slot }),
                },
            );
        }
        while worker.in_flight() > 0 {
            if let Some(done) = worker.wait_done(Duration::from_secs(10)).expect("answer") {
                answers.push(done);
            }
        }
        let mut rows = [0i64; 3];
        let mut ended = [false; 3];
        for feed in answers.into_iter().flat_map(|d| d.feeds) {
            match feed {
                Feed::Batch {
                    partition,
                    batch,
                    position,
                    ..
                } => {
                    assert!(!ended[partition]);
                    assert!(batch.num_rows() <= 7);
                    rows[partition] += batch.num_rows() as i64;
                    // Every message decodes, so a position is the count of rows so far.
                    assert_eq!(position.map(|p| p.next_offset), Some(rows[partition]));
                }
                Feed::End { partition } => ended[partition] = true,
                other => panic!("unexpected {:?}", shape(&[other])),
            }
        }
        assert_eq!(rows, next);
        assert_eq!(ended, [true; 3]);
    }
}
