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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Live worker state for `/readyz`.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    polled_ok: AtomicBool,
    draining: AtomicBool,
    last_poll_ok_unix_ms: AtomicU64,
    /// Why the worker must not take new work now (the usage ledger cannot write:
    /// [`crate::usage::UsageRecorder`]); `None` = nothing.
    blocked: std::sync::Mutex<Option<String>>,
}

impl WorkerStatus {
    /// Ready = the last poll succeeded, the worker is not draining and nothing blocks it.
    pub fn ready(&self) -> bool {
        self.polled_ok.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && self.blocked().is_none()
    }

    /// Why the worker takes no new work now (`/readyz` says it), if anything stops it.
    pub fn blocked(&self) -> Option<String> {
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets (or clears, with `None`) the reason the worker takes no new work.
    pub fn set_blocked(&self, reason: Option<String>) {
        *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = reason;
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

/// The directory below the workdir that holds every session directory (and the sandbox pool).
pub const SESSIONS_DIR: &str = "sessions";

/// The lock file in the workdir held by the worker serving it.
pub const WORKDIR_LOCK: &str = ".wasm-sandbox.lock";

/// Written to the lock file while this worker holds the `nosuid,nodev` mount of the sessions
/// directory, so a successor can tell its predecessor's mount from an operator's.
const MOUNT_MARKER: &str = "nosuid-mount";
/// The file that marks `<workdir>/sessions` as this product's: a `sessions/` folder without it
/// (and not empty) was made by someone else, and the worker refuses to sweep it.
pub const SESSIONS_OWNER_MARKER: &str = ".wasm-sandbox-sessions";

/// Creates this claim's own session directory `<workdir>/sessions/<work_id>.<claim>` (0700).
///
/// `<claim>` is fresh randomness per call, and the directory is created with `mkdir` (it must
/// not exist), so two claims of the same work id never share, reuse or remove each other's
/// directory.
fn prepare_session_dir(workdir: &Path, work_id: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let name = safe_component(work_id)
        .ok_or_else(|| anyhow::anyhow!("work id is not a safe directory name"))?;
    let parent = workdir.join(SESSIONS_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)?;
    let claim = uuid::Uuid::new_v4().simple().to_string();
    let root = parent.join(format!("{name}.{}", &claim[..16]));
    std::fs::DirBuilder::new().mode(0o700).create(&root)?;
    Ok(root)
}

/// Removes a session directory (see the module docs: iterative, never follows a link, never
/// blocks, makes locked directories removable).
fn remove_session_dir(root: &Path) -> std::io::Result<()> {
    wasm_sandbox_fs::tree::remove_tree(root)
}

/// What a worker holds on its workdir while it serves: the exclusive lock, and the
/// `nosuid,nodev` mount of `<workdir>/sessions` when it made one. Dropping it unmounts.
#[derive(Debug)]
pub struct WorkdirGuard {
    lock: std::fs::File,
    mount: Option<wasm_sandbox_fs::mount::NosuidMount>,
    sessions: PathBuf,
}

impl WorkdirGuard {
    /// `<workdir>/sessions`.
    pub fn sessions_dir(&self) -> &Path {
        &self.sessions
    }

    /// Whether this worker mounted (or took over) the `nosuid,nodev` mount of the sessions
    /// directory.
    pub fn mounted(&self) -> bool {
        self.mount.is_some()
    }
}

impl Drop for WorkdirGuard {
    fn drop(&mut self) {
        // Every session was torn down before the worker returned; what is left (the sandbox
        // pool's directory) is this worker's own garbage. Still under the lock.
        if let Err(e) = wasm_sandbox_fs::tree::clear_dir(&self.sessions) {
            tracing::warn!(dir = %self.sessions.display(), error = %e, "could not empty the sessions directory at exit");
        }
        // The folder stays ours: keep the marker so the next start may sweep it.
        let _ = std::fs::write(
            self.sessions.join(SESSIONS_OWNER_MARKER),
            b"created by wasm-sandbox; swept at every start\n",
        );
        if self.mount.take().is_some() {
            // The mount is gone: forget the marker so no successor adopts a mount that is not
            // there (harmless if it did, but the lock file should say what is true).
            let _ = write_lock_file(&self.lock, false);
        }
    }
}

fn write_lock_file(mut file: &std::fs::File, mounted: bool) -> std::io::Result<()> {
    use std::io::{Seek as _, Write as _};
    file.set_len(0)?;
    file.rewind()?;
    let marker = if mounted {
        format!("{MOUNT_MARKER}\n")
    } else {
        String::new()
    };
    write!(file, "pid {}\n{marker}", std::process::id())
}

/// Takes the workdir for this worker: locks it, sweeps what a crashed predecessor left in
/// `<workdir>/sessions`, and mounts that directory `nosuid,nodev` where this process may mount.
///
/// Fails (refusing to start) when another worker holds the workdir: sharing it would let this
/// worker's sweep delete a live worker's sessions. The lock is an `flock` on
/// `<workdir>/.wasm-sandbox.lock`, released by the kernel when the process exits however it
/// exits, so a crashed worker never blocks its successor. Nothing in the workdir but
/// `sessions/` (which only the worker writes) is swept. When mounting is not permitted (an
/// unprivileged worker), that step is skipped with a logged reason.
pub fn claim_workdir(workdir: &Path) -> anyhow::Result<WorkdirGuard> {
    use std::io::Read as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(workdir)
        .map_err(|e| anyhow::anyhow!("creating the workdir {}: {e}", workdir.display()))?;
    let lock_path = workdir.join(WORKDIR_LOCK);
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", lock_path.display()))?;
    let mut previous = String::new();
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let _ = lock.read_to_string(&mut previous);
            let holder = previous
                .lines()
                .next()
                .unwrap_or("")
                .strip_prefix("pid ")
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            anyhow::bail!(
                "another wasm-sandbox worker{holder} is serving the workdir {}: {} is locked; \
                 give each worker its own --workdir",
                workdir.display(),
                lock_path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("locking {}: {e}", lock_path.display())
        }
    }
    let _ = lock.read_to_string(&mut previous);
    let sessions = workdir.join(SESSIONS_DIR);
    let owner_marker = sessions.join(SESSIONS_OWNER_MARKER);
    match std::fs::symlink_metadata(&sessions) {
        // Never delete what the worker did not create: an explicit `--workdir` may be a folder
        // that already holds someone's `sessions/`. Only a folder carrying our marker (or an
        // empty one) is ours to sweep.
        Ok(m) if m.is_dir() => {
            let ours = std::fs::symlink_metadata(&owner_marker).is_ok_and(|m| m.is_file());
            let empty = std::fs::read_dir(&sessions)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !ours && !empty {
                anyhow::bail!(
                    "{} holds files this worker did not create (no {SESSIONS_OWNER_MARKER} \
                     marker); move them away or choose another --workdir",
                    sessions.display()
                );
            }
        }
        Ok(_) => anyhow::bail!(
            "{} is not a directory; remove it or choose another --workdir",
            sessions.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&sessions)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", sessions.display()))?;
        }
        Err(e) => anyhow::bail!("{}: {e}", sessions.display()),
    }
    // A crashed run's disk caps and binds first (`clear_dir` never crosses a mount, so
    // their images, loop devices and data would otherwise stay on the host for good).
    match wasm_sandbox_native::disk::detach_below(&sessions) {
        Ok(0) => {}
        Ok(n) => tracing::info!(dir = %sessions.display(), detached = n,
            "detached mounts left by an earlier run"),
        Err(e) => tracing::warn!(dir = %sessions.display(), error = %e,
            "could not look for mounts left by an earlier run"),
    }
    match wasm_sandbox_fs::tree::clear_dir(&sessions) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            dir = %sessions.display(),
            removed = n,
            "removed stale session directories left by an earlier run"
        ),
        Err(e) => tracing::warn!(
            dir = %sessions.display(),
            error = %e,
            "could not remove every stale session directory"
        ),
    }
    std::fs::write(
        &owner_marker,
        b"created by wasm-sandbox; swept at every start\n",
    )
    .map_err(|e| anyhow::anyhow!("writing {}: {e}", owner_marker.display()))?;
    let mount = mount_sessions_nosuid(&sessions, previous.lines().any(|l| l == MOUNT_MARKER));
    write_lock_file(&lock, mount.is_some())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", lock_path.display()))?;
    Ok(WorkdirGuard {
        lock,
        mount,
        sessions,
    })
}

