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
