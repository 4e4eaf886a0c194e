//! HTTP client for the work API and the session event API (protocol §1–§5).
//!
//! [`Api`] holds one `reqwest` connection pool and the base URL; credential-bound handles do the
//! calls: [`EnvironmentClient`] (environment key: poll, ack, stop, stats, retrieve) and
//! [`ItemClient`] (the per-item credential: heartbeat, force-stop, session fetch, event stream,
//! history, result posting).
//!
//! Every request carries `Authorization: Bearer …`, `anthropic-version`, `anthropic-beta:
//! managed-agents-2026-04-01`, `x-stainless-helper`, and `Content-Type: application/json` on
//! POSTs (also body-less ones, as the Python SDK does). Every call has a timeout. Calls that the
//! SDK retries in its core client (max 2 retries on connection errors, 408, 409, 429, 5xx, or
//! `x-should-retry: true`; delay from `retry-after-ms`/`retry-after` or `min(0.5·2^n, 8) s ×
//! (1 − 0.25·rand)`) are retried the same way here; the loops that own their own retry policy
//! (poll, heartbeat, stream, result send) call with no client-level retries so a failure
//! surfaces to the loop at once (the heartbeat above all: hidden retries would outlive a lease),
//! and so does `/queue`'s cached stats read ([`EnvironmentClient::stats_once`]), which must
//! never multiply upstream calls.
//!
//! Security: credentials live in [`Secret`]s; the `Authorization` header value is marked
//! sensitive, so `reqwest`/`hyper` debug output redacts it; URLs carry no credential, so
//! transport errors (which print the URL) cannot leak one.
//!
//! # Connections
//!
//! At 100–300 ms from the control plane, a new connection costs a round trip for TCP and one
//! more for TLS 1.3 before the first request goes out, so the client keeps its connections warm
//! ([`Api::new`]):
//! * **HTTP/2 where the server offers it** (ALPN `h2`, then `http/1.1`): the polls, the ack and
//!   every request of every claimed session are streams on one TLS connection, which the poll
//!   loop keeps busy; the requests started in parallel after a claim need no handshake at all.
//!   HTTP/2 PINGs every 20 s (also while idle; a PING unanswered for 10 s closes the
//!   connection) find a dead connection before a request waits on it, and TCP keep-alive
//!   (15 s) does the same below it.
//! * **HTTP/1.1 otherwise** (a server or TLS-intercepting proxy without HTTP/2): one request
//!   per connection at a time, so idle connections stay pooled for 90 s and
//!   [`EnvironmentClient::prewarm`] opens enough of them at start-up for a claim's parallel
//!   requests.
//!
//! Trust: the server certificate must chain to the roots bundled with the binary (Mozilla's,
//! via `webpki-roots`) or to a root added with [`ClientConfig::extra_root_certs`] (`serve
//! --ca-cert FILE`, for a TLS-intercepting corporate proxy or a private CA). Extra roots are
//! added to the bundled ones, never replace them, and a name or chain that does not verify
//! fails the connection: there is no switch that turns verification off. `HTTPS_PROXY`
//! (and `HTTP_PROXY`, `NO_PROXY`) are honoured: requests go through the proxy's `CONNECT`
//! tunnel with TLS end to end to the control plane, so HTTP/2 and the certificate check still
//! hold.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::{Stream, StreamExt as _};
use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::proto::{
    API_VERSION, ErrorEnvelope, EventError, EventPage, HeartbeatResponse, LeaseState,
    MANAGED_AGENTS_BETA, OutgoingEvent, QueueStats, SendEvents, Session, SessionEvent,
    SkillVersion, StopRequest, Work,
};

/// A session's history, oldest first: each event decoded on its own (an event that cannot be
/// decoded is an `Err` in its place and does not affect the others).
pub type History = Vec<Result<SessionEvent, EventError>>;
use crate::secret::Secret;

/// The memory-store beta (protocol §7.2).
pub const AGENT_MEMORY_BETA: &str = "agent-memory-2026-07-22";

