//! Writing generated journeys to files, streaming.
//!
//! Customers are generated in chunks on a second thread while this thread encodes the previous
//! chunk, so at most a few chunks are in memory whatever the run's size. Output is
//! deterministic: chunks are consumed in customer order, and every record within a file is in
//! customer order, then time order.

use crate::journey::{CustomerJourney, GenEvent, GenOptions, RecordKind};
use crate::model::JourneyModel;
use arrow::array::{
    ArrayRef, BooleanBufferBuilder, RecordBatch, StringBuilder, StructArray,
    TimestampMicrosecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, SecondsFormat};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use trailmap_model::config::SourceKind;
use trailmap_model::{Error, Result};

/// Customers generated per chunk handed from the generating thread to the writing thread.
const CHUNK_CUSTOMERS: u64 = 4_096;
/// Rows buffered per Arrow batch before it goes to the Parquet writer.
const BATCH_ROWS: usize = 64 * 1024;
/// Parquet row groups; large enough for fast scans, small enough to bound writer memory.
const ROW_GROUP_ROWS: usize = 1 << 20;

/// Which files a run writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `clickstream.<ext>`, `ticket.<ext>`, `crm.<ext>` in each source's native shape, with the
    /// identities a stitcher must link.
    Sources,
    /// One `events.<ext>` already stitched: `customer_id, ts, touchpoint, stage, channel,
    /// source`. The benchmark input.
    Flat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    Ndjson,
    Parquet,
}

impl OutFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutFormat::Ndjson => "ndjson",
            OutFormat::Parquet => "parquet",
        }
    }
}

/// What a run wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenSummary {
    pub customers: u64,
    /// Every record written, `identify` calls included: the sum of the files' rows.
    pub events: u64,
    pub events_by_source: BTreeMap<String, u64>,
    /// How many of `events` are `identify` calls (identity links, no touchpoint).
    pub identity_records: u64,
    pub files: Vec<PathBuf>,
}

/// Generates `opts.customers` journeys into `dir` (created if missing).
pub fn write(
    model: &JourneyModel,
    opts: &GenOptions,
    dir: &Path,
    layout: Layout,
    format: OutFormat,
) -> Result<GenSummary> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut outputs = Outputs::create(dir, layout, format)?;
    let mut summary = GenSummary {
        customers: opts.customers,
        events_by_source: [SourceKind::Clickstream, SourceKind::Ticket, SourceKind::Crm]
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect(),
        ..GenSummary::default()
    };

    std::thread::scope(|scope| -> Result<()> {
        // Two chunks in flight keep both cores busy without letting generation run ahead.
        let (tx, rx) = sync_channel::<Vec<CustomerJourney>>(2);
        scope.spawn(move || {
            let mut first = 0;
            while first < opts.customers {
                let end = opts.customers.min(first + CHUNK_CUSTOMERS);
                let chunk = (first..end).map(|i| model.journey(opts, i)).collect();
                if tx.send(chunk).is_err() {
                    return; // the writer failed and hung up
                }
                first = end;
            }
        });
        for chunk in rx {
            for journey in &chunk {
                outputs.push(journey, &mut summary)?;
            }
        }
        Ok(())
    })?;

    summary.files = outputs.finish()?;
    Ok(summary)
}

/// The open files of a run and which records go where.
struct Outputs {
    layout: Layout,
    /// Flat: one sink. Sources: clickstream, ticket, crm.
    sinks: Vec<(PathBuf, Box<dyn Sink>)>,
}