/// Mounts `sessions` onto itself `nosuid,nodev` unless that is already in effect; takes over
/// the mount a crashed predecessor left (`left_by_predecessor`: its lock file said so).
fn mount_sessions_nosuid(
    sessions: &Path,
    left_by_predecessor: bool,
) -> Option<wasm_sandbox_fs::mount::NosuidMount> {
    use wasm_sandbox_fs::mount;
    let in_effect = match mount::in_effect(sessions) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(dir = %sessions.display(), error = %e, "statvfs failed; not mounting the sessions directory nosuid,nodev");
            return None;
        }
    };
    if in_effect {
        if left_by_predecessor && mount::is_mount_root(sessions).unwrap_or(false) {
            tracing::info!(dir = %sessions.display(), "taking over the nosuid,nodev mount an earlier run left");
            return Some(mount::NosuidMount::adopt(sessions));
        }
        tracing::info!(dir = %sessions.display(), "sessions directory is already nosuid,nodev");
        return None;
    }
    match mount::bind_nosuid_nodev(sessions) {
        Ok(m) => {
            tracing::info!(dir = %sessions.display(), "mounted the sessions directory nosuid,nodev");
            Some(m)
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                // Root without CAP_SYS_ADMIN (a container's default): a session's files are
                // root's on the host, and only the sandbox's seccomp filter keeps set-id bits
                // off them. Say so loudly; the deploy manifests run as uid 10001 instead.
                tracing::warn!(
                    dir = %sessions.display(),
                    "running as root but not permitted to mount the sessions directory nosuid,nodev \
                     (needs CAP_SYS_ADMIN): set-id files are kept out by the sandbox's seccomp \
                     filter alone; run the worker as an unprivileged user"
                );
            } else {
                // Unprivileged: a session's files belong to this worker's uid, so no setuid-root
                // file can come from one; the sandbox's seccomp filter denies setting the bits.
                tracing::info!(
                    dir = %sessions.display(),
                    "not mounting the sessions directory nosuid,nodev: not permitted (needs CAP_SYS_ADMIN)"
                );
            }
            None
        }
        Err(e) => {
            tracing::warn!(dir = %sessions.display(), error = %e, "could not mount the sessions directory nosuid,nodev");
            None
        }
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

