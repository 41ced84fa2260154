//! `trailmap serve --kafka` against a real broker (nisshi): generated clickstream, ticket
//! and CRM events produced to three topics, with identities that must be stitched across
//! them and a poisoned message on each; the live map equals batch mining on the same events
//! from files, and every poisoned message is in the dead-letter topic with its reason.

mod common;
#[path = "common/nisshi.rs"]
mod nisshi;

use common::live::*;
use common::*;
use nisshi::Nisshi;
use std::path::Path;

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
    for (kind, topic, _, _) in TOPICS {
        text.push_str(&format!(
            "\n[[sources]]\nname = \"{kind}\"\nkind = \"{kind}\"\ntopic = \"{topic}\"\n"
        ));
    }
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn serve_consumes_three_topics_into_the_map_batch_mining_gives() {
    let broker = Nisshi::start();
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("gen");
    let _ = json(&[
        "gen",
        "--customers",
        "300",
        "--days",
        "3",
        "--seed",
        "11",
        "-o",
        s(&out),
        "--format",
        "json",
    ]);
    broker.create_topic("trailmap-dead-letters", 1);
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
        // The poisoned message lands in the middle of the stream.
        records.insert(records.len() / 2, (Some(b"poison".as_slice()), poison));
        broker.produce(topic, records);
        inputs.push(input(kind, &file));
    }
    let config = kafka_config(dir.path());

    let live = json(&[
        "serve",
        "--kafka",
        "--until-end",
        "--brokers",
        &broker.brokers(),
        "--config",
        &config,
        "--shards",
        "2",
    ]);
    let status = &live["status"];
    assert_eq!(status["ingest"]["rejected"], 3, "{status}");
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
    // Nothing listens on port 9 (discard) of loopback here.
    let out = run(&[
        "serve",
        "--kafka",
        "--until-end",
        "--brokers",
        "127.0.0.1:9",
        "--config",
        &config,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach Kafka") && err.contains("127.0.0.1:9"),
        "{err}"
    );

    let broker = Nisshi::start();
    broker.create_topic("web-events", 1);
    let out = run(&[
        "serve",
        "--kafka",
        "--until-end",
        "--brokers",
        &broker.brokers(),
        "--config",
        &config,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("topic `ticket-updates`") && err.contains("does not exist"),
        "{err}"
    );
}
