//! `trailmap demo`: the main job on an embedded default. Generated omnichannel traffic
//! (the `gen` model, identify calls included) streams through the live pipeline at a
//! steady rate, and the journey map is served over HTTP while it fills. No Kafka, no
//! files, no other service.

use super::live::LiveRun;
use super::serve::bind_address;
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use trailmap_gen::GenOptions;
use trailmap_live::{GeneratorSource, Paced, PipelineOptions};
use trailmap_model::Config;

#[derive(Args)]
pub struct DemoArgs {
    /// Configuration file (default: the built-in copy of config/trailmap.toml): its
    /// touchpoints, stages, journeys (funnels) and sessions shape the map.
    #[arg(long, env = "TRAILMAP_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// HTTP port; 0 picks a free one [default: [server] http_port, 8080].
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,

    /// Address to listen on [default: [server] bind, 127.0.0.1].
    #[arg(long, value_name = "ADDRESS")]
    bind: Option<IpAddr>,

    /// Customers of the generated traffic.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    customers: u64,

    /// Days the customers' first touches spread over.
    #[arg(long, default_value_t = 28, value_name = "DAYS")]
    days: u32,

    /// PostgreSQL port for the live tables (psql, BI tools; user and database `trailmap`,
    /// no password on loopback); 0 picks a free one [default: [server] postgres_port, 5433].
    #[arg(long, value_name = "PORT")]
    postgres_port: Option<u16>,

    /// Records per second of wall time.
    #[arg(long, default_value_t = 2_000.0, value_name = "RECORDS_PER_SECOND")]
    rate: f64,

    /// Seed of the generated traffic.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

impl DemoArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::builtin(),
        };
        let port = self.port.unwrap_or(config.server.http_port);
        let address = SocketAddr::new(bind_address(self.bind, &config)?, port);
        let opts = GenOptions {
            customers: self.customers,
            days: self.days,
            seed: self.seed,
            ..GenOptions::default()
        };
        let generated = GeneratorSource::new(opts, config.ingest.batch_size);
        let source = Paced::new(
            Box::new(generated),
            self.rate,
            config.ingest.linger.duration(),
        )?;
        eprintln!(
            "demo: {} generated customers over {} days, {} records/s; Ctrl-C to stop",
            self.customers, self.days, self.rate
        );
        let outcome = LiveRun {
            config: &config,
            pipeline: PipelineOptions::default(),
            http: Some(address),
            readiness: None,
            keep_serving: true,
            capture: None,
            postgres: Some(SocketAddr::new(
                address.ip(),
                self.postgres_port.unwrap_or(config.server.postgres_port),
            )),
            // The demo starts from nothing each time; so do its alerts.
            alerts: true,
            alert_state: None,
            store: None,
        }
        .run(Box::new(source))?;
        let (result, took) = (outcome.result, outcome.took);
        let s = &result.status;
        eprintln!(
            "demo: {} events in {:.0}s, {} journeys",
            s.stitch.events,
            took.as_secs_f64(),
            result.map.total().journeys
        );
        Ok(())
    }
}
