//! `events` streamed from input grouped by customer, for one query, without a journey log.
//!
//! Input that comes customer by customer (exports by user, logs by case) can be queried
//! while it is read, as `trailmap funnel` counts it: each customer's sessions become rows
//! as soon as the next customer's events begin ([`trailmap_sessionize::GroupedJourneys`]),
//! in the order the loaded `events` table has them (customer, then time, ties by arrival),
//! so GROUP BY customer aggregates by runs ([`crate::runs`]) and the whole query holds
//! about one batch of rows instead of the log. When all such a GROUP BY computes is
//! behavioural functions of `touchpoint = '…'` conditions, the scan computes them itself
//! ([`computed_by_scan`]) and no event becomes a row.
//!
//! What the stream cannot give makes the query fail with [`NeedsJourneyLog`], and the
//! caller runs it again over the loaded journeys: input that turns out not to be grouped
//! or to need stitching, the `stage` and `source` columns, and the other tables and table
//! functions (registered here as stand-ins that say so).

use crate::events::{AnyEventFunction, Grouped, any_event_function};
use crate::tables::Events;
use datafusion::arrow::array::{
    ArrayRef, DictionaryArray, RecordBatch, RecordBatchOptions, StringArray, StringViewBuilder,
    TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::datatypes::{SchemaRef, UInt32Type};
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err, project_schema};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use std::fmt;
use std::sync::Arc;
use trailmap_sessionize::{Journey, JourneySink};

/// Input that can be read customer by customer.
pub trait GroupedInput: Send + Sync + 'static {
    /// Hands every customer's journey to `sink`, customer by customer: cut into its
    /// sessions, in order, when `sessions`, else whole. Touchpoint `names` get their ids
    /// first, in order (a repeated name keeps its first id). `Ok(false)` when the input
    /// turns out not to be grouped by customer or to need stitching (what was handed on is
    /// then not the whole answer).
    fn stream(
        &self,
        sessions: bool,
        names: &[String],
        sink: &mut dyn JourneySink,
    ) -> std::result::Result<bool, String>;
}

/// Why a query over streamed events must run over the loaded journeys instead.
#[derive(Debug)]
pub struct NeedsJourneyLog(pub String);

impl fmt::Display for NeedsJourneyLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "needs the loaded journeys: {}", self.0)
    }
}

impl std::error::Error for NeedsJourneyLog {}

fn needs_log(why: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(NeedsJourneyLog(why.into())))
}

/// Whether `e` says the query needs the loaded journeys (see [`NeedsJourneyLog`]).
pub fn needs_journey_log(e: &DataFusionError) -> bool {
    let mut error: &dyn std::error::Error = e;
    loop {
        if error.downcast_ref::<NeedsJourneyLog>().is_some() {
            return true;
        }
        if let Some(DataFusionError::External(inner)) = error.downcast_ref::<DataFusionError>()
            && inner.downcast_ref::<NeedsJourneyLog>().is_some()
        {
            return true;
        }
        if let Some(DataFusionError::Shared(inner)) = error.downcast_ref::<DataFusionError>()
            && needs_journey_log(inner)
        {
            return true;
        }
        match error.source() {
            Some(source) => error = source,
            None => return false,
        }
    }
}

/// The columns a stream gives, by their index in [`Events::table_schema`].
const CUSTOMER: usize = 0;
const SESSION: usize = 1;
const TS: usize = 2;
const TOUCHPOINT: usize = 3;

/// `events` over a [`GroupedInput`], read anew by each scan.
pub(crate) struct StreamedEvents(pub Arc<dyn GroupedInput>);

impl fmt::Debug for StreamedEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamedEvents")
    }
}

