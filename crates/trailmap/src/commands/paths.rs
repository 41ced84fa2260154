//! `trailmap paths`: the directly-follows graph, variants, loops, and path trees.

use super::common::{duration, percent, require_touchpoint, say, title};
use crate::input::InputArgs;
use crate::output::{Format, print_rows, thousands};
use clap::Args;
use trailmap_ingest::Projection;
use trailmap_mine::paths::PathOptions;
use trailmap_mine::report::{Names, PathsReport, TreeReport};
use trailmap_mine::tree::Direction;
use trailmap_mine::{PathStats, PathTree, TreeSpec, fold};

#[derive(Args)]
pub struct PathsArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Output format [default: table on a terminal, json otherwise]. CSV prints the
    /// transitions (or the tree's nodes).
    #[arg(long, short = 'f')]
    format: Option<Format>,

    /// Variants to list, most common first (0 = all).
    #[arg(long, default_value_t = 20, value_name = "N")]
    top_variants: usize,

    /// Loops, back-and-forth pairs and repeats to list (0 = all).
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,

    /// Path tree: where journeys go after their first TOUCHPOINT.
    #[arg(long, value_name = "TOUCHPOINT", conflicts_with = "to")]
    from: Option<String>,

    /// Path tree: how journeys arrive at their last TOUCHPOINT.
    #[arg(long, value_name = "TOUCHPOINT")]
    to: Option<String>,

    /// Path tree: touchpoints followed beyond the anchor.
    #[arg(long, default_value_t = 5, value_name = "N")]
    max_steps: usize,

    /// Path tree: leave out branches with fewer journeys.
    #[arg(long, default_value_t = 1, value_name = "N")]
    min_count: u64,

    /// Path tree: nodes kept per step; the rest of each parent's branches become `other`.
    #[arg(long, default_value_t = 8, value_name = "N")]
    budget: usize,

    /// Path tree: count `a a b` as `a b`.
    #[arg(long)]
    collapse_repeats: bool,

    /// Skip transition durations (a little faster on very large inputs).
    #[arg(long)]
    no_durations: bool,
}

impl PathsArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let loaded = self.input.load(Projection::minimal())?;
        let log = &loaded.log;
        let scope = loaded.config.sessions.scope;
        let names = Names {
            touchpoints: &log.touchpoints,
        };
        let format = Format::resolve(self.format);
        if let Some((anchor, direction)) = self
            .from
            .as_ref()
            .map(|a| (a, Direction::From))
            .or(self.to.as_ref().map(|a| (a, Direction::To)))
        {
            let flag = if direction == Direction::From {
                "--from"
            } else {
                "--to"
            };
            let spec = TreeSpec {
                anchor: require_touchpoint(&log.touchpoints, flag, anchor)?,
                direction,
                max_steps: self.max_steps,
                collapse_repeats: self.collapse_repeats,
            };
            let tree = fold(log, scope, || PathTree::new(spec));
            let report =
                TreeReport::new(&tree, anchor, direction, names, self.min_count, self.budget);
            let rows: Vec<Vec<String>> = report
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        n.id.to_string(),
                        n.step.to_string(),
                        n.touchpoint.clone(),
                        n.parent.map(|p| p.to_string()).unwrap_or_default(),
                        n.count.to_string(),
                        n.ends.to_string(),
                    ]
                })
                .collect();
            return print_rows(
                format,
                &["id", "step", "touchpoint", "parent", "count", "ends"],
                &rows,
                &report,
            );
        }

        let options = PathOptions {
            durations: !self.no_durations,
            variants: true,
        };
        let touchpoints = log.touchpoints.len();
        let started = std::time::Instant::now();
        let paths = fold(log, scope, || PathStats::new(touchpoints, options));
        crate::input::timing("paths", started.elapsed());
        let report = PathsReport::new(&paths, names, self.top_variants, self.top);
        crate::input::timing("paths report", started.elapsed());
        let header = [
            "from",
            "to",
            "count",
            "mean_seconds",
            "median_seconds",
            "p90_seconds",
        ];
        let secs = |v: Option<f64>| v.map(|s| format!("{s:.3}")).unwrap_or_default();
        match format {
            Format::Json => print_rows(format, &header, &[], &report),
            Format::Csv => {
                let rows: Vec<Vec<String>> = report
                    .transitions
                    .iter()
                    .map(|t| {
                        vec![
                            t.from.clone(),
                            t.to.clone(),
                            t.count.to_string(),
                            secs(t.duration.mean_seconds),
                            secs(t.duration.median_seconds),
                            secs(t.duration.p90_seconds),
                        ]
                    })
                    .collect();
                print_rows(format, &header, &rows, &report)
            }
            Format::Table => print_tables(&report),
        }
    }
}

fn print_tables(r: &PathsReport) -> anyhow::Result<()> {
    say(&format!(
        "{} events in {} journeys, {} transitions, {} variants",
        thousands(r.events),
        thousands(r.journeys),
        thousands(r.transitions.len() as u64),
        thousands(r.distinct_variants as u64)
    ))?;
    let t = Format::Table;
    title("Transitions")?;
    let rows: Vec<Vec<String>> = r
        .transitions
        .iter()
        .map(|x| {
            vec![
                x.from.clone(),
                x.to.clone(),
                thousands(x.count),
                duration(x.duration.median_seconds),
                duration(x.duration.p90_seconds),
                duration(x.duration.mean_seconds),
            ]
        })
        .collect();
    print_rows(
        t,
        &["from", "to", "count", "median", "p90", "mean"],
        &rows,
        &(),
    )?;
    for (name, counts) in [("Starts", &r.starts), ("Ends", &r.ends)] {
        title(name)?;
        let rows: Vec<Vec<String>> = counts
            .iter()
            .map(|c| vec![c.touchpoint.clone(), thousands(c.count)])
            .collect();
        print_rows(t, &["touchpoint", "journeys"], &rows, &())?;
    }
    title("Variants")?;
    let rows: Vec<Vec<String>> = r
        .variants
        .iter()
        .map(|v| vec![thousands(v.count), percent(v.share), v.path.join(" → ")])
        .collect();
    print_rows(t, &["journeys", "share", "path"], &rows, &())?;
    if !r.loops.is_empty() {
        title("Loops (touchpoints customers circle between)")?;
        let rows: Vec<Vec<String>> = r
            .loops
            .iter()
            .map(|l| vec![l.touchpoints.join(" ⇄ "), thousands(l.transitions)])
            .collect();
        print_rows(t, &["touchpoints", "transitions inside"], &rows, &())?;
    }
    if !r.back_and_forth.is_empty() {
        title("Back and forth (a → b → a)")?;
        let rows: Vec<Vec<String>> = r
            .back_and_forth
            .iter()
            .map(|b| {
                vec![
                    b.a.clone(),
                    b.b.clone(),
                    thousands(b.count),
                    thousands(b.journeys),
                ]
            })
            .collect();
        print_rows(t, &["a", "b", "times", "journeys"], &rows, &())?;
    }
    Ok(())
}
