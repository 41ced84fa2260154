//! Customer timelines: each customer's latest touchpoints across sources, so support sees
//! what a customer already read and tried before a ticket.
//!
//! The stitcher records every event (late ones too: they happened) under the customer it
//! belongs to on arrival; when two customers turn out to be one, their timelines merge.
//! Each keeps its latest `capacity` touchpoints in event time (16 bytes each), and customers
//! silent for `retention` of event time are forgotten, so memory follows the active
//! customers, not everyone ever seen.

use crate::stitch::Stitcher;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use trailmap_mine::report::micros_string;
use trailmap_model::IdentityKind;

/// One touchpoint of a customer: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moment {
    /// Event time, µs since the epoch.
    pub ts: i64,
    pub touchpoint: u32,
    /// Source id (the stitcher's names).
    pub source: u16,
}

const _: () = assert!(std::mem::size_of::<Moment>() == 16);

/// Timelines by customer (root identity node).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Timelines {
    by_customer: FxHashMap<u32, Vec<Moment>>,
    capacity: usize,
    retention: i64,
    /// The watermark of the last sweep for silent customers.
    swept_at: i64,
}

/// Keeps the latest `capacity` moments of a time-ordered list.
fn keep_latest(moments: &mut Vec<Moment>, capacity: usize) {
    if moments.len() > capacity {
        moments.drain(..moments.len() - capacity);
    }
}

impl Timelines {
    /// Keeps `capacity` touchpoints per customer (0: none) for `retention` µs of silence.
    pub fn new(capacity: usize, retention: i64) -> Timelines {
        Timelines {
            by_customer: FxHashMap::default(),
            capacity,
            retention: retention.max(1),
            swept_at: i64::MIN,
        }
    }

    /// Touchpoints kept per customer.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records a customer's event, in event-time order (ties: arrival order).
    pub fn record(&mut self, customer: u32, m: Moment) {
        if self.capacity == 0 {
            return;
        }
        let t = self.by_customer.entry(customer).or_default();
        if t.len() == self.capacity {
            // Full: the oldest goes, unless this one is older still.
            if t.first().is_some_and(|first| m.ts < first.ts) {
                return;
            }
            t.remove(0);
        } else if t.len() == t.capacity() {
            // Grown by half, never past the capacity: a timeline holds exactly what it keeps.
            let more = (t.len() / 2).max(2).min(self.capacity - t.len());
            t.reserve_exact(more);
        }
        if t.last().is_none_or(|l| l.ts <= m.ts) {
            t.push(m);
        } else {
            let at = t.partition_point(|x| x.ts <= m.ts);
            t.insert(at, m);
        }
    }

    /// Customer `from` turned out to be `into`: one timeline, the latest kept.
    pub fn merge(&mut self, from: u32, into: u32) {
        let Some(theirs) = self.by_customer.remove(&from) else {
            return;
        };
        let mine = self.by_customer.entry(into).or_default();
        let mut merged = Vec::with_capacity(mine.len() + theirs.len());
        let (mut a, mut b) = (mine.iter().peekable(), theirs.iter().peekable());
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            if x.ts <= y.ts {
                merged.push(**x);
                a.next();
            } else {
                merged.push(**y);
                b.next();
            }
        }
        merged.extend(a);
        merged.extend(b);
        keep_latest(&mut merged, self.capacity);
        merged.shrink_to_fit();
        *mine = merged;
    }

    /// A customer's kept touchpoints, oldest first.
    pub fn of(&self, customer: u32) -> &[Moment] {
        self.by_customer.get(&customer).map_or(&[], Vec::as_slice)
    }

    /// Forgets customers silent for the retention as of `watermark`; sweeps only when the
    /// watermark moved on by a quarter of it, so the cost spreads thin.
    pub fn sweep(&mut self, watermark: i64) {
        if watermark == i64::MAX
            || watermark == i64::MIN
            || watermark.saturating_sub(self.swept_at) < self.retention / 4
        {
            return;
        }
        self.swept_at = watermark;
        let horizon = watermark.saturating_sub(self.retention);
        self.by_customer
            .retain(|_, t| t.last().is_some_and(|m| m.ts >= horizon));
        if self.by_customer.len() * 4 < self.by_customer.capacity() {
            self.by_customer.shrink_to(self.by_customer.len() * 2);
        }
    }

    /// Customers with a timeline.
    pub fn customers(&self) -> usize {
        self.by_customer.len()
    }

    /// Bytes held: the table and the touchpoints.
    pub fn bytes(&self) -> usize {
        let table = self.by_customer.capacity() * (std::mem::size_of::<(u32, Vec<Moment>)>() + 1);
        let moments: usize = self
            .by_customer
            .values()
            .map(|t| t.capacity() * std::mem::size_of::<Moment>())
            .sum();
        table + moments
    }
}

