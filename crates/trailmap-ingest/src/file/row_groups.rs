//! Parquet row groups decoded on several threads, handed on in file order.
//!
//! Decompressing and decoding pages is a third of a Parquet load, and row groups are
//! independent: each decode thread takes every `n`-th row group and decodes it into Arrow
//! batches, while the reading thread maps the batches of the row group whose turn it is.
//! The order of rows is the file's, as with one reader (ties in time keep it). The threads
//! read a regular file through one memory mapping (see `mapped`), anything else through
//! their own handles. A reader of one part of a file, itself one of several threads that
//! each read a part, decodes on its own thread instead ([`RowGroupReader::inline`]).
//! Whole row groups of a mapped file whose columns are flat are decoded by the page decoder
//! of [`super::flat`]; the rest, and files that are not mapped, by the Arrow reader.

use super::flat;
use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::errors::ParquetError;
use parquet::file::reader::ChunkReader;
use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// What a decode thread hands on: a batch of the row group being read, or its end.
enum Decoded {
    Batch(Result<RecordBatch, ArrowError>),
    End,
}

/// Batches a thread decodes ahead, at least and at most. A thread should get a whole row
/// group ahead: while the reader takes the batches of one thread's row group, the others
/// decode their next ones (with a few batches only, they stopped and waited, and the
/// threads took turns instead of working together). The most bounds memory for files with
/// huge row groups: 256 batches of 8192 rows of three columns is ~40 MB a thread.
const AHEAD: std::ops::RangeInclusive<usize> = 4..=256;

/// A file's row groups as batches in file order: decoded on threads of their own, or on the
/// caller's thread when the caller is itself one of several threads reading parts of the
/// file (see [`RowGroupReader::inline`]).
pub(crate) enum RowGroupReader {
    Threads(Threaded),
    Inline(Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>),
}

/// Row groups decoded on several threads.
pub(crate) struct Threaded {
    receivers: Vec<Receiver<Decoded>>,
    /// Each thread's, until joined.
    threads: Vec<Option<JoinHandle<()>>>,
    /// The row group whose batches come next, and how many there are.
    current: usize,
    row_groups: usize,
}

impl RowGroupReader {
    /// Starts the decode threads over the file at `path` (whose footer is `metadata`),
    /// reading the columns of `mask` in batches of `batch_size` rows.
    pub(crate) fn start(
        path: &Path,
        metadata: &ArrowReaderMetadata,
        mask: &ProjectionMask,
        batch_size: usize,
        threads: usize,
    ) -> std::io::Result<RowGroupReader> {
        Threaded::start(path, metadata, mask, batch_size, threads).map(RowGroupReader::Threads)
    }

    /// Runs of rows of the file at `path`, each as row groups and which of their rows
    /// (counted from the first of them), decoded on the caller's thread as it asks for
    /// batches: a part of a file read by one of several threads, each decoding and
    /// consuming its own batches while they are in cache. `runs` is asked for the next run
    /// when one is read (a part claims its pieces as it goes).
    pub(crate) fn inline(
        path: &Path,
        metadata: &ArrowReaderMetadata,
        mask: &ProjectionMask,
        batch_size: usize,
        runs: impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)> + Send + 'static,
    ) -> std::io::Result<RowGroupReader> {
        let file = File::open(path)?;
        let mapped = mapped::map(&file);
        let (metadata, mask) = (metadata.clone(), mask.clone());
        let reader = runs.flat_map(move |(row_groups, rows)| {
            let row_groups: Vec<usize> = row_groups.collect();
            let reader = match &mapped {
                Some(bytes) => mapped_batches(
                    bytes.clone(),
                    &metadata,
                    &mask,
                    batch_size,
                    row_groups,
                    Some(rows),
                ),
                None => match file.try_clone() {
                    Ok(file) => batches(file, &metadata, &mask, batch_size, row_groups, Some(rows))
                        .map(|r| Box::new(r) as Batches),
                    Err(e) => Err(ParquetError::External(Box::new(e))),
                },
            };
            let batches: Batches = match reader {
                Ok(reader) => reader,
                Err(e) => Box::new(std::iter::once(Err(e.into()))),
            };
            batches
        });
        Ok(RowGroupReader::Inline(Box::new(reader)))
    }
}

