//! The live pipeline against batch mining on the same events: once the input has ended, the
//! live map must hold exactly what `paths`, `dropoffs` and `funnel` count per session,
//! whatever the arrival order, the shard count, the lateness and the identity merges.

mod common;
use common::run_source;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use trailmap_gen::{GenOptions, JourneyModel, Layout, OutFormat};
use trailmap_ingest::DeadLetters;
use trailmap_ingest::file::{self, FileInput, IngestOptions};
use trailmap_live::{BUCKET_MICROS, FileReplay, LiveResult, PipelineOptions, bucket_of};
use trailmap_mine::fold::{Aggregate, fold};
use trailmap_mine::paths::PathOptions;
use trailmap_mine::{Dropoffs, Funnel, FunnelSpec, PathStats};
use trailmap_model::config::{OneOrMany, Scope, SourceConfig, SourceKind};
use trailmap_model::time::Span;
use trailmap_model::{Catalog, Config};
use trailmap_sessionize::{Attribute, Journey, JourneyBuilder, JourneyLog};

/// Session counts by touchpoint name, comparable between batch and live.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    events: i64,
    journeys: i64,
    transitions: BTreeMap<(String, String), i64>,
    starts: BTreeMap<String, i64>,
    exits: BTreeMap<String, i64>,
    through: BTreeMap<String, i64>,
    /// Journey name → reached per step.
    funnels: BTreeMap<String, Vec<i64>>,
    /// `(journey, as of minute)` → maturing journeys by level, at minutes spread over the
    /// data (its first and last minute, one between, one after).
    maturing: BTreeMap<(String, i64), Vec<i64>>,
    /// For journeys alert rules break down: `(journey, value)` → reached per step, and
    /// `(journey, value, as of minute)` → maturing by level (trailing zeros trimmed).
    by_value: BTreeMap<(String, String), Vec<i64>>,
    value_maturing: BTreeMap<(String, String, i64), Vec<i64>>,
}

/// Journeys the config's alert rules break down, and by what.
fn broken_down(config: &Config) -> (Vec<String>, Option<String>) {
    let journeys = config
        .alerts
        .values()
        .filter(|r| r.breakdown.is_some())
        .map(|r| r.journey.clone())
        .collect();
    let by = config.breakdown_attribute().expect("one attribute");
    (journeys, by.map(str::to_string))
}

fn trimmed(mut levels: Vec<i64>) -> Vec<i64> {
    while levels.last() == Some(&0) {
        levels.pop();
    }
    levels
}

/// Minutes to judge maturity at, from the first and last minute holding events.
fn as_of_minutes(first: i64, last: i64) -> [i64; 4] {
    [first, first + (last - first) / 2, last, last + 1]
}

fn options(config: &Config, batch_size: usize) -> IngestOptions {
    IngestOptions {
        catalog: Arc::new(Catalog::compile(&config.catalog).expect("catalog")),
        batch_size,
        ..IngestOptions::default()
    }
}

/// Only the sessions whose first event has one value of the kept attribute: what a live
/// segment counts.
struct InSegment<'a, A> {
    value: u32,
    of_event: &'a [u32],
    inner: A,
}

impl<'log, A: Aggregate<'log>> Aggregate<'log> for InSegment<'_, A> {
    fn add(&mut self, journey: &Journey<'log>) {
        if self.of_event[journey.start] == self.value {
            self.inner.add(journey);
        }
    }

    fn merge(&mut self, other: Self) {
        self.inner.merge(other.inner);
    }

    fn seal(&mut self) {
        self.inner.seal();
    }
}

/// `fold` over every session, or over one segment's.
fn fold_in<'log, A: Aggregate<'log>>(
    log: &'log JourneyLog,
    segment: Option<(u32, &[u32])>,
    make: impl Fn() -> A + Sync,
) -> A {
    match segment {
        None => fold(log, Scope::Session, make),
        Some((value, of_event)) => {
            fold(log, Scope::Session, || InSegment {
                value,
                of_event,
                inner: make(),
            })
            .inner
        }
    }
}

