//! Alerts as an operator meets them: `trailmap serve` on generated traffic with a known dip
//! in checkout conversion, the built-in rule, and a webhook receiver (a real HTTP server in
//! the test). The receiver gets Alertmanager-shaped payloads for the firing and the
//! resolution; killed while firing and restarted, the server keeps the alert's state and
//! sends no second firing; `trailmap alerts test` finds the same on files.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOUR: i64 = 3_600_000_000;
const CUSTOMERS: &str = "40000";
const DAYS: &str = "14";
/// The dip: checkout → purchase at half its rate from day 6 to day 9.
const DIP: &str = "checkout_view:purchase:0.5";
const DIP_FROM: &str = "2026-01-11T00:00:00Z";
const DIP_UNTIL: &str = "2026-01-14T00:00:00Z";
/// What the built-in rule can take to notice (the checkout journey's 1 h window, the rule's
/// 6 h window, its 30 min `for` and 10 min interval).
const BUDGET: i64 = HOUR + 6 * HOUR + HOUR / 2 + HOUR / 6;

/// An HTTP server on a free loopback port keeping every JSON body POSTed to `/hook`.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Value>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = got.clone();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let keep = keep.clone();
                async move {
                    keep.lock().expect("lock").push(body);
                    "ok"
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            got,
            _runtime: runtime,
        }
    }

    fn payloads(&self) -> Vec<Value> {
        self.got.lock().expect("lock").clone()
    }

    /// `(status, value label)` of every payload of the rule by device so far (each says
    /// what it breaks down by).
    fn seen_by_device(&self) -> Vec<(String, String)> {
        self.payloads()
            .iter()
            .filter(|p| p["alerts"][0]["labels"]["alertname"] == BY_DEVICE)
            .inspect(|p| assert_eq!(p["alerts"][0]["labels"]["breakdown"], "device", "{p}"))
            .map(|p| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (text(&p["status"]), text(&p["alerts"][0]["labels"]["value"]))
            })
            .collect()
    }

    /// `(status, alertname, startsAt, endsAt)` of every payload so far.
    fn seen(&self) -> Vec<(String, String, String, String)> {
        self.payloads()
            .iter()
            .map(|p| {
                let a = &p["alerts"][0];
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (
                    text(&p["status"]),
                    text(&a["labels"]["alertname"]),
                    text(&a["startsAt"]),
                    text(&a["endsAt"]),
                )
            })
            .collect()
    }
}

/// The built-in rule broken down by device.
const BY_DEVICE: &str = "checkout_conversion_by_device";

/// The built-in config, notifying `url`, with only its whole-stage rule.
fn config(dir: &Path, url: &str) -> String {
    config_with(dir, url, false)
}

/// The built-in config, notifying `url`; with `by_device`, its rule broken down by device
/// too.
fn config_with(dir: &Path, url: &str, by_device: bool) -> String {
    let mut text = std::fs::read_to_string(root().join("config/trailmap.toml")).expect("config");
    assert!(text.contains("webhooks = []"));
    if !by_device {
        let rule = text
            .find(&format!("[alerts.{BY_DEVICE}]"))
            .expect("the built-in config has the rule by device");
        let end = rule
            + text[rule..]
                .find("\n[alerting]")
                .expect("[alerting] follows");
        text.replace_range(rule..end, "");
    }
    let path = dir.join("trailmap.toml");
    std::fs::write(
        &path,
        text.replace("webhooks = []", &format!("webhooks = [\"{url}\"]")),
    )
    .expect("write config");
    s(&path).to_string()
}

/// The traffic both `serve --generate N` and `gen --customers N` make: the dip included.
const TRAFFIC: [&str; 10] = [
    "--days",
    DAYS,
    "--seed",
    "4",
    "--dip",
    DIP,
    "--dip-from",
    DIP_FROM,
    "--dip-until",
    DIP_UNTIL,
];

fn serve_args<'a>(config: &'a str, data: &'a str) -> Vec<&'a str> {
    let mut args = vec!["serve", "--generate", CUSTOMERS];
    args.extend(TRAFFIC);
    args.extend(["--config", config, "--data-dir", data, "--shards", "2"]);
    args
}

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .timestamp_micros()
}

