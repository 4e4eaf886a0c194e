//! [`UsageRecorder`]: the worker's writer of usage records, and what it does when the ledger
//! cannot take one.
//!
//! # A record the ledger cannot take is kept, and the worker stops taking work
//!
//! The ledger is in the workdir, on a filesystem that a best-effort session (no disk cap) can
//! fill, and a disk can fail. Losing a record there loses billing data, so:
//! 1. the ledger reserves space ahead of its end ([`wasm_sandbox_usage::ledger`]), which covers
//!    a full filesystem in the common case;
//! 2. a write that fails anyway is retried a few times with a short backoff
//!    ([`RETRIES`], about 1.3 s in all; the item's stop waits for it);
//! 3. a record still unwritten is kept in memory (at most [`MAX_PENDING`]) and written, in
//!    order, before the next record, by the next teardown or by a retry task every
//!    [`RETRY_EVERY`];
//! 4. while anything is held in memory, or a written line waits for a successful `fdatasync`,
//!    the worker is unready: `/readyz` answers 503 naming the reason, and the poll loop claims
//!    no new item (a new session would only make a record that cannot be written either).
//!    Sessions already running go on. When a write succeeds again the worker is ready again.
//!
//! The item whose record could not be written is still stopped: its record is held (a crash
//! before the ledger recovers loses it, which the unready state makes unlikely to go
//! unnoticed), and holding the item would only let its lease expire and another worker
//! re-serve it. A record that does not fit in the bounded memory is logged whole at error
//! level (the operator can recover it from the log) and counted in
//! `wasm_sandbox_usage_records_lost_total`.
//!
//! A line that was written but whose `fdatasync` failed is in the file: it is counted (once)
//! and never written again; the ledger syncs again before its next write.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use wasm_sandbox_usage::{AppendError, Ledger, UsageRecord};

use super::{ItemContext, SessionUsage, UsageFileConfig, build_record};
use crate::metrics::Metrics;
use crate::status::WorkerStatus;

/// Delays between the attempts of one write (after the first).
pub const RETRIES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(1000),
];
/// Records held in memory at most while the ledger cannot write (a few MiB).
pub const MAX_PENDING: usize = 10_000;
/// How often the held records are retried without a new teardown.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);

/// The ledger and what it could not take yet.
struct State {
    ledger: Ledger,
    pending: VecDeque<UsageRecord>,
}

struct Inner {
    state: Mutex<State>,
    /// Something is held or unsynced: the retry task has work.
    troubled: AtomicBool,
    metrics: Arc<Metrics>,
    status: Arc<WorkerStatus>,
    sink: Option<wasm_sandbox_usage::SinkHandle>,
}