/// What batch mining counts over sessions.
fn batch(inputs: &[FileInput], config: &Config) -> Counts {
    batch_segments(inputs, config)
        .remove("")
        .expect("the whole")
}

/// What batch mining counts over sessions: `""` for all of them, and per segment value
/// (when the config keeps segments) over the sessions whose first event has it.
fn batch_segments(inputs: &[FileInput], config: &Config) -> BTreeMap<String, Counts> {
    let mut builder = JourneyBuilder::new();
    let (_, by) = broken_down(config);
    if let Some(by) = &by {
        builder.keep_attribute(Attribute::parse(by));
    }
    let mut dead = DeadLetters::new(
        std::env::temp_dir().join("trailmap-live-batch-dead.ndjson"),
        None,
    );
    file::read_all(inputs, &options(config, 8192), &mut dead, |b| {
        builder.push_batch(&b).map_err(trailmap_model::Error::Other)
    })
    .expect("read");
    let log = builder.finish(&config.sessions);
    let mut all = BTreeMap::new();
    all.insert(String::new(), counts_of(&log, config, None));
    if !config.segments.by.is_empty() {
        let attr = log.attribute.as_ref().expect("attribute kept");
        for (v, name) in attr.values.iter().enumerate() {
            let counts = counts_of(&log, config, Some((v as u32, &attr.of_event)));
            if counts.journeys > 0 {
                all.insert(name.clone(), counts);
            }
        }
    }
    all
}

fn counts_of(log: &JourneyLog, config: &Config, segment: Option<(u32, &[u32])>) -> Counts {
    let (broken_down, _) = broken_down(config);
    let names = &log.touchpoints;
    let paths = fold_in(log, segment, || {
        PathStats::new(names.len(), PathOptions::default())
    });
    let drops = fold_in(log, segment, || Dropoffs::new(None));
    let mut counts = Counts {
        events: paths.events as i64,
        journeys: paths.journeys as i64,
        ..Counts::default()
    };
    for (a, b, t) in paths.transitions() {
        counts.transitions.insert(
            (names[a as usize].clone(), names[b as usize].clone()),
            t.count as i64,
        );
    }
    for (tp, n) in paths.starts() {
        counts.starts.insert(names[tp as usize].clone(), n as i64);
    }
    for (tp, n) in paths.ends() {
        counts.exits.insert(names[tp as usize].clone(), n as i64);
    }
    for row in drops.rows() {
        counts
            .through
            .insert(names[row.touchpoint as usize].clone(), row.journeys as i64);
    }
    let first = log.ts.iter().min().map_or(0, |&t| bucket_of(t));
    let last = log.ts.iter().max().map_or(0, |&t| bucket_of(t));
    for (name, journey) in &config.journeys {
        let (spec, _) = FunnelSpec::resolve(journey, names, i64::MAX).expect("funnel");
        let steps = spec.num_steps();
        let funnel = fold_in(log, segment, || Funnel::new(spec.clone(), None));
        counts.funnels.insert(
            name.clone(),
            (0..steps)
                .map(|k| funnel.tallies.reached(k) as i64)
                .collect(),
        );
        for m in as_of_minutes(first, last) {
            let spec = FunnelSpec {
                as_of: m * BUCKET_MICROS,
                ..spec.clone()
            };
            let funnel = fold_in(log, segment, || Funnel::new(spec.clone(), None));
            let maturing = funnel.tallies.maturing.iter().map(|&n| n as i64).collect();
            counts.maturing.insert((name.clone(), m), maturing);
        }
        // Alert breakdowns are kept for the whole map only.
        if !broken_down.contains(name) || segment.is_some() {
            continue;
        }
        let attr = log.attribute.as_ref().expect("attribute kept");
        let of_event = Some(attr.of_event.as_slice());
        let funnel = fold(log, Scope::Session, || Funnel::new(spec.clone(), of_event));
        for (&v, t) in &funnel.breakdown {
            let reached = (0..steps).map(|k| t.reached(k) as i64).collect();
            let key = (name.clone(), attr.values[v as usize].clone());
            counts.by_value.insert(key, reached);
        }
        for m in as_of_minutes(first, last) {
            let spec = FunnelSpec {
                as_of: m * BUCKET_MICROS,
                ..spec.clone()
            };
            let funnel = fold(log, Scope::Session, || Funnel::new(spec.clone(), of_event));
            for (&v, t) in &funnel.breakdown {
                let maturing = trimmed(t.maturing.iter().map(|&n| n as i64).collect());
                if !maturing.is_empty() {
                    let key = (name.clone(), attr.values[v as usize].clone(), m);
                    counts.value_maturing.insert(key, maturing);
                }
            }
        }
    }
    counts.starts.retain(|_, v| *v != 0);
    counts.exits.retain(|_, v| *v != 0);
    counts
}

