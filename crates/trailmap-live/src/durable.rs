//! Durability: every batch the pipeline takes in is stored, and checkpoints tie the stored
//! segments to the source positions they cover.
//!
//! [`DurableSource`] wraps a live source. On start it replays the stored segments, batch
//! by batch in the order the pipeline first took them, so the live state is rebuilt by the
//! same code that built it; then it reads the wrapped source, which resumes from the
//! checkpoint's positions. Meanwhile each batch is kept for the next segment; every
//! `checkpoint_every` the segment is written, the source makes its side effects durable
//! (dead letters), and the checkpoint is replaced. A crash at any moment leaves the last
//! checkpoint: its segments are replayed and everything after its positions is read
//! again, so nothing is lost and nothing is counted twice.
//!
//! Replaying every segment makes a restart as long as the history. So, at most every
//! `snapshot_every` ([`keep_state_every`](DurableSource::keep_state_every)), a checkpoint
//! is followed by a [`Cut`] in the feed: the pipeline snapshots its state there and hands
//! it back, and a writer thread stores it beside the checkpoint. A restart that can use it
//! (same config, same shards) starts from that state and replays only the segments stored
//! after it. The small segments that state covers are then compacted
//! ([`compact_to`](DurableSource::compact_to)).

use crate::source::{Cut, Feed, LiveSource, Position};
use arrow::array::RecordBatch;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant, SystemTime};
use trailmap_ingest::IngestStats;
use trailmap_model::{Error, Result};
use trailmap_store::{Checkpoint, Segment, Store, StoredState};

pub struct DurableSource {
    store: Store,
    checkpoint: Checkpoint,
    /// Stored segments not replayed yet, and the batches of the one being replayed.
    to_replay: VecDeque<Segment>,
    replaying: VecDeque<(u32, RecordBatch)>,
    replayed_rows: u64,
    inner: Box<dyn LiveSource>,
    /// Batches taken since the last checkpoint, and where the source is after them.
    pending: Vec<(u32, RecordBatch)>,
    positions: BTreeMap<(String, i32), i64>,
    every: Duration,
    last: Instant,
    /// When the last checkpoint covered everything handed on.
    checkpointed_at: Option<SystemTime>,
    ended: bool,
    /// How often the pipeline's state is asked for; `None`: never.
    snapshot_every: Option<Duration>,
    /// When the last cut was handed on; the first checkpoint is followed by one.
    last_cut: Option<Instant>,
    /// A cut to hand on after the checkpoint that stored segment `through`.
    cut_due: Option<u64>,
    /// The segment the kept state is as of (0: none), as the writer last wrote it:
    /// segments up to it may be compacted.
    kept_through: Arc<AtomicU64>,
    /// Rows compacted segments are made of, at most; `None`: no compaction.
    compact_to: Option<u64>,
    /// When compaction last failed.
    compact_failed: Option<Instant>,
    /// Where the pipeline hands the state of a cut back: the writer's inbox, once started,
    /// and what says the writer is done.
    writer: Option<SyncSender<StoredState>>,
    writer_done: Option<Receiver<()>>,
}

/// Reads the store's checkpoint (a new store: an empty one) and removes what a crash left
/// after it. Its positions are where the wrapped source must resume.
pub fn resume(store: &Store) -> Result<Checkpoint> {
    let mut checkpoint = store.read_checkpoint()?.unwrap_or_default();
    store.remove_orphans(&checkpoint)?;
    if checkpoint.store.is_empty() {
        // A new store (or one from before stores were named): named from its next
        // checkpoint on.
        checkpoint.store = Checkpoint::new_store_name();
    }
    Ok(checkpoint)
}