#[async_trait::async_trait]
impl TableProvider for StreamedEvents {
    fn schema(&self) -> SchemaRef {
        Events::table_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = Events::table_schema();
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        if let Some(&c) = columns.iter().find(|&&c| c > TOUCHPOINT) {
            return Err(needs_log(format!(
                "the `{}` column is not streamed",
                schema.field(c).name()
            )));
        }
        let projected = project_schema(&schema, projection)?;
        // One partition holds every customer, so it is hash-partitioned by customer too:
        // GROUP BY customer then needs no repartition.
        let partitioning = match columns.iter().position(|&c| c == CUSTOMER) {
            Some(at) => Partitioning::Hash(
                vec![Arc::new(Column::new("customer", at)) as Arc<dyn PhysicalExpr>],
                1,
            ),
            None => Partitioning::UnknownPartitioning(1),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(StreamedEventsExec {
            input: self.0.clone(),
            columns,
            batch_rows: state.config().batch_size().max(1),
            properties: Arc::new(properties),
        }))
    }
}

/// The scan of [`StreamedEvents`]: one partition, read on a thread of its own.
pub(crate) struct StreamedEventsExec {
    input: Arc<dyn GroupedInput>,
    columns: Vec<usize>,
    batch_rows: usize,
    properties: Arc<PlanProperties>,
}

impl StreamedEventsExec {
    /// Where its output has the `customer` column, if it reads it.
    pub(crate) fn customer_column(&self) -> Option<usize> {
        self.columns.iter().position(|&c| c == CUSTOMER)
    }
}

impl fmt::Debug for StreamedEventsExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamedEventsExec({:?})", self.columns)
    }
}

impl DisplayAs for StreamedEventsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = (self.properties.eq_properties.schema().fields().iter())
            .map(|field| field.name().as_str())
            .collect();
        write!(
            f,
            "StreamedEventsExec: customer by customer, projection=[{}]",
            names.join(", ")
        )
    }
}

impl ExecutionPlan for StreamedEventsExec {
    leaf_plan!("StreamedEventsExec");

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!(
                "StreamedEventsExec has one partition, not {}",
                partition + 1
            );
        }
        let schema = self.properties.eq_properties.schema().clone();
        let sink = Rows::new(schema.clone(), self.columns.clone(), self.batch_rows);
        // Sessions are cut only when the query reads their numbers.
        let sessions = sink.wants[SESSION];
        read_on_thread(self.input.clone(), sessions, Vec::new(), sink, schema)
    }
}

/// Where a sink's batches go.
type Outlet = Option<tokio::sync::mpsc::Sender<Result<RecordBatch>>>;

/// A sink that makes batches and sends them on.
trait Batches: JourneySink + Send + 'static {
    /// Where the batches go.
    fn outlet(&mut self) -> &mut Outlet;
    /// Sends what is gathered, at the end of the input.
    fn flush(&mut self) -> Result<()>;
    /// Says what went wrong, if the query still listens.
    fn fail(&mut self, e: DataFusionError) {
        if let Some(tx) = self.outlet() {
            // The query may be gone already: nobody to tell then.
            let _ = tx.blocking_send(Err(e));
        }
    }
}

/// Streams `input` into `sink` on a thread of its own; the batches it sends, as a stream.
fn read_on_thread<S: Batches>(
    input: Arc<dyn GroupedInput>,
    sessions: bool,
    names: Vec<String>,
    mut sink: S,
    schema: SchemaRef,
) -> Result<SendableRecordBatchStream> {
    // A few batches in flight: the reader runs ahead of the query, not away from it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
    *sink.outlet() = Some(tx);
    std::thread::Builder::new()
        .name("trailmap-events".into())
        .spawn(move || {
            let end = match input.stream(sessions, &names, &mut sink) {
                Ok(true) => sink.flush(),
                Ok(false) => Err(needs_log("the input is not grouped by customer")),
                Err(e) => Err(DataFusionError::Execution(e)),
            };
            if let Err(e) = end {
                sink.fail(e);
            }
        })
        .map_err(|e| DataFusionError::Execution(format!("cannot start the reader: {e}")))?;
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
}

