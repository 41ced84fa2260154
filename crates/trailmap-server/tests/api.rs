//! The HTTP API over a real live pipeline: every endpoint answers from the pipeline's map,
//! the numbers agree with it, and a client's mistakes get a clear 4xx in JSON, never a 5xx.

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use trailmap_gen::GenOptions;
use trailmap_live::{GeneratorSource, LiveHandle, LiveSource, Paced, PipelineOptions};
use trailmap_model::Config;
use trailmap_server::{AppState, Readiness};

struct Server {
    runtime: tokio::runtime::Runtime,
    live: Arc<LiveHandle>,
    base: String,
    ready: Arc<AtomicBool>,
    agent: ureq::Agent,
}

impl Server {
    /// A pipeline on `customers` generated customers, run to the end of its input, and
    /// the HTTP server on a free port.
    fn start(customers: u64) -> Server {
        let server = Server::streaming(customers, None);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !server.live.input_ended() {
            assert!(Instant::now() < deadline, "the generated input never ended");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The same, with the input played at `rate` records a second, returning at once.
    fn streaming(customers: u64, rate: Option<f64>) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = Config::builtin();
        let opts = GenOptions {
            customers,
            days: 7,
            ..GenOptions::default()
        };
        let generated = GeneratorSource::new(opts, 1024);
        let source: Box<dyn LiveSource> = match rate {
            Some(rate) => Box::new(
                Paced::new(Box::new(generated), rate, Duration::from_millis(100)).expect("rate"),
            ),
            None => Box::new(generated),
        };
        let live = runtime.block_on(async {
            let options = PipelineOptions {
                shards: 2,
                channel_batches: 4,
            };
            trailmap_live::start(&config, source, &options).expect("start")
        });
        let live = Arc::new(live);
        let ready = Arc::new(AtomicBool::new(true));
        let flag = ready.clone();
        let readiness: Readiness = Arc::new(move || {
            if flag.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("kafka: 1/1 brokers are down".into())
            }
        });
        let router = trailmap_server::router(AppState::new(live.clone(), Some(readiness)));
        let address: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let listener = runtime
            .block_on(trailmap_server::bind(address))
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        runtime.spawn(trailmap_server::serve(
            listener,
            router,
            std::future::pending(),
        ));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Server {
            runtime,
            live,
            base,
            ready,
            agent,
        }
    }

    /// Status and JSON body of a GET.
    fn get(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.get_text(path);
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"));
        (status, body)
    }

    fn get_text(&self, path: &str) -> (u16, String) {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("GET {path}: body: {e}"));
        (status, text)
    }

    fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn status(&self) -> trailmap_live::LiveStatus {
        self.runtime.block_on(self.live.status()).expect("status")
    }
}

fn sum(list: &Value, field: &str) -> i64 {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|x| x[field].as_i64().expect("a count"))
        .sum()
}

