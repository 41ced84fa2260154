//! Stitching, ordering and session semantics (DESIGN.md, "Semantics").

mod common;
use common::with_columns;
use proptest::prelude::*;
use std::collections::BTreeMap;
use trailmap_model::config::{Scope, SessionConfig};
use trailmap_model::time::Span;
use trailmap_model::{EventBatchBuilder, EventRow, IdentityKind};
use trailmap_sessionize::{JourneyBuilder, JourneyLog};

/// (source, [(identity kind, value)], ts µs, touchpoint or None for identity-only)
type Ev = (
    &'static str,
    Vec<(IdentityKind, String)>,
    i64,
    Option<String>,
);

fn build(events: &[Ev], batch_size: usize, sessions: &SessionConfig) -> JourneyLog {
    let mut jb = JourneyBuilder::new();
    for chunk in events.chunks(batch_size.max(1)) {
        let mut b = EventBatchBuilder::new();
        for (source, ids, ts, tp) in chunk {
            let mut row = EventRow {
                source,
                ts: *ts,
                touchpoint: tp.as_deref(),
                ..Default::default()
            };
            for (kind, v) in ids {
                row.identities[kind.index()] = Some(v);
            }
            b.push(&row);
        }
        jb.push_batch(&b.finish()).unwrap();
    }
    jb.finish(sessions)
}

/// Journeys keyed by customer display key, as touchpoint names.
fn by_customer(log: &JourneyLog, scope: Scope) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut out: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for j in log.journeys(scope) {
        let names = log.names(&j).into_iter().map(String::from).collect();
        out.entry(log.customer_key(j.customer).to_string())
            .or_default()
            .push(names);
    }
    out
}

fn id(kind: IdentityKind, v: &str) -> (IdentityKind, String) {
    (kind, v.to_string())
}

const MIN: i64 = 60_000_000;

#[test]
fn stitches_clickstream_ticket_and_crm_into_one_customer() {
    use IdentityKind::*;
    let tp = |s: &str| Some(s.to_string());
    let events: Vec<Ev> = vec![
        (
            "clickstream",
            vec![id(AnonymousId, "anon-1")],
            0,
            tp("home_view"),
        ),
        (
            "clickstream",
            vec![id(AnonymousId, "anon-1")],
            MIN,
            tp("pricing_view"),
        ),
        // A second visitor, and a CRM contact with an email: three customers so far.
        (
            "clickstream",
            vec![id(AnonymousId, "anon-2")],
            2 * MIN,
            tp("blog_view"),
        ),
        (
            "crm",
            vec![id(ContactId, "c-7"), id(Email, "ann@example.com")],
            3 * MIN,
            tp("became_lead"),
        ),
        (
            "ticket",
            vec![id(TicketId, "t-1"), id(Email, "ANN@example.com")],
            4 * MIN,
            tp("ticket_opened"),
        ),
        (
            "ticket",
            vec![id(TicketId, "t-1")],
            5 * MIN,
            tp("ticket_resolved"),
        ),
        // Login links anon-1 to u-1; identify links u-1 to the email: the chain merges the
        // web visitor with the CRM contact and the ticket requester, seen apart until now.
        (
            "clickstream",
            vec![id(AnonymousId, "anon-1"), id(UserId, "u-1")],
            6 * MIN,
            tp("signup"),
        ),
        (
            "clickstream",
            vec![id(UserId, "u-1"), id(Email, "Ann@Example.com")],
            6 * MIN + 1,
            None,
        ),
    ];
    let log = build(&events, 3, &SessionConfig::default());
    assert_eq!(log.num_customers(), 2);
    assert_eq!(log.num_events(), 7);
    assert_eq!(log.links, 1);
    let journeys = by_customer(&log, Scope::Customer);
    assert_eq!(
        journeys["u-1"],
        vec![vec![
            "home_view",
            "pricing_view",
            "became_lead",
            "ticket_opened",
            "ticket_resolved",
            "signup"
        ]]
    );
    assert_eq!(journeys["anon-2"], vec![vec!["blog_view"]]);
    assert_eq!(log.summary().cross_source_customers, 1);
}

