//! Funnel levels against ClickHouse `windowFunnel`: a corpus of random cases recorded with
//! chdb (tests/fixtures/peers/random_window_funnel.json.gz), and randomized differential
//! tests against a small reference written straight from the semantics
//! (tests/fixtures/peers/WINDOW_FUNNEL.md; the Python original agrees with chdb on every
//! recorded case).

mod common;
use common::*;
use proptest::prelude::*;
use trailmap_mine::Funnel;
use trailmap_mine::funnel::Modes;

/// The reference: plain and slow on purpose. `events` in any order, `(ts, touchpoint)`.
fn reference(events: &[(i64, u32)], steps: &[u32], window: i64, m: Modes) -> usize {
    let n = steps.len();
    let mut entries = Vec::new();
    for (row, &(ts, name)) in events.iter().enumerate() {
        let hits: Vec<usize> = (0..n)
            .filter(|&i| steps[i] == name)
            .map(|i| i + 1)
            .collect();
        if m.strict_order && hits.is_empty() {
            entries.push((ts, 0, row));
        }
        entries.extend(hits.into_iter().map(|i| (ts, i, row)));
    }
    if entries.is_empty() {
        return 0;
    }
    if !m.strict_order && n == 1 {
        return 1;
    }
    entries.sort();
    // reached[k]: chains (first ts, last ts, rows) that reached step k + 1.
    let mut reached: Vec<Vec<(i64, i64, Vec<usize>)>> = vec![Vec::new(); n];
    let deepest = |r: &Vec<Vec<(i64, i64, Vec<usize>)>>| {
        (0..n)
            .rev()
            .find(|&k| !r[k].is_empty())
            .map_or(0, |k| k + 1)
    };
    let mut started = false;
    for &(ts, step, row) in &entries {
        if step == 0 {
            if started {
                break;
            }
            continue;
        }
        let k = step - 1;
        if k == 0 {
            let chain = (ts, ts, vec![row]);
            if m.strict_once {
                reached[0].push(chain);
            } else {
                reached[0] = vec![chain];
            }
            started = true;
        } else if m.strict_deduplication && !reached[k].is_empty() {
            return deepest(&reached);
        } else if m.strict_order && started && reached[k - 1].is_empty() {
            if m.allow_reentry {
                continue;
            }
            return (0..n).find(|&j| reached[j].is_empty()).unwrap_or(n);
        } else {
            for (first, last, rows) in reached[k - 1].clone() {
                let ok = ts <= first + window
                    && (!m.strict_increase || last < ts)
                    && (!m.strict_once || !rows.contains(&row));
                if ok {
                    let mut rows = rows.clone();
                    rows.push(row);
                    if m.strict_once {
                        reached[k].push((first, ts, rows));
                    } else {
                        reached[k] = vec![(first, ts, rows)];
                    }
                    if k + 1 == n {
                        return n;
                    }
                }
            }
        }
    }
    deepest(&reached)
}

fn ours(events: &[(i64, u32)], steps: &[u32], window: i64, m: Modes) -> usize {
    let j = Journeys::new(&[events.to_vec()]);
    Funnel::new(spec(steps, window, m), None).level_of(&j.ts[0], &j.tp[0])
}

fn letter(name: &str) -> u32 {
    u32::from(name.as_bytes()[0] - b'a')
}

#[test]
fn random_corpus_equals_clickhouse() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/peers/random_window_funnel.json.gz"
    );
    let file =
        std::fs::File::open(path).expect("tests/fixtures/peers/random_window_funnel.json.gz");
    let corpus: serde_json::Value =
        serde_json::from_reader(flate2::read::GzDecoder::new(file)).unwrap();
    let cases = corpus["cases"].as_array().unwrap();
    assert!(cases.len() > 4000);
    let mut modes_seen = std::collections::BTreeSet::new();
    for case in cases {
        // ClickHouse's timestamps are seconds; ours microseconds.
        let events: Vec<(i64, u32)> = case["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e[0].as_i64().unwrap() * 1_000_000,
                    letter(e[1].as_str().unwrap()),
                )
            })
            .collect();
        let steps: Vec<u32> = case["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| letter(s.as_str().unwrap()))
            .collect();
        let window = case["window"].as_i64().unwrap() * 1_000_000;
        let mode = case["mode"].as_str().unwrap();
        modes_seen.insert(mode.to_string());
        let m = Modes::parse(mode).unwrap();
        let expected = case["level"].as_u64().unwrap() as usize;
        assert_eq!(ours(&events, &steps, window, m), expected, "case {case}");
        assert_eq!(
            reference(&events, &steps, window, m),
            expected,
            "reference, case {case}"
        );
    }
    assert!(modes_seen.len() >= 10, "{modes_seen:?}");
}

