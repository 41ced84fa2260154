//! The live map against batch mining: what `serve` prints, compared with what `paths`,
//! `dropoffs` and `funnel` say per session on the same events.

use super::{json, root, s};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The built-in config with a lateness horizon longer than the data: generated files are
/// grouped by customer, so a replay goes back in time at every customer.
pub fn long_horizon(dir: &Path) -> String {
    let text = std::fs::read_to_string(root().join("config/trailmap.toml")).expect("config");
    assert!(text.contains("allowed_lateness = \"1h\""));
    let path = dir.join("trailmap.toml");
    std::fs::write(
        &path,
        text.replace("allowed_lateness = \"1h\"", "allowed_lateness = \"400d\""),
    )
    .expect("write config");
    s(&path).to_string()
}

/// `count` per `(from, to)` of a list: the map's `edges`, `paths`' `transitions`.
fn pair_counts(list: &Value) -> BTreeMap<(String, String), u64> {
    list.as_array()
        .expect("a list of transitions")
        .iter()
        .map(|e| {
            (
                (
                    e["from"].as_str().expect("from").into(),
                    e["to"].as_str().expect("to").into(),
                ),
                e["count"].as_u64().expect("count"),
            )
        })
        .collect()
}

/// `(journeys, exits)` per touchpoint of a list: the map's `nodes`, `dropoffs`'
/// `touchpoints`.
fn journeys_and_exits(list: &Value) -> BTreeMap<String, (u64, u64)> {
    list.as_array()
        .expect("a list of touchpoints")
        .iter()
        .map(|n| {
            (
                n["touchpoint"].as_str().expect("touchpoint").into(),
                (
                    n["journeys"].as_u64().expect("journeys"),
                    n["exits"].as_u64().expect("exits"),
                ),
            )
        })
        .collect()
}

/// `(reached, dropped, maturing)` per step of a funnel.
fn step_counts(steps: &Value) -> Vec<(u64, u64, u64)> {
    steps
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
            (n("reached"), n("dropped"), n("maturing"))
        })
        .collect()
}

/// The batch commands' answers on `inputs`, per session, against the live map.
pub fn assert_live_equals_batch(live: &Value, inputs: &[String], config: &str) {
    let mut args: Vec<&str> = vec!["--scope", "session", "--format", "json", "--config", config];
    for i in inputs {
        args.extend(["--input", i.as_str()]);
    }
    let with = |cmd: &[&str]| {
        let mut all = cmd.to_vec();
        all.extend_from_slice(&args);
        json(&all)
    };
    let map = &live["map"];
    let paths = with(&["paths"]);
    assert_eq!(
        pair_counts(&map["edges"]),
        pair_counts(&paths["transitions"])
    );
    assert_eq!(map["journeys"], paths["journeys"]);
    assert_eq!(map["events"], paths["events"]);
    assert_eq!(
        journeys_and_exits(&map["nodes"]),
        journeys_and_exits(&with(&["dropoffs"])["touchpoints"])
    );
    // Maturity is decided as of the start of the watermark's minute; batch, told that
    // "now", must find the same journeys still inside their window.
    let as_of = map["as_of"].as_str().expect("the map says as of when");
    let mut maturing = 0;
    for funnel in map["funnels"].as_array().expect("funnels") {
        let name = funnel["name"].as_str().expect("name");
        let batch = with(&["funnel", "--journey", name, "--as-of", as_of]);
        assert_eq!(
            step_counts(&funnel["steps"]),
            step_counts(&batch["steps"]),
            "{name}"
        );
        maturing += funnel["maturing"].as_u64().expect("maturing");
    }
    assert!(
        maturing > 0 || map["funnels"].as_array().is_some_and(Vec::is_empty),
        "no journey was maturing at the end of the data: the comparison says little"
    );
}
