//! Event-to-aggregate freshness of the live pipeline in process: how long an event takes
//! from reaching the source to being counted in the live map, at steady input rates; and
//! the state held per open customer meanwhile.
//!
//! `cargo bench -p trailmap-live --bench freshness`. Input: the `gen` model's traffic in
//! event-time order, held in memory and played by [`Paced`] at each rate (batches of at
//! most `[ingest] linger` = 100 ms of records, as a Kafka micro-batch), while a reader asks
//! for the last hour's map every second, as a dashboard would. An event's freshness counts
//! from when it arrived, so it includes the wait for its batch to be handed on (every event
//! of a batch is counted as old as the batch's first, an upper bound). State is the
//! shards' bytes for open sessions over the customers with open sessions, sampled every
//! second after the first two while input flows: the median sample (and the largest). Not a
//! criterion benchmark: the figure is a latency distribution at a given load, not a time
//! per iteration.

// As the `trailmap` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/traffic.rs"]
mod common;

use common::traffic;
use std::time::{Duration, Instant};
use trailmap_live::{BatchReplay, Paced, PipelineOptions};
use trailmap_model::Config;

/// The first `rows` rows of the stream.
fn first_rows(
    batches: &[arrow::array::RecordBatch],
    rows: usize,
) -> Vec<arrow::array::RecordBatch> {
    let mut out = Vec::new();
    let mut left = rows;
    for b in batches {
        if left == 0 {
            break;
        }
        let n = b.num_rows().min(left);
        out.push(b.slice(0, n));
        left -= n;
    }
    out
}

fn ms(micros: Option<i64>) -> String {
    micros.map_or("-".into(), |us| format!("{:.1}", us as f64 / 1000.0))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let seconds: f64 = std::env::var("FRESHNESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0);
    let batches = traffic(200_000);
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let config = Config::builtin();
    let linger = config.ingest.linger.duration();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "freshness: {total} records of traffic, {seconds} s per rate, 2 shards, 100 ms linger"
    );
    println!(
        "{:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "rate rec/s", "events", "p50 ms", "p99 ms", "max ms", "reached/s", "open", "B/open (max)"
    );
    for rate in [50_000.0, 200_000.0, 500_000.0] {
        let rows = ((rate * seconds) as usize).min(total);
        let source = BatchReplay::new(first_rows(&batches, rows));
        let paced = Paced::new(Box::new(source), rate, linger).expect("rate");
        let options = PipelineOptions {
            shards: 2,
            ..PipelineOptions::default()
        };
        let status = runtime.block_on(async {
            let handle = trailmap_live::start(&config, Box::new(paced), &options).expect("start");
            let started = Instant::now();
            let mut samples = Vec::new();
            // A dashboard's reader: the last hour, once a second.
            while !handle.input_ended() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let status = handle.status().await.expect("status");
                if let Some(now) = status.newest {
                    handle
                        .window(now - 3_600_000_000, now + 1)
                        .await
                        .expect("window");
                }
                // Once the input has ended every session closes: no longer steady.
                let steady = started.elapsed() > Duration::from_secs(2) && !handle.input_ended();
                if steady && status.open_customers > 0 {
                    let per = status.state_bytes / status.open_customers;
                    samples.push((per, status.open_customers));
                }
            }
            let took = started.elapsed();
            let result = handle.finish().await.expect("finish");
            samples.sort_unstable();
            (result.status, took, samples)
        });
        let (status, took, samples) = status;
        let (median, open) = samples.get(samples.len() / 2).copied().unwrap_or_default();
        let most = samples.last().map_or(0, |s| s.0);
        let f = &status.freshness;
        println!(
            "{:>12.0} {:>12} {:>10} {:>10} {:>10} {:>10.0} {:>10} {:>14}",
            rate,
            f.events,
            ms(f.p50_micros),
            ms(f.p99_micros),
            ms(f.max_micros),
            status.ingest.records as f64 / took.as_secs_f64(),
            open,
            format!("{median} ({most})"),
        );
    }
}
