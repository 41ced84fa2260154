//! Tables over the live pipeline's journey map: `live_touchpoints`, `live_transitions` and
//! `live_funnel_steps`, read at each scan from a snapshot of the whole map (what
//! `/api/map?window=all` answers), so SQL, the API and the dashboard agree.

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use trailmap_live::MapReport;

/// Reads the live map now.
pub type Snapshot = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = std::result::Result<MapReport, String>> + Send>>
        + Send
        + Sync,
>;

/// The live tables, by name.
pub const TABLES: [(&str, LiveTable); 3] = [
    ("live_touchpoints", LiveTable::Touchpoints),
    ("live_transitions", LiveTable::Transitions),
    ("live_funnel_steps", LiveTable::FunnelSteps),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveTable {
    /// Per touchpoint: stage, events, journeys through it, starts, exits, exit rate.
    Touchpoints,
    /// Per transition: from, to, count, mean seconds.
    Transitions,
    /// Per configured journey and step: reached, conversions, dropped, maturing.
    FunnelSteps,
}

fn field(name: &str, t: DataType, nullable: bool) -> Field {
    Field::new(name, t, nullable)
}

impl LiveTable {
    pub fn schema(self) -> SchemaRef {
        use DataType::{Float64, Int64, Utf8};
        Arc::new(Schema::new(match self {
            LiveTable::Touchpoints => vec![
                field("touchpoint", Utf8, false),
                field("stage", Utf8, true),
                field("events", Int64, false),
                field("journeys", Int64, false),
                field("starts", Int64, false),
                field("exits", Int64, false),
                field("exit_rate", Float64, false),
            ],
            LiveTable::Transitions => vec![
                field("from_touchpoint", Utf8, false),
                field("to_touchpoint", Utf8, false),
                field("count", Int64, false),
                field("mean_seconds", Float64, false),
            ],
            LiveTable::FunnelSteps => vec![
                field("journey", Utf8, false),
                field("step_index", Int64, false),
                field("step", Utf8, false),
                field("reached", Int64, false),
                field("conversion_from_previous", Float64, false),
                field("conversion_from_first", Float64, false),
                field("dropped", Int64, false),
                field("maturing", Int64, false),
            ],
        }))
    }

    /// The table's rows in `map`.
    pub fn batch(self, map: &MapReport) -> Result<RecordBatch> {
        fn text<'a>(v: impl Iterator<Item = &'a str>) -> ArrayRef {
            Arc::new(StringArray::from_iter_values(v))
        }
        fn ints(v: impl Iterator<Item = i64>) -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(v))
        }
        fn floats(v: impl Iterator<Item = f64>) -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(v))
        }
        let columns: Vec<ArrayRef> = match self {
            LiveTable::Touchpoints => {
                let n = &map.nodes;
                vec![
                    text(n.iter().map(|x| x.touchpoint.as_str())),
                    Arc::new(StringArray::from_iter(n.iter().map(|x| x.stage.as_deref()))),
                    ints(n.iter().map(|x| x.events)),
                    ints(n.iter().map(|x| x.journeys)),
                    ints(n.iter().map(|x| x.starts)),
                    ints(n.iter().map(|x| x.exits)),
                    floats(n.iter().map(|x| x.exit_rate)),
                ]
            }
            LiveTable::Transitions => {
                let e = &map.edges;
                vec![
                    text(e.iter().map(|x| x.from.as_str())),
                    text(e.iter().map(|x| x.to.as_str())),
                    ints(e.iter().map(|x| x.count)),
                    floats(e.iter().map(|x| x.mean_seconds)),
                ]
            }
            LiveTable::FunnelSteps => {
                let rows: Vec<_> = map
                    .funnels
                    .iter()
                    .flat_map(|f| f.steps.iter().enumerate().map(move |(k, s)| (f, k, s)))
                    .collect();
                vec![
                    text(rows.iter().map(|(f, _, _)| f.name.as_str())),
                    ints(rows.iter().map(|(_, k, _)| *k as i64)),
                    text(rows.iter().map(|(_, _, s)| s.name.as_str())),
                    ints(rows.iter().map(|(_, _, s)| s.reached)),
                    floats(rows.iter().map(|(_, _, s)| s.conversion_from_previous)),
                    floats(rows.iter().map(|(_, _, s)| s.conversion_from_first)),
                    ints(rows.iter().map(|(_, _, s)| s.dropped)),
                    ints(rows.iter().map(|(_, _, s)| s.maturing)),
                ]
            }
        };
        Ok(RecordBatch::try_new(self.schema(), columns)?)
    }
}

/// One live table: scanned from a fresh snapshot.
pub struct LiveProvider {
    pub table: LiveTable,
    pub snapshot: Snapshot,
}

impl std::fmt::Debug for LiveProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveProvider({:?})", self.table)
    }
}

#[async_trait]
impl TableProvider for LiveProvider {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let map = (self.snapshot)().await.map_err(|e| {
            DataFusionError::Execution(format!("the live pipeline did not answer: {e}"))
        })?;
        let batch = self.table.batch(&map)?;
        let batch = match projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        let projected = project_schema(&self.table.schema(), projection)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            projected,
            None,
        )?)
    }
}