/// Decrements `sessions_active` on drop.
struct ActiveGuard<'a>(&'a Metrics);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.sessions_active.dec();
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "the item's lifecycle in order: set-up beside the ack, run, teardown beside the stop"
)]
async fn handle_item<P: SandboxProvider>(
    shared: &Arc<Shared<P>>,
    work: Work,
    claimed_at: Instant,
    shutdown: &Shutdown,
    mut gate: AckGate,
    permit: OwnedSemaphorePermit,
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
        // Nothing to start ahead of the ack; a failed ack was handled by the poll loop.
        if !gate.acked().await {
            return;
        }
        tracing::info!(
            kind = work.data.kind.as_deref().unwrap_or(""),
            "skipping a non-session work item; force-stopping it"
        );
        drop(permit);
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

    // Everything that does not need the ack's answer starts now, beside the ack: the event
    // stream and the history (one task), and the chain session fetch → memory download →
    // sandbox → skills. All of it is reads and local set-up; nothing is posted and no tool
    // runs until the ack succeeded (the runner starts only after it). The first heartbeat
    // goes out as soon as the ack succeeded, whatever the set-up is doing then.
    let prefetched = crate::runner::prefetch_stream(item.clone(), gate.clone());
    // Cancelled when the ack fails: the set-up stops and removes what it made.
    let setup_cancel = cancel.child_token();
    let setup = set_up_session(
        shared,
        &work,
        &session_id,
        &item,
        gate.clone(),
        &setup_cancel,
    );
    let after_ack = async {
        if !gate.acked().await {
            setup_cancel.cancel();
            return None;
        }
        let item = item.clone();
        let lease = Arc::clone(&lease);
        let cancel = cancel.clone();
        let hb_cfg = cfg.heartbeat.clone();
        let metrics = Arc::clone(&shared.metrics);
        let max_session = cfg.max_session;
        Some(AbortOnDrop(tokio::spawn(
            async move {
                let deadline = async {
                    match max_session {
                        Some(d) => tokio::time::sleep_until(claimed_at + d).await,
                        None => std::future::pending().await,
                    }
                };
                // One heartbeat loop for the whole item: it carries the server's last
                // heartbeat value from beat to beat, so it is never restarted.
                let beat = heartbeat_loop(&item, &lease, &hb_cfg, &metrics);
                tokio::pin!(beat);
                tokio::select! {
                    () = &mut beat => {}
                    () = deadline => {
                        // The shape's cap on one item: end the run like a forced end. The
                        // lease is kept (the same loop goes on beating) so the workspace is
                        // saved and the item stopped as at any other end.
                        tracing::warn!(
                            max_session_s = max_session.map_or(0, |d| d.as_secs()),
                            "the work item reached the shape's max_session; ending its run"
                        );
                        cancel.cancel();
                        beat.await;
                    }
                }
                if lease.end_reason() != Some(LeaseEnd::RunnerDone) {
                    cancel.cancel();
                }
            }
            .in_current_span(),
        )))
    };
    let (setup, heartbeat) = tokio::join!(setup, after_ack);
    let Some(mut heartbeat) = heartbeat else {
        // The ack failed: the item is not ours. Drop the stream, remove the sandbox and its
        // directory; send nothing (the poll loop did what a failed ack calls for).
        drop(prefetched);
        if let Setup::Ready(ready) = setup {
            teardown_local((*ready).leftover()).await;
        }
        tracing::info!("ack failed; dropped what was started for the item");
        return;
    };

    let checkpoint_done = CancellationToken::new();
    let (run_end, leftover) = match setup {
        Setup::Ready(mut ready) => {
            let persisted = ready.persisted.take();
            let checkpoints = persisted.as_ref().and_then(|state| {
                crate::persist::spawn_checkpoints(
                    Arc::clone(cfg.persistence.as_ref()?),
                    Arc::clone(state),
                    ready.root.clone(),
                    crate::persist::skill_excludes(ready.skills.as_ref()),
                    format!("{} {}", cfg.worker_id, work.id),
                    checkpoint_done.clone(),
                    Arc::clone(&shared.metrics),
                )
            });
            let (end, left) = serve_session(
                shared,
                &work,
                &session_id,
                &item,
                &lease,
                &cancel,
                shutdown,
                claimed_at,
                *ready,
                prefetched,
            )
            .await;
            checkpoint_done.cancel();
            // Under a forced shutdown a running checkpoint, and the final snapshot below, get
            // at most `forced_stop_timeout` ([`crate::persist::bounded_by_force`]).
            if let Some(mut c) = checkpoints {
                let force = &shutdown.force;
                let bound = cfg.forced_stop_timeout;
                if crate::persist::bounded_by_force(&mut c, force, bound, "checkpoint")
                    .await
                    .is_none()
                {
                    c.abort();
                }
            }
            let mut left = left;
            // Saved while the heartbeat still holds the lease, before the stop.
            if let (Some(p), Some(state)) = (cfg.persistence.as_ref(), persisted) {
                let writer = format!("{} {}", cfg.worker_id, work.id);
                let lost = lease.lost();
                let save = persist_before_stop(
                    p,
                    &state,
                    &mut left,
                    Some(end),
                    lost,
                    &session_id,
                    &writer,
                    &shared.metrics,
                );
                let bound = cfg.forced_stop_timeout;
                crate::persist::bounded_by_force(save, &shutdown.force, bound, "final snapshot")
                    .await;
            }
            (Some(end), Some(left))
        }
        Setup::Terminated => {
            drop(prefetched);
            tracing::info!("skipping the work item of a terminated session");
            (None, None)
        }
        Setup::Failed => {
            drop(prefetched);
            (None, None)
        }
        Setup::Cancelled => {
            drop(prefetched);
            (Some(RunEnd::Cancelled), None)
        }
    };

    lease.finish(LeaseEnd::RunnerDone);
    if let Err(e) = (&mut heartbeat.0).await {
        tracing::error!(error = %e, "heartbeat task failed");
    }
    let lease_end = lease.end_reason();
    // The stop and the local teardown (sandbox close, skills, directory removal) run side by
    // side: neither needs the other. The concurrency slot is given back as soon as the local
    // teardown is done, so the poll loop may claim the next item while the stop is in flight.
    let local = async move {
        if let Some(left) = leftover {
            teardown_local(left).await;
        }
        drop(permit);
    };
    let stop = async {
        if lease.lost() {
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
        }
    };
    let ((), stop_sent) = tokio::join!(local, stop);
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

/// What the set-up made for a session, ready to run.
struct Prepared<S> {
    root: PathBuf,
    sandbox: Arc<S>,
    memory: Option<crate::memory::MemoryStores>,
    skills: Option<wasm_sandbox_skills::SkillsManager>,
    /// The session's snapshot state (persistence on).
    persisted: Option<crate::persist::Persisted>,
}

impl<S> Prepared<S> {
    /// What is left to tear down locally (the memory stores are dropped: never synced back
    /// for a run that did not happen).
    fn leftover(self) -> Leftover<S> {
        Leftover {
            root: self.root,
            sandbox: self.sandbox,
            closed: false,
            skills: self.skills,
        }
    }
}

/// The local teardown of a session: no network.
///
/// The sandbox is *closed* (its processes killed) and *dropped* at different times: a closed
/// sandbox is still held until the end of [`teardown_local`], because dropping it releases
/// what the core session mounted over the session's directories (the disk cap's filesystem):
/// a snapshot taken after the drop would read the empty directories beneath and save them as
/// the session's newest workspace.
struct Leftover<S> {
    root: PathBuf,
    sandbox: Arc<S>,
    /// Whether `sandbox` was closed already.
    closed: bool,
    skills: Option<wasm_sandbox_skills::SkillsManager>,
}

/// How the set-up ended.
enum Setup<S> {
    Ready(Box<Prepared<S>>),
    /// The session is terminated: nothing was created.
    Terminated,
    /// Logged; the item is stopped (once acked).
    Failed,
    /// Cancelled (forced shutdown, lease ended, or the ack failed); what was made is removed.
    Cancelled,
}

/// Saves the session's workspace before the stop ([`crate::persist`]): closes the sandbox and
/// removes the installed skills first (so the tree is quiescent and holds only the session's
/// own files), then snapshots, or deletes the snapshots of a session that ended terminated.
/// Nothing is saved for a lease that was lost: the item may belong to another worker already.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the arguments are the item's context"
)]
async fn persist_before_stop<S: SandboxSession>(
    p: &Arc<wasm_sandbox_persist::Persistence>,
    state: &crate::persist::Persisted,
    left: &mut Leftover<S>,
    run_end: Option<RunEnd>,
    lease_lost: bool,
    session_id: &str,
    writer: &str,
    metrics: &Metrics,
) {
    if run_end == Some(RunEnd::Terminated) {
        crate::persist::delete(Some(p), session_id, "terminated").await;
        return;
    }
    if lease_lost {
        tracing::warn!("lease lost; the session's workspace is not saved by this item");
        return;
    }
    if !left.closed {
        close_sandbox(left.sandbox.as_ref()).await;
        left.closed = true;
    }
    if let Some(skills) = left.skills.take() {
        crate::skills::teardown(skills).await;
    }
    crate::persist::snapshot(p, state, &left.root, &[], writer, "item end", metrics).await;
}

