//! The worker's side of `[runtime.persistence]` (`wasm_sandbox_persist`): restore during the
//! set-up, checkpoints during the run, a snapshot before the stop, deletion for a terminated
//! session, and the TTL sweep.
//!
//! Ordering and why it is safe:
//!
//! - **Restore** runs in the set-up chain after the sandbox is created (a pooled sandbox's
//!   directories are renamed into the session root at creation: the restore writes into those
//!   adopted, empty directories) and before the skills are installed, so nothing the session
//!   runs can see a half-written tree: the runner starts only after the set-up returned. The
//!   set-up runs beside the ack and the stream attach, so the restore adds no sequential round
//!   trip to the critical path.
//! - **Snapshot** runs after the run ended, the sandbox was closed (no process of the session
//!   can change the tree any more) and the installed skills were removed, while the heartbeat
//!   still holds the lease, and *before* the stop is sent: once the control plane sees the stop it may hand the session's next item to any
//!   replica, which must find this generation. It is skipped when the lease was lost (the item
//!   may already belong to another worker; the generation CAS covers the remaining window).
//! - **Checkpoints** (every `checkpoint_interval`) walk the live tree while bash may run: the
//!   walk never follows a link nor blocks, and the installed skills are excluded. They share the
//!   session's state behind a mutex with the final snapshot, so two writes of one item never
//!   race each other.
//! - A session found **terminated** (at set-up, or the run ended with it terminated, which
//!   covers `session.deleted`) or **deleted** (the session fetch at set-up answered 404) has its
//!   snapshots deleted.
//! - Under a **forced shutdown** the wait for a running checkpoint and the final snapshot are
//!   bounded by `forced_stop_timeout` (see `worker.rs`); what is cut off leaves the previous
//!   generation (the last checkpoint) in place: a manifest is the commit point, so a save
//!   abandoned half-way commits nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use wasm_sandbox_persist::{Error, Persistence, RestoreOutcome, SessionState};

use crate::metrics::{Metrics, SnapshotLabels};

fn count(metrics: &Metrics, op: &str, result: &str) {
    metrics
        .session_snapshots
        .get_or_create(&SnapshotLabels {
            op: op.to_owned(),
            result: result.to_owned(),
        })
        .inc();
}

/// A session's snapshot state during one item.
pub type Persisted = Arc<Mutex<SessionState>>;

/// Restores the session's newest snapshot into `root`'s directories; `None` without
/// persistence. Logs what happened.
pub async fn restore(
    persistence: Option<&Arc<Persistence>>,
    session_id: &str,
    root: &Path,
    metrics: &Metrics,
) -> Option<Persisted> {
    let p = persistence?;
    let (ws, out) = wasm_sandbox_persist::session_dirs(root);
    let started = std::time::Instant::now();
    let (state, outcome) = p.restore(session_id, &ws, &out).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        RestoreOutcome::Empty => {
            count(metrics, "restore", "empty");
            tracing::debug!(elapsed_ms, "no snapshot of the session to restore");
        }
        RestoreOutcome::Restored { generation, stats } => {
            count(metrics, "restore", "ok");
            tracing::info!(
                generation,
                entries = stats.entries,
                file_bytes = stats.file_bytes,
                elapsed_ms,
                "session workspace restored"
            );
        }
        RestoreOutcome::Failed(e) => {
            count(metrics, "restore", "failed");
            tracing::error!(
                error = %e,
                elapsed_ms,
                "session workspace could not be restored; it starts empty with a note"
            );
        }
    }
    Some(Arc::new(Mutex::new(state)))
}

/// Saves the session's directories as its next generation. `exclude`: workspace-relative
/// paths not saved (installed skills). Logs the outcome; never fails the item.
pub async fn snapshot(
    persistence: &Persistence,
    state: &Persisted,
    root: &Path,
    exclude: &[String],
    writer: &str,
    what: &'static str,
    metrics: &Metrics,
) {
    let (ws, out) = wasm_sandbox_persist::session_dirs(root);
    let started = std::time::Instant::now();
    let mut state = state.lock().await;
    let r = persistence
        .snapshot(&mut state, &ws, &out, exclude, writer)
        .await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let result = match &r {
        Ok(_) => "ok",
        Err(Error::Conflict(_)) => "conflict",
        Err(Error::TooLarge(_)) => "too_large",
        Err(Error::Skipped(_)) => "skipped",
        Err(_) => "failed",
    };
    count(metrics, "save", result);
    match r {
        Ok(o) => tracing::info!(
            what,
            generation = o.generation,
            entries = o.stats.entries,
            file_bytes = o.stats.file_bytes,
            uploaded_bytes = o.stats.uploaded_bytes,
            elapsed_ms,
            "session workspace saved"
        ),
        Err(e @ Error::Conflict(_)) => tracing::warn!(
            what, error = %e,
            "another item of the session saved first; this snapshot was dropped"
        ),
        Err(e @ Error::Skipped(_)) => tracing::warn!(
            what, error = %e,
            "session workspace not saved: this item's restore failed, the stored snapshot is kept"
        ),
        Err(e @ Error::TooLarge(_)) => tracing::error!(
            what, error = %e,
            "session workspace over the persistence limits; the previous snapshot is kept"
        ),
        Err(e) => tracing::error!(
            what, error = %e,
            "session workspace could not be saved; the previous snapshot is kept"
        ),
    }
}

