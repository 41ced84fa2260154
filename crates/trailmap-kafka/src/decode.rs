//! Decoding off the polling thread.
//!
//! The source's thread polls the consumer and copies each message into its partition's
//! [`Chunk`]; worker threads (one per core, at most [`MAX_WORKERS`]) decode chunks into the
//! partitions' micro-batches. Polling (librdkafka's queue, copying payloads) overlaps
//! decoding, and partitions decode in parallel.
//!
//! A partition is decoded by one worker at a time, but by any: a partition with work
//! waiting is queued for the next free worker, which takes one piece of work, answers and
//! queues the partition again if more is waiting. Pinning partitions to workers would
//! leave a core idle whenever partitions do not divide evenly among workers (3 partitions
//! on 2 workers: one worker decodes two thirds).
//!
//! Everything that orders a partition's feeds goes through its FIFO queue of [`Work`]:
//! chunks, flushes, and the `Idle`/`End` marks, so a mark always comes after the batches of
//! what was read before it. Each piece of work answers with exactly one [`Done`], sent
//! before the partition is free for another worker, so a partition's answers arrive in the
//! order it was asked (answers of different partitions may interleave):
//! the rejections it found (to be sent as dead letters before anything is handed on), the
//! stats it counted and the feeds it made. The source hands feeds on only after it has
//! sent the letters of the same and earlier answers, so a batch's position never covers a
//! message whose dead letter was not sent yet.
//!
//! The work waiting is bounded: when decoding falls behind, the source's thread blocks
//! and stops polling (librdkafka's own prefetch queue is bounded too). Answers are not
//! bounded, but the source collects them before it polls again, so there are never more
//! than the work items in flight.

use rdkafka::message::{BorrowedMessage, Message};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use trailmap_ingest::{IngestStats, JsonDecoder};
use trailmap_live::{Feed, Position};
use trailmap_model::time::unix_micros;
use trailmap_model::{Error, Result};

/// Messages a chunk holds before it is handed to the worker: enough to make the hand-over
/// cheap per message, few enough that the worker starts early.
pub const CHUNK_MESSAGES: usize = 256;
/// Work items waiting per worker before the polling thread waits (with
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
}

/// Messages of one partition read since they were last handed to the worker.
#[derive(Default)]
pub struct Chunk {
    /// Keys and payloads, back to back.
    bytes: Vec<u8>,
    messages: Vec<Raw>,
    /// When its first message was read: the clock is read once per chunk, not per message
    /// (it only stands in for a message's Kafka timestamp when that is missing).
    read: Option<Instant>,
}

impl Chunk {
    /// An empty chunk with room for one like `like`, so filling it does not grow it step
    /// by step.
    pub fn sized_like(like: &Chunk) -> Chunk {
        Chunk {
            bytes: Vec::with_capacity(like.bytes.len()),
            messages: Vec::with_capacity(like.messages.len()),
            read: None,
        }
    }

    pub fn push(&mut self, message: &BorrowedMessage<'_>) {
        if self.read.is_none() {
            self.read = Some(Instant::now());
        }
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
        });
        self.read.get_or_insert_with(Instant::now);
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

/// One partition as the workers see it: its micro-batch in the making. It moves with the
/// partition from worker to worker.
pub struct WorkerSlot {
    decoder: Box<JsonDecoder>,
    topic: String,
    partition: i32,
    /// The offset after the last message decoded; negative before the first.
    next: i64,
    /// When the oldest row of the pending batch reached Kafka: freshness counts from here.
    produced: Option<Instant>,
}

impl Work {
    /// The partition (slot) the work is about, whose queue it joins.
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

/// How work is done, the same for every worker and partition.
#[derive(Clone)]
pub struct Decoding {
    batch_size: usize,
    /// Where each partition resumes after a rebalance (shared with the consumer's
    /// context): updated as batches are handed on.
    resume: Arc<Mutex<HashMap<(String, i32), i64>>>,
}

impl Decoding {
    pub fn new(batch_size: usize, resume: Arc<Mutex<HashMap<(String, i32), i64>>>) -> Self {
        Decoding { batch_size, resume }
    }

