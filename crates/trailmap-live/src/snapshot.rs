//! Snapshots of the pipeline's state, so a restart need not replay all it ever stored.
//!
//! A [`Cut`](crate::source::Cut) in the feed is a barrier: the stitcher encodes its state
//! when it reads the cut, then passes it to every shard behind the events it routed before,
//! and each shard encodes its own when it gets there. Together they are the state after
//! exactly the input the store holds up to the cut's segment. A restart under the same
//! [`fingerprint`] (the settings that shape the state) decodes them and replays only the
//! segments after; any other restart replays everything, as without a snapshot.

use crate::shard::{Shard, ShardConfig};
use crate::stitch::{LateEvent, Stitcher};
use serde::{Deserialize, Serialize};
use trailmap_model::config::Config;
use trailmap_model::{Error, Result};

/// Bumped when what a snapshot holds changes shape.
const FORMAT: u32 = 2;

/// The whole state: each part encoded on its own, where it was taken.
#[derive(Serialize, Deserialize)]
pub(crate) struct PipelineState {
    pub fingerprint: String,
    pub stitcher: Vec<u8>,
    /// Events set aside beyond the lateness horizon so far.
    pub late: Vec<LateEvent>,
    pub shards: Vec<Vec<u8>>,
}

impl PipelineState {
    pub fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(self).map_err(|e| Error::Other(format!("encoding the live state: {e}")))
    }

    /// A stored state, if it was taken under `fingerprint`; else why not.
    pub fn decode(bytes: &[u8], fingerprint: &str) -> std::result::Result<Self, String> {
        let state: PipelineState =
            postcard::from_bytes(bytes).map_err(|e| format!("it cannot be read: {e}"))?;
        if state.fingerprint != fingerprint {
            return Err(
                "it was taken under other settings (sessions, journeys, segments, \
                        breakdowns, timelines, shards or trailmap version)"
                    .into(),
            );
        }
        Ok(state)
    }

    /// The shards it holds, under `config`.
    pub fn shards(&self, config: &ShardConfig) -> std::result::Result<Vec<Shard>, String> {
        self.shards
            .iter()
            .map(|bytes| Shard::restore(config.clone(), bytes))
            .collect()
    }

    /// The stitcher it holds.
    pub fn stitcher(
        &self,
        partitions: usize,
        lateness: i64,
    ) -> std::result::Result<Stitcher, String> {
        Stitcher::restore(&self.stitcher, self.shards.len(), partitions, lateness)
    }
}

/// What a snapshot's state depends on besides the input: a state taken under other
/// settings is not used.
pub(crate) fn fingerprint(config: &Config, shards: usize) -> Result<String> {
    let shaping = serde_json::json!({
        "format": FORMAT,
        "trailmap": env!("CARGO_PKG_VERSION"),
        "shards": shards,
        "sessions": config.sessions,
        "journeys": config.journeys,
        "segments": config.segments,
        "breakdown": config.breakdown_attribute()?,
        "alerts_by_value": config
            .alerts
            .values()
            .filter(|r| r.breakdown.is_some())
            .map(|r| r.journey.as_str())
            .collect::<Vec<_>>(),
        "timeline": config.timeline,
    });
    Ok(shaping.to_string())
}
