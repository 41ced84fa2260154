//! A real Kafka-protocol broker for tests: `nisshi` on a free loopback port, in its own
//! directory, killed when dropped. Tests that need a broker start one here; when `nisshi` is
//! not installed they fail and say how to install it.

#![allow(dead_code)]

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nisshi {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    storage: String,
}

/// A message as read back: headers, key and payload.
#[derive(Debug, Clone)]
pub struct Read {
    pub headers: BTreeMap<String, String>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NISSHI") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nisshi"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/nisshi"));
    on_path
        .into_iter()
        .chain(home)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test needs the nisshi Kafka broker, which is not installed: \
                 `cargo install nisshi@0.8.1 --locked --ignore-rust-version` (or set NISSHI to \
                 its path); .ci/run installs it"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Nisshi {
    /// A broker keeping topics in memory.
    pub fn start() -> Nisshi {
        Nisshi::start_with("memory://nisshi/")
    }

    /// A broker keeping topics in sqlite, so they survive a restart.
    pub fn start_durable() -> Nisshi {
        Nisshi::start_with("sqlite://nisshi.db")
    }

    fn start_with(storage: &str) -> Nisshi {
        let mut n = Nisshi {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("broker dir"),
            storage: storage.into(),
        };
        n.launch();
        n
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("nisshi.log")).expect("log");
        let child = Command::new(binary())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--group-initial-rebalance-delay", "0s"])
            .args(["--storage-engine", &self.storage])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start nisshi");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("nisshi exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "nisshi did not listen within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The broker's process id, while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nisshi.log")).unwrap_or_default()
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (kill -9), keeping its directory.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers());
        c
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().expect("admin");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        // The admin API is async; its own thread keeps this callable from async tests too.
        let results = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
                })
                .join()
                .expect("admin thread")
        })
        .expect("create topics");
        for r in results {
            if let Err((topic, code)) = r {
                assert_eq!(
                    code,
                    RDKafkaErrorCode::TopicAlreadyExists,
                    "creating topic {topic}"
                );
            }
        }
    }

    /// Produces `(key, payload)` records and waits until every one is acknowledged.
    pub fn produce<'a>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (Option<&'a [u8]>, &'a [u8])>,
    ) {
        self.produce_to(topic, None, records);
    }

    /// Produces to one partition (or by key / at random with `None`).
    pub fn produce_to<'a>(
        &self,
        topic: &str,
        partition: Option<i32>,
        records: impl IntoIterator<Item = (Option<&'a [u8]>, &'a [u8])>,
    ) {
        let producer: BaseProducer = self
            .client()
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        for (key, payload) in records {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => panic!("producing to {topic}: {e}"),
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(60))
            .expect("every record acknowledged");
    }

    /// Every message the topic holds now.
    pub fn read_all(&self, topic: &str) -> Vec<Read> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", "nisshi-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions = metadata.topics()[0].partitions().len() as i32;
        let mut list = TopicPartitionList::new();
        let mut left = 0;
        for p in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            left += high - low;
            list.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&list).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while left > 0 {
            assert!(
                Instant::now() < deadline,
                "reading {topic}: {left} messages missing"
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    left -= 1;
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_string(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(Read {
                        headers,
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                    });
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
    }
}

impl Drop for Nisshi {
    fn drop(&mut self) {
        self.stop();
    }
}
