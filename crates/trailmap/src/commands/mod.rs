//! One module per command.

mod gen_cmd;
mod sessions;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// Generate synthetic omnichannel journeys with a known ground truth.
    Gen(gen_cmd::GenArgs),
    /// Summarise what was read and stitched: events, customers, sessions, rejects.
    Sessions(Box<sessions::SessionsArgs>),
}

impl Command {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Gen(args) => args.run(),
            Command::Sessions(args) => args.run(),
        }
    }
}
