//! The Kafka source in the live pipeline against a real broker (nisshi): quiet partitions,
//! stopping a source that never ends, a broker that goes away and comes back, and events
//! arriving late inside and beyond the lateness horizon.

#[path = "../../../tests/common/nisshi.rs"]
mod nisshi;

use nisshi::Nisshi;
use std::sync::Arc;
use std::time::{Duration, Instant};
use trailmap_ingest::{DeadLetters, IngestOptions};
use trailmap_kafka::{KafkaSource, ReadUntil};
use trailmap_live::{LiveHandle, LiveStatus, PipelineOptions};
use trailmap_model::config::{Config, SourceConfig, SourceKind};

const T0: i64 = 1_700_000_000;

/// `n` events of `customers` customers, a minute apart per customer, from `start` seconds.
fn events(n: usize, customers: usize, start: i64) -> Vec<Vec<u8>> {
    let touchpoints = [
        "home_view",
        "pricing_view",
        "signup",
        "trial_start",
        "purchase",
    ];
    (0..n)
        .map(|i| {
            let c = i % customers;
            let step = i / customers;
            format!(
                r#"{{"customer_id":"c{c}","ts":{},"touchpoint":"{}"}}"#,
                start + 60 * step as i64,
                touchpoints[(c + step) % touchpoints.len()]
            )
            .into_bytes()
        })
        .collect()
}

fn config(broker: &Nisshi, topic: &str, dir: &std::path::Path) -> Config {
    let mut config = Config::builtin();
    let mut source = SourceConfig::of_kind(SourceKind::Generic);
    source.name = "events".into();
    source.topic = Some(topic.into());
    config.sources.push(source);
    config.kafka.brokers = broker.brokers();
    config.ingest.dead_letter = dir.join("dead.ndjson");
    config
}

fn start(config: &Config, until: ReadUntil) -> (LiveHandle, Arc<trailmap_kafka::KafkaHealth>) {
    start_with(config, until, 64)
}

fn start_with(
    config: &Config,
    until: ReadUntil,
    batch_size: usize,
) -> (LiveHandle, Arc<trailmap_kafka::KafkaHealth>) {
    let options = IngestOptions {
        batch_size,
        ..IngestOptions::default()
    };
    let dead = DeadLetters::new(&config.ingest.dead_letter, None);
    let source = KafkaSource::connect(config, options, dead, until, &[]).expect("connect");
    let health = source.health();
    let pipeline = PipelineOptions {
        shards: 2,
        channel_batches: 4,
    };
    let handle = trailmap_live::start(config, Box::new(source), &pipeline).expect("start");
    (handle, health)
}

