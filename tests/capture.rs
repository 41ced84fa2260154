//! Segment-compatible capture with Segment's own Python library (`segment-analytics-python`
//! from PyPI, installed into a virtualenv under the target directory on first use): calls
//! sent to `trailmap serve --capture` show up in the live map, stitched across the
//! anonymous and the identified user; wrong keys and malformed calls get clear answers.

mod common;

use common::demo::{DEMO_WRITE_KEY, Demo, edge, now_millis, post_with_key, wait_until};
use common::{base_url, bin};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "test-write-key";

/// A Python with `segment-analytics-python`, made once (tests run in parallel: the
/// first makes it while the others wait).
fn segment_python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(make_segment_python).clone()
}

fn make_segment_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("segment-venv");
    let python = venv.join("bin/python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", "import segment.analytics"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 -m venv (install python3 and python3-venv)");
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "segment-analytics-python==2.4.0"])
            .status()
            .expect("pip");
        assert!(
            installed.success(),
            "pip install segment-analytics-python failed (PyPI must be reachable)"
        );
    }
    assert!(
        ready(&python),
        "segment.analytics does not import in {}",
        venv.display()
    );
    python
}

/// `trailmap serve --capture` on a free port with a config that has a write key.
struct Served {
    child: Child,
    base: String,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start() -> Served {
        let dir = tempfile::tempdir().expect("tmp");
        let text =
            std::fs::read_to_string(common::root().join("config/trailmap.toml")).expect("config");
        assert!(text.contains("write_keys = []"));
        let config = dir.path().join("trailmap.toml");
        let text = text
            .replace("write_keys = []", &format!("write_keys = [\"{KEY}\"]"))
            .replace(
                "dead_letter = \"trailmap-dead-letters.ndjson\"",
                &format!("dead_letter = {:?}", dir.path().join("dead.ndjson")),
            );
        std::fs::write(&config, text).expect("write config");
        let mut child = bin()
            .args(["serve", "--capture", "--http-port", "0", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start trailmap serve --capture");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("the first line");
        let base = base_url(&line);
        Served {
            child,
            base,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> Value {
        serde_json::from_str(&self.get_text(path)).expect("JSON")
    }

    fn get_text(&self, path: &str) -> String {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .expect("GET");
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
        r.body_mut().read_to_string().expect("body")
    }

    /// Status and `error` of a POST with an optional Basic-auth user.
    fn post(&self, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let (status, text) = post_with_key(&self.agent, &url, key, body);
        (status, serde_json::from_str(&text).expect("JSON"))
    }
}

const SEND: &str = r#"
import sys
import segment.analytics as analytics

analytics.write_key = sys.argv[2]
analytics.host = sys.argv[1]
analytics.max_retries = 0
errors = []
analytics.on_error = lambda error, batch: errors.append(str(error))
for i in range(20):
    anon, user = f"anon-{i}", f"user-{i}"
    analytics.page(anonymous_id=anon, name="Pricing", properties={"path": "/pricing"})
    analytics.identify(user, {"email": f"u{i}@example.com"}, anonymous_id=anon)
    analytics.track(user, "Signed Up")
    if i % 2 == 0:
        analytics.track(user, "Trial Started")
analytics.flush()
if errors:
    print("\n".join(errors))
    sys.exit(1)
"#;

fn send_with_segment(python: &Path, base: &str, key: &str) -> std::process::Output {
    Command::new(python)
        .args(["-c", SEND, base, key])
        .output()
        .expect("run python")
}

#[test]
fn segments_library_sends_into_the_live_map() {
    let python = segment_python();
    let served = Served::start();

    let out = send_with_segment(&python, &served.base, KEY);
    assert!(
        out.status.success(),
        "the Segment client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 20 pricing pages, 20 sign-ups, 10 trials; the identify calls only link identities.
    let deadline = Instant::now() + Duration::from_secs(30);
    let map = loop {
        let map = served.get("/api/map");
        if map["events"] == 50 {
            break map;
        }
        assert!(
            Instant::now() < deadline,
            "the calls never reached the map: {map}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The anonymous visitor and the signed-up user are one customer: one journey each.
    assert_eq!(map["journeys"], 20);
    assert_eq!(edge(&map, "pricing_view", "signup"), 20);
    assert_eq!(edge(&map, "signup", "trial_start"), 10);
    let status = served.get("/api/status");
    assert_eq!(status["ingest"]["links"], 20);
    assert_eq!(status["ingest"]["rejected"], 0);

    // A wrong key: the library reports the refusal; nothing is counted.
    let out = send_with_segment(&python, &served.base, "wrong-key");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unknown write key"));
    assert_eq!(served.get("/api/map")["events"], 50);

    // By hand: what each mistake is told.
    for (key, path, body, status, says) in [
        (
            None,
            "/v1/track",
            r#"{"userId":"u","event":"Signed Up"}"#,
            401,
            "no write key",
        ),
        (Some(KEY), "/v1/track", "not json", 400, "not JSON"),
        (Some(KEY), "/v1/batch", r#"{"batch": 5}"#, 400, "batch"),
        (
            Some(KEY),
            "/v1/batch",
            r#"{"batch": [1]}"#,
            400,
            "not a JSON object",
        ),
        (Some(KEY), "/v1/nothing", "{}", 404, "/v1/track"),
    ] {
        let (got, answer) = served.post(path, key, body);
        assert_eq!(got, status, "{path}: {answer}");
        let message = answer["error"].as_str().expect("error");
        assert!(message.contains(says), "{path}: {message}");
    }
    // A call the mapping cannot read (no time) is taken in, then set aside with its reason.
    let (got, _) = served.post(
        "/v1/track",
        Some(KEY),
        r#"{"userId":"user-0","event":"Signed Up","timestamp":"not a time"}"#,
    );
    assert_eq!(got, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while served.get("/api/status")["ingest"]["rejected"] != 1 {
        assert!(Instant::now() < deadline, "the bad call was never rejected");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Booked against the source captured calls are read as, in the status and /metrics.
    let status = served.get("/api/status");
    let sources = status["sources"].as_array().expect("sources");
    let rejected: Vec<(&str, u64)> = sources
        .iter()
        .filter(|s| s["rejected"].as_u64() > Some(0))
        .map(|s| {
            (
                s["source"].as_str().expect("source"),
                s["rejected"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(rejected, [("clickstream", 1)], "{status}");
    let metrics = served.get_text("/metrics");
    assert!(
        metrics.contains("trailmap_source_rejected_total{source=\"clickstream\"} 1"),
        "{metrics}"
    );
    assert_eq!(served.get("/api/map")["events"], 50);
}

#[test]
fn capture_needs_a_write_key_in_the_config() {
    let out = bin()
        .args(["serve", "--capture", "--http-port", "0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[server] write_keys"));
}

/// `trailmap demo` takes the same calls by default, alongside its generated (January)
/// traffic: counted under their own source, not late, and the generated traffic goes on
/// without going late either.
#[test]
fn segments_library_sends_into_the_demo_while_its_traffic_flows() {
    let python = segment_python();
    // About 50 s of generated traffic: still flowing while the library sends.
    let demo = Demo::start(&["--customers", "3000", "--days", "3", "--rate", "1000"]);
    let generated = || -> (i64, i64) {
        let counts = demo.source_counts();
        ["clickstream", "ticket", "crm"]
            .iter()
            .filter_map(|s| counts.get(*s))
            .fold((0, 0), |(e, l), (events, late)| (e + events, l + late))
    };
    wait_until("generated traffic", 60, || generated().0 > 0);

    let sent_at = now_millis();
    let out = send_with_segment(&python, &demo.base, DEMO_WRITE_KEY);
    assert!(
        out.status.success(),
        "the Segment client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 20 pricing pages, 20 sign-ups, 10 trials, all in time.
    wait_until("the calls in the map", 30, || {
        demo.source_counts().get("capture") == Some(&(50, 0))
    });
    let status = demo.json("/api/status");
    assert_eq!(status["ingest"]["rejected"], 0, "{status}");
    let watermark = status["watermark"].as_i64().expect("watermark");
    assert!(
        watermark < (sent_at - 86_400_000) * 1_000,
        "the watermark is the generated traffic's: {status}"
    );

    let (at_capture, _) = generated();
    wait_until("more generated traffic", 30, || {
        generated().0 > at_capture + 1_000
    });
    assert_eq!(generated().1, 0, "generated events went late");

    // A wrong key: the library reports the refusal; nothing more is counted.
    let out = send_with_segment(&python, &demo.base, "wrong-key");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unknown write key"));
    assert_eq!(demo.source_counts().get("capture"), Some(&(50, 0)));
}
