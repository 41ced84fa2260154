//! The JSON API over the live pipeline.
//!
//! Every journey endpoint takes the same query parameters:
//! - `window`: how much event time to count, ending at the newest event seen: `all`
//!   (the default), or a duration such as `5m`, `1h`, `24h`, `7d`. Windows are whole
//!   minutes, as the live map is kept.
//! - `scope`: `session` (the default). Live counts are kept per session; `customer` is
//!   refused with what to use instead.
//! - `segment`: only the sessions whose first event has this value of `[segments] by`
//!   (`/api/segments` lists them); funnels also take `breakdown` (that attribute), which
//!   adds each funnel's numbers for the busiest values.
//!
//! Unknown parameters are refused rather than ignored, so a typo never silently widens a
//! query. `/api/stream` pushes the map and the alerts as server-sent events whenever they
//! change.

use crate::capture::{self, Capture};
use crate::error::{ApiError, ErrorBody};
use crate::metrics;
use crate::sql::{self, SqlRunner};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use trailmap_live::report::{FunnelReport, FunnelSegment};
use trailmap_live::timeline::{CustomerTimeline, TimelineMiss};
use trailmap_live::{AlertStatus, AlertsHandle, LiveHandle, LiveStatus, MapReport};
use trailmap_model::IdentityKind;
use trailmap_model::time::Span;

/// Whether the pipeline's source can read (for Kafka: the cluster answers); `Err` says why
/// not.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the handlers answer from.
#[derive(Clone)]
pub struct AppState {
    live: Arc<LiveHandle>,
    ready: Option<Readiness>,
    capture: Option<Capture>,
    sql: Option<SqlRunner>,
    alerts: Option<AlertsHandle>,
    /// Set when the server is stopping: open streams end, so a graceful stop does not wait
    /// on them forever.
    closing: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(live: Arc<LiveHandle>, ready: Option<Readiness>) -> Self {
        AppState {
            live,
            ready,
            capture: None,
            sql: None,
            alerts: None,
            closing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Ends open event streams (within a second): call before a graceful shutdown.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Takes Segment calls on `/v1/*` into the pipeline through `capture`.
    pub fn with_capture(mut self, capture: Capture) -> Self {
        self.capture = Some(capture);
        self
    }

    pub(crate) fn capture(&self) -> Option<&Capture> {
        self.capture.as_ref()
    }

    /// Answers `/api/sql` with `runner`.
    pub fn with_sql(mut self, runner: SqlRunner) -> Self {
        self.sql = Some(runner);
        self
    }

    pub(crate) fn sql(&self) -> Option<&SqlRunner> {
        self.sql.as_ref()
    }

    /// Shows the alert rules evaluated by `alerts` (`/api/alerts`, `/metrics`, the stream).
    pub fn with_alerts(mut self, alerts: AlertsHandle) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Every alert rule's state (none when no rules are evaluated).
    pub(crate) fn alert_statuses(&self) -> Vec<AlertStatus> {
        self.alerts
            .as_ref()
            .map(|a| a.statuses())
            .unwrap_or_default()
    }

    pub(crate) async fn status(&self) -> Result<LiveStatus, ApiError> {
        self.live
            .status()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    /// The map over `window`.
    pub(crate) async fn map(&self, window: Window) -> Result<MapReport, ApiError> {
        self.map_of(window, None).await
    }

    /// The map over `window`, of one segment value or of every session.
    pub(crate) async fn map_of(
        &self,
        window: Window,
        segment: Option<&str>,
    ) -> Result<MapReport, ApiError> {
        if segment.is_some() && self.live.segmented_by().is_none() {
            return Err(ApiError::bad_request(
                "segments are not kept live; set [segments] by = \"device\" (or another attribute) in the config",
            ));
        }
        let span = match window {
            Window::All => None,
            Window::Last(span) => Some(span.micros()),
        };
        self.live
            .report_of(span, segment)
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    /// The funnels of `params`' map, each with its breakdown when one is asked for.
    async fn funnels_of(&self, params: &Params) -> Result<Vec<FunnelReport>, ApiError> {
        let mut funnels = self
            .map_of(params.window, params.segment.as_deref())
            .await?
            .funnels;
        let Some(by) = &params.breakdown else {
            return Ok(funnels);
        };
        match self.live.segmented_by() {
            Some(kept) if kept == by => {}
            Some(kept) => {
                return Err(ApiError::bad_request(format!(
                    "funnels break down by `{kept}` (the live pipeline keeps segments by it), not `{by}`"
                )));
            }
            None => {
                return Err(ApiError::bad_request(
                    "breakdowns are not kept live; set [segments] by = \"device\" (or another attribute) in the config",
                ));
            }
        }
        if params.segment.is_some() {
            return Err(ApiError::bad_request(
                "a breakdown already splits by segment; drop `segment` or `breakdown`",
            ));
        }
        let values = self
            .live
            .segments()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        for f in &mut funnels {
            f.breakdown = Some(Vec::new());
        }
        for (value, _) in values.into_iter().take(BREAKDOWN_TOP) {
            let of_value = self.map_of(params.window, Some(&value)).await?.funnels;
            for (f, v) in funnels.iter_mut().zip(of_value) {
                if let Some(b) = &mut f.breakdown {
                    b.push(FunnelSegment::of(&value, &v));
                }
            }
        }
        Ok(funnels)
    }

    pub(crate) fn readiness(&self) -> Result<(), String> {
        match &self.ready {
            Some(ready) => ready(),
            None => Ok(()),
        }
    }
}

/// The OpenAPI document of every route, generated from the handlers and the report types.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "trailmap",
        description = "The live journey map: touchpoints, transitions, drop-offs and funnels, mined from behaviour as it arrives."
    ),
    paths(
        healthz,
        readyz,
        status,
        map,
        paths,
        dropoffs,
        funnels,
        funnel,
        timeline,
        segments,
        alerts,
        stream,
        crate::metrics::scrape,
        crate::capture::call,
        crate::sql::get,
        crate::sql::post
    ),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

/// The query parameters of the journey endpoints, as the OpenAPI document shows them
/// ([`Params::parse`] reads them, so mistakes get its messages).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct JourneyQuery {
    /// `all` (the default), or how much event time ending at the newest event: `5m`, `1h`,
    /// `24h`, `7d`, any duration; whole minutes.
    window: Option<String>,
    /// `session` (the default). Live counts are per session; `customer` is refused.
    scope: Option<String>,
    /// One segment: the sessions whose first event has this value of `[segments] by`
    /// (e.g. `mobile` for `by = "device"`); `/api/segments` lists the values.
    segment: Option<String>,
    /// Funnels only: `breakdown=device` (the `[segments] by` attribute) adds each funnel's
    /// numbers for the 10 busiest values.
    breakdown: Option<String>,
}

/// Segment values of the live map and their journeys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SegmentsReport {
    /// `[segments] by`; `null` when no segments are kept.
    by: Option<String>,
    segments: Vec<SegmentCount>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SegmentCount {
    value: String,
    /// Sessions whose first event has the value.
    journeys: i64,
}

/// The values `segment=` takes (sessions by their first event's value of `[segments] by`),
/// busiest first.
#[utoipa::path(get, path = "/api/segments", tag = "journeys",
    responses((status = 200, body = SegmentsReport), (status = 503, body = ErrorBody)))]
