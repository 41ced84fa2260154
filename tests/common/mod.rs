//! Helpers for the integration tests: run the real `trailmap` binary and read its JSON.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trailmap"))
}

/// The project root (tests live in crates/trailmap but read files relative to the root).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared/data/real/NAME`, failing with a clear message when the real logs are absent.
pub fn real(name: &str) -> PathBuf {
    let p = root().join("../shared/data/real").join(name);
    assert!(
        p.exists(),
        "real log {} is missing: the tests read ../shared/data/real next to the checkout",
        p.display()
    );
    p
}

pub fn run(args: &[&str]) -> Output {
    let out = bin().args(args).output().expect("run trailmap");
    out
}

/// Runs and parses stdout as JSON, asserting success.
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "trailmap {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout))
    })
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
