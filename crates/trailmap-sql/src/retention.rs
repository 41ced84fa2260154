//! `retention(cond1, …, condN)`: ClickHouse `retention` as a DataFusion aggregate. Per
//! group, an array of N 0/1 values: `r[0]` = cond1 held on some row, `r[i]` = cond1 held on
//! some row and cond(i+1) on some row (`trailmap_mine::sequence::Retention`).
//!
//! The state is one bitmask per group (the OR of the rows' condition masks), so partial
//! states merge by OR.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListArray, UInt32Array};
use arrow::datatypes::{DataType, Field, FieldRef, UInt8Type, UInt32Type};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use std::sync::Arc;
use trailmap_mine::sequence::Retention;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RetentionUdaf {
    signature: Signature,
}

impl Default for RetentionUdaf {
    fn default() -> Self {
        RetentionUdaf {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

fn item() -> Arc<Field> {
    Arc::new(Field::new_list_field(DataType::UInt8, false))
}

fn retention(conditions: usize) -> Result<Retention> {
    Retention::new(conditions).map_err(DataFusionError::Plan)
}

/// Each row's condition mask (NULL is false), passed to `add` with the row index.
fn masks(
    values: &[ArrayRef],
    filter: Option<&BooleanArray>,
    mut add: impl FnMut(usize, u32),
) -> Result<()> {
    let conditions: Vec<&BooleanArray> = values
        .iter()
        .map(|c| {
            c.as_boolean_opt().ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "retention: conditions must be boolean, not {}",
                    c.data_type()
                ))
            })
        })
        .collect::<Result<_>>()?;
    let rows = values.first().map_or(0, |v| v.len());
    for row in 0..rows {
        if filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
            continue;
        }
        let mut mask = 0u32;
        for (k, c) in conditions.iter().enumerate() {
            if c.is_valid(row) && c.value(row) {
                mask |= 1 << k;
            }
        }
        add(row, mask);
    }
    Ok(())
}

fn answers(r: &Retention, met: &[u32]) -> ArrayRef {
    let list = ListArray::from_iter_primitive::<UInt8Type, _, _>(
        met.iter().map(|&m| Some(r.values(m).map(Some))),
    );
    // from_iter_primitive makes nullable items; the declared type has none.
    let (_, offsets, values, nulls) = list.into_parts();
    Arc::new(ListArray::new(item(), offsets, values, nulls))
}

impl AggregateUDFImpl for RetentionUdaf {
    fn name(&self) -> &str {
        "retention"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        retention(args.len())?;
        if let Some(t) = args.iter().find(|t| **t != DataType::Boolean) {
            return plan_err!("retention: conditions must be boolean, not {t}");
        }
        Ok(DataType::List(item()))
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(One {
            retention: retention(args.exprs.len())?,
            met: 0,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[met]", args.name),
            DataType::UInt32,
            false,
        ))])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Many {
            retention: retention(args.exprs.len())?,
            met: Vec::new(),
        }))
    }
}

#[derive(Debug)]
struct One {
    retention: Retention,
    met: u32,
}

impl Accumulator for One {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let met = &mut self.met;
        masks(values, None, |_, m| *met |= m)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(state) = states[0].as_primitive_opt::<UInt32Type>() else {
            return plan_err!("retention: the partial state is not a mask");
        };
        self.met |= state.iter().flatten().fold(0, |a, b| a | b);
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::UInt32(Some(self.met))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        ScalarValue::try_from_array(&answers(&self.retention, &[self.met]), 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

#[derive(Debug)]
struct Many {
    retention: Retention,
    met: Vec<u32>,
}

impl GroupsAccumulator for Many {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.met.resize(total_num_groups, 0);
        let met = &mut self.met;
        masks(values, opt_filter, |row, m| met[group_indices[row]] |= m)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.met.resize(total_num_groups, 0);
        let Some(state) = values[0].as_primitive_opt::<UInt32Type>() else {
            return plan_err!("retention: the partial state is not a mask");
        };
        for (row, &g) in group_indices.iter().enumerate() {
            if state.is_valid(row) {
                self.met[g] |= state.value(row);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(answers(
            &self.retention,
            &emit_to.take_needed(&mut self.met),
        ))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![Arc::new(UInt32Array::from(
            emit_to.take_needed(&mut self.met),
        ))])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut rows = vec![0u32; values.first().map_or(0, |v| v.len())];
        masks(values, opt_filter, |row, m| rows[row] = m)?;
        Ok(vec![Arc::new(UInt32Array::from(rows))])
    }

    fn size(&self) -> usize {
        self.met.capacity() * 4
    }
}
