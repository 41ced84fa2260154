//! `trailmap sql`: analyst SQL over journeys and files, with trailmap's behavioural
//! functions (`window_funnel`, …). Read-only.

use crate::input::InputArgs;
use crate::output::{Format, print_rows};
use anyhow::{Context, bail};
use clap::Args;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};
use datafusion::sql::parser::DFParser;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;
use trailmap_ingest::Projection;
use trailmap_model::Config;
use trailmap_model::config::Scope;
use trailmap_sessionize::JourneySink;
use trailmap_sql::streamed::{GroupedInput, needs_journey_log};
use trailmap_sql::{Analyst, Journeys, Limits};

#[derive(Args)]
pub struct SqlArgs {
    /// The query. Without one: an interactive prompt on a terminal (statements end with `;`,
    /// history kept in ~/.trailmap_sql_history), else the statements read from stdin.
    /// Tables: with --input, `events`, `journeys`, `transitions` and the table functions
    /// paths(), variants([top]), funnel(steps [, window [, modes [, order]]]),
    /// dropoffs([goal]); and every --table.
    query: Option<String>,

    /// A file as a table, repeatable: NAME=FILE (.parquet, .csv, .ndjson/.jsonl/.json).
    #[arg(long = "table", value_name = "NAME=FILE")]
    tables: Vec<String>,

    /// Journeys to query: read, stitched and ordered like the other commands (see their
    /// input flags).
    #[command(flatten)]
    input: InputArgs,

    /// Output format [default: table on a terminal, json otherwise].
    #[arg(long, short = 'f')]
    format: Option<Format>,
}

impl SqlArgs {
    /// Whether this runs statements as they are typed or piped in (no query given).
    pub fn is_shell(&self) -> bool {
        self.query.is_none()
    }

