//! The journey tables over a stitched [`JourneyLog`]: `events`, `journeys`, `transitions`.
//!
//! Each table is a view of the log's columns, built a batch at a time as a scan pulls it
//! and only for the columns the query reads. Scans split by customer, each partition
//! holding the customers DataFusion's hash repartitioning would send it, and declare it, so
//! GROUP BY customer needs no repartition (see [`RowsTable`]). Names (customers,
//! touchpoints, stages, sources) are dictionary columns; each batch's dictionary holds just
//! the names its rows use (see [`dictionary`]).

use crate::Journeys;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, ListArray, RecordBatch,
    RecordBatchOptions, StringArray, StringViewArray, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, UInt32Type};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::hash_utils::create_hashes;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err, project_schema};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::repartition::REPARTITION_RANDOM_STATE;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use trailmap_mine::funnel::FunnelSpec;
use trailmap_mine::{Aggregate, Funnel};
use trailmap_model::Config;
use trailmap_model::config::Scope;

/// Rows per batch, unless the session says otherwise (`datafusion.execution.batch_size`;
/// the analyst session's default).
pub(crate) const BATCH: usize = 64 * 1024;

/// A table whose columns are computed from the log on demand.
///
/// Rows come grouped by customer (each customer's rows contiguous, customers in the log's
/// order), which is what lets a scan hand each partition whole customers.
pub(crate) trait Rows: Send + Sync + 'static {
    /// Index of the `customer` column in [`Rows::schema`].
    const CUSTOMER: usize;
    fn schema(&self) -> SchemaRef;
    fn num_rows(&self) -> usize;
    /// Where each customer's rows start, in customer order, then the number of rows.
    fn customer_starts(&self) -> Cow<'_, [usize]>;
    fn shared(&self) -> &Shared;
    /// Column `index` for the rows `rows`, in that order.
    fn column(&self, index: usize, rows: &[Range<usize>]) -> Result<ArrayRef>;
}

/// A [`TableProvider`] over [`Rows`]: scans build only the projected columns, a batch at
/// a time as the plan pulls them, so a scan holds a batch per partition rather than the
/// whole table (materializing a 20M-row table up front cost more in page faults than in
/// building it).
pub(crate) struct RowsTable<R>(pub Arc<R>);

impl<R> RowsTable<R> {
    pub(crate) fn new(rows: R) -> Self {
        RowsTable(Arc::new(rows))
    }
}

impl<R> fmt::Debug for RowsTable<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RowsTable")
    }
}

#[async_trait::async_trait]
impl<R: Rows> TableProvider for RowsTable<R> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.0.schema();
        let projected = project_schema(&schema, projection)?;
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let count = state.config().target_partitions().max(1);
        let parts = self
            .0
            .shared()
            .customer_partitions(&self.0.customer_starts(), count, limit)?;
        // Each partition holds exactly the customers DataFusion's own hash repartitioning
        // would send to it, so saying so is true, and GROUP BY customer (the behavioural
        // functions' usual shape) aggregates each partition alone: no partial states, no
        // repartition, no merge. Joins on `customer` between these tables line up too.
        let partitioning = match columns.iter().position(|&c| c == R::CUSTOMER) {
            Some(at) => Partitioning::Hash(
                vec![Arc::new(Column::new("customer", at)) as Arc<dyn PhysicalExpr>],
                count,
            ),
            None => Partitioning::UnknownPartitioning(count),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected.clone()),
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(JourneyScanExec {
            rows: self.0.clone(),
            columns,
            parts: parts.into_iter().map(Arc::new).collect(),
            batch_rows: state.config().batch_size(),
            properties: Arc::new(properties),
        }))
    }
}

/// The scan of a journey table: partition `p` streams the rows `parts[p]`, a batch of
/// `batch_rows` rows at a time, built as the plan pulls them.
struct JourneyScanExec<R> {
    rows: Arc<R>,
    /// The table's columns to build, in output order.
    columns: Vec<usize>,
    parts: Vec<Arc<Vec<Range<usize>>>>,
    batch_rows: usize,
    properties: Arc<PlanProperties>,
}

