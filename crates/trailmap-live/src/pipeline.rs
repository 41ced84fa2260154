//! The running pipeline: a source thread, the stitcher task and one thread per shard, joined
//! by bounded channels.
//!
//! ```text
//!  source thread ──Feed──> stitcher task ──ShardMsg──> shard thread × N ──> live map
//!      (blocking reads)     identity, watermark,         sessions, retractions,
//!                           lateness, routing            time-bucketed counts
//! ```
//!
//! Every channel is bounded: when the shards fall behind, the stitcher waits on them, the
//! source waits on the stitcher, and reading pauses, so memory stays bounded whatever the
//! input rate. Queries are messages too, answered by each shard between two batches, so a
//! query sees a consistent state per shard and never blocks ingest for long.

use crate::counts::{ByValue, FunnelTrend, LiveCounts, LiveMap, bucket_of, merge_by_value};
use crate::report::MapReport;
use crate::shard::{LiveEvent, Shard, ShardConfig, ShardStats};
use crate::snapshot::{self, PipelineState};
use crate::source::{Cut, Feed, LiveSource, StoredState};
use crate::stitch::{Handoff, LateEvent, SourceCounts, StitchStats, Stitcher};
use crate::timeline::{CustomerTimeline, TimelineMiss};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use trailmap_ingest::IngestStats;
use trailmap_mine::{DurationHistogram, FunnelSpec};
use trailmap_model::IdentityKind;
use trailmap_model::config::{Config, JourneyConfig};
use trailmap_model::time::unix_micros;
use trailmap_model::{Error, Result};
use trailmap_sessionize::Attribute;

/// How the pipeline is laid out.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Shards (threads) customers are spread over; default: one fewer than the cores, at
    /// least one.
    pub shards: usize,
    /// Messages in flight on each channel before the sender waits (a batch is two on a
    /// shard's channel: its events, then the watermark after it).
    pub channel_batches: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            // The stitcher is a busy thread of its own: a shard per core besides it keeps
            // every thread on a core. One per core put three busy threads on two cores, and
            // time-slicing them (each evicting the other's cache) cost more than the second
            // shard gave: on 2 cores, 1 shard ran the whole-map pipeline in 0.32-0.44 s
            // (median of 8) where 2 took 0.42-0.52 s, alternating, and the built-in config
            // in 0.55 s against 0.70-0.89 s.
            shards: std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1).max(1)),
            // The stitcher hands each batch to every shard in turn: with room for only a
            // couple of batches, waiting on a shard that is momentarily behind starved the
            // others, and a core sat idle a third of the time. Sixteen messages is about a
            // hundred thousand events buffered in all, at most a few tens of milliseconds.
            channel_batches: 16,
        }
    }
}

enum ShardMsg {
    Events {
        events: Vec<(u32, LiveEvent)>,
        /// When the oldest record of their batch reached the source.
        arrived: Instant,
    },
    Merge {
        from: u32,
        into: u32,
    },
    Evict {
        customer: u32,
        reply: oneshot::Sender<Vec<LiveEvent>>,
    },
    Adopt {
        customer: u32,
        events: Vec<LiveEvent>,
    },
    Watermark(i64),
    Window {
        from: i64,
        to: i64,
        segment: Option<u32>,
        reply: oneshot::Sender<LiveCounts>,
    },
    Trend {
        from: i64,
        to: i64,
        as_of: i64,
        segment: Option<u32>,
        reply: oneshot::Sender<FunnelTrend>,
    },
    /// Journeys per segment value.
    Segments {
        reply: oneshot::Sender<BTreeMap<u32, i64>>,
    },
    Funnel {
        funnel: usize,
        minutes: Vec<Range<i64>>,
        as_of: i64,
        by_value: bool,
        reply: oneshot::Sender<ByValue>,
    },
    Status {
        reply: oneshot::Sender<ShardStatus>,
    },
    /// The shard's state, as of the messages before this one.
    Snapshot {
        reply: oneshot::Sender<std::result::Result<Vec<u8>, String>>,
    },
}

#[derive(Debug, Clone, Default)]
struct ShardStatus {
    stats: ShardStats,
    open_customers: usize,
    retained_events: usize,
    state_bytes: usize,
    latencies: Latencies,
}

/// What a shard measures of the time events take to reach the map (µs).
#[derive(Debug, Clone, Default)]
struct Latencies {
    /// Per event: from reaching trailmap to counted.
    freshness: DurationHistogram,
    /// Per micro-batch (its part on this shard): from reaching the pipeline to applied.
    batches: DurationHistogram,
}

