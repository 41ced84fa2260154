//! `window_funnel(window_seconds, 'modes', ts, cond1, …, condN)`: ClickHouse `windowFunnel`
//! as a DataFusion aggregate.
//!
//! The level logic is `trailmap_mine::funnel::WindowFunnel`, the same code `trailmap
//! funnel` runs, so SQL and CLI cannot disagree. Each group keeps its events as
//! (time in µs, bitmask of the conditions met); that list is also the partial state, which
//! merges by concatenation. Events meeting no condition are kept only under
//! `strict_order`, where they break a chain.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, UInt8Array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type, TimeUnit, UInt32Type};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use std::sync::Arc;
use trailmap_mine::funnel::{Modes, WindowFunnel};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowFunnelUdaf {
    signature: Signature,
}

impl Default for WindowFunnelUdaf {
    fn default() -> Self {
        WindowFunnelUdaf {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// What a call fixed: the window (µs), modes, number of conditions.
fn parameters(args: &AccumulatorArgs) -> Result<WindowFunnel> {
    let literal = |i: usize, what: &str| -> Result<ScalarValue> {
        args.exprs
            .get(i)
            .and_then(|e| e.downcast_ref::<Literal>())
            .map(|l| l.value().clone())
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "window_funnel: the {what} must be a constant, like \
                     window_funnel(86400, 'strict_order', ts, event = 'a', event = 'b')"
                ))
            })
    };
    let window = match literal(0, "window (seconds)")? {
        ScalarValue::Int64(Some(w)) => w,
        ScalarValue::Int32(Some(w)) => i64::from(w),
        ScalarValue::UInt64(Some(w)) => i64::try_from(w).unwrap_or(i64::MAX),
        ScalarValue::UInt32(Some(w)) => i64::from(w),
        other => {
            return plan_err!("window_funnel: the window is a whole number of seconds, not {other}");
        }
    };
    let modes = match literal(1, "modes")? {
        ScalarValue::Utf8(Some(m))
        | ScalarValue::LargeUtf8(Some(m))
        | ScalarValue::Utf8View(Some(m)) => m,
        other => {
            return plan_err!(
                "window_funnel: modes are text like 'strict_order,strict_increase' or '', not {other}"
            );
        }
    };
    let modes =
        Modes::parse(&modes).map_err(|e| DataFusionError::Plan(format!("window_funnel: {e}")))?;
    let conditions = args.exprs.len().saturating_sub(3);
    WindowFunnel::new(conditions, window.saturating_mul(1_000_000), modes)
        .map_err(|e| DataFusionError::Plan(format!("window_funnel: {e}")))
}

/// Times as microseconds: timestamps by their unit, dates by day, numbers as seconds (as
/// ClickHouse's DateTime).
fn micros(array: &ArrayRef) -> Result<Int64Array> {
    let to_i64 = |a: &ArrayRef, to: &DataType| -> Result<Int64Array> {
        let cast = cast_with_options(a, to, &CastOptions::default())?;
        let ints = cast_with_options(&cast, &DataType::Int64, &CastOptions::default())?;
        Ok(ints.as_primitive::<Int64Type>().clone())
    };
    match array.data_type() {
        DataType::Timestamp(_, _) => {
            to_i64(array, &DataType::Timestamp(TimeUnit::Microsecond, None))
        }
        DataType::Date32 | DataType::Date64 => {
            let days = to_i64(array, &DataType::Date32)?;
            Ok(days.unary(|d| d.saturating_mul(86_400_000_000)))
        }
        dt if dt.is_integer() => {
            let secs = to_i64(array, &DataType::Int64)?;
            Ok(secs.unary(|s| s.saturating_mul(1_000_000)))
        }
        other => Err(DataFusionError::Plan(format!(
            "window_funnel: the time argument must be a timestamp, date or integer seconds, not {other}"
        ))),
    }
}

/// The (time, mask) events of a batch's rows, with the row's group, passed to `add`.
fn events(
    values: &[ArrayRef],
    strict_order: bool,
    filter: Option<&BooleanArray>,
    mut add: impl FnMut(usize, i64, u32),
) -> Result<()> {
    let ts = micros(&values[2])?;
    let conditions: Vec<&BooleanArray> = values[3..]
        .iter()
        .map(|c| {
            c.as_boolean_opt().ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "window_funnel: conditions must be boolean, not {}",
                    c.data_type()
                ))
            })
        })
        .collect::<Result<_>>()?;
    for row in 0..ts.len() {
        if ts.is_null(row) || filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
            continue;
        }
        let mut mask = 0u32;
        for (k, c) in conditions.iter().enumerate() {
            // NULL is false, as in ClickHouse.
            if c.is_valid(row) && c.value(row) {
                mask |= 1 << k;
            }
        }
        if mask != 0 || strict_order {
            add(row, ts.value(row), mask);
        }
    }
    Ok(())
}

