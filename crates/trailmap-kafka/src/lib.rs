//! Kafka ingest for the live pipeline.
//!
//! Every source with a `topic` in config is consumed by one consumer (one consumer group,
//! `[kafka] group_id`); each message is one JSON object, decoded by the same
//! [`JsonDecoder`](trailmap_ingest::JsonDecoder) and field mapping as the source's NDJSON
//! files, into Arrow micro-batches per partition (bounded by `[ingest] batch_size` rows and
//! `[ingest] linger`). Each Kafka partition is a partition of the pipeline: it holds the
//! event-time watermark back until it catches up with its topic.
//!
//! Where to resume is the pipeline's checkpoint, not the group's committed offsets: a
//! [`DurableSource`](trailmap_live::DurableSource) stores every batch and checkpoints each
//! partition's next offset; the source starts assigned partitions there, and commits the
//! checkpoint's offsets to the group only afterwards, for lag monitoring.
//!
//! Layout:
//! - [`source`]: [`KafkaSource`], the consumer as a [`LiveSource`](trailmap_live::LiveSource).
//! - `decode`: the worker thread that decodes what the source's thread polls.
//! - [`dead_letter`]: [`DeadLetterTopic`], where rejected messages go, unchanged, with the
//!   reason in a header; a file when the topic cannot take them.
//! - [`health`]: [`KafkaHealth`], whether the cluster is reachable, for status and `/readyz`.
//! - [`client`]: the librdkafka settings built from `[kafka]`.

pub mod client;
pub mod dead_letter;
mod decode;
pub mod health;
pub mod source;

pub use dead_letter::DeadLetterTopic;
pub use health::KafkaHealth;
pub use source::{KafkaSource, ReadUntil};
