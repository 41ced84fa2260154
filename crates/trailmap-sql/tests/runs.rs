//! GROUP BY customer by customer runs ([`trailmap_sql::runs`]) gives what DataFusion's hash
//! aggregation gives, for every query shape it takes over, with customers cut across
//! batches and partitions; and it leaves alone the aggregations it cannot do exactly.

use datafusion::arrow::util::pretty::pretty_format_batches;
use std::io::Write;
use trailmap_model::Config;
use trailmap_sql::{Analyst, Journeys, Limits};

mod common;

const FUNNEL: &str = "window_funnel(86400, '', ts, touchpoint = 'signup', \
                      touchpoint = 'trial_start', touchpoint = 'purchase')";

/// Queries the rule takes over.
fn by_runs() -> Vec<String> {
    vec![
        format!(
            "SELECT customer, count(*), min(ts), max(ts), {FUNNEL} FROM events GROUP BY customer"
        ),
        "SELECT customer, sequence_count('(?1).*(?2)', ts, touchpoint = 'home', \
         touchpoint = 'purchase'), retention(touchpoint = 'home', touchpoint = 'purchase') \
         FROM events WHERE touchpoint <> 'ticket_opened' GROUP BY customer"
            .into(),
        "SELECT c, count(*) FILTER (WHERE touchpoint = 'home'), sum(session) \
         FROM (SELECT customer AS c, touchpoint, session FROM events) GROUP BY c"
            .into(),
        format!(
            "SELECT level, count(*) FROM (SELECT customer, {FUNNEL} AS level FROM events \
             GROUP BY customer) GROUP BY level"
        ),
        "SELECT customer, count(*), sum(duration), max(\"to\") FROM transitions GROUP BY customer"
            .into(),
        "SELECT customer, count(*) FROM journeys GROUP BY customer HAVING count(*) < 3".into(),
        "SELECT customer, count(*) FROM events WHERE touchpoint = 'nowhere' GROUP BY customer"
            .into(),
        "SELECT customer, count(*) AS n FROM events GROUP BY customer ORDER BY n DESC, \
         customer LIMIT 7"
            .into(),
    ]
}

/// Queries it must leave to the hash aggregation.
fn by_hashing() -> Vec<&'static str> {
    vec![
        "SELECT touchpoint, count(*) FROM events GROUP BY touchpoint",
        "SELECT customer, touchpoint, count(*) FROM events GROUP BY customer, touchpoint",
        "SELECT customer, array_agg(touchpoint ORDER BY ts DESC) FROM events GROUP BY customer",
        "SELECT customer, count(DISTINCT touchpoint) FROM events GROUP BY customer",
        // Each customer twice in a partition (and in two), runs broken.
        "SELECT customer, count(*) FROM (SELECT customer FROM events UNION ALL \
         SELECT customer FROM transitions) GROUP BY customer",
    ]
}

/// 2,000 customers of 1 to 60 events, rows interleaved across customers (the log groups
/// them), long gaps now and then (several sessions), some long names.
fn journeys(scope: &str) -> Journeys {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.csv");
    let mut csv = std::fs::File::create(&path).expect("events.csv");
    writeln!(csv, "customer_id,ts,touchpoint").expect("write");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let touchpoints = ["home", "signup", "trial_start", "purchase", "ticket_opened"];
    let lengths: Vec<u64> = (0..2000).map(|_| 1 + next() % 60).collect();
    for round in 0..60u64 {
        for (c, &len) in lengths.iter().enumerate() {
            if round >= len {
                continue;
            }
            let minutes = round * 20 + (next() % 4) * 600 + next() % 10;
            let name = if c % 7 == 0 {
                format!("a-customer-name-too-long-for-a-view-{c}")
            } else {
                format!("c{c}")
            };
            let touchpoint = touchpoints[(next() % 5) as usize];
            writeln!(
                csv,
                "{name},2026-03-{:02}T{:02}:{:02}:00Z,{touchpoint}",
                1 + minutes / 1440,
                minutes / 60 % 24,
                minutes % 60
            )
            .expect("write");
        }
    }
    drop(csv);
    let config =
        Config::from_toml_str(&format!("[sessions]\nscope = \"{scope}\"\n")).expect("config");
    common::stitch_csv(&path, config, 1000)
}

async fn session(runs: bool, journeys: &Journeys, partitions: usize, batch: usize) -> Analyst {
    let analyst = if runs {
        Analyst::default()
    } else {
        Analyst::hashing_groups(Limits::default())
    };
    let analyst = analyst.with_journeys(journeys.clone()).expect("tables");
    for set in [
        format!("SET datafusion.execution.target_partitions = {partitions}"),
        format!("SET datafusion.execution.batch_size = {batch}"),
    ] {
        analyst.ctx.sql(&set).await.expect("set");
    }
    analyst
}

/// The result's rows as text, sorted (row order is not part of a GROUP BY's answer).
async fn rows(analyst: &Analyst, sql: &str) -> Vec<String> {
    let batches = analyst
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let text = pretty_format_batches(&batches).expect("format").to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

async fn plan(analyst: &Analyst, sql: &str) -> String {
    let explained = analyst
        .query(&format!("EXPLAIN {sql}"))
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
    pretty_format_batches(&explained)
        .expect("format")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_answer_as_hashing_does() {
    for scope in ["customer", "session"] {
        let journeys = journeys(scope);
        assert!(journeys.log.num_events() > 30_000);
        // Batches of 7 rows cut most customers; of 100, many; of 65536, a few.
        for (partitions, batch) in [(1, 7), (2, 100), (3, 65536)] {
            let runs = session(true, &journeys, partitions, batch).await;
            let hashing = session(false, &journeys, partitions, batch).await;
            for sql in by_runs() {
                let planned = plan(&runs, &sql).await;
                assert!(planned.contains("RunAggregateExec"), "{sql}\n{planned}");
                assert!(
                    !plan(&hashing, &sql).await.contains("RunAggregateExec"),
                    "{sql}"
                );
                let expected = rows(&hashing, &sql).await;
                assert!(expected.len() > 4 || sql.contains("nowhere"), "{sql}");
                assert_eq!(
                    rows(&runs, &sql).await,
                    expected,
                    "{sql} ({scope}, {partitions} partitions, batches of {batch})"
                );
            }
            for sql in by_hashing() {
                let planned = plan(&runs, sql).await;
                assert!(!planned.contains("RunAggregateExec"), "{sql}\n{planned}");
                assert_eq!(rows(&runs, sql).await, rows(&hashing, sql).await, "{sql}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_counts_the_groups_out() {
    let journeys = journeys("customer");
    let analyst = session(true, &journeys, 2, 4096).await;
    let sql = "EXPLAIN ANALYZE SELECT customer, count(*) FROM events GROUP BY customer";
    let batches = analyst.query(sql).await.expect("explain analyze");
    let text = pretty_format_batches(&batches).expect("format").to_string();
    let line = text
        .lines()
        .find(|l| l.contains("RunAggregateExec"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("output_rows=2.00 K"), "{line}");
}
