//! `trailmap demo` as a user runs it: the binary starts, says where it listens, the map
//! fills while generated traffic streams in, every endpoint answers, and Ctrl-C stops it
//! cleanly. Segment calls sent to it meanwhile join the generated traffic in the map.

mod common;

use common::demo::{DEMO_WRITE_KEY, Demo, edge, iso_utc, now_millis, wait_until};
use common::{bin, ok, psql};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[test]
fn the_demo_fills_the_map_live_and_stops_on_ctrl_c() {
    // Without capture the input ends with the generated traffic, and the map is final.
    let demo = Demo::start(&[
        "--no-capture",
        "--customers",
        "400",
        "--days",
        "3",
        "--rate",
        "4000",
    ]);
    assert_eq!(demo.json("/healthz")["status"], "ok");
    assert_eq!(demo.json("/readyz")["ready"], true);
    let (status, body) = demo.post(
        "/v1/track",
        Some(DEMO_WRITE_KEY),
        r#"{"userId":"u","event":"Signed Up"}"#,
    );
    assert_eq!(status, 404, "--no-capture takes no calls: {body}");

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

/// The generated sources' `(events, late)` summed.
fn generated(counts: &std::collections::BTreeMap<String, (i64, i64)>) -> (i64, i64) {
    ["clickstream", "ticket", "crm"]
        .iter()
        .filter_map(|s| counts.get(*s))
        .fold((0, 0), |(e, l), (events, late)| (e + events, l + late))
}

fn node<'a>(map: &'a Value, touchpoint: &str) -> Option<&'a Value> {
    map["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["touchpoint"] == touchpoint)
}

/// One visitor's calls, as Segment's libraries send them: a page seen anonymously, the
/// identify call that ties the anonymous id to the user, then a track call.
fn visitor(i: usize, at: i64) -> [Value; 3] {
    let (anon, user) = (format!("demo-anon-{i}"), format!("demo-user-{i}"));
    [
        json!({"type": "page", "anonymousId": anon, "name": "Pricing",
               "properties": {"path": "/pricing"}, "timestamp": iso_utc(at - 2_000)}),
        json!({"type": "identify", "userId": user, "anonymousId": anon,
               "traits": {"email": format!("{user}@example.com")}, "timestamp": iso_utc(at - 1_000)}),
        json!({"type": "track", "userId": user, "event": "Demo Capture Check",
               "properties": {"plan": "team"}, "timestamp": iso_utc(at)}),
    ]
}

#[test]
fn segment_calls_join_the_generated_traffic_in_the_live_map() {
    // About 50 s of generated January traffic: it is still flowing while calls come in.
    let demo = Demo::start(&["--customers", "3000", "--days", "3", "--rate", "1000"]);
    wait_until("generated traffic", 60, || {
        generated(&demo.source_counts()).0 > 0
    });

    // Ten visitors in one /v1/batch, an eleventh call by call, all carrying now.
    let now = now_millis();
    let batch: Vec<Value> = (0..10).flat_map(|i| visitor(i, now)).collect();
    let (status, body) = demo.post(
        "/v1/batch",
        Some(DEMO_WRITE_KEY),
        &json!({ "batch": batch }).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["success"],
        true
    );
    for (path, call) in ["/v1/page", "/v1/identify", "/v1/track"]
        .into_iter()
        .zip(visitor(10, now))
    {
        let (status, body) = demo.post(path, Some(DEMO_WRITE_KEY), &call.to_string());
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = demo.post(
        "/v1/track",
        Some("not-the-key"),
        &visitor(11, now)[2].to_string(),
    );
    assert_eq!(status, 401, "{body}");

    // Counted under their own source, none late: 11 pricing views and 11 checks.
    wait_until("the captured calls in the map", 30, || {
        demo.source_counts().get("capture") == Some(&(22, 0))
    });
    let map = demo.json("/api/map");
    let check = node(&map, "Demo Capture Check").unwrap_or_else(|| panic!("{map}"));
    assert_eq!(check["events"], 11, "{check}");
    assert_eq!(check["journeys"], 11, "{check}");
    // Stitched: the anonymous pricing view and the user's track call are one journey.
    assert_eq!(
        edge(&map, "pricing_view", "Demo Capture Check"),
        11,
        "{map}"
    );

    // The watermark is still the generated traffic's (January), not now: that is why the
    // generated events that follow are not late.
    let status = demo.json("/api/status");
    let watermark = status["watermark"].as_i64().expect("watermark");
    assert!(watermark < (now - 86_400_000) * 1_000, "{status}");
    let newest = status["newest"].as_i64().expect("newest");
    assert!(
        (newest / 1_000 - now).abs() < 60_000,
        "the newest is the captured now: {status}"
    );
    assert_eq!(status["ingest"]["rejected"], 0, "{status}");

    // The generated traffic keeps flowing, in time.
    let (at_capture, _) = generated(&demo.source_counts());
    wait_until("more generated traffic", 30, || {
        generated(&demo.source_counts()).0 > at_capture + 1_000
    });
    let counts = demo.source_counts();
    assert_eq!(
        generated(&counts).1,
        0,
        "generated events went late: {counts:?}"
    );
    assert_eq!(counts.get("capture"), Some(&(22, 0)), "{counts:?}");
    let status = demo.json("/api/status");
    assert_ne!(
        status["watermark"].as_i64(),
        Some(i64::MAX),
        "capture never ends: {status}"
    );

    // Ctrl-C: a clean stop; the demo said where to send calls, with which key.
    let mut demo = demo;
    let (status, stderr) = demo.interrupt();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("/v1/batch") && stderr.contains(&format!("write key `{DEMO_WRITE_KEY}`")),
        "{stderr}"
    );
}

#[test]
fn with_write_keys_in_the_config_the_demo_key_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let text =
        std::fs::read_to_string(common::root().join("config/trailmap.toml")).expect("config");
    assert!(text.contains("write_keys = []"));
    let config = dir.path().join("trailmap.toml");
    std::fs::write(
        &config,
        text.replace("write_keys = []", "write_keys = [\"own-key\"]"),
    )
    .expect("write config");
    let demo = Demo::start(&[
        "--customers",
        "50",
        "--days",
        "1",
        "--config",
        common::s(&config),
    ]);
    let call = visitor(0, now_millis())[2].to_string();
    let (status, body) = demo.post("/v1/track", Some(DEMO_WRITE_KEY), &call);
    assert_eq!(status, 401, "{body}");
    let (status, body) = demo.post("/v1/track", Some("own-key"), &call);
    assert_eq!(status, 200, "{body}");
    wait_until("the call in the map", 30, || {
        demo.source_counts().get("capture") == Some(&(1, 0))
    });
}

#[test]
fn off_loopback_the_demo_key_is_not_taken() {
    let out = bin()
        .args([
            "demo",
            "--bind",
            "0.0.0.0",
            "--port",
            "0",
            "--customers",
            "10",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[server] write_keys") && stderr.contains("--no-capture"),
        "{stderr}"
    );
}
