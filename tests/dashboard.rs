//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver): `trailmap
//! demo` serves it, the map shows touchpoints and transitions, a live update changes the
//! numbers on the page, and once the input has ended the page's numbers (map, funnels,
//! alerts) are the API's.
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); fails, with
//! what to install, when they are missing. The screenshot is kept as a test artifact.

mod common;

use base64::Engine;
use common::demo::Demo;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A chromedriver process and one headless Chromium session on it.
struct Browser {
    driver: Child,
    url: String,
    agent: ureq::Agent,
}

fn found(program: &str) -> Option<String> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .and_then(|p| p.to_str().map(String::from))
}

impl Browser {
    fn start() -> Browser {
        let missing = "install Debian's chromium and chromium-driver (apt-get install chromium \
                       chromium-driver; .ci/run does it when they are missing)";
        let driver = found("chromedriver").unwrap_or_else(|| panic!("no chromedriver: {missing}"));
        let chromium = found("chromium").unwrap_or_else(|| panic!("no chromium: {missing}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.get(format!("{base}/status")).call().is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver never answered on {base}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut browser = Browser {
            driver: child,
            url: base,
            agent,
        };
        let session = browser.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1400,1100"]
                }
            }}}),
        );
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"));
        browser.url = format!("{}/session/{id}", browser.url);
        browser
    }

    /// A WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.url);
        let response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).send_json(&body),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        let value: Value = serde_json::from_str(&text).expect("WebDriver answers JSON");
        assert_eq!(status, 200, "{method} {path}: {text}");
        value["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page; what it returns.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    fn screenshot(&self) -> Vec<u8> {
        let png = self.call("GET", "/screenshot", Value::Null);
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("a PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.url).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What the page shows: header totals, per-node events, per-funnel-step reached.
const READ_PAGE: &str = r##"
const number = id => Number(document.getElementById(id).dataset.value);
const nodes = {};
for (const g of document.querySelectorAll("g.node")) nodes[g.dataset.touchpoint] = Number(g.dataset.events);
const funnels = {};
for (const f of document.querySelectorAll("[data-funnel]")) {
  funnels[f.dataset.funnel] = [...f.querySelectorAll("tr[data-step]")].map(r => Number(r.dataset.reached));
}
const trends = {};
for (const f of document.querySelectorAll("[data-funnel]")) {
  trends[f.dataset.funnel] = [...f.querySelectorAll("circle[data-day]")].map(c => [c.dataset.day, Number(c.dataset.entered)]);
}
const alerts = {};
for (const r of document.querySelectorAll("#alert-rows tr[data-alert]")) {
  const key = r.dataset.value ? `${r.dataset.alert}/${r.dataset.value}` : r.dataset.alert;
  alerts[key] = [r.dataset.state, r.dataset.journeys];
}
return { events: number("events"), journeys: number("journeys"), nodes, funnels, alerts, trends,
         edges: document.querySelectorAll("path.edge").length,
         exits: [...document.querySelectorAll("#dropoff-rows tr")].length,
         connection: document.getElementById("connection").textContent };
"##;

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(Instant::now() < deadline, "waited 90 s for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_dashboard_shows_the_live_map_and_follows_it() {
    // About ten seconds of traffic: long enough to see the page follow it. Without capture
    // the input ends, so the page can be checked against the final numbers (capture in the
    // demo is tested in tests/demo.rs).
    let demo = Demo::start(&[
        "--customers",
        "600",
        "--days",
        "3",
        "--rate",
        "1000",
        "--no-capture",
    ]);
    let browser = Browser::start();
    browser.open(&format!("{}/", demo.base));

    let mut page = Value::Null;
    wait_for("the map to show touchpoints and transitions", || {
        page = browser.eval(READ_PAGE);
        page["nodes"].as_object().is_some_and(|n| !n.is_empty()) && page["edges"].as_u64() > Some(0)
    });
    assert_eq!(page["connection"], "live");
    let first = page["events"].as_i64().expect("events");
    wait_for("a live update to change the numbers", || {
        browser.eval(READ_PAGE)["events"].as_i64() != Some(first)
    });

    // Once the input has ended, the page settles on the API's final numbers.
    wait_for("the demo's input to end", || {
        demo.json("/api/status")["watermark"].as_i64() == Some(i64::MAX)
    });
    let map = demo.json("/api/map");
    wait_for("the page to show the final map", || {
        page = browser.eval(READ_PAGE);
        page["events"] == map["events"]
    });
    assert_eq!(page["journeys"], map["journeys"]);
    let expected: BTreeMap<String, i64> = map["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["touchpoint"].as_str().expect("touchpoint").to_string(),
                n["events"].as_i64().expect("events"),
            )
        })
        .collect();
    let shown: BTreeMap<String, i64> =
        serde_json::from_value(page["nodes"].clone()).expect("touchpoint -> events");
    assert_eq!(shown, expected);
    assert_eq!(page["exits"].as_u64(), Some(expected.len() as u64));
    for f in demo.json("/api/funnels").as_array().expect("funnels") {
        let name = f["name"].as_str().expect("name");
        let reached: Vec<i64> = f["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| s["reached"].as_i64().expect("reached"))
            .collect();
        assert_eq!(page["funnels"][name], json!(reached), "{name}");
        // The trend chart: a point per day of entry, as the API's trend.
        let trend: Vec<Value> = f["trend"]
            .as_array()
            .expect("trend")
            .iter()
            .map(|p| json!([p["day"], p["entered"]]))
            .collect();
        assert!(!trend.is_empty() || f["entered"] == 0, "{name}: {f}");
        assert_eq!(page["trends"][name], json!(trend), "{name}");
    }

    // The alerts panel lists every rule with its state and the journeys it last judged
    // (read again each time: the evaluator may still be catching up with the input's end).
    let api_alerts = || -> BTreeMap<String, Value> {
        demo.json("/api/alerts")["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| {
                let journeys = a["last"]["current"]["entered"]
                    .as_i64()
                    .map_or(String::new(), |n| n.to_string());
                let name = a["name"].as_str().expect("name");
                let key = match a["value"].as_str() {
                    Some(value) => format!("{name}/{value}"),
                    None => name.to_string(),
                };
                (key, json!([a["state"], journeys]))
            })
            .collect()
    };
    assert!(
        api_alerts().contains_key("checkout_conversion"),
        "{:?}",
        api_alerts()
    );
    wait_for("the alerts panel to show the API's alerts", || {
        page = browser.eval(READ_PAGE);
        serde_json::from_value::<BTreeMap<String, Value>>(page["alerts"].clone())
            .is_ok_and(|shown| shown == api_alerts())
    });

    // One segment: the page follows the stream of mobile sessions only, as the API has it.
    browser.eval("loadSegments();");
    wait_for("the segment choice to list mobile", || {
        browser.eval(r#"return [...document.getElementById("segment").options].some(o => o.value === "mobile");"#)
            == json!(true)
    });
    browser.eval(
        r#"const s = document.getElementById("segment"); s.value = "mobile";
           s.dispatchEvent(new Event("change"));"#,
    );
    let mobile = demo.json("/api/map?segment=mobile");
    assert!(
        mobile["events"].as_i64() < map["events"].as_i64(),
        "{mobile}"
    );
    wait_for("the page to show the mobile segment", || {
        page = browser.eval(READ_PAGE);
        page["events"] == mobile["events"] && page["journeys"] == mobile["journeys"]
    });
    browser.eval(
        r#"const s = document.getElementById("segment"); s.value = "";
           s.dispatchEvent(new Event("change"));"#,
    );
    wait_for("the page to show every session again", || {
        browser.eval(READ_PAGE)["events"] == map["events"]
    });

    // Support looks a customer up: the timeline table shows what the API says, the
    // latest touchpoint before the asked one marked.
    let (id, timeline) = (0..600)
        .find_map(|i| {
            let id = format!("u{i}");
            let (status, body) = demo.get(&format!(
                "/api/customers/{id}/timeline?limit=10&before=feature_used"
            ));
            let body: Value = serde_json::from_str(&body).ok()?;
            (status == 200 && body["events"].as_array()?.len() >= 3).then_some((id, body))
        })
        .expect("a customer who used a feature after three touchpoints");
    browser.eval(&format!(
        r#"document.getElementById("customer").value = "{id}";
           document.getElementById("before").value = "feature_used";
           document.getElementById("lookup").requestSubmit();"#
    ));
    let mut expected: Vec<Value> = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["touchpoint"].clone())
        .collect();
    expected.push(json!("feature_used"));
    let read_timeline = r##"return [...document.querySelectorAll("#timeline-rows tr")]
        .map(r => r.children[1].textContent);"##;
    wait_for(
        "the timeline lookup to show the customer's touchpoints",
        || browser.eval(read_timeline) == json!(expected),
    );
    let note = browser.eval(r#"return document.getElementById("timeline-note").textContent;"#);
    assert!(
        note.as_str()
            .is_some_and(|n| n.contains("before feature_used")),
        "{note}"
    );

    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&artifact, &png).expect("save the screenshot");
    eprintln!("dashboard screenshot: {}", artifact.display());

    // Ctrl-C with the page still following the stream: the server ends the stream and
    // stops cleanly.
    let mut demo = demo;
    let (status, stderr) = demo.interrupt();
    assert!(status.success(), "{status}: {stderr}");
}