/// Closes the sandbox (kills its processes), removes the installed skills and the session
/// directory.
async fn teardown_local<S: SandboxSession>(left: Leftover<S>) {
    if !left.closed {
        close_sandbox(left.sandbox.as_ref()).await;
    }
    if let Some(skills) = left.skills {
        crate::skills::teardown(skills).await;
    }
    // Released only now (see [`Leftover`]); the directory removal never crosses a mount, so
    // what the session mounted must be gone first.
    drop(left.sandbox);
    remove_dir_logged(left.root).await;
}

async fn close_sandbox<S: SandboxSession>(sandbox: &S) {
    if tokio::time::timeout(Duration::from_secs(30), sandbox.close())
        .await
        .is_err()
    {
        tracing::error!("sandbox close timed out");
    }
}

/// The session's set-up, run beside the ack: fetch the session (a terminated one stops here),
/// then make its directory, download its memory stores, create the sandbox and install its
/// skills. Reads only (and local work); `cancel` (the ack failed, a forced shutdown, the lease
/// ended) stops it, and it removes what it made before returning [`Setup::Cancelled`].
///
/// The session fetch goes through [`read_after_ack`]: refused before the ack's answer, it is
/// sent again after a successful ack. The memory and skill downloads use the same credential
/// and start only after the session fetch succeeded, so the token is known to be accepted by
/// then.
async fn set_up_session<P: SandboxProvider>(
    shared: &Arc<Shared<P>>,
    work: &Work,
    session_id: &str,
    item: &ItemClient,
    mut gate: AckGate,
    cancel: &CancellationToken,
) -> Setup<P::Session> {
    let cfg = &shared.config;
    let session = tokio::select! {
        biased;
        () = cancel.cancelled() => return Setup::Cancelled,
        r = read_after_ack(&mut gate, || item.session()) => r,
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "session fetch failed");
            // A 404 `not_found_error` for the session of an item the server handed out and
            // acked (a refusal before the ack's answer proves nothing: the item may not be
            // ours): the session was deleted. Its snapshots go too.
            if let crate::client::ApiError::Status {
                status: 404, info, ..
            } = &e
                && info
                    .error_type
                    .as_deref()
                    .is_none_or(|t| t == "not_found_error")
                && gate.acked().await
            {
                crate::persist::delete(cfg.persistence.as_ref(), session_id, "deleted").await;
            }
            return Setup::Failed;
        }
    };
    if session.is_terminated() {
        crate::persist::delete(cfg.persistence.as_ref(), session_id, "terminated").await;
        return Setup::Terminated;
    }
    let workdir = cfg.workdir.clone();
    let work_id = work.id.clone();
    let root =
        match tokio::task::spawn_blocking(move || prepare_session_dir(&workdir, &work_id)).await {
            Ok(Ok(root)) => root,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not prepare the session directory");
                return Setup::Failed;
            }
            Err(e) => {
                tracing::error!(error = %e, "session directory task failed");
                return Setup::Failed;
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
            return Setup::Failed;
        }
        None => {
            remove_dir_logged(root).await;
            return Setup::Cancelled;
        }
    };
    let spec = SandboxSpec {
        session_id: session_id.to_owned(),
        work_id: work.id.clone(),
        root: root.clone(),
        memory_stores: memory_mounts,
        // The session may narrow `[runtime.networking]`, never widen it.
        network_allowed_hosts: session
            .metadata
            .get(wasm_sandbox_egress::SESSION_ALLOWED_HOSTS_KEY)
            .cloned(),
    };
    // Not raced against `cancel`: creation is local and bounded, and part of it runs on a
    // blocking thread (adopting a pooled sandbox renames directories into `root`) that would
    // go on after its future was dropped, re-creating the tree after the removal below.
    // Awaiting it, then tearing down what it made, leaves nothing behind.
    let sandbox = match shared.provider.create(spec).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "sandbox creation failed");
            remove_dir_logged(root).await;
            return if cancel.is_cancelled() {
                Setup::Cancelled
            } else {
                Setup::Failed
            };
        }
    };
    if cancel.is_cancelled() {
        teardown_local(Leftover {
            root,
            sandbox,
            closed: false,
            skills: None,
        })
        .await;
        return Setup::Cancelled;
    }
    // The saved workspace lands in the (adopted) directories before the skills and before the
    // runner starts: nothing the session runs sees a partial tree.
    // An archived session takes no more input: its snapshots go (as a terminated session's
    // do), and this item neither restores nor saves.
    let persisted = if session.is_archived() {
        crate::persist::delete(cfg.persistence.as_ref(), session_id, "archived").await;
        None
    } else {
        crate::persist::restore(cfg.persistence.as_ref(), session_id, &root, &shared.metrics).await
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
        teardown_local(Leftover {
            root,
            sandbox,
            closed: false,
            skills: None,
        })
        .await;
        return Setup::Cancelled;
    };
    if cancel.is_cancelled() {
        teardown_local(Leftover {
            root,
            sandbox,
            closed: false,
            skills,
        })
        .await;
        return Setup::Cancelled;
    }
    // Lets the sandbox prepare what the skills ship (precompiling components) beside the ack.
    sandbox.skills_installed(&workspace);
    Setup::Ready(Box::new(Prepared {
        root,
        sandbox,
        memory,
        skills,
        persisted,
    }))
}