/// Writes the usage records of one worker: the ledger (and its sink). See the
/// [module docs](self) for what happens when the ledger cannot write.
pub struct UsageRecorder {
    inner: Arc<Inner>,
    retry: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for UsageRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageRecorder")
            .field("sink", &self.inner.sink.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for UsageRecorder {
    fn drop(&mut self) {
        self.retry.abort();
    }
}

impl UsageRecorder {
    /// Opens the ledger (creating it) and starts the sink when one is configured, and the
    /// retry task (inside a tokio runtime). `status` is made unready while the ledger cannot
    /// write.
    ///
    /// # Errors
    /// When the ledger cannot be opened (or another process holds it), or the sink's settings
    /// are wrong (an unset `auth_header_env`).
    pub fn start(
        config: &UsageFileConfig,
        workdir: &Path,
        extra_root_certs: &[reqwest::Certificate],
        metrics: Arc<Metrics>,
        status: Arc<WorkerStatus>,
    ) -> anyhow::Result<UsageRecorder> {
        Self::start_with(
            config,
            workdir,
            extra_root_certs,
            metrics,
            status,
            RETRY_EVERY,
        )
    }

    pub(crate) fn start_with(
        config: &UsageFileConfig,
        workdir: &Path,
        extra_root_certs: &[reqwest::Certificate],
        metrics: Arc<Metrics>,
        status: Arc<WorkerStatus>,
        retry_every: Duration,
    ) -> anyhow::Result<UsageRecorder> {
        config.check()?;
        let dir = config.ledger_dir(workdir);
        let ledger = Ledger::open(&dir, config.rotate_size)
            .map_err(|e| anyhow::anyhow!("usage ledger {}: {e}", dir.display()))?;
        let sink = match config.sink()? {
            Some(mut sink) => {
                sink.extra_root_certs = extra_root_certs.to_vec();
                Some(wasm_sandbox_usage::spawn_sink(dir.clone(), sink)?)
            }
            None => None,
        };
        let shown = config
            .sink_url
            .as_deref()
            .map_or_else(|| "none".to_owned(), wasm_sandbox_usage::redact_url);
        tracing::info!(ledger = %dir.display(), sink = %shown, "usage records on");
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                ledger,
                pending: VecDeque::new(),
            }),
            troubled: AtomicBool::new(false),
            metrics,
            status,
            sink,
        });
        let retry = tokio::spawn(retry_task(Arc::downgrade(&inner), retry_every));
        Ok(UsageRecorder { inner, retry })
    }

    /// Builds the record of a served item from what its sandbox reported, appends it to the
    /// ledger (durably, before returning), counts it and wakes the sink. Returns the record
    /// when it is in the ledger; `None` when it is held in memory (the worker is then unready;
    /// see the [module docs](self)). Never fatal to the item.
    pub async fn record(&self, item: ItemContext<'_>, usage: SessionUsage) -> Option<UsageRecord> {
        let record = build_record(item, &usage, std::time::SystemTime::now());
        let inner = Arc::clone(&self.inner);
        let held = record.clone();
        let written =
            tokio::task::spawn_blocking(move || write(&inner, Some(held), &RETRIES)).await;
        match written {
            Ok(true) => {
                tracing::info!(
                    record_id = %record.record_id,
                    active_ms = record.active_ms,
                    cpu_s = record.cpu.total,
                    "usage recorded"
                );
                Some(record)
            }
            Ok(false) => None,
            Err(e) => {
                self.inner.metrics.usage.ledger_errors.inc();
                tracing::error!(record_id = %record.record_id, error = %e, "usage ledger task failed");
                None
            }
        }
    }

    /// At a graceful shutdown: one more try at records held in memory, then gives the sink at
    /// most `bound` to deliver what the ledger holds (a pod's workdir may be an `emptyDir` that
    /// goes with the pod). Records it could not deliver stay in the ledger for the next start.
    pub async fn flush(&self, bound: Duration) {
        let inner = Arc::clone(&self.inner);
        let end = tokio::task::spawn_blocking(move || {
            if inner.troubled.load(Ordering::SeqCst) {
                write(&inner, None, &[]);
            }
            let state = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            if !state.pending.is_empty() {
                for r in &state.pending {
                    log_lost(r, "the worker is shutting down with the ledger unwritable");
                }
            }
            state.ledger.end()
        })
        .await;
        let (Some(sink), Ok(end)) = (&self.inner.sink, end) else {
            return;
        };
        if sink.flush(end, bound).await {
            tracing::info!("usage sink: every record delivered");
        } else {
            tracing::warn!(
                bound_s = bound.as_secs_f64(),
                "usage sink: records still undelivered at shutdown; they stay in the ledger"
            );
        }
    }
}

/// Logs a record that cannot reach the ledger, whole, so it can be recovered from the log.
fn log_lost(record: &UsageRecord, why: &str) {
    let line = serde_json::to_string(record).unwrap_or_default();
    tracing::error!(record_id = %record.record_id, record = %line,
        "usage record NOT in the ledger ({why}); the record is in this log line");
}

/// Retries held records every `every` while the recorder lives.
async fn retry_task(inner: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.troubled.load(Ordering::SeqCst) {
            let _ = tokio::task::spawn_blocking(move || {
                write(&inner, None, &[]);
            })
            .await;
        }
    }
}

/// Queues `record` (if any) behind the held ones and writes them all in order, retrying each
/// after the `retries` delays; sets the worker's readiness from the outcome. Returns whether
/// `record` is in the ledger now. Blocking.
fn write(inner: &Inner, record: Option<UsageRecord>, retries: &[Duration]) -> bool {
    let mut state = inner.state.lock().unwrap_or_else(|p| p.into_inner());
    let mut queued = None;
    if let Some(record) = record {
        if state.pending.len() >= MAX_PENDING {
            inner.metrics.usage.records_lost.inc();
            log_lost(&record, "too many records held in memory");
        } else {
            queued = Some(record.record_id.clone());
            state.pending.push_back(record);
        }
    }
    let State { ledger, pending } = &mut *state;
    let (written, trouble) = write_pending(ledger, pending, &inner.metrics, retries);
    inner.troubled.store(trouble.is_some(), Ordering::SeqCst);
    let was = inner.status.blocked();
    match (&was, &trouble) {
        (None, Some(why)) => tracing::error!(reason = %why,
            "usage ledger cannot write: the worker is unready and claims no new work"),
        (Some(_), None) => tracing::info!("usage ledger writes again: the worker is ready"),
        _ => {}
    }
    inner.status.set_blocked(trouble);
    let in_ledger = queued.is_some_and(|id| !state.pending.iter().any(|r| r.record_id == id));
    drop(state);
    if written > 0
        && let Some(sink) = &inner.sink
    {
        sink.wake();
    }
    in_ledger
}

