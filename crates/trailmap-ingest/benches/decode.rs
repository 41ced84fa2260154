//! JSON records into canonical rows, on one thread: the decoder the NDJSON files and the
//! Kafka source share.
//!
//!     cargo bench -p trailmap-ingest --bench decode
//!
//! Throughput is records per second, on the borrowed path (`decode`) and on the generic one
//! (`decode_generic`, every record parsed into a `serde_json::Value`), for Segment page calls
//! as the Kafka bench produces them and for flat records whose unused keys go to
//! `properties`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use trailmap_ingest::{JsonDecoder, Projection};
use trailmap_model::Catalog;
use trailmap_model::config::{Config, SourceConfig, SourceKind};

const N: usize = 10_000;

fn segment_pages() -> Vec<Vec<u8>> {
    let pages = [
        "/",
        "/pricing",
        "/docs",
        "/signup",
        "/blog/why",
        "/product/42",
    ];
    (0..N)
        .map(|i| {
            format!(
                r#"{{"type":"page","messageId":"m{i}","anonymousId":"a{}","timestamp":"2024-03-01T00:{:02}:{:02}Z","properties":{{"path":"{}"}},"context":{{"channel":"web"}}}}"#,
                i % 5000,
                (i / 60) % 60,
                i % 60,
                pages[i % pages.len()]
            )
            .into_bytes()
        })
        .collect()
}

fn flat_records() -> Vec<Vec<u8>> {
    (0..N)
        .map(|i| {
            format!(
                r#"{{"customer_id":"c{}","ts":"2024-03-01T00:{:02}:{:02}Z","touchpoint":"pricing_view","plan":"pro","utm_source":"newsletter","seats":{},"device":"mobile","referrer":null}}"#,
                i % 5000,
                (i / 60) % 60,
                i % 60,
                i % 50
            )
            .into_bytes()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let config = Config::builtin();
    let catalog = Arc::new(Catalog::compile(&config.catalog).expect("catalog"));
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(N as u64));
    for (name, kind, records) in [
        ("segment pages", SourceKind::Clickstream, segment_pages()),
        (
            "flat, rest to properties",
            SourceKind::Generic,
            flat_records(),
        ),
    ] {
        let source = SourceConfig::of_kind(kind);
        let mapping = source.mapping().expect("mapping");
        let mut decoder =
            JsonDecoder::new(&source, &mapping, catalog.clone(), Projection::default())
                .expect("decoder");
        group.bench_function(format!("{name}: borrowed"), |b| {
            b.iter(|| {
                for r in &records {
                    let _ = black_box(decoder.decode(r));
                }
                decoder.take_batch()
            })
        });
        group.bench_function(format!("{name}: generic"), |b| {
            b.iter(|| {
                for r in &records {
                    let _ = black_box(decoder.decode_generic(r));
                }
                decoder.take_batch()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
