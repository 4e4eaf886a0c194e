//! The worker loop: poll → ack → per-item lifecycle, up to `concurrency` sessions at once
//! (protocol §3.2–§4.3, §13.1).
//!
//! Per claimed session item: the heartbeat starts first (first beat at once), then the session
//! is fetched (a terminated session is skipped), a fresh sandbox is created in its own directory
//! `<workdir>/sessions/<work_id>`, the [`runner`](crate::runner) serves the session, and the
//! teardown closes the sandbox (kills its processes) and removes the directory. The item is then
//! force-stopped unless the lease was lost (412 or no good beat for a TTL), in which case it
//! belongs to the queue or another worker and this worker sends nothing more for it. A lease
//! that ends for any reason (lost, `stopping`/`stopped`, `lease_extended: false`, rejected)
//! cancels the session run at once. Non-session items (`healthcheck`, unknown or missing kinds)
//! are acked and force-stopped without a heartbeat, as the Python SDK does.
//!
//! Shutdown: [`Shutdown::drain`] stops polling, lets each running tool call finish and post its
//! result, starts no new call, tears down and stops each item (force — the confirmation the
//! protocol expects; nothing is abandoned); [`Shutdown::force`] additionally aborts running tool
//! calls (posting nothing for them) and bounds each final stop call by a short timeout.
//!
//! Security: the session directory name comes from the server-issued work id, which is checked
//! to be a plain path component (`[A-Za-z0-9_.-]`, not `.`/`..`) before use, so a hostile id
//! cannot escape `<workdir>/sessions`. Directories are created `0700`. Removal uses
//! `std::fs::remove_dir_all`, which never follows symbolic links (a link inside the tree, or the
//! session root itself being a link, is unlinked, not traversed), so a sandbox that planted a
//! link to a host path cannot make teardown delete outside its root.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::client::{Api, ClientTimeouts, EnvironmentClient, ItemClient};
use crate::lease::{HeartbeatConfig, Lease, LeaseEnd, heartbeat_loop};
use crate::metrics::Metrics;
use crate::proto::{POLL_BLOCK_MS_MAX, Work, WorkSecret};
use crate::runner::{AbortOnDrop, RunEnd, RunnerConfig, RunnerContext, ToolReport, run_session};
use crate::sandbox::{SandboxProvider, SandboxSession, SandboxSpec};
use crate::secret::Secret;

/// Poll-loop timing.
#[derive(Clone, Debug)]
pub struct PollConfig {
    /// Lower bound of the sleep after an empty poll (SDK: 1 s).
    pub empty_sleep_min: Duration,
    /// Upper bound of the sleep after an empty poll (SDK: 3 s).
    pub empty_sleep_max: Duration,
    /// Backoff unit: delay = `min(cap, unit·2^n) + U(0, unit)` (SDK: 1 s).
    pub backoff_unit: Duration,
    /// Backoff cap (SDK: 60 s).
    pub backoff_cap: Duration,
}

impl Default for PollConfig {
    fn default() -> PollConfig {
        PollConfig {
            empty_sleep_min: Duration::from_secs(1),
            empty_sleep_max: Duration::from_secs(3),
            backoff_unit: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
        }
    }
}

impl PollConfig {
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .backoff_unit
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.backoff_cap);
        base + self.backoff_unit.mul_f64(rand::thread_rng().r#gen::<f64>())
    }

    fn empty_sleep(&self) -> Duration {
        let (lo, hi) = (
            self.empty_sleep_min,
            self.empty_sleep_max.max(self.empty_sleep_min),
        );
        lo + (hi - lo).mul_f64(rand::thread_rng().r#gen::<f64>())
    }
}

