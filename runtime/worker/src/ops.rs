//! Operations endpoints, served on their own listen address (`--ops-listen`):
//!
//! * `GET /healthz` — 200 while the process runs;
//! * `GET /readyz` — 200 when the last poll succeeded, the worker is not draining and nothing a
//!   session needs is missing on this host; else 503 with the reason as text. What a session
//!   needs is checked once at start-up by the provider
//!   ([`SandboxProvider::unavailable`](crate::sandbox::SandboxProvider::unavailable)): for the
//!   core runtime, a bash sandbox that started (bubblewrap, user namespaces, Landlock, seccomp).
//!   A host where it cannot start (Ubuntu's AppArmor restriction of unprivileged user
//!   namespaces, no bubblewrap) used to report ready while every bash call failed; now the
//!   503 names what is missing and how to fix it, so a rollout stops there instead of
//!   replacing working replicas with broken ones;
//! * `GET /metrics` — Prometheus/OpenMetrics text ([`crate::metrics`]);
//! * `GET /queue` — `work.stats`: `{depth, pending, oldest_queued_at, workers_polling}`, for a
//!   KEDA metrics-api scaler or a dashboard, cached for [`QUEUE_TTL`] ([`QueueCache`]). While
//!   upstream fails, the last good value is served with `"stale": true` and its
//!   `"age_seconds"` (for up to [`QUEUE_MAX_STALE`]), else a 503.
//!
//! The same cache feeds the `wasm_sandbox_queue_depth` / `_queue_pending` gauges: every answer
//! it gets sets them, and while the ops server runs it is also asked every [`QUEUE_REFRESH`],
//! so the gauges stay current without anyone calling `/queue`. That refresh goes through the
//! cache too, so the bound below holds for the sum of GETs and refreshes.
//!
//! Security: nothing served here contains a credential: `/queue` re-serialises only the four
//! stats fields, and upstream errors are reported as a fixed message, not echoed.
//!
//! Security (amplification): the ops port is unauthenticated, and every upstream `work.stats`
//! call spends the environment key's rate limit — the same limit the worker's polls and acks
//! need. Before the cache, each GET made up to three upstream calls (the core client's two
//! retries on 429/5xx), so a caller could turn GETs into rate-limit exhaustion for the worker
//! exactly when upstream was already answering 429. Now at most one upstream call is made per
//! [`QUEUE_TTL`], whatever the number of GETs: the cache is refreshed under an async mutex
//! (single flight: concurrent GETs wait for the one request in progress and share its answer),
//! the call is made with no client retries, and a failure is cached for the TTL like a success.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use tokio::time::Instant;

use crate::client::EnvironmentClient;
use crate::metrics::Metrics;
use crate::proto::QueueStats;
use crate::sandbox::Unavailable;
use crate::status::WorkerStatus;

/// How often the ops server asks the [`QueueCache`] for `work.stats` on its own, to keep the
/// `wasm_sandbox_queue_depth` gauge current (well above [`QUEUE_TTL`]: one call per 15 s at
/// most from this, shared with `/queue` GETs by the cache).
pub const QUEUE_REFRESH: Duration = Duration::from_secs(15);

/// How long one `work.stats` answer (or failure) is served before upstream is asked again.
pub const QUEUE_TTL: Duration = Duration::from_secs(5);
/// Bound of one upstream `work.stats` call; GETs arriving meanwhile wait for it, so it is kept
/// well under a scraper's own timeout.
pub const QUEUE_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// How old the last good value may be to be served (marked stale) while upstream fails.
pub const QUEUE_MAX_STALE: Duration = Duration::from_secs(120);

/// The `work.stats` cache behind `/queue`: at most one upstream call per TTL, single flight.
pub struct QueueCache {
    env: EnvironmentClient,
    ttl: Duration,
    max_stale: Duration,
    /// Gauges set from each good answer.
    metrics: Option<Arc<Metrics>>,
    // A tokio mutex, held across the upstream call: that is the single flight (waiters sleep
    // asynchronously; no worker thread blocks).
    state: tokio::sync::Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// When upstream was last asked (success or failure).
    asked_at: Option<Instant>,
    /// The last good answer and when it came.
    good: Option<(QueueStats, Instant)>,
    /// The status of the last call when it failed (`Some(None)`: no HTTP status).
    failed: Option<Option<u16>>,
}

