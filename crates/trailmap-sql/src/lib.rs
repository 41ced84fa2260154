//! Analyst SQL over journeys: DataFusion with trailmap's tables and ClickHouse-style
//! behavioural aggregates.
//!
//! Layout:
//! - [`window_funnel`]: `window_funnel(window_seconds, 'modes', ts, cond1, …, condN)`, an
//!   aggregate with a `GroupsAccumulator` fast path and a mergeable state; its level logic
//!   is `trailmap-mine`'s, shared with `trailmap funnel`.
//! - [`tables`]: the `events` table of a stitched [`JourneyLog`](trailmap_sessionize::JourneyLog).
//! - [`Analyst`]: a read-only session: DDL, DML and statements that write (`COPY`,
//!   `CREATE`, `INSERT`, `DROP`, `SET`) are refused with a message that says so.

pub mod tables;
pub mod window_funnel;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::Result;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::logical_expr::AggregateUDF;

/// A DataFusion session for analysts: trailmap's functions registered, writes refused.
pub struct Analyst {
    pub ctx: SessionContext,
}

impl Default for Analyst {
    fn default() -> Self {
        Self::new()
    }
}

impl Analyst {
    pub fn new() -> Self {
        let ctx = SessionContext::new();
        ctx.register_udaf(AggregateUDF::from(
            window_funnel::WindowFunnelUdaf::default(),
        ));
        Analyst { ctx }
    }

    /// Runs one read-only query and collects its result.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        self.ctx
            .sql_with_options(sql, read_only)
            .await?
            .collect()
            .await
    }
}