/// Everything the worker loop is configured with.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// API base URL.
    pub base_url: String,
    /// `env_…`.
    pub environment_id: String,
    /// The environment key: polling, acks, and per-item calls when no sessions token came.
    pub environment_key: Secret,
    /// Sent as `Anthropic-Worker-ID` on polls.
    pub worker_id: String,
    /// Parent of the per-session directories (`<workdir>/sessions/<work_id>`).
    pub workdir: PathBuf,
    /// Sessions served at once.
    pub concurrency: usize,
    /// Long-poll hold (1–999 ms; `None` = non-blocking).
    pub block_ms: Option<u32>,
    /// Forwarded to the poll.
    pub reclaim_older_than_ms: Option<u64>,
    /// Session runner timing (incl. `max_idle`).
    pub runner: RunnerConfig,
    /// Heartbeat timing.
    pub heartbeat: HeartbeatConfig,
    /// Poll timing.
    pub poll: PollConfig,
    /// HTTP timeouts.
    pub client: ClientTimeouts,
    /// Bound of the final stop call after a forced shutdown.
    pub forced_stop_timeout: Duration,
    /// Return (after draining) once this many items have been handled; `None` = run forever.
    pub exit_after_items: Option<usize>,
}

impl WorkerConfig {
    /// A configuration with the reference defaults.
    pub fn new(
        base_url: impl Into<String>,
        environment_id: impl Into<String>,
        environment_key: Secret,
    ) -> WorkerConfig {
        WorkerConfig {
            base_url: base_url.into(),
            environment_id: environment_id.into(),
            environment_key,
            worker_id: default_worker_id(),
            workdir: PathBuf::from("."),
            concurrency: 1,
            block_ms: Some(POLL_BLOCK_MS_MAX),
            reclaim_older_than_ms: None,
            runner: RunnerConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            poll: PollConfig::default(),
            client: ClientTimeouts::default(),
            forced_stop_timeout: Duration::from_secs(5),
            exit_after_items: None,
        }
    }
}

/// `<hostname>-<12 hex>`, unique per process (SDK format).
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "worker".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..12])
}

/// Shutdown signals: `drain` (graceful), then `force`.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Stop taking work; finish running calls.
    pub drain: CancellationToken,
    /// Abort running calls too.
    pub force: CancellationToken,
}

impl Shutdown {
    /// Fresh, untriggered signals.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Begins a graceful drain.
    pub fn drain(&self) {
        self.drain.cancel();
    }

    /// Forces shutdown (implies drain).
    pub fn force(&self) {
        self.drain.cancel();
        self.force.cancel();
    }
}

/// Live worker state for `/readyz`.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    polled_ok: AtomicBool,
    draining: AtomicBool,
    last_poll_ok_unix_ms: AtomicU64,
}

impl WorkerStatus {
    /// Ready = the last poll succeeded and the worker is not draining.
    pub fn ready(&self) -> bool {
        self.polled_ok.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }

    /// Whether a drain has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Unix ms of the last successful poll (0 = never).
    pub fn last_poll_ok_unix_ms(&self) -> u64 {
        self.last_poll_ok_unix_ms.load(Ordering::Relaxed)
    }

    fn poll_result(&self, ok: bool) {
        self.polled_ok.store(ok, Ordering::Relaxed);
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            self.last_poll_ok_unix_ms.store(now, Ordering::Relaxed);
        }
    }
}

/// What the worker did, for observers (the `--local` demo, tests).
#[derive(Clone, Debug)]
pub enum WorkerEvent {
    /// An item was claimed and acked.
    Claimed {
        /// Work id.
        work_id: String,
        /// Session id, for session items.
        session_id: Option<String>,
    },
    /// The session's sandbox is ready.
    SessionReady {
        /// Work id.
        work_id: String,
        /// Session id.
        session_id: String,
        /// Claim → sandbox ready.
        cold_start: Duration,
    },
    /// A tool call was handled.
    Tool {
        /// Work id.
        work_id: String,
        /// Session id.
        session_id: String,
        /// What happened.
        report: ToolReport,
    },
    /// The item is done.
    ItemDone {
        /// Work id.
        work_id: String,
        /// Session id, for session items.
        session_id: Option<String>,
        /// Why the session ended (`None` if it never ran).
        run_end: Option<RunEnd>,
        /// Why the lease ended.
        lease_end: Option<LeaseEnd>,
        /// Whether a stop was sent.
        stop_sent: bool,
    },
}

