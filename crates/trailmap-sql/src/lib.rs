//! Analyst SQL over journeys: DataFusion with trailmap's tables and ClickHouse-style
//! behavioural aggregates.
//!
//! Layout:
//! - [`events`]: what the behavioural aggregates share: per group, events as (time,
//!   condition bitmask), a `GroupsAccumulator` and a state that merges by concatenation.
//! - [`window_funnel`]: `window_funnel(window_seconds, 'modes', ts, cond1, …, condN)`, an
//!   aggregate with a `GroupsAccumulator` fast path and a mergeable state; its level logic
//!   is `trailmap-mine`'s, shared with `trailmap funnel`.
//! - [`sequence`]: `sequence_match(pattern, ts, cond…)` and `sequence_count(…)`, ClickHouse's
//!   pattern language over the same events.
//! - [`retention`]: `retention(cond1, …)`, ClickHouse's retention array.
//! - [`tables`]: `events`, `journeys` and `transitions` over a stitched [`JourneyLog`],
//!   built at scan time for the columns a query reads, names as dictionaries.
//! - [`streamed`]: `events` read customer by customer while one query runs, for input
//!   grouped by customer (no journey log).
//! - [`runs`]: GROUP BY customer over those tables by customer runs instead of hashing
//!   (a physical optimizer rule and its operator).
//! - [`results`]: table functions `paths()`, `variants()`, `funnel(…)`, `dropoffs(…)`, the
//!   same aggregates and rows as the CLI commands.
//! - [`live`]: `live_touchpoints`, `live_transitions`, `live_funnel_steps` over the live
//!   pipeline's map, read from a snapshot at each scan.
//! - `stored`: `stored_events`, the events the live pipeline stored, as its checkpoint
//!   names them ([`Analyst::with_store`]).
//! - [`postgres`]: the PostgreSQL wire endpoint (`psql`, BI tools) over an [`Analyst`].
//! - [`Analyst`]: a read-only session: DDL, DML and statements that write (`COPY`,
//!   `CREATE`, `INSERT`, `DROP`, `SET`) are refused with a message that says so.

/// The `ExecutionPlan` methods every leaf operator here writes alike: its name, its
/// properties (a `properties` field), no children, no expressions to show.
macro_rules! leaf_plan {
    ($name:literal) => {
        fn name(&self) -> &str {
            $name
        }

        fn properties(&self) -> &Arc<PlanProperties> {
            &self.properties
        }

        fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
            Vec::new()
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
        ) -> Result<TreeNodeRecursion> {
            Ok(TreeNodeRecursion::Continue)
        }

        fn with_new_children(
            self: Arc<Self>,
            children: Vec<Arc<dyn ExecutionPlan>>,
        ) -> Result<Arc<dyn ExecutionPlan>> {
            if !children.is_empty() {
                return internal_err!("{} is a leaf: it takes no children", $name);
            }
            Ok(self)
        }
    };
}

pub mod events;
pub mod live;
pub mod postgres;
mod results;
pub mod retention;
pub mod runs;
pub mod sequence;
mod stored;
pub mod streamed;
pub mod tables;
pub mod window_funnel;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::AggregateUDF;
use std::sync::Arc;
use std::time::Duration;
use trailmap_model::Config;
use trailmap_model::config::SqlConfig;
use trailmap_sessionize::JourneyLog;

/// The table of the events the live pipeline stored ([`Analyst::with_store`]).
pub const STORED_EVENTS: &str = "stored_events";

/// Stitched journeys to query, with the config that says how (scope, named funnels).
#[derive(Clone)]
pub struct Journeys {
    pub log: Arc<JourneyLog>,
    pub config: Arc<Config>,
}

/// `information_schema` on (`SHOW TABLES`, and what Postgres clients browse), tables in
/// `datafusion.public` as `pg_catalog` expects; batches as large as the journey tables
/// build them.
fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("datafusion", "public")
        .with_batch_size(tables::BATCH)
}

/// What one analyst query may use, so it cannot starve ingest.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longer queries are cancelled.
    pub timeout: Duration,
    /// Bytes the session's sorts, joins and aggregations may hold.
    pub memory: usize,
}

