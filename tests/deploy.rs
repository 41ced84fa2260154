//! The example Prometheus rules in `deploy/prometheus/`: valid for the real `promtool`, their
//! unit tests pass, and every trailmap metric they read is one a running server exports.

mod common;
use common::demo::Demo;
use common::root;
use std::process::Command;
use std::time::{Duration, Instant};

const RULES: &str = "deploy/prometheus/trailmap-alerts.yml";

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs Prometheus' promtool ({e}): apt-get install prometheus \
                 (.ci/run does)"
            )
        })
}

fn assert_ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_example_rules_check_and_their_unit_tests_pass() {
    assert_ok(
        promtool(&["check", "rules", "trailmap-alerts.yml"]),
        "promtool check rules",
    );
    assert_ok(
        promtool(&["test", "rules", "trailmap-alerts.test.yml"]),
        "promtool test rules",
    );
}

/// A rule on a metric the server does not export would never fire; a rename must fail here.
#[test]
fn the_example_rules_read_metrics_the_demo_exports() {
    let rules = std::fs::read_to_string(root().join(RULES)).expect("rules file");
    let mut used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("trailmap_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 5, "{used:?}");

    // The demo runs the built-in config, whose alert rule is evaluated as traffic flows.
    let demo = Demo::start(&["--customers", "400", "--days", "3", "--rate", "4000"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, metrics) = demo.get("/metrics");
        assert_eq!(status, 200, "{metrics}");
        let exported: Vec<&str> = metrics
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let missing: Vec<&&str> = used.iter().filter(|u| !exported.contains(u)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{RULES} reads {missing:?}, which /metrics does not export:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