/// Receives [`WorkerEvent`]s.
pub type Observer = Arc<dyn Fn(WorkerEvent) + Send + Sync>;

struct Shared<P> {
    config: WorkerConfig,
    provider: P,
    api: Api,
    env: EnvironmentClient,
    metrics: Arc<Metrics>,
    status: Arc<WorkerStatus>,
    observer: Option<Observer>,
}

impl<P> Shared<P> {
    fn emit(&self, ev: WorkerEvent) {
        if let Some(o) = &self.observer {
            o(ev);
        }
    }
}

/// The worker: owns the poll loop and the sessions it serves.
pub struct Worker<P> {
    shared: Arc<Shared<P>>,
}

/// Checks that a server-issued id is usable as one path component.
fn safe_component(id: &str) -> Option<&str> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then_some(id)
}

/// Creates `<workdir>/sessions/<work_id>` afresh (0700), removing any leftover first.
fn prepare_session_dir(workdir: &Path, work_id: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let name = safe_component(work_id)
        .ok_or_else(|| anyhow::anyhow!("work id is not a safe directory name"))?;
    let parent = workdir.join("sessions");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)?;
    let root = parent.join(name);
    remove_session_dir(&root)?;
    std::fs::DirBuilder::new().mode(0o700).create(&root)?;
    Ok(root)
}

/// Removes a session directory without following symbolic links.
fn remove_session_dir(root: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(root),
        // A link or a file where the directory should be: unlink it, never traverse it.
        Ok(_) => std::fs::remove_file(root),
    }
}

impl<P: SandboxProvider> Worker<P> {
    /// Builds a worker.
    pub fn new(
        config: WorkerConfig,
        provider: P,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Worker<P>> {
        anyhow::ensure!(!config.environment_id.is_empty(), "environment id is empty");
        anyhow::ensure!(
            !config.environment_key.is_empty(),
            "environment key is empty"
        );
        anyhow::ensure!(config.concurrency >= 1, "concurrency must be at least 1");
        let api = Api::new(&config.base_url, config.client.clone())?;
        let env = api.environment(&config.environment_id, config.environment_key.clone());
        Ok(Worker {
            shared: Arc::new(Shared {
                config,
                provider,
                api,
                env,
                metrics,
                status: Arc::new(WorkerStatus::default()),
                observer: None,
            }),
        })
    }

    /// Adds an observer (call before [`Worker::run`]).
    pub fn with_observer(mut self, observer: Observer) -> Worker<P> {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.observer = Some(observer);
        }
        self
    }

    /// Live status for `/readyz`.
    pub fn status(&self) -> Arc<WorkerStatus> {
        Arc::clone(&self.shared.status)
    }

    /// An environment-key client (for `/queue`).
    pub fn environment_client(&self) -> EnvironmentClient {
        self.shared.env.clone()
    }

