//! Whole row groups of flat columns decoded page by page, without the Arrow reader's
//! general machinery.
//!
//! A funnel over a 20M-event file spent a quarter of its CPU in the Arrow reader's
//! dictionary columns (customer and touchpoint): expanding run-length encoded keys through
//! a generic level/value pipeline, then validating every key once more when the array was
//! built. Journeys need three flat columns (identifiers and touchpoints as dictionary keys,
//! times as `i64`), and those have a simple layout: a dictionary page, then pages of keys
//! in the RLE/bit-packing hybrid, or of plain values. This reader decodes exactly that,
//! keys straight into the batch's buffer (a run of one customer's key is one fill), and
//! checks keys against the dictionary as it goes.
//!
//! It takes what it knows and hands everything else to the Arrow reader: a column of
//! another shape, or an encoding it does not decode, and the rest of the run is read by
//! [`ParquetRecordBatchReader`] from the first row not handed on yet (so a page it cannot
//! read, or a corrupt one, gets the Arrow reader's answer, not a second opinion). Pages
//! are still read by the `parquet` crate's page reader, which decompresses them too, but
//! for Snappy: those come raw and are decompressed into a buffer the column reuses.

use arrow::array::{
    Array, ArrayData, ArrayRef, BooleanBufferBuilder, DictionaryArray, RecordBatch, StringArray,
    UInt32Array, make_array,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, UInt32Type};
use arrow::error::ArrowError;
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReader};
use parquet::basic::{
    Compression, Encoding, IntType, LogicalType, TimeUnit as ParquetUnit, Type as PhysicalType,
};
use parquet::column::page::{Page, PageReader};
use parquet::file::reader::ChunkReader;
use parquet::file::serialized_reader::SerializedPageReader;
use std::sync::Arc;

/// Why the flat reader stops and hands the run to the Arrow reader. Never shown: the Arrow
/// reader reads on, or says what is wrong in its own words.
#[derive(Debug)]
pub(crate) struct HandOver;

type Flat<T> = std::result::Result<T, HandOver>;

impl From<parquet::errors::ParquetError> for HandOver {
    fn from(_: parquet::errors::ParquetError) -> Self {
        HandOver
    }
}

/// The Arrow reader of the run's rows from the given one (counted from the first row of
/// its first row group) to its end.
pub(crate) type Fallback =
    Box<dyn Fn(usize) -> Result<ParquetRecordBatchReader, parquet::errors::ParquetError> + Send>;

/// How a projected column is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `BYTE_ARRAY` text read as `Dictionary(UInt32, Utf8)`.
    Keys,
    /// `INT64` read as `Int64` or as timestamps of its own unit.
    Int64,
}

/// The projected columns' leaves and kinds, when every one is flat and of a kind this
/// reader decodes; `None` sends the file to the Arrow reader.
fn plan(metadata: &ArrowReaderMetadata, mask: &ProjectionMask) -> Option<Vec<(usize, Kind)>> {
    let schema = metadata.schema();
    let columns = metadata.parquet_schema().columns();
    if schema.fields().len() != columns.len() {
        // Nested fields: leaves are not fields.
        return None;
    }
    let mut plan = Vec::new();
    for (leaf, (field, column)) in schema.fields().iter().zip(columns).enumerate() {
        if !mask.leaf_included(leaf) {
            continue;
        }
        if column.max_rep_level() != 0
            || column.max_def_level() > 1
            || column.path().parts().len() != 1
        {
            return None;
        }
        let kind = match (column.physical_type(), field.data_type()) {
            (PhysicalType::BYTE_ARRAY, DataType::Dictionary(key, value))
                if **key == DataType::UInt32
                    && **value == DataType::Utf8
                    && matches!(column.logical_type_ref(), None | Some(LogicalType::String)) =>
            {
                Kind::Keys
            }
            (PhysicalType::INT64, DataType::Int64)
                if matches!(
                    column.logical_type_ref(),
                    None | Some(LogicalType::Integer(IntType {
                        bit_width: 64,
                        is_signed: true
                    }))
                ) =>
            {
                Kind::Int64
            }
            (PhysicalType::INT64, DataType::Timestamp(unit, _)) => {
                let Some(LogicalType::Timestamp(timestamp)) = column.logical_type_ref() else {
                    return None;
                };
                let same_unit = matches!(
                    (&timestamp.unit, unit),
                    (ParquetUnit::MICROS, TimeUnit::Microsecond)
                        | (ParquetUnit::MILLIS, TimeUnit::Millisecond)
                        | (ParquetUnit::NANOS, TimeUnit::Nanosecond)
                );
                if !same_unit {
                    return None;
                }
                Kind::Int64
            }
            _ => return None,
        };
        plan.push((leaf, kind));
    }
    (!plan.is_empty()).then_some(plan)
}

