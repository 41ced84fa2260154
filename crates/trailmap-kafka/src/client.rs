//! librdkafka settings from `[kafka]`: ours first, the user's `options` last so they win.

use rdkafka::ClientConfig;
use trailmap_model::config::KafkaConfig;

/// Settings of the consumer: no automatic commits (the pipeline's checkpoints decide what
/// is done), end-of-partition events (a caught-up partition stops holding the watermark).
pub fn consumer(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", config.start_from.as_str())
        // When decoding is slower than fetching, the prefetch queue fills and librdkafka
        // pauses fetching for this long (default 1 s): long enough to drain the queue and
        // sit idle. A short pause keeps it filled.
        .set("fetch.queue.backoff.ms", "10")
        // A fetch the broker has nothing new for waits this long (default 500 ms) before an
        // empty answer; with several partitions on one broker, data arriving meanwhile for
        // one of them can wait that long too. Bounds what Kafka adds to freshness.
        .set("fetch.wait.max.ms", "50")
        // Statistics every second: the consumer lag `/metrics` reports.
        .set("statistics.interval.ms", "1000")
        .set("client.id", "trailmap");
    user_options(&mut c, config);
    c
}

/// Settings of the dead-letter producer: idempotent, so a retried letter is written once.
pub fn producer(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("client.id", "trailmap-dead-letters");
    user_options(&mut c, config);
    c
}

fn user_options(c: &mut ClientConfig, config: &KafkaConfig) {
    for (key, value) in &config.options {
        c.set(key, value);
    }
}
