//! Kafka consumption through nisshi: a bare rdkafka consumer against trailmap's Kafka
//! source (decoding into canonical batches) and the whole live pipeline, on the same topic.
//!
//!     cargo bench -p trailmap-kafka --bench consume            # 1M messages, best of 3 rounds
//!     EVENTS=200000 REPEAT=1 cargo bench -p trailmap-kafka --bench consume
//!     ROWS=source REPEAT=5 cargo bench -p trailmap-kafka --bench consume  # bare always runs
//!
//! Needs `nisshi` (as the tests do). Each consumer is timed the same way: from creating
//! its client to holding the last message (the pipeline: its final result); closing is
//! timed apart. Prints messages/s of each, the ratio to bare and the CPU seconds of this
//! process and of the broker; then
//! event-to-aggregate freshness: messages produced at a steady rate (RATE, default 20000/s,
//! for SECONDS, default 8) while the pipeline consumes, each timed from its Kafka timestamp
//! to being counted in the live map.

// As the `trailmap` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../../../tests/common/nisshi.rs"]
mod nisshi;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use trailmap_ingest::{DeadLetters, IngestOptions};
use trailmap_kafka::{KafkaSource, ReadUntil};
use trailmap_live::{LiveSource, PipelineOptions};
use trailmap_model::config::{Config, SourceConfig, SourceKind};

const TOPIC: &str = "clicks";
const PARTITIONS: i32 = 3;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Segment-style track calls: 50k customers, a page every 30 s each.
fn messages(n: usize) -> Vec<Vec<u8>> {
    let pages = [
        "/",
        "/pricing",
        "/docs",
        "/signup",
        "/blog/why",
        "/product/42",
    ];
    (0..n)
        .map(|i| {
            let c = i % 50_000;
            let step = i / 50_000;
            format!(
                r#"{{"type":"page","messageId":"m{i}","anonymousId":"a{c}","timestamp":"2024-03-01T{:02}:{:02}:{:02}Z","properties":{{"path":"{}"}},"context":{{"channel":"web"}}}}"#,
                (step * 30 / 3600) % 24,
                (step * 30 / 60) % 60,
                (step * 30) % 60,
                pages[(c + step) % pages.len()]
            )
            .into_bytes()
        })
        .collect()
}

/// How long a consumer took to read everything, and to close after.
struct Timed {
    read: Duration,
    close: Duration,
}

fn bare(brokers: &str, n: usize) -> Timed {
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset(TOPIC, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let (mut read, mut bytes) = (0, 0usize);
    while read < n {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            bytes += m.expect("message").payload().map_or(0, <[u8]>::len);
            read += 1;
        }
    }
    assert!(bytes > 0);
    let read = started.elapsed();
    drop(consumer);
    Timed {
        read,
        close: started.elapsed() - read,
    }
}

fn config(brokers: &str) -> Config {
    let mut config = Config::builtin();
    let mut source = SourceConfig::of_kind(SourceKind::Clickstream);
    source.topic = Some(TOPIC.into());
    config.sources.push(source);
    config.kafka.brokers = brokers.into();
    config.ingest.dead_letter = std::env::temp_dir().join("trailmap-bench-dead.ndjson");
    config
}

fn source(config: &Config) -> KafkaSource {
    source_until(config, ReadUntil::End)
}

fn source_until(config: &Config, until: ReadUntil) -> KafkaSource {
    let options = IngestOptions {
        catalog: std::sync::Arc::new(
            trailmap_model::Catalog::compile(&config.catalog).expect("catalog"),
        ),
        batch_size: config.ingest.batch_size,
        projection: trailmap_ingest::Projection::default(),
    };
    let dead = DeadLetters::new(&config.ingest.dead_letter, None);
    KafkaSource::connect(config, options, dead, until, &[]).expect("connect")
}

/// CPU seconds of a process so far (user + system), from /proc (ticks of 1/100 s, as
/// Linux reports them); `None` is this process.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".into(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn source_only(config: &Config, n: usize) -> Timed {
    let started = Instant::now();
    let mut source = source(config);
    while source.next().expect("next").is_some() {}
    assert_eq!(source.stats().records, n as u64);
    let read = started.elapsed();
    drop(source);
    Timed {
        read,
        close: started.elapsed() - read,
    }
}

fn pipeline(config: &Config, n: usize) -> Timed {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let source = source(config);
    let result = runtime.block_on(async {
        let handle = trailmap_live::start(config, Box::new(source), &PipelineOptions::default())
            .expect("start");
        handle.finish().await.expect("finish")
    });
    assert_eq!(result.status.ingest.records, n as u64);
    // The source is closed inside `finish`, before the final sum of the live map.
    Timed {
        read: started.elapsed(),
        close: Duration::ZERO,
    }
}

