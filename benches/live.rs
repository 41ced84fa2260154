//! The live pipeline in process: stitch + sessionize + live aggregates, no broker.
//!
//! `cargo bench -p trailmap-live --bench live`. Input: the `gen` model's traffic in event-time
//! order (identify calls included, so stitching merges customers live), held in memory as
//! canonical batches, so the figure is the pipeline's own rate. Throughput is events per
//! second through the whole pipeline, final map included.

// As the `trailmap` binary: the live map is many small allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/traffic.rs"]
mod common;

use common::traffic;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use trailmap_live::{BatchReplay, PipelineOptions};
use trailmap_model::Config;

fn bench(c: &mut Criterion) {
    let batches = traffic(50_000);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let config = Config::builtin();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The built-in config keeps the map per device segment and breaks an alert down by
    // device; without them, the map is kept whole only.
    let mut whole = config.clone();
    whole.segments.by.clear();
    whole.alerts.retain(|_, rule| rule.breakdown.is_none());
    let mut group = c.benchmark_group("live");
    group.sample_size(10);
    group.throughput(Throughput::Elements(rows as u64));
    for (name, config) in [
        ("pipeline_in_process", &config),
        ("pipeline_in_process_whole", &whole),
    ] {
        group.bench_function(name, |b| {
            // The final map is built inside the measurement; freeing it afterwards is the
            // caller's business, so it is dropped outside, each one before the next run
            // (criterion's `iter_with_large_drop` would hold every result of a sample).
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let result = runtime.block_on(async {
                        let source = BatchReplay::new(batches.clone());
                        let handle = trailmap_live::start(
                            config,
                            Box::new(source),
                            &PipelineOptions::default(),
                        )
                        .expect("start");
                        handle.finish().await.expect("finish")
                    });
                    took += started.elapsed();
                    assert!(result.status.stitch.events > 0);
                    drop(result);
                }
                took
            })
        });
    }
    // The stitcher alone (one task in the pipeline): decode, stitch, route.
    group.bench_function("stitcher_only", |b| {
        b.iter(|| {
            let mut stitcher = trailmap_live::Stitcher::new(2, 1, 3_600_000_000, &[]);
            let mut routed = 0;
            for batch in &batches {
                let r = stitcher.push(0, batch).expect("push");
                routed += r.events.iter().map(Vec::len).sum::<usize>();
            }
            routed
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
