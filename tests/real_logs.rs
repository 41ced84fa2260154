//! Reading real event logs nobody on this project wrote (../shared/data/real).

mod common;
use common::*;

fn sessions(extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dead.ndjson");
    let mut args = vec!["sessions", "--format", "json", "--dead-letter", s(&dl)];
    args.extend_from_slice(extra);
    let v = json(&args);
    assert!(
        !dl.exists(),
        "a clean real log must not produce dead letters"
    );
    v
}

#[test]
fn bpic_2012_xes_gz() {
    let path = real("bpic2012.xes.gz");
    let v = sessions(&["--input", s(&path)]);
    assert_eq!(v["events"], 262_200);
    assert_eq!(v["customers"], 13_087);
    assert_eq!(v["rejected"], 0);
    assert_eq!(v["touchpoints"], 24);
}

/// Sepsis names its case, activity and time columns its own way.
const SEPSIS_COLUMNS: [&str; 6] = [
    "--customer",
    "Case ID",
    "--touchpoint",
    "Activity",
    "--time",
    "Complete Timestamp",
];

#[test]
fn sepsis_csv_keeps_the_case_named_na() {
    let path = real("sepsis.csv");
    let mut args = vec!["--input", s(&path)];
    args.extend(SEPSIS_COLUMNS);
    args.extend(["--time-format", "%Y/%m/%d %H:%M:%S%.f"]);
    let v = sessions(&args);
    assert_eq!(v["events"], 15_214);
    // 1,050 only if the case literally named `NA` is a customer, not a missing value.
    assert_eq!(v["customers"], 1_050);
    assert_eq!(v["rejected"], 0);
}

#[test]
fn sepsis_times_parse_without_a_format_too() {
    let path = real("sepsis.csv");
    let mut args = vec!["--input", s(&path)];
    args.extend(SEPSIS_COLUMNS);
    args.extend(["--delimiter", ";"]);
    let v = sessions(&args);
    assert_eq!(v["events"], 15_214);
    assert_eq!(v["first_ts"], "2013-11-07T08:18:29Z");
}

#[test]
fn taobao_slice_without_header() {
    let path = real("UserBehavior_sample.csv");
    let v = sessions(&[
        "--input",
        s(&path),
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
    ]);
    assert_eq!(v["events"], 110_300);
    assert_eq!(v["customers"], 66_454);
    assert_eq!(v["touchpoints"], 4);
    // Epoch seconds 1511658000..=1511665811 (checked with Python's datetime).
    assert_eq!(v["first_ts"], "2017-11-26T01:00:00Z");
    assert_eq!(v["last_ts"], "2017-11-26T03:10:11Z");
}

#[test]
fn receipt_csv_with_offsets_and_xes_logs() {
    let receipt = real("receipt.csv");
    let v = sessions(&[
        "--input",
        s(&receipt),
        "--customer",
        "case:concept:name",
        "--touchpoint",
        "concept:name",
        "--time",
        "time:timestamp",
    ]);
    assert_eq!(v["events"], 8_577);
    assert_eq!(v["customers"], 1_434);
    let example = real("running-example.xes");
    let v = sessions(&["--input", s(&example)]);
    assert_eq!(v["events"], 42);
    assert_eq!(v["customers"], 6);
}