/// The batches of whole row groups of a flat file (see the module documentation), or
/// `None` when its projected columns are not all of a kind this reader decodes.
pub(crate) fn batches<R: ChunkReader + 'static>(
    file: Arc<R>,
    metadata: &ArrowReaderMetadata,
    mask: &ProjectionMask,
    batch_size: usize,
    row_groups: Vec<usize>,
    fallback: Fallback,
) -> Option<FlatBatches<R>> {
    let plan = plan(metadata, mask)?;
    let indices: Vec<usize> = plan.iter().map(|(leaf, _)| *leaf).collect();
    let schema = Arc::new(metadata.schema().project(&indices).ok()?);
    Some(FlatBatches {
        file,
        metadata: metadata.clone(),
        plan,
        schema,
        batch_size: batch_size.max(1),
        row_groups,
        next_group: 0,
        columns: Vec::new(),
        left_in_group: 0,
        handed_on: 0,
        fallback: Some(fallback),
        arrow: None,
    })
}

/// See [`batches`].
pub(crate) struct FlatBatches<R: ChunkReader> {
    file: Arc<R>,
    metadata: ArrowReaderMetadata,
    plan: Vec<(usize, Kind)>,
    schema: SchemaRef,
    batch_size: usize,
    row_groups: Vec<usize>,
    /// Index in `row_groups` of the next row group to open.
    next_group: usize,
    /// The open row group's columns, and its rows not decoded yet.
    columns: Vec<ColumnCursor>,
    left_in_group: usize,
    /// Rows of the run handed on.
    handed_on: usize,
    fallback: Option<Fallback>,
    /// Once handed over: the Arrow reader of the rest of the run.
    arrow: Option<ParquetRecordBatchReader>,
}

impl<R: ChunkReader + 'static> FlatBatches<R> {
    fn open_next_group(&mut self) -> Flat<bool> {
        let Some(&rg) = self.row_groups.get(self.next_group) else {
            return Ok(false);
        };
        self.next_group += 1;
        let group = self.metadata.metadata().row_group(rg);
        let rows = usize::try_from(group.num_rows()).map_err(|_| HandOver)?;
        let mut columns = Vec::with_capacity(self.plan.len());
        // The last row group's page buffers, for this one's.
        let mut buffers: Vec<Vec<u8>> = self.columns.drain(..).map(|c| c.own).collect();
        for &(leaf, kind) in &self.plan {
            let chunk = group.column(leaf);
            // Snappy pages are read raw, and decompressed by the cursor into a buffer it
            // reuses (see `ColumnCursor::inflate`).
            let snappy = chunk.compression() == Compression::SNAPPY;
            let raw;
            let chunk_to_read = if snappy {
                raw = (chunk.clone().into_builder())
                    .set_compression(Compression::UNCOMPRESSED)
                    .build()?;
                &raw
            } else {
                chunk
            };
            let pages = SerializedPageReader::new(self.file.clone(), chunk_to_read, rows, None)?;
            columns.push(ColumnCursor {
                pages: Box::new(pages),
                kind,
                nullable: chunk.column_descr().max_def_level() == 1,
                dictionary: None,
                page: None,
                snappy: snappy.then(snap::raw::Decoder::new),
                own: buffers.pop().unwrap_or_default(),
                own_len: 0,
            });
        }
        self.columns = columns;
        self.left_in_group = rows;
        Ok(true)
    }

    fn next_flat(&mut self) -> Flat<Option<RecordBatch>> {
        while self.left_in_group == 0 {
            if !self.open_next_group()? {
                return Ok(None);
            }
        }
        let n = self.batch_size.min(self.left_in_group);
        let mut arrays = Vec::with_capacity(self.columns.len());
        for (column, field) in self.columns.iter_mut().zip(self.schema.fields()) {
            arrays.push(column.read(n, field.data_type())?);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|_| HandOver)?;
        self.left_in_group -= n;
        self.handed_on += n;
        Ok(Some(batch))
    }

    /// Hands the rest of the run to the Arrow reader.
    fn hand_over(&mut self) -> Option<Result<RecordBatch, ArrowError>> {
        let fallback = self.fallback.take()?;
        self.columns.clear();
        match fallback(self.handed_on) {
            Ok(reader) => {
                self.arrow = Some(reader);
                self.arrow.as_mut()?.next()
            }
            Err(e) => Some(Err(e.into())),
        }
    }
}

impl<R: ChunkReader + 'static> Iterator for FlatBatches<R> {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(arrow) = &mut self.arrow {
            return arrow.next();
        }
        self.fallback.as_ref()?;
        match self.next_flat() {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => None,
            Err(HandOver) => self.hand_over(),
        }
    }
}

/// A column chunk being read: its pages, its dictionary, and the page being decoded.
struct ColumnCursor {
    pages: Box<dyn PageReader>,
    kind: Kind,
    /// Definition levels 0 (null) and 1 (a value) precede the values.
    nullable: bool,
    dictionary: Option<Dictionary>,
    page: Option<PageCursor>,
    /// Snappy-compressed pages, read raw and decompressed here, into `own` (reused from
    /// page to page: the page reader zeroed a fresh buffer for every page).
    snappy: Option<snap::raw::Decoder>,
    own: Vec<u8>,
    own_len: usize,
}

enum Dictionary {
    Text(ArrayRef),
    Int64(Vec<i64>),
}

impl Dictionary {
    fn len(&self) -> usize {
        match self {
            Dictionary::Text(values) => values.len(),
            Dictionary::Int64(values) => values.len(),
        }
    }
}