/// Sends `batch` on; an error once nobody listens.
fn send(
    tx: &Option<tokio::sync::mpsc::Sender<Result<RecordBatch>>>,
    batch: RecordBatch,
) -> Result<()> {
    match tx {
        Some(tx) if tx.blocking_send(Ok(batch)).is_ok() => Ok(()),
        _ => Err(DataFusionError::Execution(
            "the query stopped reading".into(),
        )),
    }
}

/// Streamed sessions gathered into batches of the scan's columns.
struct Rows {
    schema: SchemaRef,
    columns: Vec<usize>,
    /// Per streamed column, whether the scan reads it.
    wants: [bool; TOUCHPOINT + 1],
    batch_rows: usize,
    tx: Outlet,
    /// This batch's customers, in order, and each row's index into them.
    names: StringViewBuilder,
    name_count: u32,
    customer: Vec<u32>,
    session: Vec<u32>,
    ts: Vec<i64>,
    touchpoint: Vec<u32>,
    rows: usize,
    /// Touchpoint names by id, as far as the input has named them.
    touchpoint_names: ArrayRef,
    /// The last session's customer (the stream's number) and session number, and whether
    /// the customer's name is in this batch's `names` yet.
    last: Option<(u32, u32)>,
    named: bool,
}

impl Rows {
    fn new(schema: SchemaRef, columns: Vec<usize>, batch_rows: usize) -> Rows {
        let mut wants = [false; TOUCHPOINT + 1];
        for &c in &columns {
            if let Some(w) = wants.get_mut(c) {
                *w = true;
            }
        }
        // Room for a batch and the input batch that overflows it: columns keep their
        // capacity instead of growing (and moving) again for every batch.
        let room = |wanted: bool| if wanted { 2 * batch_rows } else { 0 };
        Rows {
            customer: Vec::with_capacity(room(wants[CUSTOMER])),
            session: Vec::with_capacity(room(wants[SESSION])),
            ts: Vec::with_capacity(room(wants[TS])),
            touchpoint: Vec::with_capacity(room(wants[TOUCHPOINT])),
            wants,
            schema,
            columns,
            batch_rows,
            tx: None,
            names: StringViewBuilder::new(),
            name_count: 0,
            rows: 0,
            touchpoint_names: Arc::new(StringArray::from(Vec::<&str>::new())),
            last: None,
            named: false,
        }
    }

