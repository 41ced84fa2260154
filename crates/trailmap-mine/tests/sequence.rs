//! `sequenceMatch`, `sequenceCount` and `retention` against ClickHouse: a corpus recorded with
//! chdb (tests/fixtures/peers/random_sequence.json.gz, from record_sequence.py: random cases in
//! two arrival orders, hand-picked cases, pattern parse checks and the iteration limit), and
//! hand-written checks of the semantics in trailmap_mine::sequence's module doc.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::Value;
use trailmap_mine::sequence::{
    MAX_ITERATIONS, Retention, SequencePattern, TooSlow, clickhouse_sort,
};

const S: i64 = 1_000_000;

fn corpus() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/peers/random_sequence.json.gz"
    );
    let file = std::fs::File::open(path).expect("tests/fixtures/peers/random_sequence.json.gz");
    serde_json::from_reader(flate2::read::GzDecoder::new(file)).expect("fixture JSON")
}

/// Events in arrival order, ClickHouse's seconds as our microseconds.
fn events(case: &Value) -> Vec<(i64, u32)> {
    case["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e[0].as_i64().expect("ts") * S,
                u32::try_from(e[1].as_u64().expect("mask")).expect("mask fits u32"),
            )
        })
        .collect()
}

fn pair(case: &Value, key: &str) -> [u64; 2] {
    let v = &case[key];
    [
        v[0].as_u64().expect("answer"),
        v[1].as_u64().expect("answer"),
    ]
}

/// Our answer against ClickHouse's: equal, or, only where our match ran past the end of the
/// pattern (ClickHouse reads uninitialized memory there: module doc), ClickHouse's answer
/// without that match. 1 when that exception was used.
fn check(
    theirs: u64,
    ours: u64,
    past_end: bool,
    function: &str,
    order: usize,
    case: &Value,
) -> usize {
    if theirs == ours {
        return 0;
    }
    let order = ["", " reversed"][order];
    assert!(
        past_end && theirs + 1 == ours,
        "{function}{order}: ours {ours}, ClickHouse {theirs}, case {case}"
    );
    1
}

/// Every recorded case, as given and reversed: the same answers as ClickHouse (or
/// ClickHouse's undefined answer, see `check`); how many answers differ reversed, and how
/// many cases were also checked shuffled.
fn check_cases(cases: &[Value]) -> (usize, usize) {
    let mut past_end = 0;
    let mut order_sensitive = 0;
    let mut shuffled = 0;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for case in cases {
        let pattern = case["pattern"].as_str().expect("pattern");
        let n = case["n"].as_u64().expect("n") as usize;
        let mut p = SequencePattern::parse(pattern, n)
            .unwrap_or_else(|e| panic!("ClickHouse accepted {pattern:?}: {e}"));
        let fwd = events(case);
        let mut rev = fwd.clone();
        rev.reverse();
        let m = pair(case, "m");
        let c = pair(case, "c");
        for (i, ev) in [&fwd, &rev].into_iter().enumerate() {
            let ours = u64::from(p.matches(ev).expect("small"));
            past_end += check(
                m[i],
                ours,
                p.ran_past_pattern_end(),
                "sequenceMatch",
                i,
                case,
            );
            let ours = p.count(ev).expect("small");
            past_end += check(
                c[i],
                ours,
                p.ran_past_pattern_end(),
                "sequenceCount",
                i,
                case,
            );
        }
        if m[0] != m[1] || c[0] != c[1] {
            order_sensitive += 1;
        }
        // With distinct timestamps among the stored events the order cannot matter (checked
        // against our own answer, ClickHouse's being checked above).
        let full = if n == 32 { u32::MAX } else { (1 << n) - 1 };
        let mut stored: Vec<i64> = fwd
            .iter()
            .filter(|e| e.1 & full != 0)
            .map(|e| e.0)
            .collect();
        stored.sort_unstable();
        if stored.windows(2).all(|w| w[0] < w[1]) {
            let mut any = fwd.clone();
            any.shuffle(&mut rng);
            assert_eq!(p.matches(&any), p.matches(&fwd), "shuffled, case {case}");
            assert_eq!(p.count(&any), p.count(&fwd), "shuffled, case {case}");
            shuffled += 1;
        }
        let r = Retention::new(n).expect("2 to 4 conditions");
        let met = fwd.iter().fold(0, |m, e| m | e.1);
        let expected: Vec<u8> = case["r"]
            .as_array()
            .expect("retention")
            .iter()
            .map(|x| x.as_u64().expect("0/1") as u8)
            .collect();
        assert_eq!(
            r.values(met).collect::<Vec<_>>(),
            expected,
            "retention, case {case}"
        );
    }
    // ClickHouse's undefined read decides a few answers at most.
    assert!(
        past_end * 100 <= cases.len(),
        "{past_end} of {}",
        cases.len()
    );
    (order_sensitive, shuffled)
}

