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

/// `trailmap map --svg`: the picture of generated files (grouped by customer, so replayed
/// out of time order) holds every touchpoint and the busiest transitions with the counts
/// `trailmap paths` and `dropoffs` give per session; without `--svg`, the map as JSON.
#[test]
fn map_draws_the_sessions_map_of_files_as_svg() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("gen");
    let _ = json(&[
        "gen",
        "--customers",
        "400",
        "--days",
        "5",
        "--seed",
        "3",
        "-o",
        s(&out),
        "--format",
        "json",
    ]);
    let inputs = generated_sources(&out, "ndjson");
    let svg_path = dir.path().join("map.svg");
    let mut args = vec!["map", "--svg", s(&svg_path)];
    for i in &inputs {
        args.extend(["-i", i.as_str()]);
    }
    let drawn = run(&args);
    assert!(
        drawn.status.success(),
        "{}",
        String::from_utf8_lossy(&drawn.stderr)
    );
    let svg = std::fs::read_to_string(&svg_path).expect("an SVG was written");
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && svg.ends_with("</svg>\n")
    );

    // `data-*` attributes of the drawn elements.
    let attrs = |element: &str, names: [&str; 2]| -> Vec<(String, String)> {
        svg.split(element)
            .skip(1)
            .map(|tail| {
                let value = |name: &str| {
                    let key = format!("data-{name}=\"");
                    let at = tail
                        .find(&key)
                        .unwrap_or_else(|| panic!("{name} in {tail}"))
                        + key.len();
                    tail[at..at + tail[at..].find('"').expect("closing quote")].to_string()
                };
                (value(names[0]), value(names[1]))
            })
            .collect()
    };
    let mut batch = vec!["--scope", "session", "--format", "json"];
    for i in &inputs {
        batch.extend(["-i", i.as_str()]);
    }
    let with = |cmd: &str| {
        let mut all = vec![cmd];
        all.extend_from_slice(&batch);
        json(&all)
    };
    let dropoffs = with("dropoffs");
    let mut journeys: Vec<(String, String)> = dropoffs["touchpoints"]
        .as_array()
        .expect("touchpoints")
        .iter()
        .map(|t| {
            (
                t["touchpoint"].as_str().expect("touchpoint").to_string(),
                t["journeys"].as_u64().expect("journeys").to_string(),
            )
        })
        .collect();
    let mut drawn_journeys = attrs("<g class=\"node\"", ["touchpoint", "journeys"]);
    journeys.sort();
    drawn_journeys.sort();
    assert_eq!(drawn_journeys, journeys);

    let paths = with("paths");
    let counts: std::collections::BTreeMap<(String, String), String> = paths["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| {
            (
                (
                    t["from"].as_str().expect("from").to_string(),
                    t["to"].as_str().expect("to").to_string(),
                ),
                t["count"].as_u64().expect("count").to_string(),
            )
        })
        .collect();
    let edges: Vec<String> = attrs("<path class=\"edge\"", ["from", "count"])
        .into_iter()
        .map(|(_, count)| count)
        .collect();
    let pairs = attrs("<path class=\"edge\"", ["from", "to"]);
    assert_eq!(
        edges.len(),
        counts.len().min(80),
        "the busiest 80 transitions are drawn"
    );
    for ((from, to), count) in pairs.into_iter().zip(edges) {
        assert_eq!(
            counts.get(&(from.clone(), to.clone())),
            Some(&count),
            "{from} → {to}"
        );
    }

    let mut args = vec!["map", "--format", "json"];
    for i in &inputs {
        args.extend(["-i", i.as_str()]);
    }
    let map = json(&args);
    assert_eq!(map["journeys"], paths["journeys"]);
    assert_eq!(map["events"], paths["events"]);
}