/// The state file's alert named `name`.
fn saved(data: &Path, name: &str) -> Option<(Value, usize)> {
    let text = std::fs::read_to_string(data.join("alerts.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let alert = v["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)?
        .clone();
    Some((alert, v["outbox"].as_array()?.len()))
}

#[test]
fn a_dip_fires_and_resolves_with_a_webhook_for_each() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tmp");
    let config = config_with(dir.path(), &receiver.url, true);
    let data = dir.path().join("data");
    let out = json(&serve_args(&config, s(&data)));

    let alerts = out["alerts"].as_array().expect("alerts in the output");
    let rule = alerts
        .iter()
        .find(|a| a["name"] == "checkout_conversion")
        .expect("the built-in rule");
    assert_eq!(rule["state"], "inactive", "{rule}");
    let fired = rule["fired_at"].as_i64().expect("it fired");
    let resolved = rule["resolved_at"].as_i64().expect("it resolved");
    let (from, until) = (micros(DIP_FROM), micros(DIP_UNTIL));
    assert!(
        (from..=from + BUDGET).contains(&fired),
        "fired {:.1} h after the dip began",
        (fired - from) as f64 / HOUR as f64
    );
    assert!(
        (until..=until + BUDGET).contains(&resolved),
        "resolved {:.1} h after the dip ended",
        (resolved - until) as f64 / HOUR as f64
    );

    // The rule by device watched each kind; the dip hit every kind, so whatever fired
    // (the kinds with the sample to tell) resolved too, each labelled with its device.
    let by_device: Vec<&Value> = alerts.iter().filter(|a| a["name"] == BY_DEVICE).collect();
    let mut kinds: Vec<&str> = by_device
        .iter()
        .filter_map(|a| a["value"].as_str())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["desktop", "mobile", "tablet"], "{by_device:?}");
    assert!(
        by_device.iter().all(|a| a["state"] == "inactive"),
        "{by_device:?}"
    );
    let device_notices = receiver.seen_by_device();
    assert!(!device_notices.is_empty(), "desktop has the sample to fire");
    for kind in ["desktop", "mobile", "tablet"] {
        let statuses: Vec<&str> = device_notices
            .iter()
            .filter(|(_, d)| d == kind)
            .map(|(s, _)| s.as_str())
            .collect();
        assert!(
            statuses.is_empty() || statuses == ["firing", "resolved"],
            "{kind}: {device_notices:?}"
        );
    }

    // Both notifications were delivered before `serve` exited, shaped like Alertmanager's.
    let seen: Vec<_> = receiver
        .seen()
        .into_iter()
        .filter(|s| s.1 != BY_DEVICE)
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].0.as_str(), seen[1].0.as_str()),
        ("firing", "resolved")
    );
    assert!(
        seen.iter().all(|s| s.1 == "checkout_conversion"),
        "{seen:?}"
    );
    assert_eq!(micros(&seen[0].2), fired);
    assert_eq!(
        seen[0].3, "0001-01-01T00:00:00Z",
        "a firing alert has not ended"
    );
    assert_eq!((micros(&seen[1].2), micros(&seen[1].3)), (fired, resolved));
    let first = &receiver.payloads()[0];
    assert_eq!(first["version"], "4");
    assert_eq!(first["alerts"][0]["labels"]["journey"], "checkout");
    assert_eq!(first["alerts"][0]["labels"]["severity"], "warning");
    assert!(
        first["alerts"][0]["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("conversion")),
        "{first}"
    );
    let (state, outbox) = saved(&data, "checkout_conversion").expect("a state file");
    assert_eq!((state["state"].as_str(), outbox), (Some("inactive"), 0));

    // The backtest over the same events from files says the same.
    let gen_dir = dir.path().join("gen");
    let mut gen_args = vec!["gen", "--customers", CUSTOMERS];
    gen_args.extend(TRAFFIC);
    gen_args.extend(["-o", s(&gen_dir), "--format", "json"]);
    let _ = json(&gen_args);
    let mut args = vec![
        "alerts",
        "test",
        "--rule",
        "checkout_conversion",
        "--config",
        &config,
    ];
    let inputs = generated_sources(&gen_dir, "ndjson");
    for i in &inputs {
        args.extend(["-i", i.as_str()]);
    }
    args.extend(["--format", "json"]);
    let backtest = json(&args);
    let changes: Vec<(String, i64)> = backtest["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["change"].as_str().expect("change").to_string(),
                c["evaluation"]["at"].as_i64().expect("at"),
            )
        })
        .collect();
    // Live evaluations read the counts as they stood then; the backtest reads them with
    // hindsight (a long session that entered the funnel later is already in): the same
    // changes, at most an hour apart.
    let kinds: Vec<&str> = changes.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(kinds, ["firing", "resolved"], "{changes:?}");
    assert!(
        (changes[0].1 - fired).abs() <= HOUR,
        "{changes:?} vs {fired}"
    );
    assert!(
        (changes[1].1 - resolved).abs() <= HOUR,
        "{changes:?} vs {resolved}"
    );
}

