//! Sources to canonical Arrow batches.
//!
//! Every source, whatever its format, ends in the same place: a [`RowMapper`] that applies
//! the source's field mapping, parses event time, runs the touchpoint catalog and appends to
//! an [`EventBatchBuilder`](trailmap_model::EventBatchBuilder). So a clickstream line, a
//! Parquet row of a CRM export and an XES event all become the same canonical row, and all
//! reject bad records the same way.
//!
//! Layout:
//! - [`file`]: the file source. [`file::FileInput`] names a path, its format and its source
//!   config; [`file::open`] returns a [`BatchSource`] that streams batches with bounded
//!   memory. One module per format: `csv`, `ndjson`, `parquet`, `xes`; Parquet row groups
//!   are decoded by `row_groups` (whole row groups of flat columns by the page decoder in
//!   `flat`, the rest by the Arrow reader).
//! - [`mapper`]: field mapping, validation and catalog classification, shared by all formats
//!   and by the Kafka source.
//! - [`json`]: [`JsonDecoder`], one JSON record (an NDJSON line, a Kafka message) through
//!   the mapper.
//! - [`time`]: event-time parsing (strftime, ISO-8601 with offset, epoch numbers).
//! - [`dead_letter`]: where rejected records go, with their location and reason, and the
//!   `--max-errors` budget.
//! - [`value`]: the small dynamic value readers hand to the mapper.

pub mod dead_letter;
pub mod file;
pub mod json;
pub mod mapper;
pub mod time;
pub mod value;

pub use dead_letter::{DeadLetters, Location};
pub use file::{BatchSource, FileInput, IngestOptions, IngestStats, Projection};
pub use json::JsonDecoder;
pub use mapper::{Outcome, RowMapper};
pub use value::Value;