/// The live map's totals, by name.
fn live(result: &LiveResult) -> Counts {
    live_of(&result.map, result)
}

/// The live counts of the whole map (`""`) and of every segment, by name.
fn live_segments(result: &LiveResult) -> BTreeMap<String, Counts> {
    let mut all = BTreeMap::new();
    all.insert(String::new(), live(result));
    for (&v, map) in &result.segments {
        let counts = live_of(map, result);
        if counts.journeys > 0 {
            all.insert(result.names.values[v as usize].clone(), counts);
        }
    }
    all
}

fn live_of(map: &trailmap_live::LiveMap, result: &LiveResult) -> Counts {
    let total = map.total();
    let names = &result.names.touchpoints;
    let name = |id: &u32| names[*id as usize].clone();
    let by_name = |count: fn(&trailmap_live::TouchpointCounts) -> i64| {
        total
            .touchpoints
            .iter()
            .map(|(k, c)| (name(k), count(c)))
            .filter(|&(_, n)| n != 0)
            .collect::<BTreeMap<_, _>>()
    };
    // Maturity is judged at minutes of the whole data, as batch does for every segment.
    let minutes: Vec<i64> = result.map.buckets().map(|(m, _)| m).collect();
    let (first, last) = (
        minutes.first().copied().unwrap_or(0),
        minutes.last().copied().unwrap_or(0),
    );
    let mut maturing = BTreeMap::new();
    let (mut by_value, mut value_maturing) = (BTreeMap::new(), BTreeMap::new());
    let values = &result.names.values;
    // Every minute: one range (a window is a list of ranges).
    let everything = std::slice::from_ref(&(i64::MIN..i64::MAX));
    for (j, (n, journey)) in result.names.funnels.iter().enumerate() {
        for m in as_of_minutes(first, last) {
            let mut levels = total.maturing(j, m);
            levels.resize(journey.steps.len() + 1, 0);
            maturing.insert((n.clone(), m), levels);
            for (v, l) in map.funnel_levels_by_value(j, everything, m) {
                let l = trimmed(l.maturing);
                if !l.is_empty() {
                    value_maturing.insert((n.clone(), values[v as usize].clone(), m), l);
                }
            }
        }
        for (v, l) in map.funnel_levels_by_value(j, everything, i64::MAX) {
            let reached = (0..journey.steps.len()).map(|k| l.reached(k)).collect();
            by_value.insert((n.clone(), values[v as usize].clone()), reached);
        }
    }
    Counts {
        maturing,
        by_value,
        value_maturing,
        events: total.events,
        journeys: total.journeys,
        transitions: total
            .transitions
            .iter()
            .map(|((a, b), t)| ((name(a), name(b)), t.count))
            .collect(),
        starts: by_name(|c| c.starts),
        exits: by_name(|c| c.exits),
        through: by_name(|c| c.through),
        funnels: result
            .names
            .funnels
            .iter()
            .enumerate()
            .map(|(j, (n, journey))| {
                (
                    n.clone(),
                    (0..journey.steps.len())
                        .map(|k| total.funnel(j, None).reached(k))
                        .collect(),
                )
            })
            .collect(),
    }
}

