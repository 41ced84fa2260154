//! Parquet: read with the Arrow reader in batches, only the columns the mapping needs
//! (plus the rest when properties are wanted). Fields address top-level columns or struct
//! children (`context/traits/email`).

use super::row_groups::RowGroupReader;
use super::shares::{Share, Shares};
use super::{FileInput, IngestOptions, IngestStats, book, reject};
use crate::dead_letter::{DeadLetters, Location};
use crate::mapper::{Record, RowMapper, SimplePlan, stable_hash};
use crate::value::Value;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Float64Array, Int64Array, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray, UInt32Array, new_null_array,
};
use arrow::buffer::ScalarBuffer;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::Field;
use arrow::datatypes::UInt32Type;
use arrow::datatypes::{DataType, Schema, TimeUnit, TimestampMicrosecondType};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use trailmap_model::config::FieldMapping;
use trailmap_model::time::all_plausible;
use trailmap_model::{Error, Result};
use trailmap_model::{IdentityKind, schema};

/// A field resolved against the file schema: a top-level column and a struct path in it.
#[derive(Clone)]
struct ColumnPath {
    root: String,
    children: Vec<String>,
}

pub(crate) struct ParquetSource {
    path: PathBuf,
    /// Seeds the event ids of rows, which have no raw bytes to hash.
    path_hash: u64,
    reader: RowGroupReader,
    mapper: RowMapper<usize>,
    /// Set when the mapping can be applied column by column (see [`SimplePlan`]).
    plan: Option<SimplePlan<usize>>,
    keys: Vec<ColumnPath>,
    /// Top-level columns the mapping does not use, for properties.
    rest: Vec<String>,
    want_rest: bool,
    row: u64,
    total_rows: u64,
    file_len: u64,
    stats: IngestStats,
    done: bool,
    shared: Shared,
}

/// What the batches of a source share, made or checked once (see each).
#[derive(Default)]
struct Shared {
    constants: Constants,
    named: NamedDictionary,
    classified: ClassifiedDictionary,
}

/// Columns that are the same in every batch of a size: canonical columns the file does not
/// have (all null) and the source's name. Made once and shared by the batches: a batch of
/// 8192 rows would otherwise allocate and zero a quarter of a megabyte for them.
#[derive(Default)]
struct Constants {
    /// By batch size, then by canonical column index. Two sizes are kept: full batches,
    /// and the shorter last batch of each row group.
    by_rows: Vec<(usize, Vec<Option<ArrayRef>>)>,
}

impl Constants {
    fn get(&mut self, rows: usize, column: usize, make: impl FnOnce() -> ArrayRef) -> ArrayRef {
        let slot = match self.by_rows.iter().position(|(r, _)| *r == rows) {
            Some(slot) => slot,
            None => {
                if self.by_rows.len() == 2 {
                    // Give up the smaller size: the full one comes back most.
                    let smaller = usize::from(self.by_rows[1].0 < self.by_rows[0].0);
                    self.by_rows.swap_remove(smaller);
                }
                self.by_rows.push((rows, Vec::new()));
                self.by_rows.len() - 1
            }
        };
        let columns = &mut self.by_rows[slot].1;
        if columns.len() <= column {
            columns.resize(column + 1, None);
        }
        columns[column].get_or_insert_with(make).clone()
    }
}

/// The last identity dictionary seen, and whether all its values are identifiers (none
/// null or blank). A column chunk's batches share one dictionary: it is checked once,
/// not once per batch (a customer dictionary holds tens of thousands of values).
#[derive(Default)]
struct NamedDictionary {
    last: Option<(StringArray, bool)>,
}

impl NamedDictionary {
    fn all_named(&mut self, values: &StringArray) -> bool {
        if let Some((last, named)) = &self.last
            && last.len() == values.len()
            && last.values().as_ptr() == values.values().as_ptr()
            && last.offsets().as_ptr() == values.offsets().as_ptr()
        {
            return *named;
        }
        let named = values.null_count() == 0 && values.iter().flatten().all(|v| !is_blank(v));
        self.last = Some((values.clone(), named));
        named
    }
}

/// A touchpoint dictionary's values classified by the catalog, in dictionary position.
struct Classes {
    /// The cleaned names, over which the raw keys point.
    touchpoints: ArrayRef,
    stages: Vec<Option<Arc<str>>>,
    /// The catalog's channel, else the source default.
    channels: Vec<Option<Arc<str>>>,
    /// Whether the catalog named the channel.
    catalog_named: Vec<bool>,
    /// Which values were classified: all, or those some row uses (an unused value keeps
    /// its raw name and no labels).
    used: Vec<bool>,
}

