//! Journeys: events grouped per stitched customer, in event-time order, cut into sessions.

use crate::stitch::IdentityGraph;
use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{TimestampMicrosecondType, UInt32Type};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::OnceLock;
use trailmap_model::config::{Scope, SessionConfig};
use trailmap_model::{IdentityKind, schema};

/// Interns low-cardinality names (touchpoints, sources) to dense ids.
#[derive(Default, Clone)]
pub(crate) struct Names {
    ids: FxHashMap<String, u32>,
    pub(crate) names: Vec<String>,
}

/// Stored as the list; the index is rebuilt on load.
impl Serialize for Names {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.names.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        let ids = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Ok(Names { ids, names })
    }
}

impl Names {
    pub(crate) fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.to_string(), id);
        self.names.push(name.to_string());
        id
    }
}

/// A per-event value kept beside the journeys, for breakdowns (`--breakdown channel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attribute {
    /// A canonical column: `source`, `stage`, `channel`, `touchpoint`, or an identity or
    /// text column.
    Column(String),
    /// A key of the `properties` JSON object (a JSON pointer when it starts with `/`).
    Property(String),
}

impl Attribute {
    /// `channel`, `source`, … name columns; anything else (or `properties.KEY`) a property.
    pub fn parse(text: &str) -> Attribute {
        const COLUMNS: [&str; 5] = [
            schema::SOURCE,
            schema::STAGE,
            schema::CHANNEL,
            schema::TOUCHPOINT,
            schema::EVENT_ID,
        ];
        if let Some(key) = text.strip_prefix("properties.") {
            Attribute::Property(key.to_string())
        } else if COLUMNS.contains(&text) || IdentityKind::ALL.iter().any(|k| k.column() == text) {
            Attribute::Column(text.to_string())
        } else {
            Attribute::Property(text.to_string())
        }
    }

    /// Whether reading it needs the `properties` column.
    pub fn needs_properties(&self) -> bool {
        matches!(self, Attribute::Property(_))
    }

    pub fn name(&self) -> &str {
        match self {
            Attribute::Column(c) | Attribute::Property(c) => c,
        }
    }
}

/// The value events without the attribute get.
pub const NO_VALUE: &str = "(none)";

/// An attribute's values, per event in journey order.
#[derive(Debug, Clone)]
pub struct AttributeColumn {
    pub name: String,
    /// Distinct values; id 0 is [`NO_VALUE`].
    pub values: Vec<String>,
    /// Value id of each event, aligned with the log's `ts` and `touchpoint`.
    pub of_event: Vec<u32>,
}

/// Collects events from canonical batches; [`finish`](Self::finish) orders and cuts them.
#[derive(Default)]
pub struct JourneyBuilder {
    /// The identity dictionary the last batches shared, with its values' nodes.
    dict_nodes: Option<DictNodes>,
    /// The attribute kept per event, its interned values and ids in arrival order.
    attribute: Option<(Attribute, Names, Vec<u32>)>,
    graph: IdentityGraph,
    touchpoints: Names,
    stages: Vec<Option<String>>,
    sources: Names,
    /// Per event, in arrival order.
    ts: Vec<i64>,
    touchpoint: Vec<u32>,
    node: Vec<u32>,
    source: Vec<u16>,
    links: u64,
    /// Records without any identifier; ingest rejects these, so this stays 0 in practice.
    unidentified: u64,
}

pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, String> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| format!("batch has no `{name}` column; expected the canonical event schema"))
}

/// Equality for short identifiers, inlined: a call to `memcmp` per row costs more than
/// comparing a dozen bytes, and a loop over the bytes more than two words.
#[inline]
pub(crate) fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        (s.get(at..at + 8))
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_ne_bytes)
    };
    match a.len() {
        // Two words, overlapping, cover 8 to 16 bytes.
        n @ 8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        0..8 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

/// An identity column as a batch carries it: text, or text dictionary-encoded (Parquet
/// hands over dictionary pages as they are; a customer id repeated on a run of rows is then
/// one key).
#[derive(Clone, Copy)]
pub(crate) enum IdColumn<'a> {
    Text(&'a StringArray),
    Dict {
        keys: &'a arrow::array::UInt32Array,
        values: &'a StringArray,
    },
}

impl<'a> IdColumn<'a> {
    pub(crate) fn of(array: &'a dyn Array) -> Option<Self> {
        if let Some(text) = array.as_string_opt::<i32>() {
            return Some(IdColumn::Text(text));
        }
        let dict = array.as_dictionary_opt::<UInt32Type>()?;
        Some(IdColumn::Dict {
            keys: dict.keys(),
            values: dict.values().as_string_opt::<i32>()?,
        })
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            IdColumn::Text(a) => a.len(),
            IdColumn::Dict { keys, .. } => keys.len(),
        }
    }

    /// Null rows, not counting keys that point at a null value (rare; `is_null` sees them).
    pub(crate) fn null_count(&self) -> usize {
        match self {
            IdColumn::Text(a) => a.null_count(),
            IdColumn::Dict { keys, .. } => keys.null_count(),
        }
    }

    #[inline]
    pub(crate) fn is_null(&self, row: usize) -> bool {
        match self {
            IdColumn::Text(a) => a.is_null(row),
            IdColumn::Dict { keys, values } => {
                keys.is_null(row)
                    || values.len() <= keys.value(row) as usize
                    || values.is_null(keys.value(row) as usize)
            }
        }
    }

    /// The value of a row that is not null.
    #[inline]
    pub(crate) fn value(&self, row: usize) -> &'a str {
        match self {
            IdColumn::Text(a) => a.value(row),
            IdColumn::Dict { keys, values } => values.value(keys.value(row) as usize),
        }
    }
}

