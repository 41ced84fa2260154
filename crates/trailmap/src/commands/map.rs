//! `trailmap map`: the journey map of files, as the dashboard draws it live: touchpoints by
//! stage with their volume and exit rate, transitions as flows. `--svg` writes the picture
//! for a report; otherwise the map is printed (the `/api/map` shape as JSON, or a table of
//! touchpoints).

use super::common::percent;
use super::live::replay_in_hindsight;
use crate::input::InputArgs;
use crate::output::{Format, print_rows, thousands};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use trailmap_live::MapReport;
use trailmap_live::svg::map_svg;

#[derive(Args)]
pub struct MapArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Write the map as an SVG picture here (`-` for standard output).
    #[arg(long, value_name = "OUT.svg")]
    svg: Option<PathBuf>,

    /// Output format of the map when not drawing it [default: table on a terminal, json
    /// otherwise].
    #[arg(long, short = 'f')]
    format: Option<Format>,
}

impl MapArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let config = self.input.config()?;
        // Live counts are per session: the map is the sessions' map, as the dashboard's.
        let outcome = replay_in_hindsight(&self.input, &config)?;
        let result = &outcome.result;
        let map = MapReport::new(&result.map.total(), &result.names, result.status.newest);
        if let Some(path) = &self.svg {
            let svg = map_svg(&map);
            if path.as_os_str() == "-" {
                print!("{svg}");
            } else {
                std::fs::write(path, svg)
                    .with_context(|| format!("cannot write the map to {}", path.display()))?;
                eprintln!(
                    "map: {} touchpoints, {} transitions, {} journeys -> {}",
                    map.nodes.len(),
                    map.edges.len(),
                    map.journeys,
                    path.display()
                );
            }
            return Ok(());
        }
        let rows: Vec<Vec<String>> = map
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.touchpoint.clone(),
                    n.stage.clone().unwrap_or_default(),
                    thousands(n.events.max(0) as u64),
                    thousands(n.journeys.max(0) as u64),
                    thousands(n.exits.max(0) as u64),
                    percent(n.exit_rate),
                ]
            })
            .collect();
        print_rows(
            Format::resolve(self.format),
            &[
                "touchpoint",
                "stage",
                "events",
                "journeys",
                "exits",
                "exit_rate",
            ],
            &rows,
            &map,
        )
    }
}