/// Deletes the snapshots of a session that is gone (`why`: "terminated", "deleted"), logged.
pub async fn delete(persistence: Option<&Arc<Persistence>>, session_id: &str, why: &str) {
    let Some(p) = persistence else {
        return;
    };
    match p.delete_session(session_id).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(objects = n, why, "session gone: its snapshots were deleted"),
        Err(e) => {
            tracing::error!(error = %e, why, "session gone: deleting its snapshots failed")
        }
    }
}

/// The periodic checkpoint of a running item: every `interval` until `done` is cancelled.
pub fn spawn_checkpoints(
    persistence: Arc<Persistence>,
    state: Persisted,
    root: std::path::PathBuf,
    exclude: Vec<String>,
    writer: String,
    done: tokio_util::sync::CancellationToken,
    metrics: Arc<Metrics>,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = persistence.config().checkpoint_interval;
    if interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = done.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            snapshot(
                &persistence,
                &state,
                &root,
                &exclude,
                &writer,
                "checkpoint",
                &metrics,
            )
            .await;
        }
    }))
}

/// The TTL sweep: at start and hourly, at most 1,000 sessions looked at per round, each round
/// going on from where the previous one stopped (every session is reached in turn).
pub fn spawn_sweep(persistence: Arc<Persistence>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match persistence.sweep(1000).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "expired session snapshots deleted"),
                Err(e) => tracing::warn!(error = %e, "snapshot TTL sweep failed"),
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
}

/// Workspace-relative paths of the installed skills (not saved by a checkpoint).
pub fn skill_excludes(skills: Option<&wasm_sandbox_skills::SkillsManager>) -> Vec<String> {
    skills
        .map(|m| {
            m.installed()
                .iter()
                .map(|s| format!("skills/{}", s.dir_name))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `fut` to its end, unless `force` (the forced shutdown) fires before or during it: then
/// it gets at most `bound` more and is dropped, logged, returning `None`. Used for the wait on
/// a running checkpoint and for the final snapshot, so a forced shutdown is never held up by a
/// slow store; a save cut off commits nothing (the manifest is the commit point) and the
/// previous generation, the last checkpoint, stays.
pub async fn bounded_by_force<F: std::future::Future>(
    fut: F,
    force: &tokio_util::sync::CancellationToken,
    bound: Duration,
    what: &'static str,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    tokio::select! {
        biased;
        out = &mut fut => return Some(out),
        () = force.cancelled() => {}
    }
    match tokio::time::timeout(bound, fut).await {
        Ok(out) => Some(out),
        Err(_) => {
            tracing::warn!(
                what,
                bound_s = bound.as_secs_f64(),
                "forced shutdown: the save was cut off; the session's previous snapshot stays"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_forced_shutdown_bounds_a_save() {
        let force = tokio_util::sync::CancellationToken::new();
        let bound = Duration::from_millis(200);
        // Not forced: a save longer than the bound runs to its end.
        let slow = tokio::time::sleep(Duration::from_millis(400));
        assert!(
            bounded_by_force(slow, &force, bound, "t").await.is_some(),
            "without a forced shutdown nothing is cut off"
        );
        // Forced during the save: at most `bound` more, then cut off.
        let start = std::time::Instant::now();
        let f2 = force.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            f2.cancel();
        });
        let never = std::future::pending::<()>();
        assert!(bounded_by_force(never, &force, bound, "t").await.is_none());
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        // Forced before: a quick save still finishes within the bound.
        let quick = tokio::time::sleep(Duration::from_millis(20));
        assert!(bounded_by_force(quick, &force, bound, "t").await.is_some());
    }
}