#[test]
fn random_corpus_equals_clickhouse() {
    let corpus = corpus();
    let cases = corpus["cases"].as_array().expect("cases");
    assert!(cases.len() >= 6000);
    let (order_sensitive, shuffled) = check_cases(cases);
    // ClickHouse answers differently for a tenth of the cases reversed (equal timestamps),
    // and so do we.
    assert!(order_sensitive > 300, "{order_sensitive}");
    assert!(shuffled > 2000, "{shuffled}");
    // Every pattern feature is in the corpus.
    let patterns: std::collections::BTreeSet<&str> =
        cases.iter().filter_map(|c| c["pattern"].as_str()).collect();
    for feature in ["(?t<=", "(?t<", "(?t>=", "(?t>", "(?t==", ".*", ".", "(?4)"] {
        assert!(patterns.iter().any(|p| p.contains(feature)), "{feature}");
    }
    // Big groups, where ClickHouse's pdqsort is not an insertion sort.
    assert!(
        cases
            .iter()
            .any(|c| c["events"].as_array().is_some_and(|e| e.len() > 1000))
    );
}

#[test]
fn hand_picked_cases_equal_clickhouse() {
    let corpus = corpus();
    let hand = corpus["hand"].as_array().expect("hand");
    assert!(hand.len() >= 30);
    check_cases(hand);
}

#[test]
fn pattern_parsing_equals_clickhouse() {
    let corpus = corpus();
    let checks = corpus["errors"].as_array().expect("errors");
    let (mut refused, mut accepted) = (0, 0);
    for check in checks {
        let pattern = check["pattern"].as_str().expect("pattern");
        let n = check["n"].as_u64().expect("n") as usize;
        let ours = SequencePattern::parse(pattern, n);
        match check["error"].as_str() {
            Some(theirs) => {
                let ours = ours.expect_err(&format!("ClickHouse refuses {pattern:?}: {theirs}"));
                assert!(!ours.is_empty());
                refused += 1;
            }
            None => {
                if let Err(e) = ours {
                    panic!("ClickHouse accepts {pattern:?} with {n} conditions: {e}");
                }
                accepted += 1;
            }
        }
    }
    assert!(refused > 30 && accepted > 10, "{refused} {accepted}");
}

/// Events 0..n one second apart, condition 1 on all, condition 2 on the last.
fn ramp(n: usize) -> Vec<(i64, u32)> {
    (0..n)
        .map(|i| (i as i64 * S, 1 | u32::from(i + 1 == n) << 1))
        .collect()
}

fn run(p: &mut SequencePattern, function: &str, ev: &[(i64, u32)]) -> Result<u64, TooSlow> {
    match function {
        "sequenceMatch" => p.matches(ev).map(u64::from),
        "sequenceCount" => p.count(ev),
        other => panic!("unknown function {other}"),
    }
}

#[test]
fn iteration_limit_equals_clickhouse() {
    let corpus = corpus();
    let limits = corpus["limits"].as_array().expect("limits");
    assert!(limits.len() >= 4);
    for l in limits {
        let pattern = l["pattern"].as_str().expect("pattern");
        let function = l["function"].as_str().expect("function");
        let mut p = SequencePattern::parse(pattern, 2).expect("pattern");
        let answer = l["answer_at_limit"].as_u64().expect("answer");
        match l["largest_ok"].as_u64() {
            Some(ok) => {
                let ok = ok as usize;
                assert_eq!(run(&mut p, function, &ramp(ok)), Ok(answer), "{l}");
                assert_eq!(
                    run(&mut p, function, &ramp(ok + 1)),
                    Err(TooSlow {
                        max_iterations: MAX_ITERATIONS
                    }),
                    "{l}"
                );
                // Without a limit the search goes on.
                p.set_max_iterations(None);
                assert!(run(&mut p, function, &ramp(ok + 1)).is_ok(), "{l}");
            }
            None => {
                let n = l["checked_up_to"].as_u64().expect("checked_up_to") as usize;
                assert_eq!(run(&mut p, function, &ramp(n)), Ok(answer), "{l}");
            }
        }
    }
}

fn ms(pattern: &str, n: usize, ev: &[(i64, u32)]) -> bool {
    SequencePattern::parse(pattern, n)
        .expect("pattern")
        .matches(ev)
        .expect("within the limit")
}

