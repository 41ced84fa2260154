//! Tables over a stitched journey log.

use datafusion::arrow::array::{
    ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemTable;
use datafusion::common::Result;
use std::sync::Arc;
use trailmap_sessionize::JourneyLog;

/// Rows per batch of the in-memory tables, so both cores share a scan.
const BATCH: usize = 64 * 1024;

/// `events`: one row per event in journey order: `customer`, `session` (index of the
/// customer's session, from 0), `ts`, `touchpoint`, `stage`, `source`.
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer", DataType::Utf8, false),
        Field::new("session", DataType::UInt32, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("touchpoint", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, false),
    ]))
}

/// The `events` table of a log, as record batches.
pub fn events_batches(log: &JourneyLog) -> Result<Vec<RecordBatch>> {
    let schema = events_schema();
    let n = log.num_events();
    // Session number within the customer, per event.
    let mut session = vec![0u32; n];
    let mut previous_customer = u32::MAX;
    let mut k = 0u32;
    for s in 0..log.num_sessions() {
        let c = log.session_customer[s];
        k = if c == previous_customer { k + 1 } else { 0 };
        previous_customer = c;
        for slot in &mut session[log.session_offsets[s]..log.session_offsets[s + 1]] {
            *slot = k;
        }
    }
    let mut customer_of = vec![0u32; n];
    for c in 0..log.num_customers() {
        for slot in &mut customer_of[log.offsets[c]..log.offsets[c + 1]] {
            *slot = c as u32;
        }
    }
    let mut batches = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + BATCH).min(n);
        let r = start..end;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                r.clone().map(|i| log.customer_key(customer_of[i])),
            )),
            Arc::new(UInt32Array::from(session[r.clone()].to_vec())),
            Arc::new(
                TimestampMicrosecondArray::from(log.ts[r.clone()].to_vec()).with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                r.clone()
                    .map(|i| log.touchpoints[log.touchpoint[i] as usize].as_str()),
            )),
            Arc::new(StringArray::from_iter(r.clone().map(|i| {
                log.stages
                    .get(log.touchpoint[i] as usize)
                    .cloned()
                    .flatten()
            }))),
            Arc::new(StringArray::from_iter_values(r.clone().map(|i| {
                log.sources
                    .get(log.source[i] as usize)
                    .map_or("", String::as_str)
            }))),
        ];
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
        start = end;
    }
    Ok(batches)
}

/// An in-memory `events` table for a log.
pub fn events_table(log: &JourneyLog) -> Result<MemTable> {
    let batches = events_batches(log)?;
    // Two partitions so scans and aggregations start on both cores.
    let mid = batches.len().div_ceil(2);
    let mut parts = vec![batches[..mid].to_vec()];
    if mid < batches.len() {
        parts.push(batches[mid..].to_vec());
    }
    MemTable::try_new(events_schema(), parts)
}
