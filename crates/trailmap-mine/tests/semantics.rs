//! What trailmap adds to the peers' semantics, worked out by hand: exclusions, attempts,
//! maturing journeys, unordered funnels, step gaps, time to convert, what came next, drop-offs,
//! loops, path trees and KPIs.

mod common;
use common::*;
use trailmap_mine::funnel::{Modes, TrendPeriod};
use trailmap_mine::graph::JourneyGraph;
use trailmap_mine::paths::PathOptions;
use trailmap_mine::tree::Direction;
use trailmap_mine::{
    Aggregate, Dropoffs, Funnel, FunnelSpec, KpiSpec, Kpis, PathStats, PathTree, TreeSpec,
};
use trailmap_model::config::{CountBy, StepOrder};

const S: i64 = 1_000_000;
const H: i64 = 3_600 * S;
const A: u32 = 0;
const B: u32 = 1;
const C: u32 = 2;
const X: u32 = 5;

fn run<Agg: for<'j> Aggregate<'j>>(journeys: &[Vec<(i64, u32)>], mut agg: Agg) -> Agg {
    let j = Journeys::new(journeys);
    for i in 0..j.len() {
        agg.add(&j.get(i));
    }
    agg
}

fn funnel(journeys: &[Vec<(i64, u32)>], spec: FunnelSpec) -> Funnel<'static> {
    run(journeys, Funnel::new(spec, None))
}

#[test]
fn an_exclusion_inside_the_chain_leaves_the_journey_out() {
    let mut s = spec(&[A, B], 24 * H, Modes::default());
    s.exclusions = vec![X];
    let f = funnel(
        &[
            vec![(0, A), (H, X), (2 * H, B)],
            vec![(0, A), (H, B), (2 * H, X)],
            vec![(0, C)],
        ],
        s,
    );
    assert_eq!(f.excluded, 1);
    assert_eq!(f.tallies.levels, vec![1, 0, 1]);
}

#[test]
fn attempts_restart_after_completion_or_window() {
    let mut s = spec(&[A, B], 24 * H, Modes::default());
    s.count = CountBy::Attempts;
    let f = funnel(
        &[
            vec![(0, A), (H, B), (2 * H, A), (3 * H, B)],
            vec![(0, A), (25 * H, A), (26 * H, B)],
            vec![(0, C)],
        ],
        s,
    );
    assert_eq!(f.journeys, 3);
    assert_eq!(f.attempts, 4);
    assert_eq!(f.tallies.levels, vec![1, 1, 3]);
}

#[test]
fn journeys_inside_their_window_are_maturing_not_dropped() {
    let mut s = spec(&[A, B], 24 * H, Modes::default());
    s.as_of = 30 * H;
    let f = funnel(&[vec![(0, A)], vec![(10 * H, A)], vec![(0, A), (H, B)]], s);
    assert_eq!(f.tallies.levels, vec![0, 2, 1]);
    // The one that started at 10h has until 34h: maturing. The one at 0h dropped.
    assert_eq!(f.tallies.maturing_at(0), 1);
    assert_eq!(f.next_after.get(0, u32::MAX), Some(1));
}

#[test]
fn unordered_funnels_count_distinct_steps_in_a_window() {
    let mut s = spec(&[A, B, C], 10 * S, Modes::default());
    s.order = StepOrder::Unordered;
    let f = funnel(
        &[
            vec![(0, C), (S, B), (2 * S, A)],
            vec![(0, C), (20 * S, B), (21 * S, A)],
            vec![(0, B), (S, B)],
        ],
        s,
    );
    assert_eq!(f.tallies.levels, vec![0, 1, 1, 1]);
}

#[test]
fn step_gaps_bound_the_time_between_steps() {
    let mut s = spec(&[A, B], 24 * H, Modes::default());
    s.min_gap = vec![H];
    let f = funnel(
        &[vec![(0, A), (H / 2, B)], vec![(0, A), (2 * H, B)]],
        s.clone(),
    );
    assert_eq!(f.tallies.levels, vec![0, 1, 1]);
    s.min_gap = vec![0];
    s.max_gap = vec![H];
    let f = funnel(&[vec![(0, A), (H / 2, B)], vec![(0, A), (2 * H, B)]], s);
    assert_eq!(f.tallies.levels, vec![0, 1, 1]);
}