/// Runs an acked, set-up session; returns how the run ended and what is left to tear down
/// locally. The sandbox is closed here only when memory stores must be synced back after it
/// (that needs the lease, so it goes before the stop); otherwise closing it is left to the
/// local teardown, which runs beside the stop.
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
    ready: Prepared<P::Session>,
    prefetched: crate::runner::Prefetch,
) -> (RunEnd, Leftover<P::Session>) {
    let cfg = &shared.config;
    let Prepared {
        root,
        sandbox,
        memory,
        skills,
        persisted: _,
    } = ready;
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
    // The usage record: measured before the sandbox is closed (the close removes the bash
    // cgroup) and fdatasync'd into the ledger before the item is stopped (handle_item stops it
    // after this returns), so a crash from here on loses nothing (crate::usage).
    if let Some(recorder) = &shared.usage {
        let item = crate::usage::ItemContext {
            environment_id: &cfg.environment_id,
            work_id: &work.id,
            session_id,
            worker_id: &cfg.worker_id,
            claimed_at: claimed_at.into_std(),
        };
        recorder.record(item, sandbox.usage()).await;
    }

    // The heartbeat keeps the lease while the memory stores sync back.
    let closed = match syncer {
        Some(syncer) => {
            // The sync reads what the session left: the sandbox must be closed first.
            close_sandbox(sandbox.as_ref()).await;
            memory_done.cancel();
            match syncer.await {
                Ok(stores) => stores.finish(Some(end)).await,
                Err(e) => tracing::error!(error = %e, "memory sync task failed"),
            }
            true
        }
        None => false,
    };
    (
        end,
        Leftover {
            root,
            sandbox,
            closed,
            skills,
        },
    )
}