async fn segments(State(state): State<AppState>) -> Result<Json<SegmentsReport>, ApiError> {
    let by = state.live.segmented_by().map(str::to_string);
    let segments = if by.is_some() {
        state
            .live
            .segments()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?
            .into_iter()
            .map(|(value, journeys)| SegmentCount { value, journeys })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Json(SegmentsReport { by, segments }))
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

/// Every route, on `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/api/status", get(status))
        .route("/api/map", get(map))
        .route("/api/paths", get(paths))
        .route("/api/dropoffs", get(dropoffs))
        .route("/api/funnels", get(funnels))
        .route("/api/funnels/{name}", get(funnel))
        .route("/api/customers/{id}/timeline", get(timeline))
        .route("/api/segments", get(segments))
        .route("/api/alerts", get(alerts))
        .route("/api/stream", get(stream))
        .route("/api/sql", get(sql::get).post(sql::post))
        .route("/v1/{call}", post(capture::call))
        .fallback(not_found)
        .with_state(state)
}

/// How much event time a query counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    All,
    /// This long, ending at the newest event.
    Last(Span),
}

/// The parameters every journey endpoint takes.
#[derive(Debug, Clone)]
pub struct Params {
    pub window: Window,
    /// Only the sessions whose first event has this value of `[segments] by`.
    pub segment: Option<String>,
    /// Funnels only: each funnel again per value of this attribute (`[segments] by`).
    pub breakdown: Option<String>,
}

/// Segment values a funnel breakdown shows at most, the busiest.
const BREAKDOWN_TOP: usize = 10;