/// `serve` killed with SIGKILL while the alert fires (after the firing was delivered), then
/// started again on the same data dir: the state file carries the firing alert over, the
/// restarted run catches up without announcing it again, and resolves it once.
#[test]
fn a_restart_while_firing_keeps_the_state_and_sends_no_duplicate() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("tmp");
    let config = config(dir.path(), &receiver.url);
    let data = dir.path().join("data");

    let mut args = serve_args(&config, s(&data));
    args.extend(["--rate", "40000"]);
    let mut first: Child = bin()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((alert, outbox)) = saved(&data, "checkout_conversion")
            && alert["state"] == "firing"
            && outbox == 0
            && !receiver.payloads().is_empty()
        {
            break;
        }
        if let Some(status) = first.try_wait().expect("wait") {
            panic!(
                "serve ended ({status}) before the alert fired: {:?}",
                receiver.seen()
            );
        }
        assert!(Instant::now() < deadline, "never fired within 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().expect("kill -9");
    let _ = first.wait();
    let (alert, _) = saved(&data, "checkout_conversion").expect("state");
    assert_eq!(alert["state"], "firing");
    let fired = alert["fired_at"].as_i64().expect("fired_at");

    let out = json(&serve_args(&config, s(&data)));
    let rule = out["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["name"] == "checkout_conversion")
        .expect("the rule")
        .clone();
    assert_eq!(rule["fired_at"].as_i64(), Some(fired), "{rule}");
    assert_eq!(rule["state"], "inactive", "{rule}");
    let seen = receiver.seen();
    let statuses: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(statuses, ["firing", "resolved"], "{seen:?}");
    assert_eq!(micros(&seen[1].2), fired);
}

/// A webhook that is down: the notifications wait in the state file's outbox (retries stop
/// when `serve` stops), and the next run, with the receiver up, delivers them first, in
/// order, without evaluating anything twice.
#[test]
fn notifications_a_webhook_missed_are_sent_by_the_next_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let down = format!("http://{closed}/hook");
    let config_down = config(dir.path(), &down);
    let data = dir.path().join("data");
    let first = run(&serve_args(&config_down, s(&data)));
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("kept for the next run"), "{stderr}");
    let text = std::fs::read_to_string(data.join("alerts.json")).expect("a state file");
    let state: Value = serde_json::from_str(&text).expect("JSON");
    let waiting: Vec<&str> = state["outbox"]
        .as_array()
        .expect("outbox")
        .iter()
        .map(|n| n["change"].as_str().expect("change"))
        .collect();
    assert_eq!(waiting, ["firing", "resolved"], "{text}");

    let receiver = Receiver::start();
    let config_up = config(dir.path(), &receiver.url);
    let _ = json(&serve_args(&config_up, s(&data)));
    let statuses: Vec<String> = receiver.seen().into_iter().map(|s| s.0).collect();
    assert_eq!(statuses, ["firing", "resolved"]);
    let text = std::fs::read_to_string(data.join("alerts.json")).expect("a state file");
    let state: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(state["outbox"].as_array().map(Vec::len), Some(0), "{text}");
}
