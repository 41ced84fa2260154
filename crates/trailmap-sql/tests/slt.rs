//! Runs every `tests/sql/*.slt` file (sqllogictest) against an analyst session whose
//! journey tables hold `tests/sql/data/shop.csv`, stitched with `SHOP_CONFIG`.

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::DataFusionError;
use sqllogictest::{DBOutput, DefaultColumnType};
use std::path::Path;
use trailmap_model::Config;
use trailmap_sql::{Analyst, Journeys};

mod common;

/// One configured funnel (for `journeys.converted_signup_to_purchase` and `funnel(…)`);
/// everything else is the shipped default.
const SHOP_CONFIG: &str = r#"
[journeys.signup_to_purchase]
steps = ["signup", "purchase"]
window = "1h"
"#;

fn shop(sql_dir: &Path) -> Journeys {
    let mut config = Config::from_toml_str(SHOP_CONFIG).expect("shop config");
    config
        .journeys
        .retain(|name, _| name == "signup_to_purchase");
    common::stitch_csv(&sql_dir.join("data/shop.csv"), config, 1024)
}

struct Db {
    analyst: Analyst,
}

fn column_type(dt: &DataType) -> DefaultColumnType {
    if dt.is_integer() {
        DefaultColumnType::Integer
    } else if dt.is_floating() {
        DefaultColumnType::FloatingPoint
    } else if matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        DefaultColumnType::Text
    } else {
        DefaultColumnType::Any
    }
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DataFusionError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .zip(batch.columns())
                    .map(|(f, c)| {
                        let text = f.value(row).to_string();
                        if !c.is_null(row) && text.is_empty() {
                            "(empty)".to_string()
                        } else if c.data_type().is_floating() && text.ends_with(".0") {
                            // Whole floats as integers: `88200`, not `88200.0`.
                            text[..text.len() - 2].to_string()
                        } else {
                            text
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let batches = self.analyst.query(sql).await?;
        let types = match batches.first() {
            Some(b) => b
                .schema()
                .fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect(),
            None => Vec::new(),
        };
        Ok(DBOutput::Rows {
            types,
            rows: rows(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "trailmap"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/sql");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/sql")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {dir}");
    for file in files {
        let journeys = shop(Path::new(dir));
        let mut runner = sqllogictest::Runner::new(move || {
            let journeys = journeys.clone();
            async move {
                Ok(Db {
                    analyst: Analyst::default().with_journeys(journeys)?,
                })
            }
        });
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {e}", file.display());
        }
    }
}
