//! Streaming customer-grouped input journey by journey gives exactly the journeys the
//! builder gives (order, ties, sessions, blank and padded identifiers, identity-only rows),
//! and says when the input is not grouped or needs stitching.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::DataType;
mod common;
use common::with_columns;
use proptest::prelude::*;
use trailmap_model::config::{Scope, SessionConfig};
use trailmap_model::time::Span;
use trailmap_model::{EventBatchBuilder, EventRow, IdentityKind};
use trailmap_sessionize::{
    GroupedError, GroupedJourneys, Joined, JourneyBuilder, JourneySink, NotGrouped, Sifted,
};

const MIN: i64 = 60_000_000;

/// (identifier as written, ts, touchpoint or None for an identity-only row)
type Row = (String, i64, Option<u8>);

/// Canonical batches of `rows` cut every `size` rows, the identifier in `kind`'s column, as
/// text or dictionary-encoded (as the Parquet reader hands it over).
fn batches(rows: &[Row], kind: IdentityKind, size: usize, dictionary: bool) -> Vec<RecordBatch> {
    rows.chunks(size.max(1))
        .map(|chunk| {
            let mut b = EventBatchBuilder::new();
            for (id, ts, tp) in chunk {
                let name = tp.map(|t| format!("tp{t}"));
                let mut row = EventRow {
                    source: "s",
                    ts: *ts,
                    touchpoint: name.as_deref(),
                    ..Default::default()
                };
                row.identities[kind.index()] = Some(id);
                b.push(&row);
            }
            let batch = b.finish();
            if !dictionary {
                return batch;
            }
            let i = batch.schema().index_of(kind.column()).unwrap();
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            let to = DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8));
            columns[i] = arrow::compute::cast(&columns[i], &to).unwrap();
            with_columns(&batch, columns)
        })
        .collect()
}

/// Journeys as (customer, times, touchpoint names), in the order they come.
type Journeys = Vec<(String, Vec<i64>, Vec<String>)>;

fn built(batches: &[RecordBatch], sessions: &SessionConfig, scope: Scope) -> (Journeys, u64) {
    let mut jb = JourneyBuilder::new();
    for b in batches {
        jb.push_batch(b).unwrap();
    }
    let log = jb.finish(sessions);
    let journeys = log
        .journeys(scope)
        .map(|j| {
            let names = log.names(&j).into_iter().map(String::from).collect();
            (
                log.customer_key(j.customer).to_string(),
                j.ts.to_vec(),
                names,
            )
        })
        .collect();
    (journeys, log.num_customers() as u64)
}

/// What a sink was handed: journeys with their customer's name, batch ends, and how many
/// touchpoints the last batch end named.
#[derive(Default)]
struct Collect {
    got: Vec<(String, Vec<i64>, Vec<u32>)>,
    batch_ends: usize,
    named: usize,
}

impl JourneySink for Collect {
    fn journey(&mut self, j: &trailmap_sessionize::Journey<'_>, customer: &str) {
        self.got
            .push((customer.to_string(), j.ts.to_vec(), j.touchpoint.to_vec()));
    }

    fn batch_end(&mut self, touchpoints: &[String]) -> Result<(), String> {
        assert!(touchpoints.len() >= self.named, "names only grow");
        self.named = touchpoints.len();
        self.batch_ends += 1;
        Ok(())
    }
}

/// The stream's journeys; `early` customers checked as they come, the rest at the end.
fn streamed(
    batches: &[RecordBatch],
    sessions: &SessionConfig,
    scope: Scope,
    early: usize,
) -> Result<(Journeys, trailmap_sessionize::GroupedSummary), GroupedError> {
    let mut stream = GroupedJourneys::new(scope, sessions).check_early(early);
    let mut sink = Collect::default();
    for (i, b) in batches.iter().enumerate() {
        stream.push_batch(b, &mut sink)?;
        assert_eq!(sink.batch_ends, i + 1, "each batch's end is told");
    }
    let summary = stream.finish(&mut sink).map_err(GroupedError::NotGrouped)?;
    assert_eq!(sink.batch_ends, batches.len() + 1, "and the input's end");
    assert_eq!(sink.named, summary.touchpoints.len());
    let journeys = sink
        .got
        .into_iter()
        .map(|(customer, ts, tp)| {
            let names = tp
                .iter()
                .map(|&t| summary.touchpoints[t as usize].clone())
                .collect();
            (customer, ts, names)
        })
        .collect();
    Ok((journeys, summary))
}

