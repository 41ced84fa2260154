//! Table functions for the mining results: `paths()`, `variants()`, `funnel(…)` and
//! `dropoffs(…)`. Each runs the same `trailmap-mine` aggregate and report as the CLI
//! command of the same name and returns the rows its `--format csv` prints, typed.

use crate::Journeys;
use datafusion::arrow::array::{
    ArrayRef, Float64Array, ListArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::logical_expr::Expr;
use std::fmt;
use std::sync::Arc;
use trailmap_mine::funnel::{FunnelSpec, Modes};
use trailmap_mine::paths::PathOptions;
use trailmap_mine::report::{DropoffsReport, FunnelReport, Names, PathsReport};
use trailmap_mine::{Dropoffs, Funnel, PathStats, fold};
use trailmap_model::config::{FunnelMode, JourneyConfig, StepOrder};
use trailmap_model::time::Span;

/// Which result a table function computes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum MiningResult {
    Paths,
    Variants,
    Funnel,
    Dropoffs,
}

pub(crate) struct MiningFunction {
    pub kind: MiningResult,
    pub journeys: Journeys,
}

impl fmt::Debug for MiningFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}()", self.kind)
    }
}

/// The constant arguments of a call, as text (numbers in their decimal form).
fn text_args(name: &str, exprs: &[Expr]) -> Result<Vec<String>> {
    exprs
        .iter()
        .map(|e| match e {
            Expr::Literal(ScalarValue::Utf8(Some(s)), _)
            | Expr::Literal(ScalarValue::Utf8View(Some(s)), _)
            | Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _) => Ok(s.clone()),
            Expr::Literal(v, _) if v.data_type().is_integer() => Ok(v.to_string()),
            other => plan_err!(
                "{name}(): arguments are constants like '1d' or 'pv,cart,buy', not {other}"
            ),
        })
        .collect()
}

fn table(batch: RecordBatch) -> Result<Arc<dyn TableProvider>> {
    Ok(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?))
}

fn seconds(v: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(v))
}

impl TableFunctionImpl for MiningFunction {
    fn call_with_args(
        &self,
        args: datafusion::catalog::TableFunctionArgs,
    ) -> Result<Arc<dyn TableProvider>> {
        let log = &self.journeys.log;
        let config = &self.journeys.config;
        let scope = config.sessions.scope;
        let names = Names {
            touchpoints: &log.touchpoints,
        };
        match self.kind {
            MiningResult::Paths | MiningResult::Variants => {
                let name = if matches!(self.kind, MiningResult::Paths) {
                    "paths"
                } else {
                    "variants"
                };
                let args = text_args(name, args.exprs())?;
                if matches!(self.kind, MiningResult::Paths) && !args.is_empty() {
                    return plan_err!("paths() takes no arguments");
                }
                if args.len() > 1 {
                    return plan_err!("variants([top]) takes at most one argument");
                }
                let top = match args.first() {
                    Some(t) => t.parse::<usize>().map_err(|_| {
                        DataFusionError::Plan(format!(
                            "variants({t}): give the number of variants, like variants(20), or none for all"
                        ))
                    })?,
                    None => 0,
                };
                let touchpoints = log.touchpoints.len();
                let options = PathOptions {
                    durations: matches!(self.kind, MiningResult::Paths),
                    variants: matches!(self.kind, MiningResult::Variants),
                };
                let paths = fold(log, scope, || PathStats::new(touchpoints, options));
                let report = PathsReport::new(&paths, names, top, 0);
                if matches!(self.kind, MiningResult::Paths) {
                    paths_batch(&report)
                } else {
                    variants_batch(&report)
                }
            }
            MiningResult::Funnel => {
                let args = text_args("funnel", args.exprs())?;
                let (journey, spec) = funnel_spec(&self.journeys, &args)?;
                let funnel = fold(log, scope, || Funnel::new(spec.clone(), None));
                let report = FunnelReport::new(&funnel, &journey.steps, names, None);
                funnel_batch(&report)
            }
            MiningResult::Dropoffs => {
                let args = text_args("dropoffs", args.exprs())?;
                if args.len() > 1 {
                    return plan_err!(
                        "dropoffs([goal]) takes at most one argument: a goal touchpoint"
                    );
                }
                let goal = match args.first() {
                    Some(g) => {
                        Some(log.touchpoints.iter().position(|t| t == g).ok_or_else(|| {
                            DataFusionError::Plan(format!(
                                "dropoffs('{g}'): no event has touchpoint `{g}`"
                            ))
                        })? as u32)
                    }
                    None => None,
                };
                let dropoffs = fold(log, scope, || Dropoffs::new(goal));
                let report = DropoffsReport::new(&dropoffs, names, 0);
                dropoffs_batch(&report, goal.is_some())
            }
        }
    }
}