    /// Polls and serves until `shutdown` drains it (or `exit_after_items` is reached); returns
    /// an error if polling failed permanently (fatal 4xx), after draining the running sessions.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let shared = self.shared;
        let cfg = &shared.config;
        let sem = Arc::new(Semaphore::new(cfg.concurrency));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut poll_attempt = 0u32;
        let mut ack_attempt = 0u32;
        let mut fatal: Option<anyhow::Error> = None;
        let mut idle_since: Option<Instant> = None;
        let mut handled = 0usize;
        tracing::info!(
            environment_id = %cfg.environment_id, worker_id = %cfg.worker_id,
            concurrency = cfg.concurrency, "worker starting"
        );
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "session task failed");
                }
            }
            if cfg.exit_after_items.is_some_and(|n| handled >= n) {
                break;
            }
            let permit = tokio::select! {
                biased;
                () = shutdown.drain.cancelled() => break,
                p = Arc::clone(&sem).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let polled = tokio::select! {
                biased;
                () = shutdown.drain.cancelled() => break,
                r = shared.env.poll(&cfg.worker_id, cfg.block_ms, cfg.reclaim_older_than_ms) => r,
            };
            let work = match polled {
                Err(e) if e.is_fatal() => {
                    shared.metrics.poll("error");
                    shared.status.poll_result(false);
                    tracing::error!(error = %e, "poll failed permanently");
                    fatal = Some(anyhow::Error::new(e).context("polling the work queue failed"));
                    break;
                }
                Err(e) => {
                    shared.metrics.poll("error");
                    shared.status.poll_result(false);
                    poll_attempt += 1;
                    let wait = cfg.poll.backoff(poll_attempt);
                    tracing::warn!(attempt = poll_attempt, backoff_ms = wait.as_millis() as u64, error = %e, "poll failed");
                    drop(permit);
                    if sleep_or(&shutdown.drain, wait).await {
                        break;
                    }
                    continue;
                }
                Ok(None) => {
                    shared.metrics.poll("empty");
                    shared.status.poll_result(true);
                    poll_attempt = 0;
                    match idle_since {
                        None => {
                            idle_since = Some(Instant::now());
                            tracing::info!("idle; polling for work");
                        }
                        Some(t) => {
                            tracing::debug!(idle_s = t.elapsed().as_secs(), "poll returned no work")
                        }
                    }
                    drop(permit);
                    if sleep_or(&shutdown.drain, cfg.poll.empty_sleep()).await {
                        break;
                    }
                    continue;
                }
                Ok(Some(work)) => work,
            };
            shared.metrics.poll("work");
            shared.status.poll_result(true);
            poll_attempt = 0;
            idle_since = None;
            let claimed_at = Instant::now();
            let session_id = work.data.session_id().map(str::to_owned);
            tracing::info!(work_id = %work.id, session_id = session_id.as_deref().unwrap_or(""),
                kind = work.data.kind.as_deref().unwrap_or(""), "claimed work");
            match shared.env.ack(&work.id).await {
                Ok(()) => ack_attempt = 0,
                Err(e) if e.is_fatal() => {
                    tracing::error!(work_id = %work.id, error = %e, "ack failed permanently; force-stopping");
                    if let Err(e) = shared.env.stop(&work.id, true).await {
                        tracing::error!(work_id = %work.id, error = %e, "force-stop of unacked work failed");
                    }
                    continue;
                }
                Err(e) => {
                    ack_attempt += 1;
                    let wait = cfg.poll.backoff(ack_attempt);
                    tracing::warn!(work_id = %work.id, attempt = ack_attempt, error = %e, "ack failed; backing off");
                    drop(permit);
                    if sleep_or(&shutdown.drain, wait).await {
                        break;
                    }
                    continue;
                }
            }
            shared.metrics.claim(if session_id.is_some() {
                "session"
            } else {
                "other"
            });
            shared.emit(WorkerEvent::Claimed {
                work_id: work.id.clone(),
                session_id: session_id.clone(),
            });
            handled += 1;
            let span = tracing::info_span!(
                "work",
                work_id = %work.id,
                session_id = session_id.as_deref().unwrap_or(""),
            );
            let shared2 = Arc::clone(&shared);
            let shutdown2 = shutdown.clone();
            tasks.spawn(
                async move {
                    handle_item(&shared2, work, claimed_at, &shutdown2).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        shared.status.draining.store(true, Ordering::Relaxed);
        if !tasks.is_empty() {
            tracing::info!(
                sessions = tasks.len(),
                draining = shutdown.drain.is_cancelled(),
                "no longer polling; waiting for running sessions"
            );
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "session task failed");
            }
        }
        tracing::info!("worker stopped");
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Sleeps for `d`; returns true if `token` fired first.
async fn sleep_or(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        biased;
        () = token.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// Decrements `sessions_active` on drop.
struct ActiveGuard<'a>(&'a Metrics);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.sessions_active.dec();
    }
}