impl Params {
    pub fn parse(query: &HashMap<String, String>) -> Result<Params, ApiError> {
        let mut params = Params {
            window: Window::All,
            segment: None,
            breakdown: None,
        };
        for (key, value) in query {
            match key.as_str() {
                "segment" if value.is_empty() => {}
                "segment" => params.segment = Some(value.clone()),
                "breakdown" => params.breakdown = Some(value.clone()),
                "window" => {
                    params.window = match value.as_str() {
                        "all" => Window::All,
                        text => match text.parse::<Span>() {
                            Ok(span) if span.micros() > 0 => Window::Last(span),
                            Ok(_) => {
                                return Err(ApiError::bad_request(
                                    "window must be longer than 0; use e.g. window=1h, or window=all",
                                ));
                            }
                            Err(e) => {
                                return Err(ApiError::bad_request(format!(
                                    "window: {e}, or `all`"
                                )));
                            }
                        },
                    }
                }
                "scope" => match value.as_str() {
                    "session" => {}
                    "customer" => {
                        return Err(ApiError::bad_request(
                            "scope=customer is not kept live (live counts are per session); \
                             use scope=session, or `trailmap paths --scope customer` on the stored events",
                        ));
                    }
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "scope must be `session` (or `customer` in batch), not `{other}`"
                        )));
                    }
                },
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown parameter `{other}`; the journey endpoints take `window`, `scope`, `segment` (and, for funnels, `breakdown`)"
                    )));
                }
            }
        }
        Ok(params)
    }

    /// Refuses `breakdown` where it means nothing.
    fn without_breakdown(self) -> Result<Params, ApiError> {
        match self.breakdown {
            Some(_) => Err(ApiError::bad_request(
                "`breakdown` applies to /api/funnels; to see one segment here, use segment=VALUE",
            )),
            None => Ok(self),
        }
    }
}

/// The dashboard: one page, embedded in the binary (no CDN, works offline), fed by
/// `/api/stream`.
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../assets/index.html"))
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The server is alive: `{\"status\": \"ok\"}`")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// 200 when the source can read and the pipeline answers; 503 with the reason otherwise.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "`{\"ready\": true}`"),
              (status = 503, description = "`{\"ready\": false, \"reason\": …}`: the source cannot read (Kafka unreachable) or the pipeline stopped")))]
async fn readyz(State(state): State<AppState>) -> Response {
    let answer = match state.readiness() {
        Ok(()) => state.status().await.map(|_| ()).map_err(|e| e.message),
        Err(reason) => Err(reason),
    };
    match answer {
        Ok(()) => Json(serde_json::json!({ "ready": true })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
}

#[utoipa::path(get, path = "/api/status", tag = "live",
    responses((status = 200, body = LiveStatus), (status = 503, body = ErrorBody)))]
async fn status(State(state): State<AppState>) -> Result<Json<LiveStatus>, ApiError> {
    Ok(Json(state.status().await?))
}

/// The journey map: `{"nodes":[{"id","touchpoint","stage",...}],"edges":[{"from","to","count",...}],...}`.
#[utoipa::path(get, path = "/api/map", tag = "journeys", params(JourneyQuery),
    responses((status = 200, body = MapReport), (status = 400, body = ErrorBody)))]