struct PageCursor {
    /// Rows of the page not read yet.
    rows: usize,
    /// The page's bytes, as the page reader gave them; `None`: decompressed into the
    /// column's buffer.
    shared: Option<Bytes>,
    levels: Option<Hybrid>,
    values: Values,
}

enum Values {
    /// Dictionary keys.
    Keys(Hybrid),
    /// Plain little-endian `i64`s from `at`.
    Plain { at: usize },
}

impl ColumnCursor {
    /// The next `n` rows as an array of `data_type`.
    fn read(&mut self, n: usize, data_type: &DataType) -> Flat<ArrayRef> {
        let mut nulls = self.nullable.then(|| BooleanBufferBuilder::new(n));
        let mut any_null = false;
        match self.kind {
            Kind::Keys => {
                let mut keys: Vec<u32> = Vec::with_capacity(n);
                self.rows(
                    n,
                    &mut nulls,
                    &mut any_null,
                    &mut keys,
                    |values, data, valid, _, out| {
                        let Values::Keys(hybrid) = values else {
                            return Err(HandOver);
                        };
                        if hybrid.read(data, valid, out)? != valid {
                            return Err(HandOver);
                        }
                        Ok(())
                    },
                )?;
                let Some(Dictionary::Text(values)) = &self.dictionary else {
                    return Err(HandOver);
                };
                // Keys of null rows are 0, which points nowhere in an empty dictionary: no
                // key is then below its length.
                let max = keys.iter().copied().fold(0, u32::max);
                if max as usize >= values.len() {
                    return Err(HandOver);
                }
                let nulls = nulls
                    .filter(|_| any_null)
                    .map(|mut b| NullBuffer::new(b.finish()));
                let keys = UInt32Array::new(ScalarBuffer::from(keys), nulls);
                // SAFETY: every key is below the dictionary's length (checked just above),
                // and the values are the dictionary page's strings, UTF-8 checked.
                let dictionary =
                    unsafe { DictionaryArray::<UInt32Type>::new_unchecked(keys, values.clone()) };
                Ok(Arc::new(dictionary))
            }
            Kind::Int64 => {
                let mut values: Vec<i64> = Vec::with_capacity(n);
                let mut keys = Vec::new();
                self.rows(
                    n,
                    &mut nulls,
                    &mut any_null,
                    &mut values,
                    |page, data, valid, dictionary, out| {
                        match (page, dictionary) {
                            (Values::Plain { at }, _) => {
                                let bytes = data.get(*at..*at + valid * 8).ok_or(HandOver)?;
                                out.extend(
                                    (bytes.chunks_exact(8)).map(|b| {
                                        i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
                                    }),
                                );
                                *at += valid * 8;
                            }
                            (Values::Keys(hybrid), Some(Dictionary::Int64(dictionary))) => {
                                keys.clear();
                                if hybrid.read(data, valid, &mut keys)? != valid {
                                    return Err(HandOver);
                                }
                                for &key in &keys {
                                    out.push(*dictionary.get(key as usize).ok_or(HandOver)?);
                                }
                            }
                            _ => return Err(HandOver),
                        }
                        Ok(())
                    },
                )?;
                let nulls = nulls
                    .filter(|_| any_null)
                    .map(|mut b| NullBuffer::new(b.finish()));
                let data = ArrayData::builder(data_type.clone())
                    .len(n)
                    .add_buffer(Buffer::from_vec(values))
                    .nulls(nulls)
                    .build()
                    .map_err(|_| HandOver)?;
                Ok(make_array(data))
            }
        }
    }

    /// Walks the pages over the next `n` rows: per page, reads the levels of the rows it
    /// takes (into `nulls`), has `decode` append the values of those that have one to
    /// `out`, and spreads them over the rows (`T::default()` at the null ones).
    fn rows<T: Copy + Default>(
        &mut self,
        n: usize,
        nulls: &mut Option<BooleanBufferBuilder>,
        any_null: &mut bool,
        out: &mut Vec<T>,
        mut decode: impl FnMut(&mut Values, &[u8], usize, Option<&Dictionary>, &mut Vec<T>) -> Flat<()>,
    ) -> Flat<()> {
        let mut done = 0;
        while done < n {
            self.move_to_rows()?;
            let page = self.page.as_mut().ok_or(HandOver)?;
            let shared = page.shared.clone();
            let data = shared.as_deref().unwrap_or(&self.own[..self.own_len]);
            let take = (n - done).min(page.rows);
            let valid = read_levels(page, data, take, nulls, any_null)?;
            let from = out.len();
            decode(&mut page.values, data, valid, self.dictionary.as_ref(), out)?;
            page.rows -= take;
            if valid < take {
                spread(out, from, take, nulls.as_ref(), done, T::default());
            }
            done += take;
        }
        Ok(())
    }

