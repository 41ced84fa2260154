//! An analyst's query is bounded in time and memory, and says which limit it hit; the stored
//! events table reads only local data dirs.

use trailmap_sql::{Analyst, Limits};

/// An analyst with limits no query here comes near.
fn roomy() -> Analyst {
    Analyst::new(Limits {
        timeout: std::time::Duration::from_secs(60),
        memory: 1 << 30,
    })
}

/// The single count a `SELECT count(*)` answers.
fn count(batches: &[datafusion::arrow::array::RecordBatch]) -> i64 {
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .expect("a count")
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_timeout_is_cancelled() {
    let analyst = Analyst::new(Limits {
        timeout: std::time::Duration::from_millis(300),
        memory: 1 << 30,
    });
    let started = std::time::Instant::now();
    let err = analyst
        .query("SELECT sum(value) FROM generate_series(1, 1000000000000)")
        .await
        .expect_err("a query over 10^12 rows cannot finish in 300 ms");
    let message = err.to_string();
    assert!(message.contains("timeout"), "{message}");
    assert!(message.contains("[sql] timeout"), "{message}");
    // Cancelled, not run to the end (which would take hours).
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_memory_limit_fails_and_names_it() {
    let analyst = Analyst::new(Limits {
        timeout: std::time::Duration::from_secs(120),
        memory: 1 << 20,
    });
    let err = analyst
        .query(
            "SELECT value % 2000000 AS k, count(*) FROM generate_series(1, 4000000) \
             GROUP BY k ORDER BY k",
        )
        .await
        .expect_err("2M groups do not fit in 1 MiB");
    let message = err.to_string();
    assert!(message.contains("Resources exhausted"), "{message}");
    assert!(message.contains("[sql] memory_limit"), "{message}");

    // The same session still answers what fits.
    let small = analyst
        .query("SELECT count(*) AS n FROM generate_series(1, 1000)")
        .await
        .expect("a small query fits");
    assert_eq!(small[0].num_rows(), 1);
}

/// `stored_events` over a data dir: empty before the pipeline stored anything (not an
/// error), and object store URLs are refused with what to do instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_events_read_a_local_data_dir_only() {
    let dir = std::env::temp_dir().join(format!("trailmap-stored-{}", std::process::id()));
    let analyst = roomy()
        .with_store(dir.to_str().expect("utf-8"))
        .expect("a local data dir");
    let batches = analyst
        .query("SELECT count(*) AS n FROM stored_events")
        .await
        .expect("an empty store answers");
    assert_eq!(count(&batches), 0);
    let refused = roomy()
        .with_store("s3://bucket/trailmap")
        .err()
        .expect("an object store URL is refused");
    assert!(refused.to_string().contains("local data dir"), "{refused}");
}

/// `stored_events` counts the segments the checkpoint names, not whatever files the
/// directory holds (a segment written before a crash, or one compacted away).
#[test]
fn stored_events_are_the_segments_the_checkpoint_names() {
    use trailmap_model::IdentityKind;
    use trailmap_model::schema::{EventBatchBuilder, EventRow};
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().to_str().expect("utf-8");
    let store = trailmap_store::Store::open(data).expect("store");
    let batch = |n: usize| {
        let mut b = EventBatchBuilder::new();
        for i in 0..n {
            let id = format!("e{i}");
            let mut row = EventRow {
                event_id: Some(&id),
                source: "web",
                ts: 1_700_000_000_000_000 + i as i64,
                touchpoint: Some("home_view"),
                ..Default::default()
            };
            row.identities[IdentityKind::CustomerId.index()] = Some("c");
            b.push(&row);
        }
        b.finish()
    };
    let named = store.write_segment(1, &[(0, batch(3))]).expect("segment");
    // Written, never checkpointed: an orphan.
    store.write_segment(2, &[(0, batch(5))]).expect("orphan");
    store
        .write_checkpoint(&trailmap_store::Checkpoint {
            segments: vec![named],
            ..Default::default()
        })
        .expect("checkpoint");
    let analyst = roomy().with_store(data).expect("a local data dir");
    // The store blocks on a runtime of its own, so the query gets one apart.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let batches = runtime
        .block_on(analyst.query("SELECT count(*) AS n FROM stored_events"))
        .expect("a count");
    assert_eq!(count(&batches), 3, "the orphan is not counted");
}
