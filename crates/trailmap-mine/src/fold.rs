//! Running an aggregate over a log's journeys on every core.

use std::sync::atomic::{AtomicUsize, Ordering};
use trailmap_model::config::Scope;
use trailmap_sessionize::{Journey, JourneyLog};

/// A mergeable partial result over journeys that live for `'log`.
///
/// `merge` must be associative and must not depend on how journeys were split between
/// parts: aggregating two halves and merging gives the whole-input answer. A property test
/// per aggregate checks exactly that. The lifetime lets a partial state borrow from the log
/// it reads (variants keep their touchpoint sequences that way, rather than copying the
/// log's touchpoints once more).
pub trait Aggregate<'log>: Send + Sized {
    /// Adds one journey (events in order; ties already in arrival order).
    fn add(&mut self, journey: &Journey<'log>);

    /// Folds another partial state into this one.
    fn merge(&mut self, other: Self);

    /// Called on a part's own thread once it has seen its journeys, before parts merge:
    /// work that makes merging cheaper (sorting, compacting) belongs here, where it runs
    /// on every core rather than in the serial merge.
    fn seal(&mut self) {}
}

/// Journeys handed to a thread at a time: big enough that the shared counter is cold, small
/// enough that both threads finish together.
const CHUNK: usize = 4096;

/// Aggregates every journey of `scope`, on all cores, each thread into its own partial
/// state from `make`, then merges the parts.
pub fn fold<'log, A: Aggregate<'log>>(
    log: &'log JourneyLog,
    scope: Scope,
    make: impl Fn() -> A + Sync,
) -> A {
    let n = log.num_journeys(scope);
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n.div_ceil(CHUNK))
        .max(1);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut acc = make();
        loop {
            let lo = next.fetch_add(1, Ordering::Relaxed) * CHUNK;
            if lo >= n {
                acc.seal();
                break acc;
            }
            for i in lo..(lo + CHUNK).min(n) {
                acc.add(&log.journey(scope, i));
            }
        }
    };
    if threads == 1 {
        return work();
    }
    let mut parts: Vec<A> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut parts = vec![work()];
        for h in handles {
            parts.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        parts
    });
    let mut acc = parts.swap_remove(0);
    for part in parts {
        acc.merge(part);
    }
    acc
}

/// Aggregates journeys `range` of `scope` on this thread: what one partition of a larger
/// input does.
pub fn fold_range<'log, A: Aggregate<'log>>(
    log: &'log JourneyLog,
    scope: Scope,
    range: std::ops::Range<usize>,
    mut acc: A,
) -> A {
    for i in range {
        acc.add(&log.journey(scope, i));
    }
    acc.seal();
    acc
}
