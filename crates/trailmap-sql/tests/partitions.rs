//! The journey tables' scans hand each partition whole customers, placed where
//! DataFusion's own hash repartitioning would place them, and say so. These tests check
//! that the claim is true (any partition count), that GROUP BY customer uses it (no
//! repartition), and that joins, which trust it, still give the right answers.

use datafusion::arrow::array::{AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::common::hash_utils::create_hashes;
use datafusion::datasource::MemTable;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_expr::expressions::col;
use datafusion::physical_plan::repartition::{REPARTITION_RANDOM_STATE, RepartitionExec};
use datafusion::physical_plan::{ExecutionPlan, Partitioning, collect, execute_stream_partitioned};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use trailmap_model::Config;
use trailmap_sql::{Analyst, Journeys, Limits};

mod common;

const CUSTOMERS: usize = 300;

/// Short names and, for every third customer, one too long to live inside a string view.
fn name(c: u64) -> String {
    if c.is_multiple_of(3) {
        format!("customer-with-a-longer-name-{c:04}")
    } else {
        format!("cust-{c:04}")
    }
}

/// 300 customers of 1 to 12 events each, over a few touchpoints, some with long gaps (so
/// some have several sessions), rows interleaved across customers.
fn journeys(scope: &str) -> (Journeys, BTreeMap<String, i64>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.csv");
    let mut csv = std::fs::File::create(&path).expect("events.csv");
    writeln!(csv, "customer_id,ts,touchpoint").expect("write");
    let mut events: BTreeMap<String, i64> = BTreeMap::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let touchpoints = ["home", "signup", "trial_start", "purchase", "ticket_opened"];
    for round in 0..12u64 {
        for c in 0..CUSTOMERS as u64 {
            if round > c % 12 {
                continue;
            }
            let hours = round * 2 + (next() % 3) * 24 * (round % 2);
            let minute = next() % 60;
            let touchpoint = touchpoints[(next() % 5) as usize];
            let customer = name(c);
            writeln!(
                csv,
                "{customer},2026-01-{:02}T{:02}:{minute:02}:00Z,{touchpoint}",
                1 + hours / 24,
                hours % 24
            )
            .expect("write");
            *events.entry(customer).or_default() += 1;
        }
    }
    drop(csv);
    let config =
        Config::from_toml_str(&format!("[sessions]\nscope = \"{scope}\"\n")).expect("config");
    (common::stitch_csv(&path, config, 97), events)
}

async fn analyst(journeys: &Journeys, partitions: usize) -> Analyst {
    partitioned(Analyst::default(), journeys, partitions).await
}

/// `analyst` over `journeys`, scans split in `partitions`.
async fn partitioned(analyst: Analyst, journeys: &Journeys, partitions: usize) -> Analyst {
    let analyst = analyst.with_journeys(journeys.clone()).expect("tables");
    analyst
        .ctx
        .sql(&format!(
            "SET datafusion.execution.target_partitions = {partitions}"
        ))
        .await
        .expect("set partitions");
    analyst
}

/// `(customer, count)` rows of a two-column result.
fn counts(batches: &[RecordBatch]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for b in batches {
        let names = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8).expect("text");
        let names = names.as_string::<i32>();
        let n = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push((names.value(i).to_string(), n.value(i)));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_is_in_the_partition_datafusion_would_hash_it_to() {
    for scope in ["customer", "session"] {
        let (journeys, _) = journeys(scope);
        for partitions in [1, 2, 3, 4] {
            let analyst = analyst(&journeys, partitions).await;
            for (table, query) in [
                ("events", "SELECT customer, ts FROM events"),
                ("transitions", "SELECT ts, customer FROM transitions"),
                ("journeys", "SELECT events, customer FROM journeys"),
            ] {
                let plan = analyst
                    .ctx
                    .sql(query)
                    .await
                    .expect("plan")
                    .create_physical_plan()
                    .await
                    .expect("physical plan");
                let streams =
                    execute_stream_partitioned(plan, analyst.ctx.task_ctx()).expect("execute");
                assert_eq!(streams.len(), partitions, "{table}");
                let mut rows = 0;
                for (p, stream) in streams.into_iter().enumerate() {
                    let batches: Vec<RecordBatch> = stream.try_collect().await.expect("scan");
                    for b in batches {
                        let customer = b.column_by_name("customer").expect("customer column");
                        let mut hashes = vec![0; b.num_rows()];
                        create_hashes(
                            [customer],
                            REPARTITION_RANDOM_STATE.random_state(),
                            &mut hashes,
                        )
                        .expect("hash");
                        for h in hashes {
                            assert_eq!(
                                (h % partitions as u64) as usize,
                                p,
                                "{table} ({scope}) in {partitions} partitions"
                            );
                        }
                        rows += b.num_rows();
                    }
                }
                let expected = match table {
                    "events" => journeys.log.num_events(),
                    "journeys" => journeys.log.num_journeys(journeys.config.sessions.scope),
                    _ => {
                        journeys.log.num_events()
                            - journeys.log.num_journeys(journeys.config.sessions.scope)
                    }
                };
                assert_eq!(
                    rows, expected,
                    "{table} ({scope}) in {partitions} partitions"
                );
            }
        }
    }
}

/// The customers of each partition of `plan`'s output.
async fn customers_by_partition(
    plan: Arc<dyn ExecutionPlan>,
    ctx: &SessionContext,
) -> Vec<BTreeSet<String>> {
    let mut parts = Vec::new();
    for stream in execute_stream_partitioned(plan, ctx.task_ctx()).expect("execute") {
        let batches: Vec<RecordBatch> = stream.try_collect().await.expect("scan");
        let mut customers = BTreeSet::new();
        for b in &batches {
            let names =
                datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8).expect("text");
            let names = names.as_string::<i32>();
            customers.extend((0..b.num_rows()).map(|i| names.value(i).to_string()));
        }
        parts.push(customers);
    }
    parts
}

/// Against DataFusion's own repartitioning, not just its hash function: the rows of the
/// scan, gathered into one partition and repartitioned by customer, land in the same
/// partitions the scan put them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_hold_what_datafusions_repartitioning_would_put_there() {
    let (journeys, _) = journeys("session");
    for partitions in [2, 3] {
        let analyst = analyst(&journeys, partitions).await;
        let scan = analyst
            .ctx
            .sql("SELECT customer, ts FROM events")
            .await
            .expect("plan")
            .create_physical_plan()
            .await
            .expect("physical plan");
        let schema = scan.schema();
        let ours = customers_by_partition(scan.clone(), &analyst.ctx).await;
        let all: Vec<RecordBatch> = collect(scan, analyst.ctx.task_ctx())
            .await
            .expect("collect");
        let gathered =
            MemorySourceConfig::try_new_exec(&[all], schema.clone(), None).expect("memory");
        let customer = col("customer", &schema).expect("column");
        let repartitioned = Arc::new(
            RepartitionExec::try_new(gathered, Partitioning::Hash(vec![customer], partitions))
                .expect("repartition"),
        );
        let theirs = customers_by_partition(repartitioned, &analyst.ctx).await;
        assert_eq!(ours, theirs, "{partitions} partitions");
        assert_eq!(
            ours.iter().map(BTreeSet::len).sum::<usize>(),
            CUSTOMERS,
            "every customer in exactly one partition"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_customer_aggregates_each_partition_alone_and_joins_stay_right() {
    let (journeys, events) = journeys("session");
    let expected: Vec<(String, i64)> = events.clone().into_iter().collect();
    assert_eq!(expected.len(), CUSTOMERS);
    // Transitions per customer: events less sessions.
    let mut sessions: BTreeMap<String, i64> = BTreeMap::new();
    for s in 0..journeys.log.num_sessions() {
        let c = journeys.log.session_customer()[s];
        *sessions
            .entry(journeys.log.customer_key(c).to_string())
            .or_default() += 1;
    }
    for (runs, partitions) in [(true, 1), (true, 2), (true, 3), (false, 2), (false, 3)] {
        let session = if runs {
            Analyst::default()
        } else {
            Analyst::hashing_groups(Limits::default())
        };
        let analyst = partitioned(session, &journeys, partitions).await;
        // Joins of small tables would collect one side whole; make them partitioned, the
        // mode that relies on both sides' partitioning agreeing.
        for setting in [
            "datafusion.optimizer.hash_join_single_partition_threshold",
            "datafusion.optimizer.hash_join_single_partition_threshold_rows",
        ] {
            analyst
                .ctx
                .sql(&format!("SET {setting} = 0"))
                .await
                .expect("set join mode");
        }
        let grouped = "SELECT customer, count(*) FROM events GROUP BY customer";
        let explained = analyst
            .query(&format!("EXPLAIN {grouped}"))
            .await
            .expect("explain");
        let plan = datafusion::arrow::util::pretty::pretty_format_batches(&explained)
            .expect("format")
            .to_string();
        if runs {
            // Customer by customer, as the scan hands them: no hashing, no repartition.
            assert!(plan.contains("RunAggregateExec"), "{plan}");
            assert!(!plan.contains("AggregateExec: mode"), "{plan}");
            assert!(!plan.contains("RepartitionExec"), "{plan}");
        } else {
            assert!(plan.contains("mode=SinglePartitioned"), "{plan}");
            assert!(!plan.contains("RepartitionExec"), "{plan}");
        }
        // One row per customer, with all its events: a customer split across partitions
        // would show up twice, each time with part of its count.
        assert_eq!(
            counts(&analyst.query(grouped).await.expect("grouped")),
            expected
        );

        // A join of two of these tables on customer, each side trusted as partitioned.
        let joined = "SELECT e.customer, count(*) FROM events e \
                      JOIN (SELECT customer, count(*) AS n FROM transitions GROUP BY customer) t \
                      ON e.customer = t.customer GROUP BY e.customer";
        let with_transitions: Vec<(String, i64)> = expected
            .iter()
            .filter(|(c, n)| *n > sessions[c])
            .cloned()
            .collect();
        assert_eq!(
            counts(&analyst.query(joined).await.expect("joined")),
            with_transitions
        );

        // A join with a table from elsewhere (plain text names), which is repartitioned.
        let names = StringArray::from_iter_values(events.keys().step_by(2));
        let schema = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(names)]).expect("batch");
        analyst
            .ctx
            .register_table(
                "picked",
                Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("table")),
            )
            .expect("register");
        let picked = "SELECT e.customer, count(*) FROM events e JOIN picked p \
                      ON e.customer = p.name GROUP BY e.customer";
        let every_other: Vec<(String, i64)> = expected.iter().step_by(2).cloned().collect();
        assert_eq!(
            counts(&analyst.query(picked).await.expect("picked")),
            every_other
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_stops_each_partition_early_and_keeps_the_count() {
    let (journeys, _) = journeys("customer");
    let analyst = analyst(&journeys, 2).await;
    let batches = analyst
        .query("SELECT customer, ts FROM events LIMIT 7")
        .await
        .expect("limit");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 7);
    let empty = analyst
        .query("SELECT count(*) FROM (SELECT * FROM events LIMIT 0)")
        .await
        .expect("limit 0");
    assert_eq!(empty[0].column(0).as_primitive::<Int64Type>().value(0), 0);
}
