//! Parquet row groups decoded on several threads, handed on in file order.
//!
//! Decompressing and decoding pages is a third of a Parquet load, and row groups are
//! independent: each decode thread takes every `n`-th row group and decodes it into Arrow
//! batches, while the reading thread maps the batches of the row group whose turn it is.
//! The order of rows is the file's, as with one reader (ties in time keep it).

use arrow::array::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::errors::ParquetError;
use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// What a decode thread hands on: a batch of the row group being read, or its end.
enum Decoded {
    Batch(Result<RecordBatch, ParquetError>),
    End,
}

/// Batches decoded ahead per thread: enough to keep the decoder busy, few enough that
/// memory stays a few batches per thread.
const AHEAD: usize = 4;

/// Row groups decoded on `threads` threads.
pub(crate) struct RowGroupReader {
    receivers: Vec<Receiver<Decoded>>,
    threads: Vec<JoinHandle<()>>,
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
        let mut receivers = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for k in 0..threads {
            // Each thread reads through its own handle of the file.
            let file = File::open(path)?;
            let (tx, rx) = sync_channel(AHEAD);
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
            handles.push(handle);
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
                let _ = tx.send(Decoded::Batch(Err(e)));
                return;
            }
        };
        for batch in reader {
            let failed = batch.is_err();
            let batch = batch.map_err(|e| ParquetError::External(Box::new(e)));
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
    type Item = Result<RecordBatch, ParquetError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.current < self.row_groups {
            let rx = &self.receivers[self.current % self.receivers.len()];
            match rx.recv() {
                Ok(Decoded::Batch(batch)) => return Some(batch),
                Ok(Decoded::End) => self.current += 1,
                // The thread stopped after sending its error, which was handed on: the
                // reader does not ask again after an error.
                Err(_) => {
                    self.current = self.row_groups;
                    return Some(Err(ParquetError::General(
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
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
