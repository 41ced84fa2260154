//! The bad-input corpus: every reader rejects malformed records to the dead letters with
//! their location and reason, keeps everything else, and never panics.

mod common;
use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn corpus(name: &str) -> PathBuf {
    root().join("tests/data/bad").join(name)
}

struct Run {
    summary: serde_json::Value,
    letters: Vec<serde_json::Value>,
}

fn read(input: &Path, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dead.ndjson");
    let mut args = vec![
        "sessions",
        "-f",
        "json",
        "--dead-letter",
        s(&dl),
        "-i",
        s(input),
    ];
    args.extend_from_slice(extra);
    let summary = json(&args);
    let letters = std::fs::read_to_string(&dl)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letters are JSON lines"))
        .collect();
    Run { summary, letters }
}

fn reasons(run: &Run) -> Vec<String> {
    run.letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap().to_string())
        .collect()
}

fn assert_counts(run: &Run, events: u64, rejected: u64) {
    assert_eq!(run.summary["events"], events, "{:#}", run.summary);
    assert_eq!(run.summary["rejected"], rejected, "{:#}", run.summary);
    assert_eq!(
        run.letters.len() as u64,
        rejected,
        "one dead letter per rejected record"
    );
    let n = |k: &str| run.summary[k].as_u64().unwrap();
    assert_eq!(
        n("records"),
        n("events") + n("identity_links") + n("dropped") + n("rejected"),
        "every record read is booked exactly once: {:#}",
        run.summary
    );
}

#[test]
fn csv_rows_are_rejected_one_by_one() {
    let run = read(&corpus("bad.csv"), &[]);
    assert_counts(&run, 2, 6);
    let r = reasons(&run);
    assert!(r[0].starts_with("row has 2 fields, expected 4"), "{r:?}");
    assert!(r[1].contains("invalid UTF-8 in column `touchpoint`"));
    assert!(r[2].contains("cannot parse `yesterday` as a time"));
    assert!(r[3].contains("outside 1970..2200"));
    assert!(r[4].starts_with("missing customer"));
    assert!(r[5].starts_with("missing touchpoint"));
    let lines: Vec<_> = run
        .letters
        .iter()
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7, 8]);
    assert_eq!(run.letters[0]["raw"], "c1,2024-05-01T10:05:00Z");
    assert_eq!(run.summary["rejected_by_reason"]["missing customer"], 1);
}

#[test]
fn ndjson_lines_are_rejected_one_by_one() {
    let run = read(&corpus("bad.ndjson"), &[]);
    assert_counts(&run, 2, 6);
    let r = reasons(&run);
    assert!(r[0].starts_with("invalid JSON"), "{r:?}");
    assert_eq!(r[1], "not a JSON object");
    assert!(r[2].contains("`true` is not a time"));
    assert!(r[3].starts_with("missing touchpoint"));
    assert!(r[4].starts_with("invalid JSON") && r[4].contains("unicode"));
    assert!(r[5].contains("outside 1970..2200"));
    let lines: Vec<_> = run
        .letters
        .iter()
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6, 9]);
}

#[test]
fn xes_events_and_traces_are_rejected_with_offsets() {
    let run = read(&corpus("bad.xes"), &[]);
    assert_counts(&run, 3, 3);
    let r = reasons(&run);
    assert!(r[0].starts_with("missing time"), "{r:?}");
    assert!(r[1].contains("cannot parse `2024-13-45T99:00:00`"));
    assert!(r[2].starts_with("missing customer"));
    assert!(
        run.letters
            .iter()
            .all(|l| l["offset"].as_u64().unwrap() > 0)
    );
    assert_eq!(run.summary["customers"], 2);
    // Nested attributes never rename an event: `decide` stays `decide`.
    assert_eq!(run.summary["touchpoints"], 2);
}

