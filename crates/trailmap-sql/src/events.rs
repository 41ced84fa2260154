//! What the behavioural aggregates share: each group collects its events as (time in µs,
//! bitmask of the conditions met) and a [`EventFunction`] turns the list into the answer.
//!
//! The list is also the partial state, so states merge by concatenation in any order and
//! the functions sort (by time, then as ClickHouse does) before they look. One generic
//! `AggregateUDFImpl` ([`EventsUdaf`]) carries the argument checks, the `GroupsAccumulator`
//! fast path and `convert_to_state` for every function built this way.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type, TimeUnit, UInt32Type};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

/// Most conditions a function takes (the bitmask's width).
pub const MAX_CONDITIONS: usize = 32;

/// One behavioural function over a group's events.
pub trait EventFunction: Debug + Send + Sync + 'static {
    /// Its SQL name, for messages.
    const NAME: &'static str;
    /// Its call, for messages: `window_funnel(window_seconds, 'modes', ts, cond1, …)`.
    const USAGE: &'static str;
    /// Constant arguments before the time column.
    const PARAMETERS: usize;

    /// Reads the constant arguments; `conditions` is how many follow the time column.
    fn new(parameters: &[ScalarValue], conditions: usize) -> Result<Self>
    where
        Self: Sized;
    fn return_type() -> DataType;
    /// Whether events meeting no condition matter (they are dropped otherwise).
    fn keeps_unmatched(&self) -> bool;
    /// The answers for groups' events (each list unsorted).
    fn evaluate(&mut self, groups: Vec<Vec<(i64, u32)>>) -> Result<ArrayRef>;
}

/// The constant arguments of a call.
fn parameters<F: EventFunction>(args: &AccumulatorArgs) -> Result<F> {
    let mut values = Vec::with_capacity(F::PARAMETERS);
    for i in 0..F::PARAMETERS {
        let value = args
            .exprs
            .get(i)
            .and_then(|e| e.downcast_ref::<Literal>())
            .map(|l| l.value().clone())
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{}: argument {} must be a constant: {}",
                    F::NAME,
                    i + 1,
                    F::USAGE
                ))
            })?;
        values.push(value);
    }
    let conditions = args.exprs.len().saturating_sub(F::PARAMETERS + 1);
    F::new(&values, conditions)
}

/// Text of a constant argument.
pub fn text_parameter(name: &str, what: &str, value: &ScalarValue) -> Result<String> {
    match value {
        ScalarValue::Utf8(Some(m))
        | ScalarValue::LargeUtf8(Some(m))
        | ScalarValue::Utf8View(Some(m)) => Ok(m.clone()),
        other => plan_err!("{name}: the {what} is text in quotes, not {other}"),
    }
}

/// Times as microseconds: timestamps by their unit, dates by day, numbers as seconds (as
/// ClickHouse's DateTime).
fn micros(name: &str, array: &ArrayRef) -> Result<Int64Array> {
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
        other => plan_err!(
            "{name}: the time argument must be a timestamp, date or integer seconds, not {other}"
        ),
    }
}

