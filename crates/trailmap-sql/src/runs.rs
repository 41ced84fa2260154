//! GROUP BY customer without hashing: the journey tables' rows come customer by customer,
//! so a customer's group is a run of rows and ends where the next customer's begins.
//!
//! DataFusion's hash aggregation interns every row's key (a million customer names for
//! twenty million events cost more than the behavioural functions). [`AggregateByRuns`], a
//! physical optimizer rule, replaces an aggregation whose only group key is a journey
//! scan's `customer` column, reached through operators that keep row order (projections,
//! filters, cooperative wrappers), by a [`RunAggregateExec`]: it numbers groups by run, feeds
//! the same `GroupsAccumulator`s, and emits each customer's answers as soon as its run
//! ends, so it holds one customer's state at a time instead of every customer's.
//!
//! Only what it does exactly as the hash aggregation does is replaced: one plain key, final
//! answers from raw rows, aggregates with a `GroupsAccumulator`, no DISTINCT or ORDER BY
//! inside an aggregate (those need more than one row's view of a group).

use crate::tables;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use std::fmt;
use std::sync::Arc;

/// The rule: see the module's documentation.
#[derive(Debug, Default)]
pub struct AggregateByRuns;

impl PhysicalOptimizerRule for AggregateByRuns {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(runs) = RunAggregateExec::replacing(&node)? else {
                return Ok(Transformed::no(node));
            };
            // Over streamed events, behavioural functions are computed by the scan itself.
            let by_scan = crate::streamed::computed_by_scan(
                &runs.input,
                &runs.key,
                &runs.aggregates,
                &runs.filters,
                &runs.schema,
                &runs.properties,
            );
            Ok(Transformed::yes(match by_scan {
                Some(scan) => Arc::new(scan) as Arc<dyn ExecutionPlan>,
                None => Arc::new(runs),
            }))
        })
        .data()
    }

    fn name(&self) -> &str {
        "aggregate_by_customer_runs"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether column `column` of `plan`'s output holds each partition's rows in runs: every
/// value's rows together. True of a journey scan's `customer` column and stays true
/// through operators that drop rows or columns but never reorder rows.
fn in_runs(plan: &Arc<dyn ExecutionPlan>, column: usize) -> bool {
    if let Some(scan_column) = tables::customer_column_of_scan(plan.as_ref()) {
        return scan_column == column;
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        return match p.projection_expr().as_ref().get(column) {
            Some(e) => match e.expr.downcast_ref::<Column>() {
                Some(c) => in_runs(p.input(), c.index()),
                None => false,
            },
            None => false,
        };
    }
    if let Some(f) = plan.downcast_ref::<FilterExec>() {
        let below = match f.projection() {
            Some(p) => match p.get(column) {
                Some(&c) => c,
                None => return false,
            },
            None => column,
        };
        return in_runs(f.input(), below);
    }
    if let Some(c) = plan.downcast_ref::<CooperativeExec>() {
        return in_runs(c.input(), column);
    }
    false
}

/// An aggregation grouped by a column whose values come in runs: see the module's
/// documentation.
#[derive(Debug)]
pub struct RunAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    /// The group key, over the input's rows.
    key: Arc<dyn PhysicalExpr>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// The aggregation's output: the key, then each aggregate's answer.
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunAggregateExec {
    /// The run aggregation that does what `plan` does, when `plan` is an aggregation it can
    /// stand in for.
    fn replacing(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<RunAggregateExec>> {
        let Some(agg) = plan.downcast_ref::<AggregateExec>() else {
            return Ok(None);
        };
        let group = agg.group_expr();
        let plain_key = matches!(
            agg.mode(),
            AggregateMode::Single | AggregateMode::SinglePartitioned
        ) && group.is_single()
            && group.expr().len() == 1
            && agg.limit_options().is_none();
        if !plain_key {
            return Ok(None);
        }
        let key = group.expr()[0].0.clone();
        let Some(column) = key.downcast_ref::<Column>() else {
            return Ok(None);
        };
        let supported = agg.aggr_expr().iter().all(|a| {
            !a.is_distinct() && a.order_bys().is_empty() && a.groups_accumulator_supported()
        });
        if !supported || !in_runs(agg.input(), column.index()) {
            return Ok(None);
        }
        Ok(Some(RunAggregateExec {
            input: agg.input().clone(),
            key,
            aggregates: agg.aggr_expr().to_vec(),
            filters: agg.filter_expr().to_vec(),
            schema: agg.schema(),
            properties: agg.properties().clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

impl DisplayAs for RunAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.aggregates.iter().map(|a| a.name()).collect();
        write!(
            f,
            "RunAggregateExec: gby=[{}] (customer runs), aggr=[{}]",
            self.key,
            names.join(", ")
        )
    }
}

impl ExecutionPlan for RunAggregateExec {
    fn name(&self) -> &str {
        "RunAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let mut exprs = vec![self.key.clone()];
        for a in &self.aggregates {
            exprs.extend(a.expressions());
        }
        exprs.extend(self.filters.iter().flatten().cloned());
        for e in &exprs {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|c: Vec<_>| {
            DataFusionError::Internal(format!("RunAggregateExec takes one input, not {}", c.len()))
        })?;
        Ok(Arc::new(RunAggregateExec {
            input,
            key: self.key.clone(),
            aggregates: self.aggregates.clone(),
            filters: self.filters.clone(),
            schema: self.schema.clone(),
            properties: self.properties.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let accumulators = self
            .aggregates
            .iter()
            .map(|a| a.create_groups_accumulator())
            .collect::<Result<Vec<_>>>()?;
        let runs = Runs {
            schema: self.schema.clone(),
            key: self.key.clone(),
            arguments: self.aggregates.iter().map(|a| a.expressions()).collect(),
            filters: self.filters.clone(),
            accumulators,
            open: None,
            groups: Vec::new(),
            reservation: MemoryConsumer::new(format!("RunAggregateExec[{partition}]"))
                .register(context.memory_pool()),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let stream = futures::stream::unfold(Some((input, runs)), |state| async move {
            let (mut input, mut runs) = state?;
            loop {
                let answer = match input.next().await {
                    Some(Ok(batch)) => match runs.add(&batch) {
                        Ok(None) => continue,
                        Ok(Some(out)) => Ok(out),
                        Err(e) => return Some((Err(e), None)),
                    },
                    Some(Err(e)) => return Some((Err(e), None)),
                    None => match runs.finish() {
                        Ok(None) => return None,
                        Ok(Some(out)) => return Some((Ok(out), None)),
                        Err(e) => return Some((Err(e), None)),
                    },
                };
                return Some((answer, Some((input, runs))));
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's aggregation. Group 0 is the run still open (the last batch's last
/// key), whose rows may go on in the next batch; the accumulators hold no other group
/// between batches.
struct Runs {
    schema: SchemaRef,
    key: Arc<dyn PhysicalExpr>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// The open run's key, one row.
    open: Option<ArrayRef>,
    /// Reused: each row's group.
    groups: Vec<usize>,
    reservation: MemoryReservation,
    baseline: BaselineMetrics,
}

impl Runs {
    /// Aggregates a batch; answers for the groups whose runs it ended.
    fn add(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let elapsed = self.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        let n = batch.num_rows();
        if n == 0 {
            return Ok(None);
        }
        let keys = self.key.evaluate(batch)?.into_array(n)?;
        // A run starts at row 0 unless it goes on with the open one, and wherever a key
        // differs from the row before (NULL keys equal each other, as GROUP BY has them).
        let goes_on = match &self.open {
            Some(open) => {
                !datafusion::arrow::compute::kernels::cmp::distinct(open, &keys.slice(0, 1))?
                    .value(0)
            }
            None => false,
        };
        let mut starts: Vec<u32> = vec![0];
        if n > 1 {
            let changed = datafusion::arrow::compute::kernels::cmp::distinct(
                &keys.slice(0, n - 1),
                &keys.slice(1, n - 1),
            )?;
            starts.extend(changed.values().set_indices().map(|i| i as u32 + 1));
        }
        // Group numbers: the open run is 0; this batch's first run is 0 when it goes on,
        // else the next number.
        let first = usize::from(self.open.is_some() && !goes_on);
        self.groups.clear();
        self.groups.reserve(n);
        for (k, w) in starts.iter().enumerate() {
            let end = starts.get(k + 1).map_or(n, |&s| s as usize);
            let len = end - *w as usize;
            self.groups.extend(std::iter::repeat_n(first + k, len));
        }
        let total = first + starts.len();
        for (i, acc) in self.accumulators.iter_mut().enumerate() {
            let values: Vec<ArrayRef> = self.arguments[i]
                .iter()
                .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
                .collect::<Result<_>>()?;
            let filter = match &self.filters[i] {
                Some(f) => Some(f.evaluate(batch)?.into_array(n)?),
                None => None,
            };
            let filter = match &filter {
                Some(f) => Some(f.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
                    DataFusionError::Internal("an aggregate's FILTER is not boolean".into())
                })?),
                None => None,
            };
            acc.update_batch(&values, &self.groups, filter, total)?;
        }
        // Every run but the last is complete: the last may go on in the next batch.
        let done = total - 1;
        let done_keys: Vec<u32> = starts[..starts.len() - 1].to_vec();
        let mut key_parts: Vec<ArrayRef> = Vec::new();
        if first == 1 {
            key_parts.extend(self.open.take());
        }
        key_parts.push(take(&keys, &UInt32Array::from(done_keys), None)?);
        let last = starts[starts.len() - 1] as usize;
        self.open = Some(keys.slice(last, 1));
        let out = if done == 0 {
            None
        } else {
            Some(self.emit(&key_parts, EmitTo::First(done))?)
        };
        let size = self.accumulators.iter().map(|a| a.size()).sum();
        self.reservation.try_resize(size)?;
        Ok(out)
    }

    /// The open run's answers, at the end of the input.
    fn finish(&mut self) -> Result<Option<RecordBatch>> {
        let elapsed = self.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        let out = match self.open.take() {
            Some(key) => Some(self.emit(&[key], EmitTo::All)?),
            None => None,
        };
        self.reservation.free();
        self.baseline.done();
        Ok(out)
    }

    fn emit(&mut self, keys: &[ArrayRef], emit_to: EmitTo) -> Result<RecordBatch> {
        let key = match keys {
            [one] => one.clone(),
            _ => concat(&keys.iter().map(|k| k.as_ref()).collect::<Vec<&dyn Array>>())?,
        };
        let mut columns = vec![key];
        for acc in &mut self.accumulators {
            columns.push(acc.evaluate(emit_to)?);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.baseline.record_output(batch.num_rows());
        Ok(batch)
    }
}