async fn map(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<MapReport>, ApiError> {
    let params = Params::parse(&query)?.without_breakdown()?;
    Ok(Json(
        state
            .map_of(params.window, params.segment.as_deref())
            .await?,
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Count {
    touchpoint: String,
    count: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Transition {
    from: String,
    to: String,
    count: i64,
    mean_seconds: f64,
}

/// `trailmap paths`' shape, for what the live map keeps (variants and path trees need
/// whole journeys: ask the batch command).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PathsReport {
    events: i64,
    journeys: i64,
    transitions: Vec<Transition>,
    starts: Vec<Count>,
    ends: Vec<Count>,
}

#[utoipa::path(get, path = "/api/paths", tag = "journeys", params(JourneyQuery),
    responses((status = 200, body = PathsReport), (status = 400, body = ErrorBody)))]
async fn paths(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<PathsReport>, ApiError> {
    let params = Params::parse(&query)?.without_breakdown()?;
    let map = state
        .map_of(params.window, params.segment.as_deref())
        .await?;
    let counts = |f: fn(&trailmap_live::report::MapNode) -> i64| {
        let mut list: Vec<Count> = map
            .nodes
            .iter()
            .filter(|n| f(n) != 0)
            .map(|n| Count {
                touchpoint: n.touchpoint.clone(),
                count: f(n),
            })
            .collect();
        list.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.touchpoint.cmp(&b.touchpoint))
        });
        list
    };
    Ok(Json(PathsReport {
        events: map.events,
        journeys: map.journeys,
        starts: counts(|n| n.starts),
        ends: counts(|n| n.exits),
        transitions: map
            .edges
            .iter()
            .map(|e| Transition {
                from: e.from.clone(),
                to: e.to.clone(),
                count: e.count,
                mean_seconds: e.mean_seconds,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DropoffRow {
    touchpoint: String,
    stage: Option<String>,
    journeys: i64,
    exits: i64,
    exit_rate: f64,
}

/// `trailmap dropoffs`' shape: per touchpoint, journeys through it, exits and exit rate,
/// most exits first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DropoffsReport {
    journeys: i64,
    touchpoints: Vec<DropoffRow>,
}

#[utoipa::path(get, path = "/api/dropoffs", tag = "journeys", params(JourneyQuery),
    responses((status = 200, body = DropoffsReport), (status = 400, body = ErrorBody)))]
async fn dropoffs(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<DropoffsReport>, ApiError> {
    let params = Params::parse(&query)?.without_breakdown()?;
    let map = state
        .map_of(params.window, params.segment.as_deref())
        .await?;
    let mut touchpoints: Vec<DropoffRow> = map
        .nodes
        .into_iter()
        .map(|n| DropoffRow {
            touchpoint: n.touchpoint,
            stage: n.stage,
            journeys: n.journeys,
            exits: n.exits,
            exit_rate: n.exit_rate,
        })
        .collect();
    touchpoints.sort_by(|a, b| {
        b.exits
            .cmp(&a.exits)
            .then_with(|| a.touchpoint.cmp(&b.touchpoint))
    });
    Ok(Json(DropoffsReport {
        journeys: map.journeys,
        touchpoints,
    }))
}

/// Every configured journey's funnel.
#[utoipa::path(get, path = "/api/funnels", tag = "journeys", params(JourneyQuery),
    responses((status = 200, body = Vec<FunnelReport>), (status = 400, body = ErrorBody)))]
async fn funnels(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<FunnelReport>>, ApiError> {
    let params = Params::parse(&query)?;
    Ok(Json(state.funnels_of(&params).await?))
}

/// One configured journey's funnel: entered, converted, maturing, and per step reached,
/// conversion, dropped and maturing.
#[utoipa::path(get, path = "/api/funnels/{name}", tag = "journeys",
    params(("name" = String, Path, description = "A configured journey ([journeys.NAME])"), JourneyQuery),
    responses((status = 200, body = FunnelReport), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "No journey of that name is configured")))]
async fn funnel(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<FunnelReport>, ApiError> {
    let params = Params::parse(&query)?;
    // The map has a funnel for every configured journey, in or out of the window.
    let mut funnels = state.funnels_of(&params).await?;
    if let Some(i) = funnels.iter().position(|f| f.name == name) {
        return Ok(Json(funnels.swap_remove(i)));
    }
    let configured: Vec<&str> = funnels.iter().map(|f| f.name.as_str()).collect();
    Err(ApiError::not_found(format!(
        "no journey `{name}` is configured; configured: {}",
        if configured.is_empty() {
            "none (add [journeys.NAME] to the config)".to_string()
        } else {
            configured.join(", ")
        }
    )))
}

/// The query parameters of `/api/customers/{id}/timeline`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct TimelineQuery {
    /// End the timeline at the customer's latest occurrence of this touchpoint (e.g.
    /// `ticket_opened`): what they did before it.
    before: Option<String>,
    /// How many touchpoints, the latest (default 10, at most `[timeline] events`).
    limit: Option<usize>,
    /// The kind of identifier `id` is: `user_id`, `email`, `anonymous_id`, `contact_id`,
    /// `ticket_id`, `customer_id`. Default: each kind in that order until one matches.
    kind: Option<String>,
}

const TIMELINE_LIMIT: usize = 10;

/// A customer's latest touchpoints across every source (clickstream, tickets, CRM), oldest
/// first: by any identifier of theirs (an email, a user id, a ticket id, …), the last
/// `limit`, or with `before=ticket_opened` the last `limit` before their latest ticket, so
/// support sees what the customer already read and tried.
#[utoipa::path(get, path = "/api/customers/{id}/timeline", tag = "customers",
    params(("id" = String, Path, description = "Any identifier of the customer: email, user id, anonymous id, contact id, ticket id"), TimelineQuery),
    responses((status = 200, body = CustomerTimeline), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "No customer has that identifier, or none of its kept touchpoints is `before`")))]