fn run_live(inputs: &[FileInput], config: &Config, shards: usize, batch_size: usize) -> LiveResult {
    let dead = DeadLetters::new(std::env::temp_dir().join("trailmap-live-dead.ndjson"), None);
    let source = FileReplay::open(inputs, &options(config, batch_size), dead).expect("open");
    let options = PipelineOptions {
        shards,
        channel_batches: 2,
    };
    run_source(Box::new(source), config, &options)
}

/// Generated journeys in the three sources' native shapes.
fn generate(dir: &Path, customers: u64) -> Vec<(SourceKind, PathBuf)> {
    let opts = GenOptions {
        customers,
        days: 7,
        seed: 7,
        ..GenOptions::default()
    };
    trailmap_gen::write(
        &JourneyModel::default(),
        &opts,
        dir,
        Layout::Sources,
        OutFormat::Ndjson,
    )
    .expect("gen");
    [SourceKind::Clickstream, SourceKind::Ticket, SourceKind::Crm]
        .into_iter()
        .map(|k| (k, dir.join(format!("{}.ndjson", k.as_str()))))
        .collect()
}

fn inputs(files: &[(SourceKind, PathBuf)]) -> Vec<FileInput> {
    files
        .iter()
        .map(|(k, p)| FileInput::new(p.clone(), SourceConfig::of_kind(*k)).expect("input"))
        .collect()
}

/// The same files with lines sorted by event time, as a live feed would deliver them.
fn sorted_by_time(files: &[(SourceKind, PathBuf)], dir: &Path) -> Vec<(SourceKind, PathBuf)> {
    std::fs::create_dir_all(dir).expect("dir");
    files
        .iter()
        .map(|(kind, path)| {
            let field = match kind {
                SourceKind::Clickstream => "timestamp",
                SourceKind::Ticket => "updated_at",
                _ => "changed_at",
            };
            let text = std::fs::read_to_string(path).expect("read");
            let mut lines: Vec<(String, &str)> = text
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).expect("json");
                    (v[field].as_str().expect("time").to_string(), l)
                })
                .collect();
            lines.sort_by(|a, b| a.0.cmp(&b.0));
            let out = dir.join(path.file_name().expect("name"));
            let mut f = std::fs::File::create(&out).expect("create");
            for (_, l) in lines {
                writeln!(f, "{l}").expect("write");
            }
            (*kind, out)
        })
        .collect()
}

#[test]
fn out_of_order_replay_inside_the_horizon_equals_batch() {
    let dir = tempfile::tempdir().expect("tmp");
    // Generated files are grouped by customer, so time goes back and forth all the time: a
    // horizon longer than the data lets every late event correct the map.
    let files = generate(dir.path(), 400);
    let mut config = Config::builtin();
    config.sessions.allowed_lateness = Span::from_secs(3600 * 24 * 60);
    let inputs = inputs(&files);
    let expected = batch(&inputs, &config);
    assert!(expected.journeys > 400 && expected.transitions.len() > 20);
    // The built-in rules break checkout down by device: every kind shows up.
    let devices: Vec<&str> = expected.by_value.keys().map(|(_, v)| v.as_str()).collect();
    assert_eq!(
        devices,
        ["desktop", "mobile", "tablet"],
        "{:?}",
        expected.by_value
    );
    let segments = batch_segments(&inputs, &config);
    assert_eq!(
        segments.keys().map(String::as_str).collect::<Vec<_>>(),
        ["", "(none)", "desktop", "mobile", "tablet"],
        "sessions by their first event's device (tickets and CRM have none)"
    );
    for shards in [1, 2, 3] {
        let result = run_live(&inputs, &config, shards, 500);
        assert_eq!(live(&result), expected, "{shards} shards");
        assert_eq!(live_segments(&result), segments, "{shards} shards");
        assert_eq!(result.status.stitch.late, 0);
        assert!(
            result.status.shards.corrected > 0,
            "the replay is out of order"
        );
        assert_eq!(
            result.status.open_customers, 0,
            "all sessions closed at the end"
        );
        assert_eq!(result.status.retained_events, 0);
    }
}

