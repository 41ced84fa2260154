//! The consumer: Kafka partitions as partitions of the live pipeline.
//!
//! One thread (the pipeline's source thread) polls one consumer; a second one decodes (see
//! [`crate::decode`]). Messages are decoded into a micro-batch per partition, handed on when
//! it holds `batch_size` rows or is `linger` old, so batches stay in partition order and
//! each partition's event time can hold the watermark. A partition that reaches the end of
//! its topic reports itself idle: a quiet topic must not stop sessions from closing.
//!
//! The pipeline's channel is bounded, so while it is full the thread does not poll and
//! consumption pauses (librdkafka's prefetch queue and the decode queue are bounded too).

use crate::client;
use crate::dead_letter::{DeadLetterTopic, Rejected};
use crate::decode::{CHUNK_MESSAGES, Chunk, Decoding, Done, MAX_WORKERS, Work, Worker};
use crate::health::KafkaHealth;
use rdkafka::ClientContext;
use rdkafka::bindings::rd_kafka_resp_err_t as RespErr;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trailmap_ingest::{DeadLetters, IngestOptions, IngestStats, JsonDecoder};
use trailmap_live::{Feed, LiveSource, Position};
use trailmap_model::config::{Config, FieldMapping, KafkaConfig, SourceConfig, StartFrom};
use trailmap_model::{Error, Result};

/// How long a [`KafkaSource`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadUntil {
    /// As long as the pipeline runs, as a member of the consumer group.
    Forever,
    /// Until every partition reaches the end it had when the source started (like
    /// `kcat -e`): a run over what the topics hold now. Reads every partition itself, outside
    /// the group's assignment, so nothing is left to another member.
    End,
}

/// Longest a poll blocks, so lingering batches and health probes are served.
const POLL: Duration = Duration::from_millis(50);
/// Broker calls made while starting or probing.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Reports assignments and cluster errors from librdkafka's callbacks, and starts assigned
/// partitions where the last checkpoint left them.
struct Context {
    health: Arc<KafkaHealth>,
    /// The assignment after the last rebalance, until the source has taken it.
    assigned: Mutex<Option<Vec<(String, i32)>>>,
    /// Where each partition resumes after a rebalance: the checkpoint's positions, then
    /// past what this run has read (which is in memory and in the next segment).
    resume: Arc<Mutex<HashMap<(String, i32), i64>>>,
}

/// The consumer lag of the partitions librdkafka reports, `(partition, consumer_lag)`:
/// their sum, leaving out the internal unassigned partition (-1) and partitions whose lag
/// is not known yet (-1, no committed offset or high watermark); `None` when none is known.
pub fn total_lag(partitions: impl IntoIterator<Item = (i32, i64)>) -> Option<u64> {
    partitions
        .into_iter()
        .filter(|&(partition, lag)| partition >= 0 && lag >= 0)
        .map(|(_, lag)| lag as u64)
        .reduce(u64::saturating_add)
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let partitions = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .map(|p| (p.partition, p.consumer_lag));
        if let Some(lag) = total_lag(partitions) {
            self.health.set_lag(lag);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Reaching the end of a partition is news, not trouble (it comes this way with
        // assigned partitions).
        if is_end_of_partition(&error) {
            return;
        }
        if self.health.fail(format!("{error}: {reason}")) {
            eprintln!("kafka: {reason}; retrying (the live map keeps its state)");
        }
    }
}

impl ConsumerContext for Context {
    /// As rdkafka's default (eager protocol), except that assigned partitions start at the
    /// checkpoint's positions rather than the group's committed offsets: the checkpoint is
    /// the truth, a commit may lag it.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RespErr,
        list: &mut TopicPartitionList,
    ) {
        match err {
            RespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Ok(resume) = self.resume.lock() {
                    let known: Vec<(String, i32, i64)> = list
                        .elements()
                        .iter()
                        .filter_map(|e| {
                            let key = (e.topic().to_string(), e.partition());
                            resume.get(&key).map(|&o| (key.0, key.1, o))
                        })
                        .collect();
                    for (topic, partition, offset) in known {
                        let _ =
                            list.set_partition_offset(&topic, partition, Offset::Offset(offset));
                    }
                }
                if let Err(e) = consumer.assign(list) {
                    self.error(e, "assigning partitions after a rebalance");
                }
                self.post_rebalance(consumer, &Rebalance::Assign(list));
            }
            RespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Err(e) = consumer.unassign() {
                    self.error(e, "revoking partitions in a rebalance");
                }
                self.post_rebalance(consumer, &Rebalance::Revoke(list));
            }
            other => self.error(
                KafkaError::Rebalance(other.into()),
                "the consumer group could not rebalance",
            ),
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = match rebalance {
            Rebalance::Assign(list) => list
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect(),
            Rebalance::Revoke(_) => Vec::new(),
            Rebalance::Error(_) => return,
        };
        if let Ok(mut a) = self.assigned.lock() {
            *a = Some(assigned);
        }
    }
}

