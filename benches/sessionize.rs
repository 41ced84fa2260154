//! Read + stitch + sessionize on `trailmap gen` data.
//!
//! `cargo bench --bench sessionize`. Throughput is events per second. The peer comparison
//! on the 20M-event file is `benches/peers/sessionize.sh`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::path::Path;
use std::sync::Arc;
use trailmap_gen::{GenOptions, JourneyModel, Layout, OutFormat};
use trailmap_ingest::DeadLetters;
use trailmap_ingest::file::{self, FileInput, IngestOptions, Projection};
use trailmap_model::config::{SessionConfig, SourceConfig, SourceKind};
use trailmap_model::{Catalog, Config};
use trailmap_sessionize::JourneyBuilder;

fn load(inputs: &[FileInput], options: &IngestOptions, dir: &Path) -> usize {
    let mut dead = DeadLetters::new(dir.join("dead.ndjson"), None);
    let mut jb = JourneyBuilder::new();
    file::read_all(inputs, options, &mut dead, |b| {
        jb.push_batch(&b).map_err(trailmap_model::Error::Other)
    })
    .expect("read");
    let log = jb.finish(&SessionConfig::default());
    log.num_sessions()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = JourneyModel::default();
    let opts = |customers| GenOptions {
        customers,
        ..GenOptions::default()
    };
    let flat = dir.path().join("flat");
    let flat_summary = trailmap_gen::write(
        &model,
        &opts(20_000),
        &flat,
        Layout::Flat,
        OutFormat::Parquet,
    )
    .expect("gen");
    let sources = dir.path().join("sources");
    let src_summary = trailmap_gen::write(
        &model,
        &opts(5_000),
        &sources,
        Layout::Sources,
        OutFormat::Ndjson,
    )
    .expect("gen");

    let config = Config::builtin();
    let options = IngestOptions {
        catalog: Arc::new(Catalog::compile(&config.catalog).expect("catalog")),
        batch_size: 8192,
        projection: Projection::minimal(),
    };
    let generic = {
        let mut s = SourceConfig::of_kind(SourceKind::Generic);
        s.name = "file".into();
        s
    };
    let flat_inputs = vec![FileInput::new(flat.join("events.parquet"), generic).expect("input")];
    let source_inputs: Vec<FileInput> =
        [SourceKind::Clickstream, SourceKind::Ticket, SourceKind::Crm]
            .into_iter()
            .map(|k| {
                FileInput::new(
                    sources.join(format!("{}.ndjson", k.as_str())),
                    SourceConfig::of_kind(k),
                )
                .expect("input")
            })
            .collect();

    let mut group = c.benchmark_group("read+stitch+sessionize");
    group.sample_size(10);
    group.throughput(Throughput::Elements(flat_summary.events));
    group.bench_function("flat parquet, 20k customers", |b| {
        b.iter(|| load(&flat_inputs, &options, dir.path()))
    });
    group.throughput(Throughput::Elements(src_summary.events));
    group.bench_function("clickstream+ticket+crm ndjson, 5k customers", |b| {
        b.iter(|| load(&source_inputs, &options, dir.path()))
    });
    group.finish();

    // Stitch + sessionize alone, on batches already in memory.
    let mut batches = Vec::new();
    let mut dead = DeadLetters::new(dir.path().join("dead.ndjson"), None);
    file::read_all(&flat_inputs, &options, &mut dead, |b| {
        batches.push(b);
        Ok(())
    })
    .expect("read");
    let mut group = c.benchmark_group("stitch+sessionize");
    group.sample_size(10);
    group.throughput(Throughput::Elements(flat_summary.events));
    group.bench_function("in memory, 20k customers", |b| {
        b.iter(|| {
            let mut jb = JourneyBuilder::new();
            for batch in &batches {
                jb.push_batch(batch).expect("canonical");
            }
            jb.finish(&SessionConfig::default()).num_sessions()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