    /// The bytes of a page as the decoders read them: `buf` itself, or, for a Snappy column
    /// chunk, `buf` decompressed into `own` (`None` then), its first `plain` bytes as they
    /// are (a v2 page's levels) and the rest decompressed when `compressed`.
    fn inflate(&mut self, buf: Bytes, plain: usize, compressed: bool) -> Flat<Option<Bytes>> {
        let Some(decoder) = self.snappy.as_mut().filter(|_| compressed) else {
            return Ok(Some(buf));
        };
        let (head, body) = (buf.get(..plain).ok_or(HandOver)?, &buf[plain..]);
        let len = snap::raw::decompress_len(body).map_err(|_| HandOver)?;
        // A length no page has is a corrupt one: the Arrow reader says so.
        if len > 1 << 30 {
            return Err(HandOver);
        }
        let total = plain + len;
        if self.own.len() < total {
            self.own.resize(total, 0);
        }
        self.own[..plain].copy_from_slice(head);
        let written =
            (decoder.decompress(body, &mut self.own[plain..total])).map_err(|_| HandOver)?;
        if written != len {
            return Err(HandOver);
        }
        self.own_len = total;
        Ok(None)
    }

    /// Moves on to the next page with rows when the current one has none left.
    fn move_to_rows(&mut self) -> Flat<()> {
        while self.page.as_ref().is_none_or(|p| p.rows == 0) {
            let page = self.pages.get_next_page()?.ok_or(HandOver)?;
            self.page = self.open(page)?;
        }
        Ok(())
    }

    /// A data page as a cursor; a dictionary page is kept (`None` then).
    fn open(&mut self, page: Page) -> Flat<Option<PageCursor>> {
        let (shared, rows, encoding, levels_len) = match page {
            Page::DictionaryPage {
                buf,
                num_values,
                encoding,
                ..
            } => {
                if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                    return Err(HandOver);
                }
                let shared = self.inflate(buf, 0, true)?;
                let buf = shared.as_deref().unwrap_or(&self.own[..self.own_len]);
                self.dictionary = Some(match self.kind {
                    Kind::Keys => Dictionary::Text(plain_strings(buf, num_values as usize)?),
                    Kind::Int64 => Dictionary::Int64(plain_i64s(buf, num_values as usize)?),
                });
                return Ok(None);
            }
            Page::DataPage {
                buf,
                num_values,
                encoding,
                def_level_encoding,
                ..
            } => {
                let shared = self.inflate(buf, 0, true)?;
                let buf = shared.as_deref().unwrap_or(&self.own[..self.own_len]);
                let levels_len = if self.nullable {
                    if def_level_encoding != Encoding::RLE {
                        return Err(HandOver);
                    }
                    // v1: the levels' length, then the levels.
                    let len = buf.get(..4).ok_or(HandOver)?;
                    let len = u32::from_le_bytes(len.try_into().map_err(|_| HandOver)?) as usize;
                    Some((4usize, len))
                } else {
                    None
                };
                (shared, num_values as usize, encoding, levels_len)
            }
            Page::DataPageV2 {
                buf,
                num_values,
                encoding,
                def_levels_byte_len,
                rep_levels_byte_len,
                is_compressed,
                ..
            } => {
                if rep_levels_byte_len != 0 {
                    return Err(HandOver);
                }
                // The levels are never compressed.
                let levels = def_levels_byte_len as usize;
                let shared = self.inflate(buf, levels, is_compressed)?;
                let levels_len = self.nullable.then_some((0, levels));
                (shared, num_values as usize, encoding, levels_len)
            }
        };
        let buf = shared.as_deref().unwrap_or(&self.own[..self.own_len]);
        let (levels, values_at) = match levels_len {
            Some((at, len)) => {
                let end = at
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or(HandOver)?;
                (Some(Hybrid::new(at, end, 1)), end)
            }
            None => (None, 0),
        };
        let values = match (encoding, self.kind) {
            (Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY, _) => {
                if self.dictionary.as_ref().is_none_or(|d| d.len() == 0) {
                    return Err(HandOver);
                }
                let width = *buf.get(values_at).ok_or(HandOver)?;
                if width > 32 {
                    return Err(HandOver);
                }
                Values::Keys(Hybrid::new(values_at + 1, buf.len(), u32::from(width)))
            }
            (Encoding::PLAIN, Kind::Int64) => Values::Plain { at: values_at },
            _ => return Err(HandOver),
        };
        Ok(Some(PageCursor {
            rows,
            shared,
            levels,
            values,
        }))
    }
}

/// Reads `rows` definition levels of `page` into `nulls` (when the column has them):
/// how many of the rows have a value.
fn read_levels(
    page: &mut PageCursor,
    data: &[u8],
    rows: usize,
    nulls: &mut Option<BooleanBufferBuilder>,
    any_null: &mut bool,
) -> Flat<usize> {
    let (Some(levels), Some(nulls)) = (&mut page.levels, nulls.as_mut()) else {
        return Ok(rows);
    };
    let mut valid = 0;
    let mut left = rows;
    while left > 0 {
        match levels.next_chunk(data, left)? {
            Chunk::Repeat(level, k) => {
                if level > 1 {
                    return Err(HandOver);
                }
                nulls.append_n(k, level == 1);
                *any_null |= level == 0;
                valid += if level == 1 { k } else { 0 };
                left -= k;
            }
            Chunk::Packed(k) => {
                for _ in 0..k {
                    let level = levels.unpack_one(data);
                    if level > 1 {
                        return Err(HandOver);
                    }
                    nulls.append(level == 1);
                    *any_null |= level == 0;
                    valid += level as usize;
                }
                left -= k;
            }
        }
    }
    Ok(valid)
}