/// The journeys of `batches` streamed in parts, cut before each batch index of `cuts`
/// (parts may be empty), and joined; sorted, since parts hand journeys on in their own order.
fn streamed_in_parts(
    batches: &[RecordBatch],
    sessions: &SessionConfig,
    scope: Scope,
    cuts: &[usize],
) -> Result<(Journeys, trailmap_sessionize::GroupedSummary), GroupedError> {
    let stream = |part: bool| {
        let mut stream = if part {
            GroupedJourneys::part(scope, sessions)
        } else {
            GroupedJourneys::new(scope, sessions)
        };
        stream.touchpoint_id("tp3");
        stream
    };
    let (sinks, joined_sink, joined) = in_parts(batches, cuts, stream, Collect::default)?;
    let names = &joined.summary.touchpoints;
    let mut journeys: Journeys = Vec::new();
    let identity: Vec<u32> = (0..names.len() as u32).collect();
    for (sink, ids) in sinks
        .iter()
        .chain([&joined_sink])
        .zip(joined.touchpoint_ids.iter().chain([&identity]))
    {
        for (customer, ts, tp) in &sink.got {
            let tp = tp
                .iter()
                .map(|&t| names[ids[t as usize] as usize].clone())
                .collect();
            journeys.push((customer.clone(), ts.clone(), tp));
        }
    }
    journeys.sort();
    Ok((journeys, joined.summary))
}

/// `batches` streamed in parts cut before each batch index of `cuts` (parts may be empty),
/// each part by `stream(true)` into a sink of its own from `sink`, and joined by
/// `stream(false)` into one more: the parts' sinks, the joining sink, and what the join
/// said (the parts' touchpoint ids as the joined stream's).
fn in_parts<S: JourneySink>(
    batches: &[RecordBatch],
    cuts: &[usize],
    stream: impl Fn(bool) -> GroupedJourneys,
    sink: impl Fn() -> S,
) -> Result<(Vec<S>, S, Joined), GroupedError> {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (batches.len() + 1)).collect();
    bounds.extend([0, batches.len()]);
    bounds.sort_unstable();
    let (mut parts, mut sinks) = (Vec::new(), Vec::new());
    for w in bounds.windows(2) {
        let (mut part, mut got) = (stream(true), sink());
        for b in &batches[w[0]..w[1]] {
            part.push_batch(b, &mut got)?;
        }
        parts.push(part.finish_part(&mut got));
        sinks.push(got);
    }
    let mut joined_sink = sink();
    let joined = (stream(false).join(parts, &mut joined_sink)).map_err(GroupedError::NotGrouped)?;
    assert_eq!(joined.touchpoint_ids.len(), sinks.len());
    Ok((sinks, joined_sink, joined))
}

/// 30-minute gaps; sessions also cut at 70 minutes when `capped`.
fn sessions_of(capped: bool) -> SessionConfig {
    SessionConfig {
        gap: Span::from_secs(30 * 60),
        max_duration: Span::from_secs(if capped { 70 * 60 } else { 0 }),
        ..SessionConfig::default()
    }
}

