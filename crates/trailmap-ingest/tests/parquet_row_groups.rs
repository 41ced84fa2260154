//! Parquet row groups are decoded on several threads: rows still come out in file order,
//! a bad row is rejected at its own row number, and a corrupt page stops the read with a
//! reason after the rows before it. A file read in parts is its rows once each.

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::TimestampMicrosecondType;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;
use trailmap_ingest::DeadLetters;
use trailmap_ingest::file::{self, FileInput, IngestOptions, IngestStats, Projection};
use trailmap_model::config::{SourceConfig, SourceKind};
use trailmap_model::time::TimeUnit;

const ROWS: i64 = 200;
/// Row groups of 7 rows read in batches of 5: batches end inside row groups and at their ends.
const ROW_GROUP: usize = 7;

/// Writes `ROWS` rows: row `i` at second `i`, customers taking turns, one touchpoint each
/// unless `blank_touchpoint_at` names a row whose touchpoint is missing.
fn write(path: &Path, blank_touchpoint_at: Option<i64>) {
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(ROW_GROUP));
    write_with(path, blank_touchpoint_at, props);
}

fn write_with(
    path: &Path,
    blank_touchpoint_at: Option<i64>,
    props: parquet::file::properties::WriterPropertiesBuilder,
) {
    let customers: Vec<String> = (0..ROWS).map(|i| format!("c{}", i % 13)).collect();
    let touchpoints: Vec<Option<String>> = (0..ROWS)
        .map(|i| (Some(i) != blank_touchpoint_at).then(|| format!("step_{}", i % 5)))
        .collect();
    let batch = RecordBatch::try_from_iter([
        (
            "customer_id",
            Arc::new(StringArray::from(customers)) as ArrayRef,
        ),
        (
            "ts",
            Arc::new(Int64Array::from_iter_values(0..ROWS)) as ArrayRef,
        ),
        (
            "touchpoint",
            Arc::new(StringArray::from(touchpoints)) as ArrayRef,
        ),
    ])
    .unwrap();
    let props = props.set_compression(Compression::UNCOMPRESSED).build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn input(path: &Path) -> FileInput {
    let mut source = SourceConfig::of_kind(SourceKind::Generic);
    source.time_unit = Some(TimeUnit::S);
    FileInput::new(path, source).unwrap()
}

fn options() -> IngestOptions {
    IngestOptions {
        batch_size: 5,
        ..IngestOptions::default()
    }
}

/// A batch's event times, in seconds.
fn seconds(batch: &RecordBatch) -> Vec<i64> {
    let ts = batch.column_by_name("ts").unwrap();
    let ts = ts.as_primitive::<TimestampMicrosecondType>();
    ts.values().iter().map(|t| t / 1_000_000).collect()
}

/// Reads a file through the Parquet source: event times in the order read (seconds), what
/// ingest counted and the dead letters' text.
fn read(path: &Path, dir: &Path) -> (Vec<i64>, IngestStats, String) {
    let input = input(path);
    let options = options();
    let dead_letters = dir.join("dead.ndjson");
    let mut dead = DeadLetters::new(&dead_letters, None);
    let mut read = Vec::new();
    let stats = file::read_all(&[input], &options, &mut dead, |batch| {
        read.extend(seconds(&batch));
        Ok(())
    })
    .unwrap();
    dead.flush().unwrap();
    let text = std::fs::read_to_string(&dead_letters).unwrap_or_default();
    (read, stats, text)
}

#[test]
fn rows_come_out_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.parquet");
    write(&path, None);
    let (seconds, stats, _) = read(&path, dir.path());
    assert_eq!(seconds, (0..ROWS).collect::<Vec<_>>());
    assert_eq!((stats.records, stats.events, stats.rejected), (200, 200, 0));
}

#[test]
fn a_bad_row_is_rejected_at_its_row_and_the_rest_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.parquet");
    // Row 100 is in the 15th row group, read by another thread than the first.
    write(&path, Some(100));
    let (seconds, stats, dead) = read(&path, dir.path());
    let expected: Vec<i64> = (0..ROWS).filter(|&i| i != 100).collect();
    assert_eq!(seconds, expected);
    assert_eq!((stats.records, stats.events, stats.rejected), (200, 199, 1));
    let letter: serde_json::Value = serde_json::from_str(dead.trim()).unwrap();
    assert_eq!(letter["row"], 100, "{letter}");
}