/// A dictionary<u32, utf8> column's keys and values.
pub(crate) fn dictionary(
    array: &dyn Array,
) -> Result<(&arrow::array::UInt32Array, &StringArray), String> {
    let dict = array
        .as_dictionary_opt::<UInt32Type>()
        .ok_or("dictionary column is not dictionary<u32, utf8>")?;
    let values = dict
        .values()
        .as_string_opt::<i32>()
        .ok_or("dictionary values are not utf8")?;
    Ok((dict.keys(), values))
}

/// Pushes the id of each row of a dictionary column, naming each value once, when a row
/// first uses it. Returns every value's id (`u32::MAX` for values no row uses), or `None`
/// (having pushed some) at a row whose value is null.
fn lazy_ids(
    (keys, values): (&arrow::array::UInt32Array, &StringArray),
    names: &mut Names,
    mut push: impl FnMut(u32),
) -> Option<Vec<u32>> {
    let mut ids = vec![u32::MAX; values.len()];
    for &k in keys.values() {
        let slot = ids.get_mut(k as usize)?;
        if *slot == u32::MAX {
            if values.is_null(k as usize) {
                return None;
            }
            *slot = names.id(values.value(k as usize));
        }
        push(*slot);
    }
    Some(ids)
}

/// Nodes of a dictionary's values, kept while the batches share that dictionary (a Parquet
/// column chunk's batches all do): each distinct identifier is interned once per chunk,
/// not once per batch or per row.
struct DictNodes {
    /// The dictionary, held so its buffers (compared by address) stay alive.
    values: StringArray,
    kind: IdentityKind,
    /// Node of each value; `u32::MAX` until a row uses it.
    nodes: Vec<u32>,
}

/// A batch's dictionary column with its values mapped to global ids: each distinct value
/// is interned once per batch, rows are then a key lookup.
struct DictIds<'a> {
    keys: &'a arrow::array::UInt32Array,
    global: Vec<u32>,
}

impl<'a> DictIds<'a> {
    fn new(array: &'a dyn Array, names: &mut Names) -> Result<Self, String> {
        let (keys, values) = dictionary(array)?;
        // Only values some row refers to become names: a Parquet reader hands every batch
        // the whole column chunk's dictionary, most of it unused by this batch.
        let mut used = vec![false; values.len()];
        for (row, k) in keys.values().iter().enumerate() {
            if keys.is_valid(row)
                && let Some(u) = used.get_mut(*k as usize)
            {
                *u = true;
            }
        }
        let global = (0..values.len())
            .map(|i| {
                if used[i] && values.is_valid(i) {
                    names.id(values.value(i))
                } else {
                    u32::MAX
                }
            })
            .collect();
        Ok(DictIds { keys, global })
    }

    fn get(&self, row: usize) -> Option<u32> {
        if self.keys.is_null(row) {
            return None;
        }
        let id = *self.global.get(self.keys.value(row) as usize)?;
        (id != u32::MAX).then_some(id)
    }
}

/// What a [`JourneyBuilder`] keeps between batches once drained: identities and names.
#[derive(Serialize)]
struct BuilderParts<'a> {
    graph: &'a IdentityGraph,
    attribute: Option<(&'a Attribute, &'a Names)>,
    touchpoints: &'a Names,
    stages: &'a Vec<Option<String>>,
    sources: &'a Names,
    links: u64,
    unidentified: u64,
}

#[derive(Deserialize)]
struct OwnedBuilderParts {
    graph: IdentityGraph,
    attribute: Option<(Attribute, Names)>,
    touchpoints: Names,
    stages: Vec<Option<String>>,
    sources: Names,
    links: u64,
    unidentified: u64,
}

/// The live stitcher's builder in a snapshot. Only a drained builder has a state worth
/// keeping (batch import never snapshots): one holding events refuses.
impl Serialize for JourneyBuilder {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.ts.is_empty() {
            return Err(serde::ser::Error::custom(
                "a journey builder holding events is not a state to snapshot; drain it first",
            ));
        }
        BuilderParts {
            graph: &self.graph,
            attribute: self.attribute.as_ref().map(|(a, names, _)| (a, names)),
            touchpoints: &self.touchpoints,
            stages: &self.stages,
            sources: &self.sources,
            links: self.links,
            unidentified: self.unidentified,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JourneyBuilder {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let p = OwnedBuilderParts::deserialize(deserializer)?;
        Ok(JourneyBuilder {
            graph: p.graph,
            attribute: p.attribute.map(|(a, names)| (a, names, Vec::new())),
            touchpoints: p.touchpoints,
            stages: p.stages,
            sources: p.sources,
            links: p.links,
            unidentified: p.unidentified,
            ..JourneyBuilder::default()
        })
    }
}

/// Events a [`JourneyBuilder`] read since the last [`drain`](JourneyBuilder::drain), in
/// arrival order: the live pipeline reads batches with the same code as batch import, then
/// takes the events away instead of keeping them for [`finish`](JourneyBuilder::finish).
#[derive(Debug, Default)]
pub struct Arrived {
    /// Identity node of each event; its customer is the node's component.
    pub node: Vec<u32>,
    pub ts: Vec<i64>,
    pub touchpoint: Vec<u32>,
    pub source: Vec<u16>,
    /// Value id of the kept attribute ([`JourneyBuilder::keep_attribute`]) per event;
    /// empty when none is kept.
    pub attribute: Vec<u32>,
}

impl Arrived {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
}

impl JourneyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the events read so far, leaving identities and names in place.
    pub fn drain(&mut self) -> Arrived {
        Arrived {
            node: std::mem::take(&mut self.node),
            ts: std::mem::take(&mut self.ts),
            touchpoint: std::mem::take(&mut self.touchpoint),
            source: std::mem::take(&mut self.source),
            attribute: self
                .attribute
                .as_mut()
                .map(|(_, _, kept)| std::mem::take(kept))
                .unwrap_or_default(),
        }
    }

