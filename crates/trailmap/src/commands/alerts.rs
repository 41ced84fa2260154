//! `trailmap alerts test`: replays events from files through alert rules and lists when
//! each would have fired and resolved.
//!
//! The events go through the live pipeline (the same stitching, sessions and counts a live
//! run keeps, with no lateness horizon: files may come in any order), then every rule is
//! evaluated at each of its intervals of event time over the result, with the live
//! evaluator's code. What differs from having run live is only hindsight: late events and
//! identity merges that arrived after an instant are already counted at it.

use super::common::percent;
use super::live::replay_in_hindsight;
use crate::input::InputArgs;
use crate::output::{Format, print_rows};
use clap::{Args, Subcommand};
use trailmap_live::Alerts;
use trailmap_live::alert::{Change, when};

#[derive(Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    command: AlertsCommand,
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Replay events from files through alert rules: when would each have fired and
    /// resolved?
    Test(Box<TestArgs>),
}

#[derive(Args)]
struct TestArgs {
    #[command(flatten)]
    input: InputArgs,

    /// The rule to test, by name (repeatable) [default: every configured one].
    #[arg(long = "rule", value_name = "NAME")]
    rules: Vec<String>,

    /// Output format [default: table on a terminal, json otherwise].
    #[arg(long, short = 'f')]
    format: Option<Format>,
}

impl AlertsArgs {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            AlertsCommand::Test(args) => args.run(),
        }
    }
}

impl TestArgs {
    fn run(self) -> anyhow::Result<()> {
        let config = self.input.config()?;
        let mut alerts = Alerts::new(&config)?.only(&self.rules)?;
        anyhow::ensure!(
            !alerts.is_empty(),
            "no alert rules configured; add an [alerts.NAME] table (journey, from, to, window, …) to the config"
        );
        // The rules are evaluated here, over the finished counts, not by a live evaluator.
        let outcome = replay_in_hindsight(&self.input, &config)?;
        let newest = outcome.result.status.newest.unwrap_or(i64::MIN);
        let result = &outcome.result;
        let backtest = alerts.backtest(&result.map, &result.names.values, newest)?;
        eprintln!(
            "alerts: {} events, {} evaluations of {} rule(s) up to {}; {} change(s)",
            outcome.result.status.stitch.events,
            backtest.evaluations,
            alerts.detectors().len(),
            if newest == i64::MIN {
                "-".to_string()
            } else {
                when(newest)
            },
            backtest.changes.len()
        );
        let format = Format::resolve(self.format);
        let table = format == Format::Table;
        let rate = |r: Option<f64>| match (r, table) {
            (None, _) => String::new(),
            (Some(r), true) => percent(r),
            (Some(r), false) => format!("{r:.6}"),
        };
        let rows: Vec<Vec<String>> = backtest
            .changes
            .iter()
            .map(|c| {
                let e = &c.evaluation;
                vec![
                    when(e.at),
                    c.alert.clone(),
                    c.value.clone().unwrap_or_default(),
                    match c.change {
                        Change::Firing => "firing",
                        Change::Resolved => "resolved",
                    }
                    .to_string(),
                    rate(e.current_conversion),
                    rate(e.baseline_conversion),
                    e.current.entered.to_string(),
                    e.p_value.map(|p| format!("{p:.2e}")).unwrap_or_default(),
                    e.reason.clone(),
                ]
            })
            .collect();
        let json = serde_json::json!({
            "evaluations": backtest.evaluations,
            "verdicts": {
                "dipping": backtest.dipping,
                "steady": backtest.steady,
                "too_few": backtest.too_few,
            },
            "firing": backtest.firing,
            "changes": backtest.changes,
            "alerts": alerts.statuses(),
        });
        print_rows(
            format,
            &[
                "at",
                "alert",
                "value",
                "change",
                "conversion",
                "baseline",
                "journeys",
                "p_value",
                "why",
            ],
            &rows,
            &json,
        )
    }
}
