//! `trailmap demo` as a user runs it: the binary starts, says where it listens, the map
//! fills while generated traffic streams in, every endpoint answers, and Ctrl-C stops it
//! cleanly.

mod common;

use common::bin;
use common::demo::Demo;
use std::time::{Duration, Instant};

#[test]
fn the_demo_fills_the_map_live_and_stops_on_ctrl_c() {
    let demo = Demo::start(&[
        "--port",
        "0",
        "--customers",
        "400",
        "--days",
        "3",
        "--rate",
        "4000",
    ]);
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
