//! The `gen` model's live traffic, collected once, for the live benchmarks.

use trailmap_gen::GenOptions;
use trailmap_live::{Feed, GeneratorSource, LiveSource};

/// `customers` of the gen model over 7 days, in event-time order (identify calls
/// included), as canonical batches of 8192 records.
pub fn traffic(customers: u64) -> Vec<arrow::array::RecordBatch> {
    let opts = GenOptions {
        customers,
        days: 7,
        ..GenOptions::default()
    };
    let mut source = GeneratorSource::new(opts, 8192);
    let mut batches = Vec::new();
    while let Some(feed) = source.next().expect("generate") {
        if let Feed::Batch { batch, .. } = feed {
            batches.push(batch);
        }
    }
    batches
}