#[test]
fn session_cuts_at_the_gap_boundary() {
    let gap = 30 * MIN;
    let sessions = SessionConfig {
        gap: Span(gap),
        max_duration: Span::ZERO,
        ..Default::default()
    };
    let ev = |ts: i64, tp: &str| -> Ev {
        (
            "s",
            vec![id(IdentityKind::CustomerId, "c")],
            ts,
            Some(tp.to_string()),
        )
    };
    // Exactly the gap does not cut; one microsecond more does.
    let log = build(
        &[ev(0, "a"), ev(gap, "b"), ev(2 * gap + 1, "c")],
        10,
        &sessions,
    );
    assert_eq!(log.num_sessions(), 2);
    assert_eq!(
        by_customer(&log, Scope::Session)["c"],
        vec![vec!["a", "b"], vec!["c"]]
    );
}

#[test]
fn sessions_longer_than_max_duration_are_cut() {
    let sessions = SessionConfig {
        gap: Span(10 * MIN),
        max_duration: Span(60 * MIN),
        ..Default::default()
    };
    let events: Vec<Ev> = (0..=13)
        .map(|i| {
            (
                "s",
                vec![id(IdentityKind::CustomerId, "c")],
                i * 5 * MIN,
                Some(format!("t{i}")),
            )
        })
        .collect();
    // Every 5 minutes for 65 minutes: the event at exactly 60 minutes stays, 65 cuts.
    let log = build(&events, 4, &sessions);
    let s = &by_customer(&log, Scope::Session)["c"];
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].len(), 13);
    assert_eq!(s[1], vec!["t13"]);
}

#[test]
fn ties_keep_arrival_order() {
    let ev = |tp: &str| -> Ev {
        (
            "s",
            vec![id(IdentityKind::CustomerId, "c")],
            100,
            Some(tp.into()),
        )
    };
    let mut events = vec![ev("x"), ev("a"), ev("m")];
    events.insert(
        0,
        (
            "s",
            vec![id(IdentityKind::CustomerId, "c")],
            200,
            Some("late".into()),
        ),
    );
    let log = build(&events, 2, &SessionConfig::default());
    assert_eq!(
        by_customer(&log, Scope::Customer)["c"],
        vec![vec!["x", "a", "m", "late"]]
    );
}

fn arb_events() -> impl Strategy<Value = Vec<Ev>> {
    // Distinct timestamps per event, so the order within a customer is fully determined by
    // time and must not depend on input order.
    prop::collection::vec((0u8..12, 0u8..4, 0u8..5, any::<bool>()), 1..120).prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (cust, link, tp, anon))| {
                use IdentityKind::*;
                let mut ids = vec![if anon {
                    id(AnonymousId, &format!("a{cust}"))
                } else {
                    id(UserId, &format!("u{}", cust / 2))
                }];
                if link == 0 {
                    ids.push(id(Email, &format!("e{}@x.io", cust % 5)));
                }
                let ts = (i as i64) * 7 * MIN + i64::from(cust);
                ("src", ids, ts, Some(format!("tp{tp}")))
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn results_do_not_depend_on_row_order_or_batch_size(
        events in arb_events(),
        seed in any::<u64>(),
        batch in 1usize..50,
    ) {
        let sessions = SessionConfig::default();
        let reference = build(&events, usize::MAX, &sessions);
        let mut shuffled = events.clone();
        // Fisher-Yates with a tiny LCG: proptest shrinks `seed`, not the permutation.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let other = build(&shuffled, batch, &sessions);
        prop_assert_eq!(reference.summary(), other.summary());
        prop_assert_eq!(by_customer(&reference, Scope::Customer), by_customer(&other, Scope::Customer));
        prop_assert_eq!(by_customer(&reference, Scope::Session), by_customer(&other, Scope::Session));
    }
}