impl Classes {
    /// `values` classified, those `used` only when given; `None` when one of those is
    /// blank or dropped by the catalog (the row path rejects its rows with the reason).
    fn of(
        values: &StringArray,
        mapper: &mut RowMapper<usize>,
        used: Option<Vec<bool>>,
    ) -> Option<Classes> {
        let used = used.unwrap_or_else(|| vec![true; values.len()]);
        let mut touchpoints = StringBuilder::new();
        let mut stages = Vec::with_capacity(values.len());
        let mut channels = Vec::with_capacity(values.len());
        let mut catalog_named = Vec::with_capacity(values.len());
        let default_channel: Option<Arc<str>> = mapper.default_channel().map(Arc::from);
        for (i, used) in used.iter().enumerate() {
            let value = values.value(i);
            if !used {
                touchpoints.append_value(value);
                stages.push(None);
                channels.push(None);
                catalog_named.push(false);
                continue;
            }
            if values.is_null(i) || value.trim().is_empty() {
                return None;
            }
            let c = mapper.classify(value)?;
            touchpoints.append_value(&*c.touchpoint);
            stages.push(c.stage.clone());
            catalog_named.push(c.channel.is_some());
            channels.push(c.channel.clone().or_else(|| default_channel.clone()));
        }
        Some(Classes {
            touchpoints: Arc::new(touchpoints.finish()),
            stages,
            channels,
            catalog_named,
            used,
        })
    }
}

/// The last touchpoint dictionary seen, classified value by value (`None` when a value
/// does not classify). A column chunk's batches share one dictionary: its values are
/// classified once, not once per batch, and no batch looks at which values its rows use.
#[derive(Default)]
struct ClassifiedDictionary {
    last: Option<(StringArray, Option<Classes>)>,
}

impl ClassifiedDictionary {
    /// Every one of `values` classified, or `None` when one does not classify.
    fn all_of(&mut self, values: &StringArray, mapper: &mut RowMapper<usize>) -> Option<&Classes> {
        let same = self.last.as_ref().is_some_and(|(last, _)| {
            last.len() == values.len()
                && last.values().as_ptr() == values.values().as_ptr()
                && last.offsets().as_ptr() == values.offsets().as_ptr()
        });
        if !same {
            self.last = Some((values.clone(), Classes::of(values, mapper, None)));
        }
        self.last.as_ref().and_then(|(_, classes)| classes.as_ref())
    }
}

fn resolve(schema: &Schema, name: &str, segments: &[String]) -> Option<ColumnPath> {
    if schema.field_with_name(name).is_ok() {
        return Some(ColumnPath {
            root: name.to_string(),
            children: Vec::new(),
        });
    }
    let (root, rest) = segments.split_first()?;
    let mut dt = schema.field_with_name(root).ok()?.data_type();
    for child in rest {
        match dt {
            DataType::Struct(fields) => dt = fields.find(child)?.1.data_type(),
            _ => return None,
        }
    }
    Some(ColumnPath {
        root: root.clone(),
        children: rest.to_vec(),
    })
}

/// Rows in a Parquet file, from its footer.
pub(crate) fn records_in(path: &std::path::Path) -> Option<u64> {
    let file = File::open(path).ok()?;
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .ok()?;
    u64::try_from(metadata.file_metadata().num_rows()).ok()
}

/// How a source decodes its row groups.
enum Reading {
    /// All of them, on decode threads of its own.
    Threads,
    /// A part of the file shared out among threads ([`Parts`]), on the reading thread.
    Part {
        /// The file's footer, parsed once for all parts.
        footer: ArrowReaderMetadata,
        pieces: Arc<[RowRun]>,
        shares: Arc<Shares>,
        share: Share,
    },
}

/// A contiguous run of a file's rows: the row groups that hold them, and which of those
/// groups' rows they are.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RowRun {
    row_groups: std::ops::Range<usize>,
    /// Rows of the first row group before the run's first.
    skip: usize,
    rows: usize,
    /// The run's first row, in the file's rows.
    first_row: u64,
}

/// Pieces per reader a file is cut into (see [`pieces`]).
const PIECES_PER_READER: usize = 16;

/// A file's rows (`rows` per row group) cut into pieces for `readers` threads to share out
/// (see [`Shares`]), about [`PIECES_PER_READER`] each: fine enough that the last pieces
/// even out the readers, coarse enough that a piece is read in one go. Pieces are whole
/// row groups where they can be: a piece that starts inside a row group decodes its
/// dictionary pages again and skips the pages before its rows (from their headers,
/// without decompressing them). Small row groups are taken together; a row group of twice
/// a piece or more is cut into pieces of equal rows. Empty row groups begin no piece.
fn pieces(rows: &[i64], readers: usize) -> Vec<RowRun> {
    let rows: Vec<usize> = rows
        .iter()
        .map(|&r| usize::try_from(r).unwrap_or(0))
        .collect();
    let total: usize = rows.iter().sum();
    let piece = total.div_ceil(readers.max(1) * PIECES_PER_READER).max(1);
    let mut pieces = Vec::new();
    let (mut group, mut at) = (0, 0u64);
    while group < rows.len() {
        let r = rows[group];
        if r == 0 {
            group += 1;
        } else if r >= 2 * piece {
            let n = r / piece;
            pieces.extend((0..n).map(|k| {
                let (first, end) = (r * k / n, r * (k + 1) / n);
                RowRun {
                    row_groups: group..group + 1,
                    skip: first,
                    rows: end - first,
                    first_row: at + first as u64,
                }
            }));
            at += r as u64;
            group += 1;
        } else {
            let (first, mut taken) = (group, 0);
            while group < rows.len() && taken < piece && rows[group] < 2 * piece {
                taken += rows[group];
                group += 1;
            }
            // Empty groups after the last row are the next piece's to skip.
            while rows[group - 1] == 0 {
                group -= 1;
            }
            pieces.push(RowRun {
                row_groups: first..group,
                skip: 0,
                rows: taken,
                first_row: at,
            });
            at += taken as u64;
        }
    }
    pieces
}