    pub fn run(self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the query runtime")?;
        let format = Format::resolve(self.format);
        runtime.block_on(async {
            let config = self.input.config()?;
            if let Some(query) = &self.query
                && let Some(batches) = self.streamed(query, &config).await?
            {
                return print(&batches, format);
            }
            let analyst = self.analyst(&config).await?;
            match &self.query {
                Some(query) => print(&analyst.query(query).await?, format),
                None if std::io::stdin().is_terminal() => prompt(&analyst, format).await,
                None => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("cannot read the statements from stdin")?;
                    for statement in statements(&text)? {
                        print(&analyst.query(&statement).await?, format)?;
                    }
                    Ok(())
                }
            }
        })
    }

    /// The answer to `query` over `events` streamed from input grouped by customer
    /// ([`trailmap_sql::streamed`]): no journey log, about one batch of rows in memory.
    /// `None` when the query needs the loaded journeys (the input is not grouped, or the
    /// query uses what the stream does not give).
    async fn streamed(
        &self,
        query: &str,
        config: &Config,
    ) -> anyhow::Result<Option<Vec<RecordBatch>>> {
        if self.input.inputs.is_empty() && !self.input.has_configured_sources(config) {
            return Ok(None);
        }
        let input = Arc::new(GroupedFiles {
            input: self.input.clone(),
            config: config.clone(),
        });
        let analyst = self
            .with_tables(Analyst::new(Limits::from_config(&config.sql)))
            .await?
            .with_streamed_events(input, config)?;
        let started = std::time::Instant::now();
        match analyst.query(query).await {
            Ok(batches) => Ok(Some(batches)),
            Err(e) if needs_journey_log(&e) => {
                crate::input::timing(&format!("query not streamed ({e})"), started.elapsed());
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A session with the journeys and the --table files registered.
    async fn analyst(&self, config: &Config) -> anyhow::Result<Analyst> {
        let analyst = self
            .with_tables(Analyst::new(Limits::from_config(&config.sql)))
            .await?;
        if self.input.inputs.is_empty() && !self.input.has_configured_sources(config) {
            return Ok(analyst);
        }
        let loaded = self.input.load(Projection::minimal())?;
        Ok(analyst.with_journeys(Journeys {
            log: Arc::new(loaded.log),
            config: Arc::new(loaded.config),
        })?)
    }

    /// `analyst` with the --table files registered.
    async fn with_tables(&self, analyst: Analyst) -> anyhow::Result<Analyst> {
        for spec in &self.tables {
            let (name, path) = spec.split_once('=').with_context(|| {
                format!("--table {spec}: write it NAME=FILE, like --table visits=visits.parquet")
            })?;
            let path = PathBuf::from(path);
            if !path.exists() {
                bail!("--table {spec}: {}: no such file", path.display());
            }
            let file = path.to_string_lossy().to_string();
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            match ext.as_str() {
                "parquet" => {
                    analyst
                        .ctx
                        .register_parquet(name, &file, ParquetReadOptions::default())
                        .await?
                }
                "csv" => {
                    analyst
                        .ctx
                        .register_csv(name, &file, CsvReadOptions::new())
                        .await?
                }
                "ndjson" | "jsonl" | "json" => {
                    let extension = format!(".{ext}");
                    let options = JsonReadOptions::default().file_extension(&extension);
                    analyst.ctx.register_json(name, &file, options).await?
                }
                other => bail!(
                    "--table {spec}: .{other} files are not supported as tables; use .parquet, .csv or .ndjson"
                ),
            }
        }
        Ok(analyst)
    }
}

/// The command's input files, streamed customer by customer for `events`.
struct GroupedFiles {
    input: InputArgs,
    config: Config,
}

impl GroupedInput for GroupedFiles {
    fn stream(
        &self,
        sessions: bool,
        names: &[String],
        sink: &mut dyn JourneySink,
    ) -> Result<bool, String> {
        let mut config = self.config.clone();
        config.sessions.scope = if sessions {
            Scope::Session
        } else {
            Scope::Customer
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        match self.input.stream_grouped(&config, &names, sink) {
            Ok(summary) => Ok(summary.is_some()),
            Err(e) => Err(format!("{e:#}")),
        }
    }
}

/// The statements of a script, each as text DataFusion can plan.
fn statements(text: &str) -> anyhow::Result<Vec<String>> {
    let parsed = DFParser::parse_sql(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(parsed.iter().map(ToString::to_string).collect())
}

/// The interactive prompt: a statement runs when a line ends with `;`; errors are printed
/// and the session goes on.
async fn prompt(analyst: &Analyst, format: Format) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new().context("cannot open the prompt")?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".trailmap_sql_history"));
    if let Some(h) = &history {
        // A first session has no history yet.
        let _ = editor.load_history(h);
    }
    eprintln!("trailmap sql: end statements with `;`, `\\q` or Ctrl-D to leave");
    let mut buffer = String::new();
    loop {
        let line = match editor.readline(if buffer.is_empty() { "sql> " } else { "...> " }) {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && matches!(trimmed, "\\q" | "quit" | "exit") {
            break;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let _ = editor.add_history_entry(buffer.trim());
        let text = std::mem::take(&mut buffer);
        match statements(&text) {
            Ok(list) => {
                for statement in list {
                    let started = std::time::Instant::now();
                    match analyst.query(&statement).await {
                        Ok(batches) => {
                            print(&batches, format)?;
                            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                            eprintln!("{rows} rows in {:.3}s", started.elapsed().as_secs_f64());
                        }
                        Err(e) => eprintln!("error: {e}"),
                    }
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// Prints query results: JSON as an array of objects (numbers as numbers), CSV or a table.
fn print(batches: &[RecordBatch], format: Format) -> anyhow::Result<()> {
    let t = tabulate(batches)?;
    let header: Vec<&str> = t.header.iter().map(String::as_str).collect();
    print_rows(format, &header, &t.rows, &t.objects)
}

/// Query results, ready to print or send.
pub struct Tabulated {
    pub header: Vec<String>,
    /// Each row as display text.
    pub rows: Vec<Vec<String>>,
    /// Each row as a JSON object (numbers as numbers).
    pub objects: Vec<serde_json::Value>,
}

pub fn tabulate(batches: &[RecordBatch]) -> anyhow::Result<Tabulated> {
    let Some(first) = batches.first() else {
        return Ok(Tabulated {
            header: Vec::new(),
            rows: Vec::new(),
            objects: Vec::new(),
        });
    };
    let schema = first.schema();
    let header: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
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
    Ok(Tabulated {
        header,
        rows,
        objects,
    })
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