impl DurableSource {
    /// `inner` must already resume from `checkpoint.positions` (see [`resume`]).
    pub fn new(
        store: Store,
        checkpoint: Checkpoint,
        inner: Box<dyn LiveSource>,
        every: Duration,
    ) -> Self {
        let positions = checkpoint
            .positions
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.next_offset))
            .collect();
        DurableSource {
            to_replay: checkpoint.segments.iter().cloned().collect(),
            store,
            checkpoint,
            replaying: VecDeque::new(),
            replayed_rows: 0,
            inner,
            pending: Vec::new(),
            positions,
            every,
            last: Instant::now(),
            checkpointed_at: None,
            ended: false,
            snapshot_every: None,
            last_cut: None,
            cut_due: None,
            kept_through: Arc::new(AtomicU64::new(0)),
            compact_to: None,
            compact_failed: None,
            writer: None,
            writer_done: None,
        }
    }

    /// Asks the pipeline for its state after a checkpoint at most this often, and keeps it
    /// in the store (see the module's doc).
    pub fn keep_state_every(mut self, every: Duration) -> Self {
        self.snapshot_every = Some(every);
        self
    }

    /// Merges small segments the kept state covers into segments of up to `rows` events:
    /// a checkpoint every few seconds makes many small files, which replays and queries
    /// of `stored_events` pay for. 0: never.
    pub fn compact_to(mut self, rows: u64) -> Self {
        self.compact_to = (rows > 0).then_some(rows);
        self
    }

    /// The inbox of the thread that stores the states the pipeline hands back, started on
    /// first use. A state is as large as the pipeline's memory: written here, on the
    /// source thread, it would pause ingest. `None` if the thread cannot start (then no
    /// state is kept, which only makes restarts replay more).
    fn writer(&mut self) -> Option<SyncSender<StoredState>> {
        if self.writer.is_none() {
            let store = self.store.try_clone();
            let (name, kept) = (self.checkpoint.store.clone(), self.kept_through.clone());
            let (to, inbox) = std::sync::mpsc::sync_channel::<StoredState>(1);
            let (done, writer_done) = std::sync::mpsc::sync_channel::<()>(1);
            let started = store.and_then(|store| {
                std::thread::Builder::new()
                    .name("trailmap-state".into())
                    .spawn(move || {
                        keep_states(&store, &name, &inbox, &kept);
                        let _ = done.send(());
                    })
                    .map_err(|e| Error::Other(e.to_string()))
            });
            match started {
                Ok(_) => {
                    self.writer = Some(to);
                    self.writer_done = Some(writer_done);
                }
                Err(e) => eprintln!("store: the live state cannot be kept ({e})"),
            }
        }
        self.writer.clone()
    }

    /// Compacts the oldest run of small segments the kept state covers, once it is worth a
    /// file: half the target in rows, or many files. Only covered segments, so a restart
    /// never needs them split again; and a run never crosses the kept state's segment,
    /// whose number the compacted segment keeps (the state file names it).
    fn compact(&mut self) -> Result<()> {
        let through = self.kept_through.load(Ordering::Acquire);
        let Some(target) = self.compact_to.filter(|_| through > 0) else {
            return Ok(());
        };
        if self
            .compact_failed
            .is_some_and(|at| at.elapsed() < COMPACT_RETRY)
        {
            return Ok(());
        }
        let segments = &self.checkpoint.segments;
        let covered: Vec<u64> = segments
            .iter()
            .take_while(|s| s.seq <= through)
            .map(|s| s.rows)
            .collect();
        let Some(run) = run_to_compact(&covered, target) else {
            return Ok(());
        };
        let merged = match self.store.compact(&segments[run.clone()]) {
            Ok(merged) => merged,
            Err(e) => {
                // Reading a million rows again every checkpoint would not make it work.
                self.compact_failed = Some(Instant::now());
                return Err(e);
            }
        };
        let mut next = self.checkpoint.clone();
        next.segments.splice(run, [merged]);
        self.store.write_checkpoint(&next)?;
        self.checkpoint = next;
        // The old files are orphans now; a crash before this removes them on start.
        self.store.remove_orphans(&self.checkpoint)?;
        Ok(())
    }

    /// Events replayed from the store so far.
    pub fn replayed(&self) -> u64 {
        self.replayed_rows
    }

    /// Writes the pending batches as a segment and replaces the checkpoint.
    fn checkpoint(&mut self) -> Result<()> {
        self.last = Instant::now();
        if self.pending.is_empty() {
            // Nothing new: everything handed on is already durable.
            if !self.checkpoint.segments.is_empty() || self.checkpointed_at.is_some() {
                self.checkpointed_at = Some(SystemTime::now());
            }
            return Ok(());
        }
        let segment = self
            .store
            .write_segment(self.checkpoint.next_seq(), &self.pending)?;
        self.inner.before_checkpoint()?;
        let mut next = self.checkpoint.clone();
        next.segments.push(segment);
        next.positions = self
            .positions
            .iter()
            .map(|((topic, partition), &next_offset)| Position {
                topic: topic.clone(),
                partition: *partition,
                next_offset,
            })
            .collect();
        self.store.write_checkpoint(&next)?;
        let due = |every: Duration| self.last_cut.is_none_or(|at| at.elapsed() >= every);
        if self.snapshot_every.is_some_and(due) {
            self.last_cut = Some(Instant::now());
            self.cut_due = Some(segment_seq(&next));
        }
        self.checkpoint = next;
        self.checkpointed_at = Some(SystemTime::now());
        self.pending.clear();
        self.inner.after_checkpoint(&self.checkpoint.positions);
        if let Err(e) = self.compact() {
            // The segments as they are stay named: nothing is lost, only not merged.
            eprintln!("store: compacting segments failed ({e}); they stay as they are");
        }
        Ok(())
    }
}

