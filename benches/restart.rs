//! Restarting the live pipeline over a store: from the kept state, or replaying every
//! stored segment (what a restart did before states were kept, and still does when the
//! settings changed).
//!
//! `cargo bench -p trailmap-live --bench restart`. Setup, once: the `gen` model's traffic
//! of 200k customers (about 3.3M records) through a durable store, a checkpoint every
//! 200 ms and a cut after each, covered segments compacted. Then each iteration starts the
//! pipeline on that store with no new input and takes the final map: restore (or replay),
//! then the end of input.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/traffic.rs"]
mod common;

use common::traffic;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::path::Path;
use std::time::Duration;
use trailmap_live::{BatchReplay, DurableSource, LiveResult, PipelineOptions};
use trailmap_model::Config;
use trailmap_store::Store;

fn run(
    runtime: &tokio::runtime::Runtime,
    data: &Path,
    batches: Vec<arrow::array::RecordBatch>,
    config: &Config,
) -> LiveResult {
    let store = Store::open(data.to_str().expect("utf-8")).expect("store");
    let checkpoint = trailmap_live::durable::resume(&store).expect("resume");
    let source = DurableSource::new(
        store,
        checkpoint,
        Box::new(BatchReplay::new(batches)),
        Duration::from_millis(200),
    )
    .keep_state_every(Duration::ZERO)
    .compact_to(1_000_000);
    runtime.block_on(async {
        let handle = trailmap_live::start(config, Box::new(source), &PipelineOptions::default())
            .expect("start");
        handle.finish().await.expect("finish")
    })
}

fn bench(c: &mut Criterion) {
    let batches = traffic(200_000);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let config = Config::builtin();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let kept = dir.path().join("kept");
    let clean = run(&runtime, &kept, batches, &config);
    // The same store without its state: every segment is replayed.
    let replayed = dir.path().join("replayed");
    std::fs::create_dir_all(replayed.join("segments")).expect("dir");
    for entry in walk(&kept) {
        let relative = entry.strip_prefix(&kept).expect("inside");
        if relative != Path::new("state.bin") {
            std::fs::copy(&entry, replayed.join(relative)).expect("copy");
        }
    }
    let stored: u64 = Store::open(kept.to_str().expect("utf-8"))
        .expect("store")
        .read_checkpoint()
        .expect("checkpoint")
        .expect("one")
        .rows();
    assert_eq!(stored as usize, rows);

    let mut group = c.benchmark_group("restart");
    group.sample_size(10);
    group.throughput(Throughput::Elements(stored));
    for (name, data) in [
        ("from_kept_state", &kept),
        ("replaying_every_segment", &replayed),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let result = run(&runtime, data, Vec::new(), &config);
                assert_eq!(result.map, clean.map, "{name}: the map of a clean run");
                result.status.stitch.events
            })
        });
    }
    group.finish();
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

criterion_group!(benches, bench);
criterion_main!(benches);
