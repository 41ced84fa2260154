//! Every aggregate is mergeable: split the journeys at random, aggregate the parts, merge
//! them in either grouping, and get the whole-input answer.

mod common;
use common::*;
use proptest::prelude::*;
use trailmap_mine::funnel::{FunnelSpec, Modes, TrendPeriod};
use trailmap_mine::paths::PathOptions;
use trailmap_mine::tree::Direction;
use trailmap_mine::{Aggregate, Dropoffs, Funnel, KpiSpec, Kpis, PathStats, PathTree, TreeSpec};
use trailmap_model::config::{CountBy, StepOrder};
use trailmap_sessionize::Sieve;

fn journeys() -> impl Strategy<Value = Vec<Vec<(i64, u32)>>> {
    prop::collection::vec(
        // Few distinct times, so equal timestamps (and their ordering rules) are common.
        prop::collection::vec((0i64..30, 0u32..6), 1..12)
            .prop_map(|v| v.into_iter().map(|(t, n)| (t * 600_000_000, n)).collect()),
        0..40,
    )
}

/// Aggregates `parts` of the journeys separately and merges them as `(a + b) + c` and as
/// `a + (b + c)`; returns the whole, and both merges.
fn split<'j, A: Aggregate<'j> + Clone>(
    j: &'j Journeys,
    cuts: (usize, usize),
    make: impl Fn() -> A,
) -> (A, A, A) {
    let n = j.len();
    let (x, y) = (cuts.0 % (n + 1), cuts.1 % (n + 1));
    let (x, y) = (x.min(y), x.max(y));
    let part = |r: std::ops::Range<usize>| {
        let mut a = make();
        for i in r {
            a.add(&j.get(i));
        }
        a
    };
    let mut whole = make();
    for i in 0..n {
        whole.add(&j.get(i));
    }
    let (a, b, c) = (part(0..x), part(x..y), part(y..n));
    let mut left = a.clone();
    left.merge(b.clone());
    left.merge(c.clone());
    let mut bc = b;
    bc.merge(c);
    let mut right = a;
    right.merge(bc);
    (whole, left, right)
}

