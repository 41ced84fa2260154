//! `trailmap serve`: the journeys read from files, served to analysts over the PostgreSQL
//! wire protocol (`psql`, BI tools), read-only and bounded like `trailmap sql`; or, with
//! `--generate`, `--replay` or `--kafka`, the live pipeline running on a stream until it
//! ends (or, for Kafka, until interrupted).

use crate::input::InputArgs;
use anyhow::Context;
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use trailmap_gen::GenOptions;
use trailmap_ingest::{DeadLetters, IngestOptions, Projection};
use trailmap_kafka::{KafkaHealth, KafkaSource, ReadUntil};
use trailmap_live::{
    DurableSource, GeneratorSource, LiveSource, MapReport, Paced, PipelineOptions,
};
use trailmap_model::Catalog;
use trailmap_model::config::{SourceConfig, SourceKind};
use trailmap_server::{Capture, Readiness};
use trailmap_sql::postgres::{self, Login};
use trailmap_sql::{Analyst, Journeys, Limits};

use super::common::DipArgs;
use super::live::{LiveRun, file_replay};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Address to listen on [default: [server] bind, 127.0.0.1].
    #[arg(long, value_name = "ADDRESS")]
    bind: Option<IpAddr>,

    /// PostgreSQL port; 0 picks a free one [default: [server] postgres_port, 5433]. With a
    /// live pipeline, the live tables are served there only when this is given.
    #[arg(long, value_name = "PORT")]
    postgres_port: Option<u16>,

    /// Run the live pipeline on generated traffic: this many customers of the `gen` model,
    /// streamed in event-time order. Prints the live map as JSON when the stream ends.
    #[arg(long, value_name = "CUSTOMERS", conflicts_with_all = ["replay", "kafka"])]
    generate: Option<u64>,

    /// Days the generated customers' first touches spread over.
    #[arg(long, default_value_t = 28, value_name = "DAYS")]
    days: u32,

    /// Seed of the generated traffic.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    #[command(flatten)]
    dip: DipArgs,

    /// Records per second of wall time, generated or replayed, each batch handed on within
    /// `[ingest] linger` of its first record [default: as fast as the pipeline takes them].
    #[arg(long, value_name = "RECORDS_PER_SECOND", conflicts_with = "kafka")]
    rate: Option<f64>,

    /// Run the live pipeline on events sent to the HTTP server in Segment's format
    /// (POST /v1/track, /v1/page, /v1/identify, /v1/batch, …, with a key from [server]
    /// write_keys), mapped like clickstream files. Serves the HTTP API too (--http-port, or
    /// [server] http_port); Ctrl-C stops it and prints the live map as JSON.
    #[arg(long, conflicts_with_all = ["generate", "replay", "kafka"])]
    capture: bool,

    /// Run the live pipeline replaying the input files (each a partition, a batch from each
    /// in turn). Prints the live map as JSON when the files end.
    #[arg(long, conflicts_with = "kafka")]
    replay: bool,

    /// Run the live pipeline on the Kafka topics of the config's sources (`topic = …`),
    /// as a member of the consumer group ([kafka] in the config). Ctrl-C stops it and prints
    /// the live map as JSON.
    #[arg(long)]
    kafka: bool,

    /// Kafka bootstrap brokers [default: [kafka] brokers].
    #[arg(long, value_name = "HOST:PORT", requires = "kafka")]
    brokers: Option<String>,

    /// With --kafka: read every partition up to the end it has now, then stop and print
    /// the live map (like `kcat -e`).
    #[arg(long, requires = "kafka")]
    until_end: bool,

    /// Where events and checkpoints (with --kafka) and alert states are kept [default:
    /// [storage] data_dir]. A restart replays what is stored and resumes after it.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,

    /// Shards customers are spread over [default: one fewer than the cores, at least one;
    /// the stitcher takes a core].
    #[arg(long, value_name = "N")]
    shards: Option<usize>,

    /// With a live pipeline: serve the HTTP API (/api/map, /metrics, /readyz, ...) on this
    /// port while it runs; 0 picks a free one.
    #[arg(long, value_name = "PORT")]
    http_port: Option<u16>,
}