    /// Sends the rows gathered so far as a batch.
    fn send_rows(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let names: ArrayRef = Arc::new(self.names.finish());
        let room = 2 * self.batch_rows;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for &c in &self.columns {
            arrays.push(match c {
                CUSTOMER => {
                    let at = UInt32Array::from(std::mem::take(&mut self.customer));
                    let column = datafusion::arrow::compute::take(&names, &at, None)?;
                    // The indices' buffer is ours again once taken from.
                    let (_, values, _) = at.into_parts();
                    self.customer = values.into_inner().into_vec().unwrap_or_default();
                    column
                }
                SESSION => Arc::new(UInt32Array::from(refill(&mut self.session, room))),
                TS => Arc::new(
                    TimestampMicrosecondArray::from(refill(&mut self.ts, room))
                        .with_timezone("UTC"),
                ),
                TOUCHPOINT => Arc::new(DictionaryArray::<UInt32Type>::try_new(
                    UInt32Array::from(refill(&mut self.touchpoint, room)),
                    self.touchpoint_names.clone(),
                )?),
                other => return internal_err!("column {other} of events is not streamed"),
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)?;
        self.rows = 0;
        self.name_count = 0;
        self.named = false;
        self.customer.clear();
        self.session.clear();
        self.ts.clear();
        self.touchpoint.clear();
        send(&self.tx, batch)
    }
}

impl Batches for Rows {
    fn outlet(&mut self) -> &mut Outlet {
        &mut self.tx
    }

    fn flush(&mut self) -> Result<()> {
        self.send_rows()
    }
}

/// `column`'s values, leaving it empty with room for `room` more.
fn refill<T>(column: &mut Vec<T>, room: usize) -> Vec<T> {
    std::mem::replace(column, Vec::with_capacity(room))
}

impl JourneySink for Rows {
    fn journey(&mut self, journey: &Journey<'_>, customer: &str) {
        let session = match self.last {
            Some((c, s)) if c == journey.customer => s + 1,
            _ => {
                self.named = false;
                0
            }
        };
        self.last = Some((journey.customer, session));
        let n = journey.ts.len();
        if self.wants[CUSTOMER] {
            if !self.named {
                self.names.append_value(customer);
                self.name_count += 1;
                self.named = true;
            }
            let at = self.name_count - 1;
            self.customer.extend(std::iter::repeat_n(at, n));
        }
        if self.wants[SESSION] {
            self.session.extend(std::iter::repeat_n(session, n));
        }
        if self.wants[TS] {
            self.ts.extend_from_slice(journey.ts);
        }
        if self.wants[TOUCHPOINT] {
            self.touchpoint.extend_from_slice(journey.touchpoint);
        }
        self.rows += n;
    }

    fn batch_end(&mut self, touchpoints: &[String]) -> std::result::Result<(), String> {
        if touchpoints.len() != self.touchpoint_names.len() {
            self.touchpoint_names = Arc::new(StringArray::from_iter_values(touchpoints));
        }
        if self.rows >= self.batch_rows {
            self.send_rows().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// GROUP BY customer of behavioural functions over streamed `events`, computed by the scan.
///
/// When every aggregate of a by-runs aggregation ([`crate::runs`]) straight over the stream
/// (only projections between) is one of trailmap's behavioural functions whose time is
/// `ts` and whose conditions are `touchpoint = '…'`, no event needs to become a row: the
/// scan masks each event by the touchpoints the conditions name (numbered before the
/// input is read) and hands each batch of customers' events to the functions, which is
/// all the aggregation would have done with those rows.
pub(crate) fn computed_by_scan(
    input: &Arc<dyn ExecutionPlan>,
    key: &Arc<dyn PhysicalExpr>,
    aggregates: &[Arc<AggregateFunctionExpr>],
    filters: &[Option<Arc<dyn PhysicalExpr>>],
    schema: &SchemaRef,
    properties: &Arc<PlanProperties>,
) -> Option<StreamedAggregateExec> {
    let (scan, key_column) = streamed_column(input, key.downcast_ref::<Column>()?.index())?;
    if key_column != CUSTOMER || filters.iter().any(Option::is_some) || aggregates.is_empty() {
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    let mut calls = Vec::new();
    for aggregate in aggregates {
        let exprs = aggregate.expressions();
        let function = any_event_function(aggregate.fun(), &exprs)?;
        let p = function.parameters();
        let ts = exprs.get(p)?.downcast_ref::<Column>()?;
        if streamed_column(input, ts.index())?.1 != TS {
            return None;
        }
        let mut conditions = Vec::new();
        for condition in &exprs[p + 1..] {
            let name = touchpoint_named(input, condition)?;
            let id = match names.iter().position(|n| *n == name) {
                Some(id) => id,
                None => {
                    names.push(name);
                    names.len() - 1
                }
            };
            conditions.push(id);
        }
        calls.push((aggregate.clone(), conditions));
    }
    Some(StreamedAggregateExec {
        input: scan.input.clone(),
        names,
        calls,
        batch_rows: scan.batch_rows,
        schema: schema.clone(),
        properties: properties.clone(),
    })
}

/// The stream's scan and its column behind column `column` of `plan`'s output, through
/// projections that only pick columns.
fn streamed_column(
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
) -> Option<(&StreamedEventsExec, usize)> {
    if let Some(scan) = plan.downcast_ref::<StreamedEventsExec>() {
        return Some((scan, *scan.columns.get(column)?));
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let picked = p
            .projection_expr()
            .as_ref()
            .get(column)?
            .expr
            .downcast_ref::<Column>()?;
        return streamed_column(p.input(), picked.index());
    }
    if let Some(c) = plan.downcast_ref::<CooperativeExec>() {
        return streamed_column(c.input(), column);
    }
    None
}

/// The touchpoint a condition `touchpoint = '…'` (either way round) names; the condition
/// may be a column a projection below computes (common subexpressions are).
fn touchpoint_named(
    input: &Arc<dyn ExecutionPlan>,
    condition: &Arc<dyn PhysicalExpr>,
) -> Option<String> {
    let (condition, below) = defined(input, condition);
    let b = condition.downcast_ref::<BinaryExpr>()?;
    if *b.op() != Operator::Eq {
        return None;
    }
    let (column, literal) = match (
        b.left().downcast_ref::<Column>(),
        b.right().downcast_ref::<Literal>(),
    ) {
        (Some(c), Some(l)) => (c, l),
        _ => (
            b.right().downcast_ref::<Column>()?,
            b.left().downcast_ref::<Literal>()?,
        ),
    };
    if streamed_column(below, column.index())?.1 != TOUCHPOINT {
        return None;
    }
    text(literal.value())
}

/// `expr` over `plan`'s output, or, when it is a column a projection below computes, that
/// computation over the projection's input.
fn defined<'a>(
    plan: &'a Arc<dyn ExecutionPlan>,
    expr: &Arc<dyn PhysicalExpr>,
) -> (Arc<dyn PhysicalExpr>, &'a Arc<dyn ExecutionPlan>) {
    if let Some(c) = expr.downcast_ref::<Column>() {
        if let Some(p) = plan.downcast_ref::<ProjectionExec>()
            && let Some(e) = p.projection_expr().as_ref().get(c.index())
        {
            return defined(p.input(), &e.expr);
        }
        if let Some(co) = plan.downcast_ref::<CooperativeExec>() {
            return defined(co.input(), expr);
        }
    }
    (expr.clone(), plan)
}

/// The text of a string constant (or a dictionary of one).
fn text(value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Dictionary(_, inner) => text(inner),
        ScalarValue::Utf8(Some(t))
        | ScalarValue::Utf8View(Some(t))
        | ScalarValue::LargeUtf8(Some(t)) => Some(t.clone()),
        _ => None,
    }
}

/// A function ready to compute, with the touchpoint ids of its conditions.
type Function = (Box<dyn AnyEventFunction>, Vec<usize>);

/// See [`computed_by_scan`]: one partition, like the stream.
pub(crate) struct StreamedAggregateExec {
    input: Arc<dyn GroupedInput>,
    /// Touchpoints the conditions name: id `i` is `names[i]`.
    names: Vec<String>,
    /// The calls it computes, each with the touchpoint ids of its conditions.
    calls: Vec<(Arc<AggregateFunctionExpr>, Vec<usize>)>,
    batch_rows: usize,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for StreamedAggregateExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamedAggregateExec({:?})", self.names)
    }
}

impl DisplayAs for StreamedAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.calls.iter().map(|(a, _)| a.name()).collect();
        write!(
            f,
            "StreamedAggregateExec: gby=[customer] computed while streaming, aggr=[{}], touchpoints={:?}",
            names.join(", "),
            self.names
        )
    }
}

impl ExecutionPlan for StreamedAggregateExec {
    leaf_plan!("StreamedAggregateExec");

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!(
                "StreamedAggregateExec has one partition, not {}",
                partition + 1
            );
        }
        let functions = (self.calls.iter())
            .map(|(call, conditions)| {
                let function = any_event_function(call.fun(), &call.expressions());
                let function = function.ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "{} is not computed by the scan",
                        call.name()
                    ))
                })?;
                Ok((function, conditions.clone()))
            })
            .collect::<Result<Vec<Function>>>()?;
        let sink = Computed::new(
            self.schema.clone(),
            functions,
            self.names.len(),
            self.batch_rows,
        );
        read_on_thread(
            self.input.clone(),
            false,
            self.names.clone(),
            sink,
            self.schema.clone(),
        )
    }
}

