//! CSV (and TSV): header or `--no-header --columns`, any one-byte delimiter (sniffed from
//! the first line when not given), gzip.

use super::{ByteCounter, FileInput, IngestOptions, IngestStats, book, open_text, reject};
use crate::dead_letter::{DeadLetters, Location};
use crate::mapper::{Record, RowMapper, stable_hash};
use crate::value::Value;
use arrow::array::RecordBatch;
use std::borrow::Cow;
use std::io::BufRead;
use std::path::PathBuf;
use trailmap_model::config::FieldMapping;
use trailmap_model::{Error, Result};

pub(crate) struct CsvSource {
    path: PathBuf,
    /// `None` for an empty file: it simply has no records.
    reader: Option<csv::Reader<Box<dyn BufRead + Send>>>,
    mapper: Option<RowMapper<usize>>,
    columns: Vec<String>,
    /// Columns the mapping uses: their text must be valid UTF-8, the rest go to properties.
    used: Vec<bool>,
    record: csv::ByteRecord,
    batch_size: usize,
    /// Blank lines skipped before the header, added back to reported line numbers.
    line_offset: u64,
    stats: IngestStats,
    counter: ByteCounter,
    done: bool,
}

impl CsvSource {
    pub(crate) fn open(
        input: &FileInput,
        mapping: &FieldMapping,
        options: &IngestOptions,
    ) -> Result<Self> {
        let path = &input.path;
        let (mut text, counter) = open_text(path)?;
        let opts = &input.source.csv;
        let header = opts.header.unwrap_or(true);
        let (skipped, first_line) = skip_blank_lines(&mut text).map_err(|e| Error::io(path, e))?;
        let empty = CsvSource {
            path: path.clone(),
            reader: None,
            mapper: None,
            columns: Vec::new(),
            used: Vec::new(),
            record: csv::ByteRecord::new(),
            batch_size: options.batch_size,
            line_offset: skipped,
            stats: IngestStats::default(),
            counter: counter.clone(),
            done: true,
        };
        if first_line.is_empty() {
            return Ok(empty);
        }
        let delimiter = match &opts.delimiter {
            Some(d) => parse_delimiter(d).ok_or_else(|| {
                Error::input(path, format!("delimiter `{d}` must be one ASCII character"))
            })?,
            None if path.to_string_lossy().to_ascii_lowercase().contains(".tsv") => b'\t',
            None => sniff_delimiter(&first_line),
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(header)
            .flexible(true)
            .from_reader(text);
        let columns: Vec<String> = if header {
            let h = reader
                .byte_headers()
                .map_err(|e| Error::input(path, format!("cannot read the header: {e}")))?;
            h.iter()
                .enumerate()
                .map(|(i, c)| {
                    let name = String::from_utf8_lossy(c).trim().to_string();
                    // A UTF-8 byte-order mark would otherwise stick to the first name.
                    if i == 0 {
                        name.trim_start_matches('\u{feff}').to_string()
                    } else {
                        name
                    }
                })
                .collect()
        } else {
            if opts.columns.is_empty() {
                return Err(Error::input(
                    path,
                    "--no-header needs the column names: pass --columns a,b,c",
                ));
            }
            opts.columns.clone()
        };
        let mut used = vec![false; columns.len()];
        let mapper = RowMapper::new(
            &input.source,
            mapping,
            options.catalog.clone(),
            options.projection,
            |r| {
                let i = columns.iter().position(|c| *c == r.name)?;
                used[i] = true;
                Some(i)
            },
        )
        .map_err(|m| {
            Error::input(
                path,
                format!("{m}; the columns are: {}", columns.join(", ")),
            )
        })?;
        Ok(CsvSource {
            reader: Some(reader),
            mapper: Some(mapper),
            columns,
            used,
            done: false,
            ..empty
        })
    }
}

/// Skips blank lines before the header (exports sometimes start with one) and peeks at
/// the first line with content. Returns how many lines were skipped, so reported line
/// numbers stay those of the file, and the first line (empty only at end of file).
fn skip_blank_lines(reader: &mut Box<dyn BufRead + Send>) -> std::io::Result<(u64, Vec<u8>)> {
    let mut skipped = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((skipped, Vec::new()));
        }
        let end = buf.iter().position(|b| *b == b'\n');
        let line = &buf[..end.unwrap_or(buf.len())];
        if !line.iter().all(|b| b.is_ascii_whitespace()) || (end.is_none() && buf.len() >= 1 << 16)
        {
            return Ok((skipped, line.to_vec()));
        }
        match end {
            Some(e) => {
                reader.consume(e + 1);
                skipped += 1;
            }
            None => {
                // Only whitespace up to the end of the file.
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

fn parse_delimiter(d: &str) -> Option<u8> {
    match d {
        "\\t" | "tab" => Some(b'\t'),
        _ if d.len() == 1 && d.is_ascii() => Some(d.as_bytes()[0]),
        _ => None,
    }
}

/// The candidate that occurs most often in the first line; `,` on a tie or none.
fn sniff_delimiter(line: &[u8]) -> u8 {
    let mut best = (0, b',');
    for d in [b',', b';', b'\t', b'|'] {
        let n = line.iter().filter(|b| **b == d).count();
        if n > best.0 {
            best = (n, d);
        }
    }
    best.1
}

struct CsvRow<'a> {
    record: &'a csv::ByteRecord,
    columns: &'a [String],
    used: &'a [bool],
}

impl Record<usize> for CsvRow<'_> {
    fn get(&self, key: &usize) -> Option<Value<'_>> {
        let bytes = self.record.get(*key)?;
        std::str::from_utf8(bytes)
            .ok()
            .map(|s| Value::Str(Cow::Borrowed(s)))
    }