async fn remove_dir_logged(root: PathBuf) {
    let started = Instant::now();
    match tokio::task::spawn_blocking(move || remove_session_dir(&root)).await {
        Ok(Ok(())) => tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "session directory removed"
        ),
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
        assert!(root.parent().unwrap().ends_with("sessions"));
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
        assert!(prepare_session_dir(tmp.path(), "../escape").is_err());
    }

    /// Issue 11: keyed by work id, a re-claim of the same item during the first run's teardown
    /// removed the first run's files at set-up, and the first teardown then removed the second
    /// run's. Keyed by claim, each run has its own directory.
    #[test]
    fn two_claims_of_one_work_id_get_their_own_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let first = prepare_session_dir(tmp.path(), "work_1").unwrap();
        std::fs::write(first.join("first.txt"), "1").unwrap();
        let second = prepare_session_dir(tmp.path(), "work_1").unwrap();
        assert_ne!(first, second, "two claims, two directories");
        for root in [&first, &second] {
            let name = root.file_name().unwrap().to_str().unwrap();
            let claim = name.strip_prefix("work_1.").expect("<work_id>.<claim>");
            assert_eq!(claim.len(), 16, "{name}");
            assert!(claim.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        }
        assert_eq!(
            std::fs::read_to_string(first.join("first.txt")).unwrap(),
            "1",
            "setting up the second claim left the first run's files alone"
        );
        std::fs::write(second.join("second.txt"), "2").unwrap();
        remove_session_dir(&first).unwrap();
        assert_eq!(
            std::fs::read_to_string(second.join("second.txt")).unwrap(),
            "2",
            "tearing down the first claim left the second run's files alone"
        );
    }

    /// Start-up: stale session directories are swept (and nothing else in the workdir), the
    /// workdir is locked against a second worker, and, as root, the sessions directory is
    /// mounted nosuid,nodev until the guard is dropped.
    #[test]
    fn claim_workdir_sweeps_locks_and_mounts() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let workdir = tmp.path().join("w");
        let stale = workdir.join("sessions/work_old.0123456789abcdef");
        std::fs::create_dir_all(stale.join("workspace/locked/inner")).unwrap();
        std::fs::write(stale.join("workspace/locked/inner/data"), "stale").unwrap();
        std::fs::set_permissions(
            stale.join("workspace/locked"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        std::fs::create_dir_all(workdir.join("sessions/.pool/p1-0/workspace")).unwrap();
        // An earlier run of ours left these: its marker is there.
        std::fs::write(workdir.join("sessions").join(SESSIONS_OWNER_MARKER), "").unwrap();
        let outside = tmp.path().join("outside.txt");
        std::fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, stale.join("workspace/link")).unwrap();
        std::fs::write(workdir.join("operator-notes.txt"), "keep").unwrap();

        let guard = claim_workdir(&workdir).unwrap();
        let left: Vec<_> = std::fs::read_dir(workdir.join("sessions"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            [SESSIONS_OWNER_MARKER],
            "stale session directories swept, the marker kept"
        );
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(workdir.join("operator-notes.txt")).unwrap(),
            "keep",
            "nothing outside sessions/ is touched"
        );
        let err = claim_workdir(&workdir).unwrap_err().to_string();
        assert!(
            err.contains("another wasm-sandbox worker")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        let sessions = workdir.join("sessions");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root && !wasm_sandbox_fs::mount::in_effect(tmp.path()).unwrap() {
            assert!(guard.mounted(), "root mounts the sessions directory");
            assert!(wasm_sandbox_fs::mount::in_effect(&sessions).unwrap());
        } else {
            eprintln!("mount check skipped: not root, or the temp dir is already nosuid,nodev");
        }
        drop(guard);
        assert!(
            !wasm_sandbox_fs::mount::is_mount_root(&sessions).unwrap(),
            "unmounted on drop"
        );
        let again = claim_workdir(&workdir).expect("the lock is released with the guard");
        drop(again);
    }

    /// Issue 17: never delete what the worker did not create. An explicit workdir that already
    /// holds someone's `sessions/` folder (no marker, not empty) is refused, untouched; an
    /// empty one is adopted.
    #[test]
    fn a_foreign_sessions_folder_is_refused_not_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let workdir = tmp.path().join("w");
        std::fs::create_dir_all(workdir.join("sessions/notes")).unwrap();
        std::fs::write(workdir.join("sessions/notes/todo.txt"), "mine").unwrap();
        let err = claim_workdir(&workdir).unwrap_err().to_string();
        assert!(
            err.contains("did not create") && err.contains(SESSIONS_OWNER_MARKER),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(workdir.join("sessions/notes/todo.txt")).unwrap(),
            "mine"
        );
        let empty = tmp.path().join("e");
        std::fs::create_dir_all(empty.join("sessions")).unwrap();
        let guard = claim_workdir(&empty).expect("an empty sessions folder is adopted");
        assert!(empty.join("sessions").join(SESSIONS_OWNER_MARKER).is_file());
        drop(guard);
        assert!(
            empty.join("sessions").join(SESSIONS_OWNER_MARKER).is_file(),
            "the marker outlives the run"
        );
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