impl ShardStatus {
    fn of(shard: &Shard, latencies: &Latencies) -> ShardStatus {
        ShardStatus {
            stats: shard.stats,
            open_customers: shard.open_customers(),
            retained_events: shard.retained_events(),
            state_bytes: shard.state_bytes(),
            latencies: latencies.clone(),
        }
    }
}

/// What the source last said, for status queries.
#[derive(Debug, Clone, Default)]
struct SourceView {
    stats: IngestStats,
    checkpointed_at: Option<SystemTime>,
    lag: Option<u64>,
}

impl SourceView {
    fn of(source: &dyn LiveSource) -> SourceView {
        SourceView {
            stats: source.stats(),
            checkpointed_at: source.checkpointed_at(),
            lag: source.lag(),
        }
    }

    /// Fills the source's part of a status, after the stitcher's (rejections join the
    /// per-source counts, sources whose every record was rejected included).
    fn fill(&self, status: &mut LiveStatus) {
        status.ingest = self.stats.clone();
        status.checkpointed_at = self.checkpointed_at.map(unix_micros);
        status.lag = self.lag;
        for (source, &n) in &self.stats.rejected_by_source {
            match status.sources.iter_mut().find(|s| &s.source == source) {
                Some(s) => s.rejected = n,
                None => status.sources.push(SourceCounts {
                    source: source.clone(),
                    rejected: n,
                    ..SourceCounts::default()
                }),
            }
        }
    }
}

/// What the stitcher last said, for status queries.
#[derive(Debug, Clone, Default)]
struct StitchView {
    watermark: Option<i64>,
    newest: Option<i64>,
    stats: StitchStats,
    sources: Vec<SourceCounts>,
}

impl StitchView {
    fn of(st: &Stitcher) -> StitchView {
        let watermark = st.watermark();
        StitchView {
            watermark: (watermark > i64::MIN).then_some(watermark),
            newest: st.newest(),
            stats: st.stats,
            sources: st.by_source(),
        }
    }

    fn fill(&self, status: &mut LiveStatus) {
        status.watermark = self.watermark;
        status.newest = self.newest;
        status.stitch = self.stats;
        status.sources = self.sources.clone();
    }
}

/// How long events took from reaching the source (the oldest record of their batch) to
/// being counted in the live map, over every event so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Freshness {
    pub events: u64,
    pub p50_micros: Option<i64>,
    pub p99_micros: Option<i64>,
    pub max_micros: Option<i64>,
}

impl Freshness {
    fn of(h: &DurationHistogram) -> Freshness {
        let q = |q: f64| h.quantile(q).map(|us| us.round() as i64);
        Freshness {
            events: h.count(),
            p50_micros: q(0.5),
            p99_micros: q(0.99),
            max_micros: q(1.0),
        }
    }
}

/// The pipeline's state, for `/readyz`, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveStatus {
    pub watermark: Option<i64>,
    /// The newest event time seen: the data's "now", as of which funnel journeys are
    /// maturing (the watermark runs past it once the input has ended).
    pub newest: Option<i64>,
    /// What the source read: records, events, identity links, rejections.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub ingest: IngestStats,
    pub stitch: StitchStats,
    /// Events and late events per source.
    pub sources: Vec<SourceCounts>,
    pub shards: ShardStats,
    /// Customers with sessions that can still change.
    pub open_customers: usize,
    /// Events held for those sessions.
    pub retained_events: usize,
    /// Bytes held for open sessions (customer table, events, expiry queue).
    pub state_bytes: usize,
    pub freshness: Freshness,
    /// When everything read was last durable (a store checkpoint), Unix µs; `None` for a
    /// source that stores nothing.
    pub checkpointed_at: Option<i64>,
    /// Messages waiting in the broker beyond what is durable (Kafka's consumer lag, from
    /// librdkafka's statistics every second); `None` for other sources.
    pub lag: Option<u64>,
    /// What `freshness` summarizes (µs), for metrics.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub freshness_histogram: DurationHistogram,
    /// Per micro-batch and shard: from reaching the pipeline to applied in the shard (µs),
    /// for metrics (`trailmap_batch_latency_seconds`).
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub batch_latency_histogram: DurationHistogram,
}

/// Names the live counts refer to by id.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub touchpoints: Vec<String>,
    pub stages: Vec<Option<String>>,
    /// Configured journeys, in `LiveCounts::funnels` order.
    pub funnels: Vec<(String, JourneyConfig)>,
    /// Values of the attribute alert breakdowns use, by id (`LiveCounts::funnel_values`);
    /// id 0 is events without it.
    pub values: Vec<String>,
}

