//! `trailmap demo`: the main job on an embedded default. Generated omnichannel traffic
//! (the `gen` model, identify calls included) streams through the live pipeline at a
//! steady rate, and the journey map is served over HTTP while it fills. No Kafka, no
//! files, no other service.
//!
//! Unless `--no-capture`, the HTTP server also takes Segment calls (`POST /v1/track`,
//! `/v1/page`, `/v1/identify`, `/v1/batch`, …, as `serve --capture` does) into the same
//! pipeline, counted as the source `capture`. The generated events carry their own
//! (historical) times and captured ones carry now, so the two are [`Merged`]: each keeps its
//! own partitions and so its own watermark, and neither makes the other late. The input then
//! never ends: the demo runs until Ctrl-C.

use super::live::LiveRun;
use super::serve::bind_address;
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use trailmap_gen::GenOptions;
use trailmap_ingest::{DeadLetters, IngestOptions, Projection};
use trailmap_live::source::Merged;
use trailmap_live::{GeneratorSource, LiveSource, Paced, PipelineOptions};
use trailmap_model::config::{SourceConfig, SourceKind};
use trailmap_model::{Catalog, Config};
use trailmap_server::Capture;

/// The write key the demo takes Segment calls with when the config sets no `[server]
/// write_keys` (on a loopback address only, as the PostgreSQL endpoint asks no password
/// there only).
pub const DEMO_WRITE_KEY: &str = "trailmap-demo";

/// The `source` captured calls are counted as, apart from the generated `clickstream`.
pub const CAPTURE_SOURCE: &str = "capture";

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

    /// Do not take Segment calls on the HTTP port. By default the demo does (POST
    /// /v1/track, /v1/page, /v1/identify, /v1/batch, …, with a key from [server] write_keys,
    /// or `trailmap-demo` when none is set and the demo listens on loopback), mapped like
    /// clickstream files and counted as the source `capture`; its input then never ends.
    #[arg(long)]
    no_capture: bool,
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
        let paced = Paced::new(
            Box::new(generated),
            self.rate,
            config.ingest.linger.duration(),
        )?;
        eprintln!(
            "demo: {} generated customers over {} days, {} records/s; Ctrl-C to stop",
            self.customers, self.days, self.rate
        );
        let (source, capture): (Box<dyn LiveSource>, _) = if self.no_capture {
            (Box::new(paced), None)
        } else {
            let (captured, capture) = segment_capture(&config, address)?;
            let merged = Merged::new(vec![Box::new(paced), captured]);
            (Box::new(merged), Some(capture))
        };
        let outcome = LiveRun {
            config: &config,
            pipeline: PipelineOptions::default(),
            http: Some(address),
            readiness: None,
            keep_serving: true,
            capture,
            postgres: Some(SocketAddr::new(
                address.ip(),
                self.postgres_port.unwrap_or(config.server.postgres_port),
            )),
            // The demo starts from nothing each time; so do its alerts.
            alerts: true,
            alert_state: None,
            store: None,
        }
        .run(source)?;
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

/// The capture source for Segment calls on `address` (the HTTP server's), mapped like the
/// config's clickstream source (or the built-in clickstream mapping) but counted as
/// [`CAPTURE_SOURCE`], and what the server needs to take them: the inlet and the write keys
/// ([`DEMO_WRITE_KEY`] when the config has none, on loopback only). Says where to send them.
fn segment_capture(
    config: &Config,
    address: SocketAddr,
) -> anyhow::Result<(Box<dyn LiveSource>, Capture)> {
    let (write_keys, key_said) = if config.server.write_keys.is_empty() {
        anyhow::ensure!(
            address.ip().is_loopback(),
            "the demo takes Segment calls on {}, which is not a loopback address: set [server] \
             write_keys = [\"…\"] in the config (the demo key `{DEMO_WRITE_KEY}` is taken on \
             loopback only), or add --no-capture",
            address.ip()
        );
        (
            vec![DEMO_WRITE_KEY.to_string()],
            format!("write key `{DEMO_WRITE_KEY}`"),
        )
    } else {
        (
            config.server.write_keys.clone(),
            "a key from [server] write_keys".to_string(),
        )
    };
    let mut mapping = config
        .sources
        .iter()
        .find(|s| s.kind == SourceKind::Clickstream)
        .cloned()
        .unwrap_or_else(|| SourceConfig::of_kind(SourceKind::Clickstream));
    mapping.name = CAPTURE_SOURCE.to_string();
    let options = IngestOptions {
        catalog: Arc::new(Catalog::compile(&config.catalog)?),
        batch_size: config.ingest.batch_size,
        projection: Projection::default(),
    };
    let dead = DeadLetters::new(&config.ingest.dead_letter, config.ingest.max_errors);
    let (source, inlet) = trailmap_live::capture(&mapping, &options, dead, 1024)?;
    let url = match address.port() {
        0 => "http://<the HTTP address below>".to_string(),
        port => format!("http://{}", SocketAddr::new(address.ip(), port)),
    };
    eprintln!(
        "demo: Segment calls taken too: POST {url}/v1/batch (or /v1/track, /v1/page, \
         /v1/identify, …) with {key_said} as the Basic auth user name, as Segment's libraries \
         send it; counted as source `{CAPTURE_SOURCE}`. Runs until Ctrl-C (--no-capture: the \
         generated traffic only, until it ends)"
    );
    Ok((
        Box::new(source.with_linger(config.ingest.linger.duration())),
        Capture { inlet, write_keys },
    ))
}
