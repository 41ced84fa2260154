//! `trailmap dropoffs`: where journeys end, and where they stall before a goal.

use super::common::{percent, require_touchpoint, say, title};
use super::funnel::FunnelFlags;
use crate::input::InputArgs;
use crate::output::{Format, print_rows, thousands};
use clap::Args;
use trailmap_ingest::Projection;
use trailmap_mine::report::{DropoffsReport, Names, next_after_steps};
use trailmap_mine::{Aggregate, Dropoffs, Funnel, fold};
use trailmap_model::config::JourneyConfig;
use trailmap_sessionize::Journey;

#[derive(Args)]
pub struct DropoffsArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Goal touchpoint: also report, per touchpoint, journeys that passed it and never
    /// reached the goal, and where those journeys ended.
    #[arg(long, value_name = "TOUCHPOINT")]
    goal: Option<String>,

    /// With a funnel (--steps or --journey): what journeys did right after the step they
    /// stopped at.
    #[command(flatten)]
    funnel: FunnelFlags,

    /// Entries listed for "last touchpoints before abandoning" and "next after a step".
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,

    /// Output format [default: table on a terminal, json otherwise]. CSV prints the
    /// per-touchpoint rows.
    #[arg(long, short = 'f')]
    format: Option<Format>,
}

impl DropoffsArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let config = self.input.config()?;
        let journey = match self.funnel.given() {
            true => Some(self.funnel.journey_config(&config)?.1),
            false => None,
        };
        // Input grouped by customer is counted as it is read, with no journey log.
        if let Some(report) = self.streamed(&config, journey.as_ref())? {
            return self.print(&report);
        }
        let loaded = self.input.load(Projection::minimal())?;
        let log = &loaded.log;
        let scope = loaded.config.sessions.scope;
        let goal = self
            .goal
            .as_deref()
            .map(|g| require_touchpoint(&log.touchpoints, "--goal", g))
            .transpose()?;
        let names = Names {
            touchpoints: &log.touchpoints,
        };
        let dropoffs = fold(log, scope, || Dropoffs::new(goal));
        let mut report = DropoffsReport::new(&dropoffs, names, self.top);
        if self.funnel.given() {
            let (_, step_names, spec) = self.funnel.spec(&loaded.config, log)?;
            let funnel = fold(log, scope, || Funnel::new(spec.clone(), None));
            report.steps = next_after_steps(&funnel, &step_names, names, self.top);
        }
        self.print(&report)
    }

    /// The report counted while the input is read (see [`InputArgs::stream_grouped`]);
    /// `None` when the input is not grouped by customer.
    fn streamed(
        &self,
        config: &trailmap_model::Config,
        journey: Option<&JourneyConfig>,
    ) -> anyhow::Result<Option<DropoffsReport>> {
        // The goal is numbered first, then the funnel's steps.
        let mut names: Vec<String> = self.goal.iter().cloned().collect();
        let mut funnel = journey
            .map(|j| self.funnel.ahead_of_stream(j, &mut names, None))
            .transpose()?;
        let goal = self.goal.as_ref().map(|_| 0u32);
        let mut dropoffs = Dropoffs::new(goal);
        let ahead: Vec<&str> = names.iter().map(String::as_str).collect();
        let Some(summary) = self
            .input
            .stream_grouped(config, &ahead, &mut |j: &Journey<'_>| {
                dropoffs.add(j);
                if let Some(f) = &mut funnel {
                    f.add(j);
                }
            })?
        else {
            return Ok(None);
        };
        if let Some(g) = &self.goal {
            require_touchpoint(&summary.seen_touchpoints(), "--goal", g)?;
        }
        let names = Names {
            touchpoints: &summary.touchpoints,
        };
        let mut report = DropoffsReport::new(&dropoffs, names, self.top);
        if let (Some(funnel), Some(journey)) = (funnel, journey) {
            let funnel = funnel.finish(&summary);
            report.steps = next_after_steps(&funnel, &journey.steps, names, self.top);
        }
        Ok(Some(report))
    }

    fn print(&self, report: &DropoffsReport) -> anyhow::Result<()> {
        let goal = report.goal.as_ref();
        let format = Format::resolve(self.format);
        let mut header = vec!["touchpoint", "journeys", "exits", "exit_rate"];
        if goal.is_some() {
            header.extend(["abandoned", "abandon_rate"]);
        }
        let rows: Vec<Vec<String>> = report
            .touchpoints
            .iter()
            .map(|r| {
                let mut row = if format == Format::Table {
                    vec![
                        r.touchpoint.clone(),
                        thousands(r.journeys),
                        thousands(r.exits),
                        percent(r.exit_rate),
                    ]
                } else {
                    vec![
                        r.touchpoint.clone(),
                        r.journeys.to_string(),
                        r.exits.to_string(),
                        format!("{:.6}", r.exit_rate),
                    ]
                };
                if let (Some(a), Some(rate)) = (r.abandoned, r.abandon_rate) {
                    if format == Format::Table {
                        row.extend([thousands(a), percent(rate)]);
                    } else {
                        row.extend([a.to_string(), format!("{rate:.6}")]);
                    }
                }
                row
            })
            .collect();
        if format != Format::Table {
            return print_rows(format, &header, &rows, report);
        }
        say(&format!(
            "{} journeys{}",
            thousands(report.journeys),
            match (&report.goal, report.converted) {
                (Some(g), Some(c)) => format!(
                    ", {} reached {g} ({})",
                    thousands(c),
                    percent(c as f64 / report.journeys.max(1) as f64)
                ),
                _ => String::new(),
            }
        ))?;
        print_rows(format, &header, &rows, &())?;
        if !report.last_before_abandon.is_empty() {
            title("Last touchpoint of journeys that never reached the goal")?;
            let rows: Vec<Vec<String>> = report
                .last_before_abandon
                .iter()
                .map(|c| vec![c.touchpoint.clone(), thousands(c.count)])
                .collect();
            print_rows(format, &["touchpoint", "journeys"], &rows, &())?;
        }
        for step in &report.steps {
            title(&format!(
                "Stopped at {} ({} journeys), then",
                step.name,
                thousands(step.stopped)
            ))?;
            let rows: Vec<Vec<String>> = step
                .next
                .iter()
                .map(|c| vec![c.touchpoint.clone(), thousands(c.count)])
                .collect();
            print_rows(format, &["next", "journeys"], &rows, &())?;
        }
        Ok(())
    }
}
