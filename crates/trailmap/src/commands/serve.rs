//! `trailmap serve`: the journeys read from files, served to analysts over the PostgreSQL
//! wire protocol (`psql`, BI tools), read-only and bounded like `trailmap sql`.

use crate::input::InputArgs;
use anyhow::Context;
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use trailmap_ingest::Projection;
use trailmap_sql::postgres::{self, Login};
use trailmap_sql::{Analyst, Journeys, Limits};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Address to listen on [default: [server] bind, 127.0.0.1].
    #[arg(long, value_name = "ADDRESS")]
    bind: Option<IpAddr>,

    /// PostgreSQL port; 0 picks a free one [default: [server] postgres_port, 5433].
    #[arg(long, value_name = "PORT")]
    postgres_port: Option<u16>,
}

impl ServeArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let config = self.input.config()?;
        let bind: IpAddr = match self.bind {
            Some(b) => b,
            None => config.server.bind.parse().with_context(|| {
                format!(
                    "[server] bind = {:?} is not an IP address, like 127.0.0.1",
                    config.server.bind
                )
            })?,
        };
        let port = self.postgres_port.unwrap_or(config.server.postgres_port);
        let login = Login {
            user: config.server.postgres_user.clone(),
            password: config.server.postgres_password.clone(),
        };
        let loaded = self.input.load(Projection::minimal())?;
        let analyst =
            Analyst::new(Limits::from_config(&loaded.config.sql)).with_journeys(Journeys {
                log: Arc::new(loaded.log),
                config: Arc::new(loaded.config),
            })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the server runtime")?;
        runtime.block_on(async {
            let listener = postgres::bind(SocketAddr::new(bind, port)).await?;
            let address = listener.local_addr()?;
            // One line a script (or a test) can wait for.
            println!(
                "postgres listening on {address}: psql -h {} -p {} -U {} trailmap",
                address.ip(),
                address.port(),
                login.user
            );
            postgres::serve(Arc::new(analyst), listener, login).await?;
            Ok(())
        })
    }
}