/// A configured source read from a topic.
struct Topic {
    name: String,
    source: SourceConfig,
    mapping: FieldMapping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Active,
    Idle,
    Ended,
}

/// One Kafka partition as the polling thread sees it (its decoder and micro-batch in the
/// making are the worker's).
struct Slot {
    topic: usize,
    partition: i32,
    /// When the oldest message not yet flushed was read: its batch lingers from then at
    /// the latest (the worker may have cut it by size since, so a flush may come early,
    /// never late).
    since: Option<Instant>,
    /// Messages read but not yet handed to the worker.
    chunk: Chunk,
    /// With [`ReadUntil::End`]: the offset this run stops before.
    end: Option<i64>,
    progress: Progress,
}

/// Everything but the consumer, so a borrowed message and the state can be used together.
struct Reader {
    topics: Vec<Topic>,
    options: IngestOptions,
    slots: Vec<Slot>,
    ready: VecDeque<Feed>,
    linger: Duration,
    dead: DeadLetterTopic,
    stats: IngestStats,
    /// Shared with the consumer's context.
    resume: Arc<Mutex<HashMap<(String, i32), i64>>>,
    worker: Worker,
}

pub struct KafkaSource {
    consumer: BaseConsumer<Context>,
    reader: Reader,
    until: ReadUntil,
    initial_partitions: usize,
    health: Arc<KafkaHealth>,
    last_probe: Instant,
}

