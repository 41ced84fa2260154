//! `trailmap serve --kafka` against a real broker (nisshi): generated clickstream, ticket
//! and CRM events produced to three topics, with identities that must be stitched across
//! them and a poisoned message on each; the live map equals batch mining on the same events
//! from files, and every poisoned message is in the dead-letter topic with its reason.
//! Killed with SIGKILL three times while it consumes a million events and restarted, it
//! ends with the map and the stored events of a clean run.

mod common;
#[path = "common/nisshi.rs"]
mod nisshi;

use common::live::*;
use common::*;
use nisshi::Nisshi;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Source kind, topic, partitions, and a message it cannot decode.
const TOPICS: [(&str, &str, i32, &[u8]); 3] = [
    ("clickstream", "web-events", 3, b"{\"event\": \"truncated"),
    ("ticket", "ticket-updates", 2, b"[1, 2, 3]"),
    (
        "crm",
        "crm-changes",
        1,
        b"{\"contact_id\": \"c-1\", \"stage\": \"lead\"}",
    ),
];

/// The long-horizon config with the three sources on their topics and dead letters in `dir`.
fn kafka_config(dir: &Path) -> String {
    let path = long_horizon(dir);
    let mut text = std::fs::read_to_string(&path).expect("config");
    let dead = dir.join("dead-letters.ndjson");
    text = text.replace(
        "dead_letter = \"trailmap-dead-letters.ndjson\"",
        &format!("dead_letter = {:?}", s(&dead)),
    );
    let data = dir.join("data");
    text = text.replace(
        "data_dir = \"./data\"",
        &format!("data_dir = {:?}", s(&data)),
    );
    for (kind, topic, _, _) in TOPICS {
        text.push_str(&format!(
            "\n[[sources]]\nname = \"{kind}\"\nkind = \"{kind}\"\ntopic = \"{topic}\"\n"
        ));
    }
    std::fs::write(&path, text).expect("write config");
    path
}

/// Generates `customers` with `seed` into `dir/gen`, creates the three topics and produces
/// each file's lines to its topic (with the topic's poisoned message in the middle if
/// `poisoned`); returns the files as input specs.
fn produce_generated(
    broker: &Nisshi,
    dir: &Path,
    customers: &str,
    seed: &str,
    poisoned: bool,
) -> Vec<String> {
    let out = dir.join("gen");
    let _ = json(&[
        "gen",
        "--customers",
        customers,
        "--days",
        "3",
        "--seed",
        seed,
        "-o",
        s(&out),
        "--format",
        "json",
    ]);
    let mut inputs = Vec::new();
    for (kind, topic, partitions, poison) in TOPICS {
        broker.create_topic(topic, partitions);
        let file = out.join(format!("{kind}.ndjson"));
        let text = std::fs::read(&file).expect("generated file");
        let mut records: Vec<(Option<&[u8]>, &[u8])> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| (None, l))
            .collect();
        if poisoned {
            records.insert(records.len() / 2, (Some(b"poison".as_slice()), poison));
        }
        broker.produce(topic, records);
        inputs.push(input(kind, &file));
    }
    inputs
}

/// `serve --kafka --until-end` on two shards, its JSON.
fn serve_until_end(broker: &Nisshi, config: &str) -> serde_json::Value {
    json(&[
        "serve",
        "--kafka",
        "--until-end",
        "--brokers",
        &broker.brokers(),
        "--config",
        config,
        "--shards",
        "2",
    ])
}