/// `x-stainless-helper` tags (telemetry only; servers ignore them).
const HELPER_POLLER: &str = "environments-work-poller";
const HELPER_WORKER: &str = "environments-worker";
const HELPER_RUNNER: &str = "session-tool-runner";

/// An API call failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with a non-success status.
    #[error("{op}: HTTP {status}: {}", info.message)]
    Status {
        /// Operation name (`poll`, `heartbeat`, …).
        op: &'static str,
        /// HTTP status.
        status: u16,
        /// What the error envelope and headers said.
        info: Box<ErrorInfo>,
    },
    /// Connecting or transferring failed.
    #[error("{op}: connection error: {source}")]
    Connection {
        /// Operation name.
        op: &'static str,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The call ran past its timeout.
    #[error("{op}: timed out")]
    Timeout {
        /// Operation name.
        op: &'static str,
    },
    /// A 2xx response whose body could not be decoded.
    #[error("{op}: undecodable response: {detail}")]
    Decode {
        /// Operation name.
        op: &'static str,
        /// What went wrong.
        detail: String,
    },
}

impl ApiError {
    /// HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A 4xx that retrying will not fix: every 4xx except 408, 409 and 429 (protocol §1.5).
    pub fn is_fatal(&self) -> bool {
        matches!(self.status(), Some(s) if (400..500).contains(&s) && !matches!(s, 408 | 409 | 429))
    }

    /// Connection errors, timeouts, undecodable bodies, 5xx, 408, 409, 429.
    pub fn is_transient(&self) -> bool {
        !self.is_fatal()
    }

    /// Whether the SDK's core client would retry this error.
    fn core_retryable(&self) -> bool {
        match self {
            ApiError::Status { status, info, .. } => match info.should_retry {
                Some(v) => v,
                None => matches!(*status, 408 | 409 | 429) || *status >= 500,
            },
            ApiError::Connection { .. } | ApiError::Timeout { .. } => true,
            ApiError::Decode { .. } => false,
        }
    }

    /// The server's lease view carried by a 412 heartbeat response.
    pub fn lease_state(&self) -> Option<LeaseState> {
        let ApiError::Status { info, .. } = self else {
            return None;
        };
        let current = info.details.as_ref()?.get("current_state")?;
        serde_json::from_value(current.clone()).ok()
    }
}

/// Details of an [`ApiError::Status`].
#[derive(Debug, Default)]
pub struct ErrorInfo {
    /// `error.type`.
    pub error_type: Option<String>,
    /// `error.details.error_code`.
    pub error_code: Option<String>,
    /// `error.message` or a short body excerpt.
    pub message: String,
    /// `error.details`.
    pub details: Option<Value>,
    /// `request-id` header or envelope field.
    pub request_id: Option<String>,
    /// `x-should-retry` header, when present.
    pub should_retry: Option<bool>,
}

/// Settings of the HTTP client: timeouts and extra trusted roots.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// TCP/TLS connect timeout (SDK: 5 s).
    pub connect: Duration,
    /// Total timeout of an ordinary call (ack, stop, stats, retrieve, session, send, list page).
    pub request: Duration,
    /// Extra time a poll may take beyond its `block_ms`.
    pub poll_slack: Duration,
    /// Timeout to receive the stream's response headers.
    pub stream_open: Duration,
    /// Longest silence on an open event stream before it counts as dropped (SDK: 600 s read
    /// timeout).
    pub stream_idle: Duration,
    /// Certificates trusted as roots in addition to the bundled ones (`serve --ca-cert`).
    pub extra_root_certs: Vec<reqwest::Certificate>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            poll_slack: Duration::from_secs(15),
            stream_open: Duration::from_secs(30),
            stream_idle: Duration::from_secs(600),
            extra_root_certs: Vec::new(),
        }
    }
}

/// Reads PEM certificates (one or more `CERTIFICATE` blocks) to trust as extra roots.
///
/// # Errors
/// When the text holds no certificate or one that does not parse.
pub fn parse_root_certs(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) found".to_owned());
    }
    // Checks each one as the client builder will (a certificate rustls cannot use as a root
    // fails here, at start-up, instead of at the first connection).
    let mut builder = reqwest::Client::builder();
    for c in &certs {
        builder = builder.add_root_certificate(c.clone());
    }
    builder
        .build()
        .map_err(|e| format!("unusable certificate: {e}"))?;
    Ok(certs)
}

