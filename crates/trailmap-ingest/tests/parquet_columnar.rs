//! The Parquet source maps clean batches column by column (touchpoints classified once per
//! dictionary value, stage and channel columns sharing the touchpoint's keys where they
//! can); CSV has only the row path. Both must give every row the same touchpoint, stage,
//! channel and customer, whatever mix of catalog labels and record channels the rows have.

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;
use trailmap_ingest::DeadLetters;
use trailmap_ingest::file::{self, FileInput, IngestOptions, Projection};
use trailmap_model::Catalog;
use trailmap_model::config::{CatalogConfig, SourceConfig, SourceKind, TouchpointRule};
use trailmap_model::time::TimeUnit;

const ROWS: usize = 3000;

/// Rows of (customer, second, raw touchpoint, channel); `None` channels are null in Parquet
/// and empty in CSV, both "no channel".
type Rows = Vec<(String, i64, String, Option<String>)>;

/// Rows of random customers, touchpoints and channels; with `blanks`, some channels are
/// null or blank; with `blank_touchpoints`, every 97th row's touchpoint is blank, so that
/// each row group's dictionary holds a value that does not classify, which most batches do
/// not use.
fn rows(seed: u64, channels: bool, blanks: bool, blank_touchpoints: bool) -> Rows {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..ROWS)
        .map(|i| {
            let channel = if !channels {
                None
            } else if blanks && rng.random_range(0..5) == 0 {
                [None, Some(" ".to_string())][rng.random_range(0..2)].clone()
            } else {
                Some(["web", "email", "chat"][rng.random_range(0..3)].to_string())
            };
            let touchpoint = format!(
                "/{}/{}",
                ["pricing", "docs", "ticket", "signup"][rng.random_range(0..4)],
                rng.random_range(0..3)
            );
            let touchpoint = match blank_touchpoints && i % 97 == 5 {
                true => "  ".to_string(),
                false => touchpoint,
            };
            (
                format!("c{}", rng.random_range(0..200)),
                i as i64,
                touchpoint,
                channel,
            )
        })
        .collect()
}

fn write_parquet(path: &Path, rows: &Rows, with_channel: bool) {
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        (
            "customer_id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
        ),
        (
            "ts",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ),
        (
            "touchpoint",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.2))),
        ),
    ];
    if with_channel {
        columns.push((
            "channel",
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.3.clone()))),
        ));
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    // Small row groups: batches of several dictionaries, and ends inside them.
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(700))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn write_csv(path: &Path, rows: &Rows, with_channel: bool) {
    let mut w = csv::Writer::from_path(path).unwrap();
    let mut header = vec!["customer_id", "ts", "touchpoint"];
    if with_channel {
        header.push("channel");
    }
    w.write_record(&header).unwrap();
    for (customer, ts, touchpoint, channel) in rows {
        let mut record = vec![customer.clone(), ts.to_string(), touchpoint.clone()];
        if with_channel {
            record.push(channel.clone().unwrap_or_default());
        }
        w.write_record(&record).unwrap();
    }
    w.flush().unwrap();
}

/// Per row read: customer, touchpoint, stage, channel (logical values, nulls as `None`).
type Read = Vec<[Option<String>; 4]>;

/// The rows read, and how many were rejected.
fn read(path: &Path, catalog: &CatalogConfig, dir: &Path) -> (Read, u64) {
    let mut source = SourceConfig::of_kind(SourceKind::Generic);
    source.time_unit = Some(TimeUnit::S);
    let input = FileInput::new(path, source).unwrap();
    let options = IngestOptions {
        catalog: Arc::new(Catalog::compile(catalog).unwrap()),
        batch_size: 256,
        projection: Projection::minimal(),
    };
    let mut dead = DeadLetters::new(dir.join("dead.ndjson"), None);
    let mut out = Vec::new();
    let text = |batch: &RecordBatch, name: &str| -> Vec<Option<String>> {
        let column = cast(batch.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
        let column = column.as_string::<i32>();
        (0..column.len())
            .map(|i| column.is_valid(i).then(|| column.value(i).to_string()))
            .collect()
    };
    let stats = file::read_all(&[input], &options, &mut dead, |batch| {
        let columns = ["customer_id", "touchpoint", "stage", "channel"].map(|c| text(&batch, c));
        for i in 0..batch.num_rows() {
            out.push(columns.clone().map(|c| c[i].clone()));
        }
        Ok(())
    })
    .unwrap();
    (out, stats.rejected)
}

fn rule(
    pattern: &str,
    touchpoint: &str,
    stage: Option<&str>,
    channel: Option<&str>,
) -> TouchpointRule {
    TouchpointRule {
        source: None,
        pattern: pattern.into(),
        touchpoint: touchpoint.into(),
        stage: stage.map(Into::into),
        channel: channel.map(Into::into),
    }
}

fn catalogs() -> Vec<(&'static str, CatalogConfig)> {
    let config = |rules: Vec<TouchpointRule>| CatalogConfig {
        rules,
        ..CatalogConfig::default()
    };
    vec![
        ("passthrough", CatalogConfig::default()),
        (
            "every touchpoint staged, two sharing a stage, one with a catalog channel",
            config(vec![
                rule("^/pricing/", "pricing_view", Some("consideration"), None),
                rule("^/docs/", "docs_view", Some("consideration"), None),
                rule("^/ticket/", "ticket_opened", Some("support"), Some("chat")),
                rule("^/signup/", "signup", Some("purchase"), None),
            ]),
        ),
        (
            "a mix: some staged, some not",
            config(vec![
                rule(
                    "^/pricing/(\\d)",
                    "pricing_$1",
                    Some("consideration"),
                    Some("web"),
                ),
                rule("^/ticket/", "ticket_opened", None, Some("phone")),
                rule("^/signup/", "signup", Some("purchase"), None),
            ]),
        ),
    ]
}

#[test]
fn columnar_parquet_rows_equal_the_row_path() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, with_channel, blanks, blank_touchpoints) in [
        (1, false, false, false),
        (2, true, false, false),
        (3, true, true, false),
        (4, true, true, true),
    ] {
        let data = rows(seed, with_channel, blanks, blank_touchpoints);
        let rejected = if blank_touchpoints {
            ROWS.div_ceil(97)
        } else {
            0
        };
        let parquet = dir.path().join(format!("{seed}.parquet"));
        let csv = dir.path().join(format!("{seed}.csv"));
        write_parquet(&parquet, &data, with_channel);
        write_csv(&csv, &data, with_channel);
        for (name, catalog) in catalogs() {
            let (columnar, columnar_rejected) = read(&parquet, &catalog, dir.path());
            let (by_row, by_row_rejected) = read(&csv, &catalog, dir.path());
            assert_eq!(columnar_rejected, rejected as u64, "{name}");
            assert_eq!(by_row_rejected, rejected as u64, "{name}");
            assert_eq!(columnar.len(), ROWS - rejected);
            assert_eq!(by_row.len(), ROWS - rejected);
            for (i, (a, b)) in columnar.iter().zip(&by_row).enumerate() {
                assert_eq!(
                    a, b,
                    "row {i}, catalog {name}, channels {with_channel}, blanks {blanks}"
                );
            }
        }
    }
}
