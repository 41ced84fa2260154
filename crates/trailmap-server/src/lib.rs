//! trailmap's HTTP face: the live journey map as a JSON API, health, and Prometheus metrics.
//!
//! The server holds no journey state of its own: every answer is read from the running
//! live pipeline ([`LiveHandle`]) when asked, over a window of event time ending at the
//! newest event seen (the data's "now", so replayed history answers like live traffic).
//!
//! Layout:
//! - [`api`]: the routes, `/api/map`, `/api/funnels/{name}`, `/api/dropoffs`, `/api/paths`,
//!   `/api/stream`, `/api/segments`, `/api/customers/{id}/timeline`, `/api/alerts`,
//!   `/api/status`, `/healthz`, `/readyz`, and the query parameters they share; `/` serves
//!   the dashboard (`assets/index.html`, embedded in the binary, fed by `/api/stream`).
//! - [`capture`]: Segment-compatible `POST /v1/track|page|identify|…|batch` into the
//!   pipeline's capture source, with write keys.
//! - [`metrics`]: `/metrics`, built from the pipeline's status and map at each scrape, so
//!   the numbers Prometheus sees are the numbers the API returns.
//! - [`sql`]: `/api/sql`, read-only SQL run by an engine the binary wires in.
//! - [`error`]: [`ApiError`], every failure as JSON with a message that says what to fix
//!   (a client's mistake is a 4xx, never a 5xx).

pub mod api;
pub mod capture;
pub mod error;
pub mod metrics;
pub mod sql;

pub use api::{AppState, Readiness, router};
pub use capture::Capture;
pub use error::ApiError;
pub use sql::{SqlAnswer, SqlRunner};

use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Binds the HTTP listener (port 0 picks a free one), with an error that names the address.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for HTTP on {address}: {e} (is another server on that port? pick one with --port)"),
        )
    })
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