impl KafkaSource {
    /// Connects to `[kafka] brokers` and subscribes to the topic of every source that has
    /// one. Fails, saying what to fix, when no source has a topic, a topic does not exist,
    /// or the cluster does not answer.
    ///
    /// Partitions start at `resume` (a checkpoint's positions) where it names them, else at
    /// the group's committed offset, else at `[kafka] start_from`.
    pub fn connect(
        config: &Config,
        options: IngestOptions,
        dead_letter_file: DeadLetters,
        until: ReadUntil,
        resume: &[Position],
    ) -> Result<Self> {
        let kafka = &config.kafka;
        let topics = config
            .sources
            .iter()
            .filter_map(|s| {
                let name = s.topic.clone()?;
                Some(s.mapping().map(|mapping| Topic {
                    name,
                    source: s.clone(),
                    mapping,
                }))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|(field, message)| {
                Error::config(format!("a source's fields.{field}"), message)
            })?;
        if topics.is_empty() {
            return Err(Error::Other(
                "no source has a Kafka topic: add `topic = \"…\"` to a [[sources]] entry of the \
                 config"
                    .into(),
            ));
        }
        let health = Arc::new(KafkaHealth::default());
        let resume_at = Arc::new(Mutex::new(
            resume
                .iter()
                .map(|p| ((p.topic.clone(), p.partition), p.next_offset))
                .collect(),
        ));
        let consumer: BaseConsumer<Context> = client::consumer(kafka)
            .create_with_context(Context {
                health: health.clone(),
                assigned: Mutex::new(None),
                resume: resume_at.clone(),
            })
            .map_err(|e| Error::Other(format!("cannot create the Kafka consumer: {e}")))?;
        let dead = DeadLetterTopic::new(kafka, dead_letter_file)?;

        // One decode thread per core: on two cores, decoding then shares them with the
        // polling thread and librdkafka's, which mostly wait.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS);
        let worker = Worker::start(
            workers,
            Decoding::new(options.batch_size, resume_at.clone()),
        )?;
        let mut reader = Reader {
            topics,
            linger: config.ingest.linger.duration(),
            options,
            slots: Vec::new(),
            ready: VecDeque::new(),
            dead,
            stats: IngestStats::default(),
            resume: resume_at,
            worker,
        };
        for t in 0..reader.topics.len() {
            let count = partition_count(&consumer, kafka, &reader.topics[t])?;
            for p in 0..count {
                reader.slot(t, p)?;
            }
        }
        match until {
            ReadUntil::Forever => {
                let names: Vec<&str> = reader.topics.iter().map(|t| t.name.as_str()).collect();
                consumer.subscribe(&names).map_err(|e| {
                    Error::Other(format!("cannot subscribe to {}: {e}", names.join(", ")))
                })?;
            }
            ReadUntil::End => reader.assign_to_end(&consumer, kafka)?,
        }
        let initial_partitions = reader.slots.len();
        Ok(KafkaSource {
            consumer,
            reader,
            until,
            initial_partitions,
            health,
            last_probe: Instant::now(),
        })
    }

    /// Whether the cluster answers; shared, so status can be read while the pipeline runs.
    pub fn health(&self) -> Arc<KafkaHealth> {
        self.health.clone()
    }

    /// A sign of life from the cluster.
    fn alive(&self) {
        if self.health.recover() {
            eprintln!("kafka: the cluster answers again; catching up");
        }
    }

    /// While the cluster is down, asks it now and then whether it is back (a quiet topic
    /// would otherwise give no sign of life).
    fn probe(&mut self) {
        if self.health.is_ready() || self.last_probe.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_probe = Instant::now();
        let topic = self.reader.topics[0].name.as_str();
        if self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(1))
            .is_ok()
        {
            self.alive();
        }
    }

    /// Applies a new group assignment: partitions another member (or nobody) reads stop
    /// holding the watermark back; partitions new to us get a slot.
    fn reassigned(&mut self) -> Result<()> {
        let taken = self
            .consumer
            .context()
            .assigned
            .lock()
            .ok()
            .and_then(|mut a| a.take());
        let Some(assigned) = taken else {
            return Ok(());
        };
        let mut ours = vec![false; self.reader.slots.len()];
        for (topic, partition) in &assigned {
            if let Some(t) = self.reader.topics.iter().position(|x| &x.name == topic) {
                let ix = self.reader.slot(t, *partition)?;
                ours.resize(self.reader.slots.len(), false);
                ours[ix] = true;
            }
        }
        for (ix, ours) in ours.into_iter().enumerate() {
            if !ours && self.reader.slots[ix].progress == Progress::Active {
                self.reader.slots[ix].progress = Progress::Idle;
                self.reader.hand_over(ix)?;
                self.reader
                    .worker
                    .send(Work::Mark(Feed::Idle { partition: ix }))?;
            }
        }
        Ok(())
    }

    /// The end of partition `partition` of some topic was reached (librdkafka does not say
    /// which topic, so each candidate's position is compared with its end).
    fn caught_up(&mut self, partition: i32) -> Result<()> {
        let candidates: Vec<usize> = (0..self.reader.slots.len())
            .filter(|&i| {
                let s = &self.reader.slots[i];
                s.partition == partition && s.progress == Progress::Active
            })
            .collect();
        let positions = match candidates.len() {
            0 => return Ok(()),
            1 => None,
            _ => self.consumer.position().ok(),
        };
        for ix in candidates {
            let slot = &self.reader.slots[ix];
            if let Some(positions) = &positions {
                let topic = &self.reader.topics[slot.topic].name;
                let position = positions
                    .find_partition(topic, partition)
                    .and_then(|e| e.offset().to_raw());
                let end = self
                    .consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(1))
                    .ok()
                    .map(|(_, high)| high);
                match (position, end) {
                    (Some(at), Some(end)) if at >= end => {}
                    _ => continue,
                }
            }
            let then = (self.until == ReadUntil::Forever).then(|| {
                self.reader.slots[ix].progress = Progress::Idle;
                Feed::Idle { partition: ix }
            });
            self.reader.flush(ix, then)?;
        }
        Ok(())
    }
}

