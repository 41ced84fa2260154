//! `trailmap gen`: synthetic omnichannel journeys with a known ground truth.

use super::common::DipArgs;
use crate::output::{Format, print_rows, thousands};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use trailmap_gen::{GenOptions, JourneyModel, Layout, OutFormat};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FileFormat {
    Ndjson,
    Parquet,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LayoutArg {
    /// clickstream, ticket and crm files in their native shapes, identities to stitch.
    Sources,
    /// One already-stitched events file (customer_id, ts, touchpoint, …): benchmark input.
    Flat,
}

#[derive(Args)]
pub struct GenArgs {
    /// Number of customers.
    #[arg(long, default_value_t = 1000)]
    customers: u64,

    /// First touches spread over this many days.
    #[arg(long, default_value_t = 28)]
    days: u32,

    /// Random seed: the same seed writes the same files.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Output directory.
    #[arg(long, short = 'o', value_name = "DIR")]
    out: PathBuf,

    /// File format of the output.
    #[arg(long, value_enum, default_value = "ndjson")]
    file_format: FileFormat,

    /// Per-source files, or one flat events file.
    #[arg(long, value_enum, default_value = "sources")]
    layout: LayoutArg,

    /// Also write the model's start, transition and exit probabilities here (JSON).
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,

    /// Output format of the summary [default: table on a terminal, json otherwise].
    #[arg(long, short = 'f')]
    format: Option<Format>,

    #[command(flatten)]
    dip: DipArgs,
}

impl GenArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let model = self.dip.apply(JourneyModel::default())?;
        let opts = GenOptions {
            customers: self.customers,
            days: self.days.max(1),
            seed: self.seed,
            ..GenOptions::default()
        };
        let layout = match self.layout {
            LayoutArg::Sources => Layout::Sources,
            LayoutArg::Flat => Layout::Flat,
        };
        let format = match self.file_format {
            FileFormat::Ndjson => OutFormat::Ndjson,
            FileFormat::Parquet => OutFormat::Parquet,
        };
        let summary = trailmap_gen::write(&model, &opts, &self.out, layout, format)?;
        if let Some(path) = &self.truth {
            model.truth(&opts).write_truth(path)?;
        }
        let mut rows = vec![
            vec!["customers".to_string(), thousands(summary.customers)],
            vec!["records".to_string(), thousands(summary.events)],
            vec![
                "identity records".to_string(),
                thousands(summary.identity_records),
            ],
        ];
        for (source, n) in &summary.events_by_source {
            rows.push(vec![format!("records from {source}"), thousands(*n)]);
        }
        for file in &summary.files {
            rows.push(vec!["file".to_string(), file.display().to_string()]);
        }
        print_rows(
            Format::resolve(self.format),
            &["measure", "value"],
            &rows,
            &summary,
        )
    }
}
