//! `window_funnel` in SQL against ClickHouse's own answers (the random corpus recorded with
//! chdb in tests/fixtures/peers), and against `trailmap funnel`'s level function on random
//! groups split across partitions; the sequence functions and retention likewise.

use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, UInt8Type};
use datafusion::catalog::MemTable;
use proptest::prelude::*;
use std::sync::Arc;
use trailmap_mine::funnel::{Modes, WindowFunnel};
use trailmap_sql::Analyst;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn level(analyst: &Analyst, sql: &str) -> u8 {
    let batches = analyst
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    batches[0].column(0).as_primitive::<UInt8Type>().value(0)
}

#[test]
fn random_corpus_equals_clickhouse() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/peers/random_window_funnel.json.gz"
    );
    let file = std::fs::File::open(path).expect("fixture");
    let corpus: serde_json::Value =
        serde_json::from_reader(flate2::read::GzDecoder::new(file)).unwrap();
    let analyst = Analyst::default();
    let rt = runtime();
    let mut checked = 0;
    for case in corpus["cases"].as_array().unwrap().iter().step_by(4) {
        let events = case["events"].as_array().unwrap();
        if events.is_empty() {
            continue;
        }
        let values: Vec<String> = events
            .iter()
            .map(|e| format!("({}, '{}')", e[0], e[1].as_str().unwrap()))
            .collect();
        let conditions: Vec<String> = case["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("e = '{}'", s.as_str().unwrap()))
            .collect();
        let sql = format!(
            "SELECT window_funnel({}, '{}', ts, {}) FROM (VALUES {}) AS t(ts, e)",
            case["window"],
            case["mode"].as_str().unwrap(),
            conditions.join(", "),
            values.join(", ")
        );
        let expected = case["level"].as_u64().unwrap() as u8;
        assert_eq!(rt.block_on(level(&analyst, &sql)), expected, "{sql}");
        checked += 1;
    }
    assert!(checked > 900);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Many customers, rows shuffled over several partitions (so partial states merge):
    /// every customer's level equals the funnel code run on its events directly.
    #[test]
    fn grouped_levels_equal_the_funnel_code(
        rows in prop::collection::vec((0u8..30, 0i64..50, 0u8..4), 1..400),
        partitions in 1usize..4,
        mode in 0usize..4,
    ) {
        let mode = ["", "strict_order", "strict_once,strict_increase", "strict_deduplication"][mode];
        let names = ["a", "b", "c", "x"];
        let schema = Arc::new(Schema::new(vec![
            Field::new("c", DataType::Int64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("e", DataType::Utf8, false),
        ]));
        let batch = |part: &[(u8, i64, u8)]| {
            RecordBatch::try_new(schema.clone(), vec![
                Arc::new(Int64Array::from_iter_values(part.iter().map(|r| i64::from(r.0)))),
                Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(part.iter().map(|r| names[r.2 as usize]))),
            ]).unwrap()
        };
        let chunk = rows.len().div_ceil(partitions);
        let parts: Vec<Vec<RecordBatch>> = rows.chunks(chunk).map(|p| vec![batch(p)]).collect();
        let analyst = Analyst::default();
        analyst.ctx.register_table("t", Arc::new(MemTable::try_new(schema.clone(), parts).unwrap())).unwrap();
        let sql = format!(
            "SELECT c, window_funnel(10, '{mode}', ts, e = 'a', e = 'b', e = 'c') FROM t GROUP BY c ORDER BY c"
        );
        let batches = runtime().block_on(analyst.query(&sql)).unwrap();
        let mut funnel = WindowFunnel::new(3, 10_000_000, Modes::parse(mode).unwrap()).unwrap();
        for b in &batches {
            let (customers, levels) = (b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>(), b.column(1).as_primitive::<UInt8Type>());
            for i in 0..b.num_rows() {
                let c = customers.value(i) as u8;
                let mut events: Vec<(i64, u32)> = rows
                    .iter()
                    .filter(|r| r.0 == c)
                    .map(|r| (r.1 * 1_000_000, if r.2 < 3 { 1 << r.2 } else { 0 }))
                    .filter(|e| e.1 != 0 || mode.contains("strict_order"))
                    .collect();
                prop_assert_eq!(levels.value(i), funnel.level(&mut events), "customer {}", c);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(30))]

    /// sequence_count, sequence_match and retention grouped over shuffled partitions equal the
    /// mining code run on each customer's events taken in (time, condition) order.
    #[test]
    fn grouped_sequences_equal_the_mining_code(
        rows in prop::collection::vec((0u8..20, 0i64..30, 0u8..4), 1..300),
        partitions in 1usize..4,
        pattern in 0usize..4,
    ) {
        use datafusion::arrow::datatypes::{Int64Type, UInt64Type};
        use trailmap_mine::sequence::{Retention, SequencePattern};
        let pattern = ["(?1)(?2)", "(?1).*(?2)(?3)", "(?1)(?t<=5)(?2)", "(?2).(?1)"][pattern];
        let names = ["a", "b", "c", "x"];
        let schema = Arc::new(Schema::new(vec![
            Field::new("c", DataType::Int64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("e", DataType::Utf8, false),
        ]));
        let batch = |part: &[(u8, i64, u8)]| {
            RecordBatch::try_new(schema.clone(), vec![
                Arc::new(Int64Array::from_iter_values(part.iter().map(|r| i64::from(r.0)))),
                Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(part.iter().map(|r| names[r.2 as usize]))),
            ]).unwrap()
        };
        let chunk = rows.len().div_ceil(partitions);
        let parts: Vec<Vec<RecordBatch>> = rows.chunks(chunk).map(|p| vec![batch(p)]).collect();
        let analyst = Analyst::default();
        analyst.ctx.register_table("t", Arc::new(MemTable::try_new(schema.clone(), parts).unwrap())).unwrap();
        let sql = format!(
            "SELECT c, sequence_count('{pattern}', ts, e = 'a', e = 'b', e = 'c'), \
             sequence_match('{pattern}', ts, e = 'a', e = 'b', e = 'c'), \
             retention(e = 'a', e = 'b', e = 'c') FROM t GROUP BY c ORDER BY c"
        );
        let batches = runtime().block_on(analyst.query(&sql)).unwrap();
        let mut sequence = SequencePattern::parse(pattern, 3).unwrap();
        let retention = Retention::new(3).unwrap();
        for b in &batches {
            let customers = b.column(0).as_primitive::<Int64Type>();
            let counts = b.column(1).as_primitive::<UInt64Type>();
            let matched = b.column(2).as_boolean();
            let retained = b.column(3).as_list::<i32>();
            for i in 0..b.num_rows() {
                let c = customers.value(i) as u8;
                let mut events: Vec<(i64, u32)> = rows
                    .iter()
                    .filter(|r| r.0 == c && r.2 < 3)
                    .map(|r| (r.1 * 1_000_000, 1 << r.2))
                    .collect();
                events.sort_unstable();
                prop_assert_eq!(counts.value(i), sequence.count(&events).unwrap(), "customer {}", c);
                prop_assert_eq!(matched.value(i), sequence.matches(&events).unwrap(), "customer {}", c);
                let met = events.iter().fold(0, |m, e| m | e.1);
                let expected: Vec<u8> = retention.values(met).collect();
                let got = retained.value(i);
                let got: Vec<u8> = got.as_primitive::<UInt8Type>().values().to_vec();
                prop_assert_eq!(got, expected, "customer {}", c);
            }
        }
    }
}