impl Outputs {
    fn create(dir: &Path, layout: Layout, format: OutFormat) -> Result<Outputs> {
        let ext = format.extension();
        let shapes: &[(&str, Shape)] = match layout {
            Layout::Flat => &[("events", Shape::Flat)],
            Layout::Sources => &[
                ("clickstream", Shape::Clickstream),
                ("ticket", Shape::Ticket),
                ("crm", Shape::Crm),
            ],
        };
        let sinks = shapes
            .iter()
            .map(|&(stem, shape)| {
                let path = dir.join(format!("{stem}.{ext}"));
                let sink = match format {
                    OutFormat::Ndjson => {
                        Box::new(NdjsonSink::create(&path, shape)?) as Box<dyn Sink>
                    }
                    OutFormat::Parquet => shape.parquet_sink(&path)?,
                };
                Ok((path, sink))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Outputs { layout, sinks })
    }

    fn push(&mut self, journey: &CustomerJourney, summary: &mut GenSummary) -> Result<()> {
        for event in &journey.events {
            let slot = match (self.layout, event.source) {
                (Layout::Flat, _) if event.kind == RecordKind::Identify => continue,
                (Layout::Flat, _) | (Layout::Sources, SourceKind::Clickstream) => 0,
                (Layout::Sources, SourceKind::Ticket) => 1,
                (Layout::Sources, SourceKind::Crm) => 2,
                (Layout::Sources, SourceKind::Generic) => {
                    return Err(Error::Other(
                        "the generator made a generic record; it only makes clickstream, ticket and crm".into(),
                    ));
                }
            };
            self.sinks[slot].1.push(journey, event)?;
            summary.events += 1;
            *summary
                .events_by_source
                .entry(event.source.as_str().to_string())
                .or_default() += 1;
            if event.kind == RecordKind::Identify {
                summary.identity_records += 1;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<PathBuf>> {
        self.sinks
            .into_iter()
            .map(|(path, sink)| sink.finish().map(|()| path))
            .collect()
    }
}

trait Sink: Send {
    fn push(&mut self, journey: &CustomerJourney, event: &GenEvent) -> Result<()>;
    fn finish(self: Box<Self>) -> Result<()>;
}

/// The record shape of one output file.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Clickstream,
    Ticket,
    Crm,
    Flat,
}

impl Shape {
    fn parquet_sink(self, path: &Path) -> Result<Box<dyn Sink>> {
        Ok(match self {
            Shape::Clickstream => Box::new(ParquetSink::<ClickstreamColumns>::create(path)?),
            Shape::Ticket => Box::new(ParquetSink::<TicketColumns>::create(path)?),
            Shape::Crm => Box::new(ParquetSink::<CrmColumns>::create(path)?),
            Shape::Flat => Box::new(ParquetSink::<FlatColumns>::create(path)?),
        })
    }
}

/// ISO-8601 with milliseconds and `Z`, as Segment and help desks write times.
fn iso(micros: i64) -> Result<String> {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .ok_or_else(|| Error::Other(format!("timestamp {micros} µs is out of range")))
}

const SITE: &str = "https://www.trailmap.example";

// ---------------------------------------------------------------------------------------------
// NDJSON: one serde struct per shape, so field order (and thus the bytes) is fixed.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SegmentJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<PropertiesJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traits: Option<TraitsJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<ContextJson<'a>>,
    timestamp: String,
}

#[derive(Serialize)]
struct PropertiesJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
}

#[derive(Serialize)]
struct TraitsJson<'a> {
    email: &'a str,
}

#[derive(Serialize)]
struct ContextJson<'a> {
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    traits: Option<TraitsJson<'a>>,
}

#[derive(Serialize)]
struct TicketJson<'a> {
    event_id: &'a str,
    ticket_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requester_email: Option<&'a str>,
    status: &'a str,
    channel: &'a str,
    subject: Option<&'a str>,
    updated_at: String,
}

#[derive(Serialize)]
struct CrmJson<'a> {
    event_id: &'a str,
    contact_id: Option<&'a str>,
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    object: Option<&'static str>,
    stage: &'a str,
    changed_at: String,
}

#[derive(Serialize)]
struct FlatJson<'a> {
    customer_id: &'a str,
    ts: String,
    touchpoint: Option<&'a str>,
    stage: Option<&'a str>,
    channel: &'a str,
    source: &'a str,
}

fn segment_json(e: &GenEvent) -> Result<SegmentJson<'_>> {
    let email = e.email.as_deref().map(|email| TraitsJson { email });
    let (kind, event, name, properties, traits, context) = match e.kind {
        RecordKind::Identify => ("identify", None, None, None, email, None),
        RecordKind::Page => (
            "page",
            None,
            e.page_name,
            Some(PropertiesJson {
                path: Some(&e.raw),
                url: Some(format!("{SITE}{}", e.raw)),
                device: e.device,
            }),
            None,
            Some(ContextJson {
                channel: e.channel,
                traits: email,
            }),
        ),
        _ => (
            "track",
            Some(e.raw.as_str()),
            None,
            Some(PropertiesJson {
                path: None,
                url: None,
                device: e.device,
            }),
            None,
            Some(ContextJson {
                channel: e.channel,
                traits: email,
            }),
        ),
    };
    Ok(SegmentJson {
        kind,
        message_id: &e.event_id,
        anonymous_id: e.anonymous_id.as_deref(),
        user_id: e.user_id.as_deref(),
        event,
        name,
        properties,
        traits,
        context,
        timestamp: iso(e.ts_micros)?,
    })
}