    /// Does `work` for its partition, whose state is `slot` (`None` until it is opened).
    pub fn run(&self, slot: &mut Option<WorkerSlot>, work: Work) -> Done {
        let mut done = Done::default();
        let ix = work.slot();
        match work {
            Work::Open {
                decoder,
                topic,
                partition,
                ..
            } => {
                *slot = Some(WorkerSlot {
                    decoder,
                    topic,
                    partition,
                    next: -1,
                    produced: None,
                });
            }
            Work::Decode { chunk, .. } => {
                if let Some(slot) = slot {
                    self.decode(ix, slot, &chunk, &mut done);
                }
            }
            Work::Flush { then, .. } => {
                if let Some(slot) = slot {
                    self.flush(ix, slot, &mut done);
                }
                done.feeds.extend(then);
            }
            Work::Mark(feed) => done.feeds.push(feed),
        }
        done
    }

    fn decode(&self, ix: usize, slot: &mut WorkerSlot, chunk: &Chunk, done: &mut Done) {
        for m in &chunk.messages {
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
                let read = chunk.read.unwrap_or_else(Instant::now);
                slot.produced = Some(produced_at(m.timestamp, read));
            }
            if slot.decoder.pending() >= self.batch_size {
                self.flush(ix, slot, done);
            }
        }
    }

    /// Hands on the partition's pending batch.
    fn flush(&self, ix: usize, slot: &mut WorkerSlot, done: &mut Done) {
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
/// of this process's clock, so freshness counts the time it spent in the broker; when its
/// chunk began to be read (`read`, at most a chunk's fill time early) if it has no
/// timestamp, or one ahead of this clock.
fn produced_at(timestamp_ms: Option<i64>, read: Instant) -> Instant {
    let Some(ms) = timestamp_ms else {
        return read;
    };
    let now = Instant::now();
    let wall = unix_micros(std::time::SystemTime::now()) / 1000;
    let age = Duration::from_millis(wall.saturating_sub(ms).max(0) as u64);
    now.checked_sub(age).unwrap_or(now).min(read)
}

/// A partition's queue of work.
#[derive(Default)]
struct Queue {
    work: VecDeque<Work>,
    /// Its state, while no worker has it.
    slot: Option<WorkerSlot>,
    /// Whether a worker has it (then it is not in `Board::ready`).
    taken: bool,
}

/// What the source and the workers share, under one lock.
#[derive(Default)]
struct Board {
    /// By slot index.
    queues: Vec<Queue>,
    /// Partitions with work waiting and no worker, in the order they became so.
    ready: VecDeque<usize>,
    /// Work items queued and not yet taken, against the bound.
    waiting: usize,
    /// Set when the source is gone: workers stop.
    closed: bool,
    /// Workers running. While the source is there a worker ends only by panicking, and
    /// the partition it held would never answer again: the source fails rather than wait.
    live: usize,
}

struct Shared {
    board: Mutex<Board>,
    /// Signalled when a partition becomes ready (or the board closes).
    ready: Condvar,
    /// Signalled when a worker takes work, so a blocked source may queue more.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> Result<MutexGuard<'_, Board>> {
        self.board.lock().map_err(|_| stopped())
    }
}

/// The worker threads and the source's end of their work.
pub struct Worker {
    shared: Arc<Shared>,
    /// Work items waiting (not yet taken) at most.
    capacity: usize,
    /// Workers started.
    workers: usize,
    /// Every worker answers here.
    done: Receiver<Done>,
    /// Work sent whose answer has not been collected.
    in_flight: usize,
    threads: Vec<JoinHandle<()>>,
}

fn stopped() -> Error {
    Error::Other("a Kafka decode thread stopped".into())
}

/// Counts a worker out when its thread ends, however it ends.
struct Leaving<'a>(&'a Shared);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        let mut board = self
            .0
            .board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        board.live -= 1;
        self.0.room.notify_all();
    }
}