impl<R> fmt::Debug for JourneyScanExec<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JourneyScanExec({:?})", self.columns)
    }
}

impl<R: Rows> DisplayAs for JourneyScanExec<R> {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self
            .properties
            .eq_properties
            .schema()
            .fields()
            .iter()
            .map(|field| field.name().as_str())
            .collect();
        write!(
            f,
            "JourneyScanExec: partitioning={}, projection=[{}]",
            self.properties.partitioning,
            names.join(", ")
        )
    }
}

impl<R: Rows> ExecutionPlan for JourneyScanExec<R> {
    leaf_plan!("JourneyScanExec");

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(ranges) = self.parts.get(partition).cloned() else {
            return internal_err!(
                "JourneyScanExec has {} partitions, not {}",
                self.parts.len(),
                partition + 1
            );
        };
        let (rows, columns) = (self.rows.clone(), self.columns.clone());
        let schema = self.properties.eq_properties.schema().clone();
        let batch_schema = schema.clone();
        let batches = batches_of(ranges, self.batch_rows).map(move |batch| {
            let arrays = columns
                .iter()
                .map(|&c| rows.column(c, &batch))
                .collect::<Result<Vec<_>>>()?;
            let options = RecordBatchOptions::new().with_row_count(Some(total(&batch)));
            Ok(RecordBatch::try_new_with_options(
                batch_schema.clone(),
                arrays,
                &options,
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches),
        )))
    }
}

/// Where a journey scan's output has its `customer` column, if `plan` is one and reads it:
/// each partition's rows of a customer are contiguous there ([`crate::runs`] relies on it).
pub(crate) fn customer_column_of_scan(plan: &dyn ExecutionPlan) -> Option<usize> {
    fn customer_at<R: Rows>(plan: &dyn ExecutionPlan) -> Option<Option<usize>> {
        let scan = plan.downcast_ref::<JourneyScanExec<R>>()?;
        Some(scan.columns.iter().position(|&c| c == R::CUSTOMER))
    }
    if let Some(streamed) = plan.downcast_ref::<crate::streamed::StreamedEventsExec>() {
        return streamed.customer_column();
    }
    customer_at::<Events>(plan)
        .or_else(|| customer_at::<JourneyRows>(plan))
        .or_else(|| customer_at::<Transitions>(plan))
        .flatten()
}

fn total(ranges: &[Range<usize>]) -> usize {
    ranges.iter().map(Range::len).sum()
}

/// `ranges` cut into batches of `rows` rows (the last one shorter).
fn batches_of(
    ranges: Arc<Vec<Range<usize>>>,
    rows: usize,
) -> impl Iterator<Item = Vec<Range<usize>>> {
    let rows = rows.max(1);
    let mut at = (0, ranges.first().map_or(0, |r| r.start));
    std::iter::from_fn(move || {
        let mut batch = Vec::new();
        let mut room = rows;
        while room > 0 && at.0 < ranges.len() {
            let range = &ranges[at.0];
            let end = range.end.min(at.1 + room);
            if end > at.1 {
                batch.push(at.1..end);
                room -= end - at.1;
            }
            if end == range.end {
                at.0 += 1;
                at.1 = ranges.get(at.0).map_or(0, |r| r.start);
            } else {
                at.1 = end;
            }
        }
        (!batch.is_empty()).then_some(batch)
    })
}

/// The values of `column` at `rows`, in order.
fn gather<T: Copy>(column: &[T], rows: &[Range<usize>]) -> Vec<T> {
    let mut out = Vec::with_capacity(total(rows));
    for r in rows {
        out.extend_from_slice(&column[r.clone()]);
    }
    out
}

/// For rows whose `key` never decreases, where each customer's rows start: the first row
/// whose key is at least the customer's `lowest` key; then the number of rows.
fn starts_by_key(
    lowest: impl Iterator<Item = usize>,
    rows: usize,
    key: impl Fn(usize) -> usize,
) -> Vec<usize> {
    let mut row = 0;
    let mut starts: Vec<usize> = lowest
        .map(|low| {
            while row < rows && key(row) < low {
                row += 1;
            }
            row
        })
        .collect();
    starts.push(rows);
    starts
}

