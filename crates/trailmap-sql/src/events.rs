//! What the behavioural aggregates share: each group collects its events as (time in µs,
//! bitmask of the conditions met) and a [`EventFunction`] turns the list into the answer.
//!
//! The list is also the partial state, so states merge by concatenation in any order and
//! the functions sort (by time, then as ClickHouse does) before they look. One generic
//! `AggregateUDFImpl` ([`EventsUdaf`]) carries the argument checks, the `GroupsAccumulator`
//! fast path and `convert_to_state` for every function built this way.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, UInt32Array};
use arrow::buffer::{BooleanBuffer, OffsetBuffer};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type, TimeUnit, UInt32Type};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
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
    /// The answers for groups' events (each group's unsorted).
    fn evaluate(&mut self, groups: Grouped) -> Result<ArrayRef>;
}

/// Events of consecutive groups, flat: group `g`'s are `events[offsets[g]..offsets[g + 1]]`.
pub struct Grouped {
    events: Vec<(i64, u32)>,
    offsets: Vec<usize>,
}

impl Grouped {
    /// Groups `events[offsets[g]..offsets[g + 1]]`; `offsets` starts at 0 and ends at
    /// `events.len()`.
    pub(crate) fn new(events: Vec<(i64, u32)>, offsets: Vec<usize>) -> Grouped {
        Grouped { events, offsets }
    }