#[test]
fn time_to_convert_and_what_came_next() {
    let s = spec(&[A, B, C], 24 * H, Modes::default());
    let f = funnel(
        &[
            vec![(0, A), (60 * S, B), (180 * S, C)],
            vec![(0, A), (S, X)],
        ],
        s,
    );
    assert_eq!(f.from_previous[1].quantile(0.5), Some(60e6));
    assert_eq!(f.from_previous[2].quantile(0.5), Some(120e6));
    assert_eq!(f.from_first[2].quantile(0.5), Some(180e6));
    assert_eq!(f.bins[2][1], 1, "3 minutes falls in 1m-10m");
    assert_eq!(f.next_after.get(0, X), Some(1));
}

#[test]
fn breakdown_and_trend_use_the_first_step_event() {
    let s = FunnelSpec {
        trend: Some(TrendPeriod::Week),
        ..spec(&[A, B], 24 * H, Modes::default())
    };
    // Attribute per event, journeys concatenated: journey 0 = events 0..2, journey 1 = 2..3.
    let attribute = [7, 8, 9];
    let j = Journeys::new(&[vec![(0, A), (H, B)], vec![(8 * 24 * H, A)]]);
    let mut f = Funnel::new(s, Some(&attribute));
    f.add(&j.get(0));
    f.add(&j.get(1));
    assert_eq!(f.breakdown[&7].levels, vec![0, 0, 1]);
    assert_eq!(f.breakdown[&9].levels, vec![0, 1, 0]);
    // 1970-01-01 was a Thursday; its week starts Monday 1969-12-29 (day -3), and day 8 is
    // in the week of Monday 1970-01-05 (day 4).
    assert_eq!(f.trend[&-3].levels, vec![0, 0, 1]);
    assert_eq!(f.trend[&4].levels, vec![0, 1, 0]);
    // Tuesday 2025-11-25 (day 20,417) is in the week of Monday 2025-11-24.
    assert_eq!(TrendPeriod::Week.period_day(20_417 * 24 * H + H), 20_416);
    assert_eq!(TrendPeriod::Day.period_day(20_417 * 24 * H + H), 20_417);
}