#[test]
fn serve_consumes_three_topics_into_the_map_batch_mining_gives() {
    let broker = Nisshi::start();
    let dir = tempfile::tempdir().expect("tmp");
    broker.create_topic("trailmap-dead-letters", 1);
    let inputs = produce_generated(&broker, dir.path(), "300", "11", true);
    let config = kafka_config(dir.path());

    let live = serve_until_end(&broker, &config);
    let status = &live["status"];
    assert_eq!(status["ingest"]["rejected"], 3, "{status}");
    // One poisoned message per topic: each booked against its source.
    let rejected: std::collections::BTreeMap<String, u64> = status["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| {
            let name = s["source"].as_str().expect("source").to_string();
            (name, s["rejected"].as_u64().expect("rejected"))
        })
        .collect();
    assert_eq!(rejected.values().sum::<u64>(), 3, "{status}");
    assert!(rejected.values().all(|&n| n == 1), "{rejected:?}");
    assert_eq!(status["stitch"]["late"], 0, "{status}");
    assert!(
        status["stitch"]["identity_links"].as_u64().expect("links") > 0,
        "identities seen on different topics were stitched: {status}"
    );
    assert_live_equals_batch(&live, &inputs, &config);

    let letters = broker.read_all("trailmap-dead-letters");
    assert_eq!(letters.len(), 3, "{letters:?}");
    for (_, topic, _, poison) in TOPICS {
        let letter = letters
            .iter()
            .find(|l| l.headers.get("trailmap-topic").map(String::as_str) == Some(topic))
            .unwrap_or_else(|| panic!("no dead letter from {topic}: {letters:?}"));
        assert_eq!(letter.payload.as_deref(), Some(poison), "unchanged payload");
        assert_eq!(letter.key.as_deref(), Some(b"poison".as_slice()));
        let reason = &letter.headers["trailmap-reason"];
        assert!(!reason.is_empty(), "{letter:?}");
        assert!(letter.headers["trailmap-offset"].parse::<i64>().is_ok());
    }
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l.headers["trailmap-reason"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("invalid JSON")),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"not a JSON object"), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("missing time")),
        "{reasons:?}"
    );
}

#[test]
fn serve_says_what_to_fix_when_kafka_is_not_there() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = kafka_config(dir.path());
    let refused = |brokers: &str| {
        let out = run(&[
            "serve",
            "--kafka",
            "--until-end",
            "--brokers",
            brokers,
            "--config",
            &config,
        ]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Nothing listens on port 9 (discard) of loopback here.
    let err = refused("127.0.0.1:9");
    assert!(
        err.contains("cannot reach Kafka") && err.contains("127.0.0.1:9"),
        "{err}"
    );

    let broker = Nisshi::start();
    broker.create_topic("web-events", 1);
    let err = refused(&broker.brokers());
    assert!(
        err.contains("topic `ticket-updates`") && err.contains("does not exist"),
        "{err}"
    );
}

/// Rows stored in the data dir's checkpointed segments, and their event ids.
fn stored_event_ids(data: &Path) -> Vec<String> {
    use arrow::array::{Array, AsArray};
    let text = std::fs::read(data.join("checkpoint.json")).expect("a checkpoint");
    let checkpoint = trailmap_store::Checkpoint::parse(&text).expect("a whole checkpoint");
    let mut ids = Vec::new();
    for segment in &checkpoint.segments {
        // Compacted segments are named by their first and last segment.
        let file =
            std::fs::File::open(data.join(segment.file())).expect("a segment the checkpoint names");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .expect("parquet");
        let mut rows = 0;
        for batch in reader {
            let batch = batch.expect("batch");
            rows += batch.num_rows();
            let col = batch.column_by_name("event_id").expect("event_id");
            let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).expect("utf8");
            let col = col.as_string::<i32>();
            assert_eq!(col.null_count(), 0);
            ids.extend(col.iter().flatten().map(str::to_string));
        }
        assert_eq!(rows as u64, segment.rows);
    }
    ids
}

/// Rows the checkpoint says are stored (0 before the first).
fn stored_rows(data: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(data.join("checkpoint.json")) else {
        return 0;
    };
    let Ok(body) = serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap_or(""))
    else {
        return 0;
    };
    body["segments"]
        .as_array()
        .map_or(0, |s| s.iter().filter_map(|x| x["rows"].as_u64()).sum())
}

