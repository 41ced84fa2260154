//! `trailmap sql` end to end: the table functions return what the CLI commands return,
//! `window_funnel` over the Taobao slice equals ClickHouse and `trailmap funnel` in every
//! mode, files register as tables, scripts run from stdin, and writes are refused.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;

fn shop() -> String {
    root()
        .join("tests/sql/data/shop.csv")
        .to_string_lossy()
        .into_owned()
}

fn sql(args: &[&str]) -> Value {
    let mut all = vec!["sql", "--format", "json"];
    all.extend_from_slice(args);
    json(&all)
}

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().expect("an array of rows")
}

#[test]
fn paths_function_returns_what_trailmap_paths_returns() {
    let shop = shop();
    let cli = json(&["paths", "--format", "json", "--input", &shop]);
    let table = sql(&["--input", &shop, "SELECT * FROM paths()"]);
    let from_cli: BTreeMap<(String, String), (u64, Value, Value, Value)> =
        rows(&cli["transitions"])
            .iter()
            .map(|t| {
                (
                    (
                        t["from"].as_str().unwrap().into(),
                        t["to"].as_str().unwrap().into(),
                    ),
                    (
                        t["count"].as_u64().unwrap(),
                        t["mean_seconds"].clone(),
                        t["median_seconds"].clone(),
                        t["p90_seconds"].clone(),
                    ),
                )
            })
            .collect();
    let from_sql: BTreeMap<(String, String), (u64, Value, Value, Value)> = rows(&table)
        .iter()
        .map(|t| {
            (
                (
                    t["from"].as_str().unwrap().into(),
                    t["to"].as_str().unwrap().into(),
                ),
                (
                    t["count"].as_u64().unwrap(),
                    t["mean_seconds"].clone(),
                    t["median_seconds"].clone(),
                    t["p90_seconds"].clone(),
                ),
            )
        })
        .collect();
    assert_eq!(from_cli.len(), 6);
    assert_eq!(from_sql, from_cli);
}

#[test]
fn funnel_and_dropoffs_functions_return_what_the_commands_return() {
    let shop = shop();
    let cli = json(&[
        "funnel",
        "--format",
        "json",
        "--input",
        &shop,
        "--steps",
        "home,pricing,signup",
        "--window",
        "1h",
        "--mode",
        "strict_order",
    ]);
    let table = sql(&[
        "--input",
        &shop,
        "SELECT * FROM funnel('home,pricing,signup', '1h', 'strict_order') ORDER BY step",
    ]);
    let steps = rows(&cli["steps"]);
    assert_eq!(rows(&table).len(), 3);
    for (row, step) in rows(&table).iter().zip(steps) {
        for key in ["name", "reached", "dropped", "maturing"] {
            assert_eq!(row[key], step[key], "{key}");
        }
        for key in ["conversion_from_previous", "conversion_from_first"] {
            assert_eq!(row[key].as_f64(), step[key].as_f64(), "{key}");
        }
        assert_eq!(
            row["median_seconds_from_previous"],
            step["time_from_previous"]["median_seconds"]
        );
    }
    assert_eq!(rows(&table)[0]["reached"], 4);

    let cli = json(&[
        "dropoffs", "--format", "json", "--input", &shop, "--goal", "purchase",
    ]);
    let table = sql(&["--input", &shop, "SELECT * FROM dropoffs('purchase')"]);
    let by_touchpoint = |rows: &Vec<Value>| -> BTreeMap<String, (Value, Value, Value)> {
        rows.iter()
            .map(|r| {
                (
                    r["touchpoint"].as_str().unwrap().to_string(),
                    (
                        r["journeys"].clone(),
                        r["exits"].clone(),
                        r["abandoned"].clone(),
                    ),
                )
            })
            .collect()
    };
    assert_eq!(
        by_touchpoint(rows(&table)),
        by_touchpoint(rows(&cli["touchpoints"]))
    );
}

