//! `/metrics`: Prometheus text, built from the pipeline at each scrape.
//!
//! Nothing is counted twice or kept apart from the pipeline: each scrape reads its status
//! and the last 24 hours of the map, fills a fresh registry, and encodes it. Counters are
//! the pipeline's running totals (monotonic while it runs, as Prometheus expects).
//!
//! Journey KPIs are gauges over the last 24 hours of event time: per funnel step, the
//! conversion from the previous step; per funnel, the conversion of journeys whose outcome
//! is known (maturing ones left out, as alerts need); per touchpoint, the exit rate. Per
//! alert rule, its state (`trailmap_alert_state`: 0 inactive, 1 pending, 2 firing) and the
//! conversions it last compared.

use crate::api::{AppState, Window};
use crate::error::ApiError;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use trailmap_live::{AlertStatus, LiveStatus, MapReport};
use trailmap_mine::DurationHistogram;
use trailmap_model::time::{Span, unix_micros};

/// Upper bounds of the latency histograms (freshness, batches), seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The window journey KPIs are computed over.
const KPI_WINDOW: Span = Span(24 * 3_600_000_000);

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, content_type = "text/plain",
               description = "Prometheus text exposition: ingest counters, freshness histogram, journey KPI gauges (last 24 h)")))]
pub async fn scrape(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let status = state.status().await?;
    let map = state.map(Window::Last(KPI_WINDOW)).await?;
    let ready = state.readiness().is_ok();
    let alerts = state.alert_statuses();
    let text = render(&status, &map, &alerts, ready)
        .map_err(|e| ApiError::unavailable(format!("cannot encode metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text))
}

/// The exposition text for a status, the KPI window's map and the alert rules' states.
pub fn render(
    status: &LiveStatus,
    map: &MapReport,
    alerts: &[AlertStatus],
    ready: bool,
) -> prometheus::Result<String> {
    let registry = Registry::new();
    let counter = |name: &str, help: &str, value: u64| -> prometheus::Result<()> {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        registry.register(Box::new(c))
    };
    let gauge = |name: &str, help: &str, value: i64| -> prometheus::Result<()> {
        let g = IntGauge::new(name, help)?;
        g.set(value);
        registry.register(Box::new(g))
    };
    let ingest = &status.ingest;
    counter(
        "trailmap_records_total",
        "Records the source read (events and identity-only records).",
        ingest.records,
    )?;
    counter(
        "trailmap_events_total",
        "Events with a touchpoint taken in.",
        ingest.events,
    )?;
    counter(
        "trailmap_rejected_total",
        "Records rejected to the dead letters, with a reason.",
        ingest.rejected,
    )?;
    counter(
        "trailmap_identity_links_total",
        "Identity-only records (they link identifiers, no touchpoint).",
        ingest.links,
    )?;
    let late = IntCounterVec::new(
        Opts::new(
            "trailmap_late_events_total",
            "Events behind the watermark: corrected (inside the lateness horizon, counted) or beyond it (stored, not counted).",
        ),
        &["horizon"],
    )?;
    late.with_label_values(&["inside"])
        .inc_by(status.shards.corrected);
    late.with_label_values(&["beyond"])
        .inc_by(status.stitch.late);
    registry.register(Box::new(late))?;
    let by_source = IntCounterVec::new(
        Opts::new(
            "trailmap_source_events_total",
            "Events with a touchpoint taken in, per source; `arrival` says whether they came in time or beyond the lateness horizon (stored, not counted).",
        ),
        &["source", "arrival"],
    )?;
    let rejected = IntCounterVec::new(
        Opts::new(
            "trailmap_source_rejected_total",
            "Records rejected to the dead letters (unreadable, unmappable), per source.",
        ),
        &["source"],
    )?;
    for s in &status.sources {
        by_source
            .with_label_values(&[s.source.as_str(), "in_time"])
            .inc_by(s.events - s.late.min(s.events));
        by_source
            .with_label_values(&[s.source.as_str(), "late"])
            .inc_by(s.late);
        rejected
            .with_label_values(&[s.source.as_str()])
            .inc_by(s.rejected);
    }
    registry.register(Box::new(rejected))?;
    registry.register(Box::new(by_source))?;
    counter(
        "trailmap_identity_merges_total",
        "Customers merged into another when an identity link joined them.",
        status.stitch.merges,
    )?;
    gauge(
        "trailmap_open_customers",
        "Customers with sessions that can still change.",
        status.open_customers as i64,
    )?;
    gauge(
        "trailmap_retained_events",
        "Events held for open sessions.",
        status.retained_events as i64,
    )?;
    gauge(
        "trailmap_state_bytes",
        "Bytes held for open sessions.",
        status.state_bytes as i64,
    )?;
    gauge(
        "trailmap_ready",
        "1 when the source can read.",
        i64::from(ready),
    )?;
    if let Some(lag) = status.lag {
        gauge(
            "trailmap_consumer_lag_messages",
            "Kafka messages in the assigned partitions past the committed offsets (committed once stored), from librdkafka's statistics.",
            i64::try_from(lag).unwrap_or(i64::MAX),
        )?;
    }
    if let Some(at) = status.checkpointed_at {
        let now = unix_micros(std::time::SystemTime::now());
        let age = Gauge::new(
            "trailmap_checkpoint_age_seconds",
            "Seconds since everything read was last durable (a store checkpoint): what a crash now would read again.",
        )?;
        age.set((now - at).max(0) as f64 / 1e6);
        registry.register(Box::new(age))?;
    }
    let seconds = |micros: Option<i64>| micros.map_or(0.0, |m| m as f64 / 1e6);
    let times = GaugeVec::new(
        Opts::new(
            "trailmap_event_time_seconds",
            "Event time, Unix seconds: the watermark, and the newest event seen.",
        ),
        &["of"],
    )?;
    times
        .with_label_values(&["watermark"])
        .set(seconds(status.watermark.filter(|&w| w < i64::MAX)));
    times
        .with_label_values(&["newest"])
        .set(seconds(status.newest));
    registry.register(Box::new(times))?;

    let conversion = GaugeVec::new(
        Opts::new(
            "trailmap_stage_conversion",
            "Per funnel step, the share of journeys at the previous step that reached it (last 24 h of event time).",
        ),
        &["journey", "step"],
    )?;
    let settled = GaugeVec::new(
        Opts::new(
            "trailmap_funnel_conversion",
            "Per funnel, converted over entered journeys whose outcome is known, maturing ones left out (last 24 h).",
        ),
        &["journey"],
    )?;
    let entered = GaugeVec::new(
        Opts::new(
            "trailmap_funnel_journeys",
            "Per funnel, journeys that entered, converted, or are still maturing (last 24 h).",
        ),
        &["journey", "state"],
    )?;
    for f in &map.funnels {
        for step in &f.steps {
            conversion
                .with_label_values(&[f.name.as_str(), step.name.as_str()])
                .set(step.conversion_from_previous);
        }
        settled
            .with_label_values(&[f.name.as_str()])
            .set(f.settled_conversion);
        for (state, n) in [
            ("entered", f.entered),
            ("converted", f.converted),
            ("maturing", f.maturing),
        ] {
            entered
                .with_label_values(&[f.name.as_str(), state])
                .set(n as f64);
        }
    }
    registry.register(Box::new(conversion))?;
    registry.register(Box::new(settled))?;
    registry.register(Box::new(entered))?;
    let exit_rate = GaugeVec::new(
        Opts::new(
            "trailmap_touchpoint_exit_rate",
            "Per touchpoint, the share of journeys through it that ended there (last 24 h).",
        ),
        &["touchpoint", "stage"],
    )?;
    for n in &map.nodes {
        exit_rate
            .with_label_values(&[n.touchpoint.as_str(), n.stage.as_deref().unwrap_or("")])
            .set(n.exit_rate);
    }
    registry.register(Box::new(exit_rate))?;

    let alert_state = IntGaugeVec::new(
        Opts::new(
            "trailmap_alert_state",
            "Per alert rule (and breakdown value; empty for a rule without one): 0 inactive, 1 pending, 2 firing.",
        ),
        &["rule", "journey", "from", "to", "value"],
    )?;
    let alert_conversion = GaugeVec::new(
        Opts::new(
            "trailmap_alert_conversion",
            "Per alert rule (and breakdown value), the stage conversion it last compared: settled journeys of the current window, and of the baseline (NaN: none settled).",
        ),
        &["rule", "value", "window"],
    )?;
    for a in alerts {
        let value = a.value.as_deref().unwrap_or("");
        let labels = [
            a.name.as_str(),
            a.journey.as_str(),
            a.from.as_str(),
            a.to.as_str(),
            value,
        ];
        alert_state.with_label_values(&labels).set(a.state.gauge());
        if let Some(e) = &a.last {
            for (window, rate) in [
                ("current", e.current_conversion),
                ("baseline", e.baseline_conversion),
            ] {
                // No settled journeys: 0/0, which Prometheus writes as NaN.
                alert_conversion
                    .with_label_values(&[a.name.as_str(), value, window])
                    .set(rate.unwrap_or(f64::NAN));
            }
        }
    }
    registry.register(Box::new(alert_state))?;
    registry.register(Box::new(alert_conversion))?;

    let mut families = registry.gather();
    families.push(latency_family(
        "trailmap_freshness_seconds",
        "How long events took from reaching trailmap (Kafka: their timestamp) to being counted in the live map.",
        &status.freshness_histogram,
    ));
    families.push(latency_family(
        "trailmap_batch_latency_seconds",
        "How long a micro-batch took from reaching the pipeline to being applied, per shard it touched (stitching, routing, sessions and counts).",
        &status.batch_latency_histogram,
    ));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    prometheus::TextEncoder::new().encode(&families, &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// One of the pipeline's latency histograms (µs) as a Prometheus histogram (its buckets
/// read off the pipeline's own histogram, within its 1.6%).
fn latency_family(name: &str, help: &str, h: &DurationHistogram) -> MetricFamily {
    let mut histogram = Histogram::default();
    histogram.set_sample_count(h.count());
    histogram.set_sample_sum(h.sum() as f64 / 1e6);
    histogram.set_bucket(
        LATENCY_BUCKETS
            .iter()
            .map(|&upper| {
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(upper);
                bucket.set_cumulative_count(h.count_at_most((upper * 1e6) as i64));
                bucket
            })
            .collect(),
    );
    let mut metric = Metric::default();
    metric.set_histogram(histogram);
    let mut family = MetricFamily::default();
    family.set_name(name.into());
    family.set_help(help.into());
    family.set_field_type(MetricType::HISTOGRAM);
    family.mut_metric().push(metric);
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_age_counts_from_the_last_checkpoint() {
        let now = unix_micros(std::time::SystemTime::now());
        let status = LiveStatus {
            checkpointed_at: Some(now - 3_000_000),
            ..LiveStatus::default()
        };
        let map = MapReport::new(&Default::default(), &Default::default(), None);
        let text = render(&status, &map, &[], true).expect("render");
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("trailmap_checkpoint_age_seconds "))
            .expect("the age gauge")
            .parse()
            .expect("a number");
        assert!((3.0..60.0).contains(&age), "{age}");
    }
}
