//! The borrowed path of [`JsonDecoder`](super::JsonDecoder): a record's top level split into
//! keys and raw value texts, nothing allocated for values the mapping does not read.
//!
//! It must give exactly what the generic path (parse into `serde_json::Value`, look up,
//! re-serialize) gives, so it only takes records where that can be argued byte for byte:
//!
//! - No backslash anywhere. Then every key and string is its own text, borrowed as is, and
//!   serde_json writes it back unchanged (it escapes only `"`, `\` and control characters,
//!   which unescaped cannot be inside a valid string).
//! - serde_json's parse of raw values skips nested values more leniently than a parse into
//!   `Value`: it has no depth limit and does not check that numbers fit an `f64`. So deep
//!   nesting, exponents and very long digit runs go the generic way too.
//!
//! Everything else is validated by serde_json itself (the top level is deserialized, raw
//! values are checked as they are skipped, UTF-8 up front). Duplicate keys resolve as in
//! `serde_json::Map`: the last value wins.

use crate::mapper::{Record, stable_hash};
use crate::value::Value;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;
use trailmap_model::config::FieldRef;

/// Nesting beyond this goes the generic way (serde_json's `Value` refuses more than 128).
const MAX_DEPTH: u32 = 64;
/// Digit runs longer than this go the generic way: an integer part of 309 digits or more
/// overflows an `f64`, which `Value` refuses and a skipped raw value does not.
const MAX_DIGITS: u32 = 300;
/// Integers written back as read: at most 18 digits always fit an `i64`.
const MAX_CANONICAL_DIGITS: usize = 18;

/// A JSON object's members in the order they were written, duplicates included.
pub(super) struct Fields<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// The member `key` as `serde_json::Map` would hold it (the last one written).
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// The members as `serde_json::Map` would iterate them: one per key with its last
    /// value, in key order (or, with serde_json's `preserve_order`, where the key was first
    /// written).
    fn deduplicated(&self) -> Vec<(&'a str, &'a RawValue)> {
        let mut out: Vec<(&'a str, &'a RawValue)> = Vec::with_capacity(self.0.len());
        if map_sorts_keys() {
            out.extend(self.0.iter().copied());
            // Stable, so equal keys keep their written order and the last one is kept.
            out.sort_by(|a, b| a.0.cmp(b.0));
            out.dedup_by(|later, earlier| {
                if later.0 == earlier.0 {
                    earlier.1 = later.1;
                    true
                } else {
                    false
                }
            });
        } else {
            for (i, (k, _)) in self.0.iter().enumerate() {
                if self.0[..i].iter().all(|(e, _)| e != k)
                    && let Some(v) = self.get(k)
                {
                    out.push((k, v));
                }
            }
        }
        out
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut members = Vec::with_capacity(16);
                while let Some(key) = map.next_key::<&'de str>()? {
                    members.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// Whether `serde_json::Map` iterates in key order (a `BTreeMap`), or in insertion order
/// when some crate of the build turns on serde_json's `preserve_order`: `properties` must
/// list keys as the generic path does, whichever features the final binary unifies.
fn map_sorts_keys() -> bool {
    static SORTS: OnceLock<bool> = OnceLock::new();
    *SORTS.get_or_init(|| {
        let mut m = serde_json::Map::new();
        m.insert("b".into(), serde_json::Value::Null);
        m.insert("a".into(), serde_json::Value::Null);
        m.keys().next().is_some_and(|k| k == "a")
    })
}

/// The record's top-level members, when the borrowed path can take it (see the module
/// doc); `None` sends it the generic way, which also finds the reason to reject it.
pub(super) fn parse(text: &[u8]) -> Option<Fields<'_>> {
    if !plain(text) {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    serde_json::from_str(text).ok()
}

/// No backslash, bounded nesting, no exponent, no long digit run. (Outside strings, `e`/`E`
/// right after a digit can only start an exponent.) Without backslashes a string ends at
/// the next quote, so string contents, most of a record, are skipped a word at a time.
fn plain(text: &[u8]) -> bool {
    if memchr::memchr(b'\\', text).is_some() {
        return false;
    }
    let (mut i, mut depth, mut digits, mut after_digit) = (0, 0u32, 0u32, false);
    while let Some(&b) = text.get(i) {
        if b == b'"' {
            match memchr::memchr(b'"', &text[i + 1..]) {
                Some(len) => i += len + 2,
                // Unterminated: serde_json says why.
                None => return true,
            }
            digits = 0;
            after_digit = false;
            continue;
        }
        let digit = b.is_ascii_digit();
        match b {
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'e' | b'E' if after_digit => return false,
            _ => {}
        }
        digits = if digit { digits + 1 } else { 0 };
        if digits > MAX_DIGITS {
            return false;
        }
        after_digit = digit;
        i += 1;
    }
    true
}

/// The record as the mapper sees it on the borrowed path.
pub(super) struct Row<'a> {
    pub(super) fields: Fields<'a>,
    pub(super) raw: &'a [u8],
    pub(super) used: &'a [String],
}

/// A value `Value::from_json` would give for this raw text (`None` for null).
fn value(raw: &RawValue) -> Option<Value<'_>> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'n' => None,
        b't' => Some(Value::Bool(true)),
        b'f' => Some(Value::Bool(false)),
        // Escape-free, so the string is its text between the quotes.
        b'"' => Some(Value::Str(Cow::Borrowed(text.get(1..text.len() - 1)?))),
        b'{' | b'[' => Some(Value::Str(json_text(text))),
        _ => serde_json::from_str::<serde_json::Number>(text)
            .ok()
            .map(|n| Value::from_number(&n)),
    }
}