/// The last `i` with `offsets[i] <= e` in ascending `offsets`, searched from `from`
/// outwards (steps doubling, then a binary search within the last step) when
/// `offsets[from] <= e`, over everything otherwise.
fn last_at_or_before(offsets: &[usize], from: usize, e: usize) -> usize {
    if offsets.get(from).is_none_or(|&o| o > e) {
        return offsets.partition_point(|&o| o <= e).saturating_sub(1);
    }
    let (mut lo, mut step) = (from, 1);
    // offsets[lo] <= e throughout; offsets[hi] > e once the loop ends (or hi is past the end).
    let mut hi = lo + 1;
    while hi < offsets.len() && offsets[hi] <= e {
        lo = hi;
        step *= 2;
        hi = lo + step;
    }
    let hi = hi.min(offsets.len());
    lo + offsets[lo + 1..hi].partition_point(|&o| o <= e)
}

fn names_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8))
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// A batch's dictionary column over the log's names `values`.
///
/// Each batch carries only the names its keys use: DataFusion's grouping and row format
/// convert every value of a batch's dictionary, so handing a large name list (a million
/// customers did, before they became string views) to each 64k-row batch makes GROUP BY
/// quadratic. Contiguous keys get a zero-copy slice; scattered keys their own small
/// dictionary.
fn dictionary(mut keys: Vec<u32>, values: &ArrayRef) -> Result<ArrayRef> {
    let narrowed = if values.len() <= keys.len() {
        values.clone()
    } else {
        let lo = keys.iter().copied().min().unwrap_or(0);
        let hi = keys.iter().copied().max().unwrap_or(0);
        let span = (hi - lo) as usize + 1;
        if keys.is_empty() {
            values.slice(0, 0)
        } else if span <= 2 * keys.len() {
            keys.iter_mut().for_each(|k| *k -= lo);
            values.slice(lo as usize, span)
        } else {
            let mut used = keys.clone();
            used.sort_unstable();
            used.dedup();
            for k in &mut keys {
                // Every key is in `used`, which was made from them.
                *k = used.partition_point(|&u| u < *k) as u32;
            }
            datafusion::arrow::compute::take(values, &UInt32Array::from(used), None)?
        }
    };
    Ok(Arc::new(DictionaryArray::<UInt32Type>::try_new(
        UInt32Array::from(keys),
        narrowed,
    )?))
}

fn timestamps(micros: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("UTC"))
}

/// Per-log facts the tables share, computed once on first use.
pub(crate) struct Shared {
    journeys: Journeys,
    customer_names: OnceLock<ArrayRef>,
    /// Per customer: DataFusion's repartitioning hash of its name.
    /// Hashes of the names, or why they could not be made.
    customer_hashes: OnceLock<std::result::Result<Vec<u64>, String>>,
    touchpoint_names: ArrayRef,
    stage_names: ArrayRef,
    source_names: ArrayRef,
    /// Per event: its session's number within its customer, from 0.
    session_of: OnceLock<Vec<u32>>,
}

impl Shared {
    pub(crate) fn new(journeys: Journeys) -> Arc<Shared> {
        let log = &journeys.log;
        let touchpoint_names: ArrayRef = Arc::new(StringArray::from_iter_values(&log.touchpoints));
        let stage_names: ArrayRef = Arc::new(StringArray::from_iter(
            (0..log.touchpoints.len()).map(|t| log.stages.get(t).cloned().flatten()),
        ));
        let source_names: ArrayRef = Arc::new(StringArray::from_iter_values(&log.sources));
        Arc::new(Shared {
            journeys,
            customer_names: OnceLock::new(),
            customer_hashes: OnceLock::new(),
            touchpoint_names,
            stage_names,
            source_names,
            session_of: OnceLock::new(),
        })
    }

    /// Every customer's name, as string views: a column of customers is a `take` of
    /// these, copying 16 bytes a row and no names.
    fn customer_names(&self) -> &ArrayRef {
        self.customer_names.get_or_init(|| {
            let log = &self.journeys.log;
            Arc::new(StringViewArray::from_iter_values(
                (0..log.num_customers() as u32).map(|c| log.customer_key(c)),
            ))
        })
    }

