//! The event store: every event the live pipeline takes in, as Parquet segments, and
//! checkpoints that say which segments and which source positions form one consistent cut.
//!
//! ```text
//! DATA_DIR/segments/00000000000000000001.parquet   canonical events, in arrival order
//! DATA_DIR/segments/00000000000000000002.parquet
//! DATA_DIR/checkpoint.json                          segments + source positions + checksum
//! DATA_DIR/state.bin                                the live state after some segment
//! ```
//!
//! The checkpoint is the only truth: a segment not named in it (written just before a crash)
//! is an orphan and is removed on open, and the source resumes from the checkpoint's
//! positions, so its events are read again. A checkpoint is written to a temporary name and
//! renamed over the old one, with a CRC-32 of its body, so a crash leaves the old or the new
//! one, and a damaged file is refused rather than half-read.
//!
//! Storage goes through `object_store`: a directory path, or a `file://` / `memory://` URL.
//! Segments are plain Parquet in the canonical schema, readable by any engine.
//!
//! The state file is a snapshot of the live pipeline's state as of the end of one segment
//! (opaque bytes here; `trailmap-live` writes them): a restart starts from it and replays
//! only the segments after it. It is an optimisation, never the truth: it is written aside
//! and renamed like the checkpoint, carries a CRC-32, and one that is damaged, or that
//! names a segment the checkpoint does not, is ignored (everything is replayed instead).
//!
//! Layout: [`Store`] (open, segments, checkpoints, state), [`Checkpoint`], [`Segment`],
//! [`Position`], [`StoredState`].

use arrow::array::RecordBatch;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use trailmap_model::{Error, Result};

/// Where a source resumes: the next offset of one partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// One stored segment: its rows are the concatenation of `feeds`, each a batch the
/// pipeline took from one of its partitions, in the order it took them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub seq: u64,
    pub rows: u64,
    /// `(pipeline partition, rows)` of each batch, in arrival order.
    pub feeds: Vec<(u32, u32)>,
    /// For a segment compacted from segments `first..=seq`: `first` (its file is named by
    /// both, so it never overwrites one a checkpoint may still name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
}

impl Segment {
    /// Its file, relative to the data dir.
    pub fn file(&self) -> String {
        match self.first {
            None => format!("segments/{:020}.parquet", self.seq),
            Some(first) => format!("segments/{first:020}-{:020}.parquet", self.seq),
        }
    }

    fn path(&self) -> Path {
        Path::from(self.file())
    }
}

/// A consistent cut: these segments hold everything read before these positions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub segments: Vec<Segment>,
    pub positions: Vec<Position>,
    /// Names this store's history, so a state file left by another history (a data dir
    /// whose checkpoint and segments were removed) is not taken for this one's: segment
    /// numbers start again at 1.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub store: String,
}

impl Checkpoint {
    /// Events stored.
    pub fn rows(&self) -> u64 {
        self.segments.iter().map(|s| s.rows).sum()
    }

    /// A new name for a store's history: unique enough (time and process, hashed with a
    /// random key), never meaningful.
    pub fn new_store_name() -> String {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        format!("{:016x}", h.finish())
    }

    /// A checkpoint file's contents (`DATA_DIR/checkpoint.json`), checked against its
    /// checksum; else what is wrong with it.
    pub fn parse(file: &[u8]) -> std::result::Result<Checkpoint, String> {
        let text = std::str::from_utf8(file).map_err(|_| "not UTF-8".to_string())?;
        let (body, sum) = text
            .trim_end()
            .rsplit_once('\n')
            .ok_or("no checksum line")?;
        let expected = sum
            .strip_prefix("crc32:")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or("no checksum line")?;
        if crc32fast::hash(body.as_bytes()) != expected {
            return Err("checksum mismatch".into());
        }
        serde_json::from_str(body).map_err(|e| e.to_string())
    }

    pub fn next_seq(&self) -> u64 {
        self.segments.last().map_or(1, |s| s.seq + 1)
    }
}

