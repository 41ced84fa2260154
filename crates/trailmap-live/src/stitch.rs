//! The front of the pipeline: canonical batches in, events routed to shards by customer.
//!
//! Batches are read by the same [`JourneyBuilder`] batch import uses (same columns, same
//! identity rules), then drained: the stitcher keeps only the identity graph and the names.
//! It owns the event-time watermark (per partition; the pipeline's is the minimum), sets
//! aside events beyond the lateness horizon, and says which customers merged, so their open
//! state can move to the shard of the customer they merged into.

use crate::shard::LiveEvent;
use crate::timeline::{Moment, Timelines};
use arrow::array::RecordBatch;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use trailmap_model::IdentityKind;
use trailmap_sessionize::{Attribute, JourneyBuilder};

/// Distinct values of the kept attribute the live map is kept for (each a segment map and
/// per-value funnel levels); later values count together as [`OTHER_VALUES`]. Segments are
/// for a handful of values (devices, plans, countries), not for ids.
pub const MAX_VALUES: u32 = 1000;

/// The value all values after the first [`MAX_VALUES`] count as.
pub const OTHER_VALUES: &str = "(other)";

/// An event that arrived later than the allowed lateness: stored and counted, not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateEvent {
    pub customer: u32,
    pub ts: i64,
    pub touchpoint: u32,
    pub source: u16,
    /// The watermark when it arrived.
    pub watermark: i64,
}

/// Customer state to move because two customers turned out to be one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Both live on `shard`: merge `from` into `into` there.
    Merge { shard: usize, from: u32, into: u32 },
    /// `from` lives on `from_shard`, `into` on `to_shard`: evict, then adopt.
    Move {
        from_shard: usize,
        to_shard: usize,
        from: u32,
        into: u32,
    },
}

/// What one batch turned into.
#[derive(Debug, Default)]
pub struct Routed {
    /// To apply, in order, before the events.
    pub handoffs: Vec<Handoff>,
    /// Per shard: `(customer, event)` in arrival order.
    pub events: Vec<Vec<(u32, LiveEvent)>>,
    pub late: Vec<LateEvent>,
}

/// Counts the stitcher keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StitchStats {
    /// Events with a touchpoint, routed or late.
    pub events: u64,
    /// Identity-only records.
    pub identity_links: u64,
    /// Events beyond the lateness horizon.
    pub late: u64,
    /// Merges of customers that both had events.
    pub merges: u64,
}

/// What one source delivered: its events, and of those the ones beyond the lateness
/// horizon (so a source that lags, such as a CRM export arriving hours late, shows).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceCounts {
    /// The `source` column's value (`clickstream`, `ticket`, `crm`, a `[[sources]]` name).
    pub source: String,
    pub events: u64,
    pub late: u64,
    /// Records of the source rejected to the dead letters (unreadable, unmappable).
    pub rejected: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// May deliver more: holds the watermark back at its latest event.
    Active,
    /// Caught up with its input for now (a Kafka partition at its end): does not hold the
    /// watermark back until it delivers again.
    Idle,
    /// No more input, ever.
    Ended,
}

#[derive(Debug, Clone, Copy)]
struct Partition {
    latest: i64,
    progress: Progress,
}

pub struct Stitcher {
    builder: JourneyBuilder,
    shards: usize,
    /// Shard of each customer (by root identity node) that has had events.
    owner: FxHashMap<u32, usize>,
    /// Latest event time and state of each partition.
    partitions: Vec<Partition>,
    watermark: i64,
    lateness: i64,
    seq: u64,
    pub stats: StitchStats,
    /// `(events, late)` by source id.
    by_source: Vec<(u64, u64)>,
    timelines: Timelines,
}