proptest! {
    /// Each customer's events in (time, arrival) order, whether the input came grouped by
    /// customer (logs exported per case) or interleaved, and however many customers there are
    /// on each side of where the work is split between cores: the log's columns against a
    /// sort of the input.
    #[test]
    fn events_are_ordered_by_time_then_arrival(
        times in prop::collection::vec(prop::collection::vec(0i64..6, 1..9), 1..30),
        grouped in any::<bool>(),
    ) {
        // (customer, ts, touchpoint = input position)
        let mut rows: Vec<(usize, i64)> = Vec::new();
        if grouped {
            for (c, ts) in times.iter().enumerate() {
                rows.extend(ts.iter().map(|&t| (c, t)));
            }
        } else {
            for k in 0..times.iter().map(Vec::len).max().unwrap_or(0) {
                rows.extend(times.iter().enumerate().filter_map(|(c, ts)| ts.get(k).map(|&t| (c, t))));
            }
        }
        let events: Vec<Ev> = rows
            .iter()
            .enumerate()
            .map(|(i, &(c, t))| ("s", vec![id(IdentityKind::CustomerId, &format!("c{c}"))], t * MIN, Some(format!("{i}"))))
            .collect();
        let log = build(&events, 7, &SessionConfig::default());
        prop_assert_eq!(log.num_customers(), times.len());
        for c in 0..log.num_customers() {
            let j = log.customer(c as u32);
            let key = log.customer_key(j.customer).to_string();
            let mut expected: Vec<(i64, usize)> = rows
                .iter()
                .enumerate()
                .filter(|(_, (rc, _))| format!("c{rc}") == key)
                .map(|(i, &(_, t))| (t * MIN, i))
                .collect();
            expected.sort();
            let r = log.offsets[c]..log.offsets[c + 1];
            let got: Vec<(i64, usize)> = log.ts[r.clone()]
                .iter()
                .zip(&log.arrival[r.clone()])
                .map(|(&t, &a)| (t, a as usize))
                .collect();
            prop_assert_eq!(&got, &expected);
            let names: Vec<usize> = log.names(&j).iter().map(|n| n.parse().unwrap()).collect();
            prop_assert_eq!(names, expected.iter().map(|e| e.1).collect::<Vec<_>>());
        }
    }
}

#[test]
fn unused_dictionary_values_are_not_touchpoints() {
    use arrow::array::{ArrayRef, DictionaryArray, RecordBatch, StringArray, UInt32Array};
    use std::sync::Arc;
    let mut b = EventBatchBuilder::new();
    let mut row = EventRow {
        source: "s",
        ts: 1,
        touchpoint: Some("home"),
        ..Default::default()
    };
    row.identities[IdentityKind::CustomerId.index()] = Some("c");
    b.push(&row);
    let batch = b.finish();
    // A Parquet reader hands every batch the column chunk's whole dictionary.
    let touchpoint: ArrayRef = Arc::new(
        DictionaryArray::try_new(
            UInt32Array::from(vec![1u32]),
            Arc::new(StringArray::from(vec!["never_seen", "home"])),
        )
        .unwrap(),
    );
    let i = batch.schema().index_of("touchpoint").unwrap();
    let mut columns = batch.columns().to_vec();
    columns[i] = touchpoint;
    let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
    let mut jb = JourneyBuilder::new();
    jb.push_batch(&batch).unwrap();
    let log = jb.finish(&SessionConfig::default());
    assert_eq!(log.touchpoints, vec!["home".to_string()]);
}

/// Customer ids as a Parquet reader hands them over: dictionary-encoded, batches sharing one
/// dictionary. The journeys equal those from the same ids as plain text, and a blank value
/// sends the batch down the row path, where it is no identifier.
#[test]
fn dictionary_encoded_identifiers_stitch_like_text() {
    use arrow::array::{ArrayRef, DictionaryArray, RecordBatch, StringArray, UInt32Array};
    use std::sync::Arc;
    let rows = [
        ("c2", "a"),
        ("c1", "b"),
        ("c2", "c"),
        ("c1", "d"),
        (" ", "e"),
        ("c3", "f"),
    ];
    let mut b = EventBatchBuilder::new();
    for (i, (customer, tp)) in rows.iter().enumerate() {
        let mut row = EventRow {
            source: "s",
            ts: i as i64,
            touchpoint: Some(tp),
            ..Default::default()
        };
        row.identities[IdentityKind::CustomerId.index()] = Some(customer);
        b.push(&row);
    }
    let text = b.finish();
    let dictionary = Arc::new(StringArray::from(vec!["unused", "c1", "c2", " ", "c3"]));
    let keys = [2u32, 1, 2, 1, 3, 4];
    let with_dictionary = |range: std::ops::Range<usize>| {
        let i = text.schema().index_of("customer_id").unwrap();
        let ids: ArrayRef = Arc::new(
            DictionaryArray::try_new(
                UInt32Array::from(keys[range.clone()].to_vec()),
                dictionary.clone(),
            )
            .unwrap(),
        );
        let mut columns: Vec<ArrayRef> = text.slice(range.start, range.len()).columns().to_vec();
        columns[i] = ids.clone();
        with_columns(&text, columns)
    };
    let log = |batches: &[RecordBatch]| {
        let mut jb = JourneyBuilder::new();
        for batch in batches {
            jb.push_batch(batch).unwrap();
        }
        let log = jb.finish(&SessionConfig::default());
        (by_customer(&log, Scope::Customer), log.num_events())
    };
    let expected = log(std::slice::from_ref(&text));
    assert_eq!(
        expected.1, 5,
        "the blank identifier's event has no customer"
    );
    // Two batches on one dictionary (the cached nodes), the second with the blank value.
    assert_eq!(
        log(&[with_dictionary(0..3), with_dictionary(3..6)]),
        expected
    );
    assert_eq!(log(&[with_dictionary(0..6)]), expected);
}