impl Drop for KafkaSource {
    /// rdkafka's own drop closes the consumer by polling in steps of 100 ms, so a close
    /// done in a millisecond still took 100; closing here in short steps first leaves its
    /// drop nothing to wait for.
    fn drop(&mut self) {
        if self.consumer.close_queue().is_err() {
            return;
        }
        let deadline = Instant::now() + CALL_TIMEOUT;
        while !self.consumer.closed() && Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(2));
        }
    }
}

fn is_end_of_partition(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
}

/// Partitions of a topic, or an error that says the topic is missing.
fn partition_count(
    consumer: &BaseConsumer<Context>,
    kafka: &KafkaConfig,
    topic: &Topic,
) -> Result<i32> {
    let metadata = consumer
        .fetch_metadata(Some(&topic.name), CALL_TIMEOUT)
        .map_err(|e| {
            Error::Other(format!(
                "cannot reach Kafka at [kafka] brokers = {:?} (for topic `{}` of source `{}`): \
                 {e}; is the broker running?",
                kafka.brokers, topic.name, topic.source.name
            ))
        })?;
    let found = metadata.topics().iter().find(|t| t.name() == topic.name);
    match found {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().len() as i32)
        }
        _ => Err(Error::Other(format!(
            "Kafka topic `{}` (source `{}`) does not exist on {}: create it, or fix the \
             source's `topic`",
            topic.name, topic.source.name, kafka.brokers
        ))),
    }
}

impl Reader {
    /// The slot of a topic's partition, made on first sight (topics can gain partitions).
    fn slot(&mut self, topic: usize, partition: i32) -> Result<usize> {
        if let Some(ix) = self
            .slots
            .iter()
            .position(|s| s.topic == topic && s.partition == partition)
        {
            return Ok(ix);
        }
        let t = &self.topics[topic];
        let decoder = JsonDecoder::new(
            &t.source,
            &t.mapping,
            self.options.catalog.clone(),
            self.options.projection,
        )
        .map_err(|m| Error::config(format!("source `{}`", t.source.name), m))?;
        self.worker.send(Work::Open {
            slot: self.slots.len(),
            decoder: Box::new(decoder),
            topic: t.name.clone(),
            partition,
        })?;
        self.slots.push(Slot {
            topic,
            partition,
            since: None,
            chunk: Chunk::default(),
            end: None,
            progress: Progress::Active,
        });
        Ok(self.slots.len() - 1)
    }

    /// Assigns every partition, from its resume position (else the group's committed
    /// offset, else `start_from`) to the end it has now; partitions with nothing to read
    /// end at once.
    fn assign_to_end(
        &mut self,
        consumer: &BaseConsumer<Context>,
        kafka: &KafkaConfig,
    ) -> Result<()> {
        let resume = self.resume.lock().map(|r| r.clone()).unwrap_or_default();
        let resumed =
            |topic: &str, partition: i32| resume.get(&(topic.to_string(), partition)).copied();
        let mut list = TopicPartitionList::new();
        for slot in &self.slots {
            let topic = &self.topics[slot.topic].name;
            let offset = resumed(topic, slot.partition).map_or(Offset::Stored, Offset::Offset);
            list.add_partition_offset(topic, slot.partition, offset)
                .map_err(|e| Error::Other(format!("cannot assign partitions: {e}")))?;
        }
        let committed = consumer.committed_offsets(list.clone(), CALL_TIMEOUT).ok();
        consumer
            .assign(&list)
            .map_err(|e| Error::Other(format!("cannot assign partitions: {e}")))?;
        for ix in 0..self.slots.len() {
            let (name, partition) = (
                &self.topics[self.slots[ix].topic].name,
                self.slots[ix].partition,
            );
            let (low, high) = consumer
                .fetch_watermarks(name, partition, CALL_TIMEOUT)
                .map_err(|e| {
                    Error::Other(format!(
                        "cannot read the end of `{name}` partition {partition}: {e}"
                    ))
                })?;
            let stored = committed
                .as_ref()
                .and_then(|c| c.find_partition(name, partition))
                .and_then(|e| e.offset().to_raw())
                .filter(|&o| o >= 0);
            let start = resumed(name, partition)
                .or(stored)
                .unwrap_or(match kafka.start_from {
                    StartFrom::Earliest => low,
                    StartFrom::Latest => high,
                });
            self.slots[ix].end = Some(high);
            if start >= high {
                self.slots[ix].progress = Progress::Ended;
                self.worker.send(Work::Mark(Feed::End { partition: ix }))?;
            }
        }
        Ok(())
    }

