//! Rejected messages go to the dead-letter topic unchanged (key and payload), with why and
//! where they came from in headers, so they can be inspected and replayed. A letter the
//! topic does not take (the cluster refuses it, or delivery times out) goes to the
//! dead-letter file instead: a rejection is never lost.

use crate::client;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trailmap_ingest::{DeadLetters, Location};
use trailmap_model::config::KafkaConfig;
use trailmap_model::{Error, Result};

/// Headers of a dead letter.
pub const REASON_HEADER: &str = "trailmap-reason";
pub const TOPIC_HEADER: &str = "trailmap-topic";
pub const PARTITION_HEADER: &str = "trailmap-partition";
pub const OFFSET_HEADER: &str = "trailmap-offset";

/// A letter the topic did not take: it goes to the file, saying why.
struct Undelivered {
    topic: String,
    location: Location,
    reason: String,
    payload: Option<Vec<u8>>,
}

impl Undelivered {
    fn new(
        topic: &str,
        (partition, offset): (i32, i64),
        reason: &str,
        error: &KafkaError,
        payload: Option<&[u8]>,
    ) -> Self {
        Undelivered {
            topic: topic.to_string(),
            location: Location::Message { partition, offset },
            reason: format!("{reason} (the dead-letter topic did not take it: {error})"),
            payload: payload.map(<[u8]>::to_vec),
        }
    }

    fn to_file(&self, file: &mut DeadLetters) -> Result<()> {
        file.reject(
            Path::new(&self.topic),
            self.location,
            &self.reason,
            self.payload.as_deref(),
        )
    }
}

#[derive(Default)]
struct Delivery {
    undelivered: Mutex<Vec<Undelivered>>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Err((error, message)) = result else {
            return;
        };
        let header = |name: &str| {
            use rdkafka::message::Headers;
            message.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let letter = Undelivered::new(
            &header(TOPIC_HEADER).unwrap_or_default(),
            (
                header(PARTITION_HEADER)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(-1),
                header(OFFSET_HEADER)
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(-1),
            ),
            &header(REASON_HEADER).unwrap_or_default(),
            error,
            message.payload(),
        );
        if let Ok(mut u) = self.undelivered.lock() {
            u.push(letter);
        }
    }
}

/// Polled by its owner (when sending, settling, flushing) rather than by a thread of its
/// own: rdkafka's polling thread sleeps in steps of 100 ms, which closing had to wait out.
pub struct DeadLetterTopic {
    producer: BaseProducer<Delivery>,
    topic: String,
    /// Where letters the topic did not take go.
    file: DeadLetters,
    delivery: Arc<Delivery>,
    sent: u64,
}

/// What a rejected message was.
pub struct Rejected<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub reason: &'a str,
}

impl DeadLetterTopic {
    pub fn new(config: &KafkaConfig, file: DeadLetters) -> Result<Self> {
        let producer: BaseProducer<Delivery> = client::producer(config)
            .create_with_context(Delivery::default())
            .map_err(|e| {
                Error::Other(format!(
                    "cannot create the dead-letter producer for [kafka] brokers = {:?}: {e}",
                    config.brokers
                ))
            })?;
        let delivery = producer.context().clone();
        Ok(DeadLetterTopic {
            producer,
            topic: config.dead_letter_topic.clone(),
            file,
            delivery,
            sent: 0,
        })
    }

    /// Letters handed to the topic so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Produces one letter (waiting while the producer's queue is full). Fails only when
    /// the dead-letter file cannot take a letter the topic refused.
    pub fn send(&mut self, rejected: &Rejected<'_>) -> Result<()> {
        let partition = rejected.partition.to_string();
        let offset = rejected.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: REASON_HEADER,
                value: Some(rejected.reason),
            })
            .insert(Header {
                key: TOPIC_HEADER,
                value: Some(rejected.topic),
            })
            .insert(Header {
                key: PARTITION_HEADER,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: OFFSET_HEADER,
                value: Some(offset.as_str()),
            });
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).headers(headers);
        if let Some(key) = rejected.key {
            record = record.key(key);
        }
        if let Some(payload) = rejected.payload {
            record = record.payload(payload);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    self.producer.poll(Duration::ZERO);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    let letter = Undelivered::new(
                        rejected.topic,
                        (rejected.partition, rejected.offset),
                        rejected.reason,
                        &e,
                        rejected.payload,
                    );
                    return letter.to_file(&mut self.file);
                }
            }
        }
    }

    /// Moves letters whose delivery failed to the file.
    pub fn settle(&mut self) -> Result<()> {
        // Serves the delivery reports that have come in.
        self.producer.poll(Duration::ZERO);
        let undelivered = match self.delivery.undelivered.lock() {
            Ok(mut u) => std::mem::take(&mut *u),
            Err(_) => Vec::new(),
        };
        for letter in undelivered {
            letter.to_file(&mut self.file)?;
        }
        self.file.flush()
    }

    /// Waits until every letter is delivered (or has failed and gone to the file).
    pub fn flush(&mut self, timeout: Duration) -> Result<()> {
        // A flush that times out leaves letters in flight; they settle on a later call.
        let _ = self.producer.flush(Timeout::After(timeout));
        self.settle()
    }
}

impl Drop for DeadLetterTopic {
    fn drop(&mut self) {
        let _ = self.flush(Duration::from_secs(10));
    }
}