/// Batches as the columnar Parquet reader hands them over: the stage column is the
/// touchpoint's keys over per-touchpoint labels, or all null; the source column one
/// dictionary for the whole file, or several sources. Stages are learnt from the first
/// batch that has them, sources kept per event.
#[test]
fn bulk_batches_learn_stages_and_keep_sources() {
    use arrow::array::{ArrayRef, DictionaryArray, StringArray, UInt32Array};
    use std::sync::Arc;
    let batch = |start: i64,
                 touchpoints: &[&str],
                 keys: &[u32],
                 stages: Option<&[&str]>,
                 sources: (&[&str], &[u32])| {
        let mut b = EventBatchBuilder::new();
        for (i, _) in keys.iter().enumerate() {
            let mut row = EventRow {
                source: "placeholder",
                ts: start + i as i64,
                touchpoint: Some("placeholder"),
                ..Default::default()
            };
            row.identities[IdentityKind::CustomerId.index()] =
                Some(if i % 2 == 0 { "c1" } else { "c2" });
            b.push(&row);
        }
        let text = b.finish();
        let dict = |keys: &[u32], values: &[&str]| -> ArrayRef {
            Arc::new(
                DictionaryArray::try_new(
                    UInt32Array::from(keys.to_vec()),
                    Arc::new(StringArray::from(values.to_vec())),
                )
                .unwrap(),
            )
        };
        let mut columns = text.columns().to_vec();
        let at = |name: &str| text.schema().index_of(name).unwrap();
        columns[at("touchpoint")] = dict(keys, touchpoints);
        columns[at("stage")] = match stages {
            Some(labels) => dict(keys, labels),
            None => arrow::array::new_null_array(columns[at("stage")].data_type(), keys.len()),
        };
        columns[at("source")] = dict(sources.1, sources.0);
        with_columns(&text, columns)
    };
    let mut jb = JourneyBuilder::new();
    // No stages yet: nothing to learn.
    let one_source: (&[&str], &[u32]) = (&["web"], &[0, 0, 0, 0]);
    jb.push_batch(&batch(0, &["a", "b"], &[0, 1, 0, 1], None, one_source))
        .unwrap();
    // Stages per touchpoint value, sharing its keys; "b" is used, "x" is not.
    jb.push_batch(&batch(
        10,
        &["x", "a", "b", "c"],
        &[1, 2, 3, 1],
        Some(&["never", "awareness", "consideration", "purchase"]),
        (&["web", "crm"], &[0, 1, 1, 0]),
    ))
    .unwrap();
    // A later stage for "a" does not replace the first.
    jb.push_batch(&batch(
        20,
        &["a"],
        &[0, 0],
        Some(&["support"]),
        (&["web"], &[0, 0]),
    ))
    .unwrap();
    let log = jb.finish(&SessionConfig::default());
    let stage_of = |tp: &str| {
        let i = log.touchpoints.iter().position(|t| t == tp).unwrap();
        log.stages[i].clone()
    };
    assert_eq!(log.touchpoints.len(), 3, "{:?}", log.touchpoints);
    assert_eq!(stage_of("a").as_deref(), Some("awareness"));
    assert_eq!(stage_of("b").as_deref(), Some("consideration"));
    assert_eq!(stage_of("c").as_deref(), Some("purchase"));
    // Sources per event, in journey order: c1 then c2, each by time.
    let names: Vec<&str> = log
        .source
        .iter()
        .map(|&s| log.sources[s as usize].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "web", "web", "web", "crm", "web", "web", "web", "crm", "web", "web"
        ],
    );
}