    /// Takes one message into its partition's chunk, for the worker to decode.
    fn take(&mut self, message: &BorrowedMessage<'_>) -> Result<()> {
        let Some(topic) = self.topics.iter().position(|t| t.name == message.topic()) else {
            return Ok(());
        };
        let ix = self.slot(topic, message.partition())?;
        let offset = message.offset();
        let slot = &mut self.slots[ix];
        if slot.progress == Progress::Ended || slot.end.is_some_and(|end| offset >= end) {
            // Produced after this run started: the next run reads it.
            return Ok(());
        }
        slot.chunk.push(message);
        if slot.progress == Progress::Idle {
            slot.progress = Progress::Active;
        }
        if slot.since.is_none() {
            slot.since = Some(Instant::now());
        }
        if slot.end.is_some_and(|end| offset + 1 >= end) {
            slot.progress = Progress::Ended;
            self.flush(ix, Some(Feed::End { partition: ix }))?;
        } else if slot.chunk.len() >= CHUNK_MESSAGES {
            self.hand_over(ix)?;
        }
        Ok(())
    }

    /// Hands the partition's chunk to the worker.
    fn hand_over(&mut self, ix: usize) -> Result<()> {
        if self.slots[ix].chunk.is_empty() {
            return Ok(());
        }
        let next = Chunk::sized_like(&self.slots[ix].chunk);
        let chunk = std::mem::replace(&mut self.slots[ix].chunk, next);
        self.worker.send(Work::Decode { slot: ix, chunk })
    }

    /// Every chunk to the worker (before the polling thread waits).
    fn hand_over_all(&mut self) -> Result<()> {
        for ix in 0..self.slots.len() {
            self.hand_over(ix)?;
        }
        Ok(())
    }

    /// Has the worker hand on the partition's pending batch, then `then`.
    fn flush(&mut self, ix: usize, then: Option<Feed>) -> Result<()> {
        self.hand_over(ix)?;
        self.slots[ix].since = None;
        self.worker.send(Work::Flush { slot: ix, then })
    }

    /// Takes in one answer of the worker: its dead letters are sent before its feeds can
    /// be handed on (a batch's position may cover the rejected messages).
    fn answer(&mut self, done: Done) -> Result<()> {
        for r in &done.rejected {
            self.dead.send(&Rejected {
                topic: &r.topic,
                partition: r.partition,
                offset: r.offset,
                key: r.key.as_deref(),
                payload: r.payload.as_deref(),
                reason: &r.reason,
            })?;
        }
        self.stats.add(&done.stats);
        self.ready.extend(done.feeds);
        Ok(())
    }

    /// Takes in every answer already there.
    fn collect(&mut self) -> Result<()> {
        while let Some(done) = self.worker.try_done()? {
            self.answer(done)?;
        }
        Ok(())
    }

    /// Takes in every answer still to come.
    fn settle_worker(&mut self) -> Result<()> {
        while self.worker.in_flight() > 0 {
            if let Some(done) = self.worker.wait_done(CALL_TIMEOUT)? {
                self.answer(done)?;
            }
        }
        Ok(())
    }

    /// Flushes batches that have waited `linger`; returns how long until the next is due.
    fn flush_lingering(&mut self) -> Result<Option<Duration>> {
        let mut next: Option<Duration> = None;
        let mut now = None;
        for ix in 0..self.slots.len() {
            let Some(since) = self.slots[ix].since else {
                continue;
            };
            let waited = now.get_or_insert_with(Instant::now).duration_since(since);
            if waited >= self.linger {
                self.flush(ix, None)?;
            } else {
                let left = self.linger - waited;
                next = Some(next.map_or(left, |n| n.min(left)));
            }
        }
        Ok(next)
    }
}