/// What a finished run leaves.
#[derive(Debug, Clone)]
pub struct LiveResult {
    pub map: LiveMap,
    /// The map per segment value (by id, `names.values`), when segments are kept.
    pub segments: BTreeMap<u32, LiveMap>,
    pub names: Names,
    pub status: LiveStatus,
    /// Events that arrived beyond the lateness horizon.
    pub late: Vec<LateEvent>,
}

/// A running pipeline.
pub struct LiveHandle {
    shards: Vec<mpsc::Sender<ShardMsg>>,
    names: Arc<RwLock<Names>>,
    stitch: Arc<RwLock<StitchView>>,
    stitcher: Arc<Mutex<Stitcher>>,
    stitcher_task: JoinHandle<Result<Vec<LateEvent>>>,
    /// Each shard's state, handed back by its thread when its channel closes.
    shard_tasks: Vec<oneshot::Receiver<(Shard, Latencies)>>,
    ingest: Arc<Mutex<SourceView>>,
    stop: Arc<AtomicBool>,
    /// `[sessions] allowed_lateness`, µs.
    lateness: i64,
    /// `[segments] by`, when the map is kept per segment.
    segmented_by: Option<String>,
}

/// Resolves configured journeys against the pipeline's fixed touchpoint ids.
fn funnel_specs(config: &Config, touchpoints: &[String]) -> Result<Vec<FunnelSpec>> {
    config
        .journeys
        .iter()
        .map(|(name, journey)| {
            FunnelSpec::resolve(journey, touchpoints, i64::MAX)
                .map(|(spec, _)| spec)
                .map_err(|e| Error::Other(format!("journey `{name}`: {e}")))
        })
        .collect()
}

/// The stitcher, shards and late events of the state the source kept at its last cut,
/// when it fits this run (the source then skips what it covers); `None`, with a word on
/// stderr when one was there, to start afresh and replay everything stored.
fn restore(
    source: &mut dyn LiveSource,
    fingerprint: &str,
    shard_config: &ShardConfig,
    lateness: i64,
) -> Option<(Stitcher, Vec<Shard>, Vec<LateEvent>)> {
    // The store blocks on a runtime of its own, which cannot run on this one's thread.
    let stored = std::thread::scope(|s| s.spawn(|| source.stored_state()).join())
        .ok()
        .flatten()?;
    let partitions = source.partitions();
    let restored = PipelineState::decode(&stored.bytes, fingerprint).and_then(|state| {
        Ok((
            state.stitcher(partitions, lateness)?,
            state.shards(shard_config)?,
            state.late,
        ))
    });
    match restored {
        Ok(restored) => {
            source.restored(stored.through);
            Some(restored)
        }
        Err(why) => {
            eprintln!(
                "store: the kept live state is not used ({why}); replaying every stored segment"
            );
            None
        }
    }
}