    fn rest_properties(&self) -> Option<String> {
        let mut map = serde_json::Map::new();
        for (i, field) in self.record.iter().enumerate() {
            if self.used.get(i).copied().unwrap_or(false) || field.is_empty() {
                continue;
            }
            let name = self
                .columns
                .get(i)
                .map_or_else(|| format!("column_{i}"), Clone::clone);
            map.insert(name, String::from_utf8_lossy(field).into_owned().into());
        }
        (!map.is_empty()).then(|| serde_json::Value::Object(map).to_string())
    }

    fn raw_hash(&self) -> u64 {
        stable_hash(self.record.as_slice())
    }
}

fn raw_line(record: &csv::ByteRecord) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in record.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(f);
    }
    out
}

impl super::BatchSource for CsvSource {
    fn next_batch(&mut self, dead: &mut DeadLetters) -> Result<Option<RecordBatch>> {
        let (Some(reader), Some(mapper)) = (self.reader.as_mut(), self.mapper.as_mut()) else {
            return Ok(None);
        };
        while !self.done && mapper.pending() < self.batch_size {
            match reader.read_byte_record(&mut self.record) {
                Ok(false) => self.done = true,
                Ok(true) => {
                    let line = self.line_offset + self.record.position().map_or(0, |p| p.line());
                    let location = Location::Line(line);
                    // A lone empty field is a blank line: nothing to read, nothing lost.
                    if self.record.len() == 1
                        && self.record[0].is_empty()
                        && self.columns.len() != 1
                    {
                        continue;
                    }
                    let malformed = if self.record.len() != self.columns.len() {
                        Some(format!(
                            "row has {} fields, expected {} ({})",
                            self.record.len(),
                            self.columns.len(),
                            self.columns.join(", ")
                        ))
                    } else {
                        (0..self.record.len())
                            .find(|i| {
                                self.used[*i] && std::str::from_utf8(&self.record[*i]).is_err()
                            })
                            .map(|bad| format!("invalid UTF-8 in column `{}`", self.columns[bad]))
                    };
                    if let Some(reason) = malformed {
                        let raw = raw_line(&self.record);
                        reject(
                            &mut self.stats,
                            dead,
                            &self.path,
                            location,
                            &reason,
                            Some(&raw),
                        )?;
                        continue;
                    }
                    let row = CsvRow {
                        record: &self.record,
                        columns: &self.columns,
                        used: &self.used,
                    };
                    book(
                        mapper,
                        &row,
                        &mut self.stats,
                        dead,
                        &self.path,
                        location,
                        || Some(raw_line(row.record)),
                    )?;
                }
                Err(e) => {
                    // An I/O error mid-file (truncated gzip, unreadable disk) ends this
                    // file; what was read so far is kept and the cut is dead-lettered.
                    let line = self.line_offset + e.position().map_or(0, |p| p.line());
                    let reason = format!("input is truncated or corrupt, reading stopped: {e}");
                    reject(
                        &mut self.stats,
                        dead,
                        &self.path,
                        Location::Line(line),
                        &reason,
                        None,
                    )?;
                    if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                        self.done = true;
                    }
                }
            }
        }
        Ok(mapper.take_batch())
    }

    fn stats(&self) -> &IngestStats {
        &self.stats
    }

    fn bytes_read(&self) -> u64 {
        self.counter.get()
    }
}
