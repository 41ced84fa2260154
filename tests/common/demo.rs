//! `trailmap demo` as a child process: started on free ports (HTTP and PostgreSQL), asked
//! over HTTP, killed when dropped.

use super::bin;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Stdio};

/// A running `trailmap demo`.
pub struct Demo {
    pub child: Child,
    pub base: String,
    /// The PostgreSQL endpoint's port.
    pub postgres_port: u16,
    agent: ureq::Agent,
    /// Kept open: the demo may still write to it.
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// `trailmap demo --port 0 --postgres-port 0 ARGS…`.
    pub fn start(args: &[&str]) -> Demo {
        let mut child = bin()
            .args(["demo", "--port", "0", "--postgres-port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start trailmap demo");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let mut read_line = |what: &str| {
            line.clear();
            stdout
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("reading the {what} line: {e}"));
            line.clone()
        };
        let http = read_line("HTTP");
        let base = super::base_url(&http);
        let pg = read_line("PostgreSQL");
        let postgres_port = pg
            .split_whitespace()
            .skip_while(|w| *w != "-p")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no `-p PORT` in the second line: {pg:?}"));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Demo {
            child,
            base,
            postgres_port,
            agent,
            _stdout: stdout,
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().expect("body"))
    }

    pub fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Ctrl-C (SIGINT); waits (at most 30 s) for it to exit. Its exit status and stderr.
    pub fn interrupt(&mut self) -> (std::process::ExitStatus, String) {
        let signalled = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(signalled.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the demo did not stop within 30 s of Ctrl-C"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut stderr = String::new();
        if let Some(err) = self.child.stderr.as_mut() {
            std::io::Read::read_to_string(err, &mut stderr).expect("stderr");
        }
        (status, stderr)
    }
}

/// The demo's write key when the config sets none (`trailmap demo` prints it).
pub const DEMO_WRITE_KEY: &str = "trailmap-demo";

impl Demo {
    /// POSTs a JSON `body`, with `key` as the Basic auth user name (as Segment's libraries
    /// send the write key). Status and body.
    pub fn post(&self, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
        post_with_key(&self.agent, &format!("{}{path}", self.base), key, body)
    }

    /// `/api/status`' events and late events per source: `source -> (events, late)`.
    pub fn source_counts(&self) -> std::collections::BTreeMap<String, (i64, i64)> {
        self.json("/api/status")["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .map(|s| {
                (
                    s["source"].as_str().expect("source").to_string(),
                    (
                        s["events"].as_i64().expect("events"),
                        s["late"].as_i64().expect("late"),
                    ),
                )
            })
            .collect()
    }
}

/// Polls `done` every 100 ms; fails after `secs` seconds, saying what it waited for.
pub fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited {secs} s for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// `millis` since the Unix epoch as Segment writes times: `2026-12-03T18:21:17.123Z`.
pub fn iso_utc(millis: i64) -> String {
    let (days, ms) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000
    )
}

/// POSTs a JSON `body` to `url`, with `key` as the Basic auth user name (as Segment's
/// libraries send the write key). Status and body.
pub fn post_with_key(
    agent: &ureq::Agent,
    url: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut request = agent.post(url).header("content-type", "application/json");
    if let Some(key) = key {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        request = request.header("authorization", format!("Basic {auth}"));
    }
    let mut response = request
        .send(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().expect("body"))
}

/// The count of the map's edge `from` → `to` (0 when it has none).
pub fn edge(map: &serde_json::Value, from: &str, to: &str) -> i64 {
    map["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["from"] == from && e["to"] == to)
        .map_or(0, |e| e["count"].as_i64().expect("count"))
}