#[test]
fn truncated_gzip_keeps_what_was_read() {
    let run = read(&corpus("truncated.xes.gz"), &[]);
    let events = run.summary["events"].as_u64().unwrap();
    assert!(events > 100 && events < 2000, "{events}");
    assert_eq!(events % 5, 0, "only whole traces are read");
    assert_eq!(run.summary["rejected"], 1);
    assert!(reasons(&run)[0].contains("reading stopped"));
}

#[test]
fn empty_files_have_no_events() {
    for name in ["empty.csv", "empty.ndjson", "empty.xes"] {
        let run = read(&corpus(name), &[]);
        assert_counts(&run, 0, 0);
        assert_eq!(run.summary["customers"], 0);
    }
}

fn one_line_error(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn unreadable_files_are_one_line_errors() {
    let e = one_line_error(&["sessions", "-i", s(&corpus("garbage.parquet"))]);
    assert!(e.contains("not a readable Parquet file"), "{e}");
    let e = one_line_error(&["sessions", "-i", s(&corpus("not-xes.xes"))]);
    assert!(e.contains("not an XES log"), "{e}");
    let e = one_line_error(&["sessions", "-i", "no/such/file.csv"]);
    assert!(e.contains("no such file"), "{e}");
    let e = one_line_error(&[
        "sessions",
        "-i",
        s(&corpus("bad.csv")),
        "--customer",
        "user",
    ]);
    assert!(
        e.contains("--customer") && e.contains("customer_id, ts, touchpoint, plan"),
        "{e}"
    );
    let e = one_line_error(&["sessions", "-i", "events.bin"]);
    assert!(e.contains("no such file") || e.contains("extension"), "{e}");
}

#[test]
fn max_errors_fails_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dead.ndjson");
    let out = run(&[
        "sessions",
        "-i",
        s(&corpus("bad.csv")),
        "--max-errors",
        "2",
        "--dead-letter",
        s(&dl),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("3 records rejected, more than the allowed 2"),
        "{err}"
    );
    assert!(err.contains("rejected by reason"), "{err}");
    assert!(err.contains("1 × row has 2 fields"), "{err}");
    assert_eq!(std::fs::read_to_string(&dl).unwrap().lines().count(), 3);
    // Within budget, the same file succeeds.
    let ok = run(&[
        "sessions",
        "-i",
        s(&corpus("bad.csv")),
        "--max-errors",
        "6",
        "--dead-letter",
        s(&dl),
    ]);
    assert!(ok.status.success());
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_rows_are_rejected_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.parquet");
    write_parquet(
        &path,
        vec![
            (
                "customer_id",
                Arc::new(StringArray::from(vec![
                    Some("c1"),
                    None,
                    Some("c2"),
                    Some("c3"),
                    Some(" "),
                ])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(Int64Array::from(vec![
                    Some(1_714_557_600),
                    Some(1_714_557_600),
                    Some(-5),
                    None,
                    Some(1_714_557_600),
                ])),
            ),
            (
                "touchpoint",
                Arc::new(StringArray::from(vec![
                    Some("home_view"),
                    Some("x"),
                    Some("x"),
                    Some("x"),
                    Some("x"),
                ])),
            ),
            (
                "flag",
                Arc::new(BooleanArray::from(vec![true, false, true, false, true])),
            ),
        ],
    );
    let run = read(&path, &["--time-unit", "s"]);
    assert_counts(&run, 1, 4);
    let r = reasons(&run);
    assert!(r[0].starts_with("missing customer"), "{r:?}");
    assert!(r[1].contains("outside 1970..2200"));
    assert!(r[2].starts_with("missing time"));
    assert!(r[3].starts_with("missing customer"), "a blank id is no id");
    let rows: Vec<_> = run
        .letters
        .iter()
        .map(|l| l["row"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, vec![1, 2, 3, 4]);

    // A column of the wrong type entirely: booleans are not times.
    let wrong = dir.path().join("wrong.parquet");
    write_parquet(
        &wrong,
        vec![
            (
                "customer_id",
                Arc::new(StringArray::from(vec!["c1"])) as ArrayRef,
            ),
            ("ts", Arc::new(BooleanArray::from(vec![true]))),
            ("touchpoint", Arc::new(StringArray::from(vec!["home_view"]))),
        ],
    );
    let run = read(&wrong, &[]);
    assert_counts(&run, 0, 1);
    assert!(reasons(&run)[0].contains("is not a time"));
}

#[test]
fn columnar_and_row_paths_agree() {
    // `sessions` reads only what stitching needs and takes the columnar Parquet path; a
    // batch holding a bad row, or a catalog that classifies values, goes row by row. Both
    // must give the same journeys.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("flat");
    json(&[
        "gen",
        "--customers",
        "1500",
        "--seed",
        "3",
        "--out",
        s(&d),
        "--layout",
        "flat",
        "--file-format",
        "parquet",
        "-f",
        "json",
    ]);
    let clean = json(&["sessions", "-f", "json", "-i", s(&d.join("events.parquet"))]);
    // The same events as NDJSON only have the row path.
    let n = dir.path().join("ndjson");
    json(&[
        "gen",
        "--customers",
        "1500",
        "--seed",
        "3",
        "--out",
        s(&n),
        "--layout",
        "flat",
        "--file-format",
        "ndjson",
        "-f",
        "json",
    ]);
    let rows = json(&["sessions", "-f", "json", "-i", s(&n.join("events.ndjson"))]);
    for key in [
        "events",
        "customers",
        "sessions",
        "touchpoints",
        "first_ts",
        "last_ts",
        "median_events_per_session",
    ] {
        assert_eq!(clean[key], rows[key], "{key}");
    }
}

#[test]
fn csv_with_blank_lines_before_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lead.csv");
    std::fs::write(
        &path,
        "\n\r\ncustomer_id,ts,touchpoint\nc1,2024-05-01T10:00:00Z,home_view\nc1,later,pricing_view\n",
    )
    .unwrap();
    let run = read(&path, &[]);
    assert_counts(&run, 1, 1);
    // Line numbers are the file's, blank lines included.
    assert_eq!(run.letters[0]["line"], 5);
}

#[test]
fn xes_malformed_attributes_and_empty_events_are_rejected_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.xes");
    std::fs::write(
        &path,
        r#"<log xes.version="1.0">
  <string key="bad" value="&bogus;"/>
  <trace>
    <string key="concept:name" value="c1"/>
    <event><string key="concept:name" value="home"/><date key="time:timestamp" value="2024-01-01T00:00:00Z"/></event>
    <event><string key="concept:name" value="x"/><string key="note" value="&bogus;"/><date key="time:timestamp" value="2024-01-01T00:01:00Z"/></event>
    <event/>
  </trace>
  <trace>
    <string key="concept:name" value="&bogus;"/>
    <event><string key="concept:name" value="y"/><date key="time:timestamp" value="2024-01-01T00:00:00Z"/></event>
  </trace>
</log>
"#,
    )
    .unwrap();
    let run = read(&path, &[]);
    assert_counts(&run, 1, 3);
    let r = reasons(&run);
    assert!(r[0].contains("malformed XML attribute"), "{r:?}");
    assert!(r[1].starts_with("missing time"), "{r:?}");
    assert!(r[2].contains("malformed XML attribute"), "{r:?}");
}

#[test]
fn parquet_blank_identifiers_are_no_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blank.parquet");
    write_parquet(
        &path,
        vec![
            (
                "customer_id",
                Arc::new(StringArray::from(vec!["c1", "\u{a0}", "\u{b}"])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(Int64Array::from(vec![
                    1_714_557_600,
                    1_714_557_601,
                    1_714_557_602,
                ])),
            ),
            (
                "touchpoint",
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
            ),
        ],
    );
    // `sessions` takes the columnar path for clean batches; this one must fall back and
    // reject the blank identifiers exactly as the row path does.
    let run = read(&path, &["--time-unit", "s"]);
    assert_counts(&run, 1, 2);
    assert!(
        reasons(&run)
            .iter()
            .all(|r| r.starts_with("missing customer"))
    );
}