    /// The kept attribute's values by id (id 0 is [`NO_VALUE`]), if one is kept.
    pub fn attribute_values(&self) -> Option<&[String]> {
        self.attribute
            .as_ref()
            .map(|(_, values, _)| values.names.as_slice())
    }

    /// The identity graph, to look identifiers up.
    pub fn graph(&self) -> &IdentityGraph {
        &self.graph
    }

    /// The identity graph, for the live stitcher to resolve customers and follow merges.
    pub fn graph_mut(&mut self) -> &mut IdentityGraph {
        &mut self.graph
    }

    /// The id of a touchpoint name, interning it if unseen: the live pipeline fixes the ids
    /// of configured funnel steps before the first event.
    pub fn touchpoint_id(&mut self, name: &str) -> u32 {
        let id = self.touchpoints.id(name);
        self.stages.resize(self.touchpoints.names.len(), None);
        id
    }

    /// Touchpoint names by id, and the stage the catalog gave each.
    pub fn touchpoints(&self) -> (&[String], &[Option<String>]) {
        (&self.touchpoints.names, &self.stages)
    }

    /// Source names by id.
    pub fn sources(&self) -> &[String] {
        &self.sources.names
    }

    /// Identity-only records read.
    pub fn identity_links(&self) -> u64 {
        self.links
    }

    pub fn events(&self) -> usize {
        self.ts.len()
    }

    /// Makes room for `events` more events, when the input says how many it holds: the
    /// columns then grow once instead of by doubling.
    ///
    /// A hint only: it comes from the input's own account of itself, so past what a run can
    /// hold (2^32 events) it is capped, and when the memory cannot be had the columns grow
    /// as they go instead.
    pub fn reserve(&mut self, events: usize) {
        let events = events.min(u32::MAX as usize);
        let room = self.ts.try_reserve(events).and_then(|()| {
            self.touchpoint.try_reserve(events)?;
            self.node.try_reserve(events)?;
            self.source.try_reserve(events)
        });
        if room.is_err() {
            self.ts.shrink_to_fit();
            self.touchpoint.shrink_to_fit();
            self.node.shrink_to_fit();
            self.source.shrink_to_fit();
        }
    }

    /// Keeps `attribute` per event, for breakdowns. Call before the first batch.
    pub fn keep_attribute(&mut self, attribute: Attribute) {
        let mut values = Names::default();
        values.id(NO_VALUE);
        self.attribute = Some((attribute, values, Vec::new()));
    }

    /// The attribute's value id for every row of a batch.
    fn attribute_ids(&mut self, batch: &RecordBatch) -> Result<Option<Vec<u32>>, String> {
        let Some((attribute, values, _)) = &mut self.attribute else {
            return Ok(None);
        };
        let rows = batch.num_rows();
        let ids = match attribute {
            Attribute::Column(name) => {
                let col = column(batch, name)?;
                if col.as_dictionary_opt::<UInt32Type>().is_some() {
                    let dict = DictIds::new(col, values)?;
                    (0..rows).map(|r| dict.get(r).unwrap_or(0)).collect()
                } else {
                    let text = col.as_string_opt::<i32>().ok_or_else(|| {
                        format!(
                            "column `{name}` is not text; break down by a text or dictionary column"
                        )
                    })?;
                    (0..rows)
                        .map(|r| {
                            if text.is_null(r) {
                                0
                            } else {
                                values.id(text.value(r))
                            }
                        })
                        .collect()
                }
            }
            Attribute::Property(key) => {
                let col = column(batch, schema::PROPERTIES)?
                    .as_string_opt::<i32>()
                    .ok_or("`properties` is not text")?;
                // Properties repeat (a device, a plan, a campaign): each distinct text of
                // the batch is parsed once.
                let mut parsed: FxHashMap<&str, u32> = FxHashMap::default();
                (0..rows)
                    .map(|r| {
                        if col.is_null(r) {
                            return 0;
                        }
                        let text = col.value(r);
                        *parsed
                            .entry(text)
                            .or_insert_with(|| property(text, key).map_or(0, |v| values.id(&v)))
                    })
                    .collect()
            }
        };
        Ok(Some(ids))
    }