    /// The `customer` column of rows whose customers are `customers`.
    ///
    /// String views rather than a dictionary: grouping by customer (what the behavioural
    /// functions do) hashes views directly, where a dictionary column goes through
    /// DataFusion's generic row format, and short names live inside the view.
    fn customer_column(&self, customers: Vec<u32>) -> Result<ArrayRef> {
        Ok(datafusion::arrow::compute::take(
            self.customer_names(),
            &UInt32Array::from(customers),
            None,
        )?)
    }

    /// DataFusion's repartitioning hash of every customer's name. Made once: the scan's
    /// partitions all wait for it before their first row, so it is made on both cores.
    fn customer_hashes(&self) -> Result<&[u64]> {
        let made = self.customer_hashes.get_or_init(|| {
            let names = self.customer_names();
            let mut hashes = vec![0; names.len()];
            let mid = names.len() / 2;
            let (low, high) = hashes.split_at_mut(mid);
            let hash = |from: usize, into: &mut [u64]| {
                create_hashes(
                    [&names.slice(from, into.len())],
                    REPARTITION_RANDOM_STATE.random_state(),
                    into,
                )
                .map(|_| ())
                .map_err(|e| e.to_string())
            };
            std::thread::scope(|scope| {
                let upper = scope.spawn(|| hash(mid, high));
                let lower = hash(0, low);
                let upper = upper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                lower.and(upper)
            })?;
            Ok(hashes)
        });
        match made {
            Ok(hashes) => Ok(hashes),
            Err(why) => Err(datafusion::common::DataFusionError::Execution(format!(
                "cannot hash the customers for partitioning: {why}"
            ))),
        }
    }

    /// The rows of each of `count` partitions, whole customers each: customer `c`'s rows
    /// `starts[c]..starts[c + 1]` go to the partition DataFusion's hash repartitioning
    /// sends its name to. With a `limit`, each partition stops after that many rows.
    fn customer_partitions(
        &self,
        starts: &[usize],
        count: usize,
        limit: Option<usize>,
    ) -> Result<Vec<Vec<Range<usize>>>> {
        let hashes = self.customer_hashes()?;
        if hashes.len() + 1 != starts.len() {
            return internal_err!(
                "{} customers, but rows for {}",
                hashes.len(),
                starts.len().saturating_sub(1)
            );
        }
        let mut parts: Vec<Vec<Range<usize>>> = vec![Vec::new(); count];
        let mut room = vec![limit.unwrap_or(usize::MAX); count];
        // Partitions out of room: with a limit, the rest of the customers need no look.
        let mut full = if limit == Some(0) { count } else { 0 };
        for (hash, w) in hashes.iter().zip(starts.windows(2)) {
            if full == count {
                break;
            }
            let p = (hash % count as u64) as usize;
            let rows = w[0]..w[1].min(w[0].saturating_add(room[p]));
            if rows.is_empty() {
                continue;
            }
            room[p] -= rows.len();
            if room[p] == 0 {
                full += 1;
            }
            match parts[p].last_mut() {
                Some(last) if last.end == rows.start => last.end = rows.end,
                _ => parts[p].push(rows),
            }
        }
        Ok(parts)
    }

    /// The customers of `events`. Scans read events in increasing order, so this walks
    /// along the customers' offsets (searching only on a jump) rather than keeping a
    /// customer per event (80 MB for 20M events).
    fn customers_of(&self, events: impl Iterator<Item = usize>) -> Vec<u32> {
        let offsets = &self.journeys.log.offsets;
        let mut c = 0;
        events
            .map(|e| {
                if !(offsets[c]..offsets[c + 1]).contains(&e) {
                    c = if offsets
                        .get(c + 2)
                        .is_some_and(|&end| e >= offsets[c + 1] && e < end)
                    {
                        c + 1
                    } else {
                        // The last customer starting at or before `e` (past empty ones).
                        offsets.partition_point(|&o| o <= e).saturating_sub(1)
                    };
                }
                c as u32
            })
            .collect()
    }