/// Stores the states that arrive in `inbox`, until every sender is gone; failing to is not
/// fatal (the segments are the truth), so it is only said.
fn keep_states(store: &Store, name: &str, inbox: &Receiver<StoredState>, kept: &AtomicU64) {
    for state in inbox {
        // States are assembled on tasks of their own and may come back out of order: an
        // older one must not replace a newer one.
        if state.through <= kept.load(Ordering::Acquire) {
            continue;
        }
        match store.write_state(name, &state) {
            Ok(()) => kept.store(state.through, Ordering::Release),
            Err(e) => eprintln!("store: the live state was not kept ({e}); a restart replays more"),
        }
    }
}

/// How long compaction rests after it failed.
const COMPACT_RETRY: Duration = Duration::from_secs(600);

/// The run of adjacent segments (given by their rows, oldest first) to compact next into
/// at most `target` rows: the oldest run worth a file of its own, two or more segments
/// making half the target, or sixteen small ones. A segment that cannot join its next one
/// (together past the target) is passed over, so a merged segment short of the target
/// does not stop compaction behind it.
fn run_to_compact(rows: &[u64], target: u64) -> Option<std::ops::Range<usize>> {
    for start in 0..rows.len() {
        let (mut end, mut sum) = (start, 0);
        while end < rows.len() && sum + rows[end] <= target {
            sum += rows[end];
            end += 1;
        }
        let run = end - start;
        if run >= 2 && (sum >= target / 2 || run >= 16) {
            return Some(start..end);
        }
    }
    None
}

/// The last segment a checkpoint names.
fn segment_seq(checkpoint: &Checkpoint) -> u64 {
    checkpoint.segments.last().map_or(0, |s| s.seq)
}

impl DurableSource {
    /// Keeps a delivered batch for the next segment and advances its partition's position.
    fn record(&mut self, feed: &Feed) {
        if let Feed::Batch {
            partition,
            batch,
            position,
            ..
        } = feed
        {
            self.pending.push((*partition as u32, batch.clone()));
            if let Some(p) = position {
                self.positions
                    .insert((p.topic.clone(), p.partition), p.next_offset);
            }
        }
    }
}

impl LiveSource for DurableSource {
    fn partitions(&self) -> usize {
        self.inner.partitions()
    }