/// What `/queue` serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueAnswer {
    /// A value from upstream no older than the TTL.
    Fresh(QueueStats),
    /// Upstream failed; the last good value, this old.
    Stale(QueueStats, Duration),
    /// Upstream failed and there is no usable good value; the upstream status, if any.
    Unavailable(Option<u16>),
}

impl QueueCache {
    /// A cache over `env` with the default TTL and staleness bound.
    pub fn new(env: EnvironmentClient) -> QueueCache {
        QueueCache::with_ttl(env, QUEUE_TTL, QUEUE_MAX_STALE)
    }

    /// A cache with chosen bounds (tests).
    pub fn with_ttl(env: EnvironmentClient, ttl: Duration, max_stale: Duration) -> QueueCache {
        QueueCache {
            env,
            ttl,
            max_stale,
            metrics: None,
            state: tokio::sync::Mutex::new(CacheState::default()),
        }
    }

    /// Sets the `queue_depth` / `queue_pending` gauges of `metrics` from every good answer.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> QueueCache {
        self.metrics = Some(metrics);
        self
    }

    /// The answer for one GET: cached while younger than the TTL, else one upstream call
    /// (shared by every GET that arrives meanwhile).
    pub async fn get(&self) -> QueueAnswer {
        let mut st = self.state.lock().await;
        let expired = st.asked_at.is_none_or(|at| at.elapsed() >= self.ttl);
        if expired {
            let result =
                match tokio::time::timeout(QUEUE_UPSTREAM_TIMEOUT, self.env.stats_once()).await {
                    Ok(r) => r,
                    Err(_) => Err(crate::client::ApiError::Timeout { op: "stats" }),
                };
            let now = Instant::now();
            st.asked_at = Some(now);
            match result {
                Ok(stats) => {
                    if let Some(m) = &self.metrics {
                        m.queue_stats(&stats);
                    }
                    st.good = Some((stats, now));
                    st.failed = None;
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e, ttl_s = self.ttl.as_secs_f64(),
                        "work.stats failed; not asking upstream again before the TTL ends"
                    );
                    st.failed = Some(e.status());
                }
            }
        }
        match (&st.failed, &st.good) {
            (None, Some((stats, _))) => QueueAnswer::Fresh(stats.clone()),
            (Some(_), Some((stats, at))) if at.elapsed() <= self.max_stale => {
                QueueAnswer::Stale(stats.clone(), at.elapsed())
            }
            (Some(status), _) => QueueAnswer::Unavailable(*status),
            (None, None) => QueueAnswer::Unavailable(None),
        }
    }
}

/// Router state: the shared parts plus the `/queue` cache.
#[derive(Clone)]
struct Ops {
    state: OpsState,
    queue: Arc<QueueCache>,
    unavailable: Arc<Vec<Unavailable>>,
    /// Lines appended to every `/readyz` answer (the session shape's enforcement).
    detail: Arc<Vec<String>>,
}

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

/// The ops router (with a fresh [`QueueCache`] over `state.env`).
pub fn router(state: OpsState) -> Router {
    let queue = Arc::new(QueueCache::new(state.env.clone()).with_metrics(state.metrics.clone()));
    router_with_cache(state, queue)
}

/// The ops router serving `/queue` from `queue`.
pub fn router_with_cache(state: OpsState, cache: Arc<QueueCache>) -> Router {
    router_with(state, cache, Vec::new())
}

/// The ops router serving `/queue` from `queue`, whose `/readyz` answers 503 while
/// `unavailable` names anything (what a session needs and this host lacks).
pub fn router_with(
    state: OpsState,
    cache: Arc<QueueCache>,
    unavailable: Vec<Unavailable>,
) -> Router {
    router_with_detail(state, cache, unavailable, Vec::new())
}

