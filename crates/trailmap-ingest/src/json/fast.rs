//! The borrowed path of [`JsonDecoder`](super::JsonDecoder): a record's top level split into
//! keys and raw value texts in one validating pass, nothing allocated for values the mapping
//! does not read.
//!
//! It must give exactly what the generic path (parse into `serde_json::Value`, look up,
//! re-serialize) gives, so it only takes records where that can be argued byte for byte:
//!
//! - No backslash anywhere. Then every key and string is its own text, borrowed as is, and
//!   serde_json writes it back unchanged (it escapes only `"`, `\` and control characters,
//!   which unescaped cannot be inside a valid string).
//! - Bounded nesting, no exponents, no very long digit runs: within those, what a parse into
//!   `Value` accepts is plain JSON grammar, which [`Scanner`] checks; beyond them (depth
//!   limits, numbers that overflow an `f64`) the generic path decides.
//!
//! A record the scanner refuses goes the generic way, which also finds the reason to reject
//! it; so the scanner may refuse more than serde_json does, never accept more. Duplicate
//! keys resolve as in `serde_json::Map`: the last value wins.

use crate::mapper::{Record, stable_hash};
use crate::value::Value;
use std::borrow::Cow;
use std::sync::OnceLock;
use trailmap_model::config::FieldRef;

/// Nesting beyond this goes the generic way (serde_json's `Value` refuses more than 128).
const MAX_DEPTH: u32 = 64;
/// Digit runs longer than this go the generic way: an integer part of 309 digits or more
/// overflows an `f64`, which `Value` refuses and a skipped raw value does not.
const MAX_DIGITS: u32 = 300;
/// Integers written back as read: at most 18 digits always fit an `i64`.
const MAX_CANONICAL_DIGITS: usize = 18;

/// A JSON object's members in the order they were written, duplicates included: keys
/// without their quotes, values as raw JSON texts.
pub(super) struct Fields<'a> {
    members: Vec<(&'a str, &'a str)>,
    /// Each key's [`print`], so a lookup compares one word per member, not strings.
    prints: Vec<u64>,
}

/// A key's length and first seven bytes in one word: keys that differ here differ. Built
/// in a register (bytes copied to a stack array and read back as a word stall the load).
fn print(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let head = match bytes.first_chunk::<8>() {
        Some(word) => u64::from_le_bytes(*word) & 0x00ff_ffff_ffff_ffff,
        None => bytes
            .iter()
            .enumerate()
            .fold(0, |h, (i, &b)| h | (u64::from(b) << (8 * i))),
    };
    head | ((bytes.len().min(255) as u64) << 56)
}

impl<'a> Fields<'a> {
    fn with_capacity(n: usize) -> Self {
        Fields {
            members: Vec::with_capacity(n),
            prints: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, key: &'a str, value: &'a str) {
        self.members.push((key, value));
        self.prints.push(print(key));
    }

    /// The member `key` as `serde_json::Map` would hold it (the last one written).
    fn get(&self, key: &str) -> Option<&'a str> {
        let wanted = print(key);
        self.prints
            .iter()
            .zip(&self.members)
            .rev()
            .find(|(p, (k, _))| **p == wanted && *k == key)
            .map(|(_, (_, v))| *v)
    }