impl Threaded {
    fn start(
        path: &Path,
        metadata: &ArrowReaderMetadata,
        mask: &ProjectionMask,
        batch_size: usize,
        threads: usize,
    ) -> std::io::Result<Threaded> {
        let row_groups = metadata.metadata().num_row_groups();
        let threads = threads.clamp(1, row_groups.max(1));
        let largest = (metadata.metadata().row_groups().iter())
            .map(|rg| usize::try_from(rg.num_rows()).unwrap_or(usize::MAX))
            .max()
            .unwrap_or(0);
        let ahead = (largest / batch_size.max(1))
            .saturating_add(2)
            .clamp(*AHEAD.start(), *AHEAD.end());
        let mut receivers = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        // The threads read the file's pages where the kernel keeps them: reading them into
        // buffers of our own copied every byte and faulted in fresh pages to hold them.
        let mapped = mapped::map(&File::open(path)?);
        for k in 0..threads {
            let (tx, rx) = sync_channel(ahead);
            let (metadata, mask) = (metadata.clone(), mask.clone());
            let row_groups = (k..row_groups).step_by(threads);
            let thread = std::thread::Builder::new().name(format!("parquet-decode-{k}"));
            let handle = match &mapped {
                Some(bytes) => {
                    let bytes = bytes.clone();
                    thread.spawn(move || {
                        let batches = |rg| {
                            mapped_batches(
                                bytes.clone(),
                                &metadata,
                                &mask,
                                batch_size,
                                vec![rg],
                                None,
                            )
                        };
                        decode(batches, row_groups, tx)
                    })?
                }
                None => {
                    // Each thread reads through its own handle of the file.
                    let file = File::open(path)?;
                    thread.spawn(move || {
                        let batches = |rg| {
                            let file = file
                                .try_clone()
                                .map_err(|e| ParquetError::External(Box::new(e)))?;
                            batches(file, &metadata, &mask, batch_size, vec![rg], None)
                                .map(|r| Box::new(r) as Batches)
                        };
                        decode(batches, row_groups, tx)
                    })?
                }
            };
            receivers.push(rx);
            handles.push(Some(handle));
        }
        Ok(Threaded {
            receivers,
            threads: handles,
            current: 0,
            row_groups,
        })
    }
}

/// Decodes `row_groups` in order, each followed by [`Decoded::End`], each read by what
/// `batches` gives for it. Stops at the first error (sent on) or when the reader has gone.
fn decode(
    batches: impl Fn(usize) -> Result<Batches, ParquetError>,
    row_groups: impl Iterator<Item = usize>,
    tx: SyncSender<Decoded>,
) {
    for rg in row_groups {
        let reader = match batches(rg) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Decoded::Batch(Err(e.into())));
                return;
            }
        };
        for batch in reader {
            let failed = batch.is_err();
            if tx.send(Decoded::Batch(batch)).is_err() || failed {
                return;
            }
        }
        if tx.send(Decoded::End).is_err() {
            return;
        }
    }
}

/// Batches of a file, by whichever reader decodes them.
type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

/// [`batches`] of a file in memory: whole row groups of flat columns are decoded by the
/// flat reader (see [`super::flat`]), the rest by the Arrow reader.
fn mapped_batches(
    bytes: Bytes,
    metadata: &ArrowReaderMetadata,
    mask: &ProjectionMask,
    batch_size: usize,
    row_groups: Vec<usize>,
    rows: Option<std::ops::Range<usize>>,
) -> Result<Batches, ParquetError> {
    let group_rows: usize = (row_groups.iter())
        .map(|&rg| metadata.metadata().row_group(rg).num_rows())
        .map(|r| usize::try_from(r).unwrap_or(usize::MAX))
        .fold(0, usize::saturating_add);
    let whole = rows.as_ref().is_none_or(|r| *r == (0..group_rows));
    if whole && std::env::var_os("TRAILMAP_ARROW_READER").is_none() {
        let fallback: flat::Fallback = {
            let (bytes, metadata, mask) = (bytes.clone(), metadata.clone(), mask.clone());
            let row_groups = row_groups.clone();
            Box::new(move |first| {
                batches(
                    bytes.clone(),
                    &metadata,
                    &mask,
                    batch_size,
                    row_groups.clone(),
                    Some(first..group_rows),
                )
            })
        };
        let file = std::sync::Arc::new(bytes.clone());
        if let Some(flat) = flat::batches(
            file,
            metadata,
            mask,
            batch_size,
            row_groups.clone(),
            fallback,
        ) {
            return Ok(Box::new(flat));
        }
    }
    batches(bytes, metadata, mask, batch_size, row_groups, rows).map(|r| Box::new(r) as Batches)
}

/// The batches of `row_groups` (only `rows` of theirs, counted from their first, when
/// given), read through `file`.
fn batches<R: ChunkReader + 'static>(
    file: R,
    metadata: &ArrowReaderMetadata,
    mask: &ProjectionMask,
    batch_size: usize,
    row_groups: Vec<usize>,
    rows: Option<std::ops::Range<usize>>,
) -> Result<ParquetRecordBatchReader, ParquetError> {
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata.clone())
        .with_projection(mask.clone())
        .with_row_groups(row_groups)
        .with_batch_size(batch_size);
    match rows {
        // Pages wholly before the rows are skipped unread (the reader knows a page's rows
        // from its header), and reading stops after them.
        Some(rows) => builder.with_offset(rows.start).with_limit(rows.len()),
        None => builder,
    }
    .build()
}

mod mapped {
    //! A file's bytes mapped into memory, as `Bytes` the Parquet reader slices without
    //! copying.

    use bytes::Bytes;
    use std::fs::File;

    /// The pages of a mapping, unmapped when the last `Bytes` over them goes.
    struct Mapping {
        at: *mut std::ffi::c_void,
        len: usize,
    }