/// Spreads the values `out[from..]` (one per valid row) over `rows` rows whose validity is
/// `nulls[first..first + rows]`, `fill` at the null rows.
fn spread<T: Copy>(
    out: &mut Vec<T>,
    from: usize,
    rows: usize,
    nulls: Option<&BooleanBufferBuilder>,
    first: usize,
    fill: T,
) {
    let Some(nulls) = nulls else { return };
    let dense: Vec<T> = out.drain(from..).collect();
    let mut dense = dense.into_iter();
    for row in first..first + rows {
        let value = if nulls.get_bit(row) {
            dense.next().unwrap_or(fill)
        } else {
            fill
        };
        out.push(value);
    }
}

/// A PLAIN-encoded page of `n` byte arrays, as UTF-8 strings.
fn plain_strings(buf: &[u8], n: usize) -> Flat<ArrayRef> {
    let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
    // Room for the values and the sixteen bytes the last may copy.
    let mut bytes: Vec<u8> = Vec::with_capacity(buf.len().saturating_sub(4 * n) + 16);
    offsets.push(0);
    let mut at = 0;
    for _ in 0..n {
        let len = buf.get(at..at + 4).ok_or(HandOver)?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| HandOver)?) as usize;
        let value = buf.get(at + 4..at + 4 + len).ok_or(HandOver)?;
        // Identifiers are short: sixteen bytes copied at once (then cut to the value's
        // length) are one move, where a copy of the exact length is a call.
        match buf.get(at + 4..at + 4 + 16) {
            Some(sixteen) if len <= 16 => {
                let end = bytes.len() + len;
                bytes.extend_from_slice(sixteen);
                bytes.truncate(end);
            }
            _ => bytes.extend_from_slice(value),
        }
        offsets.push(i32::try_from(bytes.len()).map_err(|_| HandOver)?);
        at += 4 + len;
    }
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    // Checks UTF-8: the strings come from outside.
    let strings =
        StringArray::try_new(offsets, Buffer::from_vec(bytes), None).map_err(|_| HandOver)?;
    Ok(Arc::new(strings))
}

/// A PLAIN-encoded page of `n` `i64`s.
fn plain_i64s(buf: &[u8], n: usize) -> Flat<Vec<i64>> {
    let bytes = buf
        .get(..n.checked_mul(8).ok_or(HandOver)?)
        .ok_or(HandOver)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .collect())
}

/// What comes next in a hybrid stream: `k` repeats of one value, or `k` bit-packed values
/// (read with [`Hybrid::unpack_one`]).
enum Chunk {
    Repeat(u32, usize),
    Packed(usize),
}

/// Parquet's RLE/bit-packing hybrid: runs of one value, and runs of groups of eight values
/// of `width` bits packed from the lowest bit up.
struct Hybrid {
    /// Where its bytes are in the page.
    start: usize,
    end: usize,
    /// Where the next run's header is, from `start`.
    at: usize,
    width: u32,
    mask: u64,
    /// Of the current run: repeats left and their value, or packed values left and the bit
    /// where the next one starts.
    repeats: usize,
    value: u32,
    packed: usize,
    bit: usize,
    /// The bit where the current packed run began: its groups of eight start every
    /// `8 * width` bits from there.
    run_bit: usize,
}

impl Hybrid {
    fn new(start: usize, end: usize, width: u32) -> Hybrid {
        Hybrid {
            start,
            end,
            at: 0,
            width,
            mask: if width >= 32 {
                u64::from(u32::MAX)
            } else {
                (1u64 << width) - 1
            },
            repeats: 0,
            value: 0,
            packed: 0,
            bit: 0,
            run_bit: 0,
        }
    }

