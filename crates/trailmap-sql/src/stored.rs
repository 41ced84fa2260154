//! `stored_events`: the events the live pipeline stored in a local data dir, as its
//! checkpoint names them.
//!
//! The checkpoint, not the directory listing, says which segments hold the events: a
//! segment written just before a crash (an orphan until the next start) or merged into a
//! compacted one (until its file is removed) would otherwise be counted twice. It is read
//! anew at each query, so the table grows as the pipeline stores more.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use std::path::PathBuf;
use std::sync::Arc;
use trailmap_store::Checkpoint;

#[derive(Debug)]
pub(crate) struct StoredEvents {
    /// The data dir, absolute.
    pub dir: PathBuf,
}

impl StoredEvents {
    /// The segment files the checkpoint names; none before the first checkpoint.
    fn files(&self) -> Result<Vec<PathBuf>> {
        let path = self.dir.join(trailmap_store::CHECKPOINT);
        let file = match std::fs::read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(DataFusionError::Execution(format!(
                    "stored_events: cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let checkpoint = Checkpoint::parse(&file).map_err(|why| {
            DataFusionError::Execution(format!(
                "stored_events: {} is damaged ({why})",
                path.display()
            ))
        })?;
        Ok(checkpoint
            .segments
            .iter()
            .map(|s| self.dir.join(s.file()))
            .collect())
    }
}

#[async_trait]
impl TableProvider for StoredEvents {
    fn schema(&self) -> SchemaRef {
        trailmap_model::schema::event_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let files = self.files()?;
        if files.is_empty() {
            let schema = project_schema(&self.schema(), projection)?;
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let urls = files
            .iter()
            .map(|f| ListingTableUrl::parse(f.to_string_lossy()))
            .collect::<Result<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(self.schema());
        ListingTable::try_new(config)?
            .scan(state, projection, filters, limit)
            .await
    }
}