/// A Parquet file read in parts by several threads side by side, each part decoded on the
/// thread that reads it; the parts are shared out as the threads go (see [`Shares`]).
pub(crate) struct Parts {
    footer: ArrowReaderMetadata,
    input: FileInput,
    mapping: FieldMapping,
    options: IngestOptions,
    pieces: Arc<[RowRun]>,
    shares: Arc<Shares>,
    /// The first parts, one per reader, opened when the file was split (which checked that
    /// the file maps column by column), until taken.
    first: Mutex<VecDeque<(usize, ParquetSource)>>,
}

impl Parts {
    /// A part to read and the number of its first piece (parts in that order are the file
    /// in order): a first part while one is left, then one taken from the fullest part
    /// being read. `None` when every piece is read or being read.
    pub(crate) fn take(&self) -> Result<Option<(usize, ParquetSource)>> {
        let first = (self.first.lock())
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop_front();
        if let Some(first) = first {
            return Ok(Some(first));
        }
        let Some(share) = self.shares.steal() else {
            return Ok(None);
        };
        let source = self.open(share)?;
        Ok(Some((share.first, source)))
    }

    fn open(&self, share: Share) -> Result<ParquetSource> {
        let reading = Reading::Part {
            footer: self.footer.clone(),
            pieces: self.pieces.clone(),
            shares: self.shares.clone(),
            share,
        };
        ParquetSource::open_with(&self.input, &self.mapping, &self.options, reading)
    }
}

/// A Parquet file as parts for `readers` threads to read side by side (see [`Parts`]).
/// `None` when it cannot be split (fewer than two pieces) or when its columns need the
/// row-by-row mapping (see [`ParquetSource::next_columnar`]).
pub(crate) fn parts(
    input: &FileInput,
    mapping: &FieldMapping,
    options: &IngestOptions,
    readers: usize,
) -> Result<Option<Parts>> {
    let path = &input.path;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        .map_err(|e| Error::input(path, format!("not a readable Parquet file: {e}")))?;
    let rows: Vec<i64> = (metadata.metadata().row_groups().iter())
        .map(|rg| rg.num_rows())
        .collect();
    let pieces: Arc<[RowRun]> = pieces(&rows, readers).into();
    if pieces.len() < 2 {
        return Ok(None);
    }
    let piece_rows: Vec<u64> = pieces.iter().map(|p| p.rows as u64).collect();
    let (shares, first) = Shares::new(&piece_rows, readers);
    let mut parts = Parts {
        footer: metadata,
        input: input.clone(),
        mapping: mapping.clone(),
        options: options.clone(),
        pieces,
        shares: Arc::new(shares),
        first: Mutex::new(VecDeque::new()),
    };
    let mut opened = VecDeque::with_capacity(first.len());
    for share in first {
        let source = parts.open(share)?;
        if source.plan.is_none() {
            return Ok(None);
        }
        opened.push_back((share.first, source));
    }
    parts.first = Mutex::new(opened);
    Ok(Some(parts))
}

impl ParquetSource {
    pub(crate) fn open(
        input: &FileInput,
        mapping: &FieldMapping,
        options: &IngestOptions,
    ) -> Result<Self> {
        Self::open_with(input, mapping, options, Reading::Threads)
    }