async fn timeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<CustomerTimeline>, ApiError> {
    let (mut before, mut limit, mut kind) = (None, TIMELINE_LIMIT, None);
    for (key, value) in &query {
        match key.as_str() {
            "before" => before = Some(value.as_str()),
            "limit" => {
                limit = value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "limit must be a positive whole number, not `{value}`"
                    ))
                })?;
            }
            "kind" => {
                kind = Some(IdentityKind::from_column(value).ok_or_else(|| {
                    let kinds: Vec<&str> = IdentityKind::ALL.iter().map(|k| k.column()).collect();
                    ApiError::bad_request(format!(
                        "kind must be one of {}, not `{value}`",
                        kinds.join(", ")
                    ))
                })?);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}`; the timeline takes `before`, `limit` and `kind`"
                )));
            }
        }
    }
    state
        .live
        .timeline(&id, kind, before, limit)
        .map(Json)
        .map_err(|miss| match miss {
            TimelineMiss::NoCustomer(m) | TimelineMiss::NotReached(m) => ApiError::not_found(m),
            TimelineMiss::UnknownTouchpoint(m) => ApiError::bad_request(m),
            TimelineMiss::Stopped(m) => ApiError::unavailable(m),
        })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AlertsReport {
    /// Every configured rule ([alerts.NAME]), in config order.
    alerts: Vec<AlertStatus>,
}

/// Every alert rule with its state (inactive, pending, firing), when it last fired and
/// resolved, and its latest evaluation: the conversions compared, the sample, the p-value
/// and why it holds or not.
#[utoipa::path(get, path = "/api/alerts", tag = "alerts",
    responses((status = 200, body = AlertsReport)))]
async fn alerts(State(state): State<AppState>) -> Json<AlertsReport> {
    Json(AlertsReport {
        alerts: state.alert_statuses(),
    })
}

/// How often `/api/stream` looks for a change.
const STREAM_EVERY: Duration = Duration::from_secs(1);

/// What a stream last sent.
#[derive(Default)]
struct Sent {
    map: Option<String>,
    alerts: Option<String>,
    /// The pipeline stopped and the stream said so.
    ended: bool,
}

/// Server-sent events: a `map` event with `/api/map`'s answer (for the same parameters,
/// funnels included) and an `alerts` event with `/api/alerts`' list now, then each again
/// about once a second whenever it changed; comments keep the connection alive meanwhile.
/// A pipeline that stops ends the stream with an `error` event.
#[utoipa::path(get, path = "/api/stream", tag = "journeys", params(JourneyQuery),
    responses((status = 200, content_type = "text/event-stream",
               description = "Server-sent events: `map` (a MapReport as JSON) and `alerts` (AlertsReport's list) now and whenever they change"),
              (status = 400, body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params = Params::parse(&query)?.without_breakdown()?;
    // Each round yields what changed since the last (the map, the alerts, or both), so
    // a map that changes every second never starves the alerts.
    let rounds = futures_util::stream::unfold(
        (state, Sent::default()),
        move |(state, mut sent): (AppState, Sent)| {
            let params = params.clone();
            async move {
                if sent.ended {
                    return None;
                }
                let mut first = sent.map.is_none();
                loop {
                    if !first {
                        tokio::time::sleep(STREAM_EVERY).await;
                    }
                    first = false;
                    if state.is_closing() {
                        return None;
                    }
                    let mut events = Vec::new();
                    match state.map_of(params.window, params.segment.as_deref()).await {
                        Ok(map) => {
                            let map = serde_json::to_string(&map).unwrap_or_default();
                            if sent.map.as_ref() != Some(&map) {
                                events.push(Ok(Event::default().event("map").data(&map)));
                                sent.map = Some(map);
                            }
                        }
                        Err(e) => {
                            sent.ended = true;
                            events.push(Ok(Event::default().event("error").data(e.message)));
                            return Some((events, (state, sent)));
                        }
                    }
                    let alerts = serde_json::to_string(&state.alert_statuses()).unwrap_or_default();
                    if sent.alerts.as_ref() != Some(&alerts) {
                        events.push(Ok(Event::default().event("alerts").data(&alerts)));
                        sent.alerts = Some(alerts);
                    }
                    if !events.is_empty() {
                        return Some((events, (state, sent)));
                    }
                }
            }
        },
    );
    let updates = rounds.flat_map(futures_util::stream::iter);
    Ok(Sse::new(updates).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {}; see /api/map, /api/paths, /api/dropoffs, /api/funnels/NAME, \
         /api/alerts, /api/stream, /api/sql, /api/status, /api/openapi.json, /healthz, /readyz, /metrics",
        uri.path()
    ))
}