impl LiveSource for KafkaSource {
    fn partitions(&self) -> usize {
        self.initial_partitions
    }

    fn next(&mut self) -> Result<Option<Feed>> {
        loop {
            self.reader.collect()?;
            if let Some(feed) = self.reader.ready.pop_front() {
                return Ok(Some(feed));
            }
            if self.until == ReadUntil::End
                && self
                    .reader
                    .slots
                    .iter()
                    .all(|s| s.progress == Progress::Ended)
            {
                if self.reader.worker.in_flight() > 0 {
                    self.reader.settle_worker()?;
                    continue;
                }
                self.reader.dead.flush(CALL_TIMEOUT)?;
                return Ok(None);
            }
            self.reassigned()?;
            let wait = self
                .reader
                .flush_lingering()?
                .map_or(POLL, |left| left.min(POLL));
            let mut polled = self.consumer.poll(Timeout::After(Duration::ZERO));
            if polled.is_none() {
                // Nothing to read right now: what was read goes to the worker, and its
                // answers are awaited rather than the consumer's next message.
                self.reader.hand_over_all()?;
                if self.reader.worker.in_flight() > 0 {
                    if let Some(done) = self.reader.worker.wait_done(wait)? {
                        self.reader.answer(done)?;
                    }
                    continue;
                }
                polled = self.consumer.poll(Timeout::After(wait));
            }
            let mut quiet = false;
            match polled {
                None => quiet = true,
                Some(Ok(message)) => {
                    self.alive();
                    self.reader.take(&message)?;
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    self.alive();
                    self.caught_up(partition)?;
                }
                Some(Err(e)) if is_end_of_partition(&e) => self.alive(),
                Some(Err(e)) => {
                    quiet = true;
                    if self.health.fail(e.to_string()) {
                        eprintln!("kafka: {e}; retrying (the live map keeps its state)");
                    }
                }
            }
            if quiet {
                // Between messages these wait: letters that failed, a cluster that is down.
                self.reader.dead.settle()?;
                self.probe();
                if self.reader.ready.is_empty() {
                    return Ok(Some(Feed::Quiet));
                }
            }
        }
    }

    fn lag(&self) -> Option<u64> {
        self.health.lag()
    }

    fn stats(&self) -> IngestStats {
        self.reader.stats.clone()
    }

    /// Every partition's lingering batch, handed on now.
    fn drain(&mut self) -> Result<Vec<Feed>> {
        for ix in 0..self.reader.slots.len() {
            self.reader.flush(ix, None)?;
        }
        self.reader.settle_worker()?;
        Ok(self.reader.ready.drain(..).collect())
    }

    /// Dead letters of the messages the checkpoint covers must be delivered first.
    fn before_checkpoint(&mut self) -> Result<()> {
        self.reader.dead.flush(CALL_TIMEOUT)
    }

    /// Commits the checkpoint's positions to the group, for lag monitoring (a restart
    /// resumes from the checkpoint, which a commit may lag).
    fn after_checkpoint(&mut self, positions: &[Position]) {
        let mut list = TopicPartitionList::new();
        for p in positions {
            let _ = list.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset));
        }
        if self.until == ReadUntil::Forever
            && let Err(e) = self.consumer.commit(&list, CommitMode::Async)
        {
            eprintln!("kafka: committing offsets failed ({e}); the checkpoint has them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::total_lag;

    #[test]
    fn lag_sums_the_known_partitions() {
        assert_eq!(total_lag([(0, 5), (1, 0), (2, 7)]), Some(12));
        // The unassigned pseudo-partition and partitions without a known lag are left out.
        assert_eq!(total_lag([(-1, 40), (0, -1), (1, 3)]), Some(3));
        assert_eq!(total_lag([(-1, 40), (0, -1)]), None);
        assert_eq!(total_lag([]), None);
    }
}
