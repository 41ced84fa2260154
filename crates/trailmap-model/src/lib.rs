//! The shared vocabulary of trailmap: what an event looks like, how raw records become
//! touchpoints, and how the engine is configured.
//!
//! Every other crate speaks these types, so this crate stays small and dependency-light
//! (Arrow's core arrays, serde, regex) and knows nothing about files, Kafka or SQL.
//!
//! Layout:
//! - [`schema`]: the canonical Arrow event schema (`event_id`, `source`, identity columns,
//!   `ts`, `touchpoint`, `stage`, `channel`, `properties`) and [`EventBatchBuilder`], the one
//!   way to build batches of it.
//! - [`identity`]: the identity kinds (`user_id`, `email`, `anonymous_id`, …) that the
//!   sessionizer links into customers, with their normalisation.
//! - [`catalog`]: the touchpoint catalog: ordered match rules that clean raw event names and
//!   page paths into named touchpoints with a stage and a channel.
//! - [`config`]: `trailmap.toml` as types: sources and their field mappings, the catalog,
//!   sessions, journeys (named funnels), ingest and storage settings. Loading validates and
//!   names the offending key on any error.
//! - [`alert`]: alert rules on a stage's conversion (`[alerts.NAME]`) and where their
//!   notifications go (`[alerting]`).
//! - [`time`]: durations as people write them (`30m`, `24h`) and the event-time unit.
//! - [`error`]: the error type shared by the pipeline.

pub mod alert;
pub mod catalog;
pub mod config;
pub mod error;
pub mod identity;
pub mod schema;
pub mod time;

pub use catalog::{Catalog, CatalogCache, Classified};
pub use config::Config;
pub use error::{Error, Result};
pub use identity::IdentityKind;
pub use schema::{EventBatchBuilder, EventRow, event_schema};
