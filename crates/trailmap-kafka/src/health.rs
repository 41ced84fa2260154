//! Whether the Kafka cluster answers, as the consumer sees it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Shared between the consumer (on the source thread) and whoever reports status.
#[derive(Debug, Default)]
pub struct KafkaHealth {
    down: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Consumer lag from librdkafka's last statistics, +1 (0: not known yet).
    lag: AtomicI64,
}

impl KafkaHealth {
    /// True while the cluster answers (or before anything went wrong).
    pub fn is_ready(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// The error that made it not ready, while it is not.
    pub fn last_error(&self) -> Option<String> {
        if self.is_ready() {
            return None;
        }
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Messages in the assigned partitions past the group's committed offsets (which
    /// trailmap commits once they are stored), as of librdkafka's last statistics (every
    /// second); `None` before the first.
    pub fn lag(&self) -> Option<u64> {
        let stored = self.lag.load(Ordering::Relaxed);
        (stored > 0).then(|| (stored - 1) as u64)
    }

    pub(crate) fn set_lag(&self, lag: u64) {
        self.lag.store(
            i64::try_from(lag).unwrap_or(i64::MAX - 1) + 1,
            Ordering::Relaxed,
        );
    }

    /// Records a failure; true if it changed the state (so it is worth one log line).
    pub(crate) fn fail(&self, error: String) -> bool {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
        !self.down.swap(true, Ordering::Relaxed)
    }

    /// Records a sign of life; true if the cluster was down.
    pub(crate) fn recover(&self) -> bool {
        self.down.swap(false, Ordering::Relaxed)
    }
}