    fn next(&mut self) -> Result<Option<Feed>> {
        loop {
            if let Some((partition, batch)) = self.replaying.pop_front() {
                self.replayed_rows += batch.num_rows() as u64;
                return Ok(Some(Feed::Batch {
                    partition: partition as usize,
                    batch,
                    position: None,
                    arrived: std::time::Instant::now(),
                }));
            }
            if let Some(segment) = self.to_replay.pop_front() {
                self.replaying = self.store.read_segment(&segment)?.into();
                continue;
            }
            if self.ended {
                return Ok(None);
            }
            if self.last.elapsed() >= self.every {
                self.checkpoint()?;
            }
            if let Some(through) = self.cut_due.take()
                && let Some(keep) = self.writer()
            {
                return Ok(Some(Feed::Cut(Cut { through, keep })));
            }
            let feed = self.inner.next()?;
            match &feed {
                Some(feed) => self.record(feed),
                None => {
                    self.ended = true;
                    self.checkpoint()?;
                }
            }
            return Ok(feed);
        }
    }

    fn stats(&self) -> IngestStats {
        self.inner.stats()
    }

    fn checkpointed_at(&self) -> Option<SystemTime> {
        self.checkpointed_at
    }

    fn stored_state(&mut self) -> Option<StoredState> {
        match self.store.read_state(&self.checkpoint) {
            Ok(state) => {
                let through = state.as_ref().map_or(0, |s| s.through);
                self.kept_through.store(through, Ordering::Release);
                state
            }
            Err(e) => {
                eprintln!("store: {e}; replaying every stored segment instead");
                None
            }
        }
    }

    fn restored(&mut self, through: u64) {
        self.to_replay.retain(|s| s.seq > through);
        let rows: u64 = self.to_replay.iter().map(|s| s.rows).sum();
        eprintln!(
            "store: started from the live state as of segment {through}; replaying the {rows} \
             events stored after it"
        );
    }

    fn lag(&self) -> Option<u64> {
        self.inner.lag()
    }

    /// What the inner source held back is recorded like any batch, so the checkpoint
    /// written on drop covers it.
    fn drain(&mut self) -> Result<Vec<Feed>> {
        let feeds = self.inner.drain()?;
        for feed in &feeds {
            self.record(feed);
        }
        Ok(feeds)
    }
}

impl Drop for DurableSource {
    /// A pipeline stopped on request keeps what it read, and the last state handed back.
    fn drop(&mut self) {
        // The writer ends once the pipeline's cuts in flight are gone too; bounded, so a
        // stuck pipeline cannot hold the stop.
        self.writer = None;
        if let Some(done) = self.writer_done.take() {
            let _ = done.recv_timeout(Duration::from_secs(30));
        }
        if let Err(e) = self.checkpoint() {
            eprintln!(
                "store: the last checkpoint could not be written ({e}); a restart reads those events again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::run_to_compact;

    #[test]
    fn compaction_keeps_up_with_segments_of_any_size() {
        let target = 1000;
        let mut segments: Vec<u64> = Vec::new();
        let mut x = 7u64;
        let mut total = 0;
        for _ in 0..400 {
            // A checkpoint stores a segment of 50..450 rows, then compacts at most once.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let rows = 50 + (x >> 33) % 400;
            total += rows;
            segments.push(rows);
            if let Some(run) = run_to_compact(&segments, target) {
                let merged: u64 = segments[run.clone()].iter().sum();
                assert!(merged <= target);
                segments.splice(run, [merged]);
            }
        }
        assert_eq!(segments.iter().sum::<u64>(), total);
        let bound = (total / (target / 2) + 16) as usize;
        assert!(
            segments.len() <= bound,
            "{} files for {total} rows",
            segments.len()
        );
        // Full segments stay; a lone small one waits for company.
        assert_eq!(run_to_compact(&[1000, 900, 800], target), None);
        assert_eq!(run_to_compact(&[900, 300, 300], target), Some(1..3));
        assert_eq!(run_to_compact(&[10; 15], target), None);
        assert_eq!(run_to_compact(&[10; 16], target), Some(0..16));
    }
}
