//! `window_funnel(window_seconds, 'modes', ts, cond1, …, condN)`: ClickHouse `windowFunnel`
//! as a DataFusion aggregate.
//!
//! The level logic is `trailmap_mine::funnel::WindowFunnel`, the same code `trailmap
//! funnel` runs, so SQL and CLI cannot disagree. Events meeting no condition are kept only
//! under `strict_order`, where they break a chain.

use crate::events::{EventFunction, EventsUdaf, Grouped, text_parameter};
use arrow::array::{ArrayRef, UInt8Array};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use std::sync::Arc;
use trailmap_mine::funnel::{Modes, WindowFunnel};

/// The aggregate to register.
pub type WindowFunnelUdaf = EventsUdaf<WindowFunnelFn>;

#[derive(Debug)]
pub struct WindowFunnelFn(WindowFunnel);

impl EventFunction for WindowFunnelFn {
    const NAME: &'static str = "window_funnel";
    const USAGE: &'static str =
        "window_funnel(86400, 'strict_order', ts, event = 'a', event = 'b')";
    const PARAMETERS: usize = 2;

    fn new(parameters: &[ScalarValue], conditions: usize) -> Result<Self> {
        let window = match &parameters[0] {
            ScalarValue::Int64(Some(w)) => *w,
            ScalarValue::Int32(Some(w)) => i64::from(*w),
            ScalarValue::UInt64(Some(w)) => i64::try_from(*w).unwrap_or(i64::MAX),
            ScalarValue::UInt32(Some(w)) => i64::from(*w),
            other => {
                return plan_err!(
                    "window_funnel: the window is a whole number of seconds, not {other}"
                );
            }
        };
        let modes = text_parameter(
            Self::NAME,
            "modes ('strict_order,strict_increase' or '')",
            &parameters[1],
        )?;
        let modes = Modes::parse(&modes)
            .map_err(|e| DataFusionError::Plan(format!("window_funnel: {e}")))?;
        WindowFunnel::new(conditions, window.saturating_mul(1_000_000), modes)
            .map(WindowFunnelFn)
            .map_err(|e| DataFusionError::Plan(format!("window_funnel: {e}")))
    }

    fn return_type() -> DataType {
        DataType::UInt8
    }

    fn keeps_unmatched(&self) -> bool {
        self.0.modes().strict_order
    }

    fn evaluate(&mut self, mut groups: Grouped) -> Result<ArrayRef> {
        let levels: UInt8Array = groups.each_mut().map(|g| Some(self.0.level(g))).collect();
        Ok(Arc::new(levels))
    }
}
