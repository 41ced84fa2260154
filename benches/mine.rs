//! Mining on a journey log already in memory: what the hot loops cost once the input is read.
//!
//! `cargo bench --bench mine`. Throughput is events per second. The peer comparison, load
//! included, is `benches/peers/mine.sh`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use trailmap_gen::{GenOptions, JourneyModel, Layout, OutFormat};
use trailmap_ingest::DeadLetters;
use trailmap_ingest::file::{self, FileInput, IngestOptions, Projection};
use trailmap_mine::funnel::FunnelSpec;
use trailmap_mine::paths::PathOptions;
use trailmap_mine::{Dropoffs, Funnel, PathStats, fold};
use trailmap_model::config::{Scope, SessionConfig, SourceConfig, SourceKind};
use trailmap_model::{Catalog, Config};
use trailmap_sessionize::JourneyBuilder;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = GenOptions {
        customers: 50_000,
        ..GenOptions::default()
    };
    let flat = dir.path().join("flat");
    let summary = trailmap_gen::write(
        &JourneyModel::default(),
        &opts,
        &flat,
        Layout::Flat,
        OutFormat::Parquet,
    )
    .expect("gen");
    let config = Config::builtin();
    let options = IngestOptions {
        catalog: Arc::new(Catalog::compile(&config.catalog).expect("catalog")),
        batch_size: 8192,
        projection: Projection::minimal(),
    };
    let mut generic = SourceConfig::of_kind(SourceKind::Generic);
    generic.name = "file".into();
    let inputs = vec![FileInput::new(flat.join("events.parquet"), generic).expect("input")];
    let mut dead = DeadLetters::new(dir.path().join("dead.ndjson"), None);
    let mut jb = JourneyBuilder::new();
    file::read_all(&inputs, &options, &mut dead, |b| {
        jb.push_batch(&b).map_err(trailmap_model::Error::Other)
    })
    .expect("read");
    let log = jb.finish(&SessionConfig::default());
    let touchpoints = log.touchpoints.len();
    let journey = &config.journeys["trial_to_purchase"];
    let as_of = log.ts.iter().copied().max().unwrap_or(0);
    let (spec, _) = FunnelSpec::resolve(journey, &log.touchpoints, as_of).expect("funnel");

    let mut group = c.benchmark_group("mine in memory, 50k customers");
    group.sample_size(20);
    group.throughput(Throughput::Elements(summary.events));
    group.bench_function("paths (DFG, durations, variants, loops)", |b| {
        b.iter(|| {
            fold(&log, Scope::Customer, || {
                PathStats::new(touchpoints, PathOptions::default())
            })
            .journeys
        })
    });
    group.bench_function("paths, counts only", |b| {
        let options = PathOptions {
            durations: false,
            variants: false,
        };
        b.iter(|| {
            fold(&log, Scope::Customer, || {
                PathStats::new(touchpoints, options)
            })
            .journeys
        })
    });
    group.bench_function("funnel trial_to_purchase", |b| {
        b.iter(|| fold(&log, Scope::Customer, || Funnel::new(spec.clone(), None)).journeys)
    });
    group.bench_function("dropoffs", |b| {
        b.iter(|| fold(&log, Scope::Customer, || Dropoffs::new(None)).journeys)
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