    /// Its bytes in `page`.
    #[inline]
    fn data<'p>(&self, page: &'p [u8]) -> &'p [u8] {
        page.get(self.start..self.end).unwrap_or(&[])
    }

    /// Appends up to `n` values to `out`: how many, fewer only where the stream ends.
    fn read(&mut self, page: &[u8], n: usize, out: &mut Vec<u32>) -> Flat<usize> {
        let mut left = n;
        while left > 0 {
            match self.next_chunk(page, left) {
                Ok(Chunk::Repeat(value, k)) => {
                    out.extend(std::iter::repeat_n(value, k));
                    left -= k;
                }
                Ok(Chunk::Packed(k)) => {
                    self.unpack(page, k, out);
                    left -= k;
                }
                Err(HandOver) => break,
            }
        }
        Ok(n - left)
    }

    #[inline]
    /// The next chunk, of at most `max` values (taken from the run: a repeat is consumed
    /// here, packed values by `max` calls of [`unpack_one`](Self::unpack_one)).
    fn next_chunk(&mut self, page: &[u8], max: usize) -> Flat<Chunk> {
        if self.repeats == 0 && self.packed == 0 {
            self.next_run(page)?;
        }
        if self.repeats > 0 {
            let k = max.min(self.repeats);
            self.repeats -= k;
            return Ok(Chunk::Repeat(self.value, k));
        }
        Ok(Chunk::Packed(max.min(self.packed)))
    }

    /// Appends the next `k` packed values; the caller was told they are there by
    /// [`next_chunk`](Self::next_chunk).
    fn unpack(&mut self, page: &[u8], mut k: usize, out: &mut Vec<u32>) {
        out.reserve(k);
        let width = self.width as usize;
        if width == 0 {
            out.extend(std::iter::repeat_n(0, k));
            self.packed -= k;
            return;
        }
        // Value by value to the next group of eight, then whole groups while their bytes and
        // a word past them are there, then value by value again.
        while k > 0 && !((self.bit - self.run_bit) / width).is_multiple_of(8) {
            out.push(self.unpack_one(page));
            k -= 1;
        }
        let rest = self.data(page).get(self.bit >> 3..).unwrap_or(&[]);
        let groups = unpack_groups(rest, width, k / 8, out);
        self.bit += groups * 8 * width;
        self.packed -= groups * 8;
        k -= groups * 8;
        for _ in 0..k {
            out.push(self.unpack_one(page));
        }
    }

    /// The next packed value; the caller was told one is there by
    /// [`next_chunk`](Self::next_chunk).
    #[inline]
    fn unpack_one(&mut self, page: &[u8]) -> u32 {
        let data = self.data(page);
        let (byte, shift) = (self.bit >> 3, self.bit & 7);
        let word = match data.get(byte..byte + 8) {
            Some(w) => u64::from_le_bytes(w.try_into().unwrap_or([0; 8])),
            None => {
                let mut w = [0u8; 8];
                let tail = data.get(byte..).unwrap_or(&[]);
                w[..tail.len().min(8)].copy_from_slice(&tail[..tail.len().min(8)]);
                u64::from_le_bytes(w)
            }
        };
        self.bit += self.width as usize;
        self.packed -= 1;
        ((word >> shift) & self.mask) as u32
    }

    /// Reads the next run's header (and a repeated value).
    #[inline]
    fn next_run(&mut self, page: &[u8]) -> Flat<()> {
        let data = self.data(page);
        let mut header: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = *data.get(self.at).ok_or(HandOver)?;
            self.at += 1;
            header |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(HandOver);
            }
        }
        let count = usize::try_from(header >> 1).map_err(|_| HandOver)?;
        if header & 1 == 1 {
            // `count` groups of eight values; a last group cut short by the page's end
            // holds what its bytes hold.
            let bytes = count.checked_mul(self.width as usize).ok_or(HandOver)?;
            let end = self.at.saturating_add(bytes).min(data.len());
            let values = count.checked_mul(8).ok_or(HandOver)?;
            let fit = if self.width == 0 {
                values
            } else {
                ((end - self.at) * 8 / self.width as usize).min(values)
            };
            (self.packed, self.bit, self.run_bit) = (fit, self.at * 8, self.at * 8);
            self.at = end;
            if fit == 0 {
                return Err(HandOver);
            }
        } else {
            let bytes = (self.width as usize).div_ceil(8);
            let value = data.get(self.at..self.at + bytes).ok_or(HandOver)?;
            // Little-endian, in 0 to 4 bytes (no call to copy so few).
            let value = (value.iter().rev()).fold(0u32, |v, &b| (v << 8) | u32::from(b));
            self.at += bytes;
            (self.repeats, self.value) = (count, value);
            if count == 0 {
                return Err(HandOver);
            }
        }
        Ok(())
    }
}

/// Bytes [`unpack_group`] may load from a group's first byte: a word from its last value's
/// byte (at most `7 * 32 / 8 = 28`) on.
const GROUP_SPAN: usize = 36;