fn sc(pattern: &str, n: usize, ev: &[(i64, u32)]) -> u64 {
    SequencePattern::parse(pattern, n)
        .expect("pattern")
        .count(ev)
        .expect("within the limit")
}

#[test]
fn parse_errors_say_what_is_wrong() {
    let err = |p: &str, n: usize| SequencePattern::parse(p, n).expect_err(p);
    assert!(err("(?1)", 1).contains("2 to 32 conditions"));
    assert!(err("(?1)", 33).contains("2 to 32 conditions"));
    let e = err("(?0)", 2);
    assert!(e.contains("(?0)") && e.contains("numbered 1 to 2"), "{e}");
    assert!(err("(?3)(?1)", 2).contains("numbered 1 to 2"));
    let e = err("(?1)(?t<=5)(?t>=2)(?2)", 2);
    assert!(
        e.contains("another time constraint") && e.contains("position 11"),
        "{e}"
    );
    let e = err("(?t=5)(?1)", 2);
    assert!(
        e.contains("<=, <, >=, >, ==") && e.contains("position 3"),
        "{e}"
    );
    let e = err("(?1) (?2)", 2);
    assert!(e.contains("position 4") && e.contains("no spaces"), "{e}");
    let e = err("(?1", 2);
    assert!(
        e.contains("expected ')'") && e.contains("the end of the pattern"),
        "{e}"
    );
    assert!(err("(?t<=1.5)(?1)", 2).contains("expected ')'"));
    assert!(err("(?t<=-5)(?1)", 2).contains("digits"));
    assert!(err("(?t<=18446744073709551616)(?1)", 2).contains("64 bits"));
    assert!(err("(?)", 2).contains("digits"));
    assert!(err("(?1)é", 2).contains("\"é\""));
    // What ClickHouse accepts.
    for p in [
        "",
        ".*",
        "(?+1)",
        "(?01)",
        "(?t<=+5)(?1)",
        "(?t>=1)",
        ".*(?t<1)",
        "(?t<=5)(?1)",
    ] {
        assert!(SequencePattern::parse(p, 2).is_ok(), "{p}");
    }
    let p = SequencePattern::parse("(?1)(?t<=3600)(?2)", 2).expect("pattern");
    assert!(p.has_time() && p.as_str() == "(?1)(?t<=3600)(?2)" && p.conditions() == 2);
}

#[test]
fn equal_timestamps_keep_clickhouse_order() {
    // Fewer than 24 stored events: arrival order.
    assert!(ms("(?1)(?2)", 2, &[(5, 1), (5, 2)]));
    assert!(!ms("(?1)(?2)", 2, &[(5, 2), (5, 1)]));
    // One event meeting both conditions is one event.
    assert!(!ms("(?1)(?2)", 2, &[(5, 3)]));
    assert!(ms("(?1)", 2, &[(5, 3)]) && ms("(?2)", 2, &[(5, 3)]));
    // Events meeting no condition (or only conditions past the count) are dropped.
    assert!(!ms("(?1).(?2)", 2, &[(1, 1), (2, 0), (3, 2)]));
    assert!(ms("(?1)(?2)", 2, &[(1, 1), (2, 0), (3, 2)]));
    assert!(ms("(?1)(?2)", 2, &[(1, 1), (2, 4), (3, 2)]));
    assert!(!ms(".", 2, &[(1, 0), (2, 4)]));
    // The input is left as it was.
    let ev = [(3, 1), (1, 2), (2, 0)];
    let copy = ev;
    let mut p = SequencePattern::parse("(?2)(?1)", 2).expect("pattern");
    assert_eq!(p.matches(&ev), Ok(true));
    assert_eq!(ev, copy);
}

#[test]
fn time_constraints_in_seconds_over_microseconds() {
    let hour = 3600 * S;
    assert!(ms("(?1)(?t<=3600)(?2)", 2, &[(0, 1), (hour, 2)]));
    assert!(!ms("(?1)(?t<=3600)(?2)", 2, &[(0, 1), (hour + 1, 2)]));
    assert!(ms("(?1)(?t>3600)(?2)", 2, &[(0, 1), (hour + 1, 2)]));
    assert!(!ms("(?1)(?t==0)(?2)", 2, &[(0, 1), (1, 2)]));
    assert!(ms("(?1)(?t<1)(?2)", 2, &[(0, 1), (S / 2, 2)]));
    // Events may pass between the two ends of a time constraint.
    assert!(ms(
        "(?1)(?t<=10)(?2)",
        2,
        &[(S, 1), (2 * S, 1), (3 * S, 1), (4 * S, 2)]
    ));
    // Trailing constraints with no event after them.
    assert!(ms("(?1)(?t<=5)", 2, &[(S, 1)]));
    assert!(ms("(?1)(?t>=0)", 2, &[(S, 1)]));
    assert!(!ms("(?1)(?t>=1)", 2, &[(S, 1)]));
    assert!(!ms("(?1)(?t>5)", 2, &[(S, 1)]));
    assert!(!ms("(?1)(?t==0)", 2, &[(S, 1)]));
    // ClickHouse's unsigned base + d wraps past 2^64 seconds.
    assert!(!ms(
        "(?1)(?t<=18446744073709551615)(?2)",
        2,
        &[(S, 1), (2 * S, 2)]
    ));
    assert!(ms(
        "(?1)(?t<=18446744073709551615)(?2)",
        2,
        &[(0, 1), (2 * S, 2)]
    ));
    assert!(ms(
        "(?1)(?t>18446744073709551615)(?2)",
        2,
        &[(S, 1), (2 * S, 2)]
    ));
}