#[test]
fn time_ordered_feed_with_a_short_horizon_equals_batch_and_frees_closed_sessions() {
    let dir = tempfile::tempdir().expect("tmp");
    let files = generate(&dir.path().join("gen"), 600);
    let files = sorted_by_time(&files, &dir.path().join("sorted"));
    let config = Config::builtin();
    let inputs = inputs(&files);
    let expected = batch(&inputs, &config);
    let result = run_live(&inputs, &config, 2, 256);
    assert_eq!(result.status.stitch.late, 0, "each file is in time order");
    assert_eq!(live(&result), expected);
    assert_eq!(live_segments(&result), batch_segments(&inputs, &config));
    assert!(
        result.status.stitch.merges > 0,
        "identities merged customers live"
    );
    assert_eq!(
        result.status.shards.sessions_final as i64, expected.journeys,
        "every session became final and was dropped"
    );
}

fn generic_file(dir: &Path, name: &str, lines: &[&str]) -> FileInput {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n")).expect("write");
    let mut source = SourceConfig::of_kind(SourceKind::Generic);
    source.name = "web".into();
    source
        .fields
        .insert("anonymous_id".into(), OneOrMany::One("anon".into()));
    source
        .fields
        .insert("user_id".into(), OneOrMany::One("user".into()));
    FileInput::new(path, source).expect("input")
}

#[test]
fn late_events_correct_inside_the_horizon_and_are_set_aside_beyond_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let lines = [
        r#"{"customer_id":"c","ts":"2026-01-05T10:00:00Z","touchpoint":"home_view"}"#,
        r#"{"customer_id":"c","ts":"2026-01-05T10:05:00Z","touchpoint":"pricing_view"}"#,
        r#"{"customer_id":"c","ts":"2026-01-05T12:00:00Z","touchpoint":"signup"}"#,
        // 30 minutes behind the watermark, inside the hour of lateness: the 12:00 signup now
        // follows docs in one session.
        r#"{"customer_id":"c","ts":"2026-01-05T11:30:00Z","touchpoint":"docs_view"}"#,
        // Three hours behind: beyond the horizon, stored and counted, not applied.
        r#"{"customer_id":"c","ts":"2026-01-05T09:00:00Z","touchpoint":"ad_click"}"#,
        r#"{"customer_id":"d","ts":"2026-01-05T12:10:00Z","touchpoint":"home_view"}"#,
    ];
    let input = generic_file(dir.path(), "late.ndjson", &lines);
    let mut config = Config::builtin();
    config.journeys.clear();
    let result = run_live(std::slice::from_ref(&input), &config, 2, 1);
    assert_eq!(result.status.stitch.late, 1);
    assert_eq!(result.late.len(), 1);
    // Booked against the one source the file is.
    let sources: Vec<(&str, u64, u64)> = result
        .status
        .sources
        .iter()
        .map(|s| (s.source.as_str(), s.events, s.late))
        .collect();
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert_eq!(
        (sources[0].1, sources[0].2),
        (lines.len() as u64, 1),
        "{sources:?}"
    );
    assert_eq!(
        result.names.touchpoints[result.late[0].touchpoint as usize],
        "ad_click"
    );
    assert_eq!(result.status.shards.corrected, 1);
    let without_late: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.contains("09:00"))
        .collect();
    let reference = generic_file(dir.path(), "reference.ndjson", &without_late);
    let expected = batch(std::slice::from_ref(&reference), &config);
    let got = live(&result);
    assert_eq!(got, expected);
    assert_eq!(got.journeys, 3, "[home, pricing] [docs, signup] [home]");
    assert_eq!(
        got.transitions.get(&("docs_view".into(), "signup".into())),
        Some(&1)
    );
}