/// The (time, mask) events of a batch's rows, with the row's index, passed to `add`.
fn events<F: EventFunction>(
    f: &F,
    values: &[ArrayRef],
    filter: Option<&BooleanArray>,
    mut add: impl FnMut(usize, i64, u32),
) -> Result<()> {
    let ts = micros(F::NAME, &values[F::PARAMETERS])?;
    let conditions: Vec<&BooleanArray> = values[F::PARAMETERS + 1..]
        .iter()
        .map(|c| {
            c.as_boolean_opt().ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{}: conditions must be boolean, not {}",
                    F::NAME,
                    c.data_type()
                ))
            })
        })
        .collect::<Result<_>>()?;
    let keep_all = f.keeps_unmatched();
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
        if mask != 0 || keep_all {
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

/// Events of list states: (state row, time, mask).
fn state_events(
    name: &str,
    states: &[ArrayRef],
    mut add: impl FnMut(usize, i64, u32),
) -> Result<()> {
    let (ts, masks): (&ListArray, &ListArray) =
        match (states[0].as_list_opt(), states[1].as_list_opt()) {
            (Some(t), Some(m)) => (t, m),
            _ => return plan_err!("{name}: the partial state is not two lists"),
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

/// A behavioural function as a DataFusion aggregate.
#[derive(Debug)]
pub struct EventsUdaf<F> {
    signature: Signature,
    function: std::marker::PhantomData<fn() -> F>,
}

// By hand: the derives would ask `F` for them, and the function type carries no data.
impl<F> PartialEq for EventsUdaf<F> {
    fn eq(&self, other: &Self) -> bool {
        self.signature == other.signature
    }
}

impl<F> Eq for EventsUdaf<F> {}

impl<F> Hash for EventsUdaf<F> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.signature.hash(state);
    }
}

impl<F> Default for EventsUdaf<F> {
    fn default() -> Self {
        EventsUdaf {
            signature: Signature::variadic_any(Volatility::Immutable),
            function: std::marker::PhantomData,
        }
    }
}

impl<F: EventFunction> AggregateUDFImpl for EventsUdaf<F> {
    fn name(&self) -> &str {
        F::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let conditions = args.len().saturating_sub(F::PARAMETERS + 1);
        if conditions == 0 {
            return plan_err!("{} takes at least one condition: {}", F::NAME, F::USAGE);
        }
        if conditions > MAX_CONDITIONS {
            return plan_err!(
                "{} takes at most {MAX_CONDITIONS} conditions, not {conditions}",
                F::NAME
            );
        }
        Ok(F::return_type())
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(GroupAccumulator {
            function: parameters::<F>(&args)?,
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
        Ok(Box::new(Groups {
            function: parameters::<F>(&args)?,
            groups: Vec::new(),
            capacity: 0,
        }))
    }
}

/// One group's events (aggregates without GROUP BY).
#[derive(Debug)]
struct GroupAccumulator<F> {
    function: F,
    events: Vec<(i64, u32)>,
}

impl<F: EventFunction> Accumulator for GroupAccumulator<F> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let list = &mut self.events;
        events(&self.function, values, None, |_, t, m| list.push((t, m)))
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let list = &mut self.events;
        state_events(F::NAME, states, |_, t, m| list.push((t, m)))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let lists = lists(std::slice::from_ref(&self.events));
        Ok(vec![
            ScalarValue::List(Arc::new(lists[0].as_list::<i32>().clone())),
            ScalarValue::List(Arc::new(lists[1].as_list::<i32>().clone())),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        // Window frames call this once per row: the events stay.
        let answer = self.function.evaluate(vec![self.events.clone()])?;
        ScalarValue::try_from_array(&answer, 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.events.capacity() * 16
    }
}

/// Every group's events, by group index: DataFusion's fast path for GROUP BY.
#[derive(Debug)]
struct Groups<F> {
    function: F,
    groups: Vec<Vec<(i64, u32)>>,
    /// Sum of the groups' capacities, in events, kept as they grow: DataFusion asks for
    /// `size()` after every batch, and summing a million groups each time made GROUP BY
    /// quadratic in the number of customers.
    capacity: usize,
}

/// Appends an event to a group, keeping the capacity total.
#[inline]
fn push_event(groups: &mut [Vec<(i64, u32)>], capacity: &mut usize, g: usize, event: (i64, u32)) {
    let group = &mut groups[g];
    let before = group.capacity();
    group.push(event);
    *capacity += group.capacity() - before;
}

impl<F> Groups<F> {
    /// Takes the groups to emit, taking their events out of the capacity total.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<(i64, u32)>> {
        let taken = emit_to.take_needed(&mut self.groups);
        self.capacity -= taken.iter().map(Vec::capacity).sum::<usize>();
        taken
    }
}

impl<F: EventFunction> GroupsAccumulator for Groups<F> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let (groups, capacity) = (&mut self.groups, &mut self.capacity);
        events(&self.function, values, opt_filter, |row, t, m| {
            push_event(groups, capacity, group_indices[row], (t, m))
        })
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let (groups, capacity) = (&mut self.groups, &mut self.capacity);
        state_events(F::NAME, values, |row, t, m| {
            push_event(groups, capacity, group_indices[row], (t, m))
        })
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = self.take(emit_to);
        self.function.evaluate(groups)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(lists(&self.take(emit_to)))
    }

    /// Rows straight to partial states (DataFusion skips partial aggregation when groups are
    /// nearly unique): each row is a state of zero or one event.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut rows: Vec<Vec<(i64, u32)>> = vec![Vec::new(); values[F::PARAMETERS].len()];
        events(&self.function, values, opt_filter, |row, t, m| {
            rows[row].push((t, m))
        })?;
        Ok(lists(&rows))
    }

    fn size(&self) -> usize {
        self.groups.capacity() * 24 + self.capacity * 16
    }
}
