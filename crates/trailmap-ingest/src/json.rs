//! JSON records into canonical rows: an NDJSON line, a Kafka message, a capture call. Fields
//! are addressed by JSON pointer (`context/traits/email`); a top-level key named like the
//! whole reference wins, so `properties.path`-style flat keys work too.

use crate::file::Projection;
use crate::mapper::{Outcome, Record, RowMapper, stable_hash};
use crate::value::Value;
use arrow::array::RecordBatch;
use std::sync::Arc;
use trailmap_model::Catalog;
use trailmap_model::config::{FieldMapping, FieldRef, SourceConfig};

/// Decodes JSON objects of one source with its field mapping, into canonical batches.
pub struct JsonDecoder {
    mapper: RowMapper<FieldRef>,
    /// Top-level keys the mapping uses; the rest go to `properties`.
    used: Vec<String>,
}

impl JsonDecoder {
    /// A decoder for `source`'s records mapped by `mapping` (JSON never lacks a field up
    /// front, so this fails only when the mapping itself names no time, touchpoint or
    /// identity field).
    pub fn new(
        source: &SourceConfig,
        mapping: &FieldMapping,
        catalog: Arc<Catalog>,
        projection: Projection,
    ) -> Result<Self, String> {
        let mapper = RowMapper::new(source, mapping, catalog, projection, |r| Some(r.clone()))?;
        let used = mapping
            .used_names()
            .iter()
            .map(|n| n.split('/').next().unwrap_or(n).to_string())
            .collect();
        Ok(JsonDecoder { mapper, used })
    }

    /// Decodes one record, or says why it is rejected (nothing is appended then).
    pub fn decode(&mut self, raw: &[u8]) -> Result<Outcome, String> {
        let text = raw.trim_ascii();
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| format!("invalid JSON: {e}"))?;
        if !value.is_object() {
            return Err("not a JSON object".into());
        }
        self.mapper.map(&JsonRow {
            value: &value,
            raw: text,
            used: &self.used,
        })
    }

    /// Rows decoded since the last [`take_batch`](Self::take_batch).
    pub fn pending(&self) -> usize {
        self.mapper.pending()
    }

    /// The source records are decoded as (its `[[sources]]` name).
    pub fn source_name(&self) -> &str {
        self.mapper.source_name()
    }

    pub fn take_batch(&mut self) -> Option<RecordBatch> {
        self.mapper.take_batch()
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

#[cfg(test)]
mod tests {
    use super::*;
    use trailmap_model::config::SourceKind;

    fn decoder() -> JsonDecoder {
        let source = SourceConfig::of_kind(SourceKind::Generic);
        let mapping = source.mapping().unwrap();
        JsonDecoder::new(
            &source,
            &mapping,
            Arc::new(Catalog::passthrough()),
            Projection::default(),
        )
        .unwrap()
    }

    #[test]
    fn decodes_and_rejects_with_reasons() {
        let mut d = decoder();
        let ok = br#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a"}"#;
        assert_eq!(d.decode(ok), Ok(Outcome::Event));
        let e = d.decode(b"{not json").unwrap_err();
        assert!(e.starts_with("invalid JSON"), "{e}");
        assert_eq!(d.decode(b"[1,2]").unwrap_err(), "not a JSON object");
        let e = d
            .decode(br#"{"customer_id":"c1","touchpoint":"a"}"#)
            .unwrap_err();
        assert!(e.contains("missing time"), "{e}");
        assert_eq!(d.pending(), 1, "rejected records append nothing");
        assert_eq!(d.take_batch().map(|b| b.num_rows()), Some(1));
    }
}