/// One touchpoint of a customer's timeline, named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEntry {
    /// Event time, Unix µs, and the same for people (RFC 3339).
    pub ts: i64,
    pub time: String,
    pub touchpoint: String,
    pub stage: Option<String>,
    /// The source it came from (`clickstream`, `ticket`, `crm`, …).
    pub source: String,
}

/// A customer's latest touchpoints across sources, as `/api/customers/{id}/timeline`
/// returns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustomerTimeline {
    /// The stitched customer, named by the identifier its identities are rooted at, and
    /// that identifier's kind (`user_id`, `email`, `anonymous_id`, …).
    pub customer: String,
    pub customer_kind: String,
    /// The kind the asked identifier was found as.
    pub matched: String,
    /// With `before`: the latest occurrence of that touchpoint, which the timeline ends at.
    pub before: Option<TimelineEntry>,
    /// The touchpoints, oldest first: the last `limit` (before `before`, when asked).
    pub events: Vec<TimelineEntry>,
    /// Touchpoints kept per customer (`[timeline] events`): the timeline reaches back at
    /// most this far.
    pub kept: usize,
}

/// Why there is no timeline to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineMiss {
    /// No customer has that identifier (or has been heard from within the retention).
    NoCustomer(String),
    /// The `before` touchpoint is not one the pipeline knows.
    UnknownTouchpoint(String),
    /// The customer has no such touchpoint among those kept.
    NotReached(String),
    Stopped(String),
}

impl std::fmt::Display for TimelineMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimelineMiss::NoCustomer(m)
            | TimelineMiss::UnknownTouchpoint(m)
            | TimelineMiss::NotReached(m)
            | TimelineMiss::Stopped(m) => f.write_str(m),
        }
    }
}