#[test]
fn the_map_and_its_views_are_the_pipelines_counts() {
    let server = Server::start(2_000);
    let status = server.status();
    let all = server
        .runtime
        .block_on(server.live.window(i64::MIN, i64::MAX))
        .expect("window");
    assert!(
        all.events > 1_000,
        "too little traffic to say much: {}",
        all.events
    );

    let map = server.ok("/api/map");
    assert_eq!(map["events"], all.events);
    assert_eq!(map["journeys"], all.journeys);
    let nodes = map["nodes"].as_array().expect("nodes");
    let edges = map["edges"].as_array().expect("edges");
    assert!(nodes.len() > 5 && edges.len() > 5);
    for n in nodes {
        for field in [
            "id",
            "touchpoint",
            "stage",
            "events",
            "journeys",
            "exits",
            "exit_rate",
        ] {
            assert!(n.get(field).is_some(), "node without {field}: {n}");
        }
    }
    let transitions: i64 = all.transitions.iter().map(|(_, t)| t.count).sum();
    assert_eq!(sum(&map["edges"], "count"), transitions);
    assert_eq!(sum(&map["nodes"], "events"), all.events);

    // A window of the last hour of event time counts what the pipeline counts there.
    let newest = status.newest.expect("events were seen");
    let hour = server
        .runtime
        .block_on(server.live.window(newest - 3_600_000_000, newest + 1))
        .expect("window");
    let last_hour = server.ok("/api/map?window=1h");
    assert_eq!(last_hour["events"], hour.events);
    assert!(hour.events < all.events);

    let paths = server.ok("/api/paths?window=all&scope=session");
    assert_eq!(paths["events"], all.events);
    assert_eq!(sum(&paths["transitions"], "count"), transitions);
    assert_eq!(sum(&paths["starts"], "count"), all.journeys);
    assert_eq!(sum(&paths["ends"], "count"), all.journeys);

    let dropoffs = server.ok("/api/dropoffs");
    let rows = dropoffs["touchpoints"].as_array().expect("touchpoints");
    assert_eq!(sum(&dropoffs["touchpoints"], "exits"), all.journeys);
    assert!(
        rows.windows(2)
            .all(|w| w[0]["exits"].as_i64() >= w[1]["exits"].as_i64())
    );

    // Funnels: one by name equals its entry in the map; maturing is as of the newest event.
    let funnels = server.ok("/api/funnels");
    assert_eq!(funnels, map["funnels"]);
    for f in funnels.as_array().expect("funnels") {
        let name = f["name"].as_str().expect("name");
        let one = server.ok(&format!("/api/funnels/{name}"));
        assert_eq!(&one, f);
        let steps = one["steps"].as_array().expect("steps");
        assert_eq!(one["entered"], steps[0]["reached"]);
        assert_eq!(one["converted"], steps[steps.len() - 1]["reached"]);
        // The trend by day of entry adds up to the funnel, days in order.
        for field in ["entered", "converted", "maturing"] {
            assert_eq!(
                sum(&one["trend"], field),
                one[field].as_i64().expect(field),
                "{name} {field}"
            );
        }
        let days: Vec<&str> = one["trend"]
            .as_array()
            .expect("trend")
            .iter()
            .map(|p| p["day"].as_str().expect("day"))
            .collect();
        assert!(days.windows(2).all(|w| w[0] < w[1]), "{days:?}");
        assert!(
            days.iter().all(|d| d.len() == 10 && d.starts_with("2026-")),
            "{days:?}"
        );
    }
    // A window's trend adds up to that window's funnel.
    for window in ["1h", "7d", "21d"] {
        let part = server.ok(&format!("/api/funnels/support_resolution?window={window}"));
        for field in ["entered", "converted", "maturing"] {
            let expected = part[field].as_i64().expect(field);
            assert_eq!(sum(&part["trend"], field), expected, "{window} {field}");
        }
    }
    let trial = server.ok("/api/funnels/trial_to_purchase");
    assert!(trial["entered"].as_i64() > Some(0));
}

#[test]
fn mistakes_get_a_clear_4xx_in_json() {
    let server = Server::start(200);
    for (path, status, says) in [
        ("/api/map?window=soon", 400, "not a duration"),
        ("/api/map?window=0", 400, "longer than 0"),
        ("/api/map?scope=customer", 400, "scope=session"),
        ("/api/map?scope=visit", 400, "scope must be"),
        ("/api/map?windw=1h", 400, "unknown parameter `windw`"),
        ("/api/dropoffs?window=-1h", 400, "window"),
        ("/api/funnels/no_such_journey", 404, "trial_to_purchase"),
        (
            "/api/funnels/trial_to_purchase?window=x",
            400,
            "not a duration",
        ),
        ("/api/nothing", 404, "no such endpoint"),
        (
            "/api/customers/nobody@example.com/timeline",
            404,
            "no customer has the identifier",
        ),
        ("/api/customers/u1/timeline?limit=0", 400, "positive whole"),
        (
            "/api/customers/u1/timeline?kind=phone",
            400,
            "user_id, email",
        ),
        (
            "/api/customers/u1/timeline?before=teleport",
            400,
            "not a touchpoint",
        ),
        (
            "/api/customers/u1/timeline?after=x",
            400,
            "`before`, `limit`",
        ),
    ] {
        let (got, body) = server.get(path);
        assert_eq!(got, status, "GET {path}: {body}");
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("GET {path}: {body}"));
        assert!(message.contains(says), "GET {path}: {message}");
    }
}

#[test]
fn health_and_readiness() {
    let server = Server::start(200);
    assert_eq!(server.ok("/healthz")["status"], "ok");
    assert_eq!(server.ok("/readyz")["ready"], true);
    server.ready.store(false, Ordering::Relaxed);
    let (status, body) = server.get("/readyz");
    assert_eq!(status, 503);
    assert_eq!(body["ready"], false);
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("brokers are down"))
    );
    // Still alive: it answers, it only cannot read.
    assert_eq!(server.ok("/healthz")["status"], "ok");
    assert!(server.ok("/api/map")["events"].as_i64() > Some(0));
}

/// `name{labels} value` lines of a Prometheus text exposition.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample: {l}"));
            let value = value.parse().unwrap_or_else(|e| panic!("{l}: {e}"));
            (name.to_string(), value)
        })
        .collect()
}