    /// The customers of the events in `rows`: a customer's events are contiguous, so each
    /// range is filled a run per customer rather than looked at event by event.
    fn customers_in(&self, rows: &[Range<usize>]) -> Vec<u32> {
        let offsets = &self.journeys.log.offsets;
        let mut out = Vec::with_capacity(rows.iter().map(Range::len).sum());
        let mut c = 0;
        for r in rows.iter().filter(|r| !r.is_empty()) {
            // The last customer starting at or before the range (past empty ones). Ranges
            // come in increasing order, a few customers apart (the others are in other
            // partitions): searched from the previous one outwards, not over all of them.
            c = last_at_or_before(offsets, c, r.start);
            let mut at = r.start;
            while at < r.end {
                let end = offsets[c + 1].min(r.end);
                out.resize(out.len() + (end - at), c as u32);
                at = end;
                c += 1;
            }
        }
        out
    }

    fn session_of(&self) -> &[u32] {
        self.session_of.get_or_init(|| {
            let log = &self.journeys.log;
            let mut of = vec![0u32; log.num_events()];
            let mut previous = u32::MAX;
            let mut k = 0u32;
            for s in 0..log.num_sessions() {
                let c = log.session_customer()[s];
                k = if c == previous { k + 1 } else { 0 };
                previous = c;
                of[log.session_offsets()[s]..log.session_offsets()[s + 1]].fill(k);
            }
            of
        })
    }

    fn scope(&self) -> Scope {
        self.journeys.config.sessions.scope
    }

    /// Journey `i`'s events, as a range of the log's event indices.
    fn journey_range(&self, i: usize) -> Range<usize> {
        let log = &self.journeys.log;
        match self.scope() {
            Scope::Customer => log.offsets[i]..log.offsets[i + 1],
            Scope::Session => log.session_offsets()[i]..log.session_offsets()[i + 1],
        }
    }
}

impl Shared {
    /// The events of journeys `rows`, which are contiguous in the log.
    fn events_of(&self, rows: &Range<usize>) -> Range<usize> {
        if rows.is_empty() {
            return 0..0;
        }
        self.journey_range(rows.start).start..self.journey_range(rows.end - 1).end
    }
}

/// `events`: one row per event in journey order (customer, then time, ties by arrival).
pub(crate) struct Events(pub Arc<Shared>);

impl Events {
    pub(crate) fn table_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("customer", DataType::Utf8View, false),
            Field::new("session", DataType::UInt32, false),
            Field::new("ts", ts_type(), false),
            Field::new("touchpoint", names_type(), false),
            Field::new("stage", names_type(), true),
            Field::new("source", names_type(), false),
        ]))
    }
}

impl Rows for Events {
    const CUSTOMER: usize = 0;

    fn schema(&self) -> SchemaRef {
        Events::table_schema()
    }

    fn num_rows(&self) -> usize {
        self.0.journeys.log.num_events()
    }

    fn customer_starts(&self) -> Cow<'_, [usize]> {
        // An event's row is its index: the customers' offsets are their starts.
        let offsets = &self.0.journeys.log.offsets;
        if offsets.is_empty() {
            Cow::Owned(vec![0])
        } else {
            Cow::Borrowed(offsets)
        }
    }

    fn shared(&self) -> &Shared {
        &self.0
    }

    fn column(&self, index: usize, rows: &[Range<usize>]) -> Result<ArrayRef> {
        let s = &self.0;
        let log = &s.journeys.log;
        match index {
            0 => s.customer_column(s.customers_in(rows)),
            1 => Ok(Arc::new(UInt32Array::from(gather(s.session_of(), rows)))),
            2 => Ok(timestamps(gather(&log.ts, rows))),
            3 => dictionary(gather(&log.touchpoint, rows), &s.touchpoint_names),
            4 => dictionary(gather(&log.touchpoint, rows), &s.stage_names),
            _ => dictionary(
                gather(&log.source, rows)
                    .into_iter()
                    .map(u32::from)
                    .collect(),
                &s.source_names,
            ),
        }
    }
}