/// `funnel(steps, [window, [modes, [order]]])`: `steps` is a configured journey's name or
/// touchpoints separated by commas; the rest override the journey's fields.
fn funnel_spec(journeys: &Journeys, args: &[String]) -> Result<(JourneyConfig, FunnelSpec)> {
    let usage = "funnel('pv,cart,buy' or a configured journey, ['1d', ['strict_order', ['ordered|strict|unordered']]])";
    let Some(first) = args.first() else {
        return plan_err!("give the funnel: {usage}");
    };
    if args.len() > 4 {
        return plan_err!("too many arguments: {usage}");
    }
    let config = &journeys.config;
    let mut journey = match config.journeys.get(first) {
        Some(j) => j.clone(),
        None if first.contains(',') || journeys.log.touchpoints.iter().any(|t| t == first) => {
            JourneyConfig::of_steps(first.split(',').map(|st| st.trim().to_string()).collect())
        }
        None => {
            let names: Vec<&str> = config.journeys.keys().map(String::as_str).collect();
            return plan_err!(
                "funnel('{first}'): not a configured journey ({}) nor a touchpoint; {usage}",
                names.join(", ")
            );
        }
    };
    if let Some(w) = args.get(1) {
        // A bare number is seconds, as in window_funnel.
        let span = match w.parse::<i64>() {
            Ok(secs) => secs.checked_mul(1_000_000).map(Span).ok_or_else(|| {
                DataFusionError::Plan(format!("funnel window {w} seconds is too long"))
            })?,
            Err(_) => w.parse::<Span>().map_err(|e| {
                DataFusionError::Plan(format!("funnel window '{w}': {e}; like '1d' or 86400"))
            })?,
        };
        if span.is_zero() {
            return plan_err!("the funnel window must be longer than 0, like '1d'");
        }
        journey.window = span;
    }
    if let Some(m) = args.get(2) {
        let modes = Modes::parse(m).map_err(|e| DataFusionError::Plan(format!("funnel: {e}")))?;
        journey.mode = modes_list(modes);
    }
    if let Some(o) = args.get(3) {
        journey.order = match o.as_str() {
            "ordered" => StepOrder::Ordered,
            "strict" => StepOrder::Strict,
            "unordered" => StepOrder::Unordered,
            other => return plan_err!("funnel order '{other}': use ordered, strict or unordered"),
        };
    }
    journey
        .validate()
        .map_err(|(field, message)| DataFusionError::Plan(format!("funnel: {field} {message}")))?;
    let log = &journeys.log;
    let as_of = log.last_time().unwrap_or(0);
    let (spec, _unknown) = FunnelSpec::resolve(&journey, &log.touchpoints, as_of)
        .map_err(|e| DataFusionError::Plan(format!("funnel: {e}")))?;
    Ok((journey, spec))
}

fn modes_list(m: Modes) -> Vec<FunnelMode> {
    use FunnelMode::*;
    [
        (m.strict_deduplication, StrictDeduplication),
        (m.strict_order, StrictOrder),
        (m.strict_increase, StrictIncrease),
        (m.strict_once, StrictOnce),
        (m.allow_reentry, AllowReentry),
    ]
    .into_iter()
    .filter_map(|(on, mode)| on.then_some(mode))
    .collect()
}

fn schema(fields: Vec<Field>) -> Arc<Schema> {
    Arc::new(Schema::new(fields))
}

fn text(v: impl Iterator<Item = String>) -> ArrayRef {
    // `from_iter_values` needs an exact size hint, which flattened
    // iterators (variant paths) do not give.
    Arc::new(v.map(Some).collect::<StringArray>())
}

fn counts(v: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(v))
}

