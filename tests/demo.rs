//! `trailmap demo` as a user runs it: the binary starts, says where it listens, the map
//! fills while generated traffic streams in, every endpoint answers, and Ctrl-C stops it
//! cleanly.

mod common;

use common::demo::Demo;
use common::{bin, ok, psql};
use std::time::{Duration, Instant};

#[test]
fn the_demo_fills_the_map_live_and_stops_on_ctrl_c() {
    let demo = Demo::start(&["--customers", "400", "--days", "3", "--rate", "4000"]);
    assert_eq!(demo.json("/healthz")["status"], "ok");
    assert_eq!(demo.json("/readyz")["ready"], true);

    // The map grows while traffic streams in, then stays once the input has ended.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    loop {
        let status = demo.json("/api/status");
        let map = demo.json("/api/map");
        seen.push(map["events"].as_i64().expect("events"));
        // Input ended: every session is closed, the map is final.
        if status["watermark"].as_i64() == Some(i64::MAX) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's input never ended: {status}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "the map went back: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|&n| n > 0 && n < *seen.last().expect("a sample")),
        "never saw the map part-filled: {seen:?}"
    );

    let map = demo.json("/api/map");
    let events = map["events"].as_i64().expect("events");
    assert!(events > 1_000, "{events}");
    assert!(!map["nodes"].as_array().expect("nodes").is_empty());
    assert!(!map["edges"].as_array().expect("edges").is_empty());
    let funnel = demo.json("/api/funnels/trial_to_purchase");
    assert!(funnel["entered"].as_i64() > Some(0));
    assert_eq!(demo.json("/api/paths")["events"], events);
    let (status, metrics) = demo.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("trailmap_events_total {events}")),
        "{metrics}"
    );
    let (status, body) = demo.get("/api/map?window=yesterday");
    assert_eq!(status, 400, "{body}");

    // SQL over the live tables, over HTTP and from the real psql: the map's numbers.
    let answer =
        demo.json("/api/sql?q=SELECT%20sum(events)%20AS%20events%20FROM%20live_touchpoints");
    assert_eq!(answer["columns"], serde_json::json!(["events"]));
    assert_eq!(answer["rows"][0]["events"], events);
    let (status, body) = demo.get("/api/sql?q=DROP%20TABLE%20live_touchpoints");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("read-only"), "{body}");
    let tables = ok(psql(demo.postgres_port, "", "\\dt"));
    for table in ["live_touchpoints", "live_transitions", "live_funnel_steps"] {
        assert!(tables.contains(table), "{tables}");
    }
    let busiest = ok(psql(
        demo.postgres_port,
        "",
        "SELECT touchpoint, events FROM live_touchpoints ORDER BY events DESC, touchpoint LIMIT 3",
    ));
    let mut nodes: Vec<(i64, String)> = map["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                -n["events"].as_i64().expect("events"),
                n["touchpoint"].as_str().expect("name").to_string(),
            )
        })
        .collect();
    nodes.sort();
    let expected: Vec<String> = nodes[..3]
        .iter()
        .map(|(e, t)| format!("{t}|{}", -e))
        .collect();
    assert_eq!(busiest.lines().collect::<Vec<_>>(), expected);
    let steps = ok(psql(
        demo.postgres_port,
        "",
        "SELECT reached FROM live_funnel_steps WHERE journey = 'trial_to_purchase' ORDER BY step_index",
    ));
    let reached: Vec<String> = funnel["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["reached"].to_string())
        .collect();
    assert_eq!(steps.lines().collect::<Vec<_>>(), reached);
    let refused = psql(demo.postgres_port, "", "DROP TABLE live_transitions");
    assert!(!refused.status.success());

    // Ctrl-C: a clean stop with a summary.
    let mut demo = demo;
    let (status, stderr) = demo.interrupt();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains(&format!("demo: {events} events")),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_is_refused_with_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port().to_string();
    let out = bin()
        .args(["demo", "--port", &port, "--customers", "10"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot listen for HTTP") && stderr.contains("--port"),
        "{stderr}"
    );
}
