//! Newline-delimited JSON (`.ndjson`, `.jsonl`), gzip too. Fields are addressed by JSON
//! pointer (`context/traits/email`).

use super::{ByteCounter, FileInput, IngestOptions, IngestStats, book, open_text, reject};
use crate::dead_letter::{DeadLetters, Location};
use crate::mapper::{Record, RowMapper, stable_hash};
use crate::value::Value;
use arrow::array::RecordBatch;
use std::io::BufRead;
use std::path::PathBuf;
use trailmap_model::Result;
use trailmap_model::config::{FieldMapping, FieldRef};

pub(crate) struct NdjsonSource {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    mapper: RowMapper<FieldRef>,
    /// Top-level keys the mapping uses; the rest go to properties.
    used: Vec<String>,
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
        let mapper = super::path_mapper(input, mapping, options)?;
        let used = mapping
            .used_names()
            .iter()
            .map(|n| n.split('/').next().unwrap_or(n).to_string())
            .collect();
        Ok(NdjsonSource {
            path: input.path.clone(),
            reader,
            mapper,
            used,
            line: Vec::new(),
            line_no: 0,
            batch_size: options.batch_size,
            stats: IngestStats::default(),
            counter,
            done: false,
        })
    }
}

struct JsonRow<'a> {
    value: &'a serde_json::Value,
    raw: &'a [u8],
    used: &'a [String],
}

fn lookup<'v>(mut v: &'v serde_json::Value, field: &FieldRef) -> Option<&'v serde_json::Value> {
    if let Some(direct) = v.get(&field.name) {
        return Some(direct);
    }
    for seg in &field.segments {
        v = match v {
            serde_json::Value::Object(m) => m.get(seg)?,
            serde_json::Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

impl Record<FieldRef> for JsonRow<'_> {
    fn get(&self, key: &FieldRef) -> Option<Value<'_>> {
        lookup(self.value, key).and_then(Value::from_json)
    }

    fn rest_properties(&self) -> Option<String> {
        let obj = self.value.as_object()?;
        let rest: serde_json::Map<_, _> = obj
            .iter()
            .filter(|(k, v)| !v.is_null() && !self.used.iter().any(|u| u == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!rest.is_empty()).then(|| serde_json::Value::Object(rest).to_string())
    }

    fn raw_hash(&self) -> u64 {
        stable_hash(self.raw)
    }
}

impl super::BatchSource for NdjsonSource {
    fn next_batch(&mut self, dead: &mut DeadLetters) -> Result<Option<RecordBatch>> {
        while !self.done && self.mapper.pending() < self.batch_size {
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
                    let value: serde_json::Value = match serde_json::from_slice(text) {
                        Ok(v) => v,
                        Err(e) => {
                            let reason = format!("invalid JSON: {e}");
                            reject(
                                &mut self.stats,
                                dead,
                                &self.path,
                                location,
                                &reason,
                                Some(text),
                            )?;
                            continue;
                        }
                    };
                    if !value.is_object() {
                        reject(
                            &mut self.stats,
                            dead,
                            &self.path,
                            location,
                            "not a JSON object",
                            Some(text),
                        )?;
                        continue;
                    }
                    let row = JsonRow {
                        value: &value,
                        raw: text,
                        used: &self.used,
                    };
                    book(
                        &mut self.mapper,
                        &row,
                        &mut self.stats,
                        dead,
                        &self.path,
                        location,
                        || Some(text.to_vec()),
                    )?;
                }
                Err(e) => {
                    let reason = format!("input is truncated or corrupt, reading stopped: {e}");
                    let location = Location::Line(self.line_no + 1);
                    reject(&mut self.stats, dead, &self.path, location, &reason, None)?;
                    self.done = true;
                }
            }
        }
        Ok(self.mapper.take_batch())
    }

    fn stats(&self) -> &IngestStats {
        &self.stats
    }

    fn bytes_read(&self) -> u64 {
        self.counter.get()
    }
}