async fn handle_item<P: SandboxProvider>(
    shared: &Arc<Shared<P>>,
    work: Work,
    claimed_at: Instant,
    shutdown: &Shutdown,
) {
    let cfg = &shared.config;
    // The per-item credential: the sessions token from the secret, else the environment key.
    let token = work
        .secret
        .as_ref()
        .and_then(|s| WorkSecret::decode(s).sessions_token);
    if work.secret.as_ref().is_some_and(|s| !s.is_empty()) && token.is_none() {
        tracing::warn!(
            "work item carried a secret but no sessions token could be extracted; using the environment key"
        );
    }
    let credential = token.unwrap_or_else(|| cfg.environment_key.clone());
    let session_id = work.data.session_id().map(str::to_owned);
    let item = shared.api.item(
        &cfg.environment_id,
        &work.id,
        session_id.as_deref().unwrap_or(""),
        credential,
    );
    let Some(session_id) = session_id else {
        tracing::info!(
            kind = work.data.kind.as_deref().unwrap_or(""),
            "skipping a non-session work item; force-stopping it"
        );
        let stop_sent =
            stop_item(&item, cfg.forced_stop_timeout.max(Duration::from_secs(10))).await;
        shared.emit(WorkerEvent::ItemDone {
            work_id: work.id.clone(),
            session_id: None,
            run_end: None,
            lease_end: None,
            stop_sent,
        });
        return;
    };

    shared.metrics.sessions_active.inc();
    let _active = ActiveGuard(&shared.metrics);
    let lease = Arc::new(Lease::new());
    // Cancelled by a forced shutdown, or when the lease ends for a reason other than the run
    // finishing.
    let cancel = shutdown.force.child_token();
    let mut heartbeat = {
        let item = item.clone();
        let lease = Arc::clone(&lease);
        let cancel = cancel.clone();
        let hb_cfg = cfg.heartbeat.clone();
        let metrics = Arc::clone(&shared.metrics);
        AbortOnDrop(tokio::spawn(
            async move {
                heartbeat_loop(&item, &lease, &hb_cfg, &metrics).await;
                if lease.end_reason() != Some(LeaseEnd::RunnerDone) {
                    cancel.cancel();
                }
            }
            .in_current_span(),
        ))
    };

    let run_end = serve_session(
        shared,
        &work,
        &session_id,
        &item,
        &lease,
        &cancel,
        shutdown,
        claimed_at,
    )
    .await;

    lease.finish(LeaseEnd::RunnerDone);
    if let Err(e) = (&mut heartbeat.0).await {
        tracing::error!(error = %e, "heartbeat task failed");
    }
    let lease_end = lease.end_reason();
    let stop_sent = if lease.lost() {
        tracing::info!(
            lease_end = lease_end.map(LeaseEnd::as_str),
            "lease lost; released the item without stopping it"
        );
        false
    } else {
        let bound = if shutdown.force.is_cancelled() {
            cfg.forced_stop_timeout
        } else {
            Duration::from_secs(30)
        };
        stop_item(&item, bound).await
    };
    tracing::info!(
        run_end = run_end.map(RunEnd::as_str),
        lease_end = lease_end.map(LeaseEnd::as_str),
        stop_sent,
        "work item done"
    );
    shared.emit(WorkerEvent::ItemDone {
        work_id: work.id.clone(),
        session_id: Some(session_id),
        run_end,
        lease_end,
        stop_sent,
    });
}