    fn open_with(
        input: &FileInput,
        mapping: &FieldMapping,
        options: &IngestOptions,
        reading: Reading,
    ) -> Result<Self> {
        let path = &input.path;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let builder = match &reading {
            Reading::Part { footer, .. } => {
                ParquetRecordBatchReaderBuilder::new_with_metadata(file, footer.clone())
            }
            Reading::Threads => ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| Error::input(path, format!("not a readable Parquet file: {e}")))?,
        };
        let schema = builder.schema().clone();
        let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let mut keys = Vec::new();
        let mapper = RowMapper::new(
            &input.source,
            mapping,
            options.catalog.clone(),
            options.projection,
            |r| {
                let resolved = resolve(&schema, &r.name, &r.segments)?;
                keys.push(resolved);
                Some(keys.len() - 1)
            },
        )
        .map_err(|m| {
            let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::input(path, format!("{m}; the columns are: {}", names.join(", ")))
        })?;
        let want_rest = options.projection.properties && mapping.properties.is_empty();
        let used = mapping.used_names();
        let rest: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !keys.iter().any(|k| k.root == *n) && !used.contains(&n.as_str()))
            .collect();
        let mut roots: Vec<usize> = keys
            .iter()
            .filter_map(|k| schema.index_of(&k.root).ok())
            .collect();
        if want_rest {
            roots.extend(rest.iter().filter_map(|n| schema.index_of(n).ok()));
        }
        roots.sort_unstable();
        roots.dedup();
        let plan = mapper.simple_plan();
        // The columnar path classifies touchpoints (and channels) per dictionary value and
        // interns identifiers per dictionary value: ask the reader for dictionary arrays, so
        // dictionary-encoded pages are neither expanded into strings nor hashed again.
        let hint = match &plan {
            Some(plan) => {
                let dict_roots: Vec<&str> = [Some(plan.touchpoint), plan.channel]
                    .into_iter()
                    .flatten()
                    .chain(plan.identities.iter().map(|(_, k)| *k))
                    .filter_map(|k| keys.get(k))
                    .filter(|k| k.children.is_empty())
                    .map(|k| k.root.as_str())
                    .collect();
                let fields: Vec<Field> = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        if dict_roots.contains(&f.name().as_str())
                            && f.data_type() == &DataType::Utf8
                        {
                            // With the canonical u32 keys, so no batch needs its keys cast.
                            Field::new(f.name(), dict_type(), f.is_nullable())
                        } else {
                            f.as_ref().clone()
                        }
                    })
                    .collect();
                ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(fields)))
            }
            None => ArrowReaderOptions::new(),
        };
        // Same footer, maybe a new schema: the metadata already parsed is reused.
        let metadata = ArrowReaderMetadata::try_new(builder.metadata().clone(), hint)
            .map_err(|e| Error::input(path, format!("cannot read Parquet: {e}")))?;
        let mask = ProjectionMask::roots(metadata.parquet_schema(), roots);
        // Rows are numbered in the file (event ids of rows without bytes hash the number).
        let (first_row, reader) = match reading {
            Reading::Threads => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                let reader =
                    RowGroupReader::start(path, &metadata, &mask, options.batch_size, threads);
                (0, reader)
            }
            Reading::Part {
                pieces,
                shares,
                share,
                ..
            } => {
                let first_row = pieces[share.first].first_row;
                // The part's pieces: its first, then each it claims as it goes.
                let claimed = std::iter::once(share.first)
                    .chain(std::iter::from_fn(move || shares.next(share.part)))
                    .map(move |k| {
                        let run = &pieces[k];
                        (run.row_groups.clone(), run.skip..run.skip + run.rows)
                    });
                let reader =
                    RowGroupReader::inline(path, &metadata, &mask, options.batch_size, claimed);
                (first_row, reader)
            }
        };
        let reader = reader.map_err(|e| Error::io(path, e))?;
        Ok(ParquetSource {
            path_hash: stable_hash(path.to_string_lossy().as_bytes()),
            path: path.clone(),
            reader,
            plan,
            mapper,
            keys,
            rest,
            want_rest,
            row: first_row,
            total_rows,
            file_len,
            stats: IngestStats::default(),
            done: false,
            shared: Shared::default(),
        })
    }
}

/// A column cast to one of the few shapes the mapper reads.
enum Col {
    Str(StringArray),
    Int(Int64Array),
    Float(Float64Array),
    Bool(BooleanArray),
    Micros(arrow::array::PrimitiveArray<TimestampMicrosecondType>),
    /// Nested values (structs, lists, maps), read as JSON text.
    Json(ArrayRef),
}

impl Col {
    fn new(array: &ArrayRef) -> Col {
        let safe = CastOptions {
            safe: true,
            ..Default::default()
        };
        let cast = |to: &DataType| cast_with_options(array, to, &safe).ok();
        match array.data_type() {
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                match cast(&DataType::Timestamp(TimeUnit::Microsecond, None)) {
                    Some(a) => Col::Micros(a.as_primitive::<TimestampMicrosecondType>().clone()),
                    None => Col::Json(array.clone()),
                }
            }
            dt if dt.is_integer() => match cast(&DataType::Int64) {
                Some(a) => Col::Int(a.as_primitive().clone()),
                None => Col::Json(array.clone()),
            },
            dt if dt.is_floating()
                || matches!(dt, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
            {
                match cast(&DataType::Float64) {
                    Some(a) => Col::Float(a.as_primitive().clone()),
                    None => Col::Json(array.clone()),
                }
            }
            DataType::Boolean => Col::Bool(array.as_boolean().clone()),
            DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::Map(_, _) => Col::Json(array.clone()),
            _ => match cast(&DataType::Utf8) {
                Some(a) => Col::Str(a.as_string::<i32>().clone()),
                None => Col::Json(array.clone()),
            },
        }
    }

    fn get(&self, i: usize) -> Option<Value<'_>> {
        match self {
            Col::Str(a) => a.is_valid(i).then(|| Value::Str(Cow::Borrowed(a.value(i)))),
            Col::Int(a) => a.is_valid(i).then(|| Value::Int(a.value(i))),
            Col::Float(a) => a.is_valid(i).then(|| Value::Float(a.value(i))),
            Col::Bool(a) => a.is_valid(i).then(|| Value::Bool(a.value(i))),
            Col::Micros(a) => a.is_valid(i).then(|| Value::Micros(a.value(i))),
            Col::Json(a) => a
                .is_valid(i)
                .then(|| Value::Str(Cow::Owned(json_of(a.as_ref(), i).to_string()))),
        }
    }
}

/// JSON of one nested value, for properties held in struct or list columns.
fn json_of(array: &dyn Array, i: usize) -> serde_json::Value {
    if array.is_null(i) {
        return serde_json::Value::Null;
    }
    match array.data_type() {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let map = fields
                .iter()
                .zip(s.columns())
                .map(|(f, c)| (f.name().clone(), json_of(c.as_ref(), i)))
                .filter(|(_, v)| !v.is_null())
                .collect();
            serde_json::Value::Object(map)
        }
        DataType::List(_) => {
            let l = array.as_list::<i32>();
            let items = l.value(i);
            serde_json::Value::Array(
                (0..items.len())
                    .map(|j| json_of(items.as_ref(), j))
                    .collect(),
            )
        }
        _ => {
            let one = array.slice(i, 1);
            match Col::new(&one) {
                Col::Json(_) => serde_json::Value::Null,
                col => col.get(0).map_or(serde_json::Value::Null, |v| v.to_json()),
            }
        }
    }
}

