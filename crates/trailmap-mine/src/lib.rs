//! Journey mining: what analysts come for.
//!
//! Every result here is an [`Aggregate`]: a partial state fed one journey at a time, with an
//! associative [`merge`](Aggregate::merge), so the same code answers over one file on two
//! cores ([`fold`]), over many partitions, and (later) live, where the partial states are
//! time buckets. Hot loops read the [`JourneyLog`] columns directly: touchpoints as dense
//! `u32` ids and times as `i64` microseconds, never strings.
//!
//! Layout:
//! - [`fold`]: runs an aggregate over a log's journeys on every core and merges the parts.
//! - [`hist`]: [`DurationHistogram`], a mergeable log-linear histogram of durations (mean
//!   exact, quantiles within 1.6%).
//! - [`paths`]: [`PathStats`], the directly-follows graph (transitions with counts and
//!   durations, starts, ends), variants and back-and-forth loops, in one pass.
//! - [`graph`]: [`JourneyGraph`], the DFG as a petgraph graph; friction loops (strongly
//!   connected touchpoints) are found on it.
//! - [`tree`]: [`PathTree`], paths from a start touchpoint or back from an end touchpoint,
//!   pruned to a node budget per step with an `other` bucket.
//! - [`dropoffs`]: [`Dropoffs`], exits per touchpoint and abandonment before a goal.
//! - [`funnel`]: [`Funnel`], ClickHouse `windowFunnel` levels per journey (every mode), order
//!   types, exclusions, attempts, time to convert, breakdowns, trends and maturing cohorts.
//! - [`kpi`]: [`Kpis`], touchpoint-pair SLAs (`quote_sent within 24h of quote_requested`).
//! - [`sequence`]: [`SequencePattern`] and [`Retention`], ClickHouse `sequenceMatch`,
//!   `sequenceCount` and `retention` over (time, condition bitmask) events, ClickHouse's
//!   quirks and tie order included.
//! - [`report`]: the results with names, sorted and with rates: the JSON the CLI prints.
//!
//! [`JourneyLog`]: trailmap_sessionize::JourneyLog

pub mod dropoffs;
pub mod fold;
pub mod funnel;
pub mod graph;
pub mod hist;
pub mod kpi;
pub mod paths;
pub mod report;
pub mod sequence;
pub mod tree;

pub use dropoffs::Dropoffs;
pub use fold::{Aggregate, fold};
pub use funnel::{Funnel, FunnelSpec};
pub use graph::JourneyGraph;
pub use hist::DurationHistogram;
pub use kpi::{KpiSpec, Kpis};
pub use paths::PathStats;
pub use sequence::{Retention, SequencePattern};
pub use tree::{PathTree, TreeSpec};
