//! [`run_worker`]: one call that runs a [`Worker`] with its ops endpoints until shutdown — what
//! `wasm-sandbox serve` (and its `--local` demo) drive, after the command line has resolved
//! the settings into a [`WorkerConfig`].

use std::net::SocketAddr;
use std::sync::Arc;

use super::{Observer, Shutdown, Worker, WorkerConfig};
use crate::metrics::Metrics;
use crate::ops::{self, OpsState};
use crate::sandbox::SandboxProvider;

/// Connections [`crate::client::EnvironmentClient::prewarm`] opens on HTTP/1.1: a claim
/// starts about four requests at once (ack, session, stream, history) while the poll and the
/// other sessions' streams hold theirs.
fn prewarm_connections(concurrency: usize) -> usize {
    (2 * concurrency + 4).min(24)
}

/// Runs a worker with `provider` until `shutdown`, with the ops endpoints when configured.
///
/// # Errors
/// When the worker cannot be built (its HTTP client), the ops listener cannot bind, or the
/// worker's run fails.
pub async fn run_worker<P: SandboxProvider>(
    config: WorkerConfig,
    provider: P,
    ops_listen: Option<SocketAddr>,
    shutdown: Shutdown,
    observer: Option<Observer>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    // What sessions need and this host lacks, for `/readyz` (probed once, at start-up).
    let unavailable = provider.unavailable();
    // The session shape: which limits hold, for `/readyz` and `/metrics`.
    let shape_detail = match provider.shape() {
        Some(shape) => {
            metrics.shape_limits(&shape);
            vec![format!("shape ({}): {}", shape.enforce, shape.summary())]
        }
        None => Vec::new(),
    };
    let base_url_is_https = config.base_url.starts_with("https://");
    let concurrency = config.concurrency;
    let mut worker = Worker::new(config, provider, Arc::clone(&metrics))?;
    if let Some(o) = observer {
        worker = worker.with_observer(o);
    }
    let ops_stop = tokio_util::sync::CancellationToken::new();
    let ops_task = match ops_listen {
        Some(addr) => {
            let state = OpsState {
                metrics,
                status: worker.status(),
                env: worker.environment_client(),
            };
            Some(
                ops::spawn_with_detail(addr, state, unavailable, shape_detail, ops_stop.clone())
                    .await?
                    .1,
            )
        }
        None => None,
    };
    // Over TLS a new connection costs two round trips; open the ones a claim needs now, in the
    // background (HTTP/2: the first poll's connection is all it needs; this is one extra read).
    let prewarm = worker.environment_client();
    let prewarm_task = base_url_is_https.then(|| {
        tokio::spawn(async move {
            match prewarm.prewarm(prewarm_connections(concurrency)).await {
                Ok(v) => tracing::debug!(version = ?v, "API connections pre-warmed"),
                Err(e) => tracing::debug!(error = %e, "pre-warming API connections failed"),
            }
        })
    });
    let result = worker.run(shutdown).await;
    if let Some(t) = prewarm_task {
        t.abort();
    }
    ops_stop.cancel();
    if let Some(t) = ops_task {
        let _ = t.await;
    }
    result
}