fn sample(all: &[(String, f64)], name: &str) -> f64 {
    all.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no sample {name}"))
        .1
}

#[test]
fn metrics_are_the_pipelines_numbers() {
    let server = Server::start(1_000);
    let status = server.status();
    let (code, text) = server.get_text("/metrics");
    assert_eq!(code, 200);
    let all = samples(&text);
    assert_eq!(
        sample(&all, "trailmap_events_total"),
        status.ingest.events as f64
    );
    assert_eq!(
        sample(&all, "trailmap_records_total"),
        status.ingest.records as f64
    );
    assert_eq!(sample(&all, "trailmap_rejected_total"), 0.0);
    assert_eq!(sample(&all, "trailmap_ready"), 1.0);
    // Per source: the generator's three sources, every event in time, adding up.
    let sources: Vec<&str> = status.sources.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(sources.len(), 3, "{sources:?}");
    let mut in_time = 0.0;
    for s in &status.sources {
        let kind = |arrival: &str| {
            sample(
                &all,
                &format!(
                    "trailmap_source_events_total{{arrival=\"{arrival}\",source=\"{}\"}}",
                    s.source
                ),
            )
        };
        assert!(kind("in_time") > 0.0, "{}", s.source);
        assert_eq!(kind("late"), 0.0, "{}", s.source);
        in_time += kind("in_time");
    }
    assert_eq!(in_time, status.stitch.events as f64);
    // The generator stores nothing: no checkpoint, no age.
    assert!(!text.contains("trailmap_checkpoint_age_seconds"));
    assert_eq!(
        sample(&all, "trailmap_freshness_seconds_count"),
        status.freshness.events as f64
    );
    assert_eq!(
        sample(&all, "trailmap_freshness_seconds_bucket{le=\"+Inf\"}"),
        status.freshness.events as f64
    );
    // One batch latency per micro-batch a shard applied: fewer than the events, at least
    // one per 1024-record batch the generator made; cumulative buckets.
    let batches = sample(&all, "trailmap_batch_latency_seconds_count");
    assert_eq!(batches, status.batch_latency_histogram.count() as f64);
    assert!(
        batches >= (status.ingest.records / 1024) as f64 && batches < status.stitch.events as f64,
        "{batches} batches"
    );
    assert!(
        sample(&all, "trailmap_batch_latency_seconds_bucket{le=\"0.01\"}")
            <= sample(&all, "trailmap_batch_latency_seconds_bucket{le=\"10\"}")
    );
    // Journey KPIs: the last 24 hours' funnel, as the API gives it.
    let day = server.ok("/api/funnels/trial_to_purchase?window=24h");
    for step in day["steps"].as_array().expect("steps") {
        let name = format!(
            "trailmap_stage_conversion{{journey=\"trial_to_purchase\",step=\"{}\"}}",
            step["name"].as_str().expect("name")
        );
        let value = sample(&all, &name);
        let expected = step["conversion_from_previous"]
            .as_f64()
            .expect("conversion");
        assert!(
            (value - expected).abs() < 1e-9,
            "{name}: {value} vs {expected}"
        );
    }
    let settled = sample(
        &all,
        "trailmap_funnel_conversion{journey=\"trial_to_purchase\"}",
    );
    assert!((settled - day["settled_conversion"].as_f64().expect("settled")).abs() < 1e-9);
    let day_map = server.ok("/api/map?window=24h");
    for n in day_map["nodes"].as_array().expect("nodes") {
        let name = format!(
            "trailmap_touchpoint_exit_rate{{stage=\"{}\",touchpoint=\"{}\"}}",
            n["stage"].as_str().unwrap_or(""),
            n["touchpoint"].as_str().expect("touchpoint")
        );
        let value = sample(&all, &name);
        assert!(
            (value - n["exit_rate"].as_f64().expect("rate")).abs() < 1e-9,
            "{name}"
        );
    }
}

