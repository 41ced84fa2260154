//! Helpers for the integration tests: run the real `trailmap` binary and read its JSON.

#![allow(dead_code)]

pub mod demo;
pub mod live;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trailmap"))
}

/// The project root (tests live in crates/trailmap but read files relative to the root).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A real log from `shared/data/real`: `$TRAILMAP_REAL_DATA`, else `../shared/data/real`
/// next to the checkout (or next to any ancestor of it), else `/work/shared/data/real`.
/// Fails with a clear message when the logs are nowhere.
pub fn real(name: &str) -> PathBuf {
    let root = root().canonicalize().unwrap_or_else(|_| root());
    let mut candidates: Vec<PathBuf> = std::env::var_os("TRAILMAP_REAL_DATA")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.extend(root.ancestors().map(|a| a.join("shared/data/real")));
    candidates.push(PathBuf::from("/work/shared/data/real"));
    let dir = candidates.iter().find(|d| d.join(name).exists()).unwrap_or_else(|| {
        panic!(
            "real log {name} not found; looked in {candidates:?}. Set TRAILMAP_REAL_DATA to the \
             directory holding the shared real logs"
        )
    });
    dir.join(name)
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run trailmap")
}

/// Runs and parses stdout as JSON, asserting success.
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "trailmap {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

/// The base URL (no trailing slash) in a server's "http listening on http://…/ …" line.
pub fn base_url(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_string()
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A `KIND=FILE` input spec.
pub fn input(kind: &str, path: &Path) -> String {
    format!("{kind}={}", s(path))
}

/// The `gen` sources in `dir` with extension `ext`, as input specs.
pub fn generated_sources(dir: &Path, ext: &str) -> Vec<String> {
    ["clickstream", "ticket", "crm"]
        .iter()
        .map(|kind| input(kind, &dir.join(format!("{kind}.{ext}"))))
        .collect()
}

/// `trailmap sessions -f json -i INPUT …`, parsed.
pub fn sessions_json(inputs: &[String]) -> serde_json::Value {
    let mut args = vec!["sessions", "-f", "json"];
    for i in inputs {
        args.extend(["-i", i.as_str()]);
    }
    json(&args)
}

fn psql_program() -> &'static str {
    let found = Command::new("psql").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "this test needs the real psql client: apt-get install postgresql-client (.ci/run does)"
    );
    "psql"
}

/// Runs one `psql -c COMMAND` against `127.0.0.1:port` as `trailmap`, unaligned, tuples only.
pub fn psql(port: u16, password: &str, command: &str) -> Output {
    Command::new(psql_program())
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "trailmap",
            "-d",
            "trailmap",
            "-c",
            command,
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql")
}

/// psql's output, asserting it succeeded.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "psql failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The same events twice, as CSV: grouped by customer, and interleaved (round robin over
/// customers, each customer's rows in the same order), so every journey is the same.
pub fn grouped_and_interleaved(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    // A tiny LCG: the same events on every run.
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    const TOUCHPOINTS: [&str; 7] = ["a", "b", "c", "x", "o", "p", "a"];
    let mut customers: Vec<Vec<String>> = Vec::new();
    for c in 0..400 {
        let mut rows = Vec::new();
        let mut minute = next(60 * 24 * 40) as i64;
        for _ in 0..1 + next(24) {
            // Coarse times (ties), sometimes back in time (out of order in the file).
            minute += next(7) as i64 * 30 - 40;
            let ts = 1_767_225_600 + minute.max(0) * 60;
            let tp = TOUCHPOINTS[next(TOUCHPOINTS.len() as u64) as usize];
            rows.push(format!("cust{c},{ts},{tp}\n"));
        }
        customers.push(rows);
    }
    let header = "customer_id,ts,touchpoint\n";
    let grouped = dir.join("grouped.csv");
    let interleaved = dir.join("interleaved.csv");
    std::fs::write(&grouped, header.to_string() + &customers.concat().concat()).unwrap();
    let longest = customers.iter().map(Vec::len).max().unwrap_or(0);
    let mut text = header.to_string();
    for k in 0..longest {
        for rows in &customers {
            if let Some(r) = rows.get(k) {
                text.push_str(r);
            }
        }
    }
    std::fs::write(&interleaved, text).unwrap();
    (grouped, interleaved)
}

/// The CSV of [`grouped_and_interleaved`] (`customer_id,ts,touchpoint`, epoch seconds) as
/// a Parquet file at `out` of row groups of `rows_per_group` rows, times in microseconds as
/// exports write them; a touchpoint `""` is written as it is (a record only the row path
/// reads).
pub fn csv_to_parquet(csv: &Path, out: &Path, rows_per_group: usize) {
    use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;
    let text = std::fs::read_to_string(csv).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let customer = StringArray::from_iter_values(rows.iter().map(|r| r[0]));
    let ts = TimestampMicrosecondArray::from_iter_values(
        rows.iter()
            .map(|r| r[1].parse::<i64>().unwrap() * 1_000_000),
    )
    .with_timezone("UTC");
    let touchpoint = StringArray::from_iter_values(rows.iter().map(|r| r[2]));
    let batch = RecordBatch::try_from_iter([
        ("customer_id", Arc::new(customer) as ArrayRef),
        ("ts", Arc::new(ts) as ArrayRef),
        ("touchpoint", Arc::new(touchpoint) as ArrayRef),
    ])
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows_per_group))
        .build();
    let file = std::fs::File::create(out).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    // A row group at a time: the writer splits a longer batch by recursing once per row
    // group, which overflows a test thread's stack at thousands of them.
    for start in (0..batch.num_rows()).step_by(rows_per_group) {
        let n = rows_per_group.min(batch.num_rows() - start);
        w.write(&batch.slice(start, n)).unwrap();
    }
    w.close().unwrap();
}

/// Runs `args` with `TRAILMAP_TIMINGS` set: the JSON report and stderr (which says whether
/// the input was streamed).
pub fn run_timed(args: &[&str]) -> (serde_json::Value, String) {
    let out = bin()
        .args(args)
        .env("TRAILMAP_TIMINGS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}
