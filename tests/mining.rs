//! Mining results against the peers, on real logs: the directly-follows graph, starts, ends
//! and variants against pm4py, funnel levels against ClickHouse `windowFunnel`, every mode.
//! The peers' answers are recorded in tests/fixtures/peers by `record.sh` (pm4py and chdb
//! from PyPI), with the script that produced them.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn fixture(name: &str) -> Value {
    let path = root().join("tests/fixtures/peers").join(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if name.ends_with(".gz") {
        serde_json::from_reader(flate2::read::GzDecoder::new(file)).unwrap()
    } else {
        serde_json::from_reader(file).unwrap()
    }
}

type Counts = BTreeMap<String, u64>;

fn counts(rows: &Value, key: impl Fn(&Value) -> String) -> Counts {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (key(r), r["count"].as_u64().unwrap()))
        .collect()
}

fn transition(r: &Value) -> String {
    format!(
        "{} -> {}",
        r["from"].as_str().unwrap(),
        r["to"].as_str().unwrap()
    )
}

fn touchpoint(r: &Value) -> String {
    r["touchpoint"].as_str().unwrap().to_string()
}

fn path(r: &Value) -> String {
    let steps: Vec<&str> = r["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    steps.join(" | ")
}

/// `trailmap paths` equals pm4py's `discover_dfg` and `get_variants` on the same log.
fn assert_paths_equal_pm4py(input: &[&str], fixture_name: &str) -> Value {
    let expected = fixture(fixture_name);
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dead.ndjson");
    let mut args = vec![
        "paths",
        "--format",
        "json",
        "--top-variants",
        "0",
        "--dead-letter",
        s(&dl),
    ];
    args.extend_from_slice(input);
    let got = json(&args);
    assert_eq!(got["events"], expected["events"]);
    assert_eq!(got["journeys"], expected["cases"]);
    assert_eq!(
        counts(&got["transitions"], transition),
        counts(&expected["transitions"], transition)
    );
    assert_eq!(
        counts(&got["starts"], touchpoint),
        counts(&expected["starts"], touchpoint)
    );
    assert_eq!(
        counts(&got["ends"], touchpoint),
        counts(&expected["ends"], touchpoint)
    );
    let variants = counts(&got["variants"], path);
    assert_eq!(
        got["distinct_variants"].as_u64().unwrap() as usize,
        variants.len()
    );
    assert_eq!(variants, counts(&expected["variants"], path));
    got
}

#[test]
fn bpic_2012_paths_equal_pm4py() {
    let bpic = real("bpic2012.xes.gz");
    let got = assert_paths_equal_pm4py(&["--input", s(&bpic)], "bpic2012_pm4py.json.gz");
    // The facts the data's README states, independent of the fixture.
    let transitions = got["transitions"].as_array().unwrap();
    assert_eq!(transitions.len(), 125);
    assert_eq!(
        transitions
            .iter()
            .map(|t| t["count"].as_u64().unwrap())
            .sum::<u64>(),
        249_113
    );
    assert_eq!(
        got["starts"],
        serde_json::json!([{"touchpoint": "A_SUBMITTED", "count": 13_087}])
    );
    assert_eq!(got["ends"].as_array().unwrap().len(), 11);
    assert_eq!(got["distinct_variants"], 4_366);
    // Durations: an exact mean, quantiles inside it range.
    let t = &transitions[0];
    let (median, p90) = (
        t["median_seconds"].as_f64().unwrap(),
        t["p90_seconds"].as_f64().unwrap(),
    );
    assert!(0.0 <= median && median <= p90, "{t}");
}

#[test]
fn sepsis_paths_equal_pm4py() {
    let sepsis = real("sepsis.csv");
    assert_paths_equal_pm4py(
        &[
            "--input",
            s(&sepsis),
            "--customer",
            "Case ID",
            "--touchpoint",
            "Activity",
            "--time",
            "Complete Timestamp",
            "--time-format",
            "%Y/%m/%d %H:%M:%S%.f",
        ],
        "sepsis_pm4py.json.gz",
    );
}

fn taobao_funnel(steps: &str, mode: &str) -> std::process::Output {
    let taobao = real("UserBehavior_sample.csv");
    run(&[
        "funnel",
        "--format",
        "json",
        "--input",
        s(&taobao),
        "--no-header",
        "--columns",
        "user_id,item_id,category_id,behavior,ts",
        "--customer",
        "user_id",
        "--touchpoint",
        "behavior",
        "--time",
        "ts",
        "--time-unit",
        "s",
        "--steps",
        steps,
        "--window",
        "1d",
        "--mode",
        mode,
    ])
}

/// The level distribution of `trailmap funnel` equals ClickHouse `windowFunnel` for both
/// Taobao funnels in every mode ClickHouse accepts, and a mode ClickHouse refuses is refused.
#[test]
fn taobao_funnels_equal_clickhouse_in_every_mode() {
    let expected = fixture("taobao_window_funnel.json");
    let mut checked = 0;
    for f in expected["funnels"].as_array().unwrap() {
        let steps: Vec<&str> = f["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let mode = f["mode"].as_str().unwrap();
        let out = taobao_funnel(&steps.join(","), mode);
        if f.get("error").is_some() {
            assert!(
                !out.status.success(),
                "mode {mode} should be refused as ClickHouse does"
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("strict_order"), "{err}");
            continue;
        }
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        let levels: Vec<u64> = (0..=steps.len())
            .map(|k| f["levels"][k.to_string()].as_u64().unwrap())
            .collect();
        assert_eq!(got["customers"], expected["users"]);
        assert_eq!(
            got["levels"],
            serde_json::json!(levels),
            "{} in mode `{mode}`",
            steps.join(" → ")
        );
        // `reached` is the running sum of the levels from the deepest step up.
        for (k, step) in got["steps"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                step["reached"].as_u64().unwrap(),
                levels[k + 1..].iter().sum::<u64>()
            );
        }
        checked += 1;
    }
    assert!(checked >= 14, "only {checked} funnel/mode pairs recorded");
}

/// Five customers worked out by hand: c1 converts, c2 stops after the trial, c3 signed up
/// inside the window's reach of the data's end (maturing), c4 never enters, c5's window
/// ends exactly at the data's end (so it dropped, not maturing).
const JOURNEYS_CSV: &str = "\
customer_id,ts,touchpoint,channel,plan
c1,2026-01-01T09:00:00Z,signup,web,pro
c1,2026-01-01T10:00:00Z,trial_start,web,pro
c1,2026-01-03T09:00:00Z,purchase,web,pro
c2,2026-01-01T09:00:00Z,signup,email,free
c2,2026-01-02T09:00:00Z,trial_start,email,free
c2,2026-01-02T09:05:00Z,help_view,web,free
c3,2026-01-20T09:00:00Z,signup,web,free
c4,2026-01-05T09:00:00Z,home_view,web,free
c5,2026-01-06T09:00:00Z,signup,web,free
c5,2026-01-06T09:30:00Z,ticket_opened,chat,free
";

fn hand_made(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journeys.csv");
    std::fs::write(&path, JOURNEYS_CSV).unwrap();
    let dl = dir.path().join("dead.ndjson");
    let mut all = args.to_vec();
    all.extend([
        "--input",
        s(&path),
        "--dead-letter",
        s(&dl),
        "--format",
        "json",
    ]);
    json(&all)
}

#[test]
fn funnel_report_steps_breakdown_trend_and_maturing() {
    let v = hand_made(&[
        "funnel",
        "--journey",
        "trial_to_purchase",
        "--breakdown",
        "plan",
        "--trend",
        "day",
    ]);
    assert_eq!(v["customers"], 5);
    assert_eq!(v["levels"], serde_json::json!([1, 2, 1, 1]));
    assert_eq!(v["as_of"], "2026-01-20T09:00:00Z");
    let steps = v["steps"].as_array().unwrap();
    let field = |k: usize, f: &str| steps[k][f].clone();
    assert_eq!(
        steps
            .iter()
            .map(|s| s["reached"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![4, 2, 1]
    );
    // Of the two that signed up and did not start a trial, c3 is still inside its window.
    assert_eq!(
        (field(1, "dropped"), field(1, "maturing")),
        (1.into(), 1.into())
    );
    assert_eq!(field(2, "conversion_from_previous"), 0.5);
    assert_eq!(field(2, "conversion_from_first"), 0.25);
    assert_eq!(field(1, "time_from_previous")["median_seconds"], 3600.0);
    assert_eq!(field(1, "time_from_previous")["mean_seconds"], 45_000.0);
    assert_eq!(field(2, "time_from_first")["median_seconds"], 172_800.0);
    assert_eq!(
        field(0, "next_after_dropoff"),
        serde_json::json!([{"touchpoint": "ticket_opened", "count": 1}])
    );
    assert_eq!(
        field(1, "next_after_dropoff"),
        serde_json::json!([{"touchpoint": "help_view", "count": 1}])
    );
    let bins = field(2, "time_to_convert_histogram");
    assert_eq!(
        bins.as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum::<u64>(),
        1
    );
    assert_eq!(v["breakdown_by"], "plan");
    let by: BTreeMap<String, (u64, u64)> = v["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["value"].as_str().unwrap().to_string(),
                (
                    b["entered"].as_u64().unwrap(),
                    b["converted"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        by,
        BTreeMap::from([("free".into(), (3, 0)), ("pro".into(), (1, 1))])
    );
    let trend: Vec<(String, u64, u64, u64)> = v["trend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["period"].as_str().unwrap().into(),
                t["entered"].as_u64().unwrap(),
                t["converted"].as_u64().unwrap(),
                t["maturing"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        trend,
        vec![
            ("2026-01-01".into(), 2, 1, 0),
            ("2026-01-06".into(), 1, 0, 0),
            ("2026-01-20".into(), 1, 0, 1)
        ]
    );
    // A breakdown by a column takes the first step's event: c2 signed up by email.
    let v = hand_made(&[
        "funnel",
        "--steps",
        "signup,trial_start,purchase",
        "--breakdown",
        "channel",
        "--top",
        "1",
    ]);
    let rows = v["breakdown"].as_array().unwrap();
    assert_eq!(
        (rows[0]["value"].as_str(), rows[0]["entered"].as_u64()),
        (Some("web"), Some(3))
    );
    assert_eq!(
        (rows[1]["value"].as_str(), rows[1]["entered"].as_u64()),
        (Some("other"), Some(1))
    );
    // A later --as-of lets c3's window elapse: it becomes a drop-off.
    let v = hand_made(&[
        "funnel",
        "--journey",
        "trial_to_purchase",
        "--as-of",
        "2026-03-01T00:00:00Z",
    ]);
    assert_eq!(
        (
            v["steps"][1]["dropped"].as_u64(),
            v["steps"][1]["maturing"].as_u64()
        ),
        (Some(2), Some(0))
    );
    // Exclusions and attempts.
    let v = hand_made(&[
        "funnel",
        "--steps",
        "signup,trial_start",
        "--exclude",
        "ticket_opened,help_view",
    ]);
    assert_eq!(
        v["excluded"], 0,
        "exclusions after the last step do not count"
    );
    let v = hand_made(&[
        "funnel",
        "--steps",
        "signup,ticket_opened",
        "--exclude",
        "home_view",
    ]);
    assert_eq!(v["levels"], serde_json::json!([1, 3, 1]));
    let v = hand_made(&[
        "funnel",
        "--steps",
        "signup,trial_start",
        "--count",
        "attempts",
    ]);
    assert_eq!(
        (v["count"].as_str(), v["attempts"].as_u64()),
        (Some("attempts"), Some(4))
    );
}

const THIRTY_THREE: &str =
    "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,t,u,v,w,x,y,z,aa,bb,cc,dd,ee,ff,gg";

#[test]
fn funnel_flags_are_checked_before_reading() {
    for (args, message) in [
        (vec!["funnel"], "--steps a,b,c or --journey NAME"),
        (vec!["funnel", "--journey", "nope"], "no such journey"),
        (
            vec!["funnel", "--steps", "a,b", "--mode", "strictest"],
            "not a funnel mode",
        ),
        (
            vec!["funnel", "--steps", "a,b", "--order", "sideways"],
            "ordered, strict or unordered",
        ),
        (
            vec!["funnel", "--steps", "a,b", "--trend", "hour"],
            "day or week",
        ),
        (
            vec!["funnel", "--steps", "a,b", "--window", "0"],
            "longer than 0",
        ),
        (
            vec!["funnel", "--steps", "a,b,c", "--min-gap", "1h"],
            "one per step after the first",
        ),
        (
            vec!["funnel", "--steps", THIRTY_THREE],
            "a funnel has 1 to 32",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--input", "/nonexistent/never-read.csv"]);
        let out = run(&all);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

#[test]
fn paths_json_csv_and_trees() {
    let v = hand_made(&["paths"]);
    assert_eq!(
        (v["events"].as_u64(), v["journeys"].as_u64()),
        (Some(10), Some(5))
    );
    let total: u64 = v["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 10 - 5);
    assert_eq!(
        v["starts"][0],
        serde_json::json!({"touchpoint": "signup", "count": 4})
    );
    assert_eq!(v["variants"].as_array().unwrap().len(), 5);
    // CSV: the transitions, one per line.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journeys.csv");
    std::fs::write(&path, JOURNEYS_CSV).unwrap();
    let out = run(&[
        "paths",
        "--input",
        s(&path),
        "--format",
        "csv",
        "--dead-letter",
        s(&dir.path().join("dl")),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("from,to,count,mean_seconds,median_seconds,p90_seconds")
    );
    assert_eq!(lines.count(), 4, "four distinct transitions");
    assert!(
        text.contains("signup,trial_start,2,45000.000,3600.000,86400.000"),
        "{text}"
    );
    // Trees: after the first signup, and back from help_view.
    let tree = hand_made(&["paths", "--from", "signup"]);
    assert_eq!(tree["journeys"], 4);
    let nodes = tree["nodes"].as_array().unwrap();
    let node = |tp: &str| {
        nodes
            .iter()
            .find(|n| n["touchpoint"] == tp)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            node("trial_start")["count"].as_u64(),
            node("trial_start")["step"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(node("purchase")["parent"], node("trial_start")["id"]);
    let tree = hand_made(&["paths", "--from", "signup", "--budget", "1"]);
    assert!(
        tree["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["touchpoint"] == "other" && n["count"] == 1)
    );
    let back = hand_made(&["paths", "--to", "help_view"]);
    assert_eq!(back["direction"], "to");
    assert_eq!(back["nodes"].as_array().unwrap().len(), 3);
    let out = run(&[
        "paths",
        "--input",
        s(&path),
        "--from",
        "nowhere",
        "--dead-letter",
        s(&dir.path().join("dl")),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no event has this touchpoint"));
}

#[test]
fn dropoffs_with_a_goal_and_funnel_steps() {
    let v = hand_made(&[
        "dropoffs",
        "--goal",
        "purchase",
        "--journey",
        "trial_to_purchase",
    ]);
    assert_eq!(
        (v["journeys"].as_u64(), v["converted"].as_u64()),
        (Some(5), Some(1))
    );
    let rows: BTreeMap<String, Value> = v["touchpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["touchpoint"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    assert_eq!(rows["signup"]["journeys"], 4);
    assert_eq!(rows["signup"]["exits"], 1);
    assert_eq!(rows["signup"]["exit_rate"], 0.25);
    assert_eq!(rows["signup"]["abandoned"], 3);
    assert_eq!(
        rows.values()
            .map(|r| r["exits"].as_u64().unwrap())
            .sum::<u64>(),
        5
    );
    assert_eq!(v["last_before_abandon"].as_array().unwrap().len(), 4);
    assert_eq!(v["steps"][1]["next"][0]["touchpoint"], "help_view");
    // Without a goal the contract is the per-touchpoint rows alone.
    let v = hand_made(&["dropoffs"]);
    let row = &v["touchpoints"][0];
    assert!(row.get("abandoned").is_none());
    for key in ["touchpoint", "journeys", "exits", "exit_rate"] {
        assert!(row.get(key).is_some(), "{key}");
    }
}

#[test]
fn kpis_met_breached_and_by_channel() {
    let v = hand_made(&["kpis", "--kpi", "ticket_resolution"]);
    let k = &v[0];
    assert_eq!(
        (k["from"].as_str(), k["to"].as_str()),
        (Some("ticket_opened"), Some("ticket_resolved"))
    );
    assert_eq!(
        (
            k["instances"].as_u64(),
            k["breached"].as_u64(),
            k["met"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    assert_eq!(k["stage"], "support");
    assert_eq!(
        k["breaches_by"],
        serde_json::json!([{"value": "chat", "count": 1}])
    );
    // Before the 8 hours are up the instance is pending, not breached.
    let v = hand_made(&[
        "kpis",
        "--kpi",
        "ticket_resolution",
        "--as-of",
        "2026-01-06T12:00:00Z",
    ]);
    assert_eq!(
        (v[0]["pending"].as_u64(), v[0]["breached"].as_u64()),
        (Some(1), Some(0))
    );
    let out = run(&["kpis", "--kpi", "nope", "--input", "/nonexistent.csv"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the config's [kpis]"));
}

/// On generated journeys, the commands agree with each other: transitions sum to events −
/// journeys, exits to journeys, and the funnel's levels to its journeys, on customers and on
/// sessions.
#[test]
fn commands_agree_on_generated_journeys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("gen");
    json(&[
        "gen",
        "--customers",
        "2000",
        "--seed",
        "3",
        "--out",
        s(&d),
        "--layout",
        "flat",
        "--file-format",
        "parquet",
        "-f",
        "json",
    ]);
    let file = d.join("events.parquet");
    for scope in ["customer", "session"] {
        let args = |cmd: &'static str| {
            vec![
                cmd,
                "--input",
                s(&file),
                "--scope",
                scope,
                "--format",
                "json",
            ]
        };
        let paths = json(&args("paths"));
        let sum: u64 = paths["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["count"].as_u64().unwrap())
            .sum();
        assert_eq!(
            sum,
            paths["events"].as_u64().unwrap() - paths["journeys"].as_u64().unwrap()
        );
        let drop = json(&args("dropoffs"));
        let exits: u64 = drop["touchpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["exits"].as_u64().unwrap())
            .sum();
        assert_eq!(exits, paths["journeys"].as_u64().unwrap());
        let mut f = args("funnel");
        f.extend(["--journey", "trial_to_purchase"]);
        let funnel = json(&f);
        let levels: u64 = funnel["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_u64().unwrap())
            .sum();
        assert_eq!(levels, funnel["customers"].as_u64().unwrap());
        assert_eq!(funnel["customers"], paths["journeys"]);
        assert!(
            funnel["converted"].as_u64().unwrap() > 0,
            "{scope}: {funnel}"
        );
    }
}

/// `trailmap funnel` counts input grouped by customer as it reads it (no journey log), and
/// anything else through the general load: on the same events, grouped and interleaved
/// (each customer's rows in the same order), every mode, order type, exclusion, count,
/// gap, trend, scope and "now" gives the same report, and each input took the path it
/// should.
#[test]
fn streamed_funnels_equal_the_general_load() {
    let dir = tempfile::tempdir().unwrap();
    let (grouped, interleaved) = grouped_and_interleaved(dir.path());
    let dl = dir.path().join("dead.ndjson");
    let run = |file: &std::path::Path, options: &[&str]| -> (Value, String) {
        let mut args = vec!["funnel", "--input", s(file), "--dead-letter", s(&dl)];
        args.extend(["--format", "json", "--window", "3d"]);
        if !options.contains(&"--steps") {
            args.extend(["--steps", "a,b,c"]);
        }
        args.extend(options);
        run_timed(&args)
    };
    let cases: &[&[&str]] = &[
        &[],
        &["--mode", "strict_deduplication"],
        &["--mode", "strict_order"],
        &["--mode", "strict_increase"],
        &["--mode", "strict_once"],
        &["--mode", "allow_reentry,strict_order"],
        &["--order", "strict"],
        &["--order", "unordered"],
        &["--exclude", "x"],
        &["--count", "attempts"],
        &[
            "--count",
            "attempts",
            "--exclude",
            "x",
            "--mode",
            "strict_once",
        ],
        &["--min-gap", "1h,0", "--max-gap", "0,1d"],
        &["--trend", "day"],
        &["--trend", "week", "--count", "attempts"],
        &["--scope", "session", "--gap", "2h"],
        &[
            "--scope",
            "session",
            "--gap",
            "2h",
            "--max-duration",
            "3h",
            "--count",
            "attempts",
        ],
        &["--as-of", "2026-01-20T00:00:00Z"],
        &["--steps", "a,nope", "--exclude", "x"],
    ];
    for options in cases {
        let (streamed, how_streamed) = run(&grouped, options);
        assert!(
            how_streamed.contains("streamed"),
            "{options:?}: {how_streamed}"
        );
        let (general, how) = run(&interleaved, options);
        assert!(how.contains("streaming stopped"), "{options:?}: {how}");
        assert_eq!(streamed, general, "{options:?}");
        if options.contains(&"a,nope") {
            for stderr in [&how_streamed, &how] {
                assert!(
                    stderr.contains("no event has touchpoint `nope`"),
                    "{stderr}"
                );
            }
        }
        assert!(
            streamed["customers"].as_u64().unwrap() >= 400,
            "{options:?}: {streamed}"
        );
    }
}

/// A grouped Parquet file is read in parts, one thread each, the customers at the parts'
/// edges joined and the parts' funnels merged: the same report as the general load of the
/// same events, whatever the row groups. A file with a record only
/// the row path reads is streamed as one instead, and an interleaved one loaded.
#[test]
fn funnels_read_in_parts_equal_the_general_load() {
    let dir = tempfile::tempdir().unwrap();
    let (grouped, interleaved) = grouped_and_interleaved(dir.path());
    let dl = dir.path().join("dead.ndjson");
    let run = |file: &std::path::Path, options: &[&str]| -> (Value, String) {
        let mut args = vec!["funnel", "--input", s(file), "--dead-letter", s(&dl)];
        args.extend(["--format", "json", "--window", "3d", "--steps", "a,b,c"]);
        args.extend(options);
        run_timed(&args)
    };
    let cases: &[&[&str]] = &[
        &[],
        &["--mode", "strict_order"],
        &["--exclude", "x"],
        &["--count", "attempts", "--mode", "strict_once"],
        &["--trend", "week"],
        &["--scope", "session", "--gap", "2h", "--max-duration", "3h"],
        &["--as-of", "2026-01-20T00:00:00Z"],
    ];
    // Row groups of 1 row (every customer split), of a prime number of rows (edges
    // anywhere), of more rows than two customers hold, and one row group (the parts split
    // it: they end where the rows say, not at a row group's edge).
    for rows_per_group in [1, 97, 1000, 1_000_000] {
        let parquet = dir.path().join(format!("grouped-{rows_per_group}.parquet"));
        csv_to_parquet(&grouped, &parquet, rows_per_group);
        for options in cases {
            let (in_parts, how) = run(&parquet, options);
            assert!(how.contains("streamed in parts"), "{options:?}: {how}");
            let (general, _) = run(&interleaved, options);
            assert_eq!(
                in_parts, general,
                "{rows_per_group} rows a group, {options:?}"
            );
        }
    }
    // The report names every touchpoint that came next, and its steps saw events.
    let (report, _) = run(&dir.path().join("grouped-97.parquet"), &[]);
    assert!(
        report["steps"][1]["reached"].as_u64().unwrap() > 0,
        "{report}"
    );

    // A record with no touchpoint: rejected by the row path, in order; the rest streamed.
    let dirty = dir.path().join("dirty.csv");
    let text = std::fs::read_to_string(&grouped).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let at = lines.len() * 2 / 3;
    lines[at] = format!("{},", lines[at].rsplit_once(',').unwrap().0);
    std::fs::write(&dirty, lines.join("\n") + "\n").unwrap();
    let dirty_parquet = dir.path().join("dirty.parquet");
    csv_to_parquet(&dirty, &dirty_parquet, 97);
    let (streamed, how) = run(&dirty_parquet, &[]);
    assert!(how.contains("reading in parts stopped"), "{how}");
    assert!(how.contains("read + aggregate, streamed:"), "{how}");
    let (dirty_general, _) = run(&dirty, &[]);
    assert_eq!(streamed, dirty_general);

    // Interleaved: found out in parts, loaded.
    let interleaved_parquet = dir.path().join("interleaved.parquet");
    csv_to_parquet(&interleaved, &interleaved_parquet, 97);
    let (loaded, how) = run(&interleaved_parquet, &[]);
    assert!(how.contains("streaming stopped"), "{how}");
    assert!(!how.contains("streamed"), "{how}");
    assert_eq!(loaded, run(&interleaved, &[]).0);
}

/// `trailmap dropoffs` streams grouped input too: the same report as the general load, with
/// a goal, with funnel steps, per session; a goal no event has is the same error.
#[test]
fn streamed_dropoffs_equal_the_general_load() {
    let dir = tempfile::tempdir().unwrap();
    let (grouped, interleaved) = grouped_and_interleaved(dir.path());
    let dl = dir.path().join("dead.ndjson");
    let cases: &[&[&str]] = &[
        &[],
        &["--goal", "c"],
        &["--goal", "c", "--steps", "a,b,c", "--window", "3d"],
        &["--steps", "a,x,b", "--exclude", "p", "--count", "attempts"],
        &["--goal", "b", "--scope", "session", "--gap", "2h"],
    ];
    for options in cases {
        let mut args = vec!["dropoffs", "--dead-letter", s(&dl), "--format", "json"];
        args.extend(*options);
        let with = |file: &std::path::Path| {
            let mut a = args.clone();
            a.extend(["--input", s(file)]);
            run_timed(&a)
        };
        let (streamed, how) = with(&grouped);
        assert!(how.contains("streamed"), "{options:?}: {how}");
        let (general, how) = with(&interleaved);
        assert!(how.contains("streaming stopped"), "{options:?}: {how}");
        assert_eq!(streamed, general, "{options:?}");
        assert!(streamed["journeys"].as_u64().unwrap() >= 400, "{streamed}");
    }
    let errors: Vec<String> = [&grouped, &interleaved]
        .iter()
        .map(|file| {
            let out = run(&[
                "dropoffs",
                "--input",
                s(file),
                "--goal",
                "nope",
                "--dead-letter",
                s(&dl),
            ]);
            assert!(!out.status.success());
            String::from_utf8_lossy(&out.stderr).into_owned()
        })
        .collect();
    assert!(
        errors[0].contains("--goal nope: no event has this touchpoint"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[0], errors[1]);
}