fn column_at(batch: &RecordBatch, key: &ColumnPath) -> Option<ArrayRef> {
    let mut array = batch.column_by_name(&key.root)?.clone();
    for child in &key.children {
        array = array.as_struct_opt()?.column_by_name(child)?.clone();
    }
    Some(array)
}

struct ParquetRow<'a> {
    cols: &'a [Option<Col>],
    rest: &'a [(String, Col)],
    i: usize,
    row: u64,
    path_hash: u64,
}

impl Record<usize> for ParquetRow<'_> {
    fn get(&self, key: &usize) -> Option<Value<'_>> {
        self.cols.get(*key)?.as_ref()?.get(self.i)
    }

    fn rest_properties(&self) -> Option<String> {
        let map: serde_json::Map<_, _> = self
            .rest
            .iter()
            .filter_map(|(name, col)| Some((name.clone(), col.get(self.i)?.to_json())))
            .collect();
        (!map.is_empty()).then(|| serde_json::Value::Object(map).to_string())
    }

    fn raw_hash(&self) -> u64 {
        // Columnar rows have no raw bytes: the file and row number identify them.
        stable_hash(&[self.path_hash.to_le_bytes(), self.row.to_le_bytes()].concat())
    }
}

/// A batch that only the row-by-row mapping reads (a missing or implausible value, a
/// touchpoint the catalog drops) or a file that cannot be read on: the row path rejects
/// exactly the bad rows to the dead letters, in order, which a part of a file read on its
/// own cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotColumnar;

impl ParquetSource {
    /// `batch` mapped column by column, when it can be (see [`columnar`]).
    fn columnar(&mut self, batch: &RecordBatch) -> Option<RecordBatch> {
        let plan = self.plan.as_ref()?;
        // The columnar path reads touchpoints, channels and identities as they come
        // (dictionaries, mostly); only the time column needs converting.
        let mut cols: Vec<Option<Col>> = (0..self.keys.len()).map(|_| None).collect();
        cols[plan.ts] = column_at(batch, &self.keys[plan.ts]).map(|a| Col::new(&a));
        let fast = columnar(
            plan,
            &mut self.mapper,
            batch,
            &cols,
            &self.keys,
            &mut self.shared,
        )?;
        let n = batch.num_rows() as u64;
        self.stats.records += n;
        self.stats.events += n;
        self.row += n;
        Some(fast)
    }

    /// The next batch, every row of it mapped column by column: what a part of a file read
    /// on its own thread (see [`parts`]) reads. Nothing is rejected or lost here: on
    /// [`NotColumnar`] the caller reads the whole file the general way instead.
    pub(crate) fn next_columnar(
        &mut self,
    ) -> std::result::Result<Option<RecordBatch>, NotColumnar> {
        match self.reader.next() {
            None => Ok(None),
            Some(Ok(batch)) => self.columnar(&batch).map(Some).ok_or(NotColumnar),
            Some(Err(_)) => Err(NotColumnar),
        }
    }
}

impl super::BatchSource for ParquetSource {
    fn next_batch(&mut self, dead: &mut DeadLetters) -> Result<Option<RecordBatch>> {
        let path_hash = self.path_hash;
        while !self.done && self.mapper.pending() == 0 {
            let batch = match self.reader.next() {
                None => {
                    self.done = true;
                    break;
                }
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    let reason = format!("corrupt Parquet data, reading stopped: {e}");
                    reject(
                        &mut self.stats,
                        dead,
                        &self.path,
                        Location::Row(self.row),
                        &reason,
                        None,
                    )?;
                    self.done = true;
                    break;
                }
            };
            if let Some(fast) = self.columnar(&batch) {
                return Ok(Some(fast));
            }
            let col = |k: &ColumnPath| column_at(&batch, k).map(|a| Col::new(&a));
            let cols: Vec<Option<Col>> = self.keys.iter().map(col).collect();
            let rest: Vec<(String, Col)> = if self.want_rest {
                self.rest
                    .iter()
                    .filter_map(|n| Some((n.clone(), Col::new(batch.column_by_name(n)?))))
                    .collect()
            } else {
                Vec::new()
            };
            for i in 0..batch.num_rows() {
                let row = ParquetRow {
                    cols: &cols,
                    rest: &rest,
                    i,
                    row: self.row,
                    path_hash,
                };
                let location = Location::Row(self.row);
                book(
                    &mut self.mapper,
                    &row,
                    &mut self.stats,
                    dead,
                    &self.path,
                    location,
                    || row.rest_properties().map(String::into_bytes),
                )?;
                self.row += 1;
            }
        }
        Ok(self.mapper.take_batch())
    }

    fn stats(&self) -> &IngestStats {
        &self.stats
    }

    fn bytes_read(&self) -> u64 {
        // Parquet reads by column chunk; rows read scaled to the file size is the honest
        // progress measure.
        if self.total_rows == 0 {
            return self.file_len;
        }
        ((u128::from(self.row) * u128::from(self.file_len)) / u128::from(self.total_rows)) as u64
    }
}

