//! Records pushed to the pipeline (HTTP capture): a bounded [`CaptureInlet`] the server
//! offers JSON records to, and the [`CaptureSource`] that decodes them on the pipeline's
//! source thread with the same mapping as files and Kafka.
//!
//! The inlet never blocks its caller: when the pipeline falls behind and the queue is full,
//! an offer is refused ([`Refused::Full`]) so the HTTP client is told to retry later, as
//! Segment's libraries do on a 429, rather than holding requests open or growing memory.

use crate::source::{Feed, LiveSource};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};
use trailmap_ingest::dead_letter::Location;
use trailmap_ingest::{DeadLetters, IngestOptions, IngestStats, JsonDecoder};
use trailmap_model::config::SourceConfig;
use trailmap_model::{Error, Result};

/// Why an offer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: the pipeline is behind; retry later.
    Full,
    /// The pipeline has stopped.
    Closed,
}

/// Where the HTTP side hands records in. Cheap to clone.
#[derive(Clone)]
pub struct CaptureInlet {
    tx: SyncSender<Vec<Vec<u8>>>,
}

impl CaptureInlet {
    /// Queues one request's records (each one JSON object), all or none.
    pub fn offer(&self, records: Vec<Vec<u8>>) -> std::result::Result<(), Refused> {
        self.tx.try_send(records).map_err(|e| match e {
            TrySendError::Full(_) => Refused::Full,
            TrySendError::Disconnected(_) => Refused::Closed,
        })
    }
}

/// One partition of captured records, in the order they were offered. It ends when every
/// inlet is gone.
pub struct CaptureSource {
    rx: Receiver<Vec<Vec<u8>>>,
    decoder: JsonDecoder,
    dead: DeadLetters,
    /// What dead letters name as the record's file.
    origin: PathBuf,
    batch_size: usize,
    linger: Duration,
    /// When the oldest record of the pending batch arrived.
    since: Option<Instant>,
    ready: VecDeque<Feed>,
    idle: bool,
    ended: bool,
    stats: IngestStats,
}

/// A capture source decoding records as `source` maps them, and its inlet, which holds at
/// most `queue` requests.
pub fn capture(
    source: &SourceConfig,
    options: &IngestOptions,
    dead: DeadLetters,
    queue: usize,
) -> Result<(CaptureSource, CaptureInlet)> {
    let mapping = source
        .mapping()
        .map_err(|(field, m)| Error::config(format!("source `{}` {field}", source.name), m))?;
    let decoder = JsonDecoder::new(
        source,
        &mapping,
        options.catalog.clone(),
        options.projection,
    )
    .map_err(|m| Error::config(format!("source `{}`", source.name), m))?;
    let (tx, rx) = sync_channel(queue.max(1));
    Ok((
        CaptureSource {
            rx,
            decoder,
            dead,
            origin: PathBuf::from(format!("http capture ({})", source.name)),
            batch_size: options.batch_size.max(1),
            linger: Duration::from_millis(100),
            since: None,
            ready: VecDeque::new(),
            idle: false,
            ended: false,
            stats: IngestStats::default(),
        },
        CaptureInlet { tx },
    ))
}

impl CaptureSource {
    /// The longest a record waits for its batch to fill.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    fn take(&mut self, records: Vec<Vec<u8>>) -> Result<()> {
        for raw in records {
            match self.decoder.decode(&raw) {
                Ok(outcome) => self.stats.count(outcome),
                Err(reason) => {
                    self.stats.count_rejected();
                    let at = Location::Captured(self.stats.records);
                    self.dead.reject(&self.origin, at, &reason, Some(&raw))?;
                }
            }
        }
        if self.since.is_none() && self.decoder.pending() > 0 {
            self.since = Some(Instant::now());
        }
        if self.decoder.pending() >= self.batch_size {
            self.flush();
        }
        Ok(())
    }

    fn flush(&mut self) {
        let arrived = self.since.take().unwrap_or_else(Instant::now);
        if let Some(batch) = self.decoder.take_batch() {
            self.ready.push_back(Feed::Batch {
                partition: 0,
                batch,
                position: None,
                arrived,
            });
        }
    }
}

impl LiveSource for CaptureSource {
    fn partitions(&self) -> usize {
        1
    }

    fn next(&mut self) -> Result<Option<Feed>> {
        loop {
            if let Some(feed) = self.ready.pop_front() {
                return Ok(Some(feed));
            }
            if self.ended {
                return Ok(None);
            }
            let wait = match self.since {
                Some(since) if since.elapsed() >= self.linger => {
                    self.flush();
                    continue;
                }
                Some(since) => self.linger - since.elapsed(),
                None => Duration::from_millis(100),
            };
            match self.rx.recv_timeout(wait.min(Duration::from_millis(100))) {
                Ok(records) => {
                    self.idle = false;
                    self.take(records)?;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.dead.flush()?;
                    if self.since.is_none() && !self.idle {
                        // Caught up: a quiet capture does not hold the watermark back.
                        self.idle = true;
                        return Ok(Some(Feed::Idle { partition: 0 }));
                    }
                    if self.ready.is_empty() && self.since.is_none() {
                        return Ok(Some(Feed::Quiet));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    self.dead.flush()?;
                    self.ready.push_back(Feed::End { partition: 0 });
                    self.ended = true;
                }
            }
        }
    }

    fn stats(&self) -> IngestStats {
        self.stats.clone().of_source(self.decoder.source_name())
    }

    fn drain(&mut self) -> Result<Vec<Feed>> {
        while let Ok(records) = self.rx.try_recv() {
            self.take(records)?;
        }
        self.flush();
        self.dead.flush()?;
        Ok(self.ready.drain(..).collect())
    }
}