    /// Adds a canonical batch. Rows without a touchpoint only link identities.
    pub fn push_batch(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let ts = column(batch, schema::TS)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or("`ts` is not timestamp(µs)")?;
        let ids: Vec<(IdentityKind, IdColumn<'_>)> = IdentityKind::ALL
            .iter()
            .filter_map(|k| {
                let c = IdColumn::of(batch.column_by_name(k.column())?.as_ref())?;
                (c.null_count() < c.len()).then_some((*k, c))
            })
            .collect();
        // Arrival positions and node ids are u32 and source ids u16, to keep per-event
        // state small: past those sizes, say so rather than wrap around.
        let rows = batch.num_rows();
        if self.ts.len() + rows > u32::MAX as usize
            || self.graph.len() + rows * ids.len() > u32::MAX as usize
        {
            return Err(format!(
                "more than {} events or identifiers in one run; split the input by customer",
                u32::MAX
            ));
        }
        if self.sources.names.len() > usize::from(u16::MAX) + 1 {
            return Err(format!(
                "more than {} sources in one run",
                usize::from(u16::MAX) + 1
            ));
        }
        let attribute = self.attribute_ids(batch)?;
        if self.push_bulk(batch, &ids, ts)? {
            if let (Some((_, _, kept)), Some(a)) = (&mut self.attribute, attribute) {
                kept.extend_from_slice(&a);
            }
            return Ok(());
        }
        let touchpoints = DictIds::new(column(batch, schema::TOUCHPOINT)?, &mut self.touchpoints)?;
        let mut stage_names = Names::default();
        let stages = DictIds::new(column(batch, schema::STAGE)?, &mut stage_names)?;
        let sources = DictIds::new(column(batch, schema::SOURCE)?, &mut self.sources)?;
        self.stages.resize(self.touchpoints.names.len(), None);

        // Logs are usually grouped by customer (process logs by case, exports by user), so
        // an identifier tends to repeat on consecutive rows: remembering the last one per
        // column skips most hash lookups.
        let mut last: Vec<(Option<usize>, Option<u32>)> = vec![(None, None); ids.len()];
        for row in 0..batch.num_rows() {
            let mut first: Option<u32> = None;
            for (slot, (kind, col)) in ids.iter().enumerate() {
                if col.is_null(row) {
                    continue;
                }
                let value = col.value(row);
                let node = match last[slot] {
                    (Some(prev), node) if same(col.value(prev), value) => node,
                    _ => {
                        let node = self.graph.node(*kind, value);
                        last[slot] = (Some(row), node);
                        node
                    }
                };
                if let Some(n) = node {
                    match first {
                        None => first = Some(n),
                        Some(f) => {
                            self.graph.union(f, n);
                        }
                    }
                }
            }
            let Some(node) = first else {
                self.unidentified += 1;
                continue;
            };
            let Some(tp) = touchpoints.get(row) else {
                self.links += 1;
                continue;
            };
            if ts.is_null(row) {
                self.unidentified += 1;
                continue;
            }
            if self.stages[tp as usize].is_none()
                && let Some(stage) = stages.get(row)
            {
                self.stages[tp as usize] = Some(stage_names.names[stage as usize].clone());
            }
            self.ts.push(ts.value(row));
            self.touchpoint.push(tp);
            self.node.push(node);
            self.source.push(sources.get(row).unwrap_or(0) as u16);
            if let (Some((_, _, kept)), Some(a)) = (&mut self.attribute, &attribute) {
                kept.push(a[row]);
            }
        }
        Ok(())
    }

    /// The common case of a whole batch at once: one identity column and no missing
    /// values, as the columnar readers produce. Columns are appended in one pass each,
    /// dictionary values interned the first time a row uses them. Returns false, having
    /// added nothing, otherwise.
    fn push_bulk(
        &mut self,
        batch: &RecordBatch,
        ids: &[(IdentityKind, IdColumn<'_>)],
        ts: &arrow::array::TimestampMicrosecondArray,
    ) -> Result<bool, String> {
        let [(kind, col)] = ids else {
            return Ok(false);
        };
        let touchpoints = dictionary(column(batch, schema::TOUCHPOINT)?)?;
        let sources = dictionary(column(batch, schema::SOURCE)?)?;
        if col.null_count() > 0
            || ts.null_count() > 0
            || touchpoints.0.null_count() > 0
            || sources.0.null_count() > 0
        {
            return Ok(false);
        }
        let (first, nodes_before) = (self.touchpoint.len(), self.node.len());
        let undo = |me: &mut Self| {
            me.touchpoint.truncate(first);
            me.node.truncate(nodes_before);
        };
        // Touchpoints: each value named once per batch, when a row first uses it.
        let Some(global) = lazy_ids(touchpoints, &mut self.touchpoints, |id| {
            self.touchpoint.push(id)
        }) else {
            undo(self);
            return Ok(false);
        };
        let nodes_ok = match *col {
            IdColumn::Text(text) => {
                let mut last: Option<(&str, u32)> = None;
                let mut ok = true;
                for row in 0..text.len() {
                    let value = text.value(row);
                    let node = match last {
                        Some((prev, node)) if same(prev, value) => node,
                        _ => match self.graph.node(*kind, value) {
                            Some(node) => {
                                last = Some((value, node));
                                node
                            }
                            // A blank identifier: the row path counts it.
                            None => {
                                ok = false;
                                break;
                            }
                        },
                    };
                    self.node.push(node);
                }
                ok
            }
            IdColumn::Dict { keys, values } => self.dict_nodes(*kind, keys, values),
        };
        if !nodes_ok {
            undo(self);
            return Ok(false);
        }
        let rows = ts.len();
        let (_, source_values) = sources;
        if source_values.len() == 1 && source_values.is_valid(0) {
            // A file is one source: no need to look at every row.
            let id = self.sources.id(source_values.value(0)) as u16;
            self.source.resize(self.source.len() + rows, id);
        } else {
            let at = self.source.len();
            let ids = lazy_ids(sources, &mut self.sources, |id| self.source.push(id as u16));
            if ids.is_none() {
                undo(self);
                self.source.truncate(at);
                return Ok(false);
            }
        }
        self.ts.extend_from_slice(ts.values());
        // Stages are learnt once per touchpoint: after the first batches there is nothing
        // left to learn, and no need to look at every row.
        self.stages.resize(self.touchpoints.names.len(), None);
        let stages_known = global
            .iter()
            .all(|&tp| tp == u32::MAX || self.stages[tp as usize].is_some());
        let stage_column = column(batch, schema::STAGE)?;
        // A batch without stages (the catalog gives none) has nothing to teach either.
        if !stages_known && stage_column.logical_null_count() < rows {
            let mut stage_names = Names::default();
            let stages = DictIds::new(stage_column, &mut stage_names)?;
            for (row, &tp) in self.touchpoint[first..].iter().enumerate() {
                if self.stages[tp as usize].is_none()
                    && let Some(stage) = stages.get(row)
                {
                    self.stages[tp as usize] = Some(stage_names.names[stage as usize].clone());
                }
            }
        }
        Ok(true)
    }

    /// Appends the nodes of a dictionary-encoded identity column's rows, interning each
    /// value the first time a row uses it. False (having appended some) when a value is
    /// null or blank: the row path handles those batches.
    fn dict_nodes(
        &mut self,
        kind: IdentityKind,
        keys: &arrow::array::UInt32Array,
        values: &StringArray,
    ) -> bool {
        let same_dictionary = self.dict_nodes.as_ref().is_some_and(|d| {
            d.kind == kind
                && d.values.len() == values.len()
                && d.values.values().as_ptr() == values.values().as_ptr()
                && d.values.offsets().as_ptr() == values.offsets().as_ptr()
        });
        if !same_dictionary {
            self.dict_nodes = Some(DictNodes {
                values: values.clone(),
                kind,
                nodes: vec![u32::MAX; values.len()],
            });
        }
        let Some(cache) = self.dict_nodes.as_mut() else {
            return false;
        };
        for &k in keys.values() {
            let Some(slot) = cache.nodes.get_mut(k as usize) else {
                return false;
            };
            if *slot == u32::MAX {
                if values.is_null(k as usize) {
                    return false;
                }
                match self.graph.node(kind, values.value(k as usize)) {
                    Some(node) => *slot = node,
                    None => return false,
                }
            }
            self.node.push(*slot);
        }
        true
    }

    /// Groups events per customer, orders each journey by (ts, arrival) and cuts sessions.
    pub fn finish(mut self, sessions: &SessionConfig) -> JourneyLog {
        let n = self.ts.len();
        // Dense customer ids, numbered by first appearance; roots are resolved once, so
        // the second pass below is a plain lookup.
        let mut customer_of_root = vec![u32::MAX; self.graph.len()];
        let mut roots = Vec::new();
        let mut offsets = vec![0usize; 1];
        // Whether each customer's events already come together, customers in order of first
        // appearance (logs exported per customer or case): then the order is the identity.
        let mut grouped = true;
        let mut previous = 0u32;
        // A run of one node (one identifier on consecutive events) is looked up once and
        // counted at once (one counter bumped per event is a chain of stores to one place).
        let (mut last_node, mut run_start) = (u32::MAX, 0);
        for (i, &node) in self.node.iter().enumerate() {
            if node != last_node {
                if i > run_start {
                    offsets[previous as usize + 1] += i - run_start;
                }
                (last_node, run_start) = (node, i);
                let root = self.graph.find(node) as usize;
                if customer_of_root[root] == u32::MAX {
                    customer_of_root[root] = roots.len() as u32;
                    roots.push(root as u32);
                    offsets.push(0);
                }
                let c = customer_of_root[root];
                grouped &= c >= previous;
                previous = c;
            }
        }
        if n > run_start {
            offsets[previous as usize + 1] += n - run_start;
        }
        let customers = roots.len();
        for c in 0..customers {
            offsets[c + 1] += offsets[c];
        }

        // Counting sort by customer. It keeps arrival order within a customer, so a stable
        // sort by time afterwards leaves ties in arrival order. Columns are then gathered
        // one at a time, each input column freed as soon as it is copied, to keep the peak
        // memory near one copy of the events.
        let (ts_in, tp_in, source_in) = (
            std::mem::take(&mut self.ts),
            std::mem::take(&mut self.touchpoint),
            std::mem::take(&mut self.source),
        );
        let (mut ts, mut touchpoint, mut source, mut arrival) = if grouped {
            // The node column's memory, already paged in, becomes the arrival order (filled
            // in by `order_by_time`, on both cores).
            let mut arrival = std::mem::take(&mut self.node);
            // Columns reserved for more rows than became events (identity-only or rejected
            // rows) give the room back when it is much.
            let (mut ts_in, mut tp_in, mut source_in) = (ts_in, tp_in, source_in);
            trim(&mut ts_in);
            trim(&mut tp_in);
            trim(&mut source_in);
            trim(&mut arrival);
            (ts_in, tp_in, source_in, arrival)
        } else {
            let mut cursor = offsets.clone();
            let mut arrival = vec![0u32; n];
            for (i, &node) in self.node.iter().enumerate() {
                let c = customer_of_root[self.graph.find(node) as usize] as usize;
                arrival[cursor[c]] = i as u32;
                cursor[c] += 1;
            }
            drop(cursor);
            drop(std::mem::take(&mut self.node));
            fn gather<T: Copy>(column: Vec<T>, order: &[u32]) -> Vec<T> {
                order.iter().map(|&i| column[i as usize]).collect()
            }
            // The reader is done by now: gather on both cores.
            let (ts, (touchpoint, source)) = std::thread::scope(|scope| {
                let ts = scope.spawn(|| gather(ts_in, &arrival));
                let rest = (gather(tp_in, &arrival), gather(source_in, &arrival));
                (join(ts), rest)
            });
            (ts, touchpoint, source, arrival)
        };
        drop(customer_of_root);
        // Each half of the customers (by events) on a core of its own.
        let half = offsets.partition_point(|&o| o < n / 2).min(customers);
        let cut = offsets[half];
        let (ts_lo, ts_hi) = ts.split_at_mut(cut);
        let (tp_lo, tp_hi) = touchpoint.split_at_mut(cut);
        let (source_lo, source_hi) = source.split_at_mut(cut);
        let (arrival_lo, arrival_hi) = arrival.split_at_mut(cut);
        std::thread::scope(|scope| {
            let upper = scope.spawn(|| {
                let columns = (ts_hi, tp_hi, source_hi, arrival_hi);
                order_by_time(&offsets[half..], columns, grouped);
            });
            order_by_time(
                &offsets[..=half],
                (ts_lo, tp_lo, source_lo, arrival_lo),
                grouped,
            );
            join(upper);
        });

        // Sessions are cut when first asked for: customer-scope mining never needs them.
        let sessions = LazySessions {
            gap: sessions.gap.micros(),
            max_duration: sessions.max_duration.micros(),
            cut: OnceLock::new(),
        };
        let identifiers = self.graph.len();
        let attribute = self
            .attribute
            .map(|(attribute, values, by_arrival)| AttributeColumn {
                name: attribute.name().to_string(),
                values: values.names,
                of_event: arrival.iter().map(|&a| by_arrival[a as usize]).collect(),
            });
        JourneyLog {
            names: CustomerNames {
                graph: self.graph,
                roots,
                built: OnceLock::new(),
            },
            attribute,
            touchpoints: self.touchpoints.names,
            stages: self.stages,
            sources: self.sources.names,
            offsets,
            ts,
            touchpoint,
            source,
            arrival,
            sessions,
            links: self.links,
            identifiers,
        }
    }
}

/// A property's value as text: strings as they are, other JSON values as JSON; `None` when
/// the record is not a JSON object, or the key is missing or null.
fn property(json: &str, key: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let v = if key.starts_with('/') {
        value.pointer(key)?
    } else {
        value.get(key)?
    };
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Sorts each customer's events by (time, arrival): customer `c` holds events
/// `offsets[c]..offsets[c + 1]`, relative to `offsets[0]`, where the columns start. With
/// `fill_arrival`, the input was grouped already and arrival is the position in it.
fn order_by_time(
    offsets: &[usize],
    (ts, touchpoint, source, arrival): (&mut [i64], &mut [u32], &mut [u16], &mut [u32]),
    fill_arrival: bool,
) {
    let base = offsets[0];
    if fill_arrival {
        for (i, a) in arrival.iter_mut().enumerate() {
            *a = (base + i) as u32;
        }
    }
    for w in offsets.windows(2) {
        let r = w[0] - base..w[1] - base;
        if ts[r.clone()].windows(2).all(|w| w[0] <= w[1]) {
            continue;
        }
        // Out of order in the input: sort this customer's events by (ts, arrival).
        let mut perm: Vec<usize> = r.clone().collect();
        perm.sort_by_key(|&p| (ts[p], arrival[p]));
        let (t, tp, s, a): (Vec<_>, Vec<_>, Vec<_>, Vec<_>) = (
            perm.iter().map(|&p| ts[p]).collect(),
            perm.iter().map(|&p| touchpoint[p]).collect(),
            perm.iter().map(|&p| source[p]).collect(),
            perm.iter().map(|&p| arrival[p]).collect(),
        );
        ts[r.clone()].copy_from_slice(&t);
        touchpoint[r.clone()].copy_from_slice(&tp);
        source[r.clone()].copy_from_slice(&s);
        arrival[r].copy_from_slice(&a);
    }
}

/// Gives back a column's room when it is more than twice what it holds.
fn trim<T>(column: &mut Vec<T>) {
    if column.capacity() > 2 * column.len() {
        column.shrink_to_fit();
    }
}

/// Resumes a helper thread's panic on this thread.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Session starts of one customer's ordered event times, as indexes into `ts` (the first
/// is 0): a new session when the gap to the previous event exceeds `gap`, or the session
/// would last longer than `max_duration` (0: no limit), both in µs. Batch and live cut
/// sessions with this one rule.
#[inline]
pub fn session_starts(ts: &[i64], gap: i64, max_duration: i64, mut start: impl FnMut(usize)) {
    let Some(&first) = ts.first() else {
        return;
    };
    let mut begun = first;
    start(0);
    for i in 1..ts.len() {
        if starts_session(ts[i - 1], ts[i], begun, gap, max_duration) {
            begun = ts[i];
            start(i);
        }
    }
}

/// Whether an event at `ts` starts a new session after one at `previous`, in a session that
/// began at `session_start`: the rule of [`session_starts`], one event at a time.
#[inline]
pub fn starts_session(
    previous: i64,
    ts: i64,
    session_start: i64,
    gap: i64,
    max_duration: i64,
) -> bool {
    ts - previous > gap || (max_duration > 0 && ts - session_start > max_duration)
}

/// Session boundaries of customer-ordered events, customers `range` (their starts; the
/// caller closes the last one).
fn cut_sessions(
    ts: &[i64],
    offsets: &[usize],
    range: std::ops::Range<usize>,
    gap: i64,
    max: i64,
) -> (Vec<usize>, Vec<u32>) {
    let mut session_offsets = Vec::with_capacity(range.len() + 1);
    let mut session_customer = Vec::with_capacity(range.len());
    for c in range {
        let lo = offsets[c];
        session_starts(&ts[lo..offsets[c + 1]], gap, max, |i| {
            session_offsets.push(lo + i);
            session_customer.push(c as u32);
        });
    }
    (session_offsets, session_customer)
}

/// Customers' display names, made on first use from the stitched identifiers.
#[derive(Debug, Clone)]
struct CustomerNames {
    graph: IdentityGraph,
    /// Root node of each customer.
    roots: Vec<u32>,
    /// Names end to end, and where each ends.
    built: OnceLock<(String, Vec<usize>)>,
}

impl CustomerNames {
    fn get(&self) -> &(String, Vec<usize>) {
        self.built.get_or_init(|| {
            let display = self.graph.display_nodes();
            let mut names = String::new();
            let mut ends = Vec::with_capacity(self.roots.len());
            for &r in &self.roots {
                names.push_str(self.graph.identifier(display[r as usize]).1);
                ends.push(names.len());
            }
            (names, ends)
        })
    }
}

/// Ordered journeys, columnar. Events of customer `c` are `offsets[c]..offsets[c + 1]`;
/// sessions likewise through `session_offsets`.
#[derive(Debug, Clone)]
pub struct JourneyLog {
    /// Display keys of the customers (see [`IdentityGraph::display_nodes`]); read them with
    /// [`JourneyLog::customer_key`].
    names: CustomerNames,
    pub touchpoints: Vec<String>,
    /// Stage of each touchpoint, as the catalog assigned it.
    pub stages: Vec<Option<String>>,
    pub sources: Vec<String>,
    pub offsets: Vec<usize>,
    pub ts: Vec<i64>,
    pub touchpoint: Vec<u32>,
    pub source: Vec<u16>,
    /// Arrival index of each event (its position in the input), for joining back.
    pub arrival: Vec<u32>,
    sessions: LazySessions,
    /// Identity-only records.
    pub links: u64,
    /// Distinct identifiers stitched.
    pub identifiers: usize,
    /// The attribute kept per event, if [`JourneyBuilder::keep_attribute`] asked for one.
    pub attribute: Option<AttributeColumn>,
}

/// A log's sessions, cut on first use by the rules the log was built with.
#[derive(Debug, Clone)]
struct LazySessions {
    gap: i64,
    max_duration: i64,
    /// Where each session starts (and, last, the number of events), and its customer.
    cut: OnceLock<(Vec<usize>, Vec<u32>)>,
}

/// One customer's or one session's ordered events.
#[derive(Debug, Clone, Copy)]
pub struct Journey<'a> {
    pub customer: u32,
    /// Index of the journey's first event in the log's columns, to look up what else the
    /// log keeps per event (source, arrival, attribute).
    pub start: usize,
    pub ts: &'a [i64],
    pub touchpoint: &'a [u32],
}

/// A journey sifted to some touchpoints: only the events of the touchpoints an aggregate
/// reads (a funnel's steps and exclusions), each with its place in the whole journey and the
/// touchpoint after it there. An aggregate that decides on a few touchpoints then never
/// walks the other events, and a stream over grouped input never gathers them.
#[derive(Debug, Clone, Copy)]
pub struct Sifted<'a> {
    pub customer: u32,
    /// As [`Journey::start`]: the whole journey's first event in the stream.
    pub start: usize,
    /// Events in the whole journey, and its first and last times.
    pub len: usize,
    pub first_ts: i64,
    pub last_ts: i64,
    /// The kept events, in journey order.
    pub ts: &'a [i64],
    pub touchpoint: &'a [u32],
    /// Each kept event's place in the whole journey.
    pub position: &'a [u32],
    /// The touchpoint after each kept event in the whole journey ([`Sifted::END`] after its
    /// last event).
    pub next: &'a [u32],
}

impl Sifted<'_> {
    /// [`next`](Self::next) of the journey's last event.
    pub const END: u32 = u32::MAX;
}

/// Sifts journeys to a set of touchpoints, into buffers it reuses.
#[derive(Debug, Clone, Default)]
pub struct Sieve {
    /// Per touchpoint id, whether its events are kept.
    kept: Vec<bool>,
    ts: Vec<i64>,
    touchpoint: Vec<u32>,
    position: Vec<u32>,
    next: Vec<u32>,
}

impl Sieve {
    /// A sieve keeping the events of `touchpoints` (ids).
    pub fn new(touchpoints: &[u32]) -> Sieve {
        let len = touchpoints
            .iter()
            .map(|&t| t as usize + 1)
            .max()
            .unwrap_or(0);
        let mut kept = vec![false; len];
        for &t in touchpoints {
            kept[t as usize] = true;
        }
        Sieve {
            kept,
            ..Sieve::default()
        }
    }