/// `transitions`: one row per pair of consecutive events of a journey: `from`, `to`,
/// `customer`, `session`, `ts` (when `from` happened) and `duration` (seconds to `to`).
pub(crate) struct Transitions {
    shared: Arc<Shared>,
    /// Per row: the event index of its `from`.
    from: OnceLock<Vec<u32>>,
}

impl Transitions {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Transitions {
            shared,
            from: OnceLock::new(),
        }
    }

    pub(crate) fn table_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("from", names_type(), false),
            Field::new("to", names_type(), false),
            Field::new("customer", DataType::Utf8View, false),
            Field::new("session", DataType::UInt32, false),
            Field::new("ts", ts_type(), false),
            Field::new("duration", DataType::Float64, false),
        ]))
    }

    /// Index of the first event of every transition: each journey's events but its last.
    fn transition_starts(&self) -> &[u32] {
        self.from.get_or_init(|| {
            let s = &self.shared;
            let n = s.journeys.log.num_journeys(s.scope());
            let mut from = Vec::new();
            for j in 0..n {
                let r = s.journey_range(j);
                from.extend((r.start as u32..r.end as u32).take(r.len().saturating_sub(1)));
            }
            from
        })
    }
}

impl Rows for Transitions {
    const CUSTOMER: usize = 2;

    fn schema(&self) -> SchemaRef {
        Transitions::table_schema()
    }

    fn num_rows(&self) -> usize {
        self.transition_starts().len()
    }

    fn customer_starts(&self) -> Cow<'_, [usize]> {
        let (offsets, from) = (&self.shared.journeys.log.offsets, self.transition_starts());
        Cow::Owned(starts_by_key(
            offsets
                .iter()
                .copied()
                .take(offsets.len().saturating_sub(1)),
            from.len(),
            |t| from[t] as usize,
        ))
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn column(&self, index: usize, rows: &[Range<usize>]) -> Result<ArrayRef> {
        let s = &self.shared;
        let log = &s.journeys.log;
        let from = gather(self.transition_starts(), rows);
        let at = |shift: usize| from.iter().map(move |&i| i as usize + shift);
        match index {
            0 => dictionary(
                at(0).map(|i| log.touchpoint[i]).collect(),
                &s.touchpoint_names,
            ),
            1 => dictionary(
                at(1).map(|i| log.touchpoint[i]).collect(),
                &s.touchpoint_names,
            ),
            2 => s.customer_column(s.customers_of(at(0))),
            3 => Ok(Arc::new(UInt32Array::from_iter_values(
                at(0).map(|i| s.session_of()[i]),
            ))),
            4 => Ok(timestamps(at(0).map(|i| log.ts[i]).collect())),
            _ => Ok(Arc::new(Float64Array::from_iter_values(
                at(0).map(|i| (log.ts[i + 1] - log.ts[i]) as f64 / 1e6),
            ))),
        }
    }
}

/// `journeys`: one row per journey of the configured scope (customer, or session): its
/// touchpoints and times in order, and per configured funnel whether it converted.
pub(crate) struct JourneyRows {
    shared: Arc<Shared>,
    schema: SchemaRef,
    /// Per configured funnel, per journey: converted (reached the last step).
    converted: OnceLock<Vec<Vec<bool>>>,
    funnels: Vec<FunnelSpec>,
}

/// Fixed columns of `journeys` before the per-funnel `converted_*` ones.
const JOURNEY_COLUMNS: usize = 7;

impl JourneyRows {
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Self> {
        let config = &shared.journeys.config;
        let log = &shared.journeys.log;
        let mut funnels = Vec::new();
        for (name, journey) in &config.journeys {
            // A funnel naming touchpoints this log lacks still resolves; nobody converts.
            // Maturity is as of the last event, found when a query first reads the flags
            // (a pass over every event that most queries never need).
            let (spec, _unknown) = FunnelSpec::resolve(journey, &log.touchpoints, i64::MAX)
                .map_err(|e| {
                    datafusion::common::DataFusionError::Plan(format!("journey {name}: {e}"))
                })?;
            funnels.push(spec);
        }
        Ok(JourneyRows {
            schema: JourneyRows::table_schema(config),
            shared,
            converted: OnceLock::new(),
            funnels,
        })
    }

