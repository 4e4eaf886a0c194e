//! [`EnvironmentClient`]: the calls made with the environment key (protocol §3): poll, ack,
//! stop, stats, pre-warm, retrieve.

use std::time::Duration;

use reqwest::Method;

use super::{
    Api, ApiError, HELPER_POLLER, HELPER_WORKER, Retries, StopOutcome, json_opt, json_req, stop,
};
use crate::proto::{QueueStats, Work};
use crate::secret::Secret;

/// Environment-key calls (protocol §3).
#[derive(Clone, Debug)]
pub struct EnvironmentClient {
    pub(super) api: Api,
    pub(super) environment_id: String,
    pub(super) key: Secret,
}

impl EnvironmentClient {
    /// The environment id.
    pub fn environment_id(&self) -> &str {
        &self.environment_id
    }

    /// The underlying [`Api`].
    pub fn api(&self) -> &Api {
        &self.api
    }

    fn work_path(&self, rest: &str) -> String {
        format!("/v1/environments/{}/work{rest}", self.environment_id)
    }

    /// `GET …/work/poll`: claims one item, or `None` when the queue is empty (200 `null`, 204,
    /// or an object with an empty id). No client-level retries: the poll loop backs off.
    pub async fn poll(
        &self,
        worker_id: &str,
        block_ms: Option<u32>,
        reclaim_older_than_ms: Option<u64>,
    ) -> Result<Option<Work>, ApiError> {
        let path = self.work_path("/poll");
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(b) = block_ms {
            query.push((
                "block_ms",
                b.clamp(1, crate::proto::POLL_BLOCK_MS_MAX).to_string(),
            ));
        }
        if let Some(r) = reclaim_older_than_ms {
            query.push(("reclaim_older_than_ms", r.max(1).to_string()));
        }
        let timeout =
            Duration::from_millis(u64::from(block_ms.unwrap_or(0))) + self.api.timeouts.poll_slack;
        let resp = self
            .api
            .send("poll", Retries::None, timeout, || {
                self.api
                    .request(Method::GET, &path, &self.key, HELPER_POLLER)
                    .header("Anthropic-Worker-ID", worker_id)
                    .query(&query)
            })
            .await?;
        let item: Option<Work> = json_opt("poll", resp).await?;
        Ok(item.filter(|w| !w.id.is_empty()))
    }

    /// `POST …/work/{id}/ack`.
    pub async fn ack(&self, work_id: &str) -> Result<(), ApiError> {
        let path = self.work_path(&format!("/{work_id}/ack"));
        self.api
            .send("ack", Retries::Core, self.api.timeouts.request, || {
                self.api
                    .request(Method::POST, &path, &self.key, HELPER_POLLER)
            })
            .await?;
        Ok(())
    }

    /// `POST …/work/{id}/stop` with the environment key; 409 is [`StopOutcome::AlreadyStopped`].
    pub async fn stop(&self, work_id: &str, force: bool) -> Result<StopOutcome, ApiError> {
        stop(
            &self.api,
            &self.work_path(&format!("/{work_id}/stop")),
            &self.key,
            force,
            HELPER_POLLER,
        )
        .await
    }

    /// `GET …/work/stats`.
    pub async fn stats(&self) -> Result<QueueStats, ApiError> {
        let path = self.work_path("/stats");
        let resp = self
            .api
            .send("stats", Retries::Core, self.api.timeouts.request, || {
                self.api
                    .request(Method::GET, &path, &self.key, HELPER_WORKER)
            })
            .await?;
        json_req("stats", resp).await
    }

    /// Opens the connections a claim will need before the first claim: one `GET …/work/stats`
    /// (read-only) to learn the protocol; on HTTP/2 that one connection carries everything and
    /// this returns; on HTTP/1.1 `connections` concurrent stats reads leave that many
    /// connections in the pool (idle for up to 90 s), so the requests a claim starts in
    /// parallel find one each instead of paying TCP + TLS handshakes on the critical path.
    /// Returns the HTTP version the server answered with.
    ///
    /// # Errors
    /// When the first read fails (the later ones are best effort).
    pub async fn prewarm(&self, connections: usize) -> Result<reqwest::Version, ApiError> {
        let path = self.work_path("/stats");
        let call = || async {
            let resp = self
                .api
                .send("prewarm", Retries::None, self.api.timeouts.request, || {
                    self.api
                        .request(Method::GET, &path, &self.key, HELPER_WORKER)
                })
                .await?;
            let version = resp.version();
            // Read the body to its end: an HTTP/1.1 connection goes back to the pool only then.
            resp.bytes().await.map_err(|source| ApiError::Connection {
                op: "prewarm",
                source,
            })?;
            Ok::<_, ApiError>(version)
        };
        let version = call().await?;
        if version < reqwest::Version::HTTP_2 && connections > 1 {
            let all = futures::future::join_all((0..connections).map(|_| call())).await;
            let failed = all.iter().filter(|r| r.is_err()).count();
            if failed > 0 {
                tracing::debug!(failed, connections, "some pre-warm requests failed");
            }
        }
        Ok(version)
    }

    /// `GET …/work/stats`, one attempt and no client retries: for `/queue`, which caches and
    /// must never multiply upstream calls (see [`crate::ops`]).
    pub async fn stats_once(&self) -> Result<QueueStats, ApiError> {
        let path = self.work_path("/stats");
        let resp = self
            .api
            .send("stats", Retries::None, self.api.timeouts.request, || {
                self.api
                    .request(Method::GET, &path, &self.key, HELPER_WORKER)
            })
            .await?;
        json_req("stats", resp).await
    }

    /// `GET …/work/{id}` (`secret` is null on this path).
    pub async fn retrieve(&self, work_id: &str) -> Result<Work, ApiError> {
        let path = self.work_path(&format!("/{work_id}"));
        let resp = self
            .api
            .send("retrieve", Retries::Core, self.api.timeouts.request, || {
                self.api
                    .request(Method::GET, &path, &self.key, HELPER_WORKER)
            })
            .await?;
        json_req("retrieve", resp).await
    }
}