#[test]
fn counts_are_non_overlapping_and_lazy() {
    assert_eq!(sc("(?1)(?1)", 2, &[(1, 1), (2, 1), (3, 1)]), 1);
    assert_eq!(sc("(?1)(?1)", 2, &[(1, 1), (2, 1), (3, 1), (4, 1)]), 2);
    // The empty pattern and .* count stored events.
    let ev = [(1, 1), (2, 0), (3, 2), (4, 3)];
    assert_eq!(sc("", 2, &ev), 3);
    assert_eq!(sc(".*", 2, &ev), 3);
    assert!(ms("", 2, &[]) && ms("", 2, &[(1, 0)]) && !ms(".", 2, &[(1, 0)]));
    assert_eq!(sc("", 2, &[]), 0);
    // A match ending on a time constraint leaves the event it tested to the next search.
    assert_eq!(sc(".(?t<=1)", 2, &[(S, 1), (2 * S, 2)]), 2);
    // A condition the pattern names but no event meets: 0 at once.
    assert_eq!(sc("(?1).*", 2, &[(1, 2), (2, 2)]), 0);
    // 32 conditions.
    assert!(ms("(?32)(?1)", 32, &[(1, 1 << 31), (2, 1)]));
    assert!(!ms("(?32)(?1)", 32, &[(1, 1), (2, 1 << 31)]));
}

#[test]
fn answers_past_the_end_of_the_pattern_are_flagged() {
    // Where ClickHouse reads past its action list (module doc).
    let mut p = SequencePattern::parse("(?1).*", 2).expect("pattern");
    assert_eq!(p.count(&[(1, 1)]), Ok(1));
    assert!(p.ran_past_pattern_end());
    assert_eq!(p.count(&[(1, 1), (2, 2)]), Ok(1));
    assert!(!p.ran_past_pattern_end());
    // sequenceMatch without time constraints runs the NFA, which reads nothing past the end.
    assert_eq!(p.matches(&[(1, 1)]), Ok(true));
    assert!(!p.ran_past_pattern_end());
    let mut p = SequencePattern::parse("(?1)(?t<=5)", 2).expect("pattern");
    assert_eq!(p.matches(&[(S, 1)]), Ok(true));
    assert!(p.ran_past_pattern_end());
    assert_eq!(p.matches(&[(S, 1), (2 * S, 1)]), Ok(true));
    assert!(!p.ran_past_pattern_end());
    // A trailing (?t>=1) stops the skipping before the end: no flag, no match.
    let mut p = SequencePattern::parse("(?1)(?t>=1)", 2).expect("pattern");
    assert_eq!(p.matches(&[(S, 1)]), Ok(false));
    assert!(!p.ran_past_pattern_end());
}

#[test]
fn many_states_need_several_words() {
    // 70 events of condition 1 in a row: the NFA has 71 states, two words.
    let pattern = "(?1)".repeat(70);
    let ev: Vec<(i64, u32)> = (0..70).map(|i| (i, 1)).collect();
    assert!(ms(&pattern, 2, &ev));
    assert!(!ms(&pattern, 2, &ev[1..]));
    let mut broken = ev.clone();
    broken[64].1 = 2;
    assert!(!ms(&pattern, 2, &broken));
    let with_dot = format!("{}.(?1)", "(?1)".repeat(64));
    assert!(ms(&with_dot, 2, &broken[..66]));
    // The backtracking matcher agrees.
    let timed = format!("{pattern}(?t>=0)");
    assert_eq!(sc(&timed, 2, &ev), 1);
    assert_eq!(sc(&pattern, 2, &ev), 1);
}