#[test]
fn documented_edge_cases() {
    let (a, b, c, x) = (0, 1, 2, 9);
    let d = Modes::default();
    let s = |v: i64| v * 1_000_000;
    // One event may serve two steps in the default mode.
    assert_eq!(ours(&[(0, a)], &[a, a], s(10), d), 2);
    assert_eq!(ours(&[(0, a), (s(1), b)], &[a, b, a], s(10), d), 2);
    // The window is inclusive.
    assert_eq!(ours(&[(0, a), (s(10), b)], &[a, b], s(10), d), 2);
    assert_eq!(ours(&[(0, a), (s(10) + 1, b)], &[a, b], s(10), d), 1);
    // Equal timestamps: step order, not arrival order.
    assert_eq!(ours(&[(s(5), b), (s(5), a)], &[a, b], s(10), d), 2);
    // strict_increase keeps only the latest chain per step.
    let inc = Modes::parse("strict_increase").unwrap();
    assert_eq!(
        ours(
            &[(0, a), (s(1), b), (s(2), b), (s(2), c)],
            &[a, b, c],
            s(10),
            inc
        ),
        2
    );
    let inc_once = Modes::parse("strict_increase,strict_once").unwrap();
    assert_eq!(
        ours(
            &[(0, a), (s(1), b), (s(2), b), (s(2), c)],
            &[a, b, c],
            s(10),
            inc_once
        ),
        3
    );
    // strict_order: a non-step event after the first step ends the search, before it not.
    let order = Modes::parse("strict_order").unwrap();
    assert_eq!(
        ours(&[(0, x), (s(1), a), (s(2), b)], &[a, b], s(10), order),
        2
    );
    assert_eq!(
        ours(&[(0, a), (s(1), x), (s(2), b)], &[a, b], s(10), order),
        1
    );
    assert_eq!(
        ours(
            &[(0, a), (s(1), c), (s(2), b), (s(3), c)],
            &[a, b, c],
            s(10),
            order
        ),
        1
    );
    let reentry = Modes::parse("strict_order,allow_reentry").unwrap();
    assert_eq!(
        ours(
            &[(0, a), (s(1), c), (s(2), b), (s(3), c)],
            &[a, b, c],
            s(10),
            reentry
        ),
        3
    );
    // strict_deduplication stops at a repeated reached step (not at a repeated first step).
    let dedup = Modes::parse("strict_deduplication").unwrap();
    assert_eq!(
        ours(
            &[(0, a), (s(1), a), (s(2), b), (s(3), c)],
            &[a, b, c],
            s(10),
            dedup
        ),
        3
    );
    assert_eq!(
        ours(
            &[(0, a), (s(1), b), (s(2), b), (s(3), c)],
            &[a, b, c],
            s(10),
            dedup
        ),
        2
    );
    // allow_reentry alone is refused, as ClickHouse refuses it.
    assert!(
        Modes::parse("allow_reentry")
            .unwrap_err()
            .contains("strict_order")
    );
    assert!(Modes::parse("strict").is_err());
}

fn journey() -> impl Strategy<Value = Vec<(i64, u32)>> {
    prop::collection::vec((0i64..20, 0u32..5), 0..14)
        .prop_map(|v| v.into_iter().map(|(t, n)| (t * 1_000_000, n)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Every mode combination, random journeys with many equal timestamps and repeated
    /// steps: the engine equals the reference.
    #[test]
    fn levels_equal_the_reference(
        events in journey(),
        steps in prop::collection::vec(0u32..5, 1..5),
        window in 0i64..16,
        mode in 0usize..24,
    ) {
        let m = all_modes()[mode];
        let window = window * 1_000_000;
        prop_assert_eq!(ours(&events, &steps, window, m), reference(&events, &steps, window, m));
    }
}

/// The SQL function's core, on conditions as bitmasks: the same levels as the touchpoint
/// funnel on the recorded ClickHouse corpus, whatever order the events come in.
#[test]
fn bitmask_conditions_equal_clickhouse() {
    use trailmap_mine::funnel::WindowFunnel;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/peers/random_window_funnel.json.gz"
    );
    let file = std::fs::File::open(path).expect("fixture");
    let corpus: serde_json::Value =
        serde_json::from_reader(flate2::read::GzDecoder::new(file)).unwrap();
    for case in corpus["cases"].as_array().unwrap() {
        let steps: Vec<u32> = case["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| letter(s.as_str().unwrap()))
            .collect();
        let mut events: Vec<(i64, u32)> = case["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = letter(e[1].as_str().unwrap());
                let mask = steps
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| **s == name)
                    .fold(0u32, |m, (k, _)| m | 1 << k);
                (e[0].as_i64().unwrap(), mask)
            })
            .collect();
        let m = Modes::parse(case["mode"].as_str().unwrap()).unwrap();
        let mut f = WindowFunnel::new(steps.len(), case["window"].as_i64().unwrap(), m).unwrap();
        let expected = case["level"].as_u64().unwrap() as u8;
        assert_eq!(f.level(&mut events), expected, "case {case}");
        events.reverse();
        assert_eq!(f.level(&mut events), expected, "reversed, case {case}");
    }
}
