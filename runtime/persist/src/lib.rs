//! A session's workspace survives between its work items, on any replica.
//!
//! A work item covers one burst of session activity; the next item of the same session may be
//! claimed by any worker. With `[runtime.persistence]` set, the worker saves the session's
//! writable directories (`/workspace` and `/mnt/session/outputs`; not skills, not memory
//! stores) to a store when an item ends and as periodic checkpoints, and restores them at the
//! next claim, before the first tool call.
//!
//! - Format ([`manifest`]): a manifest per generation plus content-addressed objects (small
//!   files packed, large files chunked); unchanged content is not uploaded again.
//! - Saving ([`walk`]) and restoring ([`restore`]) follow the hostile-tree rules: no link is
//!   ever followed, no FIFO opened, limits checked before anything is written, set-id bits
//!   dropped, every write relative to a directory descriptor.
//! - Store ([`store`]): `file:///dir` or `s3://bucket/prefix` through `object_store`; the
//!   generation counter is a create-only put (the CAS), the manifest the commit point;
//!   optional ChaCha20-Poly1305 sealing with a key from the environment.
//! - A snapshot that cannot be read or verified is never half-restored: the directories are
//!   emptied and [`RESTORE_NOTE`] explains what was lost.
//! - **A good snapshot is never thrown away because a restore failed.** Only a snapshot proven
//!   damaged ([`Error::Corrupt`]: a checksum, format or authentication failure) is superseded
//!   by the item's next save. Any other failure (the store unreachable or failing, a full disk,
//!   a limit lowered since it was saved, a missing or changed key) says nothing about the stored
//!   generation, so the item's saves are skipped ([`SessionState::skip_saves`], logged and
//!   counted as [`Stats::snapshots_skipped`]) and the next item tries the restore again: an
//!   item that started empty never overwrites the good generation with its empty workspace.
//!
//! The entry points are [`Persistence::restore`], [`Persistence::snapshot`],
//! [`Persistence::delete_session`], [`Persistence::list`] and [`Persistence::sweep`].

#![deny(missing_docs)]

pub mod config;
pub mod manifest;
pub mod restore;
mod save;
pub mod store;
pub mod walk;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt as _;

pub use config::PersistenceConfig;
pub use manifest::{Manifest, Root};
pub use restore::RestoreStats;
pub use store::{GenerationInfo, Store, valid_session_id};
pub use walk::WalkStats;

/// The note left in `/workspace` when a snapshot could not be restored.
pub const RESTORE_NOTE: &str = ".wasm-sandbox-restore-failed.txt";

/// How many generations are kept (the newest and the one before: a reader that listed just
/// before a write can still read what it listed).
pub(crate) const KEEP_GENERATIONS: usize = 2;
/// Objects younger than this are never collected: a writer still uploading blobs for a manifest
/// it has not committed yet is not robbed of them.
pub(crate) const GC_GRACE: Duration = Duration::from_secs(3600);

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error("persistence configuration: {0}")]
    Config(String),
    /// The store failed.
    #[error("snapshot store: {0}")]
    Store(#[source] object_store::Error),
    /// A local filesystem operation failed.
    #[error("snapshot I/O: {0}")]
    Io(#[source] std::io::Error),
    /// A snapshot is damaged or tampered with (a checksum, format or authentication failure):
    /// the only restore failure after which the next save may supersede it.
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
    /// A snapshot is sealed with another key, or sealed while no key is configured, or not
    /// sealed while one is (a key added or changed): the snapshot may be fine.
    #[error("snapshot key: {0}")]
    Key(String),
    /// This item does not save: its restore failed for a reason that does not prove the stored
    /// snapshot bad, so saving its (empty) workspace would overwrite a good generation.
    #[error("saves of this item are skipped: {0}")]
    Skipped(String),
    /// Over `max_size` / `max_entries` / the depth bound.
    #[error("snapshot over its limits: {0}")]
    TooLarge(String),
    /// Another writer committed this generation first (the CAS); this snapshot was dropped.
    #[error("generation {0} was written by another item first; this snapshot was dropped")]
    Conflict(u64),
    /// Bad input (a session id that cannot be a store path).
    #[error("{0}")]
    Invalid(String),
}

/// Counters, for the worker's metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Snapshots committed.
    pub snapshots_ok: AtomicU64,
    /// Snapshots dropped: over a limit.
    pub snapshots_too_large: AtomicU64,
    /// Snapshots dropped: lost the generation CAS.
    pub snapshots_conflict: AtomicU64,
    /// Snapshots failed otherwise (store, I/O).
    pub snapshots_failed: AtomicU64,
    /// Snapshots not attempted: the item's restore failed without proving the stored snapshot
    /// bad ([`SessionState::skip_saves`]).
    pub snapshots_skipped: AtomicU64,
    /// Restores that wrote a snapshot.
    pub restores_ok: AtomicU64,
    /// Restores that found nothing to restore.
    pub restores_empty: AtomicU64,
    /// Restores that failed (the session started empty with the note).
    pub restores_failed: AtomicU64,
}

