//! Parquet: read with the Arrow reader in batches, only the columns the mapping needs
//! (plus the rest when properties are wanted). Fields address top-level columns or struct
//! children (`context/traits/email`).

use super::{FileInput, IngestOptions, IngestStats, book, reject};
use crate::dead_letter::{DeadLetters, Location};
use crate::mapper::{Record, RowMapper, stable_hash};
use crate::value::Value;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Schema, TimeUnit, TimestampMicrosecondType};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use std::borrow::Cow;
use std::fs::File;
use std::path::PathBuf;
use trailmap_model::config::FieldMapping;
use trailmap_model::{Error, Result};

/// A field resolved against the file schema: a top-level column and a struct path in it.
#[derive(Clone)]
struct ColumnPath {
    root: String,
    children: Vec<String>,
}

pub(crate) struct ParquetSource {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    mapper: RowMapper<usize>,
    keys: Vec<ColumnPath>,
    /// Top-level columns the mapping does not use, for properties.
    rest: Vec<String>,
    want_rest: bool,
    row: u64,
    total_rows: u64,
    file_len: u64,
    stats: IngestStats,
    done: bool,
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

impl ParquetSource {
    pub(crate) fn open(
        input: &FileInput,
        mapping: &FieldMapping,
        options: &IngestOptions,
    ) -> Result<Self> {
        let path = &input.path;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| Error::input(path, format!("not a readable Parquet file: {e}")))?;
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
        let rest: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| {
                !keys.iter().any(|k| k.root == *n) && !mapping.used_names().contains(&n.as_str())
            })
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
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(options.batch_size)
            .build()
            .map_err(|e| Error::input(path, format!("cannot read Parquet: {e}")))?;
        Ok(ParquetSource {
            path: path.clone(),
            reader,
            mapper,
            keys,
            rest,
            want_rest,
            row: 0,
            total_rows,
            file_len,
            stats: IngestStats::default(),
            done: false,
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

impl super::BatchSource for ParquetSource {
    fn next_batch(&mut self, dead: &mut DeadLetters) -> Result<Option<RecordBatch>> {
        let path_hash = stable_hash(self.path.to_string_lossy().as_bytes());
        while !self.done && self.mapper.pending() == 0 {
            let batch = match self.reader.next() {
                None => {
                    self.done = true;
                    break;
                }
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    self.stats.records += 1;
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
            let cols: Vec<Option<Col>> = self
                .keys
                .iter()
                .map(|k| column_at(&batch, k).map(|a| Col::new(&a)))
                .collect();
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
