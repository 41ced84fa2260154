//! The generator against its own promises: determinism, the published chain, time order,
//! identities that stitch into exactly one customer each, and honest row counts.

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use trailmap_gen::model::Emit;
use trailmap_gen::{
    GenOptions, GenSummary, Generator, JourneyModel, Layout, OutFormat, RecordKind, write,
};
use trailmap_model::config::SourceKind;
use trailmap_model::{Catalog, Config, IdentityKind};

fn opts(customers: u64, seed: u64) -> GenOptions {
    GenOptions {
        customers,
        seed,
        ..GenOptions::default()
    }
}

fn generate(dir: &Path, o: &GenOptions, layout: Layout, format: OutFormat) -> GenSummary {
    write(&JourneyModel::default(), o, dir, layout, format).expect("generation succeeds")
}

fn ndjson(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("readable output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

const COMBOS: [(Layout, OutFormat); 4] = [
    (Layout::Sources, OutFormat::Ndjson),
    (Layout::Sources, OutFormat::Parquet),
    (Layout::Flat, OutFormat::Ndjson),
    (Layout::Flat, OutFormat::Parquet),
];

fn contents(files: &[PathBuf]) -> Vec<Vec<u8>> {
    files
        .iter()
        .map(|f| std::fs::read(f).expect("readable output"))
        .collect()
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    for (layout, format) in COMBOS {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let a = generate(dirs[0].path(), &opts(700, 7), layout, format);
        let b = generate(dirs[1].path(), &opts(700, 7), layout, format);
        let c = generate(dirs[2].path(), &opts(700, 8), layout, format);
        assert!(a.events > 0);
        assert_eq!(
            contents(&a.files),
            contents(&b.files),
            "{layout:?} {format:?}"
        );
        assert_ne!(
            contents(&a.files),
            contents(&c.files),
            "{layout:?} {format:?}"
        );
    }
}

#[test]
fn journeys_do_not_depend_on_generation_order() {
    let model = JourneyModel::default();
    let o = opts(50, 3);
    let forward: Vec<_> = Generator::new(model.clone(), o).collect();
    for i in (0..50).rev() {
        assert_eq!(model.journey(&o, i), forward[i as usize]);
    }
}

/// Counts of one row of the chain: next touchpoint (or exit) → times seen.
#[derive(Default)]
struct Row {
    next: BTreeMap<Option<String>, u64>,
    total: u64,
}

#[test]
fn observed_transitions_match_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(20_000, 11);
    let summary = generate(dir.path(), &o, Layout::Flat, OutFormat::Ndjson);
    let model = JourneyModel::default();
    let truth = model.truth(&o);

    // The flat file lists each customer's events together and in time order.
    let mut journeys: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for v in ndjson(&summary.files[0]) {
        let customer = str_at(&v, "/customer_id").unwrap().to_string();
        let ts = str_at(&v, "/ts").unwrap().to_string();
        let tp = str_at(&v, "/touchpoint").unwrap().to_string();
        match journeys.last_mut() {
            Some((c, events)) if *c == customer => events.push((ts, tp)),
            _ => journeys.push((customer, vec![(ts, tp)])),
        }
    }
    assert_eq!(
        journeys.len(),
        20_000,
        "every customer has at least one touchpoint"
    );

    let mut rows: HashMap<String, Row> = HashMap::new();
    let mut starts: BTreeMap<String, u64> = BTreeMap::new();
    for (customer, events) in &journeys {
        for w in events.windows(2) {
            // Same-width ISO strings in UTC: lexical order is time order.
            assert!(w[0].0 < w[1].0, "{customer}: {} !< {}", w[0].0, w[1].0);
        }
        *starts.entry(events[0].1.clone()).or_default() += 1;
        for (k, (_, from)) in events.iter().enumerate() {
            let next = match events.get(k + 1) {
                Some((_, to)) => Some(to.clone()),
                // A journey cut at max_steps never drew its next step.
                None if events.len() == o.max_steps as usize => continue,
                None => None,
            };
            let row = rows.entry(from.clone()).or_default();
            *row.next.entry(next).or_default() += 1;
            row.total += 1;
        }
    }

    let mut expected: HashMap<(String, Option<String>), f64> = HashMap::new();
    for t in &truth.transitions {
        expected.insert((t.from.clone(), Some(t.to.clone())), t.p);
    }
    for e in &truth.exit {
        expected.insert((e.touchpoint.clone(), None), e.p);
    }
    let mut checked_rows = 0;
    for (from, row) in &rows {
        if row.total < 2_000 {
            continue;
        }
        checked_rows += 1;
        let targets = truth
            .touchpoints
            .iter()
            .map(|t| Some(t.name.clone()))
            .chain([None]);
        for to in targets {
            let p = expected
                .get(&(from.clone(), to.clone()))
                .copied()
                .unwrap_or(0.0);
            let seen = row.next.get(&to).copied().unwrap_or(0) as f64 / row.total as f64;
            assert!(
                (seen - p).abs() < 0.02,
                "{from} → {to:?}: observed {seen:.4} over {} vs p = {p}",
                row.total
            );
        }
    }
    assert!(
        checked_rows >= 15,
        "only {checked_rows} rows had enough data"
    );

    for s in &truth.start {
        let seen = starts.get(&s.touchpoint).copied().unwrap_or(0) as f64 / 20_000.0;
        assert!(
            (seen - s.p).abs() < 0.02,
            "start {}: {seen} vs {}",
            s.touchpoint,
            s.p
        );
    }
    assert_eq!(
        starts.values().sum::<u64>(),
        truth
            .start
            .iter()
            .map(|s| starts.get(&s.touchpoint).copied().unwrap_or(0))
            .sum::<u64>(),
        "journeys start only where the truth says they may"
    );
}

#[test]
fn time_increases_and_back_office_records_follow_identification() {
    let model = JourneyModel::default();
    let mut with_tickets = 0;
    for journey in Generator::new(model, opts(5_000, 5)) {
        for w in journey.events.windows(2) {
            assert!(
                w[0].ts_micros < w[1].ts_micros,
                "customer {}",
                journey.index
            );
        }
        assert!(journey.events.iter().all(|e| e.ts_micros % 1_000 == 0));
        // Known = an email reached the clickstream (demo form, or signup's identify).
        let known_at = journey
            .events
            .iter()
            .position(|e| e.source == SourceKind::Clickstream && e.email.is_some());
        for (k, e) in journey.events.iter().enumerate() {
            if e.source != SourceKind::Clickstream {
                with_tickets += 1;
                assert!(
                    known_at.is_some_and(|at| at < k),
                    "customer {}: {:?} before they were known",
                    journey.index,
                    e.touchpoint
                );
            }
        }
    }
    assert!(
        with_tickets > 1_000,
        "tickets and CRM records are exercised"
    );
}

#[test]
fn raw_values_classify_back_to_their_touchpoints() {
    let catalog = Catalog::compile(&Config::builtin().catalog).expect("default catalog");
    let model = JourneyModel::default();
    let mut seen = std::collections::HashSet::new();
    for journey in Generator::new(model.clone(), opts(3_000, 9)) {
        for e in journey
            .events
            .iter()
            .filter(|e| e.kind != RecordKind::Identify)
        {
            let kind = e.source.as_str();
            let c = catalog
                .classify(kind, kind, &e.raw)
                .unwrap_or_else(|| panic!("{kind} `{}` dropped", e.raw));
            assert_eq!(Some(&*c.touchpoint), e.touchpoint, "{kind} `{}`", e.raw);
            assert_eq!(c.stage.as_deref(), e.stage, "{kind} `{}`", e.raw);
            seen.insert(e.touchpoint);
        }
    }
    assert_eq!(
        seen.len(),
        model.touchpoints().len(),
        "every touchpoint occurs"
    );
}

/// Union-find over identity values, namespaced by kind.
#[derive(Default)]
struct Links {
    ids: HashMap<(IdentityKind, String), usize>,
    parent: Vec<usize>,
}

impl Links {
    fn node(&mut self, kind: IdentityKind, raw: &str) -> usize {
        let value = kind
            .normalize(raw)
            .expect("no blank identifiers")
            .into_owned();
        let next = self.parent.len();
        let id = *self.ids.entry((kind, value)).or_insert(next);
        if id == next {
            self.parent.push(next);
        }
        id
    }

    fn root(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// Links all identifiers of one record; returns its component.
    fn record(&mut self, ids: &[(IdentityKind, &str)]) -> usize {
        assert!(!ids.is_empty(), "a record without any identifier");
        let nodes: Vec<usize> = ids.iter().map(|(k, v)| self.node(*k, v)).collect();
        for n in &nodes[1..] {
            let (a, b) = (self.root(nodes[0]), self.root(*n));
            self.parent[b] = a;
        }
        nodes[0]
    }
}

#[test]
fn each_customer_stitches_into_exactly_one_component() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(3_000, 21);
    let summary = generate(dir.path(), &o, Layout::Sources, OutFormat::Ndjson);

    // The true owner of every record, from the same generator the writer used.
    let mut owner: HashMap<String, u64> = HashMap::new();
    let mut anonymous_customers = 0;
    for journey in Generator::new(JourneyModel::default(), o) {
        let known = journey.events.iter().any(|e| e.email.is_some());
        if !known {
            anonymous_customers += 1;
            let mut devices: Vec<_> = journey.events.iter().map(|e| &e.anonymous_id).collect();
            devices.dedup();
            assert_eq!(devices.len(), 1, "an unknown customer keeps one device");
        }
        for e in &journey.events {
            owner.insert(e.event_id.clone(), journey.index);
        }
    }
    assert!(anonymous_customers > 100);

    let mut links = Links::default();
    let mut records: Vec<(u64, usize)> = Vec::new();
    let mut odd_case = 0;
    for file in &summary.files {
        let source = file.file_stem().unwrap().to_str().unwrap();
        let fields: &[(IdentityKind, &str)] = match source {
            "clickstream" => &[
                (IdentityKind::AnonymousId, "/anonymousId"),
                (IdentityKind::UserId, "/userId"),
                (IdentityKind::Email, "/traits/email"),
                (IdentityKind::Email, "/context/traits/email"),
            ],
            "ticket" => &[
                (IdentityKind::TicketId, "/ticket_id"),
                (IdentityKind::Email, "/requester_email"),
            ],
            "crm" => &[
                (IdentityKind::ContactId, "/contact_id"),
                (IdentityKind::Email, "/email"),
                (IdentityKind::UserId, "/user_id"),
            ],
            other => panic!("unexpected file {other}"),
        };
        let id_field = if source == "clickstream" {
            "/messageId"
        } else {
            "/event_id"
        };
        for v in ndjson(file) {
            let ids: Vec<(IdentityKind, &str)> = fields
                .iter()
                .filter_map(|(k, p)| str_at(&v, p).map(|s| (*k, s)))
                .collect();
            odd_case += ids
                .iter()
                .filter(|(k, s)| *k == IdentityKind::Email && s.contains('C'))
                .count();
            let event_id = str_at(&v, id_field).unwrap();
            records.push((owner[event_id], links.record(&ids)));
        }
    }
    assert_eq!(records.len() as u64, summary.events);
    assert!(odd_case > 0, "some emails are written in another case");

    let mut component_of: HashMap<u64, usize> = HashMap::new();
    let mut customer_of: HashMap<usize, u64> = HashMap::new();
    for (customer, node) in records {
        let root = links.root(node);
        let c = *component_of.entry(customer).or_insert(root);
        assert_eq!(c, root, "customer {customer} is split");
        let owner = *customer_of.entry(root).or_insert(customer);
        assert_eq!(
            owner, customer,
            "customers {owner} and {customer} are merged"
        );
    }
    assert_eq!(component_of.len() as u64, o.customers);
}

fn parquet_rows(path: &Path) -> i64 {
    let file = std::fs::File::open(path).unwrap();
    SerializedFileReader::new(file)
        .expect("valid parquet")
        .metadata()
        .file_metadata()
        .num_rows()
}

#[test]
fn summary_counts_what_the_files_hold() {
    for (layout, format) in COMBOS {
        let dir = tempfile::tempdir().unwrap();
        let s = generate(dir.path(), &opts(1_500, 4), layout, format);
        let mut total = 0u64;
        let mut identifies = 0u64;
        for file in &s.files {
            total += match format {
                OutFormat::Ndjson => {
                    let lines = ndjson(file);
                    identifies += lines
                        .iter()
                        .filter(|v| str_at(v, "/type") == Some("identify"))
                        .count() as u64;
                    lines.len() as u64
                }
                OutFormat::Parquet => parquet_rows(file) as u64,
            };
        }
        assert_eq!(s.events, total, "{layout:?} {format:?}");
        assert_eq!(s.events, s.events_by_source.values().sum::<u64>());
        let names: Vec<_> = s
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        let ext = format.extension();
        match layout {
            Layout::Flat => {
                assert_eq!(names, [format!("events.{ext}")]);
                assert_eq!(s.identity_records, 0);
            }
            Layout::Sources => {
                assert_eq!(
                    names,
                    [
                        format!("clickstream.{ext}"),
                        format!("ticket.{ext}"),
                        format!("crm.{ext}")
                    ]
                );
                assert!(s.identity_records > 0);
                if format == OutFormat::Ndjson {
                    assert_eq!(s.identity_records, identifies);
                }
            }
        }
    }
}

#[test]
fn clickstream_records_have_the_segment_shape() {
    let dir = tempfile::tempdir().unwrap();
    let s = generate(
        dir.path(),
        &opts(500, 2),
        Layout::Sources,
        OutFormat::Ndjson,
    );
    let clicks = ndjson(&s.files[0]);
    for v in &clicks {
        let ts = str_at(v, "/timestamp").unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
        match str_at(v, "/type").unwrap() {
            "page" => {
                assert!(v.get("event").is_none());
                assert!(str_at(v, "/properties/path").unwrap().starts_with('/'));
                assert!(str_at(v, "/name").is_some());
            }
            "track" => assert!(str_at(v, "/event").is_some()),
            "identify" => {
                assert!(v.get("event").is_none());
                assert!(str_at(v, "/userId").is_some() && str_at(v, "/traits/email").is_some());
            }
            other => panic!("type {other}"),
        }
    }
    let signups: Vec<_> = clicks
        .iter()
        .filter(|v| str_at(v, "/event") == Some("Signed Up"))
        .collect();
    assert!(!signups.is_empty());
    assert!(
        signups
            .iter()
            .all(|v| str_at(v, "/userId").is_some() && str_at(v, "/anonymousId").is_some())
    );
}

#[test]
fn truth_file_describes_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let model = JourneyModel::default();
    let o = opts(10, 99);
    let path = dir.path().join("truth.json");
    model.truth(&o).write_truth(&path).unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["seed"], 99);
    assert_eq!(v["customers"], 10);
    let touchpoints = v["touchpoints"].as_array().unwrap();
    assert_eq!(touchpoints.len(), model.touchpoints().len());
    let ticket = touchpoints
        .iter()
        .find(|t| t["name"] == "ticket_opened")
        .unwrap();
    assert_eq!(ticket["source"], "ticket");
    assert_eq!(ticket["stage"], "support");
    let start: f64 = v["start"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["p"].as_f64().unwrap())
        .sum();
    assert!((start - 1.0).abs() < 1e-9);
    for t in model.touchpoints() {
        let out: f64 = v["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["from"] == t.name)
            .map(|r| r["p"].as_f64().unwrap())
            .sum();
        let exit = v["exit"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["touchpoint"] == t.name)
            .unwrap()["p"]
            .as_f64()
            .unwrap();
        assert!((out + exit - 1.0).abs() < 1e-9, "{}", t.name);
        if let Emit::Ticket { .. } = t.emit {
            assert!(t.emit.channel_label().contains("chat"));
        }
    }
}