/// Produces `rate` messages a second for `seconds` while the pipeline consumes them; returns
/// the pipeline's freshness.
fn freshness(broker: &nisshi::Nisshi, rate: usize, seconds: usize) -> trailmap_live::Freshness {
    const LIVE: &str = "clicks-live";
    broker.create_topic(LIVE, PARTITIONS);
    let mut config = config(&broker.brokers());
    config.sources[0].topic = Some(LIVE.into());
    config.kafka.group_id = "bench-freshness".into();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _in_runtime = runtime.enter();
    let handle = trailmap_live::start(
        &config,
        Box::new(source_until(&config, ReadUntil::Forever)),
        &PipelineOptions::default(),
    )
    .expect("start");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let all = messages(rate * seconds);
    let tick = (rate / 100).max(1);
    let started = Instant::now();
    for (i, chunk) in all.chunks(tick).enumerate() {
        let due = started + Duration::from_secs_f64((i * tick) as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for m in chunk {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(LIVE).payload(m);
            while let Err((_, back)) = producer.send(record) {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("produced");
    let deadline = Instant::now() + Duration::from_secs(120);
    runtime.block_on(async {
        while handle.status().await.expect("status").ingest.records < all.len() as u64 {
            assert!(
                Instant::now() < deadline,
                "the pipeline never read everything"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    handle.stop();
    let result = runtime.block_on(handle.finish()).expect("finish");
    result.status.freshness
}

fn main() {
    let n = env("EVENTS", 1_000_000);
    let repeat = env("REPEAT", 3).max(1);
    let broker = nisshi::Nisshi::start();
    broker.create_topic(TOPIC, PARTITIONS);
    let all = messages(n);
    let produced = Instant::now();
    broker.produce(TOPIC, all.iter().map(|m| (None, m.as_slice())));
    println!(
        "produced {n} messages to nisshi ({PARTITIONS} partitions) in {:.1}s",
        produced.elapsed().as_secs_f64()
    );
    let config = config(&broker.brokers());
    // Each run's times, and CPU seconds of this process and of the broker.
    let measure = |f: &dyn Fn() -> Timed| {
        let (ours, theirs) = (cpu_seconds(None), cpu_seconds(broker.pid()));
        let t = f();
        (
            t,
            cpu_seconds(None) - ours,
            cpu_seconds(broker.pid()) - theirs,
        )
    };
    // ROWS picks what runs besides bare (to profile one): source,pipeline,freshness.
    let rows = std::env::var("ROWS").unwrap_or("source,pipeline,freshness".into());
    let runs = |row: &str| rows.split(',').any(|r| r == row);
    type Consume<'a> = Box<dyn Fn() -> Timed + 'a>;
    let mut consumers: Vec<(&str, Consume)> = vec![(
        "bare rdkafka BaseConsumer (payload untouched)",
        Box::new(|| bare(&broker.brokers(), n)),
    )];
    if runs("source") {
        consumers.push((
            "trailmap Kafka source (decoded to Arrow)",
            Box::new(|| source_only(&config, n)),
        ));
    }
    if runs("pipeline") {
        consumers.push((
            "trailmap live pipeline (source+stitch+shards)",
            Box::new(|| pipeline(&config, n)),
        ));
    }
    // Round by round, each consumer once, so a slow spell of this noisy machine falls on
    // all of them alike; the best round of each counts.
    let mut best: Vec<Option<(Timed, f64, f64)>> = consumers.iter().map(|_| None).collect();
    for _ in 0..repeat {
        for ((_, consume), best) in consumers.iter().zip(&mut best) {
            let run = measure(consume.as_ref());
            if best.as_ref().is_none_or(|b| run.0.read < b.0.read) {
                *best = Some(run);
            }
        }
    }
    let rate = |t: Duration| n as f64 / t.as_secs_f64();
    let bare_read = best[0].as_ref().map_or(Duration::MAX, |b| b.0.read);
    println!(
        "{:<48} {:>8} {:>12} {:>8} {:>8} {:>9} {:>10}",
        "consumer", "seconds", "messages/s", "of bare", "close", "CPU ours", "CPU broker"
    );
    for ((name, _), (t, ours, theirs)) in consumers
        .iter()
        .zip(best)
        .filter_map(|(c, run)| Some((c, run?)))
    {
        println!(
            "{name:<48} {:>8.2} {:>12.0} {:>7.0}% {:>7.2}s {:>8.2}s {:>9.2}s",
            t.read.as_secs_f64(),
            rate(t.read),
            100.0 * bare_read.as_secs_f64() / t.read.as_secs_f64(),
            t.close.as_secs_f64(),
            ours,
            theirs
        );
    }
    if !runs("freshness") {
        return;
    }
    let (rate, seconds) = (env("RATE", 20_000), env("SECONDS", 8));
    let f = freshness(&broker, rate, seconds);
    let ms = |us: Option<i64>| us.map_or("-".into(), |us| format!("{:.1} ms", us as f64 / 1e3));
    println!(
        "freshness at {rate} messages/s for {seconds}s ({} events): p50 {}, p99 {}, max {}",
        f.events,
        ms(f.p50_micros),
        ms(f.p99_micros),
        ms(f.max_micros)
    );
}
