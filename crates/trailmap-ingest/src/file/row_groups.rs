//! Parquet row groups decoded on several threads, handed on in file order.
//!
//! Decompressing and decoding pages is a third of a Parquet load, and row groups are
//! independent: each decode thread takes every `n`-th row group and decodes it into Arrow
//! batches, while the reading thread maps the batches of the row group whose turn it is.
//! The order of rows is the file's, as with one reader (ties in time keep it).

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::errors::ParquetError;
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

/// Row groups decoded on `threads` threads.
pub(crate) struct RowGroupReader {
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
        for k in 0..threads {
            // Each thread reads through its own handle of the file.
            let file = File::open(path)?;
            let (tx, rx) = sync_channel(ahead);
            let (metadata, mask) = (metadata.clone(), mask.clone());
            let handle = std::thread::Builder::new()
                .name(format!("parquet-decode-{k}"))
                .spawn(move || {
                    decode(
                        file,
                        metadata,
                        mask,
                        batch_size,
                        (k..row_groups).step_by(threads),
                        tx,
                    )
                })?;
            receivers.push(rx);
            handles.push(Some(handle));
        }
        Ok(RowGroupReader {
            receivers,
            threads: handles,
            current: 0,
            row_groups,
        })
    }
}

/// Decodes `row_groups` in order, each followed by [`Decoded::End`]. Stops at the first
/// error (sent on) or when the reader has gone.
fn decode(
    file: File,
    metadata: ArrowReaderMetadata,
    mask: ProjectionMask,
    batch_size: usize,
    row_groups: impl Iterator<Item = usize>,
    tx: SyncSender<Decoded>,
) {
    for rg in row_groups {
        let reader = match file.try_clone() {
            Ok(file) => ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata.clone())
                .with_projection(mask.clone())
                .with_row_groups(vec![rg])
                .with_batch_size(batch_size)
                .build(),
            Err(e) => Err(ParquetError::External(Box::new(e))),
        };
        let reader = match reader {
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

impl Iterator for RowGroupReader {
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

impl Drop for RowGroupReader {
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