/// Customers' events handed to behavioural functions a batch of customers at a time (see
/// [`computed_by_scan`]).
struct Computed {
    schema: SchemaRef,
    functions: Vec<Function>,
    /// Per function: per touchpoint id, the conditions an event of it meets (ids past the
    /// named ones meet none).
    masks: Vec<Vec<u32>>,
    /// Per function: this batch's customers' events (those that matter to it) and where
    /// each customer's begin.
    events: Vec<Vec<(i64, u32)>>,
    offsets: Vec<Vec<usize>>,
    names: StringViewBuilder,
    customers: usize,
    /// Events seen since the last batch.
    seen: usize,
    batch_rows: usize,
    tx: Outlet,
}

impl Computed {
    fn new(
        schema: SchemaRef,
        functions: Vec<Function>,
        named: usize,
        batch_rows: usize,
    ) -> Computed {
        let masks = (functions.iter())
            .map(|(_, conditions)| {
                let mut masks = vec![0u32; named];
                for (k, &id) in conditions.iter().enumerate() {
                    masks[id] |= 1 << k;
                }
                masks
            })
            .collect();
        let n = functions.len();
        Computed {
            schema,
            functions,
            masks,
            events: vec![Vec::new(); n],
            offsets: vec![vec![0]; n],
            names: StringViewBuilder::new(),
            customers: 0,
            seen: 0,
            batch_rows,
            tx: None,
        }
    }

