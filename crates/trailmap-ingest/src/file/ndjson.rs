//! Newline-delimited JSON (`.ndjson`, `.jsonl`), gzip too: one [`JsonDecoder`] record per
//! line.

use super::{ByteCounter, FileInput, IngestOptions, IngestStats, open_text, reject};
use crate::dead_letter::{DeadLetters, Location};
use crate::json::JsonDecoder;
use arrow::array::RecordBatch;
use std::io::BufRead;
use std::path::PathBuf;
use trailmap_model::config::FieldMapping;
use trailmap_model::{Error, Result};

pub(crate) struct NdjsonSource {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    decoder: JsonDecoder,
    line: Vec<u8>,
    line_no: u64,
    batch_size: usize,
    stats: IngestStats,
    counter: ByteCounter,
    done: bool,
}

impl NdjsonSource {
    pub(crate) fn open(
        input: &FileInput,
        mapping: &FieldMapping,
        options: &IngestOptions,
    ) -> Result<Self> {
        let (reader, counter) = open_text(&input.path)?;
        let decoder = JsonDecoder::new(
            &input.source,
            mapping,
            options.catalog.clone(),
            options.projection,
        )
        .map_err(|m| Error::input(&input.path, m))?;
        Ok(NdjsonSource {
            path: input.path.clone(),
            reader,
            decoder,
            line: Vec::new(),
            line_no: 0,
            batch_size: options.batch_size,
            stats: IngestStats::default(),
            counter,
            done: false,
        })
    }
}

impl super::BatchSource for NdjsonSource {
    fn next_batch(&mut self, dead: &mut DeadLetters) -> Result<Option<RecordBatch>> {
        while !self.done && self.decoder.pending() < self.batch_size {
            self.line.clear();
            match self.reader.read_until(b'\n', &mut self.line) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line_no += 1;
                    let location = Location::Line(self.line_no);
                    let text = self.line.trim_ascii();
                    if text.is_empty() {
                        continue;
                    }
                    match self.decoder.decode(text) {
                        Ok(outcome) => self.stats.count(outcome),
                        Err(reason) => reject(
                            &mut self.stats,
                            dead,
                            &self.path,
                            location,
                            &reason,
                            Some(text),
                        )?,
                    }
                }
                Err(e) => {
                    let reason = format!("input is truncated or corrupt, reading stopped: {e}");
                    let location = Location::Line(self.line_no + 1);
                    reject(&mut self.stats, dead, &self.path, location, &reason, None)?;
                    self.done = true;
                }
            }
        }
        Ok(self.decoder.take_batch())
    }

    fn stats(&self) -> &IngestStats {
        &self.stats
    }

    fn bytes_read(&self) -> u64 {
        self.counter.get()
    }
}