/// Customers one after another, each with a few events at coarse times (ties and
/// out-of-order times within a customer are common, as are 30-minute session gaps), some
/// identity-only rows and rows with a blank identifier, and the identifier written with
/// surrounding spaces or (emails) in capitals now and then.
fn grouped_rows() -> impl Strategy<Value = (Vec<Row>, IdentityKind)> {
    let event = (0i64..10, prop::option::weighted(0.9, 0u8..5), 0u8..8);
    (
        prop::collection::vec(prop::collection::vec(event, 1..10), 1..14),
        any::<bool>(),
    )
        .prop_map(|(customers, email)| {
            let kind = if email {
                IdentityKind::Email
            } else {
                IdentityKind::CustomerId
            };
            let mut rows = Vec::new();
            for (c, events) in customers.iter().enumerate() {
                for &(t, tp, spelling) in events {
                    let base = format!("c{c}@x.io");
                    let id = match spelling {
                        0 => format!("  {base} "),
                        1 if email => base.to_uppercase(),
                        // A blank identifier: no customer, in the middle of one's events.
                        2 => " ".to_string(),
                        _ => base,
                    };
                    rows.push((id, t * 20 * MIN, tp));
                }
            }
            (rows, kind)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn streamed_journeys_are_the_builders(
        (rows, kind) in grouped_rows(),
        size in 1usize..40,
        dictionary in any::<bool>(),
        sessions in any::<bool>(),
        early in 0usize..4,
    ) {
        let config = sessions_of(sessions);
        let batches = batches(&rows, kind, size, dictionary);
        for scope in [Scope::Customer, Scope::Session] {
            let (expected, customers) = built(&batches, &config, scope);
            let (got, summary) = streamed(&batches, &config, scope, early).unwrap();
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(summary.customers, customers);
            prop_assert_eq!(summary.journeys as usize, expected.len());
            prop_assert_eq!(summary.events as usize, expected.iter().map(|j| j.1.len()).sum::<usize>());
            prop_assert_eq!(summary.last_ts, expected.iter().filter_map(|j| j.1.last().copied()).max());
            prop_assert_eq!(summary.first_ts, expected.iter().filter_map(|j| j.1.first().copied()).min());
        }
    }

    /// Streamed in parts and joined, the journeys and the summary are one stream's.
    #[test]
    fn parts_joined_are_one_stream(
        (rows, kind) in grouped_rows(),
        size in 1usize..12,
        dictionary in any::<bool>(),
        sessions in any::<bool>(),
        cuts in prop::collection::vec(0usize..64, 0..5),
    ) {
        let config = sessions_of(sessions);
        let batches = batches(&rows, kind, size, dictionary);
        for scope in [Scope::Customer, Scope::Session] {
            let mut one = GroupedJourneys::new(scope, &config);
            one.touchpoint_id("tp3");
            let mut sink = Collect::default();
            for b in &batches {
                one.push_batch(b, &mut sink).unwrap();
            }
            let expected = one.finish(&mut sink).unwrap();
            let (got, summary) = streamed_in_parts(&batches, &config, scope, &cuts).unwrap();
            prop_assert_eq!(&summary, &expected);
            let mut journeys: Journeys = sink.got.into_iter().map(|(customer, ts, tp)| {
                let names = tp.iter().map(|&t| expected.touchpoints[t as usize].clone()).collect();
                (customer, ts, names)
            }).collect();
            journeys.sort();
            prop_assert_eq!(got, journeys);
        }
    }

    /// A customer whose events come back after another's: the stream says so, naming
    /// them when checked as they come, at the end otherwise.
    #[test]
    fn a_customer_met_again_is_not_grouped(
        (mut rows, kind) in grouped_rows(),
        size in 1usize..40,
        dictionary in any::<bool>(),
        early in any::<bool>(),
    ) {
        // Customers are met through their events (identity-only rows make none).
        let customer = |r: &Row| Some(r.0.trim().to_lowercase()).filter(|id| !id.is_empty() && r.2.is_some());
        let first = rows.iter().find_map(customer);
        let last = rows.iter().rev().find_map(customer);
        prop_assume!(first.is_some() && first != last);
        let first = first.unwrap();
        rows.push((first.clone(), 0, Some(1)));
        let batches = batches(&rows, kind, size, dictionary);
        let got = streamed(&batches, &SessionConfig::default(), Scope::Customer, if early { 100 } else { 0 });
        let named = early.then_some(first);
        prop_assert_eq!(got.err(), Some(GroupedError::NotGrouped(NotGrouped::Interleaved(named))));
        // Streamed in parts, wherever they are cut: the join finds it (in one part or two).
        for cuts in [vec![], vec![1], vec![1, 2], vec![batches.len() / 2], vec![batches.len()]] {
            let got = streamed_in_parts(&batches, &SessionConfig::default(), Scope::Customer, &cuts);
            prop_assert!(
                matches!(got, Err(GroupedError::NotGrouped(NotGrouped::Interleaved(_)))),
                "cut at {:?}: {:?}", cuts, got.map(|g| g.0)
            );
        }
    }
}

#[test]
fn several_identity_columns_need_stitching() {
    let mut b = EventBatchBuilder::new();
    let mut row = EventRow {
        source: "s",
        ts: 1,
        touchpoint: Some("a"),
        ..Default::default()
    };
    row.identities[IdentityKind::AnonymousId.index()] = Some("anon");
    row.identities[IdentityKind::UserId.index()] = Some("user");
    b.push(&row);
    let got = streamed(&[b.finish()], &SessionConfig::default(), Scope::Customer, 1);
    assert_eq!(
        got.err(),
        Some(GroupedError::NotGrouped(NotGrouped::Stitching))
    );
}

/// Names given ahead of the input keep their ids and are not "seen" until an event has them.
#[test]
fn names_given_ahead_are_not_seen_until_used() {
    let rows: Vec<Row> = vec![("c1".into(), 0, Some(3)), ("c1".into(), 1, Some(1))];
    let batches = batches(&rows, IdentityKind::CustomerId, 10, true);
    let mut stream = GroupedJourneys::new(Scope::Customer, &SessionConfig::default());
    assert_eq!(stream.touchpoint_id("tp1"), 0);
    assert_eq!(stream.touchpoint_id("tp9"), 1);
    let mut got = Vec::new();
    let mut sink = |j: &trailmap_sessionize::Journey<'_>| got.push(j.touchpoint.to_vec());
    stream.push_batch(&batches[0], &mut sink).unwrap();
    let summary = stream.finish(&mut sink).unwrap();
    assert_eq!(got, vec![vec![2, 0]]);
    assert_eq!(summary.touchpoints, ["tp1", "tp9", "tp3"]);
    assert_eq!(summary.seen, [true, false, true]);
}

/// A row whose touchpoint key points at a null dictionary value has no touchpoint: it is no
/// event, to whole and to sifted journeys alike, as to the builder.
#[test]
fn a_key_of_a_null_touchpoint_value_is_no_event() {
    use arrow::array::{DictionaryArray, StringArray, UInt32Array};
    use std::sync::Arc;
    let rows: Vec<Row> = vec![
        ("c1".into(), 0, Some(1)),
        ("c1".into(), MIN, Some(1)),
        ("c1".into(), 2 * MIN, Some(1)),
        ("c2".into(), 3 * MIN, Some(1)),
    ];
    let batch = batches(&rows, IdentityKind::CustomerId, 10, true).remove(0);
    let i = batch.schema().index_of("touchpoint").unwrap();
    let mut columns = batch.columns().to_vec();
    columns[i] = Arc::new(
        DictionaryArray::try_new(
            UInt32Array::from(vec![0u32, 1, 0, 0]),
            Arc::new(StringArray::from(vec![Some("a"), None])),
        )
        .unwrap(),
    );
    let batch = with_columns(&batch, columns);
    let sessions = SessionConfig::default();
    let (built, _) = built(std::slice::from_ref(&batch), &sessions, Scope::Customer);
    let (whole, _) =
        streamed(std::slice::from_ref(&batch), &sessions, Scope::Customer, 10).unwrap();
    assert_eq!(whole, built);
    assert_eq!(built[0].1, vec![0, 2 * MIN]);
    let mut stream = GroupedJourneys::new(Scope::Customer, &sessions);
    let a = stream.touchpoint_id("a");
    let mut sink = Sifting {
        kept: vec![a],
        got: Vec::new(),
    };
    stream.push_batch(&batch, &mut sink).unwrap();
    let summary = stream.finish(&mut sink).unwrap();
    let ids: Vec<u32> = (0..summary.touchpoints.len() as u32).collect();
    assert_eq!(
        sink.named(&summary.touchpoints, &ids),
        sifted_by_hand(&built, &["a"])
    );
}

/// A sifted journey: (customer, events in the whole journey, its first and last times, the
/// kept events as (time, touchpoint, place in the journey, next touchpoint)), touchpoints
/// as ids or as names (the next one "end" after the journey's last event).
type SiftedAs<T> = (String, usize, i64, i64, Vec<(i64, T, u32, T)>);
type SiftedJourney = SiftedAs<String>;

/// A sink that keeps some touchpoints: it must be handed sifted journeys only.
struct Sifting {
    kept: Vec<u32>,
    got: Vec<SiftedAs<u32>>,
}

impl JourneySink for Sifting {
    fn journey(&mut self, _: &trailmap_sessionize::Journey<'_>, customer: &str) {
        panic!("a sink keeping touchpoints was handed {customer}'s whole journey");
    }

    fn kept_touchpoints(&self) -> Option<Vec<u32>> {
        Some(self.kept.clone())
    }

    fn sifted(&mut self, j: &Sifted<'_>, customer: &str) {
        let events = (0..j.ts.len())
            .map(|i| (j.ts[i], j.touchpoint[i], j.position[i], j.next[i]))
            .collect();
        (self.got).push((customer.to_string(), j.len, j.first_ts, j.last_ts, events));
    }
}

impl Sifting {
    /// What it got, in names: `ids` turns its touchpoint ids into ids of `names`.
    fn named(self, names: &[String], ids: &[u32]) -> Vec<SiftedJourney> {
        let name = |t: u32| match t {
            Sifted::END => "end".to_string(),
            t => names[ids[t as usize] as usize].clone(),
        };
        (self.got.into_iter())
            .map(|(customer, len, first, last, events)| {
                let events = (events.into_iter())
                    .map(|(ts, tp, at, next)| (ts, name(tp), at, name(next)))
                    .collect();
                (customer, len, first, last, events)
            })
            .collect()
    }
}

/// The builder's journeys sifted by hand to the touchpoints named `kept`.
fn sifted_by_hand(journeys: &Journeys, kept: &[&str]) -> Vec<SiftedJourney> {
    (journeys.iter())
        .map(|(customer, ts, names)| {
            let events = (0..ts.len())
                .filter(|&i| kept.contains(&names[i].as_str()))
                .map(|i| {
                    let next = names.get(i + 1).map_or("end", String::as_str);
                    (ts[i], names[i].clone(), i as u32, next.to_string())
                })
                .collect();
            let (first, last) = (ts[0], ts[ts.len() - 1]);
            (customer.clone(), ts.len(), first, last, events)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// A sink that keeps some touchpoints is handed the builder's journeys sifted to them,
    /// by one stream and by parts joined.
    #[test]
    fn sifted_journeys_are_the_builders_sifted(
        (rows, kind) in grouped_rows(),
        size in 1usize..40,
        dictionary in any::<bool>(),
        sessions in any::<bool>(),
        keep in 0usize..4,
        cuts in prop::collection::vec(0usize..64, 0..4),
    ) {
        let config = sessions_of(sessions);
        let batches = batches(&rows, kind, size, dictionary);
        // Named ahead, as a funnel's steps are: "tp3" is 0, "tp1" is 1.
        let ahead = ["tp3", "tp1"];
        let kept_ids: Vec<u32> = (0..2).filter(|b| keep & (1 << b) != 0).collect();
        let kept: Vec<&str> = kept_ids.iter().map(|&i| ahead[i as usize]).collect();
        let stream = |part: bool, scope: Scope| {
            let mut s = if part {
                GroupedJourneys::part(scope, &config)
            } else {
                GroupedJourneys::new(scope, &config)
            };
            for name in ahead {
                s.touchpoint_id(name);
            }
            s
        };
        let sink = || Sifting { kept: kept_ids.clone(), got: Vec::new() };
        for scope in [Scope::Customer, Scope::Session] {
            let stream = |part| stream(part, scope);
            let expected = sifted_by_hand(&built(&batches, &config, scope).0, &kept);
            let mut one = stream(false);
            let mut got = sink();
            for b in &batches {
                one.push_batch(b, &mut got).unwrap();
            }
            let summary = one.finish(&mut got).unwrap();
            let all = all_of(&summary.touchpoints);
            prop_assert_eq!(&got.named(&summary.touchpoints, &all), &expected);

            let (sinks, joined_sink, joined) = in_parts(&batches, &cuts, stream, sink).unwrap();
            let names = &joined.summary.touchpoints;
            let mut in_parts: Vec<SiftedJourney> = joined_sink.named(names, &all_of(names));
            for (got, ids) in sinks.into_iter().zip(&joined.touchpoint_ids) {
                in_parts.extend(got.named(names, ids));
            }
            in_parts.sort();
            let mut expected = expected;
            expected.sort();
            prop_assert_eq!(in_parts, expected);
        }
    }
}

fn all_of(names: &[String]) -> Vec<u32> {
    (0..names.len() as u32).collect()
}