/// HTTP/2 PING interval on open connections (also while idle).
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// A PING unanswered this long closes the connection.
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection stays pooled.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive probes on every socket.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Shared HTTP state: connection pool, base URL, timeouts.
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    /// Shared: every item's client holds a clone of this `Api`.
    timeouts: std::sync::Arc<ClientConfig>,
    /// Core retries for calls the SDK retries in its core client.
    max_retries: u32,
}

/// How many retries a call gets at the client level.
#[derive(Clone, Copy, Debug)]
enum Retries {
    /// None: the calling loop owns the retry policy.
    None,
    /// The SDK core client's policy.
    Core,
    /// The core policy, except that these statuses are final answers.
    CoreExcept(&'static [u16]),
}

impl Api {
    /// Builds a client for `base_url` (e.g. `https://api.anthropic.com`): HTTP/2 where the
    /// server offers it by ALPN, else HTTP/1.1; keep-alive as the module docs say; the
    /// bundled roots plus [`ClientConfig::extra_root_certs`].
    pub fn new(base_url: &str, timeouts: ClientConfig) -> Result<Api, ApiError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .user_agent(concat!("wasm-sandbox-worker/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_keepalive(TCP_KEEPALIVE)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .http2_keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true);
        for cert in &timeouts.extra_root_certs {
            builder = builder.add_root_certificate(cert.clone());
        }
        let http = builder.build().map_err(|source| ApiError::Connection {
            op: "client",
            source,
        })?;
        Ok(Api {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            timeouts: std::sync::Arc::new(timeouts),
            max_retries: 2,
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Client settings (timeouts, extra roots).
    pub fn timeouts(&self) -> &ClientConfig {
        &self.timeouts
    }

    /// Handle for environment-key calls.
    pub fn environment(&self, environment_id: &str, key: Secret) -> EnvironmentClient {
        EnvironmentClient {
            api: self.clone(),
            environment_id: environment_id.to_owned(),
            key,
        }
    }

    /// Handle for one claimed item's calls, authenticated with the item credential.
    pub fn item(
        &self,
        environment_id: &str,
        work_id: &str,
        session_id: &str,
        credential: Secret,
    ) -> ItemClient {
        ItemClient {
            api: self.clone(),
            environment_id: environment_id.to_owned(),
            work_id: work_id.to_owned(),
            session_id: session_id.to_owned(),
            credential,
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        credential: &Secret,
        helper: &'static str,
    ) -> RequestBuilder {
        self.request_beta(method, path, credential, helper, Some(MANAGED_AGENTS_BETA))
    }

    /// [`Self::request`] with a chosen `anthropic-beta` header (`None`: no beta header, as the
    /// SDK sends on `/v1/skills/**`).
    fn request_beta(
        &self,
        method: Method,
        path: &str,
        credential: &Secret,
        helper: &'static str,
        beta: Option<&'static str>,
    ) -> RequestBuilder {
        let mut headers = HeaderMap::new();
        if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", credential.expose())) {
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        if let Some(beta) = beta {
            headers.insert("anthropic-beta", HeaderValue::from_static(beta));
        }
        headers.insert("x-stainless-helper", HeaderValue::from_static(helper));
        if method == Method::POST {
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        self.http
            .request(method, format!("{}{path}", self.base))
            .headers(headers)
    }

    /// Sends a request built by `build`, retrying per `retries`; returns a 2xx response.
    async fn send(
        &self,
        op: &'static str,
        retries: Retries,
        timeout: Duration,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ApiError> {
        let (max, final_statuses): (u32, &[u16]) = match retries {
            Retries::None => (0, &[]),
            Retries::Core => (self.max_retries, &[]),
            Retries::CoreExcept(statuses) => (self.max_retries, statuses),
        };
        let mut attempt = 0u32;
        loop {
            let (err, retry_after) = match build().timeout(timeout).send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => status_error(op, resp).await,
                Err(e) if e.is_timeout() => (ApiError::Timeout { op }, None),
                Err(source) => (ApiError::Connection { op, source }, None),
            };
            let final_answer = err.status().is_some_and(|s| final_statuses.contains(&s));
            if attempt >= max || final_answer || !err.core_retryable() {
                return Err(err);
            }
            let delay = retry_after.unwrap_or_else(|| core_backoff(attempt));
            tracing::debug!(op, attempt, delay_ms = delay.as_millis() as u64, error = %err, "retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// `min(0.5·2^n, 8) s × (1 − 0.25·rand)` — the SDK core client's retry delay.
fn core_backoff(attempt: u32) -> Duration {
    let base = (0.5 * 2f64.powi(attempt.min(16) as i32)).min(8.0);
    let jitter = 1.0 - 0.25 * rand::thread_rng().r#gen::<f64>();
    Duration::from_secs_f64(base * jitter)
}

/// Builds an [`ApiError::Status`] from a non-2xx response, plus a server-requested delay.
async fn status_error(op: &'static str, resp: Response) -> (ApiError, Option<Duration>) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let retry_after = header_str("retry-after-ms")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|ms| ms / 1000.0)
        .or_else(|| header_str("retry-after").and_then(|v| v.trim().parse::<f64>().ok()))
        .filter(|s| s.is_finite() && (0.0..=60.0).contains(s))
        .map(Duration::from_secs_f64);
    let should_retry = match header_str("x-should-retry") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let header_request_id = header_str("request-id").map(str::to_owned);
    let body = resp.bytes().await.unwrap_or_default();
    let envelope: ErrorEnvelope = serde_json::from_slice(&body).unwrap_or_default();
    let error = envelope.error.unwrap_or_default();
    let message = error.message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&body);
        text.chars().take(200).collect()
    });
    let error_code = error
        .details
        .as_ref()
        .and_then(|d| d.get("error_code"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    (
        ApiError::Status {
            op,
            status,
            info: Box::new(ErrorInfo {
                error_type: error.kind,
                error_code,
                message,
                details: error.details,
                request_id: header_request_id.or(envelope.request_id),
                should_retry,
            }),
        },
        retry_after,
    )
}

/// Reads a JSON body; an empty body or JSON `null` is `None`.
async fn json_opt<T: DeserializeOwned>(
    op: &'static str,
    resp: Response,
) -> Result<Option<T>, ApiError> {
    if resp.status() == StatusCode::NO_CONTENT {
        return Ok(None);
    }
    let body = resp.bytes().await.map_err(|source| {
        if source.is_timeout() {
            ApiError::Timeout { op }
        } else {
            ApiError::Connection { op, source }
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<Option<T>>(&body).map_err(|e| ApiError::Decode {
        op,
        detail: e.to_string(),
    })
}

async fn json_req<T: DeserializeOwned>(op: &'static str, resp: Response) -> Result<T, ApiError> {
    json_opt(op, resp).await?.ok_or(ApiError::Decode {
        op,
        detail: "empty body".into(),
    })
}

/// Whether `s` can be put into a URL path as one segment verbatim: non-empty, at most 256
/// bytes of ASCII letters, digits, `_`, `-` and `.`, and not `.` or `..`. Ids taken from a
/// session (skill ids, versions) are checked before they are put into a path, so a hostile
/// value cannot address another route.
pub fn is_safe_path_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn check_segments(op: &'static str, segments: &[&str]) -> Result<(), ApiError> {
    match segments.iter().find(|s| !is_safe_path_segment(s)) {
        Some(bad) => Err(ApiError::Decode {
            op,
            detail: format!("refusing unsafe path segment {bad:?}"),
        }),
        None => Ok(()),
    }
}

/// Outcome of a stop call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// 200 or 204.
    Stopped,
    /// 409: the item had already stopped (swallowed, as every SDK does).
    AlreadyStopped,
}

/// Environment-key calls (protocol §3).
#[derive(Clone, Debug)]
pub struct EnvironmentClient {
    api: Api,
    environment_id: String,
    key: Secret,
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

async fn stop(
    api: &Api,
    path: &str,
    credential: &Secret,
    force: bool,
    helper: &'static str,
) -> Result<StopOutcome, ApiError> {
    let body = StopRequest {
        force: force.then_some(true),
    };
    // 409 = already stopped: a final answer, not worth a retry.
    match api
        .send(
            "stop",
            Retries::CoreExcept(&[409]),
            api.timeouts.request,
            || {
                api.request(Method::POST, path, credential, helper)
                    .json(&body)
            },
        )
        .await
    {
        // 200 with the work item, or 204 with no body: both mean stopped; the body is not needed.
        Ok(_) => Ok(StopOutcome::Stopped),
        Err(e) if e.status() == Some(409) => Ok(StopOutcome::AlreadyStopped),
        Err(e) => Err(e),
    }
}

/// Per-item calls, authenticated with the item credential (sessions token, else the
/// environment key).
#[derive(Clone, Debug)]
pub struct ItemClient {
    api: Api,
    environment_id: String,
    work_id: String,
    session_id: String,
    credential: Secret,
}

/// A live session event stream.
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = Result<StreamItem, StreamError>> + Send>>,
    idle: Duration,
}

/// One decoded SSE frame.
#[derive(Debug)]
enum StreamItem {
    Event(SessionEvent),
    Skip,
}

/// Why the event stream ended or yielded garbage.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Transport failure or EOF-like breakage.
    #[error("stream transport error: {0}")]
    Transport(String),
    /// No bytes for longer than the idle timeout.
    #[error("stream silent for {0:?}")]
    Idle(Duration),
    /// An `event: error` frame.
    #[error("server sent an error event: {0}")]
    ServerError(String),
    /// A frame whose data is not a valid event.
    #[error("malformed event frame ({name}): {error}")]
    Malformed {
        /// SSE event name.
        name: String,
        /// Decode error.
        error: crate::proto::EventError,
    },
}

impl EventStream {
    /// Next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<Result<SessionEvent, StreamError>> {
        loop {
            match tokio::time::timeout(self.idle, self.inner.next()).await {
                Err(_) => return Some(Err(StreamError::Idle(self.idle))),
                Ok(None) => return None,
                Ok(Some(Ok(StreamItem::Skip))) => continue,
                Ok(Some(Ok(StreamItem::Event(ev)))) => return Some(Ok(ev)),
                Ok(Some(Err(e))) => return Some(Err(e)),
            }
        }
    }
}

impl ItemClient {
    /// Work id.
    pub fn work_id(&self) -> &str {
        &self.work_id
    }

    /// Session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    fn work_path(&self, rest: &str) -> String {
        format!(
            "/v1/environments/{}/work/{}{rest}",
            self.environment_id, self.work_id
        )
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/v1/sessions/{}{rest}", self.session_id)
    }

    /// `POST …/heartbeat?expected_last_heartbeat=…`, bounded by `timeout`, no client retries.
    pub async fn heartbeat(
        &self,
        expected_last_heartbeat: &str,
        timeout: Duration,
    ) -> Result<HeartbeatResponse, ApiError> {
        let path = self.work_path("/heartbeat");
        let call = async {
            let resp = self
                .api
                .send("heartbeat", Retries::None, timeout, || {
                    self.api
                        .request(Method::POST, &path, &self.credential, HELPER_WORKER)
                        .query(&[("expected_last_heartbeat", expected_last_heartbeat)])
                })
                .await?;
            json_req("heartbeat", resp).await
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(ApiError::Timeout { op: "heartbeat" }))
    }

    /// `POST …/stop` with the item credential; 409 is swallowed.
    pub async fn stop(&self, force: bool) -> Result<StopOutcome, ApiError> {
        stop(
            &self.api,
            &self.work_path("/stop"),
            &self.credential,
            force,
            HELPER_WORKER,
        )
        .await
    }

    /// `GET /v1/sessions/{id}`.
    pub async fn session(&self) -> Result<Session, ApiError> {
        let path = self.session_path("");
        let resp = self
            .api
            .send("session", Retries::Core, self.api.timeouts.request, || {
                self.api
                    .request(Method::GET, &path, &self.credential, HELPER_WORKER)
            })
            .await?;
        json_req("session", resp).await
    }

    /// `GET /v1/skills/{skill_id}/versions/{version}` (no beta header): resolves a version,
    /// the `latest` alias included. Both ids must be [`is_safe_path_segment`].
    pub async fn skill_version(
        &self,
        skill_id: &str,
        version: &str,
    ) -> Result<SkillVersion, ApiError> {
        let op = "skill_version";
        check_segments(op, &[skill_id, version])?;
        let path = format!("/v1/skills/{skill_id}/versions/{version}");
        let resp = self
            .api
            .send(op, Retries::Core, self.api.timeouts.request, || {
                self.api
                    .request_beta(Method::GET, &path, &self.credential, HELPER_WORKER, None)
            })
            .await?;
        json_req(op, resp).await
    }

    /// `GET /v1/skills/{skill_id}/versions/{version_id}/content` with `Accept:
    /// application/binary` (no beta header): the archive as a byte stream, not buffered. The
    /// whole download is bounded by `timeout`.
    pub async fn skill_content(
        &self,
        skill_id: &str,
        version_id: &str,
        timeout: Duration,
    ) -> Result<impl tokio::io::AsyncRead + Send + Unpin + use<>, ApiError> {
        let op = "skill_content";
        check_segments(op, &[skill_id, version_id])?;
        let path = format!("/v1/skills/{skill_id}/versions/{version_id}/content");
        let resp = self
            .api
            .send(op, Retries::Core, timeout, || {
                self.api
                    .request_beta(Method::GET, &path, &self.credential, HELPER_WORKER, None)
                    .header(reqwest::header::ACCEPT, "application/binary")
            })
            .await?;
        let body = resp
            .bytes_stream()
            .map(|r| r.map_err(std::io::Error::other));
        Ok(tokio_util::io::StreamReader::new(body))
    }

    /// One memory-store call (`anthropic-beta: agent-memory-2026-07-22`; protocol §7.2):
    /// `path` must already be built from checked segments. 409 and 412 are final answers (a
    /// failed precondition), not retried. Returns the JSON body (`None` when empty).
    pub async fn memory_call(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Option<Value>, ApiError> {
        let resp = self
            .api
            .send(
                op,
                Retries::CoreExcept(&[409, 412]),
                self.api.timeouts.request,
                || {
                    let mut r = self
                        .api
                        .request_beta(
                            method.clone(),
                            path,
                            &self.credential,
                            HELPER_WORKER,
                            Some(AGENT_MEMORY_BETA),
                        )
                        .query(query);
                    if let Some(b) = body {
                        r = r.json(b);
                    }
                    r
                },
            )
            .await?;
        json_opt(op, resp).await
    }

    /// `GET /v1/sessions/{id}/events/stream` (SSE). Frames without an `event:` name and `ping`s
    /// are dropped; `event: error` and undecodable frames surface as [`StreamError`]s.
    pub async fn stream(&self) -> Result<EventStream, ApiError> {
        let path = self.session_path("/events/stream");
        let open = self.api.send(
            "events.stream",
            Retries::None,
            // No total timeout on the long-lived body; the open itself is bounded below and each
            // read by the idle timeout.
            Duration::from_secs(60 * 60 * 24 * 365),
            || {
                self.api
                    .request(Method::GET, &path, &self.credential, HELPER_RUNNER)
                    .header(reqwest::header::ACCEPT, "text/event-stream")
            },
        );
        let resp = tokio::time::timeout(self.api.timeouts.stream_open, open)
            .await
            .unwrap_or(Err(ApiError::Timeout {
                op: "events.stream",
            }))?;
        let inner = resp.bytes_stream().eventsource().map(|frame| match frame {
            Err(e) => Err(StreamError::Transport(e.to_string())),
            Ok(ev) => match ev.event.as_str() {
                "ping" => Ok(StreamItem::Skip),
                // `message` is the SSE default name: the frame had no `event:` line.
                "" | "message" => {
                    tracing::debug!("dropping an SSE frame without an event name");
                    Ok(StreamItem::Skip)
                }
                "error" => Err(StreamError::ServerError(
                    ev.data.chars().take(500).collect(),
                )),
                name => SessionEvent::parse(&ev.data)
                    .map(StreamItem::Event)
                    .map_err(|error| StreamError::Malformed {
                        name: name.to_owned(),
                        error,
                    }),
            },
        });
        Ok(EventStream {
            inner: Box::pin(inner),
            idle: self.api.timeouts.stream_idle,
        })
    }

    /// `GET /v1/sessions/{id}/events?limit=1000` and every further page, oldest first. Each
    /// page's `data` is split into its elements' raw JSON text and every element is decoded on
    /// its own ([`SessionEvent::parse`], lenient about lone surrogate escapes), so one odd
    /// event never makes the page, and the events after it, unreadable.
    pub async fn list_events(&self) -> Result<History, ApiError> {
        let path = self.session_path("/events");
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        let mut seen_cursors = std::collections::HashSet::new();
        loop {
            let resp = self
                .api
                .send(
                    "events.list",
                    Retries::Core,
                    self.api.timeouts.request,
                    || {
                        let mut query = vec![("limit", "1000".to_owned())];
                        if let Some(p) = &page {
                            query.push(("page", p.clone()));
                        }
                        self.api
                            .request(Method::GET, &path, &self.credential, HELPER_RUNNER)
                            .query(&query)
                    },
                )
                .await?;
            let body: EventPage = json_req("events.list", resp).await?;
            out.extend(body.data.iter().map(|raw| SessionEvent::parse(raw.get())));
            match body.next_page.filter(|p| !p.is_empty()) {
                Some(next) if seen_cursors.insert(next.clone()) => page = Some(next),
                Some(_) => {
                    return Err(ApiError::Decode {
                        op: "events.list",
                        detail: "pagination cursor repeated".into(),
                    });
                }
                None => return Ok(out),
            }
        }
    }

    /// `POST /v1/sessions/{id}/events` with one or more result events; one attempt (the runner
    /// owns the retry window).
    pub async fn send_events(&self, events: &[OutgoingEvent]) -> Result<(), ApiError> {
        let path = self.session_path("/events");
        let body = SendEvents { events };
        self.api
            .send(
                "events.send",
                Retries::None,
                self.api.timeouts.request,
                || {
                    self.api
                        .request(Method::POST, &path, &self.credential, HELPER_RUNNER)
                        .json(&body)
                },
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> ApiError {
        ApiError::Status {
            op: "t",
            status: s,
            info: Box::default(),
        }
    }

    #[test]
    fn classification_matches_the_sdk() {
        for s in [400, 401, 403, 404, 412, 422] {
            assert!(status(s).is_fatal(), "{s}");
        }
        for s in [408, 409, 429, 500, 502, 503, 529] {
            assert!(status(s).is_transient(), "{s}");
            assert!(status(s).core_retryable(), "{s}");
        }
        assert!(ApiError::Timeout { op: "t" }.is_transient());
    }

    #[test]
    fn core_backoff_is_bounded() {
        for n in 0..40 {
            let d = core_backoff(n);
            assert!(d <= Duration::from_secs(8), "{n}: {d:?}");
            assert!(d >= Duration::from_millis(375), "{n}: {d:?}");
        }
    }

    #[test]
    fn lease_state_from_412_details() {
        let e = ApiError::Status {
            op: "heartbeat",
            status: 412,
            info: Box::new(ErrorInfo {
                details: Some(serde_json::json!({
                    "error_code": "heartbeat_precondition_failed",
                    "current_state": {"state": "active", "ttl_seconds": 4, "last_heartbeat": null, "lease_extended": false}
                })),
                ..ErrorInfo::default()
            }),
        };
        let s = e.lease_state().unwrap();
        assert_eq!(s.ttl_seconds, Some(4));
        assert_eq!(s.state, Some(crate::proto::WorkState::Active));
    }
}
