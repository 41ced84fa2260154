//! Shared by the live pipeline's integration tests.

use trailmap_live::{LiveResult, LiveSource, PipelineOptions};
use trailmap_model::Config;

/// The pipeline on `source` to the end of its input.
pub fn run_source(
    source: Box<dyn LiveSource>,
    config: &Config,
    options: &PipelineOptions,
) -> LiveResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let handle = trailmap_live::start(config, source, options).expect("start");
        handle.finish().await.expect("finish")
    })
}
