//! Synthetic omnichannel customer journeys with a known ground truth.
//!
//! trailmap's tests, benchmarks and demo need journeys whose true paths are known exactly:
//! mined transition frequencies, stitched customers and funnel counts are then checked against
//! the chain that produced them rather than against another tool's opinion.
//!
//! Layout:
//! - [`model`]: [`JourneyModel`], a stage-structured Markov chain over the touchpoints of the
//!   default catalog (`ad_click` … `churned`), with hand-written transition and exit
//!   probabilities, and [`Truth`], its description as JSON (`--truth`). The chain's shape
//!   guarantees that customers reveal an email before any ticket or CRM record exists.
//! - [`journey`]: walking the chain. [`JourneyModel::journey`] turns `(seed, customer index)`
//!   into a [`CustomerJourney`]: the raw records each source would hold (Segment track / page /
//!   identify calls, ticket updates, CRM stage changes) with their identities and times, plus
//!   the true touchpoint of each. [`Generator`] iterates customers in order, for live sources.
//! - [`write`]: streaming the journeys to files: per-source files in native shapes
//!   ([`Layout::Sources`], for ingest and stitching) or one already-stitched event table
//!   ([`Layout::Flat`], the benchmark input), as NDJSON or Parquet, with a [`GenSummary`].

pub mod journey;
pub mod model;
pub mod write;

pub use journey::{
    CustomerJourney, DEFAULT_START_MICROS, DEVICE_TYPES, GenEvent, GenOptions, Generator,
    RecordKind, device_properties, device_type, first_touch_micros,
};
pub use model::{JourneyModel, Truth};
pub use write::{GenSummary, Layout, OutFormat, write};