fn sorted<K: Ord + Clone, V: Clone>(it: impl Iterator<Item = (K, V)>) -> Vec<(K, V)> {
    let mut v: Vec<(K, V)> = it.collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn paths_view(p: &PathStats) -> impl PartialEq + std::fmt::Debug {
    (
        p.journeys,
        p.events,
        sorted(p.transitions().map(|(f, t, s)| ((f, t), s.clone()))),
        p.starts().collect::<Vec<_>>(),
        p.ends().collect::<Vec<_>>(),
        sorted(p.variants().into_iter().map(|(v, c)| (v.to_vec(), c))),
        sorted(p.back_and_forth().map(|(k, l)| (k, (l.count, l.journeys)))),
    )
}

fn funnel_view(f: &Funnel<'_>) -> impl PartialEq + std::fmt::Debug {
    (
        (f.journeys, f.attempts, f.excluded, f.tallies.clone()),
        (
            f.from_previous.clone(),
            f.from_first.clone(),
            f.bins.clone(),
        ),
        sorted(f.next_after.iter()),
        sorted(f.breakdown.iter().map(|(k, v)| (*k, v.clone()))),
        sorted(f.trend.iter().map(|(k, v)| (*k, v.clone()))),
    )
}

fn funnel_spec(which: usize) -> FunnelSpec {
    let h = 3_600_000_000;
    let mut s = spec(&[0, 1, 2], 24 * h, Modes::default());
    s.as_of = 100 * h;
    s.trend = Some(TrendPeriod::Day);
    match which {
        0 => {}
        1 => s.exclusions = vec![5],
        2 => s.count = CountBy::Attempts,
        3 => s.order = StepOrder::Unordered,
        4 => {
            s.min_gap = vec![h, 0];
            s.max_gap = vec![0, 10 * h];
        }
        5 => s.modes = Modes::parse("strict_once,strict_increase").unwrap(),
        _ => {
            s.modes = Modes::parse("strict_order").unwrap();
            s.order = StepOrder::Strict;
            s.steps = vec![0, 1, 0];
        }
    }
    s
}

proptest! {
    #[test]
    fn paths_merge(j in journeys(), cuts in (0usize..64, 0usize..64)) {
        let j = Journeys::new(&j);
        let (whole, left, right) = split(&j, cuts, || PathStats::new(4, PathOptions::default()));
        prop_assert_eq!(paths_view(&whole), paths_view(&left));
        prop_assert_eq!(paths_view(&whole), paths_view(&right));
    }

    #[test]
    fn funnel_merge(j in journeys(), cuts in (0usize..64, 0usize..64), which in 0usize..7) {
        let j = Journeys::new(&j);
        let events: usize = j.ts.iter().map(Vec::len).sum();
        let attribute: Vec<u32> = (0..events as u32).map(|i| i % 3).collect();
        let spec = funnel_spec(which);
        let (whole, left, right) = split(&j, cuts, || Funnel::new(spec.clone(), Some(&attribute)));
        prop_assert_eq!(funnel_view(&whole), funnel_view(&left));
        prop_assert_eq!(funnel_view(&whole), funnel_view(&right));
    }

    /// A funnel that learns "now" only at the end (a streaming reader's) settles to the
    /// answer of one that knew it up front, split and merged or not, levels only or not.
    #[test]
    fn deferred_maturity_settles_to_the_known_answer(
        j in journeys(),
        which in 0usize..7,
        now in 0i64..140,
        cut in 0usize..64,
        lean in any::<bool>(),
    ) {
        let j = Journeys::new(&j);
        let events: usize = j.ts.iter().map(Vec::len).sum();
        let attribute: Vec<u32> = (0..events as u32).map(|i| i % 3).collect();
        // Times span 0..5h and the window is 24h: "now" from 0 to 35h, in steps that meet
        // window ends exactly at times, leaves some journeys maturing and others not.
        let mut spec = funnel_spec(which);
        spec.as_of = now * 900_000_000;
        let make = |deferred: bool| {
            let mut s = spec.clone();
            if deferred {
                s.as_of = i64::MIN;
            }
            let mut f = Funnel::new(s, Some(&attribute));
            if lean {
                f.levels_only();
            }
            if deferred {
                f.defer_maturity();
            }
            f
        };
        let mut known = make(false);
        let cut = cut % (j.len() + 1);
        let (mut first, mut second) = (make(true), make(true));
        let mut latest = i64::MIN;
        for i in 0..j.len() {
            let journey = j.get(i);
            known.add(&journey);
            let part = if i < cut { &mut first } else { &mut second };
            part.add(&journey);
            // As a stream does: "now" is at least the latest time seen so far.
            latest = latest.max(journey.ts.iter().copied().max().unwrap_or(i64::MIN));
            part.settled_until(latest.min(spec.as_of));
        }
        first.merge(second);
        first.settle(spec.as_of);
        prop_assert_eq!(funnel_view(&first), funnel_view(&known));
        prop_assert_eq!(first.spec().as_of, spec.as_of);
    }

    /// A funnel handed journeys sifted to its kept touchpoints (as a grouped stream hands
    /// them) counts exactly what it counts from the whole journeys: levels, times, next
    /// touchpoints, breakdowns by the entering event, trends and recorded attempts.
    #[test]
    fn a_funnel_counts_sifted_journeys_as_whole_ones(j in journeys(), which in 0usize..7) {
        let j = Journeys::new(&j);
        let events: usize = j.ts.iter().map(Vec::len).sum();
        let attribute: Vec<u32> = (0..events as u32).map(|i| i % 3).collect();
        let spec = funnel_spec(which);
        let (mut whole, mut sifted) = (
            Funnel::new(spec.clone(), Some(&attribute)),
            Funnel::new(spec.clone(), Some(&attribute)),
        );
        whole.record_attempts();
        sifted.record_attempts();
        let Some(kept) = sifted.kept_touchpoints() else {
            // Only under strict_order, where every event counts.
            prop_assert!(spec.modes.strict_order);
            return Ok(());
        };
        let mut sieve = Sieve::new(&kept);
        for i in 0..j.len() {
            whole.add(&j.get(i));
            sifted.add_sifted(&sieve.sift(&j.get(i)));
        }
        prop_assert_eq!(funnel_view(&sifted), funnel_view(&whole));
        prop_assert_eq!(&sifted.attempts_made, &whole.attempts_made);
    }

    /// A funnel counting levels only (as the live map runs it) counts the same levels and
    /// attempts as one counting everything.
    #[test]
    fn a_levels_only_funnel_counts_the_same_levels(j in journeys(), which in 0usize..7) {
        let j = Journeys::new(&j);
        let spec = funnel_spec(which);
        let (mut full, mut lean) = (Funnel::new(spec.clone(), None), Funnel::new(spec, None));
        full.record_attempts();
        lean.record_attempts();
        lean.levels_only();
        for i in 0..j.len() {
            full.add(&j.get(i));
            lean.add(&j.get(i));
        }
        prop_assert_eq!(&lean.tallies, &full.tallies);
        prop_assert_eq!(&lean.attempts_made, &full.attempts_made);
        prop_assert_eq!((lean.journeys, lean.attempts, lean.excluded), (full.journeys, full.attempts, full.excluded));
        prop_assert!(lean.next_after.is_empty() && lean.trend.is_empty());
    }

    #[test]
    fn dropoffs_merge(j in journeys(), cuts in (0usize..64, 0usize..64), goal in prop::option::of(0u32..6)) {
        let j = Journeys::new(&j);
        let (whole, left, right) = split(&j, cuts, || Dropoffs::new(goal));
        let view = |d: &Dropoffs| (d.journeys, d.converted, d.rows());
        prop_assert_eq!(view(&whole), view(&left));
        prop_assert_eq!(view(&whole), view(&right));
    }

    #[test]
    fn kpis_merge(j in journeys(), cuts in (0usize..64, 0usize..64)) {
        let j = Journeys::new(&j);
        let events: usize = j.ts.iter().map(Vec::len).sum();
        let attribute: Vec<u32> = (0..events as u32).map(|i| i % 4).collect();
        let specs = vec![
            KpiSpec { name: "a".into(), from: 0, to: 1, from_name: String::new(), to_name: String::new(), within: 3_600_000_000 },
            KpiSpec { name: "b".into(), from: 2, to: 2, from_name: String::new(), to_name: String::new(), within: 7_200_000_000 },
        ];
        let (whole, left, right) = split(&j, cuts, || Kpis::new(specs.clone(), 60 * 3_600_000_000, Some(&attribute)));
        prop_assert_eq!(&whole.tallies, &left.tallies);
        prop_assert_eq!(&whole.tallies, &right.tallies);
    }

    #[test]
    fn trees_merge(j in journeys(), cuts in (0usize..64, 0usize..64), from in any::<bool>(), collapse in any::<bool>()) {
        let j = Journeys::new(&j);
        let spec = TreeSpec {
            anchor: 1,
            direction: if from { Direction::From } else { Direction::To },
            max_steps: 3,
            collapse_repeats: collapse,
        };
        let (whole, left, right) = split(&j, cuts, || PathTree::new(spec));
        for budget in [1, 2, 100] {
            prop_assert_eq!(whole.prune(2, budget), left.prune(2, budget));
            prop_assert_eq!(whole.prune(2, budget), right.prune(2, budget));
        }
    }
}