/// What the worker keeps about a session between its snapshots within one item.
#[derive(Clone, Debug)]
pub struct SessionState {
    /// The session.
    pub session_id: String,
    /// The generation this item's tree is based on (restored or last written); `None`: none.
    pub base: Option<u64>,
    /// That generation's manifest, when it was read (reuse of its objects).
    pub prev: Option<Arc<Manifest>>,
    /// Lost a CAS: another item owns the session's snapshots now; no more writes.
    pub superseded: bool,
    /// Why this item must not save (its restore failed, but the stored generation may be
    /// good: see the crate docs); `None`: it may.
    pub skip_saves: Option<String>,
    /// What the last walk learnt about unchanged files (see [`walk::FileCache`]).
    pub files: Arc<walk::FileCache>,
}

impl SessionState {
    /// The state of a session with nothing stored yet.
    pub fn new(session_id: impl Into<String>) -> SessionState {
        SessionState {
            session_id: session_id.into(),
            base: None,
            prev: None,
            superseded: false,
            skip_saves: None,
            files: Arc::default(),
        }
    }
}

/// How a restore went.
#[derive(Debug)]
pub enum RestoreOutcome {
    /// Nothing stored for the session.
    Empty,
    /// Generation restored.
    Restored {
        /// Its number.
        generation: u64,
        /// What was written.
        stats: RestoreStats,
    },
    /// Could not be restored; the directories were emptied and the note written.
    Failed(Error),
}

/// What a snapshot did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotOutcome {
    /// The generation written.
    pub generation: u64,
    /// Walk and upload numbers.
    pub stats: WalkStats,
}

/// One stored generation, for `wasm-sandbox snapshots list`.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    /// The session.
    pub session_id: String,
    /// Its generations, oldest first.
    pub generations: Vec<GenerationInfo>,
}