#[test]
fn customers_that_merge_mid_session_become_one_journey_on_any_shard() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut lines = Vec::new();
    // Twenty pairs: an anonymous visitor and a known user, seen apart, then linked by one
    // event carrying both ids. Spread over shards, some merges move state between them.
    for i in 0..20 {
        lines.push(format!(
            r#"{{"anon":"a{i}","ts":"2026-01-05T10:00:{i:02}Z","touchpoint":"home_view"}}"#
        ));
        lines.push(format!(
            r#"{{"user":"u{i}","ts":"2026-01-05T10:01:{i:02}Z","touchpoint":"pricing_view"}}"#
        ));
        lines.push(format!(
            r#"{{"anon":"a{i}","user":"u{i}","ts":"2026-01-05T10:02:{i:02}Z","touchpoint":"signup"}}"#
        ));
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let input = generic_file(dir.path(), "merge.ndjson", &lines);
    let mut config = Config::builtin();
    config.journeys.clear();
    let expected = batch(std::slice::from_ref(&input), &config);
    assert_eq!(expected.journeys, 20);
    for shards in [1, 2, 4] {
        let result = run_live(std::slice::from_ref(&input), &config, shards, 1);
        assert_eq!(live(&result), expected, "{shards} shards");
        assert_eq!(result.status.stitch.merges, 20);
        assert_eq!(result.status.shards.merged, 20);
    }
}

#[test]
fn an_unreadable_input_is_refused_with_its_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("broken.parquet");
    std::fs::write(&path, b"not parquet at all").expect("write");
    let config = Config::builtin();
    let input = FileInput::new(path, SourceConfig::of_kind(SourceKind::Generic)).expect("input");
    let dead = DeadLetters::new(dir.path().join("dead.ndjson"), None);
    let err = FileReplay::open(&[input], &options(&config, 10), dead)
        .err()
        .expect("a broken parquet file is refused");
    assert!(err.to_string().contains("broken.parquet"), "{err}");
}

#[test]
fn the_generator_streams_in_time_order_and_stitches_to_the_true_customers() {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = GenOptions {
        customers: 300,
        days: 3,
        seed: 11,
        ..GenOptions::default()
    };
    // The flat layout is the ground truth: events already keyed by the true customer.
    let summary = trailmap_gen::write(
        &JourneyModel::default(),
        &opts,
        dir.path(),
        Layout::Flat,
        OutFormat::Ndjson,
    )
    .expect("gen");
    let truth = FileInput::new(
        summary.files[0].clone(),
        SourceConfig::of_kind(SourceKind::Generic),
    )
    .expect("input");
    let config = Config::builtin();
    // The flat truth has no devices: it is compared without the breakdown.
    let mut whole = config.clone();
    whole.alerts.retain(|_, r| r.breakdown.is_none());
    let expected = batch(std::slice::from_ref(&truth), &whole);

    let source = trailmap_live::GeneratorSource::new(opts, 512);
    let result = run_source(Box::new(source), &config, &PipelineOptions::default());
    assert_eq!(result.status.stitch.late, 0, "events come in time order");
    assert_eq!(result.status.shards.corrected, 0);
    assert!(result.status.stitch.identity_links > 0);
    // Every touchpoint seen carries the stage the model gives it, funnel steps (named at
    // start, before any of their events) too.
    let unstaged: Vec<&String> = result
        .map
        .total()
        .touchpoints
        .iter()
        .filter(|&(&id, c)| c.visits > 0 && result.names.stages[id as usize].is_none())
        .map(|(&id, _)| &result.names.touchpoints[id as usize])
        .collect();
    assert!(unstaged.is_empty(), "no stage for {unstaged:?}");
    assert!(
        result
            .map
            .total()
            .touchpoints
            .iter()
            .filter(|(_, c)| c.visits > 0)
            .count()
            > 15,
        "the traffic reaches most touchpoints"
    );
    let mut got = live(&result);
    let by_device = std::mem::take(&mut got.by_value);
    got.value_maturing.clear();
    assert_eq!(got, expected);
    // The generator's events carry their device kind: checkout splits by it, into parts
    // that add up to the whole.
    let devices: Vec<&str> = by_device.keys().map(|(_, d)| d.as_str()).collect();
    assert_eq!(devices, ["desktop", "mobile", "tablet"]);
    let mut sum = vec![0; 2];
    for reached in by_device.values() {
        for (a, b) in sum.iter_mut().zip(reached) {
            *a += b;
        }
    }
    assert_eq!(sum, expected.funnels["checkout"]);
}