struct NdjsonSink {
    path: PathBuf,
    out: BufWriter<File>,
    shape: Shape,
    /// The flat layout repeats the customer key on every line; build it once per customer.
    customer: Option<(u64, String)>,
}

impl NdjsonSink {
    fn create(path: &Path, shape: Shape) -> Result<NdjsonSink> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(NdjsonSink {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            shape,
            customer: None,
        })
    }

    fn line(&mut self, value: &impl Serialize) -> Result<()> {
        serde_json::to_writer(&mut self.out, value)
            .map_err(|e| Error::Other(format!("{}: {e}", self.path.display())))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| Error::io(&self.path, e))
    }
}

impl Sink for NdjsonSink {
    fn push(&mut self, journey: &CustomerJourney, e: &GenEvent) -> Result<()> {
        match self.shape {
            Shape::Clickstream => self.line(&segment_json(e)?),
            Shape::Ticket => self.line(&TicketJson {
                event_id: &e.event_id,
                ticket_id: e.ticket_id.as_deref(),
                requester_email: e.email.as_deref(),
                status: &e.raw,
                channel: e.channel,
                subject: e.ticket_subject,
                updated_at: iso(e.ts_micros)?,
            }),
            Shape::Crm => self.line(&CrmJson {
                event_id: &e.event_id,
                contact_id: e.contact_id.as_deref(),
                email: e.email.as_deref(),
                user_id: e.user_id.as_deref(),
                object: e.crm_object.map(|o| o.as_str()),
                stage: &e.raw,
                changed_at: iso(e.ts_micros)?,
            }),
            Shape::Flat => {
                if self
                    .customer
                    .as_ref()
                    .is_none_or(|(i, _)| *i != journey.index)
                {
                    self.customer = Some((journey.index, journey.customer_id()));
                }
                let ts = iso(e.ts_micros)?;
                let customer_id = self.customer.as_ref().map_or("", |(_, id)| id.as_str());
                let record = FlatJson {
                    customer_id,
                    ts,
                    touchpoint: e.touchpoint,
                    stage: e.stage,
                    channel: e.channel,
                    source: e.source.as_str(),
                };
                serde_json::to_writer(&mut self.out, &record)
                    .map_err(|err| Error::Other(format!("{}: {err}", self.path.display())))?;
                self.out
                    .write_all(b"\n")
                    .map_err(|err| Error::io(&self.path, err))
            }
        }
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }
}

// ---------------------------------------------------------------------------------------------
// Parquet: per shape, column builders that turn into a record batch; one generic sink buffers
// rows and hands batches to the ArrowWriter.

trait Columns: Default + Send + 'static {
    fn schema() -> SchemaRef;
    fn push(&mut self, journey: &CustomerJourney, e: &GenEvent);
    fn len(&self) -> usize;
    /// Takes the buffered rows as arrays in schema order, leaving the builders empty.
    fn take(&mut self) -> Vec<ArrayRef>;
}

struct ParquetSink<C: Columns> {
    path: PathBuf,
    schema: SchemaRef,
    writer: ArrowWriter<BufWriter<File>>,
    columns: C,
}

fn parquet_error(path: &Path, e: parquet::errors::ParquetError) -> Error {
    Error::Other(format!("{}: {e}", path.display()))
}

impl<C: Columns> ParquetSink<C> {
    fn create(path: &Path) -> Result<ParquetSink<C>> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let schema = C::schema();
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            schema.clone(),
            Some(props),
        )
        .map_err(|e| parquet_error(path, e))?;
        Ok(ParquetSink {
            path: path.to_path_buf(),
            schema,
            writer,
            columns: C::default(),
        })
    }

    fn flush(&mut self) -> Result<()> {
        if self.columns.len() == 0 {
            return Ok(());
        }
        let batch = RecordBatch::try_new(self.schema.clone(), self.columns.take())?;
        self.writer
            .write(&batch)
            .map_err(|e| parquet_error(&self.path, e))
    }
}

