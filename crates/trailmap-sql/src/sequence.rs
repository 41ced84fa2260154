//! `sequence_match(pattern, ts, cond1, …)` and `sequence_count(pattern, ts, cond1, …)`:
//! ClickHouse `sequenceMatch` / `sequenceCount` as DataFusion aggregates, over
//! `trailmap_mine::sequence` (its module doc gives the exact semantics and ClickHouse's
//! quirks).
//!
//! Ties: ClickHouse orders events with equal timestamps by arrival, which a parallel
//! aggregation does not have. Here equal timestamps are taken in condition order (events
//! meeting condition 1 first), which is ClickHouse's answer when rows arrive in that order,
//! and the same answer on every run.

use crate::events::{EventFunction, EventsUdaf, Grouped, text_parameter};
use arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use std::sync::Arc;
use trailmap_mine::sequence::SequencePattern;

pub type SequenceMatchUdaf = EventsUdaf<SequenceMatchFn>;
pub type SequenceCountUdaf = EventsUdaf<SequenceCountFn>;

fn pattern(name: &str, parameters: &[ScalarValue], conditions: usize) -> Result<SequencePattern> {
    let text = text_parameter(name, "pattern (like '(?1).*(?2)')", &parameters[0])?;
    SequencePattern::parse(&text, conditions)
        .map_err(|e| DataFusionError::Plan(format!("{name}('{text}'): {e}")))
}

/// Events in a fixed order: time, then condition bits.
fn ordered(events: &mut [(i64, u32)]) {
    events.sort_unstable();
}

fn too_slow(name: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!(
        "{name}: {e}; narrow the groups (fewer events per group) or the pattern"
    ))
}

#[derive(Debug)]
pub struct SequenceMatchFn(SequencePattern);

impl EventFunction for SequenceMatchFn {
    const NAME: &'static str = "sequence_match";
    const USAGE: &'static str =
        "sequence_match('(?1).*(?t<=3600)(?2)', ts, event = 'a', event = 'b')";
    const PARAMETERS: usize = 1;

    fn new(parameters: &[ScalarValue], conditions: usize) -> Result<Self> {
        pattern(Self::NAME, parameters, conditions).map(SequenceMatchFn)
    }

    fn return_type() -> DataType {
        DataType::Boolean
    }

    fn keeps_unmatched(&self) -> bool {
        false
    }

    fn evaluate(&mut self, mut groups: Grouped) -> Result<ArrayRef> {
        let mut out = Vec::with_capacity(groups.len());
        for g in groups.each_mut() {
            ordered(g);
            out.push(Some(
                self.0.matches(g).map_err(|e| too_slow(Self::NAME, e))?,
            ));
        }
        Ok(Arc::new(BooleanArray::from(out)))
    }
}

#[derive(Debug)]
pub struct SequenceCountFn(SequencePattern);

impl EventFunction for SequenceCountFn {
    const NAME: &'static str = "sequence_count";
    const USAGE: &'static str = "sequence_count('(?1)(?2)', ts, event = 'a', event = 'b')";
    const PARAMETERS: usize = 1;

    fn new(parameters: &[ScalarValue], conditions: usize) -> Result<Self> {
        pattern(Self::NAME, parameters, conditions).map(SequenceCountFn)
    }

    fn return_type() -> DataType {
        DataType::UInt64
    }

    fn keeps_unmatched(&self) -> bool {
        false
    }

    fn evaluate(&mut self, mut groups: Grouped) -> Result<ArrayRef> {
        let mut out = Vec::with_capacity(groups.len());
        for g in groups.each_mut() {
            ordered(g);
            out.push(self.0.count(g).map_err(|e| too_slow(Self::NAME, e))?);
        }
        Ok(Arc::new(UInt64Array::from(out)))
    }
}