/// The checkpoint's file in the data dir.
pub const CHECKPOINT: &str = "checkpoint.json";
const CHECKPOINT_TMP: &str = "checkpoint.json.tmp";
const STATE: &str = "state.bin";
const STATE_TMP: &str = "state.bin.tmp";
/// Leads the state file: its format; then the segment it is as of, the store's name and
/// the body, each with its length, and a CRC-32 of all that.
const STATE_MAGIC: &[u8; 8] = b"TMSTATE2";

/// The live pipeline's state as of the end of segment `through`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    pub through: u64,
    pub bytes: Vec<u8>,
}

/// A data directory or object store. Its calls block (each runs on a private runtime), so
/// call them from a thread that is not running async code, like the pipeline's source
/// thread.
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
    runtime: tokio::runtime::Runtime,
}

/// The runtime a store handle blocks on (each its own: calls come from plain threads).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the store's runtime: {e}")))
}

/// The next little-endian `u64` of `rest`.
fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    let (head, tail) = rest.split_first_chunk::<8>()?;
    *rest = tail;
    Some(u64::from_le_bytes(*head))
}

/// The next length-prefixed bytes of `rest`.
fn take_sized<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = usize::try_from(take_u64(rest)?).ok()?;
    let (head, tail) = rest.split_at_checked(n)?;
    *rest = tail;
    Some(head)
}

impl Store {
    /// Opens `[storage] data_dir`: a directory (created if missing) or a URL.
    pub fn open(data_dir: &str) -> Result<Store> {
        let (objects, prefix): (Arc<dyn ObjectStore>, Path) = if data_dir.contains("://") {
            let url = url::Url::parse(data_dir).map_err(|e| {
                Error::config(
                    "[storage] data_dir",
                    format!("{data_dir:?} is not a URL: {e}"),
                )
            })?;
            if url.scheme() == "memory" {
                (Arc::new(InMemory::new()), Path::from(url.path()))
            } else {
                let (store, path) = object_store::parse_url(&url).map_err(|e| {
                    Error::config(
                        "[storage] data_dir",
                        format!(
                            "cannot open {data_dir}: {e} (this build stores to directories, \
                             file:// and memory:// URLs)"
                        ),
                    )
                })?;
                (Arc::from(store), path)
            }
        } else {
            std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
            let local = LocalFileSystem::new_with_prefix(data_dir).map_err(|e| {
                Error::config("[storage] data_dir", format!("cannot open {data_dir}: {e}"))
            })?;
            (Arc::new(local), Path::default())
        };
        Ok(Store {
            objects,
            prefix,
            location: data_dir.to_string(),
            runtime: runtime()?,
        })
    }

    /// Another handle on the same store, for another thread.
    pub fn try_clone(&self) -> Result<Store> {
        Ok(Store {
            objects: self.objects.clone(),
            prefix: self.prefix.clone(),
            location: self.location.clone(),
            runtime: runtime()?,
        })
    }

    fn at(&self, relative: &Path) -> Path {
        self.prefix.parts().chain(relative.parts()).collect()
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Other(format!("store {}: {what}: {e}", self.location))
    }

    /// Writes a segment of `feeds` (pipeline partition, batch). Durable when this returns
    /// (as durable as the object store's put).
    pub fn write_segment(&self, seq: u64, feeds: &[(u32, RecordBatch)]) -> Result<Segment> {
        self.write_feeds(seq, None, feeds)
    }