/// A dip changes the steps drawn at its times, and only those: checkout → purchase while it
/// lasts happens at the dipped rate, before and after at the model's.
#[test]
fn a_dip_changes_the_steps_taken_while_it_lasts() {
    let o = GenOptions {
        customers: 40_000,
        days: 9,
        ..opts(0, 7)
    };
    let day = 86_400_000_000;
    let (starts, ends) = (o.start_micros + 3 * day, o.start_micros + 6 * day);
    let dipped = JourneyModel::default()
        .with_dip("checkout_view", "purchase", 0.25, starts, ends)
        .expect("a valid dip");
    // (checkouts, purchases right after) before, during and after the dip.
    let mut tally = [(0u64, 0u64); 3];
    for journey in Generator::new(dipped, o) {
        let tps: Vec<(&str, i64)> = journey
            .events
            .iter()
            .filter_map(|e| e.touchpoint.map(|t| (t, e.ts_micros)))
            .collect();
        for w in tps.windows(2) {
            if w[0].0 != "checkout_view" {
                continue;
            }
            let period = match w[0].1 {
                t if t < starts => 0,
                t if t < ends => 1,
                _ => 2,
            };
            tally[period].0 += 1;
            tally[period].1 += u64::from(w[1].0 == "purchase");
        }
    }
    let rate = |(n, k): (u64, u64)| k as f64 / n.max(1) as f64;
    assert!(tally.iter().all(|&(n, _)| n > 800), "{tally:?}");
    // Of the checkouts followed by anything: purchase 0.65 of the 0.82 that go on, a
    // quarter of the 0.65 during the dip (the rest exits).
    let (normal, dipped) = (0.65 / 0.82, 0.1625 / (0.82 - 0.65 + 0.1625));
    assert!((rate(tally[0]) - normal).abs() < 0.04, "{tally:?}");
    assert!((rate(tally[1]) - dipped).abs() < 0.04, "{tally:?}");
    assert!((rate(tally[2]) - normal).abs() < 0.04, "{tally:?}");
    assert!(
        JourneyModel::default()
            .with_dip("checkout_view", "churned", 0.5, starts, ends)
            .is_err(),
        "a transition the model never takes cannot dip"
    );
}
