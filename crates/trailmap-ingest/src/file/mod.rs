//! The file source: CSV, NDJSON, Parquet and XES files (gzip-compressed text too), each
//! streamed in batches so memory stays bounded by the batch size, not the file size.

mod csv;
mod flat;
mod ndjson;
mod parquet;
mod row_groups;
mod shares;
mod xes;

use crate::dead_letter::{DeadLetters, Location};
use crate::mapper::{Outcome, Record, RowMapper};
use arrow::array::RecordBatch;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use trailmap_model::config::{FieldMapping, FieldRef, FileFormat, SourceConfig, SourceKind};
use trailmap_model::{Catalog, Error, Result};

/// One file to read, with the source config whose mapping applies to it.
#[derive(Debug, Clone)]
pub struct FileInput {
    pub path: PathBuf,
    pub format: FileFormat,
    pub source: SourceConfig,
}

impl FileInput {
    /// The format comes from the source config, else from the file's extension.
    pub fn new(path: impl Into<PathBuf>, source: SourceConfig) -> Result<FileInput> {
        let path = path.into();
        let format = match source.format.or_else(|| FileFormat::from_path(&path)) {
            Some(f) => f,
            None => {
                return Err(Error::input(
                    &path,
                    "cannot tell the format from the extension; name the file .csv, .tsv, \
                     .ndjson, .jsonl, .parquet, .xes or .xes.gz (optionally .gz)",
                ));
            }
        };
        Ok(FileInput {
            path,
            format,
            source,
        })
    }

    /// The effective field mapping. Generic XES logs default to the XES standard keys: the
    /// trace's `concept:name` is the customer (case), the event's `concept:name` the
    /// touchpoint and `time:timestamp` the time.
    pub fn mapping(&self) -> Result<FieldMapping> {
        let mut mapping = self.source.mapping().map_err(|(field, message)| {
            Error::config(
                format!("source `{}` fields.{field}", self.source.name),
                message,
            )
        })?;
        if self.source.kind == SourceKind::Generic && self.format == FileFormat::Xes {
            for (field, default) in [
                ("customer_id", "case:concept:name"),
                ("ts", "time:timestamp"),
                ("touchpoint", "concept:name"),
            ] {
                if !self.source.fields.contains_key(field) {
                    mapping
                        .set(field, vec![FieldRef::parse(default)])
                        .map_err(Error::Other)?;
                }
            }
        }
        Ok(mapping)
    }
}

/// Which optional canonical columns to materialise. Summaries and path mining need neither
/// event ids nor properties; skipping them saves most of the per-row allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Projection {
    pub event_id: bool,
    pub properties: bool,
    /// The record's own channel column (the catalog's channels come either way). A reader
    /// that only follows touchpoints through time skips decoding it.
    pub channel: bool,
}

impl Default for Projection {
    fn default() -> Self {
        Projection {
            event_id: true,
            properties: true,
            channel: true,
        }
    }
}

impl Projection {
    /// Only what stitching, ordering and sessions need (and the record channel, which
    /// breakdowns and the live map show).
    pub fn minimal() -> Self {
        Projection {
            event_id: false,
            properties: false,
            channel: true,
        }
    }
}

#[derive(Clone)]
pub struct IngestOptions {
    pub catalog: Arc<Catalog>,
    pub batch_size: usize,
    pub projection: Projection,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            catalog: Arc::new(Catalog::passthrough()),
            batch_size: 8192,
            projection: Projection::default(),
        }
    }
}

/// What a source read, by outcome.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct IngestStats {
    /// Records seen (rows, lines, XES events).
    pub records: u64,
    /// Records that became events with a touchpoint.
    pub events: u64,
    /// Identity-only records (identify calls).
    pub links: u64,
    /// Records the catalog drops (`unmatched = "drop"`).
    pub dropped: u64,
    /// Records rejected to the dead letters.
    pub rejected: u64,
    /// Of those, by the source they came from (the `[[sources]]` name), where the reader
    /// knows it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected_by_source: BTreeMap<String, u64>,
}