/// A stitcher's state between batches, for a snapshot (see [`Stitcher::snapshot`]).
#[derive(Serialize)]
struct StitcherParts<'a> {
    builder: &'a JourneyBuilder,
    owner: &'a FxHashMap<u32, usize>,
    watermark: i64,
    seq: u64,
    stats: StitchStats,
    by_source: &'a Vec<(u64, u64)>,
    timelines: &'a Timelines,
}

#[derive(Deserialize)]
struct OwnedStitcherParts {
    builder: JourneyBuilder,
    owner: FxHashMap<u32, usize>,
    watermark: i64,
    seq: u64,
    stats: StitchStats,
    by_source: Vec<(u64, u64)>,
    timelines: Timelines,
}

/// A customer's timeline as the stitcher answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The customer's identifier (the root of its identities) and its kind.
    pub kind: IdentityKind,
    pub identifier: String,
    /// The kind the asked identifier was found as.
    pub matched: IdentityKind,
    /// Its kept touchpoints, oldest first.
    pub moments: Vec<Moment>,
}

/// A customer's home shard until a merge moves it: a multiplicative hash of its root.
fn home(root: u32, shards: usize) -> usize {
    ((u64::from(root).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % shards as u64) as usize
}

impl Stitcher {
    /// `touchpoints` are interned first, in order, so configured funnels can be resolved
    /// against fixed ids before any event arrives.
    pub fn new(shards: usize, partitions: usize, lateness: i64, touchpoints: &[&str]) -> Self {
        let mut builder = JourneyBuilder::new();
        builder.graph_mut().record_merges();
        for name in touchpoints {
            builder.touchpoint_id(name);
        }
        Stitcher {
            builder,
            shards: shards.max(1),
            owner: FxHashMap::default(),
            partitions: vec![
                Partition {
                    latest: i64::MIN,
                    progress: Progress::Active,
                };
                partitions.max(1)
            ],
            watermark: i64::MIN,
            lateness,
            seq: 0,
            stats: StitchStats::default(),
            by_source: Vec::new(),
            timelines: Timelines::new(0, 1),
        }
    }

    /// Keeps each customer's latest `events` touchpoints for `retention` µs of silence
    /// ([`Timelines`]). Call before the first batch.
    pub fn keep_timelines(&mut self, events: usize, retention: i64) {
        self.timelines = Timelines::new(events, retention);
    }

    /// The timeline of the customer an identifier belongs to: looked up as `kind`, or as
    /// each kind in turn (user id, email, … anonymous id) when `None`.
    pub fn timeline(&self, identifier: &str, kind: Option<IdentityKind>) -> Option<Found> {
        let graph = self.builder.graph();
        let kinds = match kind {
            Some(k) => vec![k],
            None => IdentityKind::ALL.to_vec(),
        };
        let (matched, node) = kinds
            .into_iter()
            .find_map(|k| graph.lookup(k, identifier).map(|n| (k, n)))?;
        let customer = graph.root(node);
        let (kind, identifier) = graph.identifier(customer);
        Some(Found {
            kind,
            identifier: identifier.to_string(),
            matched,
            moments: self.timelines.of(customer).to_vec(),
        })
    }

    /// Touchpoints kept per customer.
    pub fn timeline_capacity(&self) -> usize {
        self.timelines.capacity()
    }

    /// Source names by id.
    pub fn sources(&self) -> &[String] {
        self.builder.sources()
    }

    /// Events and late events by source, in the order sources were first seen.
    pub fn by_source(&self) -> Vec<SourceCounts> {
        self.builder
            .sources()
            .iter()
            .zip(self.by_source.iter().chain(std::iter::repeat(&(0, 0))))
            .map(|(name, &(events, late))| SourceCounts {
                source: name.clone(),
                events,
                late,
                rejected: 0,
            })
            .collect()
    }

    /// Keeps `attribute`'s value with every event, for alert breakdowns. Call before the
    /// first batch.
    pub fn keep_attribute(&mut self, attribute: Attribute) {
        self.builder.keep_attribute(attribute);
    }

    /// How many values [`attribute_values`](Self::attribute_values) names.
    pub fn attribute_value_count(&self) -> usize {
        let seen = self.builder.attribute_values().map_or(0, <[String]>::len);
        seen.min(MAX_VALUES as usize + 1)
    }

    /// The kept attribute's values by id (id 0: events without it), the first
    /// [`MAX_VALUES`] seen, then [`OTHER_VALUES`] for all later ones.
    pub fn attribute_values(&self) -> Vec<String> {
        let seen = self.builder.attribute_values().unwrap_or_default();
        let mut values: Vec<String> = seen.iter().take(MAX_VALUES as usize).cloned().collect();
        if seen.len() > MAX_VALUES as usize {
            values.push(OTHER_VALUES.to_string());
        }
        values
    }

    /// Touchpoint names by id.
    pub fn touchpoints(&self) -> &[String] {
        self.builder.touchpoints().0
    }

    /// Stage of each touchpoint.
    pub fn stages(&self) -> &[Option<String>] {
        self.builder.touchpoints().1
    }

    /// The newest event time any partition has delivered.
    pub fn newest(&self) -> Option<i64> {
        self.partitions
            .iter()
            .map(|p| p.latest)
            .max()
            .filter(|&t| t > i64::MIN)
    }

    /// The pipeline's event-time watermark: the least of the partitions' latest times.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Display name of a customer (its root identifier).
    pub fn customer_name(&mut self, customer: u32) -> String {
        self.builder.graph_mut().identifier(customer).1.to_string()
    }

    /// Its state between two batches, for a snapshot of the pipeline; `None` once a
    /// partition has ended: that state knows the input is over (the watermark ran past
    /// it), which a restart, reading on, must not inherit.
    pub fn snapshot(&self) -> Result<Option<Vec<u8>>, String> {
        if self
            .partitions
            .iter()
            .any(|p| p.progress == Progress::Ended)
        {
            return Ok(None);
        }
        let parts = StitcherParts {
            builder: &self.builder,
            owner: &self.owner,
            watermark: self.watermark,
            seq: self.seq,
            stats: self.stats,
            by_source: &self.by_source,
            timelines: &self.timelines,
        };
        postcard::to_stdvec(&parts)
            .map(Some)
            .map_err(|e| format!("encoding the stitcher: {e}"))
    }

    /// The stitcher a [`snapshot`](Self::snapshot) was taken of, for `shards` shards (as
    /// it was: the owner of each customer is a shard index) and the `partitions` the
    /// source has now. Partitions start afresh, active and with no time yet (a source may
    /// number its partitions otherwise this run): each holds the watermark, which keeps
    /// the value it had and never goes back, until it delivers or catches up again.
    pub fn restore(
        bytes: &[u8],
        shards: usize,
        partitions: usize,
        lateness: i64,
    ) -> Result<Stitcher, String> {
        let p: OwnedStitcherParts =
            postcard::from_bytes(bytes).map_err(|e| format!("decoding the stitcher: {e}"))?;
        let shards = shards.max(1);
        if p.owner.values().any(|&s| s >= shards) {
            return Err(format!("it was taken with more than {shards} shards"));
        }
        let fresh = Partition {
            latest: i64::MIN,
            progress: Progress::Active,
        };
        Ok(Stitcher {
            builder: p.builder,
            shards,
            owner: p.owner,
            partitions: vec![fresh; partitions.max(1)],
            watermark: p.watermark,
            lateness,
            seq: p.seq,
            stats: p.stats,
            by_source: p.by_source,
            timelines: p.timelines,
        })
    }

    /// Reads a canonical batch from `partition`.
    pub fn push(&mut self, partition: usize, batch: &RecordBatch) -> Result<Routed, String> {
        let horizon = self.watermark.saturating_sub(self.lateness);
        self.builder.push_batch(batch)?;
        let arrived = self.builder.drain();
        self.stats.identity_links = self.builder.identity_links();
        let mut routed = Routed {
            events: vec![Vec::new(); self.shards],
            ..Routed::default()
        };
        let graph = self.builder.graph_mut();
        for (from, into) in graph.take_merges() {
            self.timelines.merge(from, into);
            let Some(from_shard) = self.owner.remove(&from) else {
                continue;
            };
            self.stats.merges += 1;
            let handoff = match self.owner.get(&into) {
                Some(&to_shard) if to_shard != from_shard => Handoff::Move {
                    from_shard,
                    to_shard,
                    from,
                    into,
                },
                Some(_) => Handoff::Merge {
                    shard: from_shard,
                    from,
                    into,
                },
                None => {
                    self.owner.insert(into, from_shard);
                    Handoff::Merge {
                        shard: from_shard,
                        from,
                        into,
                    }
                }
            };
            routed.handoffs.push(handoff);
        }
        let mut latest = i64::MIN;
        let mut last: Option<(u32, u32, usize)> = None;
        for i in 0..arrived.len() {
            let node = arrived.node[i];
            let (customer, shard) = match last {
                Some((n, c, s)) if n == node => (c, s),
                _ => {
                    let c = graph.find(node);
                    let shards = self.shards;
                    let s = *self.owner.entry(c).or_insert_with(|| home(c, shards));
                    last = Some((node, c, s));
                    (c, s)
                }
            };
            let ts = arrived.ts[i];
            latest = latest.max(ts);
            self.seq += 1;
            self.stats.events += 1;
            let source = arrived.source[i];
            self.timelines.record(
                customer,
                Moment {
                    ts,
                    touchpoint: arrived.touchpoint[i],
                    source,
                },
            );
            let i_source = usize::from(source);
            if i_source >= self.by_source.len() {
                self.by_source.resize(i_source + 1, (0, 0));
            }
            self.by_source[i_source].0 += 1;
            if ts < horizon {
                self.by_source[i_source].1 += 1;
                self.stats.late += 1;
                routed.late.push(LateEvent {
                    customer,
                    ts,
                    touchpoint: arrived.touchpoint[i],
                    source,
                    watermark: self.watermark,
                });
                continue;
            }
            routed.events[shard].push((
                customer,
                LiveEvent {
                    ts,
                    seq: self.seq,
                    touchpoint: arrived.touchpoint[i],
                    value: arrived.attribute.get(i).map_or(0, |&v| v.min(MAX_VALUES)),
                },
            ));
        }
        let p = self.partition(partition);
        p.latest = p.latest.max(latest);
        if p.progress == Progress::Idle {
            p.progress = Progress::Active;
        }
        self.update_watermark();
        self.timelines.sweep(self.watermark);
        Ok(routed)
    }

    /// A partition has no more input: it no longer holds the watermark back.
    pub fn end_partition(&mut self, partition: usize) {
        self.partition(partition).progress = Progress::Ended;
        self.update_watermark();
    }

    /// A partition has caught up with its input: it stops holding the watermark back until
    /// it delivers again (a quiet topic must not stall the map).
    pub fn idle_partition(&mut self, partition: usize) {
        let p = self.partition(partition);
        if p.progress == Progress::Active {
            p.progress = Progress::Idle;
        }
        self.update_watermark();
    }

    /// A partition's mark; a partition first seen now (a topic that gained partitions)
    /// joins the watermark from here on.
    fn partition(&mut self, partition: usize) -> &mut Partition {
        if partition >= self.partitions.len() {
            self.partitions.resize(
                partition + 1,
                Partition {
                    latest: i64::MIN,
                    progress: Progress::Active,
                },
            );
        }
        &mut self.partitions[partition]
    }

    /// The least latest time of the partitions that may deliver; when every one is caught
    /// up, the newest time seen (all input so far is in); past the end once all have ended.
    fn update_watermark(&mut self) {
        let parts = &self.partitions;
        let active = parts.iter().filter(|p| p.progress == Progress::Active);
        let mark = match active.map(|p| p.latest).min() {
            Some(least) => least,
            None => parts
                .iter()
                .filter(|p| p.progress == Progress::Idle)
                .map(|p| p.latest)
                .max()
                .unwrap_or(i64::MAX),
        };
        self.watermark = self.watermark.max(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailmap_model::schema::{EventBatchBuilder, EventRow};

    const S: i64 = 1_000_000;

    /// One event of customer `c` at `secs`.
    fn event(c: &str, secs: i64) -> RecordBatch {
        let mut row = EventRow {
            source: "test",
            ts: secs * S,
            touchpoint: Some("home_view"),
            ..Default::default()
        };
        row.identities[IdentityKind::CustomerId.index()] = Some(c);
        let mut b = EventBatchBuilder::new();
        b.push(&row);
        b.finish()
    }

    #[test]
    fn idle_partitions_stop_holding_the_watermark_until_they_deliver() {
        let mut s = Stitcher::new(1, 2, 0, &[]);
        s.push(0, &event("a", 100)).unwrap();
        assert_eq!(s.watermark(), i64::MIN, "partition 1 has not delivered");
        s.idle_partition(1);
        assert_eq!(s.watermark(), 100 * S);
        // Partition 1 delivers again, behind: it holds the watermark (which never goes back).
        s.push(1, &event("b", 50)).unwrap();
        s.push(0, &event("a", 200)).unwrap();
        assert_eq!(s.watermark(), 100 * S);
        s.push(1, &event("b", 300)).unwrap();
        assert_eq!(s.watermark(), 200 * S);
        // Every partition caught up: all input so far is in.
        s.idle_partition(0);
        s.idle_partition(1);
        assert_eq!(s.watermark(), 300 * S);
        s.end_partition(0);
        assert_eq!(s.watermark(), 300 * S);
        s.end_partition(1);
        assert_eq!(s.watermark(), i64::MAX);
    }

    #[test]
    fn values_past_the_cap_count_together() {
        let mut s = Stitcher::new(1, 1, 0, &[]);
        s.keep_attribute(Attribute::parse("channel"));
        let n = MAX_VALUES as usize + 5;
        let mut b = EventBatchBuilder::new();
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        for (i, channel) in names.iter().enumerate() {
            let mut row = EventRow {
                source: "test",
                ts: i as i64 * S,
                touchpoint: Some("home_view"),
                channel: Some(channel),
                ..Default::default()
            };
            row.identities[IdentityKind::CustomerId.index()] = Some("a");
            b.push(&row);
        }
        let routed = s.push(0, &b.finish()).expect("push");
        let values: Vec<u32> = routed.events[0].iter().map(|(_, e)| e.value).collect();
        // Id 0 is "no value"; the first MAX_VALUES - 1 channels get their own.
        assert_eq!(values[0], 1);
        assert!(values.iter().all(|&v| v <= MAX_VALUES));
        assert_eq!(
            values.iter().filter(|&&v| v == MAX_VALUES).count(),
            n + 1 - MAX_VALUES as usize
        );
        let named = s.attribute_values();
        assert_eq!(named.len(), MAX_VALUES as usize + 1);
        assert_eq!(s.attribute_value_count(), named.len());
        assert_eq!(named.last().map(String::as_str), Some(OTHER_VALUES));
    }

    #[test]
    fn partitions_first_seen_later_join_the_watermark() {
        let mut s = Stitcher::new(1, 1, 0, &[]);
        s.push(0, &event("a", 100)).unwrap();
        assert_eq!(s.watermark(), 100 * S);
        // Partition 2 appears; partition 1, known to exist but silent, holds the mark.
        s.push(2, &event("b", 400)).unwrap();
        s.push(0, &event("a", 500)).unwrap();
        assert_eq!(s.watermark(), 100 * S);
        s.idle_partition(1);
        assert_eq!(s.watermark(), 400 * S);
    }
}