/// Maps a whole batch column by column, or returns `None` when any row needs the row path
/// (a missing or implausible value, a touchpoint the catalog drops): the row path then
/// rejects exactly those rows with their reasons, and keeps the batch's order.
fn columnar(
    plan: &SimplePlan<usize>,
    mapper: &mut RowMapper<usize>,
    batch: &RecordBatch,
    cols: &[Option<Col>],
    keys: &[ColumnPath],
    shared: &mut Shared,
) -> Option<RecordBatch> {
    let Shared {
        constants,
        named,
        classified,
    } = shared;
    let n = batch.num_rows();
    // Event time.
    let ts: ScalarBuffer<i64> = match cols.get(plan.ts)?.as_ref()? {
        // Already microseconds: share the buffer, no copy.
        Col::Micros(a) if a.null_count() == 0 => a.values().clone(),
        col => {
            let parser = mapper.time_parser();
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(parser.parse(&col.get(i)?).ok()?);
            }
            out.into()
        }
    };
    if !all_plausible(&ts) {
        return None;
    }
    // Identities: every row needs at least one non-blank identifier. A blank identifier is
    // no identifier: the row path stores it as null, so such batches are left to it.
    let mut identity_columns: Vec<(IdentityKind, ArrayRef)> = Vec::new();
    // Either one column names every row, or each row is ticked off.
    let mut every_row = false;
    let mut has_id: Option<Vec<bool>> = None;
    for (kind, key) in &plan.identities {
        let raw = column_at(batch, keys.get(*key)?)?;
        let column: ArrayRef = match raw.data_type() {
            DataType::Utf8 => {
                let a = raw.as_string::<i32>();
                let has_id = has_id.get_or_insert_with(|| vec![false; n]);
                for (i, flag) in has_id.iter_mut().enumerate() {
                    if a.is_valid(i) {
                        if is_blank(a.value(i)) {
                            return None;
                        }
                        *flag = true;
                    }
                }
                raw
            }
            // Dictionary pages: each value is checked once, and stays a dictionary (with
            // the canonical u32 keys) for the stitcher to intern once.
            DataType::Dictionary(_, value) if value.as_ref() == &DataType::Utf8 => {
                let dict = if raw.data_type() == &dict_type() {
                    raw
                } else {
                    cast_with_options(&raw, &dict_type(), &CastOptions::default()).ok()?
                };
                let d = dict.as_dictionary_opt::<UInt32Type>()?;
                let values = d.values().as_string_opt::<i32>()?;
                if d.keys().null_count() == 0 && named.all_named(values) {
                    every_row = true;
                } else {
                    let has_id = has_id.get_or_insert_with(|| vec![false; n]);
                    let mut checked = vec![0u8; values.len()];
                    for (i, flag) in has_id.iter_mut().enumerate() {
                        if d.keys().is_valid(i) {
                            let k = d.keys().value(i) as usize;
                            let state = checked.get_mut(k)?;
                            if *state == 0 {
                                *state = if values.is_valid(k) && !is_blank(values.value(k)) {
                                    1
                                } else {
                                    2
                                };
                            }
                            if *state == 2 {
                                return None;
                            }
                            *flag = true;
                        }
                    }
                }
                dict
            }
            _ => return None,
        };
        identity_columns.push((*kind, column));
    }
    if !every_row && !has_id.is_some_and(|h| h.iter().all(|x| *x)) {
        return None;
    }
    // Touchpoints: classify each distinct raw value once.
    let raw = column_at(batch, keys.get(plan.touchpoint)?)?;
    if !text_like(raw.data_type()) {
        // Floats, dates and decimals print differently through arrow's cast than through
        // the row path; only strings and integers are spelled the same by both.
        return None;
    }
    let dict_type = dict_type();
    let dict = cast_with_options(&raw, &dict_type, &CastOptions::default()).ok()?;
    let dict = dict.as_dictionary_opt::<UInt32Type>()?;
    if dict.null_count() > 0 {
        return None;
    }
    let values = dict.values().as_string_opt::<i32>()?;
    // A column chunk's batches share one dictionary: classified once, every value. Only
    // when some value does not classify are a batch's values classified as rows use them.
    let per_batch;
    let classes = match classified.all_of(values, mapper) {
        Some(classes) => classes,
        None => {
            let mut used = vec![false; values.len()];
            for k in dict.keys().values() {
                if let Some(u) = used.get_mut(*k as usize) {
                    *u = true;
                }
            }
            per_batch = Classes::of(values, mapper, Some(used))?;
            &per_batch
        }
    };
    let Classes {
        touchpoints,
        stages,
        channels,
        catalog_named,
        used,
    } = classes;
    // Stage and channel are labels of the touchpoint value: their columns mostly share the
    // touchpoint's keys, with no work per row (see `label_column`).
    let canonical = trailmap_model::event_schema();
    let position = |name: &str| canonical.index_of(name).ok();
    let stage = label_column(dict, stages, used, position(schema::STAGE)?, constants)?;
    let channel: ArrayRef = match plan.channel {
        None => label_column(dict, channels, used, position(schema::CHANNEL)?, constants)?,
        // Channel: the catalog's, else the record's, else the source default.
        Some(key) => {
            let record = column_at(batch, keys.get(key)?)?;
            if !text_like(record.data_type()) {
                return None;
            }
            let record = cast_with_options(&record, &dict_type, &CastOptions::default()).ok()?;
            let record_dict = record.as_dictionary_opt::<UInt32Type>()?;
            let record_values = record_dict.values().as_string_opt::<i32>()?;
            // Blankness per dictionary value, not per row.
            let blank: Vec<bool> = (0..record_values.len())
                .map(|i| record_values.is_null(i) || is_blank(record_values.value(i)))
                .collect();
            let catalog_names_some = catalog_named.iter().zip(used).any(|(c, u)| *c && *u);
            if !catalog_names_some && record_dict.null_count() == 0 && !blank.contains(&true) {
                // Every row's own channel stands: the record's column as it is.
                record
            } else {
                record_channels(dict, channels, catalog_named, record_dict, &blank)?
            }
        }
    };
    // The raw keys again, over the cleaned names (one per raw value, in its position).
    let touchpoint = dict.with_values(touchpoints.clone());

    let ts = TimestampMicrosecondArray::new(ts, None).with_timezone("UTC");
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(canonical.fields().len());
    for (i, field) in canonical.fields().iter().enumerate() {
        let name = field.name().as_str();
        let column: ArrayRef = match name {
            schema::SOURCE => constants.get(n, i, || {
                Arc::new(DictionaryArray::<UInt32Type>::new(
                    UInt32Array::from(vec![0u32; n]),
                    Arc::new(StringArray::from(vec![mapper.source_name()])),
                ))
            }),
            schema::TS => {
                Arc::new(TimestampMicrosecondArray::from(ts.clone()).with_timezone("UTC"))
            }
            schema::TOUCHPOINT => Arc::new(touchpoint.clone()),
            schema::STAGE => stage.clone(),
            schema::CHANNEL => channel.clone(),
            other => match identity_columns.iter().find(|(k, _)| k.column() == other) {
                Some((_, a)) => a.clone(),
                None => constants.get(n, i, || new_null_array(field.data_type(), n)),
            },
        };
        columns.push(column);
    }
    // Identity columns read from dictionary pages keep their dictionary type (see
    // `trailmap_model::schema`); everything else is exactly the canonical schema.
    let schema = if columns
        .iter()
        .zip(canonical.fields())
        .all(|(c, f)| c.data_type() == f.data_type())
    {
        canonical
    } else {
        let fields: Vec<Field> = canonical
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect();
        Arc::new(Schema::new(fields))
    };
    RecordBatch::try_new(schema, columns).ok()
}