impl IngestStats {
    /// Books one record read and rejected.
    pub fn count_rejected(&mut self) {
        self.records += 1;
        self.rejected += 1;
    }

    /// Books one record read and not rejected.
    pub fn count(&mut self, outcome: Outcome) {
        self.records += 1;
        match outcome {
            Outcome::Event => self.events += 1,
            Outcome::Link => self.links += 1,
            Outcome::Dropped => self.dropped += 1,
        }
    }

    pub fn add(&mut self, other: &IngestStats) {
        self.records += other.records;
        self.events += other.events;
        self.links += other.links;
        self.dropped += other.dropped;
        self.rejected += other.rejected;
        for (source, n) in &other.rejected_by_source {
            *self.rejected_by_source.entry(source.clone()).or_default() += n;
        }
    }

    /// These counts, all of one source's reading: its rejections booked under `source`.
    pub fn of_source(mut self, source: &str) -> IngestStats {
        self.rejected_by_source.clear();
        if self.rejected > 0 {
            self.rejected_by_source
                .insert(source.to_string(), self.rejected);
        }
        self
    }
}

/// A stream of canonical batches.
pub trait BatchSource: Send {
    /// The next batch, `None` once the input is exhausted. Rejected records go to `dead`;
    /// an error means the input cannot be read further (or the error budget is spent).
    fn next_batch(&mut self, dead: &mut DeadLetters) -> Result<Option<RecordBatch>>;

    fn stats(&self) -> &IngestStats;

    /// Bytes of the file consumed so far (compressed bytes for .gz), for progress.
    fn bytes_read(&self) -> u64;
}

/// Opens a file as a batch source.
pub fn open(input: &FileInput, options: &IngestOptions) -> Result<Box<dyn BatchSource>> {
    let mapping = input.mapping()?;
    match input.format {
        FileFormat::Csv => Ok(Box::new(csv::CsvSource::open(input, &mapping, options)?)),
        FileFormat::Ndjson => Ok(Box::new(ndjson::NdjsonSource::open(
            input, &mapping, options,
        )?)),
        FileFormat::Parquet => Ok(Box::new(parquet::ParquetSource::open(
            input, &mapping, options,
        )?)),
        FileFormat::Xes => Ok(Box::new(xes::XesSource::open(input, &mapping, options)?)),
    }
}

pub use parquet::NotColumnar;

/// A file read in parts by several threads side by side (see [`parts`]).
pub struct FileParts(parquet::Parts);

impl FileParts {
    /// A part to read, or `None` when every record is read or being read. A thread takes
    /// parts until there are none: first one of the parts the file was split into, then
    /// the back half of what the part with the most left has not read yet (the parts are
    /// shared out as the threads go, so the thread that reads faster reads more).
    pub fn take(&self) -> Result<Option<FilePart>> {
        let part = self.0.take()?;
        Ok(part.map(|(place, source)| FilePart { source, place }))
    }
}

/// One of the contiguous parts of a file read side by side (see [`FileParts`]).
pub struct FilePart {
    source: parquet::ParquetSource,
    place: usize,
}

impl FilePart {
    /// The part's next batch, in file order. [`NotColumnar`] says the file has records
    /// only the general reader ([`open`]) rejects and reports properly: read it that way.
    pub fn next_batch(&mut self) -> std::result::Result<Option<RecordBatch>, NotColumnar> {
        self.source.next_columnar()
    }

    /// Where the part lies in the file: the parts of a file, read to their ends and put in
    /// the order of their places, are its records in order, each once.
    pub fn place(&self) -> usize {
        self.place
    }
}