/// Starts the pipeline on the current tokio runtime.
pub fn start(
    config: &Config,
    mut source: Box<dyn LiveSource>,
    options: &PipelineOptions,
) -> Result<LiveHandle> {
    if config.journeys.len() > 64 {
        return Err(Error::Other(format!(
            "{} journeys are configured; the live pipeline follows at most 64",
            config.journeys.len()
        )));
    }
    let sessions = &config.sessions;
    let lateness = sessions.allowed_lateness.micros();
    let steps: Vec<&str> = config
        .journeys
        .values()
        .flat_map(|j| j.steps.iter().chain(&j.exclusions).map(String::as_str))
        .collect();
    let shards = options.shards.max(1);
    let mut stitcher = Stitcher::new(shards, source.partitions(), lateness, &steps);
    // Journeys that alert rules break down are kept by the value of one attribute.
    if let Some(by) = config.breakdown_attribute()? {
        stitcher.keep_attribute(Attribute::parse(by));
    }
    let timeline = &config.timeline;
    stitcher.keep_timelines(timeline.events, timeline.retention.micros());
    let by_value = config
        .journeys
        .keys()
        .map(|name| {
            config
                .alerts
                .values()
                .any(|r| r.breakdown.is_some() && &r.journey == name)
        })
        .collect();
    let segmented_by = Some(config.segments.by.trim()).filter(|by| !by.is_empty());
    let shard_config = ShardConfig {
        gap: sessions.gap.micros(),
        max_duration: sessions.max_duration.micros(),
        lateness,
        funnels: funnel_specs(config, stitcher.touchpoints())?,
        by_value,
        segmented: segmented_by.is_some(),
    };
    // Started from the state kept at the source's last cut when it fits, else afresh.
    let fingerprint = snapshot::fingerprint(config, shards)?;
    let (stitcher, shard_states, late_before) =
        match restore(source.as_mut(), &fingerprint, &shard_config, lateness) {
            Some(restored) => restored,
            None => {
                let fresh = (0..shards).map(|_| Shard::new(shard_config.clone()));
                (stitcher, fresh.collect(), Vec::new())
            }
        };
    let names = Arc::new(RwLock::new(Names {
        touchpoints: stitcher.touchpoints().to_vec(),
        stages: stitcher.stages().to_vec(),
        funnels: config
            .journeys
            .iter()
            .map(|(n, j)| (n.clone(), j.clone()))
            .collect(),
        values: stitcher.attribute_values(),
    }));
    // A restored stitcher has a watermark and counts already.
    let stitch = Arc::new(RwLock::new(StitchView::of(&stitcher)));

    let capacity = options.channel_batches.max(1);
    let mut senders = Vec::with_capacity(shards);
    let mut shard_tasks = Vec::with_capacity(shards);
    for (i, shard) in shard_states.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(capacity);
        senders.push(tx);
        // Shards are CPU-bound loops: each runs on a thread of its own, which the OS
        // schedules beside the stitcher, rather than as a task among the runtime's workers
        // (there a shard woken by the stitcher waited in that worker's LIFO slot, which the
        // other worker may not steal from, while a core sat idle). A plain thread, not the
        // runtime's blocking pool: dropping a runtime waits for its blocking tasks, and a
        // shard ends only once every sender is gone, which may outlive the runtime.
        let (done, shard_task) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("trailmap-shard-{i}"))
            .spawn(move || {
                let _ = done.send(run_shard(shard, rx));
            })
            .map_err(|e| Error::Other(format!("cannot start a shard thread: {e}")))?;
        shard_tasks.push(shard_task);
    }

    let (feed_tx, mut feed_rx) = mpsc::channel::<Result<Feed>>(capacity);
    let ingest = Arc::new(Mutex::new(SourceView::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (ingest_w, stop_r) = (ingest.clone(), stop.clone());
    std::thread::Builder::new()
        .name("trailmap-source".into())
        .spawn(move || read_source(source, feed_tx, &ingest_w, &stop_r))
        .map_err(|e| Error::Other(format!("cannot start the source thread: {e}")))?;

    let to_shards = senders.clone();
    let (names_w, stitch_w) = (names.clone(), stitch.clone());
    // Shared with the handle for timeline lookups: the task holds the lock only for the
    // synchronous part of a batch, never across a send.
    let watermark_before = stitcher.watermark();
    let stitcher = Arc::new(Mutex::new(stitcher));
    let stitcher_w = stitcher.clone();
    let stitcher_task = tokio::spawn(async move {
        let mut late = late_before;
        // The shards have the watermark their state was kept with.
        let mut sent_watermark = watermark_before;
        while let Some(feed) = feed_rx.recv().await {
            let feed = match feed? {
                Feed::Cut(cut) => {
                    let taken = lock_stitcher(&stitcher_w)?.snapshot();
                    snapshot_at(cut, taken, &late, &to_shards, &fingerprint).await;
                    continue;
                }
                feed => feed,
            };
            let routed = {
                let mut st = lock_stitcher(&stitcher_w)?;
                match feed {
                    // Taken above, before the lock.
                    Feed::Cut(_) => None,
                    Feed::Batch {
                        partition,
                        batch,
                        arrived,
                        ..
                    } => {
                        let routed = st.push(partition, &batch).map_err(Error::Other)?;
                        publish_names(&st, &names_w);
                        Some((routed, arrived))
                    }
                    Feed::Idle { partition } => {
                        st.idle_partition(partition);
                        None
                    }
                    Feed::End { partition } => {
                        st.end_partition(partition);
                        None
                    }
                    Feed::Quiet => None,
                }
            };
            if let Some((routed, arrived)) = routed {
                for h in routed.handoffs {
                    hand_off(&to_shards, h).await?;
                }
                for (shard, events) in routed.events.into_iter().enumerate() {
                    if !events.is_empty() {
                        send(&to_shards[shard], ShardMsg::Events { events, arrived }).await?;
                    }
                }
                late.extend(routed.late);
            }
            let watermark = lock_stitcher(&stitcher_w)?.watermark();
            if watermark > sent_watermark {
                sent_watermark = watermark;
                for tx in &to_shards {
                    send(tx, ShardMsg::Watermark(watermark)).await?;
                }
            }
            // Published once the shards have the events: whoever reads the watermark here
            // (alert evaluations) finds them counted.
            let view = StitchView::of(&*lock_stitcher(&stitcher_w)?);
            if let Ok(mut s) = stitch_w.write() {
                *s = view;
            }
        }
        Ok(late)
    });

    Ok(LiveHandle {
        shards: senders,
        names,
        stitch,
        stitcher,
        stitcher_task,
        shard_tasks,
        ingest,
        stop,
        lateness,
        segmented_by: segmented_by.map(str::to_string),
    })
}

/// Takes the pipeline's state at a cut: the stitcher's (`taken`, as it read the cut) and
/// then each shard's, asked behind everything routed before the cut. The shards' parts are
/// awaited on a task of their own, so the stitcher goes on routing meanwhile (each shard
/// pauses while it encodes its part); the whole is handed to the source to keep. A state
/// not taken is only said: the stored segments remain the truth.
async fn snapshot_at(
    cut: Cut,
    taken: std::result::Result<Option<Vec<u8>>, String>,
    late: &[LateEvent],
    shards: &[mpsc::Sender<ShardMsg>],
    fingerprint: &str,
) {
    let stitcher = match taken {
        Ok(Some(bytes)) => bytes,
        // Some input has ended: nothing a restart should start from.
        Ok(None) => return,
        Err(why) => {
            eprintln!("store: the live state was not kept ({why})");
            return;
        }
    };
    let mut replies = Vec::with_capacity(shards.len());
    for tx in shards {
        let (reply, rx) = oneshot::channel();
        if send(tx, ShardMsg::Snapshot { reply }).await.is_err() {
            return;
        }
        replies.push(rx);
    }
    let (late, fingerprint) = (late.to_vec(), fingerprint.to_string());
    tokio::spawn(async move {
        let mut parts = Vec::with_capacity(replies.len());
        for rx in replies {
            match rx.await {
                Ok(Ok(bytes)) => parts.push(bytes),
                Ok(Err(why)) => {
                    eprintln!("store: the live state was not kept ({why})");
                    return;
                }
                // The pipeline stopped meanwhile.
                Err(_) => return,
            }
        }
        let state = PipelineState {
            fingerprint,
            stitcher,
            late,
            shards: parts,
        };
        match state.encode() {
            // Full: the source has not stored the last one yet. This one is skipped rather
            // than waited for: a later cut brings a newer state, and meanwhile a restart
            // only replays a little more.
            Ok(bytes) => {
                let _ = cut.keep.try_send(StoredState {
                    through: cut.through,
                    bytes,
                });
            }
            Err(e) => eprintln!("store: the live state was not kept ({e})"),
        }
    });
}

fn read_source(
    mut source: Box<dyn LiveSource>,
    out: mpsc::Sender<Result<Feed>>,
    ingest: &Mutex<SourceView>,
    stop: &AtomicBool,
) {
    loop {
        if stop.load(Ordering::Relaxed) {
            // What was read is counted; what the source still holds back goes in too.
            let held = source.drain();
            if let Ok(mut s) = ingest.lock() {
                *s = SourceView::of(source.as_ref());
            }
            match held {
                Ok(feeds) => {
                    for feed in feeds {
                        if out.blocking_send(Ok(feed)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = out.blocking_send(Err(e));
                }
            }
            return;
        }
        let next = source.next();
        if let Ok(mut s) = ingest.lock() {
            *s = SourceView::of(source.as_ref());
        }
        let next = match next {
            Ok(Some(Feed::Quiet)) => continue,
            Ok(Some(feed)) => Ok(feed),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = next.is_err();
        // A closed channel means the pipeline stopped: nothing left to read for.
        if out.blocking_send(next).is_err() || failed {
            return;
        }
    }
}

async fn send(tx: &mpsc::Sender<ShardMsg>, msg: ShardMsg) -> Result<()> {
    tx.send(msg)
        .await
        .map_err(|_| Error::Other("a shard of the live pipeline stopped".into()))
}

async fn hand_off(shards: &[mpsc::Sender<ShardMsg>], handoff: Handoff) -> Result<()> {
    match handoff {
        Handoff::Merge { shard, from, into } => {
            send(&shards[shard], ShardMsg::Merge { from, into }).await
        }
        Handoff::Move {
            from_shard,
            to_shard,
            from,
            into,
        } => {
            let (reply, events) = oneshot::channel();
            send(
                &shards[from_shard],
                ShardMsg::Evict {
                    customer: from,
                    reply,
                },
            )
            .await?;
            let events = events
                .await
                .map_err(|_| Error::Other("a shard of the live pipeline stopped".into()))?;
            send(
                &shards[to_shard],
                ShardMsg::Adopt {
                    customer: into,
                    events,
                },
            )
            .await
        }
    }
}

fn run_shard(mut shard: Shard, mut rx: mpsc::Receiver<ShardMsg>) -> (Shard, Latencies) {
    let mut latencies = Latencies::default();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            ShardMsg::Events { events, arrived } => {
                // In arrival order, one push per run of a customer's events: each customer's
                // events keep their order, and consecutive events share minutes (a sort by
                // customer cost a sort per batch and scattered them in time, while a batch
                // holds mostly one event per customer).
                let mut buf = Vec::new();
                for run in events.chunk_by(|a, b| a.0 == b.0) {
                    buf.clear();
                    buf.extend(run.iter().map(|&(_, e)| e));
                    shard.push(run[0].0, &buf);
                }
                let took = Instant::now().saturating_duration_since(arrived);
                let took = i64::try_from(took.as_micros()).unwrap_or(i64::MAX);
                latencies.freshness.record_n(took, events.len() as u64);
                latencies.batches.record(took);
            }
            ShardMsg::Merge { from, into } => shard.merge(from, into),
            ShardMsg::Evict { customer, reply } => {
                let _ = reply.send(shard.evict(customer));
            }
            ShardMsg::Adopt { customer, events } => shard.adopt(customer, &events),
            ShardMsg::Watermark(w) => shard.advance(w),
            ShardMsg::Window {
                from,
                to,
                segment,
                reply,
            } => {
                let _ = reply.send(shard.window(from, to, segment));
            }
            ShardMsg::Trend {
                from,
                to,
                as_of,
                segment,
                reply,
            } => {
                let _ = reply.send(shard.map_of(segment).funnel_trend(from, to, as_of));
            }
            ShardMsg::Segments { reply } => {
                let _ = reply.send(shard.segments().map(|(v, m)| (v, m.journeys())).collect());
            }
            ShardMsg::Funnel {
                funnel,
                minutes,
                as_of,
                by_value,
                reply,
            } => {
                let levels = shard
                    .map()
                    .funnel_levels_by(funnel, &minutes, as_of, by_value);
                let _ = reply.send(levels);
            }
            ShardMsg::Status { reply } => {
                let _ = reply.send(ShardStatus::of(&shard, &latencies));
            }
            ShardMsg::Snapshot { reply } => {
                let _ = reply.send(shard.snapshot());
            }
        }
    }
    (shard, latencies)
}

fn lock_stitcher(stitcher: &Mutex<Stitcher>) -> Result<std::sync::MutexGuard<'_, Stitcher>> {
    stitcher
        .lock()
        .map_err(|_| Error::Other("the stitcher failed while holding its lock".into()))
}

/// Publishes new touchpoints, a stage learnt for one known before its first event (funnel
/// steps are named at start, without their stage), and new breakdown values.
fn publish_names(st: &Stitcher, names: &RwLock<Names>) {
    let staged = st.stages().iter().filter(|s| s.is_some()).count();
    let known = names.read().map_or((0, 0, 0), |n| {
        let staged = n.stages.iter().filter(|s| s.is_some()).count();
        (n.touchpoints.len(), staged, n.values.len())
    });
    if (st.touchpoints().len(), staged, st.attribute_value_count()) != known
        && let Ok(mut n) = names.write()
    {
        n.touchpoints = st.touchpoints().to_vec();
        n.stages = st.stages().to_vec();
        n.values = st.attribute_values();
    }
}

fn stopped() -> Error {
    Error::Other("the live pipeline has stopped".into())
}

impl LiveHandle {
    /// Asks every shard the question `ask` builds around a reply channel and merges the
    /// answers: each shard answers between two batches, from a consistent state.
    async fn gather<T: Default>(
        &self,
        ask: impl Fn(oneshot::Sender<T>) -> ShardMsg,
        merge: impl Fn(&mut T, &T),
    ) -> Result<T> {
        let mut replies = Vec::with_capacity(self.shards.len());
        for tx in &self.shards {
            let (reply, rx) = oneshot::channel();
            send(tx, ask(reply)).await?;
            replies.push(rx);
        }
        let mut sum = T::default();
        for rx in replies {
            merge(&mut sum, &rx.await.map_err(|_| stopped())?);
        }
        Ok(sum)
    }

    /// Counts of events with time in `[from, to)` (µs), over all shards.
    pub async fn window(&self, from: i64, to: i64) -> Result<LiveCounts> {
        self.window_of(from, to, None).await
    }

    /// The same, of one segment value (by id; `None`: everything).
    pub async fn window_of(&self, from: i64, to: i64, segment: Option<u32>) -> Result<LiveCounts> {
        self.gather(
            |reply| ShardMsg::Window {
                from,
                to,
                segment,
                reply,
            },
            LiveCounts::merge,
        )
        .await
    }

    /// Every funnel's journeys that entered between `from` and `to` by day, maturing as of
    /// minute `as_of` ([`LiveMap::funnel_trend`]), of one segment or all, over all shards.
    pub async fn funnel_trend(
        &self,
        from: i64,
        to: i64,
        as_of: i64,
        segment: Option<u32>,
    ) -> Result<FunnelTrend> {
        self.gather(
            |reply| ShardMsg::Trend {
                from,
                to,
                as_of,
                segment,
                reply,
            },
            FunnelTrend::merge,
        )
        .await
    }

    /// Whether the map is kept per segment (`[segments] by`), and by what.
    pub fn segmented_by(&self) -> Option<&str> {
        self.segmented_by.as_deref()
    }

    /// Segment values with their journeys (sessions), most first: what `segment=` takes.
    pub async fn segments(&self) -> Result<Vec<(String, i64)>> {
        let journeys = self
            .gather(
                |reply| ShardMsg::Segments { reply },
                |sum: &mut BTreeMap<u32, i64>, part| {
                    for (&v, &n) in part {
                        *sum.entry(v).or_default() += n;
                    }
                },
            )
            .await?;
        let names = self.names();
        let mut list: Vec<(String, i64)> = journeys
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(v, n)| (names.values.get(v as usize).cloned().unwrap_or_default(), n))
            .collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(list)
    }

    /// Funnel `funnel`'s journeys that entered in `minutes`, maturing as of minute `as_of`,
    /// whole or by breakdown value ([`LiveMap::funnel_levels_by`]), over all shards.
    pub async fn funnel_levels(
        &self,
        funnel: usize,
        minutes: Vec<Range<i64>>,
        as_of: i64,
        by_value: bool,
    ) -> Result<ByValue> {
        self.gather(
            |reply| ShardMsg::Funnel {
                funnel,
                minutes: minutes.clone(),
                as_of,
                by_value,
                reply,
            },
            merge_by_value,
        )
        .await
    }

    /// The latest touchpoints of the customer `identifier` belongs to (looked up as
    /// `kind`, or as every kind in turn), the last `limit` of them, or the last `limit`
    /// before the latest `before` touchpoint ("what did they try before the ticket?").
    pub fn timeline(
        &self,
        identifier: &str,
        kind: Option<IdentityKind>,
        before: Option<&str>,
        limit: usize,
    ) -> std::result::Result<CustomerTimeline, TimelineMiss> {
        let st = lock_stitcher(&self.stitcher).map_err(|e| TimelineMiss::Stopped(e.to_string()))?;
        CustomerTimeline::of(&st, identifier, kind, before, limit)
    }

    /// The newest event time seen (µs): the data's "now".
    pub fn newest(&self) -> Option<i64> {
        self.stitch.read().ok().and_then(|s| s.newest)
    }

    /// Event time up to which the counts are complete (µs): nothing that could still
    /// change them can arrive before it any more (the watermark less the lateness
    /// horizon: slower partitions and late events have had their chance), or the newest
    /// event once the input has ended. What decisions that must not be taken back (alert
    /// evaluations) wait for.
    pub fn complete_until(&self) -> Option<i64> {
        let view = self.stitch.read().ok()?;
        let newest = view.newest?;
        match view.watermark {
            Some(i64::MAX) => Some(newest),
            Some(w) => Some(newest.min(w.saturating_sub(self.lateness))),
            None => None,
        }
    }

    pub async fn status(&self) -> Result<LiveStatus> {
        let mut status = LiveStatus::default();
        if let Ok(s) = self.stitch.read() {
            s.fill(&mut status);
        }
        if let Ok(s) = self.ingest.lock() {
            s.fill(&mut status);
        }
        for tx in &self.shards {
            let (reply, rx) = oneshot::channel();
            send(tx, ShardMsg::Status { reply }).await?;
            let s = rx.await.map_err(|_| stopped())?;
            add_shard(&mut status, &s);
        }
        status.freshness = Freshness::of(&status.freshness_histogram);
        Ok(status)
    }

    /// The map with names over the last `span` µs of event time ending at the newest event
    /// (`None`: everything), funnel maturity as of that newest event: what the API, SQL and
    /// the dashboard show.
    pub async fn report(&self, span: Option<i64>) -> Result<MapReport> {
        self.report_of(span, None).await
    }

    /// The same, of one segment value (`segment=mobile`): the sessions whose first event
    /// has it. A value not seen (yet) has an empty map; without segments kept it is an
    /// error that says how to keep them.
    pub async fn report_of(&self, span: Option<i64>, segment: Option<&str>) -> Result<MapReport> {
        let names = self.names();
        let segment = match segment {
            None => None,
            Some(_) if self.segmented_by.is_none() => {
                return Err(Error::Other(
                    "segments are not kept live; set [segments] by = \"device\" (or another attribute) in the config".into(),
                ));
            }
            Some(value) => Some(
                names
                    .values
                    .iter()
                    .position(|v| v == value)
                    .map_or(u32::MAX, |v| v as u32),
            ),
        };
        let newest = self.newest();
        let (from, to) = match (span, newest) {
            (_, None) => (0, 0),
            (None, Some(_)) => (i64::MIN, i64::MAX),
            (Some(span), Some(newest)) => (newest.saturating_sub(span), newest.saturating_add(1)),
        };
        let counts = self.window_of(from, to, segment).await?;
        let mut report = MapReport::new(&counts, &names, newest);
        if let Some(newest) = newest {
            let trend = self
                .funnel_trend(from, to, bucket_of(newest), segment)
                .await?;
            report.set_trend(&trend);
        }
        Ok(report)
    }

    /// Whether the source has ended and the stitcher has routed all of it (or failed):
    /// [`finish`](Self::finish) then returns without waiting for input.
    pub fn input_ended(&self) -> bool {
        self.stitcher_task.is_finished()
    }

    /// Stops reading: the source is dropped at its next step, and [`finish`](Self::finish)
    /// then counts what was read (for a source that never ends, like Kafka).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Names of the ids in the counts, as of now.
    pub fn names(&self) -> Names {
        self.names.read().map(|n| n.clone()).unwrap_or_default()
    }

    /// Waits for the source to end and every event to be counted, then closes the sessions
    /// still open (the input has ended, so the watermark is past everything).
    pub async fn finish(self) -> Result<LiveResult> {
        let LiveHandle {
            shards,
            names,
            stitch,
            stitcher: _,
            stitcher_task,
            shard_tasks,
            ingest,
            stop: _,
            lateness: _,
            segmented_by: _,
        } = self;
        let late = stitcher_task
            .await
            .map_err(|e| Error::Other(format!("the stitcher failed: {e}")))?;
        // Even after an error, shards are drained so the tasks end.
        for tx in &shards {
            let _ = tx.send(ShardMsg::Watermark(i64::MAX)).await;
        }
        drop(shards);
        let mut status = LiveStatus::default();
        if let Ok(s) = stitch.read() {
            s.fill(&mut status);
        }
        if let Ok(s) = ingest.lock() {
            s.fill(&mut status);
        }
        let mut wholes = Vec::with_capacity(shard_tasks.len());
        let mut of_segments: BTreeMap<u32, Vec<LiveMap>> = BTreeMap::new();
        for task in shard_tasks {
            let (shard, latencies) = task.await.map_err(|_| {
                Error::Other("a shard failed: its thread ended without its state".into())
            })?;
            add_shard(&mut status, &ShardStatus::of(&shard, &latencies));
            // Maps are taken, not copied.
            let (whole, segments) = shard.into_maps();
            wholes.push(whole);
            for (v, m) in segments {
                of_segments.entry(v).or_default().push(m);
            }
        }
        // Summing is CPU work of its own (on two threads for large maps): off the async
        // workers, which other tasks (the HTTP server's) share.
        let (map, segments) = tokio::task::spawn_blocking(move || {
            let map = LiveMap::sum(wholes);
            let segments: BTreeMap<u32, LiveMap> = of_segments
                .into_iter()
                .map(|(v, maps)| (v, LiveMap::sum(maps)))
                .collect();
            (map, segments)
        })
        .await
        .map_err(|e| Error::Other(format!("summing the shards' maps failed: {e}")))?;
        status.freshness = Freshness::of(&status.freshness_histogram);
        let late = late?;
        let names = names.read().map(|n| n.clone()).unwrap_or_default();
        Ok(LiveResult {
            map,
            segments,
            names,
            status,
            late,
        })
    }
}

/// Adds a shard's status in (the caller summarizes the merged freshness once, at the end).
fn add_shard(status: &mut LiveStatus, s: &ShardStatus) {
    status.freshness_histogram.merge(&s.latencies.freshness);
    status.batch_latency_histogram.merge(&s.latencies.batches);
    status.shards.events += s.stats.events;
    status.shards.corrected += s.stats.corrected;
    status.shards.merged += s.stats.merged;
    status.shards.sessions_final += s.stats.sessions_final;
    status.open_customers += s.open_customers;
    status.retained_events += s.retained_events;
    status.state_bytes += s.state_bytes;
}