#[test]
fn dropoffs_count_journeys_once_per_touchpoint() {
    let d = run(
        &[
            vec![(0, A), (1, B), (2, C)],
            vec![(0, A), (1, B), (2, A)],
            vec![(0, A)],
        ],
        Dropoffs::new(Some(C)),
    );
    let rows = d.rows();
    let row = |t: u32| rows.iter().find(|r| r.touchpoint == t).copied().unwrap();
    assert_eq!((row(A).journeys, row(A).exits, row(A).abandoned), (3, 2, 2));
    assert_eq!((row(B).journeys, row(B).exits, row(B).abandoned), (2, 0, 1));
    assert_eq!((row(C).journeys, row(C).exits, row(C).abandoned), (1, 1, 0));
    assert_eq!(row(A).last_before_abandon, 2);
    assert_eq!(d.converted, 1);
    assert!((row(A).exit_rate() - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn back_and_forth_and_loops() {
    // Paths borrow their variants from the journeys, so these outlive them.
    let j = Journeys::new(&[
        vec![(0, A), (1, B), (2, A), (3, B), (4, A)],
        vec![(0, A), (1, C)],
    ]);
    let mut p = PathStats::new(6, PathOptions::default());
    for i in 0..j.len() {
        p.add(&j.get(i));
    }
    let bf: Vec<_> = {
        let mut v: Vec<_> = p
            .back_and_forth()
            .map(|(k, l)| (k, l.count, l.journeys))
            .collect();
        v.sort();
        v
    };
    assert_eq!(bf, vec![((A, B), 2, 1), ((B, A), 1, 1)]);
    let loops = JourneyGraph::new(&p).loops();
    assert_eq!(loops.len(), 1);
    assert_eq!(loops[0].transitions, 4);
    let mut tps = loops[0].touchpoints.clone();
    tps.sort();
    assert_eq!(tps, vec![A, B]);
}

#[test]
fn path_trees_from_and_to_a_touchpoint() {
    let journeys = [
        vec![(0, X), (1, A), (2, B), (3, C)],
        vec![(0, A), (1, B), (2, B), (3, X)],
        vec![(0, A), (1, C)],
        vec![(0, C)],
    ];
    let spec = |direction, collapse_repeats| TreeSpec {
        anchor: A,
        direction,
        max_steps: 2,
        collapse_repeats,
    };
    let t = run(&journeys, PathTree::new(spec(Direction::From, false)));
    let nodes = t.prune(1, 10);
    assert_eq!(t.journeys(), 3);
    let find = |step: usize, tp: u32| {
        nodes
            .iter()
            .find(|n| n.step == step && n.touchpoint == Some(tp))
            .unwrap()
    };
    assert_eq!(find(1, B).count, 2);
    assert_eq!((find(1, C).count, find(1, C).ends), (1, 1));
    // Without collapsing, `a b b x` stops after two steps: b, b.
    assert_eq!(find(2, B).count, 1);
    let t = run(&journeys, PathTree::new(spec(Direction::From, true)));
    let nodes = t.prune(1, 10);
    assert!(nodes.iter().any(|n| n.step == 2 && n.touchpoint == Some(X)));
    // Budget 1 per step: the biggest branch stays, the rest is `other`.
    let nodes = t.prune(1, 1);
    assert!(
        nodes
            .iter()
            .any(|n| n.step == 1 && n.touchpoint.is_none() && n.count == 1)
    );
    // Backwards from the last `c`.
    let back = run(
        &journeys,
        PathTree::new(TreeSpec {
            anchor: C,
            ..spec(Direction::To, false)
        }),
    );
    assert_eq!(back.journeys(), 3);
    let nodes = back.prune(1, 10);
    assert_eq!(
        nodes
            .iter()
            .find(|n| n.step == 1 && n.touchpoint == Some(B))
            .unwrap()
            .count,
        1
    );
    assert_eq!(
        nodes
            .iter()
            .find(|n| n.step == 1 && n.touchpoint == Some(A))
            .unwrap()
            .count,
        1
    );
}

#[test]
fn kpi_instances_are_met_breached_or_pending() {
    let spec = KpiSpec {
        name: "k".into(),
        from: A,
        to: B,
        from_name: "a".into(),
        to_name: "b".into(),
        within: H,
    };
    let journeys = [
        vec![(0, A), (H / 2, B)],
        vec![(0, A), (2 * H, B)],
        vec![(10 * H, A)],
        vec![(0, A), (H / 4, A), (H / 2, B)],
    ];
    let k = run(
        &journeys,
        Kpis::new(vec![spec.clone()], 10 * H + H / 2, None),
    );
    let t = &k.tallies[0];
    assert_eq!((t.instances, t.met, t.breached, t.pending), (5, 3, 1, 1));
    assert_eq!((t.journeys, t.journeys_met), (4, 2));
    let k = run(&journeys, Kpis::new(vec![spec], 20 * H, None));
    assert_eq!(k.tallies[0].breached, 2);
}

#[test]
fn configured_funnels_resolve_with_clear_errors() {
    use trailmap_model::config::JourneyConfig;
    let touchpoints: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let config = |steps: &[&str], exclusions: &[&str]| JourneyConfig {
        steps: steps.iter().map(|s| s.to_string()).collect(),
        window: trailmap_model::time::Span::from_secs(60),
        mode: Vec::new(),
        order: StepOrder::Ordered,
        exclusions: exclusions.iter().map(|s| s.to_string()).collect(),
        count: CountBy::Customers,
        min_gap: Vec::new(),
        max_gap: Vec::new(),
    };
    let (spec, unknown) =
        FunnelSpec::resolve(&config(&["a", "zz", "c"], &[]), &touchpoints, 0).unwrap();
    assert_eq!(spec.steps, vec![0, u32::MAX, 2]);
    assert_eq!(unknown, vec!["zz".to_string()]);
    let err = FunnelSpec::resolve(&config(&["a", "b"], &["b"]), &touchpoints, 0).unwrap_err();
    assert!(err.contains("both a step and an exclusion"), "{err}");
}

#[test]
fn chains_whose_steps_tie_in_time_span_their_lowest_to_highest_event() {
    // `b`, `x` and `a` at one time: entries sort by step, so the chain is a (event 2) then
    // b (event 0), and the exclusion between them counts.
    let mut s = spec(&[A, B], 24 * H, Modes::default());
    s.exclusions = vec![X];
    let f = funnel(
        &[vec![(5, B), (5, X), (5, A)], vec![(5, B), (5, C), (5, A)]],
        s,
    );
    assert_eq!(f.excluded, 1);
    assert_eq!(f.tallies.levels, vec![0, 0, 1]);
}

#[test]
fn a_kpi_from_a_touchpoint_to_itself_answers_the_previous_instance() {
    let spec = KpiSpec {
        name: "revisit".into(),
        from: A,
        to: A,
        from_name: "a".into(),
        to_name: "a".into(),
        within: H,
    };
    let k = run(
        &[vec![(0, A), (40 * 60 * S, A)]],
        Kpis::new(vec![spec], 70 * 60 * S, None),
    );
    let t = &k.tallies[0];
    assert_eq!((t.instances, t.met, t.breached, t.pending), (2, 1, 0, 1));
}

#[test]
fn a_minimum_gap_finds_an_earlier_chain() {
    let mut s = spec(&[A, B, C], 24 * H, Modes::default());
    s.min_gap = vec![0, 10 * S];
    let f = funnel(&[vec![(0, A), (10 * S, B), (50 * S, B), (55 * S, C)]], s);
    assert_eq!(f.tallies.levels, vec![0, 0, 0, 1]);
}

#[test]
fn an_attempt_is_anchored_at_its_first_step() {
    let mut s = spec(&[A, B], 24 * H, Modes::default());
    s.count = CountBy::Attempts;
    let f = funnel(&[vec![(0, A), (12 * H, A), (30 * H, B)]], s);
    assert_eq!((f.attempts, f.tallies.levels.clone()), (2, vec![0, 1, 1]));
}

#[test]
fn maturing_looks_at_the_latest_first_step_and_final_answers() {
    let day = 24 * H;
    let mut s = spec(&[A, B, C], day, Modes::default());
    s.as_of = 20 * day;
    // Reached step 2 long ago, but a fresh `a` can still go all the way.
    let f = funnel(
        &[vec![(10 * day, A), (10 * day + H, B), (20 * day - H, A)]],
        s.clone(),
    );
    assert_eq!(f.tallies.levels, vec![0, 0, 1, 0]);
    assert_eq!(f.tallies.maturing_at(1), 1);
    // A strict funnel broken by another event is over, window or not.
    s.modes = Modes::parse("strict_order").unwrap();
    s.order = StepOrder::Strict;
    let f = funnel(&[vec![(20 * day - H, A), (20 * day - H / 2, X)]], s);
    assert_eq!(f.tallies.levels, vec![0, 1, 0, 0]);
    assert_eq!(f.tallies.maturing_at(0), 0);
}

#[test]
fn many_repeats_of_each_step_do_not_multiply_chains() {
    // 2,000 each of a, b and c in one window under strict_once: without merging
    // interchangeable chains this would be billions of chains at the third step.
    let mut events = Vec::new();
    for i in 0..2000 {
        events.extend([(3 * i, A), (3 * i + 1, B), (3 * i + 2, C)]);
    }
    let f = funnel(
        &[events],
        spec(&[A, B, C, X], 24 * H, Modes::parse("strict_once").unwrap()),
    );
    assert_eq!(f.tallies.levels, vec![0, 0, 0, 1, 0]);
}

proptest::proptest! {
    /// The top variants are the first of all variants listed most common first, ties by
    /// names, whatever the ties: the listing picks them by count before it reads names.
    #[test]
    fn the_top_variants_are_the_head_of_all_variants(
        journeys in proptest::collection::vec(proptest::collection::vec(0u32..3, 1..4), 0..60),
        top in 1usize..8,
    ) {
        let j = Journeys::new(
            &journeys
                .iter()
                .map(|tps| tps.iter().enumerate().map(|(t, &tp)| (t as i64, tp)).collect())
                .collect::<Vec<_>>(),
        );
        let mut p = PathStats::new(3, PathOptions::default());
        for i in 0..j.len() {
            p.add(&j.get(i));
        }
        // Names out of id order, so name order is not id order.
        let names = ["zeta".to_string(), "alpha".to_string(), "mu".to_string()];
        let names = trailmap_mine::report::Names { touchpoints: &names };
        let listed = |k| {
            trailmap_mine::report::PathsReport::new(&p, names, k, 0)
                .variants
                .into_iter()
                .map(|v| (v.path, v.count))
                .collect::<Vec<_>>()
        };
        let all = listed(0);
        let mut expected = all.clone();
        expected.truncate(top);
        proptest::prop_assert_eq!(listed(top), expected);
        // And `all` is in order: counts descending, ties by names.
        for w in all.windows(2) {
            proptest::prop_assert!(w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0), "{w:?}");
        }
    }
}
