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