/// Force-stops an item; 409 is swallowed. Returns whether the call went out and was answered.
async fn stop_item(item: &ItemClient, bound: Duration) -> bool {
    match tokio::time::timeout(bound, item.stop(true)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "force-stop on exit failed");
            false
        }
        Err(_) => {
            tracing::error!(
                bound_s = bound.as_secs_f64(),
                "force-stop on exit timed out"
            );
            false
        }
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the arguments are the item's context"
)]
async fn serve_session<P: SandboxProvider>(
    shared: &Arc<Shared<P>>,
    work: &Work,
    session_id: &str,
    item: &ItemClient,
    lease: &Arc<Lease>,
    cancel: &CancellationToken,
    shutdown: &Shutdown,
    claimed_at: Instant,
) -> Option<RunEnd> {
    let cfg = &shared.config;
    let session = tokio::select! {
        biased;
        () = cancel.cancelled() => return Some(RunEnd::Cancelled),
        r = item.session() => r,
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "session fetch failed");
            return None;
        }
    };
    if session.is_terminated() {
        tracing::info!("skipping the work item of a terminated session");
        return None;
    }
    // Attach the event stream and read the history while the sandbox is set up below, so
    // the first tool call can run as soon as the sandbox is ready (aborted if we bail out).
    let prefetched = crate::runner::prefetch_stream(item.clone());

    let workdir = cfg.workdir.clone();
    let work_id = work.id.clone();
    let root =
        match tokio::task::spawn_blocking(move || prepare_session_dir(&workdir, &work_id)).await {
            Ok(Ok(root)) => root,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not prepare the session directory");
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "session directory task failed");
                return None;
            }
        };
    let has_token = work
        .secret
        .as_ref()
        .is_some_and(|s| WorkSecret::decode(s).sessions_token.is_some());
    let prepared = tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        r = crate::memory::prepare(item, &session, &root, has_token) => Some(r),
    };
    let (memory, memory_mounts) = match prepared {
        Some(Ok(Some((m, mounts)))) => (Some(m), mounts),
        Some(Ok(None)) => (None, Vec::new()),
        Some(Err(e)) => {
            tracing::error!(error = %e, "memory store setup failed; failing the item");
            remove_dir_logged(root).await;
            return None;
        }
        None => {
            remove_dir_logged(root).await;
            return Some(RunEnd::Cancelled);
        }
    };
    let spec = SandboxSpec {
        session_id: session_id.to_owned(),
        work_id: work.id.clone(),
        root: root.clone(),
        memory_stores: memory_mounts,
    };
    let created = tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        r = shared.provider.create(spec) => Some(r),
    };
    let sandbox = match created {
        Some(Ok(s)) => Arc::new(s),
        Some(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "sandbox creation failed");
            remove_dir_logged(root).await;
            return None;
        }
        None => {
            remove_dir_logged(root).await;
            return Some(RunEnd::Cancelled);
        }
    };
    // Skills land in the workspace before the runner starts (the guest has run nothing yet).
    let workspace = crate::skills::workspace_dir(&root);
    let installing = crate::skills::install_session_skills(item, &session, &workspace);
    let skills = tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        m = installing => Some(m),
    };
    let Some(skills) = skills else {
        if tokio::time::timeout(Duration::from_secs(30), sandbox.close())
            .await
            .is_err()
        {
            tracing::error!("sandbox close timed out");
        }
        drop(sandbox);
        remove_dir_logged(root).await;
        return Some(RunEnd::Cancelled);
    };
    sandbox.skills_installed(&workspace);
    let cold_start = claimed_at.elapsed();
    shared
        .metrics
        .session_cold_start
        .observe(cold_start.as_secs_f64());
    tracing::info!(
        cold_start_ms = cold_start.as_secs_f64() * 1000.0,
        "sandbox ready"
    );
    shared.emit(WorkerEvent::SessionReady {
        work_id: work.id.clone(),
        session_id: session_id.to_owned(),
        cold_start,
    });

    let reporter = shared.observer.as_ref().map(|o| {
        let o = Arc::clone(o);
        let work_id = work.id.clone();
        let session_id = session_id.to_owned();
        Arc::new(move |report: ToolReport| {
            o(WorkerEvent::Tool {
                work_id: work_id.clone(),
                session_id: session_id.clone(),
                report,
            });
        }) as crate::runner::Reporter
    });
    let memory_done = CancellationToken::new();
    let (reporter, syncer) = match memory {
        Some(m) => {
            let (tx, task) = crate::memory::spawn_syncer(m, memory_done.clone());
            (
                Some(crate::memory::chain_reporter(tx, reporter)),
                Some(task),
            )
        }
        None => (reporter, None),
    };
    let lease_for_window = Arc::clone(lease);
    let end = run_session(RunnerContext {
        client: item.clone(),
        sandbox: Arc::clone(&sandbox),
        config: cfg.runner.clone(),
        cancel: cancel.clone(),
        drain: shutdown.drain.clone(),
        send_window: Arc::new(move || lease_for_window.ttl()),
        metrics: Arc::clone(&shared.metrics),
        reporter,
        prefetched: Some(prefetched),
    })
    .await;
    tracing::info!(run_end = end.as_str(), "session run ended; tearing down");

    // Teardown runs whatever ended the run; the heartbeat keeps the lease meanwhile.
    if tokio::time::timeout(Duration::from_secs(30), sandbox.close())
        .await
        .is_err()
    {
        tracing::error!("sandbox close timed out");
    }
    drop(sandbox);
    if let Some(syncer) = syncer {
        memory_done.cancel();
        match syncer.await {
            Ok(stores) => stores.finish(Some(end)).await,
            Err(e) => tracing::error!(error = %e, "memory sync task failed"),
        }
    }
    if let Some(skills) = skills {
        crate::skills::teardown(skills).await;
    }
    remove_dir_logged(root).await;
    Some(end)
}