fn state_fields(name: &str) -> Vec<FieldRef> {
    vec![
        Arc::new(Field::new(
            format!("{name}[ts]"),
            DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))),
            true,
        )),
        Arc::new(Field::new(
            format!("{name}[masks]"),
            DataType::List(Arc::new(Field::new_list_field(DataType::UInt32, true))),
            true,
        )),
    ]
}

/// Events of list states: (group row, time, mask).
fn state_events(states: &[ArrayRef], mut add: impl FnMut(usize, i64, u32)) -> Result<()> {
    let (ts, masks): (&ListArray, &ListArray) =
        match (states[0].as_list_opt(), states[1].as_list_opt()) {
            (Some(t), Some(m)) => (t, m),
            _ => return plan_err!("window_funnel: state is not two lists"),
        };
    for row in 0..ts.len() {
        if ts.is_null(row) {
            continue;
        }
        let (t, m) = (ts.value(row), masks.value(row));
        let (t, m) = (
            t.as_primitive::<Int64Type>(),
            m.as_primitive::<UInt32Type>(),
        );
        for i in 0..t.len().min(m.len()) {
            add(row, t.value(i), m.value(i));
        }
    }
    Ok(())
}

fn lists(groups: &[Vec<(i64, u32)>]) -> Vec<ArrayRef> {
    let ts = ListArray::from_iter_primitive::<Int64Type, _, _>(
        groups.iter().map(|g| Some(g.iter().map(|e| Some(e.0)))),
    );
    let masks = ListArray::from_iter_primitive::<UInt32Type, _, _>(
        groups.iter().map(|g| Some(g.iter().map(|e| Some(e.1)))),
    );
    vec![Arc::new(ts), Arc::new(masks)]
}

impl AggregateUDFImpl for WindowFunnelUdaf {
    fn name(&self) -> &str {
        "window_funnel"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args.len() < 4 {
            return plan_err!(
                "window_funnel(window_seconds, 'modes', ts, cond1, …, condN) takes at least one condition"
            );
        }
        if args.len() > 3 + 32 {
            return plan_err!(
                "window_funnel takes at most 32 conditions, not {}",
                args.len() - 3
            );
        }
        Ok(DataType::UInt8)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(FunnelAccumulator {
            funnel: parameters(&args)?,
            events: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(state_fields(args.name))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(FunnelGroups {
            funnel: parameters(&args)?,
            groups: Vec::new(),
        }))
    }
}

/// One group's events.
#[derive(Debug)]
struct FunnelAccumulator {
    funnel: WindowFunnel,
    events: Vec<(i64, u32)>,
}

impl Accumulator for FunnelAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let strict = self.funnel.modes().strict_order;
        let events = &mut self.events;
        crate::window_funnel::events(values, strict, None, |_, t, m| events.push((t, m)))
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let events = &mut self.events;
        state_events(states, |_, t, m| events.push((t, m)))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let lists = lists(std::slice::from_ref(&self.events));
        Ok(vec![
            ScalarValue::List(Arc::new(lists[0].as_list::<i32>().clone())),
            ScalarValue::List(Arc::new(lists[1].as_list::<i32>().clone())),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::UInt8(Some(
            self.funnel.level(&mut self.events),
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.events.capacity() * 16
    }
}

/// Every group's events, by group index: DataFusion's fast path for GROUP BY.
#[derive(Debug)]
struct FunnelGroups {
    funnel: WindowFunnel,
    groups: Vec<Vec<(i64, u32)>>,
}

impl GroupsAccumulator for FunnelGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let groups = &mut self.groups;
        events(
            values,
            self.funnel.modes().strict_order,
            opt_filter,
            |row, t, m| groups[group_indices[row]].push((t, m)),
        )
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let groups = &mut self.groups;
        state_events(values, |row, t, m| groups[group_indices[row]].push((t, m)))
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = emit_to.take_needed(&mut self.groups);
        let levels: UInt8Array = groups
            .into_iter()
            .map(|mut g| Some(self.funnel.level(&mut g)))
            .collect();
        Ok(Arc::new(levels))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(lists(&emit_to.take_needed(&mut self.groups)))
    }

    /// Rows straight to partial states (DataFusion skips partial aggregation when groups are
    /// nearly unique): each row is a state of zero or one event.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut rows: Vec<Vec<(i64, u32)>> = vec![Vec::new(); values[2].len()];
        events(
            values,
            self.funnel.modes().strict_order,
            opt_filter,
            |row, t, m| rows[row].push((t, m)),
        )?;
        Ok(lists(&rows))
    }

    fn size(&self) -> usize {
        self.groups.capacity() * 24 + self.groups.iter().map(|g| g.capacity() * 16).sum::<usize>()
    }
}