/// A worker's life: take a ready partition's next work, answer, give the partition back.
fn work_loop(shared: &Shared, decoding: &Decoding, outbox: &Sender<Done>) {
    let _leaving = Leaving(shared);
    loop {
        let (ix, mut slot, work) = {
            let Ok(mut board) = shared.board.lock() else {
                return;
            };
            loop {
                if board.closed {
                    return;
                }
                if let Some(ix) = board.ready.pop_front() {
                    let board = &mut *board;
                    let queue = &mut board.queues[ix];
                    if let Some(work) = queue.work.pop_front() {
                        queue.taken = true;
                        board.waiting -= 1;
                        let slot = queue.slot.take();
                        shared.room.notify_one();
                        break (ix, slot, work);
                    }
                    continue;
                }
                board = match shared.ready.wait(board) {
                    Ok(board) => board,
                    Err(_) => return,
                };
            }
        };
        // Answered before the partition is given back, so its answers stay in order.
        if outbox.send(decoding.run(&mut slot, work)).is_err() {
            return;
        }
        let Ok(mut board) = shared.board.lock() else {
            return;
        };
        let queue = &mut board.queues[ix];
        queue.slot = slot;
        queue.taken = false;
        if !queue.work.is_empty() {
            board.ready.push_back(ix);
            shared.ready.notify_one();
        }
    }
}

impl Worker {
    /// Starts `workers` threads (at least one), all doing work as `decoding` says.
    pub fn start(workers: usize, decoding: Decoding) -> Result<Worker> {
        let (outbox, done): (Sender<Done>, _) = std::sync::mpsc::channel();
        let workers = workers.max(1);
        let shared = Arc::new(Shared {
            board: Mutex::new(Board {
                live: workers,
                ..Board::default()
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
        });
        let mut pool = Worker {
            shared: shared.clone(),
            capacity: QUEUE * workers,
            workers,
            done,
            in_flight: 0,
            threads: Vec::new(),
        };
        for n in 0..workers {
            let (outbox, decoding, shared) = (outbox.clone(), decoding.clone(), shared.clone());
            let thread = std::thread::Builder::new()
                .name(format!("kafka-decode-{n}"))
                .spawn(move || work_loop(&shared, &decoding, &outbox))
                .map_err(|e| Error::Other(format!("cannot start a Kafka decode thread: {e}")))?;
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Queues work on its partition; blocks while as much work as the bound allows is
    /// waiting (backpressure).
    pub fn send(&mut self, work: Work) -> Result<()> {
        let ix = work.slot();
        let mut board = self.shared.lock()?;
        while board.waiting >= self.capacity {
            if board.live < self.workers {
                return Err(stopped());
            }
            board = self.shared.room.wait(board).map_err(|_| stopped())?;
        }
        if board.queues.len() <= ix {
            board.queues.resize_with(ix + 1, Queue::default);
        }
        let queue = &mut board.queues[ix];
        queue.work.push_back(work);
        let runnable = !queue.taken && queue.work.len() == 1;
        board.waiting += 1;
        if runnable {
            board.ready.push_back(ix);
            self.shared.ready.notify_one();
        }
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
        if self.shared.lock()?.live < self.workers {
            return Err(stopped());
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
        // Work not yet answered will not be collected: the threads stop at once.
        if let Ok(mut board) = self.shared.board.lock() {
            board.closed = true;
        }
        self.shared.ready.notify_all();
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
        let d = Decoding::new(2, resume.clone());
        let mut slot = None;
        d.run(&mut slot, open(0));
        let mut chunk = Chunk::default();
        chunk.push_raw(10, Some(&event(0)));
        chunk.push_raw(11, Some(&event(1)));
        chunk.push_raw(12, Some(b"{oops"));
        chunk.push_raw(13, Some(&event(3)));
        chunk.push_raw(14, None);
        let done = d.run(&mut slot, Work::Decode { slot: 0, chunk });
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
        let done = d.run(
            &mut slot,
            Work::Flush {
                slot: 0,
                then: Some(Feed::Idle { partition: 0 }),
            },
        );
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
        let done = d.run(
            &mut slot,
            Work::Flush {
                slot: 0,
                then: Some(Feed::End { partition: 0 }),
            },
        );
        assert_eq!(shape(&done.feeds), ["end 0"]);
    }

    /// Through the threads, with chunks of three partitions interleaved: each partition's
    /// rows arrive once and in order, and each `End` after its partition's batches.
    #[test]
    fn the_workers_answer_in_partition_order() {
        for workers in [1, 2, 4] {
            answers_in_order(workers);
        }
    }

    fn answers_in_order(workers: usize) {
        let resume = Arc::new(Mutex::new(HashMap::new()));
        let mut worker = Worker::start(workers, Decoding::new(7, resume.clone())).expect("worker");
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