    /// `journey`, sifted.
    pub fn sift(&mut self, journey: &Journey<'_>) -> Sifted<'_> {
        self.fill(journey.ts, journey.touchpoint);
        self.sifted(journey.customer, journey.start, journey.ts)
    }

    /// Sifts events (`ts` and `touchpoint` of equal length) into the buffers, and says
    /// whether their times are in order: a stream over grouped input sifts a customer and
    /// checks their order in one pass, and orders the few that are not before sifting again.
    pub(crate) fn fill(&mut self, ts: &[i64], touchpoint: &[u32]) -> bool {
        // Taken apart, so that the loop keeps the kept table in registers while it pushes
        // (through the vector it reloaded both on every event).
        let Sieve {
            kept,
            ts: kept_ts,
            touchpoint: kept_touchpoint,
            position,
            next,
        } = self;
        let kept = &kept[..];
        kept_ts.clear();
        kept_touchpoint.clear();
        position.clear();
        next.clear();
        let mut ordered = true;
        let mut previous = i64::MIN;
        for (i, (&t, &tp)) in ts.iter().zip(touchpoint).enumerate() {
            ordered &= previous <= t;
            previous = t;
            if kept.get(tp as usize).copied().unwrap_or(false) {
                kept_ts.push(t);
                kept_touchpoint.push(tp);
                position.push(i as u32);
                next.push(touchpoint.get(i + 1).copied().unwrap_or(Sifted::END));
            }
        }
        ordered
    }

    /// What the last [`fill`](Self::fill) kept, as the sifted journey whose whole events
    /// had times `ts`.
    pub(crate) fn sifted(&self, customer: u32, start: usize, ts: &[i64]) -> Sifted<'_> {
        Sifted {
            customer,
            start,
            len: ts.len(),
            first_ts: ts.first().copied().unwrap_or(0),
            last_ts: ts.last().copied().unwrap_or(0),
            ts: &self.ts,
            touchpoint: &self.touchpoint,
            position: &self.position,
            next: &self.next,
        }
    }
}

/// What was read and stitched.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SessionSummary {
    pub events: u64,
    pub customers: u64,
    pub sessions: u64,
    /// Identity-only records (identify calls) that linked identifiers.
    pub identity_links: u64,
    /// Distinct identifiers stitched into the customers.
    pub identifiers: u64,
    /// Customers whose journey spans more than one source.
    pub cross_source_customers: u64,
    pub touchpoints: u64,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
}

