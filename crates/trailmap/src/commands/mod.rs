//! One module per command.

mod alerts;
mod common;
mod demo;
mod dropoffs;
mod funnel;
mod gen_cmd;
mod kpis;
mod live;
mod map;
mod paths;
mod serve;
mod sessions;
mod sql;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// The main job on an embedded default: generated traffic through the live pipeline,
    /// the journey map served over HTTP while it fills (no Kafka or other service).
    Demo(Box<demo::DemoArgs>),
    /// Generate synthetic omnichannel journeys with a known ground truth.
    Gen(gen_cmd::GenArgs),
    /// Summarise what was read and stitched: events, customers, sessions, rejects.
    Sessions(Box<sessions::SessionsArgs>),
    /// Directly-follows graph, variants, loops; path trees with --from / --to.
    Paths(Box<paths::PathsArgs>),
    /// Conversion through ordered steps within a window (ClickHouse windowFunnel modes).
    Funnel(Box<funnel::FunnelArgs>),
    /// Exits per touchpoint; abandonment before a goal; what people did after a step.
    Dropoffs(Box<dropoffs::DropoffsArgs>),
    /// Touchpoint-pair KPIs / SLAs from the config: share met, times, breaches.
    Kpis(Box<kpis::KpisArgs>),
    /// Read-only SQL over journeys (events, journeys, transitions, paths(), funnel(), …) and files.
    Sql(Box<sql::SqlArgs>),
    /// Serve journeys: files to analysts over the PostgreSQL wire protocol (psql, BI tools),
    /// or a live pipeline (--generate, --replay, --kafka) with its HTTP API (--http-port).
    Serve(Box<serve::ServeArgs>),
    /// Alert rules on stage conversion: `alerts test` replays files through them.
    Alerts(alerts::AlertsArgs),
    /// The journey map of files (touchpoints by stage, transitions as flows); --svg draws it.
    Map(Box<map::MapArgs>),
}

impl Command {
    /// Whether the command keeps running until stopped (a server, the demo, the SQL shell)
    /// rather than reading its input, answering and exiting.
    pub fn runs_until_stopped(&self) -> bool {
        match self {
            Command::Demo(_) | Command::Serve(_) => true,
            Command::Sql(args) => args.is_shell(),
            Command::Gen(_)
            | Command::Sessions(_)
            | Command::Paths(_)
            | Command::Funnel(_)
            | Command::Dropoffs(_)
            | Command::Kpis(_)
            | Command::Alerts(_)
            | Command::Map(_) => false,
        }
    }

    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Demo(args) => args.run(),
            Command::Gen(args) => args.run(),
            Command::Sessions(args) => args.run(),
            Command::Paths(args) => args.run(),
            Command::Funnel(args) => args.run(),
            Command::Dropoffs(args) => args.run(),
            Command::Kpis(args) => args.run(),
            Command::Sql(args) => args.run(),
            Command::Serve(args) => args.run(),
            Command::Alerts(args) => args.run(),
            Command::Map(args) => args.run(),
        }
    }
}