/// The text `serde_json::Value::to_string` gives for this (valid, escape-free) JSON text:
/// the text itself when it already is that, else parsed and written again.
fn json_text(text: &str) -> Cow<'_, str> {
    if canonical(text.as_bytes()) {
        return Cow::Borrowed(text);
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => Cow::Owned(v.to_string()),
        // Cannot happen: the text was validated by the same parser, within its limits.
        // The text as read is the closest thing to what it would have been.
        Err(_) => Cow::Borrowed(text),
    }
}

/// Whether serde_json writes this valid, escape-free JSON text back byte for byte: compact,
/// integers only (up to 18 digits, not `-0`, which reads as a float), object keys in the
/// map's order without duplicates.
fn canonical(text: &[u8]) -> bool {
    canonical_at(text, 0) == Some(text.len())
}

/// The end of the canonical value starting at `i`, or `None` if it is not canonical.
fn canonical_at(t: &[u8], i: usize) -> Option<usize> {
    match *t.get(i)? {
        b'"' => string_end(t, i),
        b't' | b'n' => t.get(i..i + 4).map(|_| i + 4),
        b'f' => t.get(i..i + 5).map(|_| i + 5),
        b'-' | b'0'..=b'9' => {
            let start = i + usize::from(t[i] == b'-');
            let end = start + t[start..].iter().take_while(|b| b.is_ascii_digit()).count();
            let digits = &t[start..end];
            let fits = !digits.is_empty() && digits.len() <= MAX_CANONICAL_DIGITS;
            let negative_zero = start > i && digits == b"0";
            let plain_end = !matches!(t.get(end), Some(b'.' | b'e' | b'E'));
            (fits && !negative_zero && plain_end).then_some(end)
        }
        b'[' => {
            let mut i = i + 1;
            if t.get(i) == Some(&b']') {
                return Some(i + 1);
            }
            loop {
                i = canonical_at(t, i)?;
                match t.get(i)? {
                    b',' => i += 1,
                    b']' => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        b'{' => {
            let mut i = i + 1;
            if t.get(i) == Some(&b'}') {
                return Some(i + 1);
            }
            let sorted = map_sorts_keys();
            let mut keys: Vec<&[u8]> = Vec::new();
            loop {
                let key_end = string_end(t, i)?;
                // Compared without their quotes, which would sort before `!` and space.
                let key = &t[i + 1..key_end - 1];
                let in_order = match keys.last() {
                    None => true,
                    Some(last) if sorted => key > *last,
                    Some(_) => !keys.contains(&key),
                };
                if !in_order || t.get(key_end) != Some(&b':') {
                    return None;
                }
                keys.push(key);
                i = canonical_at(t, key_end + 1)?;
                match t.get(i)? {
                    b',' => i += 1,
                    b'}' => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        _ => None,
    }
}

/// The end of the escape-free string starting with the quote at `i`.
fn string_end(t: &[u8], i: usize) -> Option<usize> {
    if t.get(i) != Some(&b'"') {
        return None;
    }
    let len = t.get(i + 1..)?.iter().position(|&b| b == b'"')?;
    Some(i + len + 2)
}

/// `JsonRow`'s lookup on the borrowed path: a top-level key named like the whole reference
/// first, else the pointer's segments, into objects by key and arrays by index.
fn lookup<'a>(fields: &Fields<'a>, field: &FieldRef) -> Option<Lookup<'a>> {
    if let Some(direct) = fields.get(&field.name) {
        return Some(Lookup::Raw(direct));
    }
    let Some((first, rest)) = field.segments.split_first() else {
        // The empty pointer: the record itself.
        return Some(Lookup::Record);
    };
    let mut v = fields.get(first)?;
    for seg in rest {
        v = match v.get().as_bytes().first()? {
            b'{' => serde_json::from_str::<Fields<'a>>(v.get()).ok()?.get(seg)?,
            b'[' => {
                let items: Vec<&'a RawValue> = serde_json::from_str(v.get()).ok()?;
                *items.get(seg.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(Lookup::Raw(v))
}

enum Lookup<'a> {
    Raw(&'a RawValue),
    Record,
}

impl Record<FieldRef> for Row<'_> {
    fn get(&self, key: &FieldRef) -> Option<Value<'_>> {
        match lookup(&self.fields, key)? {
            Lookup::Raw(raw) => value(raw),
            // Checked as UTF-8 by `parse`.
            Lookup::Record => std::str::from_utf8(self.raw)
                .ok()
                .map(|text| Value::Str(json_text(text))),
        }
    }

    fn rest_properties(&self) -> Option<String> {
        let rest: Vec<_> = self
            .fields
            .deduplicated()
            .into_iter()
            .filter(|(k, v)| v.get() != "null" && !self.used.iter().any(|u| u.as_str() == *k))
            .collect();
        if rest.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(self.raw.len());
        for (n, (k, v)) in rest.into_iter().enumerate() {
            out.push(if n == 0 { '{' } else { ',' });
            out.push('"');
            out.push_str(k);
            out.push_str("\":");
            out.push_str(&json_text(v.get()));
        }
        out.push('}');
        Some(out)
    }

    fn raw_hash(&self) -> u64 {
        stable_hash(self.raw)
    }
}