/// Polls the pipeline's status until `done` holds (at most a minute).
async fn wait_for(
    handle: &LiveHandle,
    what: &str,
    done: impl Fn(&LiveStatus) -> bool,
) -> LiveStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = handle.status().await.expect("status");
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "waited a minute for {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most a minute) until the source's readiness is `ready`.
fn wait_for_health(health: &trailmap_kafka::KafkaHealth, ready: bool, failure: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while health.is_ready() != ready {
        assert!(Instant::now() < deadline, "{failure}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn payloads(events: &[Vec<u8>]) -> impl Iterator<Item = (Option<&[u8]>, &[u8])> {
    events.iter().map(|e| (None, e.as_slice()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn quiet_partitions_do_not_hold_the_watermark_back() {
    let rt = runtime();
    let _in_runtime = rt.enter();
    let broker = Nisshi::start();
    broker.create_topic("events", 4);
    let dir = tempfile::tempdir().expect("tmp");
    let config = config(&broker, "events", dir.path());
    let first = events(200, 20, T0);
    broker.produce_to("events", Some(0), payloads(&first[..100]));
    broker.produce_to("events", Some(1), payloads(&first[100..]));

    let (handle, health) = start(&config, ReadUntil::Forever);
    // Partitions 2 and 3 never deliver; once 0 and 1 are caught up, everything read is in.
    let last = T0 + 60 * 9;
    rt.block_on(wait_for(&handle, "the first 200 events", |s| {
        s.ingest.events == 200 && s.watermark == Some(last * 1_000_000)
    }));
    assert!(health.is_ready());

    // A quiet partition that speaks up again moves the watermark on.
    let later = events(40, 20, T0 + 3600);
    broker.produce_to("events", Some(3), payloads(&later));
    let last = T0 + 3600 + 60;
    rt.block_on(wait_for(&handle, "40 more on partition 3", |s| {
        s.ingest.events == 240 && s.watermark == Some(last * 1_000_000)
    }));

    // A source that never ends stops on request, and what it read is counted.
    handle.stop();
    let result = rt.block_on(handle.finish()).expect("finish");
    let total = result.map.total();
    assert_eq!(total.events, 240);
    // 20 customers, each a session of 10 events and a session of 2 an hour later.
    assert_eq!(total.journeys, 40);
    assert_eq!(result.status.open_customers, 0);
}

#[test]
fn stopping_hands_on_the_batches_still_lingering() {
    let rt = runtime();
    let _in_runtime = rt.enter();
    let broker = Nisshi::start();
    broker.create_topic("events", 2);
    let dir = tempfile::tempdir().expect("tmp");
    let mut config = config(&broker, "events", dir.path());
    // Nothing is handed on by time or at the partition's end: only a full batch or the
    // stop moves rows on.
    config.ingest.linger = "1h".parse().expect("duration");
    config
        .kafka
        .options
        .insert("enable.partition.eof".into(), "false".into());
    let sent = events(30, 10, T0);
    broker.produce("events", payloads(&sent));

    let (handle, _health) = start_with(&config, ReadUntil::Forever, 1000);
    rt.block_on(wait_for(&handle, "30 events read", |s| {
        s.ingest.events == 30
    }));
    let status = rt.block_on(handle.status()).expect("status");
    assert_eq!(status.retained_events, 0, "a batch was handed on early");

    handle.stop();
    let result = rt.block_on(handle.finish()).expect("finish");
    assert_eq!(result.map.total().events, 30);
    assert_eq!(result.status.ingest.events, 30);
}

#[test]
fn the_pipeline_rides_out_a_broker_restart() {
    let rt = runtime();
    let _in_runtime = rt.enter();
    let mut broker = Nisshi::start_durable();
    broker.create_topic("events", 2);
    let dir = tempfile::tempdir().expect("tmp");
    let config = config(&broker, "events", dir.path());
    let first = events(100, 10, T0);
    broker.produce("events", payloads(&first));

    let (handle, health) = start(&config, ReadUntil::Forever);
    rt.block_on(wait_for(&handle, "the first 100 events", |s| {
        s.ingest.events == 100
    }));
    assert!(health.is_ready());

    broker.stop();
    wait_for_health(
        &health,
        false,
        "the source never noticed the broker was gone",
    );
    assert!(health.last_error().is_some());
    // The pipeline keeps running and answering while the broker is away.
    let status = rt
        .block_on(handle.status())
        .expect("status while the broker is down");
    assert_eq!(status.ingest.events, 100);

    broker.restart();
    let more = events(100, 10, T0 + 600);
    broker.produce("events", payloads(&more));
    rt.block_on(wait_for(&handle, "catching up after the restart", |s| {
        s.ingest.events == 200
    }));
    wait_for_health(&health, true, "the source never saw the broker come back");
    handle.stop();
    let result = rt.block_on(handle.finish()).expect("finish");
    assert_eq!(result.map.total().events, 200);
    assert_eq!(result.status.ingest.rejected, 0);
}

#[test]
fn late_messages_inside_the_horizon_correct_the_map_and_beyond_it_are_set_aside() {
    let rt = runtime();
    let _in_runtime = rt.enter();
    let broker = Nisshi::start();
    broker.create_topic("events", 1);
    let dir = tempfile::tempdir().expect("tmp");
    let config = config(&broker, "events", dir.path());
    assert_eq!(config.sessions.allowed_lateness.micros(), 3_600_000_000);
    let event = |c: &str, secs: i64, tp: &str| {
        format!(
            r#"{{"customer_id":"{c}","ts":{},"touchpoint":"{tp}"}}"#,
            T0 + secs
        )
        .into_bytes()
    };
    let stream = [
        event("a", 0, "home_view"),
        event("a", 60, "pricing_view"),
        event("b", 7200, "home_view"),
        event("b", 7300, "purchase"),
        // Inside the horizon (watermark T0+7300, horizon T0+3700): b's path is redone.
        event("b", 7250, "pricing_view"),
        // Beyond it: set aside and counted, the map keeps a's journey as it was.
        event("a", 120, "signup"),
    ];
    broker.produce_to("events", Some(0), payloads(&stream));
    // One message per batch, so each arrives after the watermark of the ones before.
    let (handle, _) = start_with(&config, ReadUntil::End, 1);
    let result = rt.block_on(handle.finish()).expect("finish");
    assert_eq!(result.status.ingest.events, 6);
    assert_eq!(result.status.stitch.late, 1, "{:?}", result.status);
    assert_eq!(result.late.len(), 1);
    assert!(result.status.shards.corrected >= 1, "{:?}", result.status);
    let total = result.map.total();
    assert_eq!(total.events, 5);
    assert_eq!(total.journeys, 2);
    let names = &result.names.touchpoints;
    let edge = |from: &str, to: &str| {
        total
            .transitions
            .iter()
            .filter(|((f, t), _)| names[*f as usize] == from && names[*t as usize] == to)
            .map(|(_, c)| c.count)
            .sum::<i64>()
    };
    assert_eq!(
        edge("home_view", "pricing_view"),
        2,
        "a's, and b's corrected path"
    );
    assert_eq!(edge("pricing_view", "purchase"), 1);
    assert_eq!(
        edge("home_view", "purchase"),
        0,
        "taken back when b's late event came"
    );
    assert_eq!(
        edge("pricing_view", "signup"),
        0,
        "the event beyond the horizon is not counted"
    );
}

/// Drives the source by hand, with decoding on its worker thread: batches of each partition
/// come in offset order with positions that only grow, its `End` comes after all of them,
/// every poisoned message is a dead letter, and the letters of what a batch's position
/// covers are in the dead-letter topic once the source says a checkpoint may be taken.
#[test]
fn batches_stay_in_partition_order_and_letters_precede_their_positions() {
    use arrow::array::{Array, StringArray};
    use trailmap_live::{Feed, LiveSource};

    let broker = Nisshi::start();
    let dir = tempfile::tempdir().expect("tempdir");
    broker.create_topic("mixed", 2);
    broker.create_topic("trailmap-dead-letters", 1);
    let config = config(&broker, "mixed", dir.path());
    let per_partition = 3000;
    let poisoned = |i: usize| i % 7 == 3;
    for p in 0..2 {
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..per_partition)
            .map(|i| {
                let payload = if poisoned(i) {
                    format!("{{\"customer_id\":\"c{i}\",").into_bytes()
                } else {
                    format!(
                        r#"{{"event_id":"p{p}-{i:05}","customer_id":"c{}","ts":{},"touchpoint":"home_view"}}"#,
                        i % 40,
                        T0 + i as i64
                    )
                    .into_bytes()
                };
                (format!("k{i}").into_bytes(), payload)
            })
            .collect();
        broker.produce_to(
            "mixed",
            Some(p),
            records
                .iter()
                .map(|(k, v)| (Some(k.as_slice()), v.as_slice())),
        );
    }
    let options = IngestOptions {
        batch_size: 50,
        ..IngestOptions::default()
    };
    let dead = DeadLetters::new(&config.ingest.dead_letter, None);
    let mut source =
        KafkaSource::connect(&config, options, dead, ReadUntil::End, &[]).expect("connect");

    let mut ids: Vec<Vec<String>> = vec![Vec::new(); 2];
    let mut positions: Vec<Vec<i64>> = vec![Vec::new(); 2];
    let mut ended = [false; 2];
    let mut checked_letters = false;
    while let Some(feed) = source.next().expect("next") {
        match feed {
            Feed::Batch {
                partition,
                batch,
                position,
                ..
            } => {
                assert!(
                    !ended[partition],
                    "a batch of partition {partition} after its end"
                );
                assert!(batch.num_rows() <= 50, "batch_size bounds a batch");
                let position = position.expect("a position");
                let column = batch
                    .column_by_name("event_id")
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .expect("event ids");
                ids[partition].extend((0..column.len()).map(|i| column.value(i).to_string()));
                if let Some(last) = positions[partition].last() {
                    assert!(position.next_offset > *last, "positions only grow");
                }
                positions[partition].push(position.next_offset);
                if !checked_letters && position.next_offset > 1000 {
                    checked_letters = true;
                    source.before_checkpoint().expect("letters delivered");
                    let covered = (0..position.next_offset as usize)
                        .filter(|&i| poisoned(i))
                        .count();
                    let letters = broker.read_all("trailmap-dead-letters");
                    let of_partition = letters
                        .iter()
                        .filter(|l| {
                            l.headers.get("trailmap-partition")
                                == Some(&position.partition.to_string())
                        })
                        .count();
                    assert!(
                        of_partition >= covered,
                        "{of_partition} letters of partition {} when a position covers {covered}",
                        position.partition
                    );
                }
            }
            Feed::End { partition } => ended[partition] = true,
            Feed::Idle { .. } | Feed::Quiet => {}
            Feed::Cut(_) => panic!("the Kafka source hands on no cuts"),
        }
    }
    assert!(checked_letters);
    assert_eq!(ended, [true, true]);
    for p in 0..2 {
        let expected: Vec<String> = (0..per_partition)
            .filter(|&i| !poisoned(i))
            .map(|i| format!("p{p}-{i:05}"))
            .collect();
        assert_eq!(
            ids[p], expected,
            "partition {p}: every row once, in offset order"
        );
        assert_eq!(positions[p].last(), Some(&(per_partition as i64)));
    }
    let bad = (0..per_partition).filter(|&i| poisoned(i)).count() as u64;
    let stats = source.stats();
    assert_eq!(stats.records, 2 * per_partition as u64);
    assert_eq!(stats.rejected, 2 * bad);
    assert_eq!(stats.rejected_by_source.get("events"), Some(&(2 * bad)));
    drop(source);
    let letters = broker.read_all("trailmap-dead-letters");
    assert_eq!(letters.len() as u64, 2 * bad);
    for l in &letters {
        let header = |name: &str| l.headers.get(name).cloned().unwrap_or_default();
        let offset: usize = header("trailmap-offset").parse().expect("offset");
        assert!(poisoned(offset));
        assert_eq!(l.key.as_deref(), Some(format!("k{offset}").as_bytes()));
        assert!(header("trailmap-reason").contains("invalid JSON"), "{l:?}");
    }
}