#[test]
fn a_corrupt_page_stops_the_read_after_the_rows_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.parquet");
    write(&path, None);
    // Garble the first page header of the timestamps of row group 20 (rows 140..147).
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&std::fs::File::open(&path).unwrap())
        .unwrap();
    let column = metadata.row_group(20).column(1);
    let at = column
        .dictionary_page_offset()
        .unwrap_or(column.data_page_offset()) as usize;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at..at + 16].fill(0xff);
    std::fs::write(&path, bytes).unwrap();

    let (seconds, stats, dead) = read(&path, dir.path());
    assert_eq!(seconds, (0..140).collect::<Vec<_>>());
    assert_eq!(stats.rejected, 1, "{stats:?}");
    assert!(
        dead.contains("corrupt Parquet data, reading stopped"),
        "{dead}"
    );
}

/// The rows of parts put in the order of their places.
fn in_place(mut read: Vec<(usize, Vec<i64>)>) -> Vec<i64> {
    read.sort_by_key(|(place, _)| *place);
    read.into_iter().flat_map(|(_, rows)| rows).collect()
}

fn all_of(part: &mut file::FilePart) -> Vec<i64> {
    let mut rows = Vec::new();
    while let Some(batch) = part.next_batch().unwrap() {
        rows.extend(seconds(&batch));
    }
    rows
}

/// Parts end where the rows say, inside row groups and pages: together they are the file's
/// rows once each, in order.
#[test]
fn parts_are_the_files_rows_once_each() {
    let dir = tempfile::tempdir().unwrap();
    for (name, props) in [
        // Row groups of one page each (a part starts inside a page).
        (
            "groups.parquet",
            WriterProperties::builder().set_max_row_group_row_count(Some(ROW_GROUP)),
        ),
        // One row group of pages of 4 rows (a part skips whole pages, then starts inside one).
        (
            "pages.parquet",
            WriterProperties::builder()
                .set_data_page_row_count_limit(4)
                .set_write_batch_size(4)
                .set_dictionary_enabled(false),
        ),
    ] {
        let path = dir.path().join(name);
        write_with(&path, None, props);
        let (whole, _, _) = read(&path, dir.path());
        assert_eq!(whole, (0..ROWS).collect::<Vec<_>>());
        // What a streamed command reads: the columns that map column by column.
        let options = IngestOptions {
            projection: Projection::minimal(),
            ..options()
        };
        // Each reader on a thread of its own, the first one slow: the others take over
        // pieces of its part as they run out.
        for readers in [2, 3, 8] {
            let parts = file::parts(&input(&path), &options, readers)
                .unwrap()
                .unwrap();
            let read: Vec<(usize, Vec<i64>)> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..readers)
                    .map(|reader| {
                        let parts = &parts;
                        scope.spawn(move || {
                            let mut read = Vec::new();
                            while let Some(mut part) = parts.take().unwrap() {
                                let mut rows = Vec::new();
                                while let Some(batch) = part.next_batch().unwrap() {
                                    if reader == 0 {
                                        std::thread::sleep(std::time::Duration::from_millis(1));
                                    }
                                    rows.extend(seconds(&batch));
                                }
                                read.push((part.place(), rows));
                            }
                            read
                        })
                    })
                    .collect();
                (handles.into_iter())
                    .flat_map(|h| h.join().unwrap())
                    .collect()
            });
            assert_eq!(in_place(read), whole, "{name}, {readers} readers");
        }
        // One thread taking turns, so that the order is known: the second part is read
        // while the first has read one batch; the next part taken is the back half of
        // what the first has left.
        let parts = file::parts(&input(&path), &options, 2).unwrap().unwrap();
        let (mut first, mut second) = (
            parts.take().unwrap().unwrap(),
            parts.take().unwrap().unwrap(),
        );
        let mut read = vec![(
            first.place(),
            seconds(&first.next_batch().unwrap().unwrap()),
        )];
        read.push((second.place(), all_of(&mut second)));
        let mut taken = parts
            .take()
            .unwrap()
            .expect("the first part had pieces left");
        assert!(taken.place() > first.place() && taken.place() < second.place());
        read.push((taken.place(), all_of(&mut taken)));
        read[0].1.extend(all_of(&mut first));
        while let Some(mut part) = parts.take().unwrap() {
            read.push((part.place(), all_of(&mut part)));
        }
        let (before, after) = (read[0].1.len(), read[2].1.len());
        assert!(
            before > 0 && after > 0,
            "{name}: {before} then {after} rows"
        );
        assert_eq!(in_place(read), whole, "{name}, taking turns");
    }
}
