//! Running the live pipeline from the command line, shared by `serve` and `demo`: the HTTP
//! API when asked, a status line on stderr every two seconds, Ctrl-C to stop.

use crate::input::InputArgs;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use trailmap_ingest::{DeadLetters, IngestOptions, Projection};
use trailmap_live::FileReplay;
use trailmap_live::alert::Webhooks;
use trailmap_live::{
    AlertStatus, Alerts, AlertsHandle, LiveHandle, LiveResult, LiveSource, LiveStatus,
    PipelineOptions,
};
use trailmap_model::time::Span;
use trailmap_model::{Catalog, Config};
use trailmap_server::{AppState, Capture, Readiness, SqlAnswer, SqlRunner};
use trailmap_sql::live::Snapshot;
use trailmap_sql::postgres::{self, Login};
use trailmap_sql::{Analyst, Limits};

use super::sql::tabulate;

pub struct LiveRun<'a> {
    pub config: &'a Config,
    pub pipeline: PipelineOptions,
    /// Serve the HTTP API here (port 0: a free one).
    pub http: Option<SocketAddr>,
    /// Whether the source can read, for `/readyz` and the status line.
    pub readiness: Option<Readiness>,
    /// After the input ends, keep serving until Ctrl-C (otherwise return at once).
    pub keep_serving: bool,
    /// Segment-compatible capture on the HTTP server, into the pipeline's capture source.
    pub capture: Option<Capture>,
    /// Serve the live tables over the PostgreSQL wire protocol here (port 0: a free one).
    pub postgres: Option<SocketAddr>,
    /// Evaluate the config's alert rules while running (a replay that backtests them
    /// afterwards does not).
    pub alerts: bool,
    /// Where alert states are kept across restarts; `None`: in memory.
    pub alert_state: Option<PathBuf>,
    /// The local data dir the pipeline stores events in, served as `stored_events`.
    pub store: Option<String>,
}

/// What a run leaves: the pipeline's final result, how long it ran, the alert rules' states.
pub struct LiveOutcome {
    pub result: LiveResult,
    pub took: Duration,
    pub alerts: Vec<AlertStatus>,
}

/// An analyst session over the live tables. It holds the pipeline weakly: the pipeline's
/// end is not held up by an open SQL connection.
fn live_analyst(
    config: &Config,
    handle: &Arc<LiveHandle>,
    store: Option<&str>,
) -> anyhow::Result<Arc<Analyst>> {
    let weak = Arc::downgrade(handle);
    let snapshot: Snapshot = Arc::new(move || {
        let weak = weak.clone();
        Box::pin(async move {
            let handle = weak
                .upgrade()
                .ok_or_else(|| "the live pipeline has stopped".to_string())?;
            handle.report(None).await.map_err(|e| e.to_string())
        })
    });
    let mut analyst = Analyst::new(Limits::from_config(&config.sql)).with_live(snapshot)?;
    if let Some(dir) = store {
        analyst = analyst.with_store(dir)?;
    }
    Ok(Arc::new(analyst))
}

/// `/api/sql` on `analyst`.
fn sql_runner(analyst: Arc<Analyst>) -> SqlRunner {
    Arc::new(move |sql: String| {
        let analyst = analyst.clone();
        Box::pin(async move {
            let batches = analyst.query(&sql).await.map_err(|e| e.to_string())?;
            let t = tabulate(&batches).map_err(|e| e.to_string())?;
            Ok(SqlAnswer {
                columns: t.header,
                rows: t.objects,
            })
        })
    })
}