mod random {
    use super::*;
    use proptest::prelude::*;

    /// One random event: an anonymous id and/or a user id, a time, a touchpoint.
    fn event() -> impl Strategy<Value = (Option<u8>, Option<u8>, u32, u8)> {
        (
            proptest::option::of(0u8..12),
            proptest::option::of(0u8..6),
            0u32..(3 * 24 * 60),
            0u8..6,
        )
            .prop_filter("an event needs an identity", |(a, u, _, _)| {
                a.is_some() || u.is_some()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any arrival order, identity links between customers seen apart, any batch size
        /// and shard count: with a horizon longer than the data, the live map equals batch.
        #[test]
        fn random_streams_equal_batch(
            events in proptest::collection::vec(event(), 1..160),
            batch_size in 1usize..40,
            shards in 1usize..4,
        ) {
            let dir = tempfile::tempdir().expect("tmp");
            let touchpoints = ["home_view", "pricing_view", "signup", "trial_start", "purchase", "docs_view"];
            let lines: Vec<String> = events
                .iter()
                .map(|(a, u, minute, tp)| {
                    let mut fields = Vec::new();
                    if let Some(a) = a {
                        fields.push(format!(r#""anon":"a{a}""#));
                    }
                    if let Some(u) = u {
                        fields.push(format!(r#""user":"u{u}""#));
                    }
                    let ts = 1_767_571_200 + i64::from(*minute) * 60;
                    fields.push(format!(r#""ts":{ts}"#));
                    fields.push(format!(r#""touchpoint":"{}""#, touchpoints[*tp as usize]));
                    format!("{{{}}}", fields.join(","))
                })
                .collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            let input = generic_file(dir.path(), "random.ndjson", &lines);
            let mut config = Config::builtin();
            config.sessions.allowed_lateness = Span::from_secs(3600 * 24 * 30);
            config.sessions.max_duration = Span::from_secs(3 * 3600);
            let expected = batch(std::slice::from_ref(&input), &config);
            let result = run_live(std::slice::from_ref(&input), &config, shards, batch_size);
            prop_assert_eq!(result.status.stitch.late, 0);
            prop_assert_eq!(live(&result), expected);
        }
    }
}

#[test]
fn a_durable_source_says_when_everything_read_was_last_stored() {
    let dir = tempfile::tempdir().expect("tmp");
    let files = generate(dir.path(), 200);
    let config = Config::builtin();
    let batches = read_batches(&files, &config, 256, dir.path());
    let source = durable_source("memory://durable-test", batches);
    let before = trailmap_model::time::unix_micros(std::time::SystemTime::now());
    let result = run_source(Box::new(source), &config, &PipelineOptions::default());
    let at = result.status.checkpointed_at.expect("a checkpoint time");
    assert!(at >= before, "{at} < {before}");
    // A source that stores nothing says nothing.
    let plain = run_live(&inputs(&files), &config, 1, 256);
    assert_eq!(plain.status.checkpointed_at, None);
}

/// The files as canonical batches of `size` records (dead letters in `dir`).
fn read_batches(
    files: &[(SourceKind, PathBuf)],
    config: &Config,
    size: usize,
    dir: &Path,
) -> Vec<arrow::array::RecordBatch> {
    let mut batches = Vec::new();
    let mut dead = DeadLetters::new(dir.join("dead.ndjson"), None);
    file::read_all(&inputs(files), &options(config, size), &mut dead, |b| {
        batches.push(b);
        Ok(())
    })
    .expect("read");
    batches
}

/// `batches` replayed through the store at `data_dir`, resumed where it was, a checkpoint
/// after every batch.
fn durable_source(
    data_dir: &str,
    batches: Vec<arrow::array::RecordBatch>,
) -> trailmap_live::DurableSource {
    let store = trailmap_store::Store::open(data_dir).expect("store");
    let checkpoint = trailmap_live::durable::resume(&store).expect("resume");
    trailmap_live::DurableSource::new(
        store,
        checkpoint,
        Box::new(trailmap_live::BatchReplay::new(batches)),
        std::time::Duration::ZERO,
    )
}

/// The pipeline on `batches` through a durable store in `data`, a checkpoint and a cut
/// after every batch, covered segments compacted by 1000 rows.
fn run_durable(
    data: &Path,
    batches: Vec<arrow::array::RecordBatch>,
    config: &Config,
    shards: usize,
) -> LiveResult {
    let source = durable_source(data.to_str().expect("utf-8"), batches)
        .keep_state_every(std::time::Duration::ZERO)
        .compact_to(1000);
    let options = PipelineOptions {
        shards,
        channel_batches: 2,
    };
    run_source(Box::new(source), config, &options)
}

#[test]
fn a_restart_from_the_kept_state_equals_a_clean_run_without_reading_what_it_covers() {
    let dir = tempfile::tempdir().expect("tmp");
    let files = generate(&dir.path().join("gen"), 400);
    let files = sorted_by_time(&files, &dir.path().join("sorted"));
    let config = Config::builtin();
    let batches = read_batches(&files, &config, 200, dir.path());
    let clean = trailmap_live::BatchReplay::new(batches.clone());
    let options = PipelineOptions {
        shards: 2,
        channel_batches: 2,
    };
    let clean = run_source(Box::new(clean), &config, &options);
    assert!(
        clean.status.stitch.late > 0,
        "the files follow each other: late events"
    );
    let half = batches.len() / 2;

    // Stopped halfway, restarted with the rest: the restart starts from the kept state.
    let data = dir.path().join("data");
    run_durable(&data, batches[..half].to_vec(), &config, 2);
    let store = trailmap_store::Store::open(data.to_str().expect("utf-8")).expect("store");
    let checkpoint = store
        .read_checkpoint()
        .expect("read")
        .expect("a checkpoint");
    let state = store
        .read_state(&checkpoint)
        .expect("a usable state")
        .expect("a kept state");
    assert!(state.through > 1, "kept as of segment {}", state.through);
    // Small segments it covers were compacted, the old files removed.
    assert!(
        checkpoint.segments.iter().any(|s| s.first.is_some()),
        "compacted: {:?}",
        checkpoint.segments
    );
    assert!(
        checkpoint.segments.len() < half,
        "{} segments",
        checkpoint.segments.len()
    );
    let files = std::fs::read_dir(data.join("segments"))
        .expect("segments")
        .count();
    assert_eq!(files, checkpoint.segments.len(), "no file left behind");
    // What it covers is never read again: without those segments, a replay would fail.
    for segment in checkpoint
        .segments
        .iter()
        .filter(|s| s.seq <= state.through)
    {
        std::fs::remove_file(data.join(segment.file())).expect("remove a covered segment");
    }
    let restarted = run_durable(&data, batches[half..].to_vec(), &config, 2);
    assert_eq!(live_segments(&restarted), live_segments(&clean));
    assert_eq!(restarted.status.stitch, clean.status.stitch);
    assert_eq!(restarted.late, clean.late);
    assert_eq!(restarted.status.shards, clean.status.shards);

    // A state taken with other settings (here: shards) is not used; everything is replayed,
    // compacted segments included.
    let other = dir.path().join("other");
    run_durable(&other, batches[..half].to_vec(), &config, 2);
    let replayed = run_durable(&other, batches[half..].to_vec(), &config, 1);
    assert_eq!(live_segments(&replayed), live_segments(&clean));
    assert_eq!(replayed.late, clean.late);
}
