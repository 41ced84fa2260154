//! `/api/sql`: read-only SQL, run by the engine the binary wires in (this crate knows no SQL
//! engine: DataFusion stays out of the HTTP layer), answered as columns and row objects.

use crate::api::AppState;
use crate::error::{ApiError, ErrorBody};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A query's result: column names, and one JSON object per row (numbers as numbers).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SqlAnswer {
    pub columns: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Value>,
}

/// Runs one query; `Err` is the engine's message (a refused write, a planning error, a
/// timeout), which says what to change.
pub type SqlRunner = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<SqlAnswer, String>> + Send>> + Send + Sync,
>;

#[utoipa::path(get, path = "/api/sql", tag = "sql",
    params(("q" = String, Query, description = "One read-only query, e.g. SELECT * FROM live_touchpoints ORDER BY exits DESC")),
    responses((status = 200, body = SqlAnswer), (status = 400, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<SqlAnswer>, ApiError> {
    if let Some(other) = query.keys().find(|k| k.as_str() != "q") {
        return Err(ApiError::bad_request(format!(
            "unknown parameter `{other}`; /api/sql takes `q`, the query"
        )));
    }
    let Some(sql) = query.get("q") else {
        return Err(ApiError::bad_request(
            "no query: /api/sql?q=SELECT … (or POST the query as the body)",
        ));
    };
    run(&state, sql.clone()).await
}

#[utoipa::path(post, path = "/api/sql", tag = "sql",
    request_body(content = String, content_type = "text/plain", description = "One read-only query"),
    responses((status = 200, body = SqlAnswer), (status = 400, body = ErrorBody)))]
pub async fn post(State(state): State<AppState>, body: Bytes) -> Result<Json<SqlAnswer>, ApiError> {
    let sql = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("the query is not UTF-8 text"))?;
    run(&state, sql).await
}

async fn run(state: &AppState, sql: String) -> Result<Json<SqlAnswer>, ApiError> {
    let runner = state.sql().ok_or_else(|| {
        ApiError::not_found(
            "SQL is not served here; `trailmap demo` and `serve` with a live pipeline serve it",
        )
    })?;
    if sql.trim().is_empty() {
        return Err(ApiError::bad_request("the query is empty"));
    }
    runner(sql).await.map(Json).map_err(ApiError::bad_request)
}
