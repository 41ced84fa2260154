//! `trailmap serve` running the live pipeline to the end of its input: the live map it
//! prints equals what `trailmap paths`, `dropoffs` and `funnel` say per session on the same
//! events, for a file replay and for the embedded generator.

mod common;
use common::live::*;
use common::*;

#[test]
fn replayed_files_give_the_map_batch_mining_gives() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("gen");
    let _ = json(&[
        "gen",
        "--customers",
        "300",
        "--days",
        "3",
        "--seed",
        "5",
        "-o",
        s(&out),
        "--format",
        "json",
    ]);
    let config = long_horizon(dir.path());
    let inputs: Vec<String> = ["clickstream", "ticket", "crm"]
        .iter()
        .map(|k| input(k, &out.join(format!("{k}.ndjson"))))
        .collect();
    let mut args = vec![
        "serve",
        "--replay",
        "--config",
        config.as_str(),
        "--shards",
        "2",
    ];
    for i in &inputs {
        args.extend(["--input", i.as_str()]);
    }
    let live = json(&args);
    assert_eq!(live["status"]["stitch"]["late"], 0);
    assert!(
        live["status"]["shards"]["corrected"]
            .as_u64()
            .expect("corrected")
            > 0
    );
    assert_live_equals_batch(&live, &inputs, &config);
}

#[test]
fn the_embedded_generator_gives_the_map_of_the_true_journeys() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("flat");
    let _ = json(&[
        "gen",
        "--customers",
        "300",
        "--days",
        "3",
        "--seed",
        "9",
        "-o",
        s(&out),
        "--layout",
        "flat",
        "--format",
        "json",
    ]);
    let config = s(&root().join("config/trailmap.toml")).to_string();
    let live = json(&[
        "serve",
        "--generate",
        "300",
        "--days",
        "3",
        "--seed",
        "9",
        "--config",
        &config,
    ]);
    let status = &live["status"];
    assert_eq!(status["stitch"]["late"], 0, "{status}");
    assert_eq!(
        status["shards"]["corrected"], 0,
        "the generator emits in time order"
    );
    assert!(status["stitch"]["identity_links"].as_u64().expect("links") > 0);
    assert_eq!(status["open_customers"], 0);
    assert_live_equals_batch(&live, &[s(&out.join("events.ndjson")).to_string()], &config);
}

#[test]
fn serve_refuses_a_replay_without_input_and_zero_shards() {
    let out = run(&["serve", "--generate", "10", "--shards", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shards must be at least 1"));
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("nope.ndjson");
    let out = run(&["serve", "--replay", "--input", s(&missing)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    // The HTTP API serves a live pipeline; over files, `serve` speaks PostgreSQL only.
    let out = run(&["serve", "--http-port", "0", "--input", s(&missing)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --generate, --replay or --kafka"));
    let out = run(&["serve", "--kafka", "--rate", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