#[test]
fn retention_follows_clickhouse() {
    let r = Retention::new(3).expect("3 conditions");
    assert_eq!(r.conditions(), 3);
    assert_eq!(r.values(0b110).collect::<Vec<_>>(), [0, 0, 0]);
    assert_eq!(r.values(0b101).collect::<Vec<_>>(), [1, 0, 1]);
    assert_eq!(r.values(0b1111).collect::<Vec<_>>(), [1, 1, 1]);
    assert_eq!(r.answer(0b1011), 0b011);
    assert!(Retention::new(1).unwrap_err().contains("2 to 32"));
    assert!(Retention::new(33).is_err());
    assert_eq!(Retention::new(32).expect("32").values(u32::MAX).count(), 32);
}

/// The order ClickHouse's sort leaves events with equal timestamps in, read back from chdb.
#[test]
fn sort_equals_clickhouse() {
    let corpus = corpus();
    let probes = corpus["sort_probes"].as_array().expect("sort_probes");
    assert!(probes.len() >= 50);
    let list = |p: &Value, key: &str| -> Vec<i64> {
        p[key]
            .as_array()
            .expect("list")
            .iter()
            .map(|x| x.as_i64().expect("integer"))
            .collect()
    };
    let mut unstable = 0;
    for p in probes {
        let keys = list(p, "keys");
        let markers = list(p, "markers");
        let expected = list(p, "order");
        let mut ev: Vec<(i64, u32)> = keys
            .iter()
            .enumerate()
            .map(|(i, &k)| (k * S, i as u32))
            .collect();
        clickhouse_sort(&mut ev);
        let got: Vec<i64> = ev
            .iter()
            .map(|e| i64::from(e.1))
            .filter(|i| markers.contains(i))
            .collect();
        assert_eq!(got, expected, "keys {keys:?}");
        let mut stable = markers.clone();
        stable.sort_by_key(|&i| keys[i as usize]);
        if stable != expected {
            unstable += 1;
        }
    }
    // Most probes have more than 20 events: ties leave arrival order.
    assert!(unstable > 40, "{unstable}");
    assert!(probes.iter().any(|p| list(p, "keys").len() >= 3000));
}

#[test]
fn clickhouse_sort_sorts_by_time() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for n in [0, 1, 2, 23, 24, 25, 128, 129, 500, 5000] {
        for top in [1, 3, 50, 1_000_000] {
            let ev: Vec<(i64, u32)> = (0..n)
                .map(|i| (rand::Rng::random_range(&mut rng, 0..top), i as u32))
                .collect();
            let mut sorted = ev.clone();
            clickhouse_sort(&mut sorted);
            assert!(sorted.windows(2).all(|w| w[0].0 <= w[1].0), "{n} {top}");
            let mut a = ev.clone();
            let mut b = sorted.clone();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "a permutation");
            if n <= 20 {
                let mut stable = ev.clone();
                stable.sort_by_key(|e| e.0);
                assert_eq!(sorted, stable, "insertion sort up to 20");
            }
            // Descending and sorted inputs.
            let mut desc = ev.clone();
            desc.sort_by_key(|e| std::cmp::Reverse(e.0));
            clickhouse_sort(&mut desc);
            assert!(desc.windows(2).all(|w| w[0].0 <= w[1].0));
        }
    }
}

mod nfa_equals_backtracking {
    use super::*;
    use proptest::prelude::*;

    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("(?1)".to_string()),
                Just("(?2)".to_string()),
                Just("(?3)".to_string()),
                Just(".".to_string()),
                Just(".*".to_string()),
            ],
            0..6,
        )
        .prop_map(|parts| parts.concat())
    }

    fn events() -> impl Strategy<Value = Vec<(i64, u32)>> {
        prop::collection::vec((0i64..6, 0u32..8), 0..30)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        /// A trailing `(?t>=0)` changes nothing but sends `sequenceMatch` through the
        /// backtracking matcher instead of the NFA: both answer alike, in any event order.
        #[test]
        fn same_answers(p in pattern(), ev in events()) {
            let mut nfa = SequencePattern::parse(&p, 3).expect("pattern");
            let mut timed = SequencePattern::parse(&format!("{p}(?t>=0)"), 3).expect("pattern");
            prop_assert!(!nfa.has_time() && timed.has_time());
            prop_assert_eq!(nfa.matches(&ev), timed.matches(&ev));
            // sequenceCount's first search is sequenceMatch's; with no stored event there is
            // no search (the empty pattern matches, and counts 0).
            let count = nfa.count(&ev).expect("small");
            let stored = ev.iter().any(|e| e.1 & 0b111 != 0);
            prop_assert_eq!(count > 0, stored && nfa.matches(&ev).expect("nfa"));
        }
    }
}