    /// The columns: fixed ones, then `converted_NAME` per journey the config names.
    pub(crate) fn table_schema(config: &Config) -> SchemaRef {
        let mut fields = vec![
            Field::new("customer", DataType::Utf8View, false),
            Field::new("session", DataType::UInt32, true),
            Field::new("start", ts_type(), false),
            Field::new("end", ts_type(), false),
            Field::new("events", DataType::UInt32, false),
            Field::new(
                "touchpoints",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))),
                false,
            ),
            Field::new(
                "times",
                DataType::List(Arc::new(Field::new("item", ts_type(), false))),
                false,
            ),
        ];
        for name in config.journeys.keys() {
            fields.push(Field::new(
                format!("converted_{name}"),
                DataType::Boolean,
                false,
            ));
        }
        Arc::new(Schema::new(fields))
    }

    fn converted(&self) -> &[Vec<bool>] {
        self.converted.get_or_init(|| {
            let s = &self.shared;
            let log = &s.journeys.log;
            let as_of = log.last_time().unwrap_or(0);
            self.funnels
                .iter()
                .map(|spec| {
                    // Exactly what `trailmap funnel` counts (exclusions, attempts, gaps):
                    // a journey converted when adding it raised the last step's tally.
                    let spec = FunnelSpec {
                        as_of,
                        ..spec.clone()
                    };
                    let last = spec.num_steps() - 1;
                    let mut funnel = Funnel::new(spec, None);
                    (0..self.num_rows())
                        .map(|j| {
                            let before = funnel.tallies.reached(last);
                            funnel.add(&log.journey(s.scope(), j));
                            funnel.tallies.reached(last) > before
                        })
                        .collect()
                })
                .collect()
        })
    }
}

impl Rows for JourneyRows {
    const CUSTOMER: usize = 0;

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn num_rows(&self) -> usize {
        let s = &self.shared;
        s.journeys.log.num_journeys(s.scope())
    }