/// A store plus the limits: what the worker holds.
#[derive(Debug)]
pub struct Persistence {
    store: Store,
    cfg: PersistenceConfig,
    stats: Stats,
    /// The TTL sweep's position: the last session looked at (rounds go on from there).
    sweep_cursor: std::sync::Mutex<Option<String>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Persistence {
    /// Opens the configured store.
    pub fn open(cfg: &PersistenceConfig) -> Result<Persistence, Error> {
        Ok(Persistence::with_store(Store::open(cfg)?, cfg))
    }

    /// Opens the configured store without creating a missing `file://` directory: `Ok(None)`
    /// then (nothing stored). For operators' read-only commands.
    pub fn open_existing(cfg: &PersistenceConfig) -> Result<Option<Persistence>, Error> {
        Ok(Store::open_existing(cfg)?.map(|s| Persistence::with_store(s, cfg)))
    }

    fn with_store(store: Store, cfg: &PersistenceConfig) -> Persistence {
        Persistence {
            store,
            cfg: cfg.clone(),
            stats: Stats::default(),
            sweep_cursor: std::sync::Mutex::new(None),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PersistenceConfig {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Restores the newest generation of `session_id` into `workspace` and `outputs` (which
    /// must be empty). Never fails: a snapshot that cannot be restored leaves both directories
    /// empty and [`RESTORE_NOTE`] in `workspace` ([`RestoreOutcome::Failed`]).
    pub async fn restore(
        &self,
        session_id: &str,
        workspace: &Path,
        outputs: &Path,
    ) -> (SessionState, RestoreOutcome) {
        let mut state = SessionState::new(session_id);
        let latest = match self.store.generations(session_id).await {
            Ok(g) => g.last().map(|g| g.generation),
            Err(e) => {
                // The store could not be listed: we cannot know the base, so this item must not
                // write (it could only overwrite what it never saw).
                state.skip_saves = Some(format!("the store could not be listed: {e}"));
                self.stats.restores_failed.fetch_add(1, Ordering::Relaxed);
                self.fail(workspace, outputs, &e).await;
                return (state, RestoreOutcome::Failed(e));
            }
        };
        let Some(generation) = latest else {
            self.stats.restores_empty.fetch_add(1, Ordering::Relaxed);
            return (state, RestoreOutcome::Empty);
        };
        state.base = Some(generation);
        match self
            .restore_generation(session_id, generation, workspace, outputs)
            .await
        {
            Ok((m, stats, cache)) => {
                state.prev = Some(Arc::new(m));
                state.files = Arc::new(cache);
                self.stats.restores_ok.fetch_add(1, Ordering::Relaxed);
                (state, RestoreOutcome::Restored { generation, stats })
            }
            Err(e) => {
                // Only a snapshot proven damaged is superseded by this item's next save; after
                // any other failure the stored generation may be good: keep it.
                if !matches!(e, Error::Corrupt(_)) {
                    state.skip_saves = Some(format!(
                        "generation {generation} could not be restored ({e}); it is kept"
                    ));
                }
                self.stats.restores_failed.fetch_add(1, Ordering::Relaxed);
                self.fail(workspace, outputs, &e).await;
                (state, RestoreOutcome::Failed(e))
            }
        }
    }

    async fn restore_generation(
        &self,
        session_id: &str,
        generation: u64,
        workspace: &Path,
        outputs: &Path,
    ) -> Result<(Manifest, RestoreStats, walk::FileCache), Error> {
        let cap = manifest::manifest_cap(self.cfg.max_bytes, self.cfg.max_entries);
        let data = self.store.get_manifest(session_id, generation, cap).await?;
        let m = Manifest::decode(&data)?;
        if m.session_id != session_id || m.generation != generation {
            return Err(Error::Corrupt(
                "the manifest names another session or generation".to_owned(),
            ));
        }
        let paths = restore::validate(&m, self.cfg.max_bytes, self.cfg.max_entries)?;
        // Objects in first-use order, fetched 8 at a time ahead of the writer.
        // (validated: every piece's object is listed, no bigger than a walk makes, and all of
        // them together within the fetch cap).
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for e in &m.entries {
            if let manifest::Kind::File { pieces, .. } = &e.kind {
                for p in pieces {
                    if seen.insert(p.o.clone()) {
                        order.push((p.o.clone(), m.objects[&p.o].len));
                    }
                }
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Result<Bytes, Error>)>(8);
        let store = self.store.clone();
        let sid = session_id.to_owned();
        let prefetch = tokio::spawn(async move {
            let mut s = futures::stream::iter(order)
                .map(|(name, len)| {
                    let store = store.clone();
                    let sid = sid.clone();
                    async move {
                        let r = store.get_object(&sid, &name, len).await;
                        (name, r)
                    }
                })
                .buffered(8);
            while let Some(item) = s.next().await {
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        let ws = workspace.to_owned();
        let out = outputs.to_owned();
        let written = tokio::task::spawn_blocking(move || {
            let mut fetch = |name: &str| -> Result<Bytes, Error> {
                match rx.blocking_recv() {
                    Some((n, r)) if n == name => r,
                    // Internal faults, not evidence against the snapshot.
                    Some((n, _)) => Err(Error::Io(std::io::Error::other(format!(
                        "object order mismatch ({n} for {name})"
                    )))),
                    None => Err(Error::Io(std::io::Error::other(
                        "the object prefetch ended early",
                    ))),
                }
            };
            let roots = [
                (Root::Workspace, ws.as_path()),
                (Root::Outputs, out.as_path()),
            ];
            let mut cache = walk::FileCache::default();
            let stats = restore::write(&m, &paths, &roots, &mut fetch, &mut cache)?;
            // The session can write from now on (racy-clean rule, see `walk::FileCache`).
            cache.retain_settled(SystemTime::now());
            Ok((m, stats, cache))
        })
        .await;
        prefetch.abort();
        written.map_err(|e| Error::Io(std::io::Error::other(e)))?
    }

    /// Empties both directories and leaves the note.
    async fn fail(&self, workspace: &Path, outputs: &Path, e: &Error) {
        tracing::error!(error = %e, "snapshot restore failed; the session starts with an empty workspace");
        let ws = workspace.to_owned();
        let out = outputs.to_owned();
        let what = if matches!(e, Error::Corrupt(_)) {
            "What was lost: the files saved at the end of the previous work item (or its last \
             checkpoint); the damaged snapshot is replaced by what this work item saves."
        } else {
            "The saved snapshot is kept in the store and the restore is tried again at the next \
             work item; files written during this work item are NOT saved."
        };
        let note = format!(
            "wasm-sandbox could not restore this session's saved workspace, so /workspace and \
             /mnt/session/outputs start empty.\n{what}\nWhy: {e}\n"
        );
        let done = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            wasm_sandbox_fs::tree::clear_dir(&ws)?;
            wasm_sandbox_fs::tree::clear_dir(&out)?;
            let dir = rustix::fs::open(ws.as_path(), walk::DIR_FLAGS, rustix::fs::Mode::empty())?;
            let fd = rustix::fs::openat(
                &dir,
                RESTORE_NOTE,
                rustix::fs::OFlags::WRONLY
                    | rustix::fs::OFlags::CREATE
                    | rustix::fs::OFlags::EXCL
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o644),
            )?;
            std::io::Write::write_all(&mut std::fs::File::from(fd), note.as_bytes())
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not empty the workspace after a failed restore")
            }
            Err(e) => tracing::error!(error = %e, "restore clean-up task failed"),
        }
    }

    /// Deletes every snapshot of a session (terminated, deleted or archived). Returns how many
    /// objects went.
    pub async fn delete_session(&self, session_id: &str) -> Result<usize, Error> {
        self.store.delete_session(session_id).await
    }

    /// The stored generations of one session, or of every session.
    pub async fn list(&self, session_id: Option<&str>) -> Result<Vec<SnapshotInfo>, Error> {
        let ids = match session_id {
            Some(s) => vec![s.to_owned()],
            None => self.store.sessions().await?,
        };
        let mut out = Vec::new();
        for id in ids {
            let generations = self.store.generations(&id).await?;
            if !generations.is_empty() || session_id.is_some() {
                out.push(SnapshotInfo {
                    session_id: id,
                    generations,
                });
            }
        }
        Ok(out)
    }

    /// The TTL sweep: deletes sessions whose newest generation is older than `ttl`. Looks at
    /// `max_sessions` sessions per call, going on from where the previous call stopped (in
    /// session-id order, wrapping around), so every session is reached in turn however many
    /// the store holds. Returns how many sessions were deleted.
    pub async fn sweep(&self, max_sessions: usize) -> Result<usize, Error> {
        let now = SystemTime::now();
        let all = self.store.sessions().await?;
        let cursor = self
            .sweep_cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let start = cursor.map_or(0, |c| all.partition_point(|s| *s <= c));
        let round: Vec<String> = all[start..]
            .iter()
            .chain(&all[..start])
            .take(max_sessions)
            .cloned()
            .collect();
        let mut deleted = 0;
        for id in round {
            *self
                .sweep_cursor
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(id.clone());
            let gens = self.store.generations(&id).await?;
            let newest = gens.iter().map(|g| g.last_modified).max();
            let expired = match newest {
                Some(t) => now.duration_since(t).is_ok_and(|age| age > self.cfg.ttl),
                // Objects without any manifest: an abandoned first write; expire by the TTL too.
                None => self
                    .store
                    .objects(&id)
                    .await?
                    .iter()
                    .map(|o| SystemTime::from(o.last_modified))
                    .max()
                    // Nothing at all (an emptied folder): nothing to delete.
                    .is_some_and(|t| now.duration_since(t).is_ok_and(|age| age > self.cfg.ttl)),
            };
            if expired {
                self.store.delete_session(&id).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// A `Stream` over a tokio receiver (without the `tokio-stream` crate).
fn tokio_stream_compat<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// The host directories of a session rooted at `root`: `(<root>/workspace, <root>/outputs)`.
pub fn session_dirs(root: &Path) -> (PathBuf, PathBuf) {
    (root.join("workspace"), root.join("outputs"))
}