impl LiveRun<'_> {
    /// Runs the pipeline on `source` until its input ends (or Ctrl-C); returns the final
    /// result and how long it ran.
    pub fn run(mut self, source: Box<dyn LiveSource>) -> anyhow::Result<LiveOutcome> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the live runtime")?;
        runtime.block_on(async {
            let handle = Arc::new(trailmap_live::start(self.config, source, &self.pipeline)?);
            let started = Instant::now();
            let analyst = live_analyst(self.config, &handle, self.store.as_deref())?;
            let listener = match self.http {
                Some(address) => Some(trailmap_server::bind(address).await?),
                None => None,
            };
            let external_url = match &listener {
                Some(l) => format!("http://{}/", l.local_addr()?),
                None => String::new(),
            };
            let alerts = self.start_alerts(&handle, external_url)?;
            let (stop_http, http, served) = match listener {
                Some(listener) => {
                    let address = listener.local_addr()?;
                    // One line a script (or a test) can wait for.
                    println!(
                        "http listening on http://{address}/ (journey map: /api/map, funnels: /api/funnels, metrics: /metrics)"
                    );
                    let mut state = AppState::new(handle.clone(), self.readiness.clone());
                    if let Some(capture) = &self.capture {
                        state = state.with_capture(capture.clone());
                    }
                    state = state.with_sql(sql_runner(analyst.clone()));
                    if let Some(alerts) = &alerts {
                        state = state.with_alerts(alerts.clone());
                    }
                    let served = state.clone();
                    let router = trailmap_server::router(state);
                    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                    let task = tokio::spawn(trailmap_server::serve(listener, router, async {
                        let _ = stopped.await;
                    }));
                    (Some(stop), Some(task), Some(served))
                }
                None => (None, None, None),
            };
            let postgres = match self.postgres {
                Some(address) => {
                    let listener = postgres::bind(address).await?;
                    let address = listener.local_addr()?;
                    let login = Login {
                        user: self.config.server.postgres_user.clone(),
                        password: self.config.server.postgres_password.clone(),
                    };
                    println!(
                        "postgres listening on {address}: psql -h {} -p {} -U {} trailmap (tables live_touchpoints, live_transitions, live_funnel_steps)",
                        address.ip(),
                        address.port(),
                        login.user
                    );
                    Some(tokio::spawn(postgres::serve(analyst.clone(), listener, login)))
                }
                None => None,
            };
            drop(analyst);
            // The server's copy of the inlet is the only one left: once it stops, the
            // capture source ends.
            self.capture = None;
            let watched = self.watch(&handle).await;
            if let Some(task) = postgres {
                task.abort();
            }
            watched?;
            if let (Some(stop), Some(task), Some(served)) = (stop_http, http, served) {
                served.close();
                drop(served);
                let _ = stop.send(());
                task.await.context("the HTTP server failed")??;
            }
            let statuses = match &alerts {
                Some(alerts) => {
                    alerts.stop().await;
                    alerts.statuses()
                }
                None => Vec::new(),
            };
            let handle = Arc::try_unwrap(handle).map_err(|_| {
                anyhow::anyhow!("the HTTP server still holds the pipeline after stopping")
            })?;
            let result = handle.finish().await?;
            anyhow::Ok(LiveOutcome {
                result,
                took: started.elapsed(),
                alerts: statuses,
            })
        })
    }

    /// Evaluates the config's alert rules on the running pipeline, if it has any.
    fn start_alerts(
        &self,
        handle: &Arc<LiveHandle>,
        external_url: String,
    ) -> anyhow::Result<Option<AlertsHandle>> {
        if !self.alerts || self.config.alerts.is_empty() {
            return Ok(None);
        }
        let mut alerts = Alerts::new(self.config)?;
        if let Some(path) = &self.alert_state {
            alerts = alerts.kept_in(path)?;
        }
        let webhooks = Webhooks {
            urls: self.config.alerting.webhooks.clone(),
            retries: self.config.alerting.retries,
            backoff: Duration::from_secs(1),
            external_url,
        };
        Ok(Some(trailmap_live::alert::spawn(
            alerts,
            Arc::downgrade(handle),
            webhooks,
        )?))
    }

    /// Prints the status every two seconds until the input ends (or, when serving on, until
    /// Ctrl-C); Ctrl-C stops reading.
    async fn watch(&self, handle: &LiveHandle) -> anyhow::Result<()> {
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        let mut shown = Instant::now();
        let mut said_ended = false;
        loop {
            if handle.input_ended() {
                if !self.keep_serving {
                    return Ok(());
                }
                if !said_ended {
                    said_ended = true;
                    let s = handle.status().await?;
                    eprintln!(
                        "live: the input has ended ({} events); still serving the map, Ctrl-C to stop",
                        s.stitch.events
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = &mut interrupted => {
                    eprintln!("live: interrupted; counting what was read");
                    handle.stop();
                    return Ok(());
                }
            }
            if !said_ended && shown.elapsed() >= Duration::from_secs(2) {
                shown = Instant::now();
                let s = handle.status().await?;
                eprintln!("{}", self.status_line(&s));
            }
        }
    }

    fn status_line(&self, s: &LiveStatus) -> String {
        let ready = match self.readiness.as_ref().map(|r| r()) {
            Some(Err(reason)) => format!(", NOT READY: {reason}"),
            _ => String::new(),
        };
        format!(
            "live: {} events, {} customers open ({} events held, {} bytes each), watermark {}, freshness p99 {}{ready}",
            s.stitch.events,
            s.open_customers,
            s.retained_events,
            s.state_bytes / s.open_customers.max(1),
            match s.watermark {
                None => "none yet".to_string(),
                Some(i64::MAX) => "past the end of input".to_string(),
                Some(w) => chrono::DateTime::from_timestamp_micros(w)
                    .map_or(w.to_string(), |t| t.to_rfc3339()),
            },
            s.freshness
                .p99_micros
                .map_or("-".to_string(), |us| format!("{:.0} ms", us as f64 / 1e3)),
        )
    }
}

/// The input files as a live source, each a partition, rejects to the config's dead
/// letters (`serve --replay`, and what [`replay_in_hindsight`] reads).
pub fn file_replay(input: &InputArgs, config: &Config) -> anyhow::Result<FileReplay> {
    let inputs = input.file_inputs(config)?;
    let options = IngestOptions {
        catalog: Arc::new(Catalog::compile(&config.catalog)?),
        batch_size: config.ingest.batch_size,
        projection: Projection::minimal(),
    };
    let dead = DeadLetters::new(&config.ingest.dead_letter, config.ingest.max_errors);
    Ok(FileReplay::open(&inputs, &options, dead)?)
}

/// The input files through the live pipeline to their end, with no lateness horizon
/// (files come in any order, grouped by customer say, so no event is too late): the live
/// counts a run over these events ends with, once everything late has been corrected. What
/// `alerts test` replays rules over and `map` draws.
pub fn replay_in_hindsight(input: &InputArgs, config: &Config) -> anyhow::Result<LiveOutcome> {
    let source = file_replay(input, config)?;
    let mut config = config.clone();
    config.sessions.allowed_lateness = Span::from_secs(100 * 366 * 86_400);
    LiveRun {
        config: &config,
        pipeline: PipelineOptions::default(),
        http: None,
        readiness: None,
        keep_serving: false,
        capture: None,
        postgres: None,
        alerts: false,
        alert_state: None,
        store: None,
    }
    .run(Box::new(source))
}
