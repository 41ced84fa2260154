//! Rejected records: each goes to the dead-letter file with where it was and why, and is
//! counted, so bad input is visible and nothing is lost silently.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use trailmap_model::{Error, Result};

/// Where in its input a record was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// 1-based line of a text file (the header is line 1 of a CSV).
    Line(u64),
    /// 0-based row of a columnar file.
    Row(u64),
    /// Byte offset into the (decompressed) input.
    Offset(u64),
    /// A Kafka message (the "file" is its topic).
    Message { partition: i32, offset: i64 },
    /// The n-th (1-based) record taken in by HTTP capture since the server started.
    Captured(u64),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Row(n) => write!(f, "row {n}"),
            Location::Offset(n) => write!(f, "byte {n}"),
            Location::Message { partition, offset } => {
                write!(f, "partition {partition} offset {offset}")
            }
            Location::Captured(n) => write!(f, "captured record {n}"),
        }
    }
}

#[derive(Serialize)]
struct Letter<'a> {
    file: &'a str,
    #[serde(flatten)]
    location: Location,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
}

/// Raw records are kept in the letter up to this many bytes.
const MAX_RAW: usize = 4096;

/// The dead-letter sink. The file is created on the first rejection only, so clean runs
/// leave nothing behind.
pub struct DeadLetters {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    rejected: u64,
    max_errors: Option<u64>,
    /// Rejections per reason, with the reason's variable parts cut off, for the summary.
    by_reason: BTreeMap<String, u64>,
}

impl DeadLetters {
    pub fn new(path: impl Into<PathBuf>, max_errors: Option<u64>) -> Self {
        DeadLetters {
            path: path.into(),
            writer: None,
            rejected: 0,
            max_errors,
            by_reason: BTreeMap::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Rejections grouped by the kind of reason (text before the first `:` or backtick).
    pub fn by_reason(&self) -> &BTreeMap<String, u64> {
        &self.by_reason
    }

    /// Records a rejected record. Fails when the `--max-errors` budget is exceeded, or when
    /// the dead-letter file cannot be written (then the rejection would be lost).
    pub fn reject(
        &mut self,
        file: &Path,
        location: Location,
        reason: &str,
        raw: Option<&[u8]>,
    ) -> Result<()> {
        self.rejected += 1;
        let kind = reason
            .split([':', '`'])
            .next()
            .unwrap_or(reason)
            .trim()
            .to_string();
        *self.by_reason.entry(kind).or_default() += 1;
        if self.writer.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            let f = File::create(&self.path).map_err(|e| Error::io(&self.path, e))?;
            self.writer = Some(BufWriter::new(f));
        }
        let raw = raw.map(|r| String::from_utf8_lossy(&r[..r.len().min(MAX_RAW)]).into_owned());
        let letter = Letter {
            file: &file.to_string_lossy(),
            location,
            reason,
            raw,
        };
        if let Some(w) = self.writer.as_mut() {
            serde_json::to_writer(&mut *w, &letter)
                .map_err(|e| Error::Other(format!("writing dead letter: {e}")))?;
            w.write_all(b"\n").map_err(|e| Error::io(&self.path, e))?;
        }
        match self.max_errors {
            Some(max) if self.rejected > max => {
                self.flush()?;
                Err(Error::TooManyErrors {
                    rejected: self.rejected,
                    max_errors: max,
                    dead_letters: self.path.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    pub fn flush(&mut self) -> Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.flush().map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }
}

impl Drop for DeadLetters {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_written_lazily_and_budget_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl/dead.ndjson");
        let mut dl = DeadLetters::new(&path, Some(1));
        assert!(!path.exists());
        dl.reject(
            Path::new("a.csv"),
            Location::Line(3),
            "bad time: `x`",
            Some(b"a,b\xff"),
        )
        .unwrap();
        let err = dl
            .reject(Path::new("a.csv"), Location::Line(4), "bad time: `y`", None)
            .unwrap_err();
        assert!(matches!(err, Error::TooManyErrors { rejected: 2, .. }));
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["line"], 3);
        assert_eq!(first["file"], "a.csv");
        assert_eq!(first["reason"], "bad time: `x`");
        assert_eq!(dl.by_reason()["bad time"], 2);
    }
}
