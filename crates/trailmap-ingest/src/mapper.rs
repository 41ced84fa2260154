//! Field mapping, validation and classification: one record in, one canonical row (or a
//! reason for rejecting it) out. Every reader ends here, so all formats agree on what a
//! valid event is.

use crate::file::Projection;
use crate::time::TimeParser;
use crate::value::Value;
use arrow::array::RecordBatch;
use std::borrow::Cow;
use std::sync::Arc;
use trailmap_model::config::{FieldMapping, FieldRef, SourceConfig};
use trailmap_model::{Catalog, CatalogCache, EventBatchBuilder, EventRow, IdentityKind};

/// One record as a reader sees it. `K` is how the reader addresses a field once resolved:
/// a column index for CSV, a column for Parquet, a path for JSON.
pub trait Record<K> {
    fn get(&self, key: &K) -> Option<Value<'_>>;
    /// Every field the mapping does not use, as a JSON object (for `properties`).
    fn rest_properties(&self) -> Option<String>;
    /// A stable hash of the raw record, the event id of sources without one.
    fn raw_hash(&self) -> u64;
}

/// What became of a record that was not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Event,
    /// An identity-only record (Segment `identify`): stitched, but not a touchpoint.
    Link,
    /// The catalog drops this touchpoint (`unmatched = "drop"`).
    Dropped,
}

struct Resolved<K> {
    refs: Vec<K>,
    /// The names tried, for messages.
    names: String,
}

impl<K> Resolved<K> {
    fn new(refs: &[FieldRef], resolve: &mut impl FnMut(&FieldRef) -> Option<K>) -> Self {
        Resolved {
            refs: refs.iter().filter_map(&mut *resolve).collect(),
            names: refs
                .iter()
                .map(|r| format!("`{}`", r.name))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The first present, non-empty value.
    fn first<'r, R: Record<K>>(&self, rec: &'r R) -> Option<Value<'r>> {
        self.refs
            .iter()
            .filter_map(|k| rec.get(k))
            .find(|v| !v.is_empty())
    }
}

/// Maps records of one source into canonical batches.
pub struct RowMapper<K> {
    source_name: String,
    event_id: Resolved<K>,
    ts: Resolved<K>,
    touchpoint: Resolved<K>,
    channel: Resolved<K>,
    properties: Resolved<K>,
    properties_rest: bool,
    identities: Vec<(IdentityKind, Resolved<K>)>,
    type_field: Option<K>,
    link_only_types: Vec<String>,
    default_channel: Option<String>,
    time: TimeParser,
    catalog: CatalogCache,
    projection: Projection,
    builder: EventBatchBuilder,
    id_scratch: String,
}

impl<K> RowMapper<K> {
    /// Resolves the source's mapping with the reader's `resolve` (which returns `None` for a
    /// field the input does not have). Fails, naming the field, when the input lacks
    /// everything a required field could come from.
    pub fn new(
        source: &SourceConfig,
        mapping: &FieldMapping,
        catalog: Arc<Catalog>,
        projection: Projection,
        mut resolve: impl FnMut(&FieldRef) -> Option<K>,
    ) -> Result<Self, String> {
        let ts = Resolved::new(&mapping.ts, &mut resolve);
        if ts.refs.is_empty() {
            return Err(format!(
                "no time field: looked for {}; name it with --time COL",
                ts.names
            ));
        }
        let touchpoint = Resolved::new(&mapping.touchpoint, &mut resolve);
        let type_field = mapping.type_field.as_ref().and_then(&mut resolve);
        if touchpoint.refs.is_empty() && type_field.is_none() {
            return Err(format!(
                "no touchpoint field: looked for {}; name it with --touchpoint COL",
                touchpoint.names
            ));
        }
        let identities: Vec<_> = mapping
            .identities
            .iter()
            .filter(|(_, refs)| !refs.is_empty())
            .map(|(kind, refs)| (*kind, Resolved::new(refs, &mut resolve)))
            .collect();
        if identities.iter().all(|(_, r)| r.refs.is_empty()) {
            let names: Vec<_> = identities.iter().map(|(_, r)| r.names.as_str()).collect();
            return Err(format!(
                "no customer or identity field: looked for {}; name it with --customer COL",
                names.join(", ")
            ));
        }
        let properties = Resolved::new(&mapping.properties, &mut resolve);
        Ok(RowMapper {
            source_name: source.name.clone(),
            event_id: Resolved::new(&mapping.event_id, &mut resolve),
            ts,
            touchpoint,
            channel: Resolved::new(
                if projection.channel {
                    &mapping.channel
                } else {
                    &[]
                },
                &mut resolve,
            ),
            properties_rest: mapping.properties.is_empty(),
            properties,
            identities,
            type_field,
            link_only_types: mapping.link_only_types.clone(),
            default_channel: mapping.default_channel.clone(),
            time: TimeParser::new(source.time_format.clone(), source.time_unit),
            catalog: CatalogCache::new(catalog, &source.name, source.kind.as_str()),
            projection,
            builder: EventBatchBuilder::new(),
            id_scratch: String::new(),
        })
    }

    /// Rows mapped since the last [`take_batch`](Self::take_batch).
    pub fn pending(&self) -> usize {
        self.builder.len()
    }

