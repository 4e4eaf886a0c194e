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

use std::time::Duration;

use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::proto::{
    API_VERSION, ErrorEnvelope, EventError, LeaseState, MANAGED_AGENTS_BETA, SessionEvent,
    StopRequest,
};

/// A session's history, oldest first: each event decoded on its own (an event that cannot be
/// decoded is an `Err` in its place and does not affect the others).
pub type History = Vec<Result<SessionEvent, EventError>>;
use crate::secret::Secret;

mod environment;
mod item;

pub use environment::EnvironmentClient;
pub use item::{EventStream, ItemClient, StreamError};

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

/// Reads a `--ca-cert` file: one or more PEM certificates, each checked as a root
/// ([`parse_root_certs`]).
///
/// # Errors
/// When the file cannot be read or holds no usable certificate.
pub fn load_ca_certs(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    parse_root_certs(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
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