impl JourneyLog {
    pub fn num_events(&self) -> usize {
        self.ts.len()
    }

    pub fn num_customers(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The display key of a customer: its most preferred identifier. The first call names
    /// every customer (a pass over the identifiers); later calls are lookups.
    pub fn customer_key(&self, c: u32) -> &str {
        let (names, ends) = self.names.get();
        let c = c as usize;
        let start = if c == 0 { 0 } else { ends[c - 1] };
        &names[start..ends[c]]
    }

    /// Sessions' first events (and, last, the number of events): session `s` is
    /// `session_offsets()[s]..session_offsets()[s + 1]`. The first call cuts them.
    pub fn session_offsets(&self) -> &[usize] {
        &self.sessions().0
    }

    /// Each session's customer.
    pub fn session_customer(&self) -> &[u32] {
        &self.sessions().1
    }

    fn sessions(&self) -> &(Vec<usize>, Vec<u32>) {
        self.sessions.cut.get_or_init(|| {
            // On both cores, each half of the customers.
            let (ts, offsets) = (&self.ts, &self.offsets);
            let (gap, max) = (self.sessions.gap, self.sessions.max_duration);
            let customers = self.num_customers();
            let mid = customers / 2;
            let (mut session_offsets, mut session_customer) = std::thread::scope(|scope| {
                let upper = scope.spawn(|| cut_sessions(ts, offsets, mid..customers, gap, max));
                let (mut lower_offsets, mut lower_customer) =
                    cut_sessions(ts, offsets, 0..mid, gap, max);
                let (upper_offsets, upper_customer) = join(upper);
                lower_offsets.extend(upper_offsets);
                lower_customer.extend(upper_customer);
                (lower_offsets, lower_customer)
            });
            session_offsets.push(ts.len());
            session_offsets.shrink_to_fit();
            session_customer.shrink_to_fit();
            (session_offsets, session_customer)
        })
    }

    pub fn num_sessions(&self) -> usize {
        self.session_customer().len()
    }

    /// The time of the latest event (`None` without events): the last of some customer's.
    pub fn last_time(&self) -> Option<i64> {
        self.offsets
            .windows(2)
            .filter(|w| w[1] > w[0])
            .map(|w| self.ts[w[1] - 1])
            .max()
    }

    /// The time of the earliest event: the first of some customer's.
    pub fn first_time(&self) -> Option<i64> {
        self.offsets
            .windows(2)
            .filter(|w| w[1] > w[0])
            .map(|w| self.ts[w[0]])
            .min()
    }

    pub fn customer(&self, c: u32) -> Journey<'_> {
        self.journey(Scope::Customer, c as usize)
    }