/// Writes `pending` front first; returns how many were written and, when something is still
/// held or unsynced, why.
fn write_pending(
    ledger: &mut Ledger,
    pending: &mut VecDeque<UsageRecord>,
    metrics: &Metrics,
    retries: &[Duration],
) -> (usize, Option<String>) {
    let mut written = 0;
    if ledger.unsynced()
        && let Err(e) = ledger.sync()
    {
        metrics.usage.ledger_errors.inc();
        return (
            written,
            Some(format!(
                "usage ledger: fdatasync fails ({e}); {} record(s) held in memory",
                pending.len()
            )),
        );
    }
    while let Some(record) = pending.front() {
        let mut attempt = 0;
        loop {
            match ledger.append_checked(record) {
                Ok(_) => break,
                Err(AppendError::NotSynced(e)) => {
                    // In the file: counted now, once, and never written again.
                    metrics.usage.ledger_errors.inc();
                    metrics.usage.add(record);
                    pending.pop_front();
                    written += 1;
                    return (
                        written,
                        Some(format!(
                            "usage ledger: a record was written but fdatasync failed ({e}); {} record(s) held in memory",
                            pending.len()
                        )),
                    );
                }
                Err(AppendError::NotWritten(e)) => {
                    metrics.usage.ledger_errors.inc();
                    tracing::warn!(record_id = %record.record_id, attempt, error = %e,
                        "usage ledger: write failed");
                    if let Some(delay) = retries.get(attempt) {
                        std::thread::sleep(*delay);
                        attempt += 1;
                        continue;
                    }
                    return (
                        written,
                        Some(format!(
                            "usage ledger {} cannot write ({e}); {} record(s) held in memory",
                            ledger.dir().display(),
                            pending.len()
                        )),
                    );
                }
            }
        }
        metrics.usage.add(record);
        pending.pop_front();
        written += 1;
    }
    (written, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;
    use std::time::Instant;

    /// Waits (20 s at most, then fails the test) for the retry task to clear the
    /// worker's unready state.
    async fn wait_until_ready(status: &WorkerStatus) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while status.blocked().is_some() {
            assert!(
                Instant::now() < deadline,
                "still blocked: {:?}",
                status.blocked()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A tmpfs of `size` on a temp dir (root only), unmounted on drop.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Option<Tmpfs> {
            let dir = tempfile::tempdir().ok()?;
            match Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output()
            {
                Ok(o) if o.status.success() => Some(Tmpfs(dir)),
                Ok(o) => {
                    eprintln!(
                        "skipped: cannot mount a tmpfs (needs root): {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    None
                }
                Err(e) => {
                    eprintln!("skipped: cannot run mount: {e}");
                    None
                }
            }
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
        }
    }

    /// Fills the filesystem of `dir` (what a best-effort session without a disk cap can do).
    fn fill(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![1u8; 64 << 10];
        while f.write(&chunk).is_ok_and(|n| n > 0) {}
        let _ = f.write_all(&[0u8; 4096]);
        path
    }

    /// Review finding: the sink ignored the worker's extra CA roots (`--ca-cert`). A sink behind
    /// a private CA (the TLS fake's) is reached with them, and not without.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sink_trusts_the_workers_extra_roots() {
        use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane, TlsOptions};
        let fake = FakeControlPlane::start(FakeConfig {
            tls: Some(TlsOptions::default()),
            ..FakeConfig::default()
        })
        .await
        .unwrap();
        let roots =
            crate::client::parse_root_certs(fake.ca_cert_pem().unwrap().as_bytes()).unwrap();
        let reached = |path: &str| fake.requests().iter().any(|r| r.path == path);
        for (path, trust) in [
            ("/usage-sink-trusted", true),
            ("/usage-sink-untrusted", false),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let config = UsageFileConfig {
                sink_url: Some(format!("{}{path}", fake.url())),
                ..UsageFileConfig::default()
            };
            let recorder = UsageRecorder::start(
                &config,
                dir.path(),
                if trust { &roots } else { &[] },
                Arc::new(Metrics::new()),
                Arc::new(WorkerStatus::default()),
            )
            .unwrap();
            assert!(
                recorder
                    .record(item(), SessionUsage::default())
                    .await
                    .is_some()
            );
            // The fake answers 404 for this path (the sink retries); what matters is whether
            // the TLS handshake let the request reach it.
            let deadline = Instant::now() + Duration::from_secs(if trust { 20 } else { 2 });
            while !reached(path) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(reached(path), trust, "{path}");
        }
    }

    /// Review finding: a record whose line was written but whose `fdatasync` failed was
    /// reported lost (and, retried, would be written twice). Now it is in the ledger once and
    /// counted once; the worker is unready until a later sync succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_after_a_write_counts_the_record_once_and_syncs_again() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(WorkerStatus::default());
        let recorder = UsageRecorder::start_with(
            &UsageFileConfig::default(),
            dir.path(),
            &[],
            Arc::clone(&metrics),
            Arc::clone(&status),
            Duration::from_millis(100),
        )
        .unwrap();
        recorder
            .inner
            .state
            .lock()
            .unwrap()
            .ledger
            .fail_next_syncs(2);
        let written = recorder.record(item(), SessionUsage::default()).await;
        assert!(written.is_some(), "the line is in the ledger");
        let why = status.blocked().expect("unready until a sync succeeds");
        assert!(why.contains("fdatasync failed"), "{why}");
        // The retry task's first sync fails too (the second injected failure), the next works.
        wait_until_ready(&status).await;
        assert!(!recorder.inner.state.lock().unwrap().ledger.unsynced());
        // A second record after recovery: two lines in all, each once.
        assert!(
            recorder
                .record(item(), SessionUsage::default())
                .await
                .is_some()
        );
        let records = wasm_sandbox_usage::read_all(&dir.path().join("usage")).unwrap();
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(records[0].record_id, written.unwrap().record_id);
        let text = metrics.encode();
        assert!(
            text.contains(r#"wasm_sandbox_usage_sessions_total{environment="env_full"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("wasm_sandbox_usage_ledger_errors_total 2"),
            "{text}"
        );
    }

    fn item() -> ItemContext<'static> {
        ItemContext {
            environment_id: "env_full",
            work_id: "work_1",
            session_id: "sesn_1",
            worker_id: "w",
            claimed_at: std::time::Instant::now(),
        }
    }

    /// Review finding: a failed ledger write (ENOSPC) lost the record. Now the record is held,
    /// the worker is unready with the reason while it is, and the record reaches the ledger,
    /// once, and the counters, once, when there is room again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_holds_the_record_and_makes_the_worker_unready_until_it_is_written() {
        let Some(fs) = Tmpfs::mount("1m") else {
            return;
        };
        let workdir = fs.0.path().to_owned();
        std::fs::create_dir(workdir.join("usage")).unwrap();
        // Full before the ledger opens: no space can be reserved either.
        let filler = fill(&workdir);
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(WorkerStatus::default());
        let recorder = UsageRecorder::start_with(
            &UsageFileConfig::default(),
            &workdir,
            &[],
            Arc::clone(&metrics),
            Arc::clone(&status),
            Duration::from_millis(100),
        )
        .unwrap();
        let usage = SessionUsage {
            active: Duration::from_millis(1500),
            ..SessionUsage::default()
        };
        assert!(recorder.record(item(), usage.clone()).await.is_none());
        let why = status.blocked().expect("unready while the record is held");
        assert!(
            why.contains("cannot write") && why.contains("1 record(s) held"),
            "{why}"
        );
        assert!(!status.ready());
        assert!(
            wasm_sandbox_usage::read_all(&workdir.join("usage"))
                .unwrap()
                .is_empty()
        );
        let text = metrics.encode();
        assert!(
            !text.contains(r#"usage_sessions_total{environment="env_full"}"#),
            "{text}"
        );
        // A second teardown while full queues behind the first.
        assert!(recorder.record(item(), usage).await.is_none());
        assert!(status.blocked().unwrap().contains("2 record(s) held"));
        // Room again: the retry task writes both, in order, and the worker is ready.
        std::fs::remove_file(filler).unwrap();
        wait_until_ready(&status).await;
        let records = wasm_sandbox_usage::read_all(&workdir.join("usage")).unwrap();
        assert_eq!(records.len(), 2, "each held record once");
        assert_ne!(records[0].record_id, records[1].record_id);
        let text = metrics.encode();
        assert!(
            text.contains(r#"wasm_sandbox_usage_sessions_total{environment="env_full"} 2"#),
            "{text}"
        );
        drop(recorder);
    }
}
