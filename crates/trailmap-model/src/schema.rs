//! The canonical event schema. Every source produces batches of exactly this shape, so
//! stitching, sessions and mining never care where an event came from.

use crate::identity::IdentityKind;
use arrow::array::{
    ArrayRef, RecordBatch, StringBuilder, StringDictionaryBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, UInt32Type};
use std::sync::{Arc, OnceLock};

pub const EVENT_ID: &str = "event_id";
pub const SOURCE: &str = "source";
pub const CUSTOMER: &str = "customer";
pub const TS: &str = "ts";
pub const RECEIVED_AT: &str = "received_at";
pub const TOUCHPOINT: &str = "touchpoint";
pub const STAGE: &str = "stage";
pub const CHANNEL: &str = "channel";
pub const PROPERTIES: &str = "properties";

/// Event time and processing time are microseconds since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Low-cardinality strings are dictionary-encoded with u32 keys; hot loops use the keys.
pub fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8))
}

/// The canonical event schema:
///
/// | column | type | meaning |
/// |---|---|---|
/// | `event_id` | utf8 | id from the source, or a stable hash of the raw record |
/// | `source` | dict | the source that produced the event (`clickstream`, `ticket`, `crm`, …) |
/// | `customer` | utf8, null | the stitched customer key, filled by the sessionizer |
/// | `customer_id` … `anonymous_id` | utf8, null | identifiers as the source had them (a reader may hand them over dictionary-encoded, `dict` with u32 keys, as Parquet stores them; consumers accept both) |
/// | `ts` | timestamp µs UTC | event time |
/// | `received_at` | timestamp µs UTC, null | processing time |
/// | `touchpoint` | dict, null | the cleaned touchpoint; null for identity-only records (`identify`) |
/// | `stage`, `channel` | dict, null | lifecycle stage and channel of the touchpoint |
/// | `properties` | utf8 (JSON), null | everything else the record carried, for breakdowns |
pub fn event_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                Field::new(EVENT_ID, DataType::Utf8, true),
                Field::new(SOURCE, dictionary_type(), false),
                Field::new(CUSTOMER, DataType::Utf8, true),
            ];
            fields.extend(
                IdentityKind::ALL
                    .iter()
                    .map(|k| Field::new(k.column(), DataType::Utf8, true)),
            );
            fields.extend([
                Field::new(TS, timestamp_type(), false),
                Field::new(RECEIVED_AT, timestamp_type(), true),
                Field::new(TOUCHPOINT, dictionary_type(), true),
                Field::new(STAGE, dictionary_type(), true),
                Field::new(CHANNEL, dictionary_type(), true),
                Field::new(PROPERTIES, DataType::Utf8, true),
            ]);
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// One event, borrowed from whatever the reader parsed. Identities are indexed by
/// [`IdentityKind::index`].
#[derive(Debug, Clone, Default)]
pub struct EventRow<'a> {
    pub event_id: Option<&'a str>,
    pub source: &'a str,
    pub identities: [Option<&'a str>; IdentityKind::ALL.len()],
    pub ts: i64,
    pub received_at: Option<i64>,
    pub touchpoint: Option<&'a str>,
    pub stage: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub properties: Option<&'a str>,
}

/// Builds canonical record batches row by row. The only place batches of the canonical
/// schema are assembled, so every source agrees on it.
pub struct EventBatchBuilder {
    event_id: StringBuilder,
    source: StringDictionaryBuilder<UInt32Type>,
    customer: StringBuilder,
    identities: Vec<StringBuilder>,
    ts: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    touchpoint: StringDictionaryBuilder<UInt32Type>,
    stage: StringDictionaryBuilder<UInt32Type>,
    channel: StringDictionaryBuilder<UInt32Type>,
    properties: StringBuilder,
    len: usize,
}

impl Default for EventBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBatchBuilder {
    pub fn new() -> Self {
        EventBatchBuilder {
            event_id: StringBuilder::new(),
            source: StringDictionaryBuilder::new(),
            customer: StringBuilder::new(),
            identities: IdentityKind::ALL
                .iter()
                .map(|_| StringBuilder::new())
                .collect(),
            ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            received_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            touchpoint: StringDictionaryBuilder::new(),
            stage: StringDictionaryBuilder::new(),
            channel: StringDictionaryBuilder::new(),
            properties: StringBuilder::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, row: &EventRow<'_>) {
        self.event_id.append_option(row.event_id);
        self.source.append_value(row.source);
        self.customer.append_null();
        for (builder, id) in self.identities.iter_mut().zip(row.identities.iter()) {
            builder.append_option(*id);
        }
        self.ts.append_value(row.ts);
        self.received_at.append_option(row.received_at);
        append_dict(&mut self.touchpoint, row.touchpoint);
        append_dict(&mut self.stage, row.stage);
        append_dict(&mut self.channel, row.channel);
        self.properties.append_option(row.properties);
        self.len += 1;
    }

    /// Takes the rows pushed so far as a batch and starts a new one.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.customer.finish()),
        ];
        columns.extend(
            self.identities
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend([
            Arc::new(self.ts.finish()) as ArrayRef,
            Arc::new(self.received_at.finish()),
            Arc::new(self.touchpoint.finish()),
            Arc::new(self.stage.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.properties.finish()),
        ]);
        self.len = 0;
        // The builders produce exactly the schema's types, so this cannot fail.
        RecordBatch::try_new(event_schema(), columns).expect("canonical columns match schema")
    }
}

fn append_dict(builder: &mut StringDictionaryBuilder<UInt32Type>, value: Option<&str>) {
    match value {
        Some(v) => {
            builder.append_value(v);
        }
        None => builder.append_null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_produces_the_canonical_schema() {
        let mut b = EventBatchBuilder::new();
        let mut row = EventRow {
            source: "clickstream",
            ts: 1_700_000_000_000_000,
            touchpoint: Some("pricing_view"),
            ..Default::default()
        };
        row.identities[IdentityKind::UserId.index()] = Some("u1");
        b.push(&row);
        b.push(&EventRow {
            source: "crm",
            ts: 1,
            ..Default::default()
        });
        let batch = b.finish();
        assert_eq!(batch.schema(), event_schema());
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column_by_name(TOUCHPOINT).unwrap().null_count(), 1);
        assert!(b.is_empty());
    }
}