impl<C: Columns> Sink for ParquetSink<C> {
    fn push(&mut self, journey: &CustomerJourney, e: &GenEvent) -> Result<()> {
        self.columns.push(journey, e);
        if self.columns.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.flush()?;
        self.writer
            .close()
            .map_err(|e| parquet_error(&self.path, e))?;
        Ok(())
    }
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn timestamp(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

fn struct_field(name: &str, fields: Fields) -> Field {
    Field::new(name, DataType::Struct(fields), true)
}

/// Validity of a nullable struct column, built alongside its children.
struct Validity(BooleanBufferBuilder);

// `BooleanBufferBuilder` has no `Default`, and the column structs derive theirs.
impl Default for Validity {
    fn default() -> Validity {
        Validity(BooleanBufferBuilder::new(BATCH_ROWS))
    }
}

impl Validity {
    fn append(&mut self, valid: bool) {
        self.0.append(valid);
    }

    fn take(&mut self) -> NullBuffer {
        NullBuffer::new(self.0.finish())
    }
}

fn string_struct(fields: &Fields, children: Vec<ArrayRef>, validity: &mut Validity) -> ArrayRef {
    Arc::new(StructArray::new(
        fields.clone(),
        children,
        Some(validity.take()),
    ))
}

fn timestamps(values: &mut Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(std::mem::take(values)).with_timezone("UTC"))
}

fn finish(builder: &mut StringBuilder) -> ArrayRef {
    Arc::new(builder.finish())
}

/// `properties{path}`, `traits{email}` and `context{channel, traits{email}}` follow the JSON's
/// field paths, so one field mapping reads both formats.
#[derive(Default)]
struct ClickstreamColumns {
    kind: StringBuilder,
    message_id: StringBuilder,
    anonymous_id: StringBuilder,
    user_id: StringBuilder,
    event: StringBuilder,
    name: StringBuilder,
    path: StringBuilder,
    device: StringBuilder,
    properties: Validity,
    traits_email: StringBuilder,
    traits: Validity,
    channel: StringBuilder,
    context_email: StringBuilder,
    context_traits: Validity,
    context: Validity,
    ts: Vec<i64>,
}

fn email_fields() -> Fields {
    Fields::from(vec![utf8("email")])
}

fn properties_fields() -> Fields {
    Fields::from(vec![utf8("path"), utf8("device")])
}

fn context_fields() -> Fields {
    Fields::from(vec![
        utf8("channel"),
        struct_field("traits", email_fields()),
    ])
}

impl Columns for ClickstreamColumns {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("type"),
            utf8("messageId"),
            utf8("anonymousId"),
            utf8("userId"),
            utf8("event"),
            utf8("name"),
            struct_field("properties", properties_fields()),
            struct_field("traits", email_fields()),
            struct_field("context", context_fields()),
            timestamp("timestamp"),
        ]))
    }

    fn push(&mut self, _: &CustomerJourney, e: &GenEvent) {
        let identify = e.kind == RecordKind::Identify;
        let page = e.kind == RecordKind::Page;
        self.kind.append_value(match e.kind {
            RecordKind::Identify => "identify",
            RecordKind::Page => "page",
            _ => "track",
        });
        self.message_id.append_value(&e.event_id);
        self.anonymous_id.append_option(e.anonymous_id.as_deref());
        self.user_id.append_option(e.user_id.as_deref());
        self.event
            .append_option((!identify && !page).then_some(e.raw.as_str()));
        self.name.append_option(e.page_name);
        self.path.append_option(page.then_some(e.raw.as_str()));
        self.device.append_option(e.device);
        self.properties.append(!identify);
        self.traits_email
            .append_option(if identify { e.email.as_deref() } else { None });
        self.traits.append(identify);
        self.channel.append_option((!identify).then_some(e.channel));
        let context_email = if identify { None } else { e.email.as_deref() };
        self.context_email.append_option(context_email);
        self.context_traits.append(context_email.is_some());
        self.context.append(!identify);
        self.ts.push(e.ts_micros);
    }

    fn len(&self) -> usize {
        self.ts.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let context_traits = string_struct(
            &email_fields(),
            vec![finish(&mut self.context_email)],
            &mut self.context_traits,
        );
        vec![
            finish(&mut self.kind),
            finish(&mut self.message_id),
            finish(&mut self.anonymous_id),
            finish(&mut self.user_id),
            finish(&mut self.event),
            finish(&mut self.name),
            string_struct(
                &properties_fields(),
                vec![finish(&mut self.path), finish(&mut self.device)],
                &mut self.properties,
            ),
            string_struct(
                &email_fields(),
                vec![finish(&mut self.traits_email)],
                &mut self.traits,
            ),
            string_struct(
                &context_fields(),
                vec![finish(&mut self.channel), context_traits],
                &mut self.context,
            ),
            timestamps(&mut self.ts),
        ]
    }
}