/// `window_funnel` grouped by customer over the Taobao slice: the level distribution equals
/// ClickHouse's (recorded by tests/fixtures/peers/record.sh) and `trailmap funnel`'s, for
/// both funnels in every mode ClickHouse accepts.
#[test]
fn taobao_window_funnel_equals_clickhouse_in_every_mode() {
    let path = root().join("tests/fixtures/peers/taobao_window_funnel.json");
    let expected: Value =
        serde_json::from_reader(std::fs::File::open(&path).expect("fixture")).unwrap();
    let mut parts = Vec::new();
    let mut wanted = BTreeMap::new();
    for (i, f) in rows(&expected["funnels"]).iter().enumerate() {
        if f.get("error").is_some() {
            continue;
        }
        let steps: Vec<String> = rows(&f["steps"])
            .iter()
            .map(|s| format!("touchpoint = '{}'", s.as_str().unwrap()))
            .collect();
        parts.push(format!(
            "SELECT {i} AS funnel, level, count(*) AS customers FROM (\
               SELECT customer, window_funnel(86400, '{}', ts, {}) AS level \
               FROM events GROUP BY customer) GROUP BY level",
            f["mode"].as_str().unwrap(),
            steps.join(", ")
        ));
        for (level, count) in f["levels"].as_object().unwrap() {
            if count.as_u64().unwrap() > 0 {
                wanted.insert(
                    (i as u64, level.parse::<u64>().unwrap()),
                    count.as_u64().unwrap(),
                );
            }
        }
    }
    assert!(parts.len() >= 14, "every accepted mode of both funnels");
    let taobao = real("UserBehavior_sample.csv");
    let query = parts.join(" UNION ALL ");
    let got = sql(&[
        "--input",
        s(&taobao),
        "--no-header",
        "--columns",
        "user_id,item_id,category_id,behavior,ts",
        "--customer",
        "user_id",
        "--touchpoint",
        "behavior",
        "--time",
        "ts",
        "--time-unit",
        "s",
        &query,
    ]);
    let got: BTreeMap<(u64, u64), u64> = rows(&got)
        .iter()
        .map(|r| {
            (
                (r["funnel"].as_u64().unwrap(), r["level"].as_u64().unwrap()),
                r["customers"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, wanted);
    let total: u64 = got
        .iter()
        .filter(|((f, _), _)| *f == 0)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(total, expected["users"].as_u64().unwrap());
}

#[test]
fn files_register_as_tables_and_scripts_run_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("visits.csv");
    std::fs::write(&csv, "user,ts,page\nu1,1,home\nu1,5,pricing\nu2,3,home\n").unwrap();
    let table = format!("visits={}", s(&csv));
    let got = sql(&[
        "--table",
        &table,
        "SELECT user, window_funnel(10, '', ts, page = 'home', page = 'pricing') AS level \
         FROM visits GROUP BY user ORDER BY user",
    ]);
    assert_eq!(
        got,
        serde_json::json!([{"user": "u1", "level": 2}, {"user": "u2", "level": 1}])
    );

    // Statements from stdin, one result after another.
    let mut child = bin()
        .args(["sql", "--format", "csv", "--table", &table])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT count(*) AS n FROM visits;\nSELECT 'a;b' AS s;\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n3\ns\na;b\n");
}

#[test]
fn writes_and_bad_tables_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.csv");
    for query in [
        "CREATE TABLE t AS VALUES (1)".to_string(),
        "DROP TABLE events".to_string(),
        format!("COPY (SELECT 1) TO '{}'", s(&target)),
        "INSERT INTO events SELECT * FROM events".to_string(),
    ] {
        let out = run(&["sql", "--input", &shop(), &query]);
        assert!(!out.status.success(), "{query} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("not supported") || err.contains("not allowed"),
            "{query}: {err}"
        );
    }
    assert!(!target.exists(), "COPY wrote a file");

    let out = run(&["sql", "--table", "nofile", "SELECT 1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=FILE"));
    let out = run(&["sql", "--table", "t=/no/such.parquet", "SELECT 1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    let out = run(&["sql", "--input", &shop(), "SELECT * FROM funnel('nope')"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a configured journey"));
}

/// `trailmap sql` streams `events` from input grouped by customer (no journey log) and
/// loads anything else: on the same events, grouped and interleaved, every query gives the
/// same rows, each through the path it should; queries the stream cannot answer (other
/// tables, table functions, the `stage` column) run over the loaded journeys.
#[test]
fn streamed_events_equal_the_loaded_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (grouped, interleaved) = grouped_and_interleaved(dir.path());
    let dl = dir.path().join("dead.ndjson");
    // Each query, and the operator that aggregates its GROUP BY customer, if it checks one:
    // the scan itself when every aggregate is a behavioural function on touchpoints, else
    // customer runs; never hashing.
    let streamed: &[(&str, Option<&str>)] = &[
        (
            "SELECT level, count(*) AS n FROM (SELECT customer, window_funnel(259200, '', ts, \
         touchpoint = 'a', touchpoint = 'b', touchpoint = 'c') AS level FROM events \
         GROUP BY customer) GROUP BY level ORDER BY level",
            Some("StreamedAggregateExec"),
        ),
        // Rows in journey order: customer, then time, ties by arrival; sessions numbered.
        (
            "SELECT customer, array_agg(touchpoint) AS path, array_agg(ts) AS times, \
         max(session) AS sessions FROM events GROUP BY customer ORDER BY customer",
            None,
        ),
        (
            "SELECT customer, session, count(*) AS n, min(ts) AS first FROM events \
         GROUP BY customer, session ORDER BY customer, session",
            None,
        ),
        (
            "SELECT touchpoint, count(*) AS n FROM events WHERE session > 0 GROUP BY touchpoint \
         ORDER BY touchpoint",
            None,
        ),
        ("SELECT count(*) AS n FROM events", None),
        // Behavioural functions computed by the scan (conditions on touchpoints, either way
        // round, repeated, unknown), then ones it leaves to the aggregation (another
        // aggregate beside them; a condition on another column).
        (
            "SELECT customer, window_funnel(259200, 'strict_order', ts, touchpoint = 'a', \
         touchpoint = 'b') AS l, sequence_count('(?1).*(?2)', ts, 'b' = touchpoint, \
         touchpoint = 'c') AS n, window_funnel(7200, 'strict_deduplication,strict_increase', \
         ts, touchpoint = 'a', touchpoint = 'b', touchpoint = 'a', touchpoint = 'nowhere') \
         AS d FROM events GROUP BY customer ORDER BY customer",
            Some("StreamedAggregateExec"),
        ),
        (
            "SELECT customer, window_funnel(259200, '', ts, touchpoint = 'a', touchpoint = 'b') \
         AS l, count(*) AS n FROM events GROUP BY customer ORDER BY customer",
            Some("RunAggregateExec"),
        ),
        (
            "SELECT customer, sequence_match('(?1)(?2)', ts, touchpoint = 'a', session > 0) AS m \
         FROM events GROUP BY customer ORDER BY customer",
            Some("RunAggregateExec"),
        ),
        (
            "SELECT customer, session, ts, touchpoint FROM events \
         ORDER BY customer, session, ts, touchpoint LIMIT 50",
            None,
        ),
    ];
    let loaded: &[&str] = &[
        "SELECT customer, count(*) AS n FROM journeys GROUP BY customer ORDER BY customer",
        "SELECT stage, count(*) AS n FROM events GROUP BY stage",
        "SELECT * FROM events ORDER BY customer, session, ts, touchpoint LIMIT 50",
        "SELECT * FROM paths() ORDER BY \"from\", \"to\"",
        "SELECT e.customer, count(*) AS n FROM events e JOIN transitions t \
         ON e.customer = t.customer GROUP BY e.customer ORDER BY e.customer",
    ];
    let loaded: Vec<(&str, Option<&str>)> = loaded.iter().map(|q| (*q, None)).collect();
    for (queries, streams) in [(streamed, true), (&loaded[..], false)] {
        for &(query, aggregated_by) in queries {
            let with_query = |file: &std::path::Path, query: &str| {
                let args = [
                    "sql",
                    "--format",
                    "json",
                    "--dead-letter",
                    s(&dl),
                    "--gap",
                    "2h",
                ];
                let mut args = args.to_vec();
                args.extend(["--input", s(file), query]);
                run_timed(&args)
            };
            let with = |file: &std::path::Path| with_query(file, query);
            let (from_grouped, how) = with(&grouped);
            if streams {
                assert!(how.contains("read + aggregate, streamed"), "{query}: {how}");
                assert!(!how.contains("read + stitch"), "{query}: {how}");
            } else {
                assert!(how.contains("query not streamed"), "{query}: {how}");
                assert!(how.contains("read + stitch"), "{query}: {how}");
            }
            if let Some(operator) = aggregated_by {
                let (plan, _) = with_query(&grouped, &format!("EXPLAIN {query}"));
                let plan = plan.to_string();
                assert!(plan.contains(operator), "{plan}");
                for other in [
                    "StreamedAggregateExec",
                    "RunAggregateExec",
                    "AggregateExec: mode",
                ] {
                    if other != operator && !query.contains("GROUP BY level") {
                        assert!(!plan.contains(other), "{plan}");
                    }
                }
            }
            let (from_interleaved, how) = with(&interleaved);
            assert!(how.contains("read + stitch"), "{query}: {how}");
            assert_eq!(from_grouped, from_interleaved, "{query}");
            assert!(!rows(&from_grouped).is_empty(), "{query}");
        }
    }
}