    // The mapping is read-only memory owned by this value alone.
    unsafe impl Send for Mapping {}
    unsafe impl Sync for Mapping {}

    impl AsRef<[u8]> for Mapping {
        fn as_ref(&self) -> &[u8] {
            // SAFETY: `at` is a live mapping of `len` readable bytes until `drop`.
            unsafe { std::slice::from_raw_parts(self.at.cast::<u8>(), self.len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: `at` and `len` are the mapping `map` made; nothing reads it now.
            // Nothing to do if unmapping fails: the process keeps the pages.
            let _ = unsafe { rustix::mm::munmap(self.at, self.len) };
        }
    }

    /// `file` mapped read-only, or `None` where it cannot be (empty, not a regular file,
    /// no address space): read it then.
    pub(super) fn map(file: &File) -> Option<Bytes> {
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: a private read-only mapping of the whole file. As every reader that maps
        // (DuckDB, ClickHouse, polars), it assumes nobody truncates or rewrites the input
        // while it is read: the Parquet footer was read before and would not match anyway.
        let at = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::PRIVATE,
                file,
                0,
            )
        }
        .ok()?;
        Some(Bytes::from_owner(Mapping { at, len }))
    }
}

impl Iterator for RowGroupReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            RowGroupReader::Threads(threads) => threads.next(),
            RowGroupReader::Inline(reader) => reader.next(),
        }
    }
}

impl Iterator for Threaded {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.current < self.row_groups {
            let k = self.current % self.receivers.len();
            match self.receivers[k].recv() {
                Ok(Decoded::Batch(batch)) => return Some(batch),
                Ok(Decoded::End) => self.current += 1,
                // A thread hangs up early only after sending its error, which was handed on
                // (the reader does not ask again after an error), or by panicking: the
                // panic is the reader's, as it was when decoding ran on its own thread.
                Err(_) => {
                    self.current = self.row_groups;
                    if let Some(thread) = self.threads.get_mut(k).and_then(Option::take)
                        && let Err(panic) = thread.join()
                    {
                        std::panic::resume_unwind(panic);
                    }
                    return Some(Err(ArrowError::ExternalError(
                        "a Parquet decode thread stopped early".into(),
                    )));
                }
            }
        }
        None
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        // Hanging up first lets threads blocked on a full channel stop.
        self.receivers.clear();
        for thread in self.threads.drain(..).flatten() {
            // A panic while the reader is going away is not worth a second one.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ArrowReaderOptions;
    use parquet::file::properties::WriterProperties;

    #[test]
    fn a_mapped_file_is_its_bytes_and_outlives_its_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bytes");
        let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let mapped = mapped::map(&File::open(&path).unwrap()).expect("a regular file maps");
        // The handle is closed; the mapping and its slices stay readable.
        let slice = mapped.slice(4096..4100);
        drop(mapped);
        assert_eq!(&slice[..], &content[4096..4100]);
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(mapped::map(&File::open(&empty).unwrap()).is_none());
    }

    /// A file of `rows` rows `0..rows` in row groups of `group` rows.
    fn file(dir: &Path, rows: i64, group: usize) -> (std::path::PathBuf, ArrowReaderMetadata) {
        let path = dir.join(format!("{rows}-{group}.parquet"));
        let batch = RecordBatch::try_from_iter([(
            "n",
            std::sync::Arc::new(Int64Array::from_iter_values(0..rows)) as _,
        )])
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(group))
            .build();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), Some(props))
            .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let metadata =
            ArrowReaderMetadata::load(&File::open(&path).unwrap(), ArrowReaderOptions::new())
                .unwrap();
        (path, metadata)
    }

    fn numbers(reader: RowGroupReader) -> Vec<i64> {
        reader
            .flat_map(|b| {
                let b = b.unwrap();
                let n = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                n.values().to_vec()
            })
            .collect()
    }

    #[test]
    fn three_threads_hand_rows_on_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let (path, metadata) = file(dir.path(), 1000, 37);
        let mask = ProjectionMask::all();
        for (threads, batch) in [(3, 10), (3, 1000), (5, 7), (1, 64)] {
            let reader = RowGroupReader::start(&path, &metadata, &mask, batch, threads).unwrap();
            assert_eq!(
                numbers(reader),
                (0..1000).collect::<Vec<_>>(),
                "{threads} threads"
            );
        }
    }

    #[test]
    fn a_file_without_rows_has_no_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (path, metadata) = file(dir.path(), 0, 10);
        let reader = RowGroupReader::start(&path, &metadata, &ProjectionMask::all(), 8, 3).unwrap();
        assert!(numbers(reader).is_empty());
    }

    #[test]
    fn dropping_the_reader_early_stops_its_threads() {
        let dir = tempfile::tempdir().unwrap();
        let (path, metadata) = file(dir.path(), 100_000, 100);
        let mut reader =
            RowGroupReader::start(&path, &metadata, &ProjectionMask::all(), 10, 3).unwrap();
        assert!(reader.next().is_some_and(|b| b.is_ok()));
        // Threads blocked on full channels must notice the hang-up; Drop joins them.
        drop(reader);
    }
}