    pub fn take_batch(&mut self) -> Option<RecordBatch> {
        (!self.builder.is_empty()).then(|| self.builder.finish())
    }

    /// Maps one record, or returns why it is rejected.
    pub fn map<R: Record<K>>(&mut self, rec: &R) -> Result<Outcome, String> {
        let ts_value = self
            .ts
            .first(rec)
            .ok_or_else(|| format!("missing time: none of {} has a value", self.ts.names))?;
        let ts = self.time.parse(&ts_value)?;

        let mut ids: [Option<Cow<'_, str>>; IdentityKind::ALL.len()] = Default::default();
        let mut any_id = false;
        for (kind, resolved) in &self.identities {
            if let Some(v) = resolved.first(rec) {
                ids[kind.index()] = Some(match v {
                    Value::Str(s) => s,
                    other => Cow::Owned(other.to_text().into_owned()),
                });
                any_id = true;
            }
        }
        if !any_id {
            let names: Vec<_> = self
                .identities
                .iter()
                .map(|(_, r)| r.names.as_str())
                .collect();
            return Err(format!(
                "missing customer: none of {} has a value",
                names.join(", ")
            ));
        }

        let link_only = match (&self.type_field, self.link_only_types.is_empty()) {
            (Some(k), false) => rec
                .get(k)
                .is_some_and(|t| self.link_only_types.iter().any(|l| *l == t.to_text())),
            _ => false,
        };

        let raw_touchpoint = if link_only {
            None
        } else {
            let v = self.touchpoint.first(rec).ok_or_else(|| {
                format!(
                    "missing touchpoint: none of {} has a value",
                    self.touchpoint.names
                )
            })?;
            Some(v)
        };
        let classified = match &raw_touchpoint {
            Some(raw) => match self.catalog.classify(&raw.to_text()) {
                Some(c) => Some(c.clone()),
                None => return Ok(Outcome::Dropped),
            },
            None => None,
        };

        let record_channel = self.channel.first(rec);
        let record_channel = record_channel.as_ref().map(|v| v.to_text());
        let channel = classified
            .as_ref()
            .and_then(|c| c.channel.as_deref())
            .or(record_channel.as_deref())
            .or(self.default_channel.as_deref());

        let event_id = if self.projection.event_id {
            match self.event_id.first(rec) {
                Some(v) => Some(v.to_text().into_owned()),
                None => {
                    use std::fmt::Write;
                    self.id_scratch.clear();
                    let _ = write!(self.id_scratch, "{:016x}", rec.raw_hash());
                    Some(self.id_scratch.clone())
                }
            }
        } else {
            None
        };
        let properties = if !self.projection.properties {
            None
        } else if self.properties_rest {
            rec.rest_properties()
        } else {
            self.properties.first(rec).map(|v| v.to_text().into_owned())
        };

        let mut row = EventRow {
            event_id: event_id.as_deref(),
            source: &self.source_name,
            ts,
            touchpoint: classified.as_ref().map(|c| &*c.touchpoint),
            stage: classified.as_ref().and_then(|c| c.stage.as_deref()),
            channel,
            properties: properties.as_deref(),
            ..Default::default()
        };
        for (slot, id) in row.identities.iter_mut().zip(ids.iter()) {
            *slot = id.as_deref();
        }
        self.builder.push(&row);
        Ok(if link_only {
            Outcome::Link
        } else {
            Outcome::Event
        })
    }
}

/// The shape of a mapping simple enough to apply column by column: one column per field,
/// no identity-only records, no event ids or properties to build.
pub struct SimplePlan<K> {
    pub ts: K,
    pub touchpoint: K,
    /// The record's channel column, used where the catalog names no channel.
    pub channel: Option<K>,
    pub identities: Vec<(IdentityKind, K)>,
}

impl<K: Clone> RowMapper<K> {
    /// A columnar plan when the mapping allows one (see [`SimplePlan`]).
    pub fn simple_plan(&self) -> Option<SimplePlan<K>> {
        if self.projection.event_id
            || self.projection.properties
            || self.type_field.is_some()
            || self.channel.refs.len() > 1
        {
            return None;
        }
        let one = |r: &Resolved<K>| match r.refs.as_slice() {
            [k] => Some(k.clone()),
            _ => None,
        };
        let mut identities = Vec::new();
        for (kind, r) in &self.identities {
            match r.refs.as_slice() {
                [] => {}
                [k] => identities.push((*kind, k.clone())),
                _ => return None,
            }
        }
        Some(SimplePlan {
            ts: one(&self.ts)?,
            touchpoint: one(&self.touchpoint)?,
            channel: self.channel.refs.first().cloned(),
            identities,
        })
    }

    pub fn time_parser(&self) -> &TimeParser {
        &self.time
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    pub fn default_channel(&self) -> Option<&str> {
        self.default_channel.as_deref()
    }

    /// Classifies a raw touchpoint value (memoised); `None` if the catalog drops it.
    pub fn classify(&mut self, raw: &str) -> Option<trailmap_model::Classified> {
        self.catalog.classify(raw).cloned()
    }
}

/// FNV-1a: a stable, dependency-free hash for event ids of sources that carry none. It
/// must never change between versions, so it is written out rather than borrowed from a
/// hasher whose output is allowed to change.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