impl Limits {
    pub fn from_config(sql: &SqlConfig) -> Limits {
        Limits {
            timeout: sql.timeout.duration().max(Duration::from_micros(1)),
            memory: usize::try_from(sql.memory_limit.as_u64()).unwrap_or(usize::MAX),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&SqlConfig::default())
    }
}

/// A DataFusion session for analysts: trailmap's functions registered, writes refused,
/// bounded by [`Limits`].
pub struct Analyst {
    pub ctx: SessionContext,
    limits: Limits,
}

impl Default for Analyst {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Analyst {
    pub fn new(limits: Limits) -> Self {
        Self::build(limits, true)
    }

    /// A session that aggregates GROUP BY customer by hashing, as DataFusion does, instead
    /// of by customer runs ([`runs`]): the answers are the same; tests and benchmarks
    /// compare the two.
    pub fn hashing_groups(limits: Limits) -> Self {
        Self::build(limits, false)
    }

    fn build(limits: Limits, runs: bool) -> Self {
        // The pool bounds what operators may reserve; those that can spill do, the rest
        // fail with "Resources exhausted" rather than grow.
        // Nothing spills to disk either: the disk belongs to the store.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc();
        let mut state = SessionStateBuilder::new()
            .with_config(session_config())
            .with_default_features();
        // Building a runtime with a memory pool has no failure path in practice; keep a
        // working (unbounded) session rather than none.
        if let Ok(runtime) = runtime {
            state = state.with_runtime_env(runtime);
        }
        if runs {
            state = state.with_physical_optimizer_rule(Arc::new(runs::AggregateByRuns));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_udaf(AggregateUDF::from(
            window_funnel::WindowFunnelUdaf::default(),
        ));
        ctx.register_udaf(AggregateUDF::from(sequence::SequenceMatchUdaf::default()));
        ctx.register_udaf(AggregateUDF::from(sequence::SequenceCountUdaf::default()));
        ctx.register_udaf(AggregateUDF::from(retention::RetentionUdaf::default()));
        Analyst { ctx, limits }
    }

    /// Registers the journey tables (`events`, `journeys`, `transitions`) and the mining
    /// table functions (`paths`, `variants`, `funnel`, `dropoffs`) over `journeys`.
    pub fn with_journeys(self, journeys: Journeys) -> Result<Self> {
        use results::{MiningFunction, MiningResult};
        use tables::{Events, JourneyRows, RowsTable, Shared, Transitions};
        let shared = Shared::new(journeys.clone());
        self.ctx
            .register_table("events", Arc::new(RowsTable::new(Events(shared.clone()))))?;
        self.ctx.register_table(
            "journeys",
            Arc::new(RowsTable::new(JourneyRows::new(shared.clone())?)),
        )?;
        self.ctx.register_table(
            "transitions",
            Arc::new(RowsTable::new(Transitions::new(shared))),
        )?;
        for (name, kind) in [
            ("paths", MiningResult::Paths),
            ("variants", MiningResult::Variants),
            ("funnel", MiningResult::Funnel),
            ("dropoffs", MiningResult::Dropoffs),
        ] {
            self.ctx.register_udtf(
                name,
                Arc::new(MiningFunction {
                    kind,
                    journeys: journeys.clone(),
                }),
            );
        }
        Ok(self)
    }

    /// Registers `events` read from `input` customer by customer while a query runs
    /// ([`streamed`]), for one query over input that may be grouped by customer. The other
    /// journey tables and the table functions are there, but a query that uses them (or
    /// that the stream cannot answer) fails with [`streamed::NeedsJourneyLog`]
    /// ([`streamed::needs_journey_log`] tells): run it again over [`Analyst::with_journeys`].
    pub fn with_streamed_events(
        self,
        input: Arc<dyn streamed::GroupedInput>,
        config: &Config,
    ) -> Result<Self> {
        use streamed::{OverTheLog, StreamedEvents};
        // The stream is one partition, whole customers in order; spreading its rows over
        // more partitions (round robin, or by hash for a two-phase GROUP BY) would break
        // customers' runs and have GROUP BY customer hash every row again.
        {
            let state = self.ctx.state_ref();
            let mut state = state.write();
            let optimizer = &mut state.config_mut().options_mut().optimizer;
            optimizer.enable_round_robin_repartition = false;
            optimizer.repartition_aggregations = false;
        }
        self.ctx
            .register_table("events", Arc::new(StreamedEvents(input)))?;
        for (name, schema) in [
            ("journeys", tables::JourneyRows::table_schema(config)),
            ("transitions", tables::Transitions::table_schema()),
        ] {
            self.ctx
                .register_table(name, Arc::new(OverTheLog { name, schema }))?;
        }
        for name in ["paths", "variants", "funnel", "dropoffs"] {
            let schema = Arc::new(datafusion::arrow::datatypes::Schema::empty());
            self.ctx
                .register_udtf(name, Arc::new(OverTheLog { name, schema }));
        }
        Ok(self)
    }

    /// Registers the live tables ([`live::TABLES`]), each scan reading `snapshot`.
    pub fn with_live(self, snapshot: live::Snapshot) -> Result<Self> {
        for (name, table) in live::TABLES {
            self.ctx.register_table(
                name,
                Arc::new(live::LiveProvider {
                    table,
                    snapshot: snapshot.clone(),
                }),
            )?;
        }
        Ok(self)
    }

    /// Registers `stored_events`: every event the live pipeline stored in the local data
    /// dir `data_dir` (the Parquet segments its checkpoint names, in the canonical schema,
    /// looked up anew at each query, so it grows as the pipeline stores more). Data dirs that are not local (an
    /// object store URL) are refused with what to do instead.
    pub fn with_store(self, data_dir: &str) -> Result<Self> {
        let dir = match data_dir.split_once("://") {
            None => std::path::PathBuf::from(data_dir),
            Some(("file", path)) => std::path::PathBuf::from(path),
            Some(_) => {
                return Err(DataFusionError::Plan(format!(
                    "stored_events reads a local data dir; {data_dir} is not one (query its \
                     segments/*.parquet with `trailmap sql --table events=FILE` instead)"
                )));
            }
        };
        let dir = std::path::absolute(&dir)
            .map_err(|e| DataFusionError::Plan(format!("{data_dir}: {e}")))?;
        self.ctx
            .register_table(STORED_EVENTS, Arc::new(stored::StoredEvents { dir }))?;
        Ok(self)
    }

    /// Runs one read-only query and collects its result, within the limits.
    ///
    /// Planning counts against the timeout too (the mining table functions compute while
    /// planning), though a mining pass already under way finishes before the timeout fires.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let run = async {
            let state = self.ctx.state();
            let plan = state.create_logical_plan(sql).await?;
            // Checked on the plan, before anything runs: `ctx.sql` would execute DDL at once.
            read_only()
                .verify_plan(&plan)
                .map_err(|e| DataFusionError::Plan(format!("{READ_ONLY}: {e}")))?;
            let frame = DataFrame::new(state, plan);
            let schema = Arc::new(frame.schema().as_arrow().clone());
            let batches = frame.collect().await?;
            Ok::<_, DataFusionError>((schema, batches))
        };
        // Dropping the query's future on timeout stops its streams.
        match tokio::time::timeout(self.limits.timeout, run).await {
            Ok(Ok((schema, batches))) if batches.is_empty() => {
                Ok(vec![RecordBatch::new_empty(schema)])
            }
            Ok(Ok((_, batches))) => Ok(batches),
            Ok(Err(e)) if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) => {
                Err(DataFusionError::ResourcesExhausted(format!(
                    "{e}\nthe query needs more than the {} memory limit ([sql] memory_limit in \
                     the config); filter or aggregate earlier, or raise the limit",
                    bytesize::ByteSize::b(self.limits.memory as u64)
                        .display()
                        .iec()
                )))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DataFusionError::Execution(format!(
                "{CANCELLED} after the {:?} timeout ([sql] timeout in the config); filter or \
                 aggregate earlier, or raise the timeout",
                self.limits.timeout
            ))),
        }
    }
}

/// How refusals start, so endpoints can tell them from other errors.
pub const READ_ONLY: &str = "trailmap SQL is read-only (query with SELECT)";
/// How timeouts start.
pub const CANCELLED: &str = "query cancelled";

/// What analysts may run: queries, not DDL, DML (`INSERT`, `COPY … TO`) or `SET`.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}