/// Appends up to `groups` groups of eight packed values of `width` bits (1 to 32) from the
/// start of `data`: those whose first byte has [`GROUP_SPAN`] bytes after it in `data`.
/// How many groups it appended.
fn unpack_groups(data: &[u8], width: usize, groups: usize, out: &mut Vec<u32>) -> usize {
    macro_rules! widths {
        ($($w:literal)*) => {
            match width {
                $($w => unpack_groups_of::<$w>(data, groups, out),)*
                _ => 0,
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32)
}

/// [`unpack_groups`] for one width: the shifts and byte offsets of a group's eight values
/// are constants, and no load needs a check of its own.
fn unpack_groups_of<const W: usize>(data: &[u8], groups: usize, out: &mut Vec<u32>) -> usize {
    // Group `g` starts at byte `g * W`.
    let fit = match data.len().checked_sub(GROUP_SPAN) {
        Some(room) => room / W + 1,
        None => 0,
    };
    let groups = groups.min(fit);
    for g in 0..groups {
        let span = data
            .get(g * W..g * W + GROUP_SPAN)
            .and_then(|s| <&[u8; GROUP_SPAN]>::try_from(s).ok());
        let Some(span) = span else {
            return g;
        };
        out.extend_from_slice(&unpack_group::<W>(span));
    }
    groups
}

#[inline(always)]
fn unpack_group<const W: usize>(span: &[u8; GROUP_SPAN]) -> [u32; 8] {
    let mask = if W >= 32 {
        u64::from(u32::MAX)
    } else {
        (1u64 << W) - 1
    };
    let mut values = [0u32; 8];
    for (j, value) in values.iter_mut().enumerate() {
        let bit = j * W;
        let at = bit / 8;
        let word = u64::from_le_bytes([
            span[at],
            span[at + 1],
            span[at + 2],
            span[at + 3],
            span[at + 4],
            span[at + 5],
            span[at + 6],
            span[at + 7],
        ]);
        *value = ((word >> (bit % 8)) & mask) as u32;
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::compute::cast;
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::basic::Compression;
    use parquet::file::properties::{WriterProperties, WriterVersion};
    use rand::{Rng, SeedableRng};

    /// Rows as text, whichever reader read them.
    type Rows = Vec<[Option<String>; 4]>;

    fn rows_of(batches: impl Iterator<Item = Result<RecordBatch, ArrowError>>) -> Rows {
        let mut rows = Vec::new();
        for batch in batches {
            let batch = batch.unwrap();
            let text: Vec<StringArray> = (batch.columns().iter())
                .map(|c| {
                    cast(c, &DataType::Utf8)
                        .unwrap()
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .unwrap()
                        .clone()
                })
                .collect();
            for i in 0..batch.num_rows() {
                let cell = |c: usize| text[c].is_valid(i).then(|| text[c].value(i).to_string());
                rows.push([cell(0), cell(1), cell(2), cell(3)]);
            }
        }
        rows
    }

    /// A file of customers in runs (some null), touchpoints, times and counts (some null).
    fn file(seed: u64, rows: usize, props: WriterProperties) -> Bytes {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (mut customers, mut touchpoints, mut ts, mut n) = (vec![], vec![], vec![], vec![]);
        let mut customer = 0u32;
        let mut left = 0;
        for i in 0..rows {
            if left == 0 {
                customer = rng.random_range(0..rows as u32 / 4 + 1);
                left = rng.random_range(1..40);
            }
            left -= 1;
            customers.push((!customer.is_multiple_of(97)).then(|| format!("customer-{customer}")));
            touchpoints.push(format!("tp{}", rng.random_range(0..27)));
            ts.push(1_700_000_000_000_000 + i as i64 * 1_000 + rng.random_range(-5000..5000));
            n.push((rng.random_range(0..10) != 0).then(|| rng.random_range(-1000..1000i64)));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, true),
            Field::new("touchpoint", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                false,
            ),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(customers)),
                Arc::new(StringArray::from(touchpoints)),
                Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("+00:00")),
                Arc::new(Int64Array::from(n)),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        Bytes::from(out)
    }

    /// The file's footer with text read as dictionaries, as the columnar path asks.
    fn footer(bytes: &Bytes) -> ArrowReaderMetadata {
        let plain = ArrowReaderMetadata::load(bytes, ArrowReaderOptions::new()).unwrap();
        let fields: Vec<Field> = (plain.schema().fields().iter())
            .map(|f| match f.data_type() {
                DataType::Utf8 => Field::new(
                    f.name(),
                    DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8)),
                    f.is_nullable(),
                ),
                _ => f.as_ref().clone(),
            })
            .collect();
        let hint = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(fields)));
        ArrowReaderMetadata::try_new(plain.metadata().clone(), hint).unwrap()
    }

    fn arrow_rows(bytes: &Bytes, metadata: &ArrowReaderMetadata, batch: usize) -> Rows {
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), metadata.clone())
                .with_batch_size(batch)
                .build()
                .unwrap();
        rows_of(reader)
    }

    /// Reads every row group with the flat reader; whether it handed over.
    fn flat_rows(bytes: &Bytes, metadata: &ArrowReaderMetadata, batch: usize) -> (Rows, bool) {
        let groups: Vec<usize> = (0..metadata.metadata().num_row_groups()).collect();
        let mask = ProjectionMask::all();
        let fallback: Fallback = {
            let (bytes, metadata, groups) = (bytes.clone(), metadata.clone(), groups.clone());
            Box::new(move |first| {
                ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), metadata.clone())
                    .with_row_groups(groups.clone())
                    .with_batch_size(batch)
                    .with_offset(first)
                    .build()
            })
        };
        let mut flat = batches(
            Arc::new(bytes.clone()),
            metadata,
            &mask,
            batch,
            groups,
            fallback,
        )
        .expect("a flat file");
        let rows = rows_of(&mut flat);
        (rows, flat.arrow.is_some())
    }

    fn props() -> parquet::file::properties::WriterPropertiesBuilder {
        WriterProperties::builder()
    }

    #[test]
    fn reads_what_the_arrow_reader_reads() {
        let cases: Vec<(&str, WriterProperties, bool)> = vec![
            ("defaults", props().build(), false),
            (
                "small pages, snappy, row groups",
                props()
                    .set_compression(Compression::SNAPPY)
                    .set_data_page_size_limit(512)
                    .set_write_batch_size(64)
                    .set_max_row_group_row_count(Some(3000))
                    .build(),
                false,
            ),
            (
                "data pages v2, zstd",
                props()
                    .set_writer_version(WriterVersion::PARQUET_2_0)
                    .set_compression(Compression::ZSTD(Default::default()))
                    .set_data_page_size_limit(1024)
                    .set_write_batch_size(100)
                    .build(),
                false,
            ),
            (
                // Snappy pages are decompressed by the cursor; a v2 page's levels are not
                // compressed.
                "data pages v2, snappy",
                props()
                    .set_writer_version(WriterVersion::PARQUET_2_0)
                    .set_compression(Compression::SNAPPY)
                    .set_data_page_size_limit(700)
                    .set_write_batch_size(50)
                    .build(),
                false,
            ),
            (
                "times and counts plain",
                props()
                    .set_column_dictionary_enabled("ts".into(), false)
                    .set_column_dictionary_enabled("n".into(), false)
                    .build(),
                false,
            ),
            (
                // The customer dictionary overflows: plain pages follow, the Arrow reader
                // reads on from the first row not handed on.
                "dictionary overflow",
                props()
                    .set_compression(Compression::SNAPPY)
                    .set_dictionary_page_size_limit(2048)
                    .set_data_page_size_limit(1024)
                    .set_write_batch_size(128)
                    .build(),
                true,
            ),
        ];
        for (name, props, hands_over) in cases {
            for (seed, rows) in [(1, 1), (2, 777), (3, 10_000)] {
                let bytes = file(seed, rows, props.clone());
                let metadata = footer(&bytes);
                for batch in [1, 100, 8192] {
                    let expected = arrow_rows(&bytes, &metadata, batch);
                    assert_eq!(expected.len(), rows);
                    let (got, handed_over) = flat_rows(&bytes, &metadata, batch);
                    assert!(got == expected, "{name}, {rows} rows, batches of {batch}");
                    if rows > 5000 {
                        assert_eq!(handed_over, hands_over, "{name}: handed over");
                    }
                }
            }
        }
    }

    #[test]
    fn other_columns_go_to_the_arrow_reader() {
        let bytes = file(4, 100, props().build());
        // Text read as text (not dictionaries): not this reader's.
        let plain = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new()).unwrap();
        assert!(plan(&plain, &ProjectionMask::all()).is_none());
        let metadata = footer(&bytes);
        let kinds: Vec<Kind> = (plan(&metadata, &ProjectionMask::all()).unwrap().into_iter())
            .map(|(_, k)| k)
            .collect();
        assert_eq!(kinds, [Kind::Keys, Kind::Keys, Kind::Int64, Kind::Int64]);
    }

    #[test]
    fn packed_runs_of_every_width_read_in_any_pieces() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for width in 0..=32u32 {
            let groups = 40;
            let max = if width == 32 {
                u32::MAX
            } else {
                (1u32 << width) - 1
            };
            let values: Vec<u32> = (0..groups * 8).map(|_| rng.random_range(0..=max)).collect();
            // One bit-packed run of all of them, then a run of 3 repeats of `max`.
            let mut data = Vec::new();
            let mut header = ((groups as u64) << 1) | 1;
            while header >= 0x80 {
                data.push((header as u8 & 0x7f) | 0x80);
                header >>= 7;
            }
            data.push(header as u8);
            let mut bits = vec![false; groups * 8 * width as usize];
            for (i, v) in values.iter().enumerate() {
                for b in 0..width as usize {
                    bits[i * width as usize + b] = (v >> b) & 1 == 1;
                }
            }
            for byte in bits.chunks(8) {
                data.push(
                    byte.iter()
                        .enumerate()
                        .fold(0, |a, (i, &b)| a | (u8::from(b) << i)),
                );
            }
            data.push(3 << 1);
            data.extend_from_slice(&max.to_le_bytes()[..(width as usize).div_ceil(8)]);
            let mut expected = values.clone();
            expected.extend([max; 3]);
            for piece in [1, 3, 8, 13, 64, 1000] {
                let mut hybrid = Hybrid::new(0, data.len(), width);
                let mut out = Vec::new();
                while hybrid.read(&data, piece, &mut out).unwrap() == piece {}
                assert_eq!(out, expected, "width {width}, pieces of {piece}");
            }
        }
    }

    #[test]
    fn hybrid_runs_and_packed_groups() {
        // A run of 5 sevens (width 3: one byte), then one group of eight packed values.
        let values = [1u32, 2, 3, 4, 5, 6, 7, 0];
        let mut packed = 0u32;
        for (i, v) in values.iter().enumerate() {
            packed |= v << (3 * i);
        }
        let mut data = vec![5 << 1, 7, (1 << 1) | 1];
        data.extend_from_slice(&packed.to_le_bytes()[..3]);
        let mut hybrid = Hybrid::new(0, data.len(), 3);
        let mut out = Vec::new();
        assert_eq!(hybrid.read(&data, 4, &mut out).unwrap(), 4);
        assert_eq!(hybrid.read(&data, 100, &mut out).unwrap(), 9);
        assert_eq!(out, [7, 7, 7, 7, 7, 1, 2, 3, 4, 5, 6, 7, 0]);
        // A truncated header or value ends the stream.
        let mut cut = Hybrid::new(0, 1, 3);
        assert_eq!(cut.read(&[0x80], 1, &mut Vec::new()).unwrap(), 0);
        let mut cut = Hybrid::new(0, 1, 9);
        assert_eq!(cut.read(&[2 << 1], 1, &mut Vec::new()).unwrap(), 0);
    }
}