    /// How many journeys there are in a scope: customers or sessions.
    pub fn num_journeys(&self, scope: Scope) -> usize {
        match scope {
            Scope::Customer => self.num_customers(),
            Scope::Session => self.num_sessions(),
        }
    }

    /// Journey `i` of a scope (`i < num_journeys(scope)`).
    pub fn journey(&self, scope: Scope, i: usize) -> Journey<'_> {
        let (offsets, customer) = match scope {
            Scope::Customer => (self.offsets.as_slice(), i as u32),
            Scope::Session => (self.session_offsets(), self.session_customer()[i]),
        };
        let r = offsets[i]..offsets[i + 1];
        Journey {
            customer,
            start: r.start,
            ts: &self.ts[r.clone()],
            touchpoint: &self.touchpoint[r],
        }
    }

    /// Journeys by scope: whole customer histories, or sessions.
    pub fn journeys(&self, scope: Scope) -> impl Iterator<Item = Journey<'_>> + '_ {
        (0..self.num_journeys(scope)).map(move |i| self.journey(scope, i))
    }

    /// Touchpoint names of a journey.
    pub fn names<'a>(&'a self, journey: &Journey<'a>) -> Vec<&'a str> {
        journey
            .touchpoint
            .iter()
            .map(|&t| self.touchpoints[t as usize].as_str())
            .collect()
    }

    pub fn summary(&self) -> SessionSummary {
        let cross_source = (0..self.num_customers())
            .filter(|&c| {
                let s = &self.source[self.offsets[c]..self.offsets[c + 1]];
                s.iter().any(|x| *x != s[0])
            })
            .count();
        SessionSummary {
            events: self.num_events() as u64,
            customers: self.num_customers() as u64,
            sessions: self.num_sessions() as u64,
            identity_links: self.links,
            identifiers: self.identifiers as u64,
            cross_source_customers: cross_source as u64,
            touchpoints: self.touchpoints.len() as u64,
            first_ts: self.first_time(),
            last_ts: self.last_time(),
        }
    }
}
