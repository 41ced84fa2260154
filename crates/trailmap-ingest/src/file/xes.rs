//! XES event logs (IEEE 1849), plain or gzip. A trace is a customer (case); its events are
//! touchpoints. Trace attributes are visible to the mapping with a `case:` prefix, as pm4py
//! names them (`case:concept:name`). Nested attributes, globals, classifiers and log-level
//! attributes carry no events and are skipped.

use super::{ByteCounter, FileInput, IngestOptions, IngestStats, book, open_text, reject};
use crate::dead_letter::{DeadLetters, Location};
use crate::mapper::{Record, RowMapper, stable_hash};
use crate::value::Value;
use arrow::array::RecordBatch;
use quick_xml::events::{BytesStart, Event};
use std::borrow::Cow;
use std::io::BufRead;
use std::path::PathBuf;
use trailmap_model::Result;
use trailmap_model::config::{FieldMapping, FieldRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttrType {
    Text,
    Int,
    Float,
    Bool,
}

#[derive(Debug, Clone)]
struct Attr {
    key: String,
    value: String,
    ty: AttrType,
}

#[derive(Default)]
struct XesEvent {
    attrs: Vec<Attr>,
    offset: u64,
    /// A malformed attribute: the event is rejected with this reason when its trace ends.
    error: Option<String>,
}

pub(crate) struct XesSource {
    path: PathBuf,
    reader: quick_xml::Reader<Box<dyn BufRead + Send>>,
    mapper: RowMapper<FieldRef>,
    used: Vec<String>,
    buf: Vec<u8>,
    /// Depth of elements being skipped (nested attributes, globals, classifiers).
    skip: usize,
    in_trace: bool,
    in_event: bool,
    trace_attrs: Vec<Attr>,
    /// A malformed trace attribute rejects every event of the trace.
    trace_error: Option<String>,
    events: Vec<XesEvent>,
    current: XesEvent,
    batch_size: usize,
    stats: IngestStats,
    counter: ByteCounter,
    saw_log: bool,
    done: bool,
}

fn attr_type(name: &[u8]) -> Option<AttrType> {
    match name {
        b"string" | b"date" | b"id" => Some(AttrType::Text),
        b"int" => Some(AttrType::Int),
        b"float" => Some(AttrType::Float),
        b"boolean" => Some(AttrType::Bool),
        // Lists and containers hold nested attributes, never a value of their own.
        _ => None,
    }
}

fn is_attribute_element(name: &[u8]) -> bool {
    attr_type(name).is_some() || matches!(name, b"list" | b"container")
}

fn read_attr(e: &BytesStart<'_>, ty: AttrType) -> std::result::Result<Option<Attr>, String> {
    let mut key = None;
    let mut value = None;
    for a in e.attributes() {
        let a = a.map_err(|err| format!("malformed XML attribute: {err}"))?;
        let v = a
            .unescape_value()
            .map_err(|err| format!("malformed XML attribute value: {err}"))?;
        match a.key.as_ref() {
            b"key" => key = Some(v.into_owned()),
            b"value" => value = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok(match (key, value) {
        (Some(key), Some(value)) => Some(Attr { key, value, ty }),
        _ => None,
    })
}

impl XesSource {
    pub(crate) fn open(
        input: &FileInput,
        mapping: &FieldMapping,
        options: &IngestOptions,
    ) -> Result<Self> {
        let (text, counter) = open_text(&input.path)?;
        let mapper = super::path_mapper(input, mapping, options)?;
        let mut reader = quick_xml::Reader::from_reader(text);
        reader.config_mut().trim_text(true);
        Ok(XesSource {
            path: input.path.clone(),
            reader,
            mapper,
            used: mapping.used_names().iter().map(|s| s.to_string()).collect(),
            buf: Vec::new(),
            skip: 0,
            in_trace: false,
            in_event: false,
            trace_attrs: Vec::new(),
            trace_error: None,
            events: Vec::new(),
            current: XesEvent::default(),
            batch_size: options.batch_size,
            stats: IngestStats::default(),
            counter,
            saw_log: false,
            done: false,
        })
    }

    /// Records an attribute on the open event or trace. A malformed one marks the event
    /// (or trace) to be rejected, so the record is booked once; log-level metadata is not
    /// a record and is ignored.
    fn attribute(&mut self, e: &BytesStart<'_>) {
        let Some(ty) = attr_type(e.local_name().as_ref()) else {
            return;
        };
        match read_attr(e, ty) {
            Ok(Some(attr)) if self.in_event => self.current.attrs.push(attr),
            Ok(Some(attr)) if self.in_trace => self.trace_attrs.push(attr),
            Ok(_) => {}
            Err(reason) if self.in_event => {
                self.current.error.get_or_insert(reason);
            }
            Err(reason) if self.in_trace => {
                self.trace_error.get_or_insert(reason);
            }
            Err(_) => {}
        }
    }

    /// Maps the buffered events of a finished trace.
    fn flush_trace(&mut self, dead: &mut DeadLetters) -> Result<()> {
        let events = std::mem::take(&mut self.events);
        for event in &events {
            let row = XesRow {
                event,
                trace: &self.trace_attrs,
                used: &self.used,
            };
            if let Some(reason) = event.error.as_ref().or(self.trace_error.as_ref()) {
                reject(
                    &mut self.stats,
                    dead,
                    &self.path,
                    Location::Offset(event.offset),
                    reason,
                    Some(row.describe().as_bytes()),
                )?;
                continue;
            }
            book(
                &mut self.mapper,
                &row,
                &mut self.stats,
                dead,
                &self.path,
                Location::Offset(event.offset),
                || Some(row.describe().into_bytes()),
            )?;
        }
        self.events = events;
        self.events.clear();
        self.trace_attrs.clear();
        self.trace_error = None;
        Ok(())
    }

    /// The rest of the file cannot be read: the open trace's events (and the open event)
    /// are lost, at least one record, all booked as rejected under one dead letter.
    fn lose_open_trace(
        &mut self,
        dead: &mut DeadLetters,
        offset: u64,
        reason: impl FnOnce(u64) -> String,
    ) -> Result<()> {
        self.done = true;
        let lost = self.events.len() as u64 + u64::from(self.in_event);
        let extra = lost.saturating_sub(1);
        self.stats.records += extra;
        self.stats.rejected += extra;
        let reason = reason(lost);
        reject(
            &mut self.stats,
            dead,
            &self.path,
            Location::Offset(offset),
            &reason,
            None,
        )
    }

    fn step(&mut self, dead: &mut DeadLetters) -> Result<()> {
        self.buf.clear();
        let offset = self.reader.buffer_position();
        let event = match self.reader.read_event_into(&mut self.buf) {
            Ok(ev) => ev.into_owned(),
            Err(e) => {
                return self.lose_open_trace(dead, offset, |lost| {
                    format!(
                        "XML error, reading stopped ({lost} events of the open trace lost): {e}"
                    )
                });
            }
        };
        match event {
            Event::Start(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if self.skip > 0 {
                    self.skip += 1;
                } else if name == b"log" {
                    self.saw_log = true;
                } else if name == b"trace" && !self.in_trace {
                    self.in_trace = true;
                    self.trace_attrs.clear();
                    self.events.clear();
                } else if name == b"event" && self.in_trace && !self.in_event {
                    self.in_event = true;
                    self.current = XesEvent {
                        offset,
                        ..XesEvent::default()
                    };
                } else if is_attribute_element(name) {
                    // An attribute with children: keep its own value, skip the nested ones.
                    self.attribute(&e);
                    self.skip = 1;
                } else {
                    self.skip = 1;
                }
            }
            Event::Empty(e) => {
                let empty_event =
                    e.local_name().as_ref() == b"event" && self.in_trace && !self.in_event;
                if self.skip == 0 && empty_event {
                    // `<event/>`: an event with nothing, rejected when its trace ends.
                    self.events.push(XesEvent {
                        offset,
                        ..XesEvent::default()
                    });
                } else if self.skip == 0 {
                    self.attribute(&e);
                }
            }
            Event::End(e) => {
                if self.skip > 0 {
                    self.skip -= 1;
                } else {
                    match e.local_name().as_ref() {
                        b"event" if self.in_event => {
                            self.in_event = false;
                            let ev = std::mem::take(&mut self.current);
                            self.events.push(ev);
                        }
                        b"trace" if self.in_trace => {
                            self.in_trace = false;
                            self.flush_trace(dead)?;
                        }
                        _ => {}
                    }
                }
            }
            Event::Eof => {
                self.done = true;
                if self.in_trace {
                    self.lose_open_trace(dead, offset, |lost| {
                        format!(
                            "file ends inside a trace (truncated?); its {lost} events are not read"
                        )
                    })?;
                } else if !self.saw_log && self.stats.records == 0 {
                    // An empty file has no events; anything else without <log> is not XES.
                    if offset > 0 {
                        return Err(trailmap_model::Error::input(
                            &self.path,
                            "not an XES log: no <log> element",
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

struct XesRow<'a> {
    event: &'a XesEvent,
    trace: &'a [Attr],
    used: &'a [String],
}

impl XesRow<'_> {
    fn describe(&self) -> String {
        let mut obj = serde_json::Map::new();
        for a in self.trace {
            obj.insert(format!("case:{}", a.key), a.value.clone().into());
        }
        for a in &self.event.attrs {
            obj.insert(a.key.clone(), a.value.clone().into());
        }
        serde_json::Value::Object(obj).to_string()
    }
}

fn value_of(a: &Attr) -> Value<'_> {
    match a.ty {
        AttrType::Int => a
            .value
            .trim()
            .parse()
            .map(Value::Int)
            .unwrap_or(Value::Str(Cow::Borrowed(&a.value))),
        AttrType::Float => a
            .value
            .trim()
            .parse()
            .map(Value::Float)
            .unwrap_or(Value::Str(Cow::Borrowed(&a.value))),
        AttrType::Bool => Value::Bool(a.value.trim().eq_ignore_ascii_case("true")),
        AttrType::Text => Value::Str(Cow::Borrowed(&a.value)),
    }
}

impl Record<FieldRef> for XesRow<'_> {
    fn get(&self, key: &FieldRef) -> Option<Value<'_>> {
        let (attrs, name) = match key.name.strip_prefix("case:") {
            Some(trace_key) => (self.trace, trace_key),
            None => (self.event.attrs.as_slice(), key.name.as_str()),
        };
        attrs.iter().find(|a| a.key == name).map(value_of)
    }

    fn rest_properties(&self) -> Option<String> {
        let mut obj = serde_json::Map::new();
        for a in self.trace {
            let key = format!("case:{}", a.key);
            if !self.used.contains(&key) {
                obj.insert(key, value_of(a).to_json());
            }
        }
        for a in &self.event.attrs {
            if !self.used.contains(&a.key) {
                obj.insert(a.key.clone(), value_of(a).to_json());
            }
        }
        (!obj.is_empty()).then(|| serde_json::Value::Object(obj).to_string())
    }

    fn raw_hash(&self) -> u64 {
        stable_hash(self.describe().as_bytes())
    }
}

impl super::BatchSource for XesSource {
    fn next_batch(&mut self, dead: &mut DeadLetters) -> Result<Option<RecordBatch>> {
        while !self.done && self.mapper.pending() < self.batch_size {
            self.step(dead)?;
        }
        Ok(self.mapper.take_batch())
    }

    fn stats(&self) -> &IngestStats {
        &self.stats
    }

    fn bytes_read(&self) -> u64 {
        self.counter.get()
    }
}