#[test]
fn the_stream_pushes_the_map_as_it_changes() {
    // About four seconds of traffic, so the stream sees the map grow.
    let server = Server::streaming(1_000, Some(4_000.0));
    let mut response = server
        .agent
        .get(format!("{}/api/stream?window=all", server.base))
        .call()
        .expect("GET /api/stream");
    assert_eq!(response.status().as_u16(), 200);
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let reader = std::io::BufReader::new(response.body_mut().as_reader());
    let mut events = Vec::new();
    let mut kind = String::new();
    let mut alerts = false;
    for line in std::io::BufRead::lines(reader) {
        let line = line.expect("a line of the stream");
        if let Some(k) = line.strip_prefix("event: ") {
            kind = k.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            if kind == "alerts" {
                // No rules here: the list is sent once, empty, and never again.
                assert_eq!(data, "[]");
                assert!(!alerts, "an unchanged alert list was sent again");
                alerts = true;
                continue;
            }
            assert_eq!(kind, "map");
            let map: Value = serde_json::from_str(data).expect("a map as JSON");
            assert!(map["nodes"].is_array() && map["edges"].is_array());
            events.push(map["events"].as_i64().expect("events"));
            if events.len() == 3 {
                break;
            }
        }
    }
    // Sent only on change, and the map only grows here; the alerts came with the first map.
    assert!(events.windows(2).all(|w| w[0] < w[1]), "{events:?}");
    assert!(alerts, "no alerts event with the first map");
    // Once the input ends the map stops changing; the stream's last word is the final map.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !server.live.input_ended() {
        assert!(Instant::now() < deadline, "the input never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.ok("/api/map")["events"].as_i64() >= events.last().copied());
}

#[test]
fn the_openapi_document_describes_every_endpoint() {
    let server = Server::start(50);
    let doc = server.ok("/api/openapi.json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/map",
        "/api/paths",
        "/api/dropoffs",
        "/api/funnels",
        "/api/funnels/{name}",
        "/api/customers/{id}/timeline",
        "/api/segments",
        "/api/stream",
        "/api/status",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/{call}",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    let params: Vec<&str> = paths["/api/map"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(params, ["window", "scope", "segment", "breakdown"]);
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for schema in [
        "MapReport",
        "MapNode",
        "MapEdge",
        "FunnelReport",
        "FunnelStep",
        "LiveStatus",
        "ErrorBody",
    ] {
        assert!(schemas.contains_key(schema), "no schema {schema}");
    }
    // The documented fields are the ones the API sends.
    let node = &schemas["MapNode"]["properties"];
    let sent = server.ok("/api/map")["nodes"][0].clone();
    let mut documented: Vec<&String> = node.as_object().expect("properties").keys().collect();
    let mut actual: Vec<&String> = sent.as_object().expect("a node").keys().collect();
    documented.sort();
    actual.sort();
    assert_eq!(documented, actual);
}

/// The generated truth of customer `index`: its touchpoints in time order, with source.
fn truth(opts: &GenOptions, index: u64) -> Vec<(i64, String, String)> {
    let journey = trailmap_gen::JourneyModel::default().journey(opts, index);
    journey
        .events
        .iter()
        .filter_map(|e| {
            let tp = e.touchpoint?;
            Some((e.ts_micros, tp.to_string(), e.source.as_str().to_string()))
        })
        .collect()
}

/// Support looks a customer up by email, user id or ticket id: the timeline is the
/// customer's latest touchpoints across the three sources, in time order, and with
/// `before=ticket_opened` what they did right before their latest ticket.
#[test]
fn a_customer_timeline_shows_what_they_did_before_a_ticket() {
    let customers = 400;
    let server = Server::start(customers);
    let opts = GenOptions {
        customers,
        days: 7,
        ..GenOptions::default()
    };
    let kept = Config::builtin().timeline.events;
    // A customer whose latest kept touchpoints include an opened ticket, with at least
    // five before it: the truth says what the timeline must show.
    let (index, events) = (0..customers)
        .map(|i| (i, truth(&opts, i)))
        .find(|(_, t)| {
            let latest = &t[t.len().saturating_sub(kept)..];
            latest
                .iter()
                .rposition(|(_, tp, _)| tp == "ticket_opened")
                .is_some_and(|at| at >= 5)
        })
        .expect("a customer with a ticket");
    let latest = &events[events.len().saturating_sub(kept)..];
    let ticket = latest
        .iter()
        .rposition(|(_, tp, _)| tp == "ticket_opened")
        .expect("a ticket");
    let names = |list: &Value| -> Vec<(i64, String, String)> {
        list.as_array()
            .expect("events")
            .iter()
            .map(|e| {
                (
                    e["ts"].as_i64().expect("ts"),
                    e["touchpoint"].as_str().expect("touchpoint").to_string(),
                    e["source"].as_str().expect("source").to_string(),
                )
            })
            .collect()
    };

    let email = format!("customer{index}@example.com");
    let t = server.ok(&format!(
        "/api/customers/{email}/timeline?before=ticket_opened&limit=5"
    ));
    assert_eq!(t["matched"], "email", "{t}");
    assert_eq!(t["kept"].as_u64(), Some(kept as u64));
    assert_eq!(
        names(&t["events"]),
        latest[ticket - 5..ticket].to_vec(),
        "{t}"
    );
    assert_eq!(t["before"]["touchpoint"], "ticket_opened");
    assert_eq!(t["before"]["ts"].as_i64(), Some(latest[ticket].0));
    assert!(
        t["before"]["time"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );

    // Without `before`: the latest, across sources; the same customer by another
    // identifier (emails match in any case).
    let all = server.ok(&format!(
        "/api/customers/{}/timeline?limit=100",
        email.to_uppercase()
    ));
    assert_eq!(names(&all["events"]), latest.to_vec());
    assert_eq!(all["customer"], t["customer"]);
    let sources: std::collections::BTreeSet<&str> = latest.iter().map(|e| e.2.as_str()).collect();
    assert!(sources.contains("ticket"), "{sources:?}");
    let by_kind = server.ok(&format!(
        "/api/customers/{email}/timeline?kind=email&limit=3"
    ));
    assert_eq!(
        names(&by_kind["events"]),
        latest[latest.len() - 3..].to_vec()
    );
    // Not an email, so not found as one.
    let (status, _) = server.get(&format!("/api/customers/u{index}/timeline?kind=email"));
    assert_eq!(status, 404);
}

/// Every journey endpoint shows one segment (sessions by their first event's device, the
/// built-in `[segments] by`), and funnels break down by it: the parts add up to the whole.
#[test]
fn segments_show_one_device_and_funnels_break_down_by_it() {
    let server = Server::start(400);
    let list = server.ok("/api/segments");
    assert_eq!(list["by"], "device");
    let segments: Vec<(String, i64)> = list["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| {
            (
                s["value"].as_str().expect("value").to_string(),
                s["journeys"].as_i64().expect("journeys"),
            )
        })
        .collect();
    let names: Vec<&str> = segments.iter().map(|(v, _)| v.as_str()).collect();
    for device in ["desktop", "mobile", "tablet"] {
        assert!(names.contains(&device), "{names:?}");
    }
    let whole = server.ok("/api/map");
    let total: i64 = segments.iter().map(|(_, n)| n).sum();
    assert_eq!(
        Some(total),
        whole["journeys"].as_i64(),
        "every session is in one segment"
    );
    for (value, journeys) in &segments {
        let q = format!(
            "segment={}",
            value
                .replace(' ', "%20")
                .replace('(', "%28")
                .replace(')', "%29")
        );
        let map = server.ok(&format!("/api/map?{q}"));
        assert_eq!(map["journeys"].as_i64(), Some(*journeys), "{value}");
        assert!(map["events"].as_i64() < whole["events"].as_i64());
        let paths = server.ok(&format!("/api/paths?{q}"));
        assert_eq!(paths["journeys"].as_i64(), Some(*journeys), "{value}");
        let drops = server.ok(&format!("/api/dropoffs?{q}"));
        assert_eq!(
            sum(&drops["touchpoints"], "exits"),
            *journeys,
            "{value}: each journey exits once"
        );
    }
    // A value never seen: an empty segment, not an error.
    assert_eq!(server.ok("/api/map?segment=watch")["journeys"], 0);

    // The funnel by device: each value's numbers are that segment's funnel, and they add up.
    let funnel = server.ok("/api/funnels/checkout?breakdown=device");
    let parts = funnel["breakdown"].as_array().expect("a breakdown");
    assert_eq!(parts.len(), segments.len().min(10));
    let mut entered = 0;
    for part in parts {
        let value = part["value"].as_str().expect("value");
        if value.starts_with('(') {
            entered += part["entered"].as_i64().expect("entered");
            continue;
        }
        let alone = server.ok(&format!("/api/funnels/checkout?segment={value}"));
        let reached: Vec<i64> = alone["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| s["reached"].as_i64().expect("reached"))
            .collect();
        assert_eq!(part["reached"], serde_json::json!(reached), "{value}");
        assert_eq!(part["entered"], alone["entered"], "{value}");
        entered += part["entered"].as_i64().expect("entered");
    }
    assert_eq!(Some(entered), funnel["entered"].as_i64());
    assert!(
        server
            .ok("/api/funnels/checkout")
            .get("breakdown")
            .is_none()
    );

    for (path, says) in [
        ("/api/map?breakdown=device", "applies to /api/funnels"),
        (
            "/api/funnels/checkout?breakdown=channel",
            "break down by `device`",
        ),
        (
            "/api/funnels?breakdown=device&segment=mobile",
            "drop `segment`",
        ),
    ] {
        let (status, body) = server.get(path);
        assert_eq!(status, 400, "GET {path}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(says), "GET {path}: {message}");
    }
}