/// [`router_with`], with `detail` lines appended to every `/readyz` answer (the session
/// shape: which limits are active and how).
pub fn router_with_detail(
    state: OpsState,
    cache: Arc<QueueCache>,
    unavailable: Vec<Unavailable>,
    detail: Vec<String>,
) -> Router {
    let state = Ops {
        state,
        queue: cache,
        unavailable: Arc::new(unavailable),
        detail: Arc::new(detail),
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/queue", get(queue))
        .with_state(state)
}

/// The `/readyz` body for a host that lacks something a session needs: one paragraph per
/// problem, each with what is missing, why, and the fix.
fn unavailable_text(problems: &[Unavailable]) -> String {
    let mut body = String::from("not ready: this host cannot serve sessions\n");
    for p in problems {
        body.push_str(&format!(
            "{}: unavailable: {}\nfix: {}\n",
            p.what, p.reason, p.fix
        ));
    }
    body.push_str("run `wasm-sandbox doctor` on the host for a full check\n");
    body
}

async fn readyz(
    State(Ops {
        state: s,
        unavailable,
        detail,
        ..
    }): State<Ops>,
) -> Response {
    let with_detail = |body: String| {
        let mut body = body;
        for line in detail.iter() {
            body.push_str(line);
            body.push('\n');
        }
        body
    };
    // Checked first: it does not go away by itself, and it is what an operator must fix.
    if !unavailable.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            with_detail(unavailable_text(&unavailable)),
        )
            .into_response();
    }
    if let Some(why) = s.status.blocked() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            with_detail(format!("not ready: {why}\n")),
        )
            .into_response();
    }
    if s.status.ready() {
        (StatusCode::OK, with_detail("ready\n".into())).into_response()
    } else if s.status.draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            with_detail("draining\n".into()),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            with_detail("not ready: no successful poll\n".into()),
        )
            .into_response()
    }
}

async fn metrics(State(Ops { state: s, .. }): State<Ops>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

fn stats_json(stats: &QueueStats) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(map) = serde_json::json!({
        "depth": stats.depth,
        "pending": stats.pending,
        "oldest_queued_at": stats.oldest_queued_at,
        "workers_polling": stats.workers_polling,
    }) else {
        unreachable!("a JSON object literal")
    };
    map
}

async fn queue(State(s): State<Ops>) -> Response {
    match s.queue.get().await {
        QueueAnswer::Fresh(stats) => axum::Json(stats_json(&stats)).into_response(),
        QueueAnswer::Stale(stats, age) => {
            let mut body = stats_json(&stats);
            body.insert("stale".into(), true.into());
            body.insert("age_seconds".into(), age.as_secs().into());
            axum::Json(body).into_response()
        }
        QueueAnswer::Unavailable(status) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": "work.stats unavailable", "status": status})),
        )
            .into_response(),
    }
}

/// Binds `addr` and serves the ops endpoints until `shutdown` fires. Returns the bound address
/// (useful with port 0) and the server task.
pub async fn spawn(
    addr: SocketAddr,
    state: OpsState,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    spawn_with(addr, state, Vec::new(), shutdown).await
}

/// [`spawn`], with `/readyz` answering 503 while `unavailable` names anything. Also keeps the
/// queue gauges current: asks the `/queue` cache every [`QUEUE_REFRESH`] (first at once).
pub async fn spawn_with(
    addr: SocketAddr,
    state: OpsState,
    unavailable: Vec<Unavailable>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    spawn_with_detail(addr, state, unavailable, Vec::new(), shutdown).await
}