    /// Sends the answers for this batch's customers.
    fn send_answers(&mut self) -> Result<()> {
        if self.customers == 0 {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.names.finish())];
        for (i, (function, _)) in self.functions.iter_mut().enumerate() {
            let events = std::mem::take(&mut self.events[i]);
            let offsets = std::mem::replace(&mut self.offsets[i], vec![0]);
            columns.push(function.evaluate(Grouped::new(events, offsets))?);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.customers = 0;
        self.seen = 0;
        send(&self.tx, batch)
    }
}

impl JourneySink for Computed {
    fn journey(&mut self, journey: &Journey<'_>, customer: &str) {
        self.names.append_value(customer);
        self.customers += 1;
        self.seen += journey.ts.len();
        for (i, (function, _)) in self.functions.iter().enumerate() {
            let (masks, events) = (&self.masks[i], &mut self.events[i]);
            let keep_all = function.keeps_unmatched();
            for (&t, &tp) in journey.ts.iter().zip(journey.touchpoint) {
                let mask = masks.get(tp as usize).copied().unwrap_or(0);
                if mask != 0 || keep_all {
                    events.push((t, mask));
                }
            }
            self.offsets[i].push(events.len());
        }
    }

    fn batch_end(&mut self, _touchpoints: &[String]) -> std::result::Result<(), String> {
        if self.seen >= self.batch_rows {
            self.send_answers().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl Batches for Computed {
    fn outlet(&mut self) -> &mut Outlet {
        &mut self.tx
    }

    fn flush(&mut self) -> Result<()> {
        self.send_answers()
    }
}

/// A table or table function the stream cannot give: planning a query that uses it fails
/// with [`NeedsJourneyLog`] (the table has its real columns, so a query naming them gets
/// that far).
#[derive(Debug)]
pub(crate) struct OverTheLog {
    pub name: &'static str,
    pub schema: SchemaRef,
}

#[async_trait::async_trait]
impl TableProvider for OverTheLog {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Err(needs_log(format!("`{}` is not streamed", self.name)))
    }
}

impl TableFunctionImpl for OverTheLog {
    fn call_with_args(
        &self,
        _args: datafusion::catalog::TableFunctionArgs,
    ) -> Result<Arc<dyn TableProvider>> {
        Err(needs_log(format!("{}() is not streamed", self.name)))
    }
}
