//! The worker loop: poll → ack → per-item lifecycle, up to `concurrency` sessions at once
//! (protocol §3.2–§4.3, §13.1).
//!
//! Per claimed session item, in the order that keeps the critical path after the claim short
//! (issue 16; every sequential round trip is 100–300 ms where workers run):
//!
//! 1. **Beside the ack.** As soon as the poll hands over an item, its task starts, and the poll
//!    loop sends the ack. Everything that does not need the ack's answer starts at once, in
//!    parallel with it: the event stream is opened and the history read
//!    ([`runner::prefetch_stream`](crate::runner::prefetch_stream)), and the set-up chain
//!    session fetch → (terminated? stop here) → session directory → memory download → sandbox
//!    (pooled) → workspace restore (`[runtime.persistence]`) → skills runs. All of it uses the item's sessions token and is *reads* plus
//!    local work.
//! 2. **After the ack succeeded**: the first heartbeat goes out at once; the runner starts
//!    (with the prefetched stream and history), and only then can a tool run or a result be
//!    posted. A read that the control plane refused (fatal 4xx, e.g. 401/403 for a token that
//!    is not active yet) while the ack was unanswered is sent once more right after the ack
//!    ([`runner::read_after_ack`](crate::runner::read_after_ack)) instead of failing the item.
//! 3. **If the ack fails**, the item is not ours: the set-up is cancelled, the prefetched
//!    stream dropped, the sandbox closed and its directory removed; nothing is sent for the
//!    item beyond what a failed ack always got (a permanent failure: the loop's force-stop with
//!    the environment key; a transient one: nothing, the loop backs off).
//! 4. **Teardown beside the stop.** After the run, memory stores sync back first when there are
//!    any (that needs the lease and the closed sandbox), and with `[runtime.persistence]` the
//!    session's workspace is saved (sandbox closed, skills removed, while the heartbeat still
//!    holds the lease: [`crate::persist`]); then the stop and the local teardown
//!    (sandbox close, skills removal, directory removal) run side by side, and the concurrency
//!    slot is given back as soon as the local teardown is done, so the loop polls for the next
//!    item while the stop is in flight. The item is force-stopped unless the lease was lost
//!    (412 or no good beat for a TTL), in which case it belongs to the queue or another worker
//!    and this worker sends nothing more for it.
//!
//! Why this is safe: the protocol's rules are about what the worker *does* with an item it has
//! not been granted: it must not heartbeat, post, or run a tool for it. None of that happens
//! before the ack succeeded: the heartbeat is spawned, and the runner started, only after the
//! gate ([`AckGate`]) opened with success; before, only idempotent reads go out and the sandbox
//! (which has run nothing) is prepared locally. A failed ack leaves no trace: the reads had no
//! effect on the server and what was made locally is removed. The reference
//! (`anthropic` 2.10.0 `lib/environments`) is sequential: ack → heartbeat → session → skills →
//! stream → events list → result; here the critical path is ack ∥ (stream → events list) →
//! result (`docs/deviations.md`, Worker). The stream is still opened before the history is read
//! (nothing appended between the two reads can be missed). A terminated session is still
//! ended without a sandbox and without running anything (its stream may have been opened
//! beside the ack; it is dropped unread).
//!
//! A lease that ends for any reason (lost, `stopping`/`stopped`, `lease_extended: false`,
//! rejected) cancels the session run (and a set-up still running) at once. Non-session items
//! (`healthcheck`, unknown or missing kinds) are acked and force-stopped without a heartbeat,
//! as the Python SDK does.
//!
//! Shutdown: [`Shutdown::drain`] stops polling, lets each running tool call finish and post its
//! result, starts no new call, tears down and stops each item (force — the confirmation the
//! protocol expects; nothing is abandoned); [`Shutdown::force`] additionally aborts running tool
//! calls (posting nothing for them) and bounds each final stop call by a short timeout.
//!
//! Security: the session directory name comes from the server-issued work id, which is checked
//! to be a plain path component (`[A-Za-z0-9_.-]`, not `.`/`..`) before use, so a hostile id
//! cannot escape `<workdir>/sessions`. Directories are created `0700`.
//!
//! Session directories are keyed by claim, not by work id: `<work_id>.<claim>` where `<claim>`
//! is 16 random hex digits drawn when the item is claimed, and the directory is created with
//! `mkdir` (never reused). The same work id can be claimed again while an earlier run of it is
//! still tearing down (its lease was lost, the queue handed the item out again, to this worker);
//! keyed by work id, the new run's set-up removed the old run's tree under it and the old run's
//! teardown then deleted the new run's files. Keyed by claim, each run only ever removes what it
//! created.
//!
//! Removal is [`wasm_sandbox_fs::tree::remove_tree`]: iterative (a 25,000-deep chain made by
//! bash overflowed the stack of `std::fs::remove_dir_all` and aborted the worker), never
//! following symbolic links (a link inside the tree, or the session root itself being a link,
//! is unlinked, not traversed, so a sandbox that planted a link to a host path cannot make
//! teardown delete outside its root), never opening a FIFO, and making `chmod 000` directories
//! removable first, so a non-root worker does not leave the session's data behind.
//!
//! Start-up ([`claim_workdir`], called by `serve`): an exclusive `flock` on
//! `<workdir>/.wasm-sandbox.lock` (a second worker on the same workdir refuses to start instead
//! of sweeping a live worker's sessions), then a sweep of `<workdir>/sessions/*` (what a crashed
//! run left: its sandboxes died with it, bubblewrap runs `--die-with-parent`), then, when the
//! worker may mount, `<workdir>/sessions` is bind-mounted onto itself `nosuid,nodev`
//! ([`wasm_sandbox_fs::mount`]) so no setuid file a session wrote can elevate anyone on the host.
//! The sandbox pool lives in `<workdir>/sessions/.pool`, under the same mount (its directories
//! are renamed into sessions'). A clean exit empties `sessions/` and unmounts; a worker killed
//! outright leaves the mount, marked in the lock file, and the next worker on the workdir takes
//! it over (and removes it at its own exit) instead of stacking another.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::client::{Api, ClientConfig, EnvironmentClient, ItemClient};
use crate::lease::{HeartbeatConfig, Lease, LeaseEnd, heartbeat_loop};
use crate::metrics::Metrics;
use crate::proto::{POLL_BLOCK_MS_MAX, Work, WorkSecret};
use crate::runner::{
    AbortOnDrop, AckGate, RunEnd, RunnerConfig, RunnerContext, ToolReport, read_after_ack,
    run_session,
};
use crate::sandbox::{SandboxProvider, SandboxSession, SandboxSpec};
use crate::secret::Secret;
pub use crate::status::WorkerStatus;
pub use crate::workdir::{
    SESSIONS_DIR, SESSIONS_OWNER_MARKER, WORKDIR_LOCK, WorkdirGuard, claim_workdir,
};