    fn one(events: Vec<(i64, u32)>) -> Grouped {
        let offsets = vec![0, events.len()];
        Grouped { events, offsets }
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each group's events, in group order.
    pub fn each_mut(&mut self) -> impl Iterator<Item = &mut [(i64, u32)]> {
        let mut rest = self.events.as_mut_slice();
        self.offsets.windows(2).map(move |w| {
            let (group, after) = std::mem::take(&mut rest).split_at_mut(w[1] - w[0]);
            rest = after;
            group
        })
    }

    /// As the partial state: a list of times and a list of masks per group.
    fn into_lists(self) -> Result<Vec<ArrayRef>> {
        if i32::try_from(self.events.len()).is_err() {
            return plan_err!(
                "{} events in one state: more than a list holds; group more finely",
                self.events.len()
            );
        }
        let lengths = self.offsets.windows(2).map(|w| w[1] - w[0]);
        let offsets = OffsetBuffer::<i32>::from_lengths(lengths);
        let ts = Int64Array::from_iter_values(self.events.iter().map(|e| e.0));
        let masks = UInt32Array::from_iter_values(self.events.iter().map(|e| e.1));
        Ok(vec![
            Arc::new(ListArray::try_new(
                Arc::new(Field::new_list_field(DataType::Int64, true)),
                offsets.clone(),
                Arc::new(ts),
                None,
            )?),
            Arc::new(ListArray::try_new(
                Arc::new(Field::new_list_field(DataType::UInt32, true)),
                offsets,
                Arc::new(masks),
                None,
            )?),
        ])
    }
}

/// The constant arguments of a call.
fn parameters<F: EventFunction>(args: &AccumulatorArgs) -> Result<F> {
    function_of(args.exprs)
}

/// The function a call with arguments `exprs` computes (its constant arguments read).
fn function_of<F: EventFunction>(exprs: &[Arc<dyn PhysicalExpr>]) -> Result<F> {
    let mut values = Vec::with_capacity(F::PARAMETERS);
    for i in 0..F::PARAMETERS {
        let value = exprs
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
    let conditions = exprs.len().saturating_sub(F::PARAMETERS + 1);
    F::new(&values, conditions)
}

/// A behavioural function with its constant arguments read, behind a pointer: what a scan
/// that computes it over its own events holds ([`crate::streamed`]).
pub(crate) trait AnyEventFunction: Send {
    /// How many constant arguments come before the time column.
    fn parameters(&self) -> usize;
    fn keeps_unmatched(&self) -> bool;
    fn evaluate(&mut self, groups: Grouped) -> Result<ArrayRef>;
}

impl<F: EventFunction> AnyEventFunction for F {
    fn parameters(&self) -> usize {
        F::PARAMETERS
    }

    fn keeps_unmatched(&self) -> bool {
        EventFunction::keeps_unmatched(self)
    }

    fn evaluate(&mut self, groups: Grouped) -> Result<ArrayRef> {
        EventFunction::evaluate(self, groups)
    }
}

/// The function behind an aggregate built here ([`EventsUdaf`]) called with `exprs`;
/// `None` for any other aggregate, or arguments it refuses.
pub(crate) fn any_event_function(
    udaf: &datafusion::logical_expr::AggregateUDF,
    exprs: &[Arc<dyn PhysicalExpr>],
) -> Option<Box<dyn AnyEventFunction>> {
    fn of<F: EventFunction>(
        udaf: &datafusion::logical_expr::AggregateUDF,
        exprs: &[Arc<dyn PhysicalExpr>],
    ) -> Option<Box<dyn AnyEventFunction>> {
        udaf.inner().downcast_ref::<EventsUdaf<F>>()?;
        let f: F = function_of(exprs).ok()?;
        Some(Box::new(f))
    }
    use crate::sequence::{SequenceCountFn, SequenceMatchFn};
    use crate::window_funnel::WindowFunnelFn;
    of::<WindowFunnelFn>(udaf, exprs)
        .or_else(|| of::<SequenceMatchFn>(udaf, exprs))
        .or_else(|| of::<SequenceCountFn>(udaf, exprs))
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
    add: impl FnMut(usize, i64, u32),
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
    each_event(&ts, &conditions, filter, f.keeps_unmatched(), add);
    Ok(())
}

/// Calls `add(row, time, conditions met)` for each row that is an event: a valid time,
/// through the filter, and a condition met (or any row, with `keep_all`).
fn each_event(
    ts: &Int64Array,
    conditions: &[&BooleanArray],
    filter: Option<&BooleanArray>,
    keep_all: bool,
    mut add: impl FnMut(usize, i64, u32),
) {
    let n = ts.len();
    // Word-wise over the bitmaps, 64 rows at a time: a row is read only when it can be an
    // event (a valid time, through the filter, and some condition true unless unmatched
    // rows count), so a batch costs a few operations per 64 rows plus its events.
    let mut allowed = BooleanBuffer::new_set(n);
    if let Some(nulls) = ts.nulls() {
        allowed = &allowed & nulls.inner();
    }
    if let Some(filter) = filter {
        allowed = &allowed & filter.values();
        if let Some(nulls) = filter.nulls() {
            allowed = &allowed & nulls.inner();
        }
    }
    // NULL is false, as in ClickHouse.
    let trues: Vec<BooleanBuffer> = conditions
        .iter()
        .map(|c| match c.nulls() {
            Some(nulls) => c.values() & nulls.inner(),
            None => c.values().clone(),
        })
        .collect();
    let chunks: Vec<_> = trues.iter().map(BooleanBuffer::bit_chunks).collect();
    let mut words: Vec<_> = chunks.iter().map(|c| c.iter_padded()).collect();
    let mut met = vec![0u64; words.len()];
    let times = ts.values();
    for (chunk, allowed) in allowed.bit_chunks().iter_padded().enumerate() {
        let mut any = 0;
        for (word, met) in words.iter_mut().zip(met.iter_mut()) {
            *met = word.next().unwrap_or(0);
            any |= *met;
        }
        let mut rows = if keep_all { allowed } else { allowed & any };
        while rows != 0 {
            let bit = rows.trailing_zeros();
            rows &= rows - 1;
            let mask = met
                .iter()
                .enumerate()
                .fold(0u32, |m, (k, w)| m | (((w >> bit) & 1) as u32) << k);
            let row = chunk * 64 + bit as usize;
            add(row, times[row], mask);
        }
    }
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
            events: Vec::new(),
            groups: 0,
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
        let lists = Grouped::one(self.events.clone()).into_lists()?;
        Ok(vec![
            ScalarValue::List(Arc::new(lists[0].as_list::<i32>().clone())),
            ScalarValue::List(Arc::new(lists[1].as_list::<i32>().clone())),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        // Window frames call this once per row: the events stay.
        let answer = self.function.evaluate(Grouped::one(self.events.clone()))?;
        ScalarValue::try_from_array(&answer, 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.events.capacity() * 16
    }
}

/// Every group's events: DataFusion's fast path for GROUP BY.
///
/// Events are appended flat, each with its group, and sorted into groups (a counting sort
/// on the dense group indices) only when emitted: no vector per group to grow, which with a
/// million customers cost more than the functions themselves.
#[derive(Debug)]
struct Groups<F> {
    function: F,
    /// The events not emitted yet, in arrival order.
    events: Vec<GroupEvent>,
    /// Groups DataFusion has numbered and not taken yet (some may have no events).
    groups: usize,
}

#[derive(Clone, Copy, Debug)]
struct GroupEvent {
    ts: i64,
    mask: u32,
    group: u32,
}

impl<F> Groups<F> {
    fn grow(&mut self, total_num_groups: usize) -> Result<()> {
        if total_num_groups > u32::MAX as usize {
            return plan_err!(
                "more than {} groups in one aggregation; group more coarsely",
                u32::MAX
            );
        }
        self.groups = self.groups.max(total_num_groups);
        Ok(())
    }

    /// Takes the groups to emit, renumbering those that stay.
    fn take(&mut self, emit_to: EmitTo) -> Grouped {
        let n = match emit_to {
            EmitTo::All => self.groups,
            EmitTo::First(n) => n.min(self.groups),
        };
        let mut offsets = vec![0usize; n + 1];
        for e in &self.events {
            if (e.group as usize) < n {
                offsets[e.group as usize + 1] += 1;
            }
        }
        for g in 0..n {
            offsets[g + 1] += offsets[g];
        }
        let mut events = vec![(0i64, 0u32); offsets[n]];
        let mut next = offsets.clone();
        let mut kept = 0;
        for i in 0..self.events.len() {
            let e = self.events[i];
            let g = e.group as usize;
            if g < n {
                events[next[g]] = (e.ts, e.mask);
                next[g] += 1;
            } else {
                self.events[kept] = GroupEvent {
                    group: e.group - n as u32,
                    ..e
                };
                kept += 1;
            }
        }
        self.events.truncate(kept);
        if kept == 0 {
            self.events = Vec::new();
        }
        self.groups -= n;
        Grouped { events, offsets }
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
        self.grow(total_num_groups)?;
        let list = &mut self.events;
        events(&self.function, values, opt_filter, |row, ts, mask| {
            // Below `total_num_groups`, checked to fit.
            let group = group_indices[row] as u32;
            list.push(GroupEvent { ts, mask, group })
        })
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups)?;
        let list = &mut self.events;
        state_events(F::NAME, values, |row, ts, mask| {
            let group = group_indices[row] as u32;
            list.push(GroupEvent { ts, mask, group })
        })
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = self.take(emit_to);
        self.function.evaluate(groups)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.take(emit_to).into_lists()
    }

    /// Rows straight to partial states (DataFusion skips partial aggregation when groups are
    /// nearly unique): each row is a state of zero or one event.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let rows = values[F::PARAMETERS].len();
        let mut offsets = vec![0usize; rows + 1];
        let mut list = Vec::new();
        events(&self.function, values, opt_filter, |row, t, m| {
            list.push((t, m));
            offsets[row + 1] = 1;
        })?;
        for r in 0..rows {
            offsets[r + 1] += offsets[r];
        }
        Grouped {
            events: list,
            offsets,
        }
        .into_lists()
    }

    fn size(&self) -> usize {
        self.events.capacity() * std::mem::size_of::<GroupEvent>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The word-wise walk finds the events a row-by-row look finds: NULL times and
        /// conditions, a filter with NULLs, sliced arrays (bitmaps not starting at a word).
        #[test]
        fn each_event_equals_a_row_by_row_look(
            rows in prop::collection::vec((prop::option::of(0i64..100), prop::collection::vec(prop::option::weighted(0.9, prop::bool::weighted(0.1)), 3), prop::option::weighted(0.9, any::<bool>())), 0..300),
            skip in 0usize..70,
            filtered in any::<bool>(),
            keep_all in any::<bool>(),
        ) {
            let skip = skip.min(rows.len());
            let ts = Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>()).slice(skip, rows.len() - skip);
            let conditions: Vec<BooleanArray> = (0..3)
                .map(|k| BooleanArray::from(rows.iter().map(|r| r.1[k]).collect::<Vec<_>>()).slice(skip, rows.len() - skip))
                .collect();
            let filter = BooleanArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()).slice(skip, rows.len() - skip);
            let filter = filtered.then_some(&filter);
            let mut expected = Vec::new();
            for row in 0..ts.len() {
                if ts.is_null(row) || filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
                    continue;
                }
                let mut mask = 0u32;
                for (k, c) in conditions.iter().enumerate() {
                    if c.is_valid(row) && c.value(row) {
                        mask |= 1 << k;
                    }
                }
                if mask != 0 || keep_all {
                    expected.push((row, ts.value(row), mask));
                }
            }
            let mut got = Vec::new();
            let conditions: Vec<&BooleanArray> = conditions.iter().collect();
            each_event(&ts, &conditions, filter, keep_all, |row, t, mask| got.push((row, t, mask)));
            prop_assert_eq!(got, expected);
        }
    }

    fn grouped(g: Grouped) -> Vec<Vec<i64>> {
        let mut g = g;
        g.each_mut()
            .map(|events| events.iter().map(|e| e.0).collect())
            .collect()
    }

    #[test]
    fn emitting_the_first_groups_renumbers_the_rest() {
        let mut groups = Groups {
            function: (),
            events: Vec::new(),
            groups: 0,
        };
        groups.grow(4).unwrap();
        for (ts, group) in [(1, 2), (2, 0), (3, 1), (4, 2), (5, 0), (6, 3)] {
            groups.events.push(GroupEvent { ts, mask: 1, group });
        }
        // Groups 0 and 1, each in arrival order.
        assert_eq!(
            grouped(groups.take(EmitTo::First(2))),
            [vec![2, 5], vec![3]]
        );
        // Groups 2 and 3 are now 0 and 1.
        assert_eq!(groups.groups, 2);
        groups.grow(3).unwrap();
        groups.events.push(GroupEvent {
            ts: 7,
            mask: 1,
            group: 0,
        });
        assert_eq!(
            grouped(groups.take(EmitTo::All)),
            [vec![1, 4, 7], vec![6], vec![]]
        );
        assert!(groups.events.is_empty() && groups.groups == 0);
        assert!(groups.grow(u32::MAX as usize + 1).is_err());
    }
}
