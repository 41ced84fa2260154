//! What the SQL tests share: a CSV file read and stitched into the journeys the tables show.

use std::path::Path;
use std::sync::Arc;
use trailmap_ingest::DeadLetters;
use trailmap_ingest::file::{self, FileInput, IngestOptions, Projection};
use trailmap_model::config::{SourceConfig, SourceKind};
use trailmap_model::{Catalog, Config};
use trailmap_sessionize::JourneyBuilder;
use trailmap_sql::Journeys;

/// The journeys of a `customer_id,ts,touchpoint` CSV file under `config`, read `batch_size`
/// rows at a time (rejected rows go to a dead-letter file next to the system's temp files).
pub fn stitch_csv(path: &Path, config: Config, batch_size: usize) -> Journeys {
    let input = FileInput::new(path, SourceConfig::of_kind(SourceKind::Generic)).expect("csv");
    let options = IngestOptions {
        catalog: Arc::new(Catalog::compile(&config.catalog).expect("catalog")),
        batch_size,
        projection: Projection::minimal(),
    };
    let dead_path = std::env::temp_dir().join(format!(
        "trailmap-sql-test-dead-{}-{}.ndjson",
        std::process::id(),
        batch_size
    ));
    let mut dead = DeadLetters::new(dead_path, Some(0));
    let mut source = file::open(&input, &options).expect("open the csv");
    let mut builder = JourneyBuilder::new();
    while let Some(batch) = source.next_batch(&mut dead).expect("read the csv") {
        builder.push_batch(&batch).expect("stitch");
    }
    let log = builder.finish(&config.sessions);
    Journeys {
        log: Arc::new(log),
        config: Arc::new(config),
    }
}
