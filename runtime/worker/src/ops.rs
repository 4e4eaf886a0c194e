//! Operations endpoints, served on their own listen address (`--ops-listen`):
//!
//! * `GET /healthz` — 200 while the process runs;
//! * `GET /readyz` — 200 when the last poll succeeded and the worker is not draining, else 503;
//! * `GET /metrics` — Prometheus/OpenMetrics text ([`crate::metrics`]);
//! * `GET /queue` — a passthrough of `work.stats`: `{depth, pending, oldest_queued_at,
//!   workers_polling}` (502 if the control plane cannot be read), for a KEDA metrics-api scaler
//!   or a dashboard.
//!
//! Security: nothing served here contains a credential: `/queue` re-serialises only the four
//! stats fields, and upstream errors are reported as a fixed message, not echoed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::client::EnvironmentClient;
use crate::metrics::Metrics;
use crate::worker::WorkerStatus;

/// State shared by the ops handlers.
#[derive(Clone)]
pub struct OpsState {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Worker status for readiness.
    pub status: Arc<WorkerStatus>,
    /// Client for `work.stats`.
    pub env: EnvironmentClient,
}

/// The ops router.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/queue", get(queue))
        .with_state(state)
}

async fn readyz(State(s): State<OpsState>) -> Response {
    if s.status.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if s.status.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no successful poll\n",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<OpsState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn queue(State(s): State<OpsState>) -> Response {
    match s.env.stats().await {
        Ok(stats) => axum::Json(serde_json::json!({
            "depth": stats.depth,
            "pending": stats.pending,
            "oldest_queued_at": stats.oldest_queued_at,
            "workers_polling": stats.workers_polling,
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "work.stats failed");
            (
                StatusCode::BAD_GATEWAY,
                axum::Json(
                    serde_json::json!({"error": "work.stats unavailable", "status": e.status()}),
                ),
            )
                .into_response()
        }
    }
}

/// Binds `addr` and serves the ops endpoints until `shutdown` fires. Returns the bound address
/// (useful with port 0) and the server task.
pub async fn spawn(
    addr: SocketAddr,
    state: OpsState,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "ops server failed");
        }
    });
    tracing::info!(addr = %local, "ops endpoints listening");
    Ok((local, task))
}