impl ServeArgs {
    pub fn run(self) -> anyhow::Result<()> {
        if self.generate.is_some() || self.replay || self.kafka || self.capture {
            return self.run_live();
        }
        let config = self.input.config()?;
        anyhow::ensure!(
            self.http_port.is_none(),
            "--http-port serves a live pipeline: add --generate, --replay or --kafka"
        );
        let bind = self.bind_address(&config)?;
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

impl ServeArgs {
    fn bind_address(&self, config: &trailmap_model::Config) -> anyhow::Result<IpAddr> {
        bind_address(self.bind, config)
    }

    /// The live pipeline on a finite stream: status on stderr while it runs, the map on
    /// stdout when it ends.
    fn run_live(self) -> anyhow::Result<()> {
        let mut config = self.input.config()?;
        if let Some(brokers) = &self.brokers {
            config.kafka.brokers = brokers.clone();
        }
        let mut kafka_health: Option<Arc<KafkaHealth>> = None;
        let mut pipeline = PipelineOptions::default();
        if let Some(shards) = self.shards {
            anyhow::ensure!(shards > 0, "--shards must be at least 1");
            pipeline.shards = shards;
        }
        // Kafka events are stored, so they keep their ids and properties; replayed and
        // generated ones only feed the map.
        let ingest_options = |projection| -> anyhow::Result<IngestOptions> {
            Ok(IngestOptions {
                catalog: Arc::new(Catalog::compile(&config.catalog)?),
                batch_size: config.ingest.batch_size,
                projection,
            })
        };
        let dead = DeadLetters::new(&config.ingest.dead_letter, config.ingest.max_errors);
        let mut capture = None;
        let source: Box<dyn LiveSource> = if self.capture {
            anyhow::ensure!(
                !config.server.write_keys.is_empty(),
                "serve --capture takes calls signed with a write key: set [server] write_keys = [\"…\"] in the config"
            );
            let clickstream = config
                .sources
                .iter()
                .find(|s| s.kind == SourceKind::Clickstream)
                .cloned()
                .unwrap_or_else(|| SourceConfig::of_kind(SourceKind::Clickstream));
            let (source, inlet) = trailmap_live::capture(
                &clickstream,
                &ingest_options(Projection::default())?,
                dead,
                1024,
            )?;
            capture = Some(Capture {
                inlet,
                write_keys: config.server.write_keys.clone(),
            });
            Box::new(source.with_linger(config.ingest.linger.duration()))
        } else if let Some(customers) = self.generate {
            let opts = GenOptions {
                customers,
                days: self.days,
                seed: self.seed,
                ..GenOptions::default()
            };
            let model = self.dip.apply(trailmap_gen::JourneyModel::default())?;
            Box::new(GeneratorSource::of_model(
                model,
                opts,
                config.ingest.batch_size,
            ))
        } else if self.kafka {
            let until = if self.until_end {
                ReadUntil::End
            } else {
                ReadUntil::Forever
            };
            let data_dir = self.data_dir.as_deref().unwrap_or(&config.storage.data_dir);
            let store = trailmap_store::Store::open(data_dir)?;
            let checkpoint = trailmap_live::durable::resume(&store)?;
            if !checkpoint.segments.is_empty() {
                eprintln!(
                    "store: {} events stored in {data_dir}; resuming Kafka after them",
                    checkpoint.rows()
                );
            }
            let source = KafkaSource::connect(
                &config,
                ingest_options(Projection::default())?,
                dead,
                until,
                &checkpoint.positions,
            )?;
            kafka_health = Some(source.health());
            Box::new(
                DurableSource::new(
                    store,
                    checkpoint,
                    Box::new(source),
                    config.storage.checkpoint_every.duration(),
                )
                .keep_state_every(config.storage.snapshot_every.duration())
                .compact_to(config.storage.compact_rows),
            )
        } else {
            Box::new(file_replay(&self.input, &config)?)
        };
        let source: Box<dyn LiveSource> = match self.rate {
            Some(rate) => Box::new(Paced::new(source, rate, config.ingest.linger.duration())?),
            None => source,
        };
        let readiness: Option<Readiness> = kafka_health.map(|h| -> Readiness {
            Arc::new(move || {
                if h.is_ready() {
                    Ok(())
                } else {
                    Err(format!(
                        "kafka unreachable ({})",
                        h.last_error().unwrap_or_default()
                    ))
                }
            })
        });
        let http = match (self.http_port, self.capture) {
            (Some(port), _) => Some(SocketAddr::new(self.bind_address(&config)?, port)),
            (None, true) => Some(SocketAddr::new(
                self.bind_address(&config)?,
                config.server.http_port,
            )),
            (None, false) => None,
        };
        let result = LiveRun {
            config: &config,
            pipeline,
            http,
            readiness,
            keep_serving: false,
            capture,
            postgres: match self.postgres_port {
                Some(port) => Some(SocketAddr::new(self.bind_address(&config)?, port)),
                None => None,
            },
            alerts: true,
            alert_state: trailmap_live::alert::state_path(
                &config,
                self.data_dir.as_deref().unwrap_or(&config.storage.data_dir),
            ),
            // Only Kafka input is stored; local data dirs are served as `stored_events`.
            store: Some(
                self.data_dir
                    .clone()
                    .unwrap_or_else(|| config.storage.data_dir.clone()),
            )
            .filter(|dir| self.kafka && (!dir.contains("://") || dir.starts_with("file://"))),
        }
        .run(source)?;
        let (result, took, alerts) = (result.result, result.took, result.alerts);
        let s = &result.status;
        eprintln!(
            "live: {} records ({} rejected), {} events in {:.1}s ({:.0}/s), {} identity links, {} merges, {} corrected late, {} beyond the horizon",
            s.ingest.records,
            s.ingest.rejected,
            s.stitch.events,
            took.as_secs_f64(),
            s.stitch.events as f64 / took.as_secs_f64().max(1e-9),
            s.stitch.identity_links,
            s.stitch.merges,
            s.shards.corrected,
            s.stitch.late,
        );
        let report = MapReport::new(&result.map.total(), &result.names, s.newest);
        let out = serde_json::json!({ "status": s, "map": report, "alerts": alerts });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(())
    }
}

/// `--bind`, or `[server] bind`.
pub fn bind_address(
    flag: Option<IpAddr>,
    config: &trailmap_model::Config,
) -> anyhow::Result<IpAddr> {
    match flag {
        Some(b) => Ok(b),
        None => config.server.bind.parse().with_context(|| {
            format!(
                "[server] bind = {:?} is not an IP address, like 127.0.0.1",
                config.server.bind
            )
        }),
    }
}