async fn remove_dir_logged(root: PathBuf) {
    match tokio::task::spawn_blocking(move || remove_session_dir(&root)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "could not remove the session directory"),
        Err(e) => tracing::error!(error = %e, "session directory removal task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_ids_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\0b",
            "a b",
            &"x".repeat(200),
        ] {
            assert!(safe_component(bad).is_none(), "{bad:?}");
        }
        assert_eq!(safe_component("work_01ABC-x.y"), Some("work_01ABC-x.y"));
    }

    #[test]
    fn session_dir_removal_does_not_follow_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep.txt"), "keep").unwrap();
        let root = prepare_session_dir(tmp.path(), "work_1").unwrap();
        assert!(root.ends_with("sessions/work_1"));
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("sub/link2")).unwrap();
        remove_session_dir(&root).unwrap();
        assert!(!root.exists());
        assert!(outside.join("keep.txt").exists());
        // The session root itself replaced by a link: the link goes, the target stays.
        std::os::unix::fs::symlink(&outside, &root).unwrap();
        remove_session_dir(&root).unwrap();
        assert!(std::fs::symlink_metadata(&root).is_err());
        assert!(outside.join("keep.txt").exists());
        // A leftover directory is replaced by a fresh empty one.
        let root = prepare_session_dir(tmp.path(), "work_1").unwrap();
        std::fs::write(root.join("old"), "x").unwrap();
        let root = prepare_session_dir(tmp.path(), "work_1").unwrap();
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        assert!(prepare_session_dir(tmp.path(), "../escape").is_err());
    }

    #[test]
    fn poll_backoff_is_bounded() {
        let p = PollConfig::default();
        for n in 1..30 {
            let d = p.backoff(n);
            assert!(d <= Duration::from_secs(61), "{n}: {d:?}");
            assert!(
                d >= Duration::from_secs(2).min(Duration::from_secs(1 << n.min(5))),
                "{n}: {d:?}"
            );
        }
        for _ in 0..50 {
            let s = p.empty_sleep();
            assert!(s >= Duration::from_secs(1) && s <= Duration::from_secs(3));
        }
    }
}