fn serve_forever(broker: &Nisshi, config: &str, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log");
    bin()
        .args([
            "serve",
            "--kafka",
            "--brokers",
            &broker.brokers(),
            "--config",
            config,
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start serve")
}

#[test]
fn kill_9_three_times_while_consuming_a_million_events_loses_and_doubles_nothing() {
    let broker = Nisshi::start();
    let dir = tempfile::tempdir().expect("tmp");
    let inputs = produce_generated(&broker, dir.path(), "61000", "21", false);
    let config = kafka_config(dir.path());
    // Checkpoints often, so kills land between them; a killed member leaves the group soon.
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text
        .replace("checkpoint_every = \"5s\"", "checkpoint_every = \"300ms\"")
        .replace("snapshot_every = \"1m\"", "snapshot_every = \"1s\"")
        .replace(
            "options = {}",
            "options = { \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"500\" }",
        );
    std::fs::write(&config, text).expect("config");
    let data = dir.path().join("data");

    // Random moments, reported so a failure can be replayed.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    let mut state = seed | 1;
    let mut random_ms = |max: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % max
    };
    for round in 0..3 {
        let log = dir.path().join(format!("serve-{round}.log"));
        let mut child = serve_forever(&broker, &config, &log);
        // Kill it once it has stored more than before, at a random moment after that.
        let before = stored_rows(&data);
        let deadline = Instant::now() + Duration::from_secs(120);
        while stored_rows(&data) <= before {
            assert!(
                Instant::now() < deadline,
                "round {round}: nothing stored in 2 minutes: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(
                child.try_wait().expect("wait").is_none(),
                "serve exited: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let pause = random_ms(2500);
        std::thread::sleep(Duration::from_millis(pause));
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
        eprintln!(
            "round {round} (seed {seed}): killed {pause} ms after {} events were stored",
            stored_rows(&data)
        );
    }

    // The live state was kept beside the checkpoints, and restarts started from it.
    let restarts: String = (1..3)
        .map(|round| {
            std::fs::read_to_string(dir.path().join(format!("serve-{round}.log")))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        restarts.contains("store: started from the live state as of segment"),
        "no restart started from a kept state: {restarts}"
    );

    let live = serve_until_end(&broker, &config);
    assert_live_equals_batch(&live, &inputs, &config);

    // Every record produced is stored exactly once.
    let produced: usize = inputs
        .iter()
        .map(|i| {
            let path = i.split_once('=').expect("KIND=FILE").1;
            std::fs::read_to_string(path).expect("file").lines().count()
        })
        .sum();
    let mut ids = stored_event_ids(&data);
    assert_eq!(ids.len(), produced, "stored events");
    assert!(produced > 1_000_000, "a million events: {produced}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), produced, "no event stored twice");
}

/// `/metrics` while `serve --kafka` runs: the consumer lag librdkafka reports (messages
/// past the committed offsets, which trailmap commits once they are stored) is exported,
/// and falls to 0 once every message is consumed, stored and checkpointed.
#[test]
fn metrics_report_the_consumer_lag_until_everything_is_stored() {
    let broker = Nisshi::start();
    let dir = tempfile::tempdir().expect("tmp");
    let config = kafka_config(dir.path());
    let inputs = produce_generated(&broker, dir.path(), "200", "8", false);
    let produced: usize = inputs
        .iter()
        .map(|spec| {
            let file = spec.split_once('=').expect("KIND=FILE").1;
            let text = std::fs::read_to_string(file).expect("generated file");
            text.lines().filter(|l| !l.is_empty()).count()
        })
        .sum();
    let mut child = bin()
        .args([
            "serve",
            "--kafka",
            "--brokers",
            &broker.brokers(),
            "--config",
            &config,
            "--http-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("the HTTP line");
    let base = base_url(&line);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    loop {
        let metrics = agent
            .get(format!("{base}/metrics"))
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_default();
        let lag = metrics
            .lines()
            .find_map(|l| l.strip_prefix("trailmap_consumer_lag_messages "))
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(lag) = lag {
            seen.push(lag);
            if lag == 0.0 {
                break;
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the consumer lag never reached 0 within 90 s: {seen:?}\n{metrics}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Everything is stored now: `stored_events` (the data dir's segments, over SQL) holds
    // every record produced.
    let answer: serde_json::Value = agent
        .get(format!(
            "{base}/api/sql?q=SELECT%20source%2C%20count(*)%20AS%20n%20FROM%20stored_events%20GROUP%20BY%20source%20ORDER%20BY%20source"
        ))
        .call()
        .and_then(|mut r| r.body_mut().read_json())
        .expect("an /api/sql answer");
    let _ = child.kill();
    let _ = child.wait();
    let rows = answer["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"));
    let sources: Vec<&str> = rows.iter().filter_map(|r| r["source"].as_str()).collect();
    assert_eq!(sources, ["clickstream", "crm", "ticket"], "{answer}");
    let stored: u64 = rows.iter().filter_map(|r| r["n"].as_u64()).sum();
    assert_eq!(stored, produced as u64, "{answer}");
}