mod item;
mod run;
use item::handle_item;
pub use run::run_worker;

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
    /// Parent of the per-session directories (`<workdir>/sessions/<work_id>.<claim>`).
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
    pub client: ClientConfig,
    /// Bound of the final stop call after a forced shutdown.
    pub forced_stop_timeout: Duration,
    /// Return (after draining) once this many items have been handled; `None` = run forever.
    pub exit_after_items: Option<usize>,
    /// `[runtime.shape] max_session`: the longest one work item of a session may run, from its
    /// claim. When it passes, the run is cancelled (a running call is abandoned, as in a forced
    /// shutdown), the workspace is saved as at any item end, and the item is stopped. `None` =
    /// no cap.
    pub max_session: Option<Duration>,
    /// `[usage]`: write a usage record per served item (ledger, sink; [`crate::usage`]).
    /// `None` (the default here; `serve` always sets it) = no records.
    pub usage: Option<crate::usage::UsageFileConfig>,
    /// `[runtime.persistence]`: the session's workspace is restored at set-up and saved before
    /// the stop ([`crate::persist`]). `None` = removed at teardown.
    pub persistence: Option<Arc<wasm_sandbox_persist::Persistence>>,
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
            client: ClientConfig::default(),
            forced_stop_timeout: Duration::from_secs(5),
            exit_after_items: None,
            max_session: None,
            usage: None,
            persistence: None,
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
    /// The usage ledger (and sink), when `config.usage` is set.
    usage: Option<crate::usage::UsageRecorder>,
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
        let status = Arc::new(WorkerStatus::default());
        let usage = match &config.usage {
            Some(u) => Some(crate::usage::UsageRecorder::start(
                u,
                &config.workdir,
                &config.client.extra_root_certs,
                Arc::clone(&metrics),
                Arc::clone(&status),
            )?),
            None => None,
        };
        Ok(Worker {
            shared: Arc::new(Shared {
                config,
                provider,
                api,
                env,
                metrics,
                status,
                observer: None,
                usage,
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
        let _sweep = cfg
            .persistence
            .clone()
            .map(|p| AbortOnDrop(crate::persist::spawn_sweep(p)));
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
            // The usage ledger cannot write (crate::usage): claim nothing until it can; the
            // reason is in `/readyz` and was logged when it began.
            if shared.status.blocked().is_some() {
                drop(permit);
                if sleep_or(&shutdown.drain, Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
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
            // The item task starts now, before the ack is sent: it opens the event stream,
            // reads the history and the session and sets up the sandbox while the ack is in
            // flight, and does nothing that needs the ack (heartbeat, posts, tool calls) until
            // the gate says the ack succeeded. The loop still awaits the ack itself, as before,
            // so a slow ack holds up the next poll no longer than it did.
            let (ack_tx, gate) = AckGate::new();
            let span = tracing::info_span!(
                "work",
                work_id = %work.id,
                session_id = session_id.as_deref().unwrap_or(""),
            );
            {
                let shared2 = Arc::clone(&shared);
                let shutdown2 = shutdown.clone();
                let work = work.clone();
                tasks.spawn(
                    async move {
                        handle_item(&shared2, work, claimed_at, &shutdown2, gate, permit).await;
                    }
                    .instrument(span),
                );
            }
            match shared.env.ack(&work.id).await {
                Ok(()) => ack_attempt = 0,
                Err(e) if e.is_fatal() => {
                    // The item task drops what it started and removes its sandbox.
                    let _ = ack_tx.send(Some(false));
                    tracing::error!(work_id = %work.id, error = %e, "ack failed permanently; force-stopping");
                    if let Err(e) = shared.env.stop(&work.id, true).await {
                        tracing::error!(work_id = %work.id, error = %e, "force-stop of unacked work failed");
                    }
                    continue;
                }
                Err(e) => {
                    let _ = ack_tx.send(Some(false));
                    ack_attempt += 1;
                    let wait = cfg.poll.backoff(ack_attempt);
                    tracing::warn!(work_id = %work.id, attempt = ack_attempt, error = %e, "ack failed; backing off");
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
            // Opened only now, after `Claimed` was emitted, so observers see the claim first.
            let _ = ack_tx.send(Some(true));
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
        if let Some(usage) = &shared.usage
            && !shutdown.force.is_cancelled()
        {
            usage.flush(Duration::from_secs(10)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

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
