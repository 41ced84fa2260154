//! The live pipeline: events in as they happen, the journey map always current.
//!
//! Batch and live share the code that decides what a journey is: batches are read by the
//! same [`JourneyBuilder`](trailmap_sessionize::JourneyBuilder) as batch import, sessions are
//! cut by the same rule ([`session_starts`](trailmap_sessionize::session_starts)), funnel
//! levels come from the same [`Funnel`](trailmap_mine::Funnel) aggregate. What differs is
//! that live input never ends, so every count is kept as a signed, time-bucketed
//! contribution that a late event or an identity merge can take back and redo; once the
//! input ends, the live map equals what batch mining counts on the same events.
//!
//! Layout:
//! - [`source`]: [`LiveSource`], partitions of canonical batches; [`FileReplay`] replays
//!   files, [`GeneratorSource`] streams the `gen` model in time order at a chosen rate,
//!   [`BatchReplay`] replays batches held in memory, [`Merged`] reads several sources at
//!   once, each on its own partitions (the demo's generator and its capture).
//! - [`stitch`]: the [`Stitcher`]: identities, the event-time watermark (per partition,
//!   the pipeline's is the least), the lateness horizon, routing customers to shards, and
//!   the hand-off of open state when two customers turn out to be one; it also keeps each
//!   customer's latest touchpoints ([`timeline`]) for support's timeline lookup.
//! - [`shard`]: a [`Shard`] of customers: their open sessions (events kept until no
//!   accepted event can change them), retraction and re-emission of what they contributed.
//! - [`counts`]: [`LiveMap`], counts by minute ([`LiveCounts`]: events, journeys, starts,
//!   exits, transitions, journeys through each touchpoint, funnel levels), summed into any
//!   window.
//! - [`capture`]: [`CaptureSource`], records pushed in over HTTP through a bounded
//!   [`CaptureInlet`] (refused when full, so clients retry rather than memory grow).
//! - [`durable`]: [`DurableSource`] stores every batch taken in as Parquet segments
//!   (`trailmap-store`) and checkpoints them with the source's positions; on start it
//!   replays them, so a restart after a crash resumes exactly where the last checkpoint was.
//!   Now and then a checkpoint is followed by a [`Cut`]: a barrier through the stitcher and
//!   the shards at which `snapshot` takes the whole state, kept beside the checkpoint, so a
//!   restart starts from it and replays only the segments stored after.
//! - [`pipeline`]: [`start`] wires a source thread, the stitcher and the shards with
//!   bounded channels (backpressure) on tokio; [`LiveHandle`] answers windows and status
//!   while it runs and [`LiveHandle::finish`] returns the final map.
//! - [`report`]: [`MapReport`], the map with names and rates (nodes, edges, funnels);
//!   [`svg`] draws it as a standalone SVG (`trailmap map --svg`).
//! - [`alert`]: alert rules evaluated on the live counts at intervals of event time
//!   ([`Alerts`]: detection, the pending → firing → resolved lifecycle kept across
//!   restarts, webhook notifications); the same code backtests a rule over files.

pub mod alert;
pub mod capture;
pub mod counts;
pub mod durable;
pub mod pipeline;
pub mod report;
pub mod shard;
mod snapshot;
pub mod source;
pub mod stitch;
pub mod svg;
pub mod timeline;

pub use alert::{AlertState, AlertStatus, Alerts, AlertsHandle};
pub use capture::{CaptureInlet, CaptureSource, Refused, capture};
pub use counts::{
    BUCKET_MICROS, ByValue, Count, FunnelLevels, FunnelTrend, LiveCounts, LiveMap, Sparse,
    TouchpointCounts, TransitionCount, WHOLE, bucket_of,
};
pub use durable::DurableSource;
pub use pipeline::{Freshness, LiveHandle, LiveResult, LiveStatus, Names, PipelineOptions, start};
pub use report::MapReport;
pub use shard::{LiveEvent, Shard, ShardConfig, ShardStats};
pub use source::{
    BatchReplay, Cut, Feed, FileReplay, GeneratorSource, LiveSource, Merged, Paced, Position,
};
pub use stitch::{Handoff, LateEvent, Routed, SourceCounts, StitchStats, Stitcher};
