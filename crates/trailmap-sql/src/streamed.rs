//! `events` streamed from input grouped by customer, for one query, without a journey log.
//!
//! Input that comes customer by customer (exports by user, logs by case) can be queried
//! while it is read, as `trailmap funnel` counts it: each customer's sessions become rows
//! as soon as the next customer's events begin ([`trailmap_sessionize::GroupedJourneys`]),
//! in the order the loaded `events` table has them (customer, then time, ties by arrival),
//! so GROUP BY customer aggregates by runs ([`crate::runs`]) and the whole query holds
//! about one batch of rows instead of the log.
//!
//! What the stream cannot give makes the query fail with [`NeedsJourneyLog`], and the
//! caller runs it again over the loaded journeys: input that turns out not to be grouped
//! or to need stitching, the `stage` and `source` columns, and the other tables and table
//! functions (registered here as stand-ins that say so).

use crate::tables::Events;
use datafusion::arrow::array::{
    ArrayRef, DictionaryArray, RecordBatch, RecordBatchOptions, StringArray, StringViewBuilder,
    TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::datatypes::{SchemaRef, UInt32Type};
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err, project_schema};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
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
    /// sessions, in order, when `sessions`, else whole. `Ok(false)` when the input turns
    /// out not to be grouped by customer or to need stitching (what was handed on is then
    /// not the whole answer).
    fn stream(
        &self,
        sessions: bool,
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
    fn name(&self) -> &str {
        "StreamedEventsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("StreamedEventsExec is a leaf: it takes no children");
        }
        Ok(self)
    }

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
        // A few batches in flight: the reader runs ahead of the query, not away from it.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let mut sink = Rows::new(schema.clone(), self.columns.clone(), self.batch_rows, tx);
        let input = self.input.clone();
        std::thread::Builder::new()
            .name("trailmap-events".into())
            .spawn(move || {
                // Sessions are cut only when the query reads their numbers.
                let sessions = sink.wants[SESSION];
                let streamed = input.stream(sessions, &mut sink);
                let end = match streamed {
                    Ok(true) => sink.flush(),
                    Ok(false) => Err(needs_log("the input is not grouped by customer")),
                    Err(e) => Err(DataFusionError::Execution(e)),
                };
                if let Err(e) = end {
                    // The query may be gone already: nobody to tell then.
                    let _ = sink.tx.blocking_send(Err(e));
                }
            })
            .map_err(|e| DataFusionError::Execution(format!("cannot start the reader: {e}")))?;
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Streamed sessions gathered into batches of the scan's columns.
struct Rows {
    schema: SchemaRef,
    columns: Vec<usize>,
    /// Per streamed column, whether the scan reads it.
    wants: [bool; TOUCHPOINT + 1],
    batch_rows: usize,
    tx: tokio::sync::mpsc::Sender<Result<RecordBatch>>,
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
    fn new(
        schema: SchemaRef,
        columns: Vec<usize>,
        batch_rows: usize,
        tx: tokio::sync::mpsc::Sender<Result<RecordBatch>>,
    ) -> Rows {
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
            tx,
            names: StringViewBuilder::new(),
            name_count: 0,
            rows: 0,
            touchpoint_names: Arc::new(StringArray::from(Vec::<&str>::new())),
            last: None,
            named: false,
        }
    }

    /// Sends the rows gathered so far as a batch.
    fn flush(&mut self) -> Result<()> {
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
        if self.tx.blocking_send(Ok(batch)).is_err() {
            return Err(DataFusionError::Execution(
                "the query stopped reading".into(),
            ));
        }
        Ok(())
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
            self.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
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
