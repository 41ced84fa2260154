//! The CLI end to end: generated journeys, the example sources, stitching across them.

mod common;
use common::*;

#[test]
fn example_sources_stitch_into_three_customers() {
    let ex = root().join("config/examples");
    let v = sessions_json(&[
        input("clickstream", &ex.join("clickstream.ndjson")),
        input("ticket", &ex.join("ticket.csv")),
        input("crm", &ex.join("crm.ndjson")),
    ]);
    assert_eq!(v["customers"], 3, "{v:#}");
    assert_eq!(v["events"], 18);
    assert_eq!(v["identity_links"], 1);
    assert_eq!(v["cross_source_customers"], 2);
    assert_eq!(v["rejected"], 0);
    // Without the identify call's link the web visitor and the CRM contact stay apart.
    let v = sessions_json(&[
        input("ticket", &ex.join("ticket.csv")),
        input("crm", &ex.join("crm.ndjson")),
    ]);
    assert_eq!(v["customers"], 2);
}

#[test]
fn generated_sources_stitch_back_to_the_generated_customers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    for (format, ext) in [("ndjson", "ndjson"), ("parquet", "parquet")] {
        let d = out.join(format);
        let g = json(&[
            "gen",
            "--customers",
            "3000",
            "--seed",
            "7",
            "--out",
            s(&d),
            "--file-format",
            format,
            "-f",
            "json",
        ]);
        assert_eq!(g["customers"], 3000);
        let v = sessions_json(&generated_sources(&d, ext));
        assert_eq!(v["customers"], 3000, "{format}: {v:#}");
        assert_eq!(v["rejected"], 0);
        assert_eq!(v["records"], g["events"]);
        assert_eq!(v["identity_links"], g["identity_records"]);
        assert!(v["cross_source_customers"].as_u64().unwrap() > 300);
    }
    // The flat layout is the same journeys already stitched.
    let flat = out.join("flat");
    json(&[
        "gen",
        "--customers",
        "3000",
        "--seed",
        "7",
        "--out",
        s(&flat),
        "--layout",
        "flat",
        "--file-format",
        "parquet",
        "-f",
        "json",
    ]);
    let a = sessions_json(&[s(&flat.join("events.parquet")).to_string()]);
    let b = sessions_json(&generated_sources(&out.join("ndjson"), "ndjson"));
    for key in [
        "events",
        "customers",
        "sessions",
        "touchpoints",
        "first_ts",
        "last_ts",
    ] {
        assert_eq!(a[key], b[key], "{key}");
    }
}

#[test]
fn gen_is_deterministic_per_seed_and_writes_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let run_gen = |name: &str, seed: &str| {
        let d = dir.path().join(name);
        json(&[
            "gen",
            "--customers",
            "200",
            "--seed",
            seed,
            "--out",
            s(&d),
            "--truth",
            s(&d.join("truth.json")),
            "-f",
            "json",
        ]);
        d
    };
    let (a, b, c) = (run_gen("a", "1"), run_gen("b", "1"), run_gen("c", "2"));
    for f in [
        "clickstream.ndjson",
        "ticket.ndjson",
        "crm.ndjson",
        "truth.json",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_ne!(
        std::fs::read(a.join("clickstream.ndjson")).unwrap(),
        std::fs::read(c.join("clickstream.ndjson")).unwrap()
    );
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("truth.json")).unwrap()).unwrap();
    let transitions = truth["transitions"].as_array().unwrap();
    assert!(transitions.len() > 30);
    assert!(transitions.iter().all(|t| t["p"].as_f64().unwrap() > 0.0));
}

#[test]
fn sessions_formats_and_gap_flag() {
    let ex = root().join("config/examples/clickstream.ndjson");
    let input = input("clickstream", &ex);
    let wide = json(&[
        "sessions",
        "-f",
        "json",
        "-i",
        &input,
        "--gap",
        "7d",
        "--max-duration",
        "0",
    ]);
    let narrow = json(&[
        "sessions",
        "-f",
        "json",
        "-i",
        &input,
        "--gap",
        "1m",
        "--max-duration",
        "0",
    ]);
    assert_eq!(wide["sessions"], 2, "one per visitor");
    assert!(narrow["sessions"].as_u64().unwrap() > wide["sessions"].as_u64().unwrap());
    let out = run(&["sessions", "-f", "csv", "-i", &input]);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("events,customers,sessions,rejected")
    );
    assert!(lines.next().unwrap().starts_with("9,2,"));
    let out = run(&["sessions", "-f", "table", "-i", &input]);
    assert!(String::from_utf8(out.stdout).unwrap().contains("customers"));
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "[sessions]\ngap = \"soon\"\n").unwrap();
    let ex = root().join("config/examples/clickstream.ndjson");
    let out = run(&["sessions", "--config", s(&cfg), "-i", s(&ex)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gap") && err.contains("soon"), "{err}");
    std::fs::write(&cfg, "[[catalog.rules]]\nmatch = '(('\ntouchpoint = 'x'\n").unwrap();
    let err =
        String::from_utf8_lossy(&run(&["sessions", "--config", s(&cfg), "-i", s(&ex)]).stderr)
            .to_string();
    assert!(err.contains("catalog.rules[0].match"), "{err}");
    // The shipped config is valid and usable as is.
    let shipped = root().join("config/trailmap.toml");
    let v = json(&[
        "sessions",
        "-f",
        "json",
        "--config",
        s(&shipped),
        "-i",
        &input("clickstream", &ex),
    ]);
    assert_eq!(v["customers"], 2);
}