impl CustomerTimeline {
    /// The timeline of `identifier`'s customer from the stitcher's kept touchpoints.
    pub fn of(
        st: &Stitcher,
        identifier: &str,
        kind: Option<IdentityKind>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<CustomerTimeline, TimelineMiss> {
        let before_id = match before {
            None => None,
            Some(name) => Some(
                st.touchpoints()
                    .iter()
                    .position(|t| t == name)
                    .ok_or_else(|| {
                        TimelineMiss::UnknownTouchpoint(format!(
                            "`{name}` is not a touchpoint seen so far; `before` takes a touchpoint name such as ticket_opened"
                        ))
                    })? as u32,
            ),
        };
        let found = st.timeline(identifier, kind).ok_or_else(|| {
            TimelineMiss::NoCustomer(format!(
                "no customer has the identifier `{identifier}`{}; identifiers are matched as the sources send them (emails in any case)",
                kind.map_or(String::new(), |k| format!(" as {k}"))
            ))
        })?;
        let moments = &found.moments;
        if moments.is_empty() {
            return Err(TimelineMiss::NoCustomer(format!(
                "customer `{}` has no touchpoints kept: silent for longer than [timeline] retention, or [timeline] events = 0",
                found.identifier
            )));
        }
        let (end, before) = match before_id {
            None => (moments.len(), None),
            Some(tp) => {
                let at = moments
                    .iter()
                    .rposition(|m| m.touchpoint == tp)
                    .ok_or_else(|| {
                        TimelineMiss::NotReached(format!(
                            "customer `{}` has no `{}` among its latest {} touchpoints",
                            found.identifier,
                            before.unwrap_or_default(),
                            moments.len()
                        ))
                    })?;
                (at, Some(at))
            }
        };
        let entry = |m: &Moment| TimelineEntry {
            ts: m.ts,
            time: micros_string(m.ts),
            touchpoint: st
                .touchpoints()
                .get(m.touchpoint as usize)
                .cloned()
                .unwrap_or_default(),
            stage: st.stages().get(m.touchpoint as usize).cloned().flatten(),
            source: st
                .sources()
                .get(usize::from(m.source))
                .cloned()
                .unwrap_or_default(),
        };
        Ok(CustomerTimeline {
            customer: found.identifier.clone(),
            customer_kind: found.kind.to_string(),
            matched: found.matched.to_string(),
            before: before.map(|at| entry(&moments[at])),
            events: moments[end.saturating_sub(limit)..end]
                .iter()
                .map(entry)
                .collect(),
            kept: st.timeline_capacity(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ts: i64, touchpoint: u32) -> Moment {
        Moment {
            ts,
            touchpoint,
            source: 0,
        }
    }

    fn touchpoints(t: &Timelines, c: u32) -> Vec<u32> {
        t.of(c).iter().map(|m| m.touchpoint).collect()
    }

    #[test]
    fn the_latest_are_kept_in_time_order_late_ones_included() {
        let mut t = Timelines::new(3, 100);
        for (ts, tp) in [(10, 1), (20, 2), (30, 3)] {
            t.record(7, at(ts, tp));
        }
        // Late, but among the latest three: it takes its place; the oldest goes.
        t.record(7, at(25, 4));
        assert_eq!(touchpoints(&t, 7), [2, 4, 3]);
        // Older than all kept: nothing changes.
        t.record(7, at(5, 5));
        assert_eq!(touchpoints(&t, 7), [2, 4, 3]);
        // Equal times keep arrival order.
        t.record(7, at(30, 6));
        assert_eq!(touchpoints(&t, 7), [4, 3, 6]);
    }

    #[test]
    fn a_full_timeline_holds_no_more_than_it_keeps() {
        let mut t = Timelines::new(20, 100);
        for ts in 0..100 {
            t.record(1, at(ts, ts as u32));
        }
        assert_eq!(t.of(1).len(), 20);
        assert_eq!(t.by_customer[&1].capacity(), 20);
        assert_eq!(t.of(1)[0].ts, 80);
        assert_eq!(
            t.bytes() - t.by_customer.capacity() * (std::mem::size_of::<(u32, Vec<Moment>)>() + 1),
            20 * 16
        );
    }

    #[test]
    fn merged_customers_share_one_timeline() {
        let mut t = Timelines::new(4, 100);
        t.record(1, at(10, 1));
        t.record(1, at(40, 4));
        t.record(2, at(20, 2));
        t.record(2, at(30, 3));
        t.record(2, at(50, 5));
        t.merge(2, 1);
        assert_eq!(touchpoints(&t, 1), [2, 3, 4, 5]);
        assert!(t.of(2).is_empty());
        assert_eq!(t.customers(), 1);
        // Merging a customer without a timeline changes nothing.
        t.merge(9, 1);
        assert_eq!(touchpoints(&t, 1), [2, 3, 4, 5]);
    }

    #[test]
    fn silent_customers_are_forgotten_and_none_kept_at_zero() {
        let mut t = Timelines::new(2, 100);
        t.record(1, at(10, 1));
        t.record(2, at(150, 2));
        t.sweep(105);
        assert_eq!(t.customers(), 2, "both heard from within 100");
        // Customer 1 has now been silent for 110, but sweeps wait for a quarter of the
        // retention to pass.
        t.sweep(120);
        assert_eq!(t.customers(), 2);
        t.sweep(200);
        assert_eq!(t.customers(), 1);
        assert!(t.of(1).is_empty());
        // The end of input is no reason to forget anyone.
        t.sweep(i64::MAX);
        assert_eq!(t.customers(), 1);
        let mut none = Timelines::new(0, 100);
        none.record(1, at(10, 1));
        assert_eq!(none.customers(), 0);
    }
}
