//! Segment-compatible capture: `POST /v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`,
//! `/v1/group`, `/v1/alias` (one call) and `/v1/batch` (many), so Segment's own libraries
//! (and anything that speaks its HTTP API) send events straight into the live pipeline.
//!
//! The write key comes as Segment sends it: HTTP Basic auth with the key as the user name,
//! or a `writeKey` field in the body; it must be one of `[server] write_keys`. Each call is
//! queued whole as JSON records the capture source decodes with the clickstream mapping
//! (malformed ones go to the dead letters with the reason, as from files and Kafka). A full
//! queue answers 429 so clients back off and retry.

use crate::api::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use serde_json::Value;
use trailmap_live::{CaptureInlet, Refused};

/// Where captured calls go, and the keys allowed to send them.
#[derive(Clone)]
pub struct Capture {
    pub inlet: CaptureInlet,
    pub write_keys: Vec<String>,
}

/// Single calls Segment's HTTP API takes, by path.
const CALLS: [&str; 6] = ["track", "page", "screen", "identify", "group", "alias"];

#[utoipa::path(post, path = "/v1/{call}", tag = "capture",
    params(("call" = String, Path, description = "track, page, screen, identify, group, alias, or batch")),
    request_body(content = Object, description = "A Segment call, or {\"batch\": [calls…]} for /v1/batch; the write key as the Basic auth user name (or `writeKey`)"),
    responses((status = 200, description = "`{\"success\": true}`: queued"),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody, description = "The pipeline is behind: retry with backoff")))]
pub async fn call(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let capture = state.capture().ok_or_else(|| {
        ApiError::not_found(
            "capture is off here: start `trailmap serve --capture` to take Segment calls",
        )
    })?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    authorize(capture, &headers, &body)?;
    let messages = if kind == "batch" || kind == "import" {
        match body.get("batch") {
            Some(Value::Array(batch)) => batch.clone(),
            _ => {
                return Err(ApiError::bad_request(
                    "a batch call takes {\"batch\": [calls…]}",
                ));
            }
        }
    } else if CALLS.contains(&kind.as_str()) {
        let mut message = body;
        if let Value::Object(m) = &mut message {
            m.entry("type")
                .or_insert_with(|| Value::String(kind.clone()));
        }
        vec![message]
    } else {
        return Err(ApiError::not_found(format!(
            "no capture call `/v1/{kind}`; use /v1/track, /v1/page, /v1/screen, /v1/identify, \
             /v1/group, /v1/alias or /v1/batch"
        )));
    };
    let mut records = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        if !message.is_object() {
            return Err(ApiError::bad_request(format!(
                "call {i} of the request is not a JSON object"
            )));
        }
        records.push(serde_json::to_vec(message).unwrap_or_default());
    }
    match capture.inlet.offer(records) {
        Ok(()) => Ok(Json(serde_json::json!({ "success": true }))),
        Err(Refused::Full) => Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "the live pipeline is behind; retry with backoff".into(),
        }),
        Err(Refused::Closed) => Err(ApiError::unavailable("the live pipeline has stopped")),
    }
}

/// The write key from Basic auth (user name) or the body's `writeKey`, checked.
fn authorize(capture: &Capture, headers: &HeaderMap, body: &Value) -> Result<(), ApiError> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(|pair| pair.split(':').next().unwrap_or_default().to_string());
    let key = from_header.or_else(|| {
        body.get("writeKey")
            .and_then(Value::as_str)
            .map(String::from)
    });
    match key {
        Some(k) if capture.write_keys.contains(&k) => Ok(()),
        Some(_) => Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "unknown write key: use one of [server] write_keys".into(),
        }),
        None => Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "no write key: send it as the Basic auth user name (as Segment's libraries do) or as `writeKey`".into(),
        }),
    }
}