    fn customer_starts(&self) -> Cow<'_, [usize]> {
        let log = &self.shared.journeys.log;
        let customers = log.num_customers();
        Cow::Owned(match self.shared.scope() {
            Scope::Customer => (0..=customers).collect(),
            Scope::Session => starts_by_key(0..customers, log.num_sessions(), |s| {
                log.session_customer()[s] as usize
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn column(&self, index: usize, rows: &[Range<usize>]) -> Result<ArrayRef> {
        let s = &self.shared;
        let log = &s.journeys.log;
        let journeys = || rows.iter().flat_map(Range::clone);
        let ranges = journeys().map(|j| s.journey_range(j));
        let list_offsets =
            || OffsetBuffer::from_lengths(journeys().map(|j| s.journey_range(j).len()));
        // The events of the rows, in order: each range of rows is a range of events.
        let events = || rows.iter().map(|r| s.events_of(r)).collect::<Vec<_>>();
        let n = total(rows);
        match index {
            // Row `j` is customer `j`, or session `j` of its customer.
            0 => s.customer_column(match s.scope() {
                Scope::Customer => journeys().map(|j| j as u32).collect(),
                Scope::Session => journeys().map(|j| log.session_customer()[j]).collect(),
            }),
            1 => Ok(Arc::new(match s.scope() {
                Scope::Session => {
                    UInt32Array::from_iter_values(ranges.map(|r| s.session_of()[r.start]))
                }
                Scope::Customer => UInt32Array::new_null(n),
            })),
            2 => Ok(timestamps(ranges.map(|r| log.ts[r.start]).collect())),
            3 => Ok(timestamps(ranges.map(|r| log.ts[r.end - 1]).collect())),
            4 => Ok(Arc::new(UInt32Array::from_iter_values(
                ranges.map(|r| r.len() as u32),
            ))),
            5 => {
                let values = StringArray::from_iter_values(
                    gather(&log.touchpoint, &events())
                        .into_iter()
                        .map(|t| log.touchpoints[t as usize].as_str()),
                );
                Ok(Arc::new(ListArray::try_new(
                    Arc::new(Field::new("item", DataType::Utf8, false)),
                    list_offsets(),
                    Arc::new(values),
                    None,
                )?))
            }
            6 => Ok(Arc::new(ListArray::try_new(
                Arc::new(Field::new("item", ts_type(), false)),
                list_offsets(),
                timestamps(gather(&log.ts, &events())),
                None,
            )?)),
            k => {
                let flags = &self.converted()[k - JOURNEY_COLUMNS];
                Ok(Arc::new(BooleanArray::from(gather(flags, rows))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};

    fn names(array: &ArrayRef) -> Vec<String> {
        let dict = array.as_dictionary::<UInt32Type>();
        let values = dict.values().as_string::<i32>();
        dict.keys()
            .iter()
            .map(|k| values.value(k.unwrap_or(0) as usize).to_string())
            .collect()
    }

    /// The search from a starting point finds what a search over everything finds, with
    /// empty customers (repeated offsets) and from any start, good or not.
    #[test]
    fn searching_from_a_customer_equals_searching_all() {
        let offsets = [0, 0, 3, 3, 3, 4, 9, 9, 20, 21, 21, 40];
        for e in 0..=40 {
            let expected = offsets.partition_point(|&o| o <= e).saturating_sub(1);
            for from in 0..=offsets.len() {
                assert_eq!(
                    last_at_or_before(&offsets, from, e),
                    expected,
                    "e {e} from {from}"
                );
            }
        }
    }

    #[test]
    fn a_batch_carries_only_the_names_it_uses() {
        let all: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..10_000).map(|i| format!("c{i}")),
        ));
        // Contiguous keys, as customer columns have: a slice.
        let column = dictionary(vec![500, 500, 501, 503], &all).unwrap();
        assert_eq!(names(&column), ["c500", "c500", "c501", "c503"]);
        assert_eq!(column.as_dictionary::<UInt32Type>().values().len(), 4);
        // Scattered keys: their own dictionary, in key order.
        let column = dictionary(vec![9_000, 7, 9_000, 42], &all).unwrap();
        assert_eq!(names(&column), ["c9000", "c7", "c9000", "c42"]);
        assert_eq!(column.as_dictionary::<UInt32Type>().values().len(), 3);
        // Small dictionaries (touchpoints) stay whole.
        let few: ArrayRef = Arc::new(StringArray::from_iter_values(["a", "b"]));
        let column = dictionary(vec![1, 0, 1], &few).unwrap();
        assert_eq!(names(&column), ["b", "a", "b"]);
        assert_eq!(column.as_dictionary::<UInt32Type>().values().len(), 2);
        assert_eq!(dictionary(vec![], &all).unwrap().len(), 0);
    }

    #[test]
    // Batches of one range are meant: a batch is a list of ranges.
    #[allow(clippy::single_range_in_vec_init)]
    fn partitions_are_cut_into_batches_across_ranges() {
        let ranges = Arc::new(vec![0..BATCH - 10, BATCH..BATCH + 30, 3 * BATCH..5 * BATCH]);
        let batches: Vec<Vec<Range<usize>>> = batches_of(ranges, BATCH).collect();
        assert_eq!(
            batches,
            [
                vec![0..BATCH - 10, BATCH..BATCH + 10],
                vec![BATCH + 10..BATCH + 30, 3 * BATCH..4 * BATCH - 20],
                vec![4 * BATCH - 20..5 * BATCH - 20],
                vec![5 * BATCH - 20..5 * BATCH],
            ]
        );
        assert_eq!(batches_of(Arc::new(Vec::new()), BATCH).count(), 0);
    }

    #[test]
    fn customers_start_at_their_first_row() {
        // Rows keyed by first event: customers own events 0..3, 3..3 (none), 3..7.
        let keys = [0, 1, 3, 5, 6];
        assert_eq!(
            starts_by_key([0, 3, 3].into_iter(), keys.len(), |r| keys[r]),
            [0, 2, 2, 5]
        );
    }
}