/// Per-row keys of labels given per touchpoint dictionary value (`None`: no label), the
/// distinct labels added to `names`.
fn keys_of(
    touchpoints: &DictionaryArray<UInt32Type>,
    labels: &[Option<Arc<str>>],
    names: &mut Vec<String>,
) -> Vec<Option<u32>> {
    let index: Vec<Option<u32>> = labels
        .iter()
        .map(|label| {
            label
                .as_deref()
                .map(|l| match names.iter().position(|x| x == l) {
                    Some(p) => p as u32,
                    None => {
                        names.push(l.to_string());
                        (names.len() - 1) as u32
                    }
                })
        })
        .collect();
    touchpoints
        .keys()
        .values()
        .iter()
        .map(|k| index.get(*k as usize).copied().flatten())
        .collect()
}

/// Channels row by row: the catalog's for touchpoints it names, else the record's own when
/// not blank, else the label given per touchpoint value (the source default).
fn record_channels(
    touchpoints: &DictionaryArray<UInt32Type>,
    labels: &[Option<Arc<str>>],
    catalog_named: &[bool],
    record: &DictionaryArray<UInt32Type>,
    blank: &[bool],
) -> Option<ArrayRef> {
    let mut names = Vec::new();
    let mut channel_keys = keys_of(touchpoints, labels, &mut names);
    let record_values = record.values().as_string_opt::<i32>()?;
    let offset = names.len() as u32;
    names.extend((0..record_values.len()).map(|i| record_values.value(i).to_string()));
    let tp_keys = touchpoints.keys().values();
    for (row, slot) in channel_keys.iter_mut().enumerate() {
        let named = catalog_named
            .get(tp_keys[row] as usize)
            .copied()
            .unwrap_or(false);
        if !named && record.is_valid(row) {
            let k = record.keys().value(row);
            if !blank.get(k as usize).copied().unwrap_or(true) {
                *slot = Some(offset + k);
            }
        }
    }
    let channels = DictionaryArray::<UInt32Type>::try_new(
        nullable_keys(channel_keys),
        Arc::new(StringArray::from(names)),
    )
    .ok()?;
    Some(Arc::new(channels))
}