    /// The members as `serde_json::Map` would iterate them: one per key with its last
    /// value, in key order (or, with serde_json's `preserve_order`, where the key was first
    /// written).
    fn deduplicated(&self) -> Vec<(&'a str, &'a str)> {
        let mut out: Vec<(&'a str, &'a str)> = Vec::with_capacity(self.members.len());
        if map_sorts_keys() {
            out.extend(self.members.iter().copied());
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
            for (i, (k, _)) in self.members.iter().enumerate() {
                if self.members[..i].iter().all(|(e, _)| e != k)
                    && let Some(v) = self.get(k)
                {
                    out.push((k, v));
                }
            }
        }
        out
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
    if memchr::memchr(b'\\', text).is_some() {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    let mut scan = Scanner { text, at: 0 };
    scan.space();
    let mut members = Fields::with_capacity(16);
    scan.object(0, &mut |key, value| members.push(key, value))?;
    scan.space();
    (scan.at == text.len()).then_some(members)
}

/// Member `key` of an object text the scanner has validated (a nested value), as
/// [`Fields::get`] would give it: the last one written.
fn member<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut found = None;
    Scanner { text, at: 0 }.object(0, &mut |k, v| {
        if k == key {
            found = Some(v);
        }
    })?;
    found
}

/// Item `index` of an array text the scanner has validated.
fn item(text: &str, index: usize) -> Option<&str> {
    let (mut n, mut found) = (0, None);
    Scanner { text, at: 0 }.array(0, &mut |v| {
        if n == index {
            found = Some(v);
        }
        n += 1;
    })?;
    found
}

/// A validating walk over escape-free UTF-8 JSON text, within the limits of the module
/// doc. Each method starts at its value's first byte and returns `None` for anything it
/// does not vouch for.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// JSON's whitespace (serde_json's too): space, tab, line feed, carriage return.
    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// One value of any kind; its raw text.
    fn value(&mut self, depth: u32) -> Option<&'a str> {
        let start = self.at;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' => self.object(depth, &mut |_, _| {})?,
            b'[' => self.array(depth, &mut |_| {})?,
            b't' => self.literal("true")?,
            b'f' => self.literal("false")?,
            b'n' => self.literal("null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        }
        self.text.get(start..self.at)
    }

    /// A string; its contents. Without backslashes it ends at the next quote; control
    /// characters inside are invalid JSON.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        // Byte by byte: most strings of a record are a few bytes long, shorter than what
        // a vectorised search gains on.
        let bytes = self.text.as_bytes();
        let mut end = start;
        loop {
            match *bytes.get(end)? {
                b'"' => break,
                0..0x20 => return None,
                _ => end += 1,
            }
        }
        self.at = end + 1;
        self.text.get(start..end)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.text.as_bytes().get(self.at..end)? == word.as_bytes()).then(|| self.at = end)
    }

    /// `-?(0|[1-9][0-9]*)(.[0-9]+)?`: no exponent, and no digit run longer than
    /// `MAX_DIGITS` (a parse into `Value` refuses integer parts that overflow an `f64`).
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => {
                self.at += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits()?;
        }
        match self.peek() {
            Some(b'e' | b'E') => None,
            _ => Some(()),
        }
    }

    fn digits(&mut self) -> Option<()> {
        let run = self.text.as_bytes()[self.at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        self.at += run;
        (run as u32 <= MAX_DIGITS).then_some(())
    }

    /// An object; each member goes to `member`.
    fn object(&mut self, depth: u32, member: &mut impl FnMut(&'a str, &'a str)) -> Option<()> {
        self.items(depth, b'{', b'}', |scan| {
            let key = scan.string()?;
            scan.space();
            scan.expect(b':')?;
            scan.space();
            member(key, scan.value(depth + 1)?);
            Some(())
        })
    }

    /// An array; each item goes to `item`.
    fn array(&mut self, depth: u32, item: &mut impl FnMut(&'a str)) -> Option<()> {
        self.items(depth, b'[', b']', |scan| {
            item(scan.value(depth + 1)?);
            Some(())
        })
    }

    /// A container between `open` and `close` whose comma-separated items `one` reads.
    fn items(
        &mut self,
        depth: u32,
        open: u8,
        close: u8,
        mut one: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.expect(open)?;
        self.space();
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            one(self)?;
            self.space();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.space();
                }
                b if b == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// The record as the mapper sees it on the borrowed path.
pub(super) struct Row<'a> {
    pub(super) fields: Fields<'a>,
    pub(super) raw: &'a [u8],
    pub(super) used: &'a [String],
}

/// A value `Value::from_json` would give for this raw text (`None` for null).
fn value(text: &str) -> Option<Value<'_>> {
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
        v = match v.as_bytes().first()? {
            b'{' => member(v, seg)?,
            b'[' => item(v, seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(Lookup::Raw(v))
}

enum Lookup<'a> {
    Raw(&'a str),
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
            .filter(|(k, v)| *v != "null" && !self.used.iter().any(|u| u.as_str() == *k))
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
            out.push_str(&json_text(v));
        }
        out.push('}');
        Some(out)
    }

    fn raw_hash(&self) -> u64 {
        stable_hash(self.raw)
    }
}