/// The transitions `trailmap paths --format csv` prints.
fn paths_batch(r: &PathsReport) -> Result<Arc<dyn TableProvider>> {
    let t = &r.transitions;
    table(RecordBatch::try_new(
        schema(vec![
            Field::new("from", DataType::Utf8, false),
            Field::new("to", DataType::Utf8, false),
            Field::new("count", DataType::UInt64, false),
            Field::new("mean_seconds", DataType::Float64, true),
            Field::new("median_seconds", DataType::Float64, true),
            Field::new("p90_seconds", DataType::Float64, true),
        ]),
        vec![
            text(t.iter().map(|t| t.from.clone())),
            text(t.iter().map(|t| t.to.clone())),
            counts(t.iter().map(|t| t.count)),
            seconds(t.iter().map(|t| t.duration.mean_seconds)),
            seconds(t.iter().map(|t| t.duration.median_seconds)),
            seconds(t.iter().map(|t| t.duration.p90_seconds)),
        ],
    )?)
}

/// The variants `trailmap paths` lists.
fn variants_batch(r: &PathsReport) -> Result<Arc<dyn TableProvider>> {
    let v = &r.variants;
    let item = Arc::new(Field::new("item", DataType::Utf8, false));
    let path = ListArray::try_new(
        item.clone(),
        OffsetBuffer::from_lengths(v.iter().map(|v| v.path.len())),
        text(v.iter().flat_map(|v| v.path.iter().cloned())),
        None,
    )?;
    table(RecordBatch::try_new(
        schema(vec![
            Field::new("path", DataType::List(item), false),
            Field::new("count", DataType::UInt64, false),
            Field::new("share", DataType::Float64, false),
        ]),
        vec![
            Arc::new(path),
            counts(v.iter().map(|v| v.count)),
            Arc::new(Float64Array::from_iter_values(v.iter().map(|v| v.share))),
        ],
    )?)
}

/// The steps `trailmap funnel --format csv` prints.
fn funnel_batch(r: &FunnelReport) -> Result<Arc<dyn TableProvider>> {
    let s = &r.steps;
    table(RecordBatch::try_new(
        schema(vec![
            Field::new("step", DataType::UInt32, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("reached", DataType::UInt64, false),
            Field::new("conversion_from_previous", DataType::Float64, false),
            Field::new("conversion_from_first", DataType::Float64, false),
            Field::new("dropped", DataType::UInt64, false),
            Field::new("maturing", DataType::UInt64, false),
            Field::new("median_seconds_from_previous", DataType::Float64, true),
            Field::new("p90_seconds_from_previous", DataType::Float64, true),
        ]),
        vec![
            Arc::new(UInt32Array::from_iter_values(1..=s.len() as u32)),
            text(s.iter().map(|s| s.name.clone())),
            counts(s.iter().map(|s| s.reached)),
            Arc::new(Float64Array::from_iter_values(
                s.iter().map(|s| s.conversion_from_previous),
            )),
            Arc::new(Float64Array::from_iter_values(
                s.iter().map(|s| s.conversion_from_first),
            )),
            counts(s.iter().map(|s| s.dropped)),
            counts(s.iter().map(|s| s.maturing)),
            seconds(s.iter().map(|s| s.time_from_previous.median_seconds)),
            seconds(s.iter().map(|s| s.time_from_previous.p90_seconds)),
        ],
    )?)
}

/// The per-touchpoint rows `trailmap dropoffs --format csv` prints.
fn dropoffs_batch(r: &DropoffsReport, goal: bool) -> Result<Arc<dyn TableProvider>> {
    let t = &r.touchpoints;
    let mut fields = vec![
        Field::new("touchpoint", DataType::Utf8, false),
        Field::new("journeys", DataType::UInt64, false),
        Field::new("exits", DataType::UInt64, false),
        Field::new("exit_rate", DataType::Float64, false),
    ];
    let mut columns = vec![
        text(t.iter().map(|t| t.touchpoint.clone())),
        counts(t.iter().map(|t| t.journeys)),
        counts(t.iter().map(|t| t.exits)),
        Arc::new(Float64Array::from_iter_values(
            t.iter().map(|t| t.exit_rate),
        )) as ArrayRef,
    ];
    if goal {
        fields.push(Field::new("abandoned", DataType::UInt64, false));
        fields.push(Field::new("abandon_rate", DataType::Float64, false));
        columns.push(counts(t.iter().map(|t| t.abandoned.unwrap_or(0))));
        columns.push(Arc::new(Float64Array::from_iter_values(
            t.iter().map(|t| t.abandon_rate.unwrap_or(0.0)),
        )));
    }
    table(RecordBatch::try_new(schema(fields), columns)?)
}