/// A column of labels given per touchpoint dictionary value (stage, or channel from the
/// catalog), as a dictionary. When every value some row uses has a label, the column is
/// the touchpoint's own keys over the labels in dictionary position (a dictionary may
/// repeat values); when none has, it is the shared all-null column; only a mix is built
/// row by row.
fn label_column(
    touchpoints: &DictionaryArray<UInt32Type>,
    labels: &[Option<Arc<str>>],
    used: &[bool],
    column: usize,
    constants: &mut Constants,
) -> Option<ArrayRef> {
    let n = touchpoints.len();
    let mut in_use = labels.iter().zip(used).filter(|(_, u)| **u);
    if in_use.clone().all(|(l, _)| l.is_none()) {
        return Some(constants.get(n, column, || new_null_array(&dict_type(), n)));
    }
    if in_use.all(|(l, _)| l.is_some()) {
        // Unused positions hold an empty name no row points at.
        let values: StringArray = labels
            .iter()
            .map(|l| Some(l.as_deref().unwrap_or("")))
            .collect();
        return Some(Arc::new(touchpoints.with_values(Arc::new(values))));
    }
    let mut names = Vec::new();
    let keys = nullable_keys(keys_of(touchpoints, labels, &mut names));
    Some(Arc::new(
        DictionaryArray::<UInt32Type>::try_new(keys, Arc::new(StringArray::from(names))).ok()?,
    ))
}

/// Dictionary keys, with a validity bitmap only when some are missing (most batches have
/// a stage and a channel on every row).
fn nullable_keys(keys: Vec<Option<u32>>) -> UInt32Array {
    if keys.iter().all(Option::is_some) {
        UInt32Array::from_iter_values(keys.into_iter().flatten())
    } else {
        UInt32Array::from(keys)
    }
}

fn dict_type() -> DataType {
    trailmap_model::schema::dictionary_type()
}

/// Types whose text is the same through arrow's cast and [`Value::to_text`].
fn text_like(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, value) => text_like(value),
        dt => dt.is_integer(),
    }
}

/// Whether `trim()` would leave nothing, deciding on the first byte when it can: ids
/// nearly always start with a visible ASCII character, and a full Unicode trim per row
/// is measurable at tens of millions of rows.
fn is_blank(s: &str) -> bool {
    match s.as_bytes().first() {
        None => true,
        Some(b) if b.is_ascii() && !b.is_ascii_whitespace() && !b.is_ascii_control() => false,
        _ => s.trim().is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::{PIECES_PER_READER, RowRun, pieces};

    /// Checks that `runs` are `rows`' rows once each, in order, each run's rows in its
    /// row groups, no run beginning or ending on a group it has no row of.
    fn check(rows: &[i64], runs: &[RowRun]) {
        let rows: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
        let mut next = 0;
        for r in runs {
            let before: usize = rows[..r.row_groups.start].iter().sum();
            let within: usize = rows[r.row_groups.clone()].iter().sum();
            assert_eq!(before + r.skip, next, "{rows:?}: {runs:?}");
            assert_eq!(r.first_row, next as u64, "{rows:?}: {runs:?}");
            assert!(r.rows > 0, "{rows:?}: {runs:?}");
            assert!(r.skip < rows[r.row_groups.start], "{rows:?}: {runs:?}");
            assert!(r.skip + r.rows <= within, "{rows:?}: {runs:?}");
            let last = rows[r.row_groups.end - 1];
            assert!(r.skip + r.rows > within - last, "{rows:?}: {runs:?}");
            next += r.rows;
        }
        assert_eq!(next, rows.iter().sum::<usize>(), "{rows:?}: {runs:?}");
    }

    fn run(row_groups: std::ops::Range<usize>, skip: usize, rows: usize, first: u64) -> RowRun {
        RowRun {
            row_groups,
            skip,
            rows,
            first_row: first,
        }
    }

    #[test]
    fn rows_cut_into_pieces_of_whole_row_groups_where_they_can() {
        // The bench's export, 18 full row groups and a short one: a piece per group.
        let mut export = vec![1_048_576; 18];
        export.push(433_691);
        let cut = pieces(&export, 2);
        check(&export, &cut);
        assert_eq!(cut.len(), 19);
        assert!(
            cut.iter()
                .enumerate()
                .all(|(g, p)| p.row_groups == (g..g + 1))
        );
        // One row group, cut into pieces of equal rows.
        let one = pieces(&[320], 2);
        check(&[320], &one);
        assert_eq!(one.len(), 2 * PIECES_PER_READER);
        assert!(one.iter().all(|p| p.rows == 10));
        assert_eq!(pieces(&[7], 2)[3], run(0..1, 3, 1, 3));
        // Small row groups, taken together.
        let small = pieces(&[1; 640], 2);
        check(&[1; 640], &small);
        assert_eq!(small.len(), 2 * PIECES_PER_READER);
        assert_eq!(small[1], run(20..40, 0, 20, 20));
        // A small group before a large one is a piece of its own; empty groups begin none.
        assert_eq!(
            pieces(&[0, 1, 0, 100, 0], 1),
            [
                [run(1..2, 0, 1, 0)].as_slice(),
                &(0..14)
                    .map(|k| run(
                        3..4,
                        k * 100 / 14,
                        (k + 1) * 100 / 14 - k * 100 / 14,
                        1 + (k * 100 / 14) as u64
                    ))
                    .collect::<Vec<_>>(),
            ]
            .concat()
        );
        assert_eq!(pieces(&[], 2), vec![]);
        assert_eq!(pieces(&[0, 0], 2), vec![]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let groups = (seed % 12) as usize;
            let rows: Vec<i64> = (0..groups)
                .map(|g| ((seed >> (4 * g + 8)) % 16) as i64 * [1, 1, 7, 100][g % 4])
                .collect();
            let readers = 1 + (seed >> 60) as usize % 4;
            check(&rows, &pieces(&rows, readers));
        }
    }
}