    /// Writes one segment holding `segments` (adjacent, in order), read back in full: the
    /// same feeds in the same order, so replaying it replays them. The checkpoint still
    /// names the old ones until the caller replaces it; they are orphans after that.
    pub fn compact(&self, segments: &[Segment]) -> Result<Segment> {
        let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
            return Err(Error::Other("no segments to compact".into()));
        };
        let mut feeds = Vec::new();
        for segment in segments {
            feeds.extend(self.read_segment(segment)?);
        }
        self.write_feeds(last.seq, Some(first.first.unwrap_or(first.seq)), &feeds)
    }

    fn write_feeds(
        &self,
        seq: u64,
        first: Option<u64>,
        feeds: &[(u32, RecordBatch)],
    ) -> Result<Segment> {
        let schema = match feeds.first() {
            Some((_, b)) => b.schema(),
            None => trailmap_model::schema::event_schema(),
        };
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let mut buf = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut buf, schema, Some(props))
            .map_err(|e| self.failed("encoding a segment", e))?;
        for (_, batch) in feeds {
            writer
                .write(batch)
                .map_err(|e| self.failed("encoding a segment", e))?;
        }
        writer
            .close()
            .map_err(|e| self.failed("encoding a segment", e))?;
        let segment = Segment {
            seq,
            rows: feeds.iter().map(|(_, b)| b.num_rows() as u64).sum(),
            feeds: feeds
                .iter()
                .map(|(p, b)| (*p, b.num_rows() as u32))
                .collect(),
            first,
        };
        let path = self.at(&segment.path());
        self.runtime
            .block_on(self.objects.put(&path, PutPayload::from(buf)))
            .map_err(|e| self.failed(&format!("writing {path}"), e))?;
        Ok(segment)
    }

    /// A segment's batches, as the pipeline took them: `(pipeline partition, batch)`.
    pub fn read_segment(&self, segment: &Segment) -> Result<Vec<(u32, RecordBatch)>> {
        let path = self.at(&segment.path());
        let bytes: Bytes = self
            .runtime
            .block_on(async { self.objects.get(&path).await?.bytes().await })
            .map_err(|e| self.failed(&format!("reading {path}"), e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.with_batch_size((segment.rows as usize).max(1)).build())
            .map_err(|e| self.failed(&format!("reading {path}"), e))?;
        let mut rows = Vec::new();
        for batch in reader {
            rows.push(batch.map_err(|e| self.failed(&format!("reading {path}"), e))?);
        }
        let all = arrow::compute::concat_batches(
            &rows
                .first()
                .map_or_else(trailmap_model::schema::event_schema, |b| b.schema()),
            &rows,
        )
        .map_err(|e| self.failed(&format!("reading {path}"), e))?;
        if all.num_rows() as u64 != segment.rows {
            return Err(self.failed(
                &format!("reading {path}"),
                format!(
                    "it holds {} rows where the checkpoint says {}",
                    all.num_rows(),
                    segment.rows
                ),
            ));
        }
        let mut offset = 0;
        Ok(segment
            .feeds
            .iter()
            .map(|&(partition, n)| {
                let batch = all.slice(offset, n as usize);
                offset += n as usize;
                (partition, batch)
            })
            .collect())
    }

    /// Replaces the checkpoint: written aside, then renamed over the old one.
    pub fn write_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        let body = serde_json::to_string(checkpoint)
            .map_err(|e| self.failed("encoding the checkpoint", e))?;
        let text = format!("{body}\ncrc32:{:08x}\n", crc32fast::hash(body.as_bytes()));
        self.replace(CHECKPOINT, CHECKPOINT_TMP, PutPayload::from(text))
            .map_err(|e| self.failed("writing the checkpoint", e))
    }

    /// Writes `name` whole or not at all: aside as `tmp`, then renamed over it.
    fn replace(
        &self,
        name: &str,
        tmp: &str,
        payload: PutPayload,
    ) -> std::result::Result<(), object_store::Error> {
        let (tmp, path) = (self.at(&Path::from(tmp)), self.at(&Path::from(name)));
        self.runtime.block_on(async {
            self.objects.put(&tmp, payload).await?;
            self.objects.rename(&tmp, &path).await
        })
    }

    /// The bytes of `name`, `None` when there is no such object.
    fn get_if_any(&self, name: &str) -> std::result::Result<Option<Bytes>, object_store::Error> {
        let path = self.at(&Path::from(name));
        let got = self
            .runtime
            .block_on(async { self.objects.get(&path).await?.bytes().await });
        match got {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The last checkpoint, `None` for a new store. A damaged checkpoint is an error: the
    /// store is not silently started afresh.
    pub fn read_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let path = self.at(&Path::from(CHECKPOINT));
        let Some(bytes) = self
            .get_if_any(CHECKPOINT)
            .map_err(|e| self.failed("reading the checkpoint", e))?
        else {
            return Ok(None);
        };
        Checkpoint::parse(&bytes).map(Some).map_err(|why| {
            self.failed(
                "reading the checkpoint",
                format!("{path} is damaged ({why}); restore it from a backup, or move the data dir aside to start afresh"),
            )
        })
    }

    /// Replaces the state file of the store named `store` (its checkpoint's `store`):
    /// written aside, then renamed over the old one.
    pub fn write_state(&self, store: &str, state: &StoredState) -> Result<()> {
        let name = store.as_bytes();
        let mut file = Vec::with_capacity(state.bytes.len() + name.len() + 36);
        file.extend_from_slice(STATE_MAGIC);
        file.extend_from_slice(&state.through.to_le_bytes());
        file.extend_from_slice(&(name.len() as u64).to_le_bytes());
        file.extend_from_slice(name);
        file.extend_from_slice(&(state.bytes.len() as u64).to_le_bytes());
        file.extend_from_slice(&state.bytes);
        let crc = crc32fast::hash(&file);
        file.extend_from_slice(&crc.to_le_bytes());
        self.replace(STATE, STATE_TMP, PutPayload::from(file))
            .map_err(|e| self.failed("writing the live state", e))
    }

    /// The state file, if there is one of this store that the checkpoint covers. `Err`
    /// says why one that exists cannot be used (damaged, of another history, or ahead of
    /// the checkpoint); the caller replays instead.
    pub fn read_state(&self, checkpoint: &Checkpoint) -> Result<Option<StoredState>> {
        let path = self.at(&Path::from(STATE));
        let Some(file) = self
            .get_if_any(STATE)
            .map_err(|e| self.failed("reading the live state", e))?
        else {
            return Ok(None);
        };
        let unusable = |why: &str| self.failed(&format!("reading {path}"), why);
        let (body, crc) = file
            .len()
            .checked_sub(4)
            .map(|at| file.split_at(at))
            .ok_or_else(|| unusable("it is truncated"))?;
        if !body.starts_with(STATE_MAGIC) {
            return Err(unusable("it is not a trailmap state file of this version"));
        }
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap_or([0; 4])) {
            return Err(unusable("it is damaged (checksum mismatch)"));
        }
        // Past the checksum, the lengths are as written; still, no slicing on trust.
        let mut rest = &body[STATE_MAGIC.len()..];
        let truncated = || unusable("it is truncated");
        let through = take_u64(&mut rest).ok_or_else(truncated)?;
        let name = take_sized(&mut rest).ok_or_else(truncated)?;
        let bytes = take_sized(&mut rest).ok_or_else(truncated)?.to_vec();
        if name != checkpoint.store.as_bytes() {
            return Err(unusable(
                "it belongs to another history of this data dir (its checkpoint was replaced)",
            ));
        }
        if !checkpoint.segments.iter().any(|s| s.seq == through) {
            return Err(self.failed(
                &format!("reading {path}"),
                format!("it is as of segment {through}, which the checkpoint does not name"),
            ));
        }
        Ok(Some(StoredState { through, bytes }))
    }

    /// Removes segments the checkpoint does not name (written after it, before a crash);
    /// returns how many.
    pub fn remove_orphans(&self, checkpoint: &Checkpoint) -> Result<usize> {
        let named: std::collections::HashSet<Path> = checkpoint
            .segments
            .iter()
            .map(|s| self.at(&s.path()))
            .collect();
        let dir = self.at(&Path::from("segments"));
        self.runtime
            .block_on(async {
                let listed: Vec<_> = self.objects.list(Some(&dir)).try_collect().await?;
                let mut removed = 0;
                for meta in listed {
                    if !named.contains(&meta.location) {
                        self.objects.delete(&meta.location).await?;
                        removed += 1;
                    }
                }
                Ok::<_, object_store::Error>(removed)
            })
            .map_err(|e| self.failed("removing segments left by a crash", e))
    }
}