/// A file to be read in parts by `readers` threads side by side, each decoding what it
/// reads and consuming its batches while they are still in its cache, with no thread
/// handing batches to another. The parts are contiguous runs of the file's records, shared
/// out as the threads go (see [`FileParts::take`]). `None` when the file cannot be read in
/// parts (only Parquet files of two records or more whose columns map column by column
/// can); read it with [`open`].
pub fn parts(
    input: &FileInput,
    options: &IngestOptions,
    readers: usize,
) -> Result<Option<FileParts>> {
    match input.format {
        FileFormat::Parquet => {
            Ok(parquet::parts(input, &input.mapping()?, options, readers)?.map(FileParts))
        }
        FileFormat::Csv | FileFormat::Ndjson | FileFormat::Xes => Ok(None),
    }
}

/// How many records a file holds, when its format says so without reading it (Parquet's
/// footer): a reader can then make room for them at once. `None` for the text formats, or
/// when the footer cannot be read (opening the file reports why).
pub fn records_hint(input: &FileInput) -> Option<u64> {
    match input.format {
        FileFormat::Parquet => parquet::records_in(&input.path),
        FileFormat::Csv | FileFormat::Ndjson | FileFormat::Xes => None,
    }
}

/// Reads every file in order, handing each batch to `sink`.
pub fn read_all(
    inputs: &[FileInput],
    options: &IngestOptions,
    dead: &mut DeadLetters,
    mut sink: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<IngestStats> {
    let mut total = IngestStats::default();
    for input in inputs {
        let mut source = open(input, options)?;
        while let Some(batch) = source.next_batch(dead)? {
            sink(batch)?;
        }
        total.add(source.stats());
    }
    dead.flush()?;
    Ok(total)
}

/// Shared by the readers: counts bytes pulled from the file, for progress bars.
#[derive(Clone, Default)]
pub(crate) struct ByteCounter(Arc<AtomicU64>);

impl ByteCounter {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Counting<R> {
    inner: R,
    counter: ByteCounter,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a text file, transparently decompressing gzip (recognised by its magic bytes, so
/// a misnamed file still reads).
pub(crate) fn open_text(path: &Path) -> Result<(Box<dyn BufRead + Send>, ByteCounter)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let counter = ByteCounter::default();
    let mut raw = BufReader::with_capacity(
        1 << 16,
        Counting {
            inner: file,
            counter: counter.clone(),
        },
    );
    let is_gzip = raw
        .fill_buf()
        .map_err(|e| Error::io(path, e))?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn BufRead + Send> = if is_gzip {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(raw),
        ))
    } else {
        Box::new(raw)
    };
    Ok((reader, counter))
}

/// A mapper for formats addressed by path (NDJSON, XES): every field reference resolves,
/// absent fields simply have no value in a record.
pub(crate) fn path_mapper(
    input: &FileInput,
    mapping: &FieldMapping,
    options: &IngestOptions,
) -> Result<RowMapper<FieldRef>> {
    RowMapper::new(
        &input.source,
        mapping,
        options.catalog.clone(),
        options.projection,
        |r| Some(r.clone()),
    )
    .map_err(|m| Error::input(&input.path, m))
}

/// Maps one record and books the outcome: counted, or rejected to the dead letters.
pub(crate) fn book<K, R: Record<K>>(
    mapper: &mut RowMapper<K>,
    record: &R,
    stats: &mut IngestStats,
    dead: &mut DeadLetters,
    path: &Path,
    location: Location,
    raw: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<()> {
    match mapper.map(record) {
        Ok(outcome) => stats.count(outcome),
        Err(reason) => reject(stats, dead, path, location, &reason, raw().as_deref())?,
    }
    Ok(())
}

/// Books one record read and rejected, and hands it to the dead letters.
pub(crate) fn reject(
    stats: &mut IngestStats,
    dead: &mut DeadLetters,
    path: &Path,
    location: Location,
    reason: &str,
    raw: Option<&[u8]>,
) -> Result<()> {
    stats.count_rejected();
    dead.reject(path, location, reason, raw)
}