#[derive(Default)]
struct TicketColumns {
    event_id: StringBuilder,
    ticket_id: StringBuilder,
    requester_email: StringBuilder,
    status: StringBuilder,
    channel: StringBuilder,
    subject: StringBuilder,
    updated_at: Vec<i64>,
}

impl Columns for TicketColumns {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("event_id"),
            utf8("ticket_id"),
            utf8("requester_email"),
            utf8("status"),
            utf8("channel"),
            utf8("subject"),
            timestamp("updated_at"),
        ]))
    }

    fn push(&mut self, _: &CustomerJourney, e: &GenEvent) {
        self.event_id.append_value(&e.event_id);
        self.ticket_id.append_option(e.ticket_id.as_deref());
        self.requester_email.append_option(e.email.as_deref());
        self.status.append_value(&e.raw);
        self.channel.append_value(e.channel);
        self.subject.append_option(e.ticket_subject);
        self.updated_at.push(e.ts_micros);
    }

    fn len(&self) -> usize {
        self.updated_at.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        vec![
            finish(&mut self.event_id),
            finish(&mut self.ticket_id),
            finish(&mut self.requester_email),
            finish(&mut self.status),
            finish(&mut self.channel),
            finish(&mut self.subject),
            timestamps(&mut self.updated_at),
        ]
    }
}

#[derive(Default)]
struct CrmColumns {
    event_id: StringBuilder,
    contact_id: StringBuilder,
    email: StringBuilder,
    user_id: StringBuilder,
    object: StringBuilder,
    stage: StringBuilder,
    changed_at: Vec<i64>,
}

impl Columns for CrmColumns {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("event_id"),
            utf8("contact_id"),
            utf8("email"),
            utf8("user_id"),
            utf8("object"),
            utf8("stage"),
            timestamp("changed_at"),
        ]))
    }

    fn push(&mut self, _: &CustomerJourney, e: &GenEvent) {
        self.event_id.append_value(&e.event_id);
        self.contact_id.append_option(e.contact_id.as_deref());
        self.email.append_option(e.email.as_deref());
        self.user_id.append_option(e.user_id.as_deref());
        self.object.append_option(e.crm_object.map(|o| o.as_str()));
        self.stage.append_value(&e.raw);
        self.changed_at.push(e.ts_micros);
    }

    fn len(&self) -> usize {
        self.changed_at.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        vec![
            finish(&mut self.event_id),
            finish(&mut self.contact_id),
            finish(&mut self.email),
            finish(&mut self.user_id),
            finish(&mut self.object),
            finish(&mut self.stage),
            timestamps(&mut self.changed_at),
        ]
    }
}

#[derive(Default)]
struct FlatColumns {
    customer_id: StringBuilder,
    /// The customer whose key was built last, reused for all of their rows.
    customer: Option<(u64, String)>,
    ts: Vec<i64>,
    touchpoint: StringBuilder,
    stage: StringBuilder,
    channel: StringBuilder,
    source: StringBuilder,
}

impl Columns for FlatColumns {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("customer_id"),
            timestamp("ts"),
            utf8("touchpoint"),
            utf8("stage"),
            utf8("channel"),
            utf8("source"),
        ]))
    }

    fn push(&mut self, journey: &CustomerJourney, e: &GenEvent) {
        if self
            .customer
            .as_ref()
            .is_none_or(|(i, _)| *i != journey.index)
        {
            self.customer = Some((journey.index, journey.customer_id()));
        }
        self.customer_id
            .append_option(self.customer.as_ref().map(|(_, id)| id.as_str()));
        self.ts.push(e.ts_micros);
        self.touchpoint.append_option(e.touchpoint);
        self.stage.append_option(e.stage);
        self.channel.append_value(e.channel);
        self.source.append_value(e.source.as_str());
    }

    fn len(&self) -> usize {
        self.ts.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        vec![
            finish(&mut self.customer_id),
            timestamps(&mut self.ts),
            finish(&mut self.touchpoint),
            finish(&mut self.stage),
            finish(&mut self.channel),
            finish(&mut self.source),
        ]
    }
}
