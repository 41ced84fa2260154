//! JSON records into canonical rows: an NDJSON line, a Kafka message, a capture call. Fields
//! are addressed by JSON pointer (`context/traits/email`); a top-level key named like the
//! whole reference wins, so `properties.path`-style flat keys work too.

mod fast;

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
    ///
    /// Most records take a borrowed path: the top level is split into keys and raw value
    /// texts, only the mapping's paths are parsed further, and unused keys are copied into
    /// `properties` as text. Records it cannot vouch for (escapes, deep nesting, numbers
    /// that could overflow, invalid JSON, non-objects) are parsed into a generic value as
    /// before, so both paths give the same rows and the same rejection reasons.
    pub fn decode(&mut self, raw: &[u8]) -> Result<Outcome, String> {
        let text = raw.trim_ascii();
        if let Some(fields) = fast::parse(text) {
            return self.mapper.map(&fast::Row {
                fields,
                raw: text,
                used: &self.used,
            });
        }
        self.decode_value(text)
    }

    /// [`decode`](Self::decode) on the generic path only: the reference the borrowed path
    /// is checked and measured against (tests, the `decode` bench).
    #[doc(hidden)]
    pub fn decode_generic(&mut self, raw: &[u8]) -> Result<Outcome, String> {
        self.decode_value(raw.trim_ascii())
    }

    /// The generic path: the whole record parsed into a `serde_json::Value`.
    fn decode_value(&mut self, text: &[u8]) -> Result<Outcome, String> {
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

    /// A decoder of `source` records under `mapping`, every touchpoint kept as it comes.
    fn decoder_over(source: &SourceConfig, mapping: &FieldMapping) -> JsonDecoder {
        JsonDecoder::new(
            source,
            mapping,
            Arc::new(Catalog::passthrough()),
            Projection::default(),
        )
        .unwrap()
    }

    fn decoder() -> JsonDecoder {
        let source = SourceConfig::of_kind(SourceKind::Generic);
        decoder_over(&source, &source.mapping().unwrap())
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

    /// Decoders over the same mapping, one of which only takes the generic path.
    fn pair(kind: SourceKind, edit: impl Fn(&mut FieldMapping)) -> (JsonDecoder, JsonDecoder) {
        let source = SourceConfig::of_kind(kind);
        let mut mapping = source.mapping().unwrap();
        edit(&mut mapping);
        (
            decoder_over(&source, &mapping),
            decoder_over(&source, &mapping),
        )
    }

    /// Decodes every record both ways and checks that outcomes, rejection reasons and rows
    /// agree, record by record; returns how many records took the borrowed path and how
    /// many of those became rows.
    fn assert_same(
        records: &[Vec<u8>],
        fast_one: &mut JsonDecoder,
        generic: &mut JsonDecoder,
    ) -> (usize, usize) {
        let (mut borrowed, mut rows) = (0, 0);
        for r in records {
            let text = r.trim_ascii();
            let is_borrowed = fast::parse(text).is_some();
            borrowed += usize::from(is_borrowed);
            let shown = String::from_utf8_lossy(r);
            assert_eq!(fast_one.decode(r), generic.decode_value(text), "{shown}");
            let (a, b) = (fast_one.take_batch(), generic.take_batch());
            rows += usize::from(is_borrowed && a.is_some());
            assert_eq!(a, b, "{shown}");
        }
        (borrowed, rows)
    }

    fn refs(names: &[&str]) -> Vec<FieldRef> {
        names.iter().map(|n| FieldRef::parse(n)).collect()
    }

    /// Hand-picked records where a borrowed reading could go wrong.
    const TRICKY: &[&str] = &[
        r#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a","z":1,"b":{"y":2,"x":[1,{"k":null}]}}"#,
        // Whitespace everywhere, inside nested values too.
        " \t{ \"customer_id\" : \"c1\" ,\n \"ts\" : 1704067200 , \"touchpoint\":\"a\", \"p\" : { \"b\" : 1 , \"a\" : [ 1 , 2 ] } }\r\n",
        // Duplicate keys: the last wins, at the top and nested; a later null removes a key.
        r#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a","touchpoint":"b","q":1,"q":2,"n":3,"n":null,"o":{"k":1,"k":2}}"#,
        // Null values: skipped in properties, absent for the mapping.
        r#"{"customer_id":null,"user":"u","ts":"2024-01-01T00:00:00Z","touchpoint":"a","x":null}"#,
        r#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":null}"#,
        // Unicode: raw and escaped, in keys and values; other escapes.
        r#"{"customer_id":"ç1","ts":"2024-01-01T00:00:00Z","touchpoint":"é","ключ":"значение 🎉"}"#,
        r#"{"customer_id":"c\u00e71","ts":"2024-01-01T00:00:00Z","touchpoint":"\u00e9","k\u0065y":"\ud83c\udf89","s":"a\/b\"c\\d\n"}"#,
        r#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a","bad":"\ud800"}"#,
        // Numbers: floats, exponents, -0, past i64 and u64, past f64.
        r#"{"customer_id":12345,"ts":1.7040672e9,"touchpoint":"a","f":1.50,"g":-0,"h":9223372036854775808,"i":18446744073709551616,"j":0.1,"k":1E2,"l":-12,"m":123456789012345678,"n":1234567890123456789}"#,
        r#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a","big":1e400}"#,
        r#"{"customer_id":7,"ts":1704067200,"touchpoint":"a","f":1.50,"g":-0,"h":9223372036854775808,"i":18446744073709551616,"j":0.1,"l":-12,"m":123456789012345678,"n":1234567890123456789,"o":[-0,1.0,{"p":-0}]}"#,
        // Keys that sort before the quote, empty keys, keys that look like pointers.
        r#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a","a!":1,"a":2," ":3,"":4,"q":{"a!":1,"a":2},"r":{"a":1,"a!":2}}"#,
        r#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","properties/path":"/flat","properties":{"path":"/nested"}}"#,
        // Booleans and empty containers.
        r#"{"customer_id":true,"ts":"2024-01-01T00:00:00Z","touchpoint":false,"e":{},"f":[],"g":[{}],"h":{"a":[]}}"#,
        // Empty strings count as absent.
        r#"{"customer_id":"","user":"u","ts":"  ","touchpoint":"a"}"#,
        // Objects and arrays where a scalar is expected.
        r#"{"customer_id":{"b":1,"a":2},"ts":"2024-01-01T00:00:00Z","touchpoint":[1,2]}"#,
        // Rejections.
        "{not json",
        "",
        "[1,2]",
        "\"text\"",
        "null",
        r#"{"customer_id":"c1","touchpoint":"a"}"#,
        r#"{"customer_id":"c1","ts":"yesterday","touchpoint":"a"}"#,
        r#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a"} trailing"#,
        r#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a",}"#,
        r#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a","x":01}"#,
        r#"{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a","x":"tab	inside"}"#,
    ];

    fn tricky() -> Vec<Vec<u8>> {
        let mut all: Vec<Vec<u8>> = TRICKY.iter().map(|r| r.as_bytes().to_vec()).collect();
        // Not UTF-8.
        all.push(b"{\"customer_id\":\"c1\",\"ts\":1,\"touchpoint\":\"a\",\"x\":\"\xff\"}".to_vec());
        // Nesting around the limits of both paths.
        for depth in [10, 63, 64, 65, 127, 128, 129, 200] {
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            all.push(
                format!(r#"{{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a","deep":{nested}}}"#)
                    .into_bytes(),
            );
        }
        // Digit runs around the limit and past what an f64 holds.
        for digits in [299, 300, 301, 310, 400] {
            all.push(
                format!(
                    r#"{{"customer_id":"c1","ts":"2024-01-01T00:00:00Z","touchpoint":"a","n":{}}}"#,
                    "9".repeat(digits)
                )
                .into_bytes(),
            );
        }
        all
    }

    #[test]
    fn borrowed_and_generic_paths_agree_on_tricky_records() {
        let records = tricky();
        // Every unused key into `properties`, and pointers into objects and arrays.
        let (mut a, mut b) = pair(SourceKind::Generic, |m| {
            m.touchpoint = refs(&["touchpoint", "properties/path", "b/x/1/k", "list/1", "a~1b"]);
            m.identities[0].1 = refs(&["customer_id", "user", "o/k"]);
        });
        let (borrowed, rows) = assert_same(&records, &mut a, &mut b);
        assert!(
            borrowed >= 15,
            "only {borrowed} records took the borrowed path"
        );
        assert!(rows >= 10, "only {rows} borrowed records became rows");
        // Segment's mapping: a `properties` object field, nested pointers, a type field.
        let (mut a, mut b) = pair(SourceKind::Clickstream, |_| {});
        assert_same(&records, &mut a, &mut b);
        // The whole record as properties (the empty pointer).
        let (mut a, mut b) = pair(SourceKind::Generic, |m| {
            m.properties = vec![FieldRef::parse("")]
        });
        assert_same(&records, &mut a, &mut b);
    }

    #[test]
    fn borrowed_path_takes_segment_calls_and_keeps_their_properties() {
        let (mut a, mut b) = pair(SourceKind::Clickstream, |_| {});
        let records: Vec<Vec<u8>> = [
            r#"{"type":"page","messageId":"m1","anonymousId":"a1","timestamp":"2024-03-01T00:00:30Z","properties":{"path":"/pricing","title":"Pricing"},"context":{"channel":"web"}}"#,
            r#"{"type":"identify","anonymousId":"a1","userId":"u1","traits":{"email":"x@example.com"},"timestamp":"2024-03-01T00:01:00Z"}"#,
            r#"{"type":"track","event":"Signed Up","userId":"u1","context":{"traits":{"email":"x@example.com"}},"timestamp":"2024-03-01T00:02:00Z","properties":{"plan":"pro","seats":3}}"#,
        ]
        .iter()
        .map(|r| r.as_bytes().to_vec())
        .collect();
        assert_eq!(
            assert_same(&records, &mut a, &mut b),
            (records.len(), records.len())
        );
    }

    /// Random records from pieces of the tricky ones: keys in any order, repeated, with
    /// any value, so key ordering and duplicates meet every kind of value.
    #[test]
    fn borrowed_and_generic_paths_agree_on_random_records() {
        use rand::{Rng, SeedableRng};
        let keys = [
            "customer_id",
            "ts",
            "touchpoint",
            "channel",
            "event_id",
            "properties",
            "context",
            "a",
            "b",
            "a!",
            "",
            "ключ",
            "k\\u0065y",
            "type",
            "messageId",
            "anonymousId",
            "timestamp",
            "traits",
        ];
        let values = [
            "\"c1\"",
            "\"2024-01-01T00:00:00Z\"",
            "1704067200",
            "1.5",
            "-0",
            "1e3",
            "null",
            "true",
            "\"\"",
            "\" \"",
            "{}",
            "[]",
            "{\"path\":\"/p\",\"channel\":\"app\"}",
            "{\"path\":\"/p\",\"path\":null}",
            "{\"z\":1,\"a\":[1,2.0]}",
            "{\"a!\":1,\"a\":2}",
            "{\"a\":1,\"a!\":2}",
            "[{\"b\":1},null]",
            "\"\\u00e9\"",
            "\"é\"",
            "{ \"email\" : \"x@y\" }",
            "{\"traits\":{\"email\":\"e\"}}",
            "18446744073709551615",
            "-9223372036854775808",
            "\"page\"",
            "\"identify\"",
        ];
        // The fields each mapping needs, mostly present and valid, so that most records
        // become rows and their `properties` are compared too.
        let needed = [
            ("customer_id", "\"c1\""),
            ("ts", "\"2024-01-01T00:00:00Z\""),
            ("touchpoint", "\"a\""),
            ("anonymousId", "\"a1\""),
            ("timestamp", "1704067200"),
            ("event", "\"Signed Up\""),
            ("requester_email", "\"x@y\""),
            ("updated_at", "\"2024-01-01T00:00:00Z\""),
            ("status", "\"open\""),
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let records: Vec<Vec<u8>> = (0..4000)
            .map(|_| {
                let mut members: Vec<String> = needed
                    .iter()
                    .filter(|_| rng.random_bool(0.95))
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                for _ in 0..rng.random_range(0..7) {
                    let k = keys[rng.random_range(0..keys.len())];
                    let v = values[rng.random_range(0..values.len())];
                    let ws = if rng.random_bool(0.1) { " " } else { "" };
                    let at = rng.random_range(0..=members.len());
                    members.insert(at, format!("{ws}\"{k}\"{ws}:{ws}{v}"));
                }
                format!("{{{}}}", members.join(",")).into_bytes()
            })
            .collect();
        for kind in [
            SourceKind::Generic,
            SourceKind::Clickstream,
            SourceKind::Ticket,
        ] {
            let (mut a, mut b) = pair(kind, |_| {});
            let (borrowed, rows) = assert_same(&records, &mut a, &mut b);
            assert!(borrowed > 1000, "only {borrowed} took the borrowed path");
            assert!(rows > 1000, "only {rows} became rows");
        }
    }
}