/// [`spawn_with`], with `detail` lines appended to every `/readyz` answer.
pub async fn spawn_with_detail(
    addr: SocketAddr,
    state: OpsState,
    unavailable: Vec<Unavailable>,
    detail: Vec<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let queue = Arc::new(QueueCache::new(state.env.clone()).with_metrics(state.metrics.clone()));
    let refresh = Arc::clone(&queue);
    let refresh_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(QUEUE_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = refresh_stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = refresh_stop.cancelled() => return,
                _ = refresh.get() => {}
            }
        }
    });
    let app = router_with_detail(state, queue, unavailable, detail);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Api, ClientConfig};
    use crate::secret::Secret;
    use serde_json::Value;
    use wasm_sandbox_fake_control_plane::{Endpoint, FakeConfig, FakeControlPlane, Handle};

    async fn serve(fake: &Handle, ttl: Duration) -> (SocketAddr, CancellationToken) {
        let api = Api::new(fake.url(), ClientConfig::default()).unwrap();
        let env = api.environment(&fake.environment_id(), Secret::new(fake.environment_key()));
        let state = OpsState {
            metrics: Arc::new(Metrics::new()),
            status: Arc::new(WorkerStatus::default()),
            env: env.clone(),
        };
        let queue = Arc::new(QueueCache::with_ttl(env, ttl, QUEUE_MAX_STALE));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let app = router_with_cache(state, queue);
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
        });
        (addr, stop)
    }

    /// `n` concurrent GETs of `/queue`: (status, body) of each.
    async fn get_queue(addr: SocketAddr, n: usize) -> Vec<(u16, Value)> {
        let http = reqwest::Client::new();
        futures::future::join_all((0..n).map(|_| {
            let http = http.clone();
            async move {
                let r = http
                    .get(format!("http://{addr}/queue"))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        }))
        .await
    }

    fn upstream_calls(fake: &Handle) -> usize {
        fake.requests_to(Endpoint::Stats).len()
    }

    /// Issue 17: `wasm_sandbox_queue_depth` was never exported. The ops server now sets it from
    /// `work.stats` on its own (no `/queue` GET needed), through the same cache: one upstream
    /// call however many scrapes and GETs follow within the TTL. And `/readyz` answers 503,
    /// naming what is missing and the fix, while the provider reports something unavailable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_gauge_is_refreshed_and_readyz_names_what_is_missing() {
        let fake = FakeControlPlane::start(FakeConfig::default())
            .await
            .unwrap();
        fake.enqueue_session(
            wasm_sandbox_fake_control_plane::Scenario::from_json(
                r#"{"name": "q", "steps": ["terminate"]}"#,
            )
            .unwrap(),
        );
        let api = Api::new(fake.url(), ClientConfig::default()).unwrap();
        let env = api.environment(&fake.environment_id(), Secret::new(fake.environment_key()));
        let metrics = Arc::new(Metrics::new());
        let state = OpsState {
            metrics: metrics.clone(),
            status: Arc::new(WorkerStatus::default()),
            env,
        };
        let missing = Unavailable {
            what: "bash sandbox".into(),
            reason: "the configured bwrap_path /nope does not exist".into(),
            fix: "install bubblewrap".into(),
        };
        let stop = CancellationToken::new();
        let (addr, _task) = spawn_with(
            "127.0.0.1:0".parse().unwrap(),
            state,
            vec![missing],
            stop.clone(),
        )
        .await
        .unwrap();
        let gauge = || {
            metrics.encode().lines().find_map(|l| {
                l.strip_prefix("wasm_sandbox_queue_depth ")
                    .map(str::to_owned)
            })
        };
        for _ in 0..200 {
            if upstream_calls(&fake) == 1 && gauge().as_deref() == Some("1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(gauge().as_deref(), Some("1"), "{}", metrics.encode());
        let http = reqwest::Client::new();
        for _ in 0..5 {
            http.get(format!("http://{addr}/metrics"))
                .send()
                .await
                .unwrap();
            assert_eq!(get_queue(addr, 1).await[0].0, 200);
        }
        assert_eq!(upstream_calls(&fake), 1, "the refresh shares the cache");
        let r = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 503);
        let body = r.text().await.unwrap();
        assert!(
            body.contains(
                "bash sandbox: unavailable: the configured bwrap_path /nope does not exist"
            ) && body.contains("fix: install bubblewrap"),
            "{body}"
        );
        stop.cancel();
    }

    /// Issue 15 review: while the usage ledger cannot write, `/readyz` answers 503 with the
    /// reason (the worker claims nothing meanwhile), and stops saying so once it can.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readyz_names_a_blocked_usage_ledger() {
        let fake = FakeControlPlane::start(FakeConfig::default())
            .await
            .unwrap();
        let api = Api::new(fake.url(), ClientConfig::default()).unwrap();
        let env = api.environment(&fake.environment_id(), Secret::new(fake.environment_key()));
        let status = Arc::new(WorkerStatus::default());
        let state = OpsState {
            metrics: Arc::new(Metrics::new()),
            status: status.clone(),
            env,
        };
        let stop = CancellationToken::new();
        let (addr, _task) = spawn_with("127.0.0.1:0".parse().unwrap(), state, vec![], stop.clone())
            .await
            .unwrap();
        let readyz = || async {
            let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        status.set_blocked(Some(
            "usage ledger /w/usage cannot write (No space left)".into(),
        ));
        let (code, body) = readyz().await;
        assert_eq!(code, 503);
        assert!(
            body.contains("not ready: usage ledger /w/usage cannot write (No space left)"),
            "{body}"
        );
        status.set_blocked(None);
        let (_, body) = readyz().await;
        assert!(!body.contains("usage ledger"), "{body}");
        stop.cancel();
    }

    /// Issue 15: the session shape's enforcement is in every `/readyz` answer and in the
    /// `wasm_sandbox_shape_limit_active{limit,mechanism}` gauge (1 only for a limit that
    /// holds for the whole session).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readyz_and_metrics_report_the_session_shape() {
        use wasm_sandbox_native::{Enforce, LimitMechanism, LimitStatus, ShapeReport};
        let fake = FakeControlPlane::start(FakeConfig::default())
            .await
            .unwrap();
        let api = Api::new(fake.url(), ClientConfig::default()).unwrap();
        let env = api.environment(&fake.environment_id(), Secret::new(fake.environment_key()));
        let metrics = Arc::new(Metrics::new());
        let limit = |limit, value: Option<&str>, mechanism| LimitStatus {
            limit,
            value: value.map(str::to_owned),
            mechanism,
        };
        let shape = ShapeReport {
            enforce: Enforce::BestEffort,
            limits: vec![
                limit("cpu", Some("4 vCPU"), LimitMechanism::CgroupV1),
                limit("memory", Some("4GiB"), LimitMechanism::Rlimit),
                limit("pids", Some("512"), LimitMechanism::CgroupV2),
                limit("disk", None, LimitMechanism::None),
            ],
            cpu_accounting: true,
            cgroup_v2_problem: None,
            cgroup_problems: Vec::new(),
            disk_problem: None,
        };
        metrics.shape_limits(&shape);
        let text = metrics.encode();
        for line in [
            "wasm_sandbox_shape_limit_active{limit=\"cpu\",mechanism=\"cgroup-v1\"} 1",
            "wasm_sandbox_shape_limit_active{limit=\"memory\",mechanism=\"rlimit\"} 0",
            "wasm_sandbox_shape_limit_active{limit=\"pids\",mechanism=\"cgroup-v2\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(
            !text.contains("limit=\"disk\""),
            "unset limits are not exported"
        );
        let state = OpsState {
            metrics,
            status: Arc::new(WorkerStatus::default()),
            env,
        };
        let stop = CancellationToken::new();
        let detail = vec![format!("shape ({}): {}", shape.enforce, shape.summary())];
        let (addr, _task) = spawn_with_detail(
            "127.0.0.1:0".parse().unwrap(),
            state,
            Vec::new(),
            detail,
            stop.clone(),
        )
        .await
        .unwrap();
        let body = reqwest::get(format!("http://{addr}/readyz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            body.contains(
                "shape (best-effort): cpu=cgroup-v1 (4 vCPU) memory=rlimit (4GiB) pids=cgroup-v2 (512) disk=unset"
            ),
            "{body}"
        );
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_and_repeated_gets_make_one_upstream_call_per_ttl() {
        let fake = FakeControlPlane::start(FakeConfig::default())
            .await
            .unwrap();
        // A slow upstream, so that the concurrent GETs overlap the one call in progress.
        fake.delay_next(Endpoint::Stats, 1, Duration::from_millis(300));
        let (addr, stop) = serve(&fake, Duration::from_secs(60)).await;
        let answers = get_queue(addr, 32).await;
        for _ in 0..10 {
            let again = get_queue(addr, 1).await;
            assert_eq!(again, answers[..1]);
        }
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{body}");
            assert!(
                body.get("depth").is_some() && body.get("stale").is_none(),
                "{body}"
            );
        }
        assert_eq!(upstream_calls(&fake), 1, "one upstream call for 42 GETs");
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upstream_429_is_not_retried_or_repeated_within_the_ttl() {
        let fake = FakeControlPlane::start(FakeConfig::default())
            .await
            .unwrap();
        let ttl = Duration::from_millis(400);
        let (addr, stop) = serve(&fake, ttl).await;
        assert_eq!(get_queue(addr, 1).await[0].0, 200);
        assert_eq!(upstream_calls(&fake), 1);

        fake.fail_next(Endpoint::Stats, 10_000, 429);
        tokio::time::sleep(ttl).await;
        let answers = get_queue(addr, 32).await;
        for (status, body) in &answers {
            // The last good value, marked stale.
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["stale"], true, "{body}");
            assert!(body.get("depth").is_some(), "{body}");
        }
        for _ in 0..20 {
            assert_eq!(get_queue(addr, 1).await[0].1["stale"], true);
        }
        // Exactly one more upstream call: no retries, and the failure is cached for the TTL.
        assert_eq!(upstream_calls(&fake), 2);
        tokio::time::sleep(ttl).await;
        get_queue(addr, 8).await;
        assert_eq!(upstream_calls(&fake), 3);
        stop.cancel();

        // No good value yet: 503, still one upstream call for many GETs.
        let (addr, stop) = serve(&fake, Duration::from_secs(60)).await;
        for (status, body) in get_queue(addr, 16).await {
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["status"], 429, "{body}");
        }
        assert_eq!(upstream_calls(&fake), 4);
        stop.cancel();
    }
}
