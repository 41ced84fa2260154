//! `trailmap sql`: analyst SQL over journeys and files, with trailmap's behavioural
//! functions (`window_funnel`, …). Read-only.

use crate::input::InputArgs;
use crate::output::{Format, print_rows};
use anyhow::{Context, bail};
use clap::Args;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::prelude::{CsvReadOptions, NdJsonReadOptions, ParquetReadOptions};
use std::path::PathBuf;
use trailmap_ingest::Projection;
use trailmap_sql::Analyst;

#[derive(Args)]
pub struct SqlArgs {
    /// The query. Tables: `events` (with --input: customer, session, ts, touchpoint, stage,
    /// source) and every --table.
    query: String,

    /// A file as a table, repeatable: NAME=FILE (.parquet, .csv, .ndjson/.jsonl/.json).
    #[arg(long = "table", value_name = "NAME=FILE")]
    tables: Vec<String>,

    /// Journeys to query as the `events` table: read, stitched and ordered like the other
    /// commands (see their input flags).
    #[command(flatten)]
    input: InputArgs,

    /// Output format [default: table on a terminal, json otherwise].
    #[arg(long, short = 'f')]
    format: Option<Format>,
}

impl SqlArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let analyst = Analyst::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the query runtime")?;
        let batches = runtime.block_on(async {
            for spec in &self.tables {
                let (name, path) = spec
                    .split_once('=')
                    .with_context(|| format!("--table {spec}: write it NAME=FILE, like --table visits=visits.parquet"))?;
                let path = PathBuf::from(path);
                if !path.exists() {
                    bail!("--table {spec}: {}: no such file", path.display());
                }
                let file = path.to_string_lossy().to_string();
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
                match ext.as_str() {
                    "parquet" => analyst.ctx.register_parquet(name, &file, ParquetReadOptions::default()).await?,
                    "csv" => analyst.ctx.register_csv(name, &file, CsvReadOptions::new()).await?,
                    "ndjson" | "jsonl" | "json" => {
                        let options = NdJsonReadOptions::default().file_extension(&format!(".{ext}"));
                        analyst.ctx.register_json(name, &file, options).await?
                    }
                    other => bail!("--table {spec}: .{other} files are not supported as tables; use .parquet, .csv or .ndjson"),
                }
            }
            if !self.input.inputs.is_empty() {
                let loaded = self.input.load(Projection::minimal())?;
                analyst
                    .ctx
                    .register_table("events", std::sync::Arc::new(trailmap_sql::tables::events_table(&loaded.log)?))?;
            }
            Ok::<_, anyhow::Error>(analyst.query(&self.query).await?)
        })?;
        print(&batches, Format::resolve(self.format))
    }
}

/// Prints query results: JSON as an array of objects (numbers as numbers), CSV or a table.
fn print(batches: &[RecordBatch], format: Format) -> anyhow::Result<()> {
    let Some(first) = batches.first() else {
        return print_rows(format, &[], &[], &Vec::<serde_json::Value>::new());
    };
    let schema = first.schema();
    let header: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let options = FormatOptions::default().with_null("");
    let mut rows = Vec::new();
    let mut objects = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect::<Vec<_>>(),
            );
            let mut object = serde_json::Map::new();
            for (i, column) in batch.columns().iter().enumerate() {
                object.insert(
                    header[i].to_string(),
                    json_value(column.as_ref(), row, &formatters[i]),
                );
            }
            objects.push(serde_json::Value::Object(object));
        }
    }
    print_rows(format, &header, &rows, &objects)
}

fn json_value(column: &dyn Array, row: usize, formatter: &ArrayFormatter<'_>) -> serde_json::Value {
    use serde_json::Value;
    if column.is_null(row) {
        return Value::Null;
    }
    let number = |v: Option<serde_json::Number>| v.map_or(Value::Null, Value::Number);
    match ScalarValue::try_from_array(column, row) {
        Ok(ScalarValue::Boolean(Some(b))) => Value::Bool(b),
        Ok(ScalarValue::Int8(Some(v))) => Value::from(v),
        Ok(ScalarValue::Int16(Some(v))) => Value::from(v),
        Ok(ScalarValue::Int32(Some(v))) => Value::from(v),
        Ok(ScalarValue::Int64(Some(v))) => Value::from(v),
        Ok(ScalarValue::UInt8(Some(v))) => Value::from(v),
        Ok(ScalarValue::UInt16(Some(v))) => Value::from(v),
        Ok(ScalarValue::UInt32(Some(v))) => Value::from(v),
        Ok(ScalarValue::UInt64(Some(v))) => Value::from(v),
        Ok(ScalarValue::Float32(Some(v))) => number(serde_json::Number::from_f64(f64::from(v))),
        Ok(ScalarValue::Float64(Some(v))) => number(serde_json::Number::from_f64(v)),
        _ => Value::String(formatter.value(row).to_string()),
    }
}
