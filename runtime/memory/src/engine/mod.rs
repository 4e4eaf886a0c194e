//! The sync engine: `SessionMemoryStores`' per-store merge, generic over the I/O.
//!
//! The engine owns the decisions; the caller supplies two small I/O surfaces:
//! [`MemoryFolder`] (the store's directory; [`super::folder::CapStdFolder`] implements it) and
//! [`MemoryApi`] (the memory endpoints, implemented by the worker over HTTP with the sessions
//! token). Each store keeps a [`StoreSyncState`]. Per store, per path, three SHA-256s meet:
//! local (the file), remote (the listing) and baseline (as of the last download or sync):
//!
//! | local vs base | remote vs base | action |
//! |---|---|---|
//! | same | changed | pull (fetch + write), ≤ 16 at a time after the pass |
//! | changed | same | upload: update with a `content_sha256` precondition, or create |
//! | changed | changed | keep the remote (pull), warn; equal shas adopt without a fetch |
//! | missing | same | server delete, after 30 s missing, a fresh re-check and the cap |
//! | missing | changed | restore the remote (pull) |
//! | same | gone | remove the local file (if it still holds the baseline bytes) |
//! | changed | gone | re-create it on the server (writable) or keep it unsynced (read-only) |
//!
//! plus: a file the server refused (400/413) or the store would not read (over
//! [`MAX_MEMORY_BYTES`], not a regular file, not UTF-8) is retried only after it changes — an
//! over-size file is never read at all, so one session cannot make the worker hold its
//! gigabytes (the reference reads it whole and lets the server answer 413); uploads hold at
//! most [`UPLOAD_BYTES_IN_FLIGHT`] bytes of content across the process; an upload whose
//! response never came is settled against the next listing; read-only stores pull but never
//! push or delete; a folder whose marker is missing or foreign while files remain is left
//! alone; a folder (or marker) gone with no files, or all of two or more files gone at once,
//! is re-downloaded rather than propagated as deletes.
//!
//! [`sync_store`] and [`flush_store`] never fail: a failure is logged and reported in the
//! returned report, as the reference logs and continues. [`download_store`] fails, and the
//! worker fails the work item, as `SessionMemoryError` does.
//!
//! One deliberate simplification: the reference records an upload's sha *before* the request,
//! so an upload cancelled mid-flight (the final sync's 30 s bound) is still settled by a later
//! listing; here it is recorded when the attempt returns. The only pass that can follow a
//! cancelled final sync is the flush, which re-lists and compares shas itself, so the outcome
//! is the same.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::{
    DELETE_CORROBORATION, DeleteMode, FETCH_CONCURRENCY, MARKER_PATH, MAX_MEMORY_BYTES,
    UPLOAD_BYTES_IN_FLIGHT, UPLOAD_CONCURRENCY, delete_cap, marker_contents, marker_sha,
    sha256_hex,
};

mod pass;
mod upload;

use pass::sync_pass;
pub(crate) use upload::over_cap;
use upload::{apply_upload, attempt_upload};

/// A memory as listed (`view=basic`: `content` is `None`) or fetched (`view=full`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteMemory {
    /// `mem_…`.
    pub id: String,
    /// The wire path, starting with `/`.
    pub path: String,
    /// Lowercase hex SHA-256 of the content.
    pub content_sha256: String,
    /// The content, in the full view.
    pub content: Option<String>,
}

impl RemoteMemory {
    /// The path relative to the store folder (leading `/`s stripped).
    pub fn rel(&self) -> &str {
        self.path.trim_start_matches('/')
    }
}

/// A failed memory API call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", .status.map(|s| format!("HTTP {s}: ")).unwrap_or_default())]
pub struct RemoteError {
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// What went wrong.
    pub message: String,
}

/// The result of reading a store file for upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalRead {
    /// No such file.
    Missing,
    /// The store will not read it: a symlink, a non-regular file, or over
    /// [`MAX_MEMORY_BYTES`] (the reason).
    Refused(String),
    /// The file's bytes, at most [`MAX_MEMORY_BYTES`].
    Data(Vec<u8>),
}

/// The store's folder on disk, addressed by `/`-separated paths relative to its root.
pub trait MemoryFolder: Sync {
    /// `{rel_path: sha256}` of every regular file (the marker included); an absent folder is
    /// empty. Symlinks and other non-regular entries are skipped, never followed. A file over
    /// [`MAX_MEMORY_BYTES`] may be given a stand-in that is not a SHA-256 (it changes when the
    /// file does, and never equals a real digest), so it is never read to be hashed.
    fn scan(&self) -> impl Future<Output = io::Result<BTreeMap<String, String>>> + Send;
    /// One file's sha256 (or the stand-in of [`MemoryFolder::scan`]); `None` when absent; an
    /// error for a symlink or non-regular file.
    fn hash_file(&self, rel: &str) -> impl Future<Output = io::Result<Option<String>>> + Send;
    /// Reads one file for upload: never more than [`MAX_MEMORY_BYTES`] (a larger file is
    /// [`LocalRead::Refused`], decided before reading), never blocking on a FIFO.
    fn read_file(&self, rel: &str) -> impl Future<Output = io::Result<LocalRead>> + Send;
    /// Writes one file atomically, creating directories below the root but never the root.
    fn write_file(&self, rel: &str, content: &str) -> impl Future<Output = io::Result<()>> + Send;
    /// Removes one file; absent is fine.
    fn remove_file(&self, rel: &str) -> impl Future<Output = io::Result<()>> + Send;
    /// Creates the root (and missing ancestors); existing is fine.
    fn create_root(&self) -> impl Future<Output = io::Result<()>> + Send;
}

/// The memory endpoints of one store (`/v1/memory_stores/{id}/memories`).
pub trait MemoryApi: Sync {
    /// Every memory of the store (all pages; `memory_prefix` items dropped). `full` selects
    /// `view=full` (content included, 20 per page) over `view=basic` (100 per page).
    fn list(
        &self,
        full: bool,
    ) -> impl Future<Output = Result<Vec<RemoteMemory>, RemoteError>> + Send;
    /// `GET …/memories/{id}?view=full`.
    fn fetch(
        &self,
        memory_id: &str,
    ) -> impl Future<Output = Result<RemoteMemory, RemoteError>> + Send;
    /// `POST …/memories` with `{"path": path, "content": content}`; returns the new sha.
    fn create(
        &self,
        path: &str,
        content: &str,
    ) -> impl Future<Output = Result<String, RemoteError>> + Send;
    /// `POST …/memories/{id}` with a `content_sha256` precondition; returns the new sha.
    fn update(
        &self,
        memory_id: &str,
        content: &str,
        precondition_sha: &str,
    ) -> impl Future<Output = Result<String, RemoteError>> + Send;
    /// `DELETE …/memories/{id}?expected_content_sha256=…`.
    fn delete(
        &self,
        memory_id: &str,
        expected_sha: &str,
    ) -> impl Future<Output = Result<(), RemoteError>> + Send;
}

/// One attached store's sync bookkeeping.
#[derive(Clone, Debug)]
pub struct StoreSyncState {
    memory_store_id: String,
    read_only: bool,
    baseline: BTreeMap<String, String>,
    refused: BTreeMap<String, String>,
    pending_deletes: BTreeMap<String, Instant>,
    sent: BTreeMap<String, String>,
}

impl StoreSyncState {
    /// A fresh state for a store (`access: "read_only"` ⇒ `read_only`).
    pub fn new(memory_store_id: impl Into<String>, read_only: bool) -> Self {
        Self {
            memory_store_id: memory_store_id.into(),
            read_only,
            baseline: BTreeMap::new(),
            refused: BTreeMap::new(),
            pending_deletes: BTreeMap::new(),
            sent: BTreeMap::new(),
        }
    }

    /// The store id.
    pub fn memory_store_id(&self) -> &str {
        &self.memory_store_id
    }

    /// Whether the store is attached read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// `{rel_path: sha}` as of the last download or successful sync.
    pub fn baseline(&self) -> &BTreeMap<String, String> {
        &self.baseline
    }

    /// `{rel_path: sha}` the server refused; retried only after the file changes.
    pub fn refused(&self) -> &BTreeMap<String, String> {
        &self.refused
    }

    /// Paths seen missing locally, with when they were first seen missing.
    pub fn pending_deletes(&self) -> &BTreeMap<String, Instant> {
        &self.pending_deletes
    }
}

/// Options of one sync pass.
#[derive(Clone, Copy, Debug)]
pub struct SyncOptions {
    /// The delete mode.
    pub mode: DeleteMode,
    /// The session's last sync: server deletes skip the waiting window (the cap still applies).
    pub final_pass: bool,
    /// The pass's clock.
    pub now: Instant,
}

/// How a sync pass ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The merge ran.
    #[default]
    Synced,
    /// The marker is missing or foreign while files remain: nothing was done (the reason).
    Distrusted(String),
    /// The folder was rebuilt from the server (the reason).
    Recovered(String),
    /// The pass failed part-way (the error); it was logged.
    Failed(String),
}

/// What one sync pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// How it ended.
    pub outcome: SyncOutcome,
    /// Paths uploaded successfully.
    pub uploaded: Vec<String>,
    /// Paths pulled (fetched and written) successfully.
    pub pulled: Vec<String>,
    /// Paths whose server memory was deleted (or already gone).
    pub deleted_remote: Vec<String>,
    /// Paths removed locally because the server deleted them.
    pub removed_local: Vec<String>,
    /// Deletes that `log_only` would have sent.
    pub would_delete: Vec<String>,
    /// Deletes held back by the cap.
    pub delete_capped: usize,
    /// Deletes suppressed by `disabled`.
    pub delete_suppressed: usize,
    /// Paths the store would not read for upload (over [`MAX_MEMORY_BYTES`], not a regular
    /// file, not UTF-8); retried only after they change.
    pub refused_local: Vec<String>,
}

/// What a flush did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Paths uploaded successfully.
    pub uploaded: Vec<String>,
    /// Changed paths left alone (both sides changed, or the upload failed).
    pub not_uploaded: Vec<String>,
    /// Why nothing was uploaded, when the folder was distrusted or listing failed.
    pub skipped_reason: Option<String>,
    /// Paths the store would not read for upload (over [`MAX_MEMORY_BYTES`], not a regular
    /// file, not UTF-8); also listed in `not_uploaded`.
    pub refused_local: Vec<String>,
}

/// A fatal download failure (the worker fails the work item).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// Writing the marker failed.
    #[error(
        "failed to download memory store memory_store_id={memory_store_id}: writing the marker: {source}"
    )]
    Marker {
        /// The store.
        memory_store_id: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Listing the memories failed.
    #[error("failed to download memory store memory_store_id={memory_store_id}: {source}")]
    List {
        /// The store.
        memory_store_id: String,
        /// The underlying error.
        #[source]
        source: RemoteError,
    },
}

#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Download(#[from] DownloadError),
}

struct MarkerScan {
    files: BTreeMap<String, String>,
    distrust_reason: Option<&'static str>,
}

async fn scan_marker(state: &StoreSyncState, folder: &impl MemoryFolder) -> io::Result<MarkerScan> {
    let mut files = folder.scan().await?;
    let marker = files.remove(MARKER_PATH);
    let distrust_reason = match marker {
        Some(sha) if sha == marker_sha(&state.memory_store_id) => None,
        Some(_) => Some("the marker file does not match this store"),
        None => Some("the marker file is gone"),
    };
    Ok(MarkerScan {
        files,
        distrust_reason,
    })
}

async fn list_remote(
    state: &StoreSyncState,
    api: &impl MemoryApi,
    full: bool,
) -> Result<Vec<RemoteMemory>, RemoteError> {
    let items = api.list(full).await?;
    Ok(items
        .into_iter()
        .filter(|item| {
            let reserved = item.rel() == MARKER_PATH;
            if reserved {
                tracing::warn!(
                    path = %item.path,
                    memory_store_id = %state.memory_store_id,
                    "the server listed the reserved marker path; skipping"
                );
            }
            !reserved
        })
        .collect())
}

/// Writes the marker, then pulls every memory (full view); pushes nothing. The baseline is
/// rebuilt from successful writes only. Returns how many memories were written.
async fn stamp_and_pull(
    state: &mut StoreSyncState,
    folder: &impl MemoryFolder,
    api: &impl MemoryApi,
) -> Result<usize, DownloadError> {
    state.baseline.clear();
    state.sent.clear();
    state.pending_deletes.clear();
    folder
        .write_file(MARKER_PATH, &marker_contents(&state.memory_store_id))
        .await
        .map_err(|source| DownloadError::Marker {
            memory_store_id: state.memory_store_id.clone(),
            source,
        })?;
    let items = list_remote(state, api, true)
        .await
        .map_err(|source| DownloadError::List {
            memory_store_id: state.memory_store_id.clone(),
            source,
        })?;
    for item in items {
        let rel = item.rel().to_owned();
        if write_local(state, folder, &rel, item.content.as_deref().unwrap_or("")).await {
            state.baseline.insert(rel, item.content_sha256);
        }
    }
    Ok(state.baseline.len())
}

async fn write_local(
    state: &StoreSyncState,
    folder: &impl MemoryFolder,
    rel: &str,
    content: &str,
) -> bool {
    match folder.write_file(rel, content).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = rel, memory_store_id = %state.memory_store_id, "failed to write memory: {e}");
            false
        }
    }
}

/// Downloads a store into its (already created, empty) folder: marker, then every memory.
/// The caller checked that nothing existed at the path and created the root; on error it
/// removes what it created and fails the item.
pub async fn download_store(
    state: &mut StoreSyncState,
    folder: &impl MemoryFolder,
    api: &impl MemoryApi,
) -> Result<usize, DownloadError> {
    let n = stamp_and_pull(state, folder, api).await?;
    tracing::info!(memory_store_id = %state.memory_store_id, "downloaded {n} memories");
    Ok(n)
}

async fn recover(
    state: &mut StoreSyncState,
    folder: &impl MemoryFolder,
    api: &impl MemoryApi,
    reason: &str,
) -> Result<(), PassError> {
    tracing::warn!(
        memory_store_id = %state.memory_store_id,
        "{reason}; re-downloading the memory store folder instead of syncing"
    );
    folder.create_root().await?;
    stamp_and_pull(state, folder, api).await?;
    Ok(())
}

/// Uploads whose response never arrived: a memory now holding exactly the sent sha is that
/// upload, saved after all. Every record is dropped after one listing.
fn settle_sent(state: &mut StoreSyncState, remote: &BTreeMap<String, RemoteMemory>) {
    for (rel, sha) in std::mem::take(&mut state.sent) {
        if remote.get(&rel).is_some_and(|m| m.content_sha256 == sha) {
            state.baseline.insert(rel, sha);
        }
    }
}

/// One sync of one store (`_sync_store`). Never fails: errors are logged and reported as
/// [`SyncOutcome::Failed`]. Run after each tool call when [`super::SyncSchedule`] says it is
/// due (all stores in parallel), and once with `final_pass` at a clean end, bounded by
/// [`super::FLUSH_TIMEOUT`].
pub async fn sync_store(
    state: &mut StoreSyncState,
    folder: &impl MemoryFolder,
    api: &impl MemoryApi,
    opts: SyncOptions,
) -> SyncReport {
    let mut report = SyncReport::default();
    if let Err(e) = sync_pass(state, folder, api, opts, &mut report).await {
        tracing::warn!(memory_store_id = %state.memory_store_id, "memory sync failed: {e}");
        report.outcome = SyncOutcome::Failed(e.to_string());
    }
    report
}

/// The push-only rescue pass at every session end (`_flush_store`): uploads new and changed
/// files ([`UPLOAD_CONCURRENCY`] at a time), sends no deletes, pulls nothing. Skips read-only
/// stores, refused files, files the server already holds, paths changed on both sides, and
/// folders that fail the marker check. Never fails. Bound it with [`super::FLUSH_TIMEOUT`];
/// results are applied as each upload completes, so a cut-off flush leaves a consistent state.
pub async fn flush_store(
    state: &mut StoreSyncState,
    folder: &impl MemoryFolder,
    api: &impl MemoryApi,
) -> FlushReport {
    let mut report = FlushReport::default();
    if state.read_only {
        return report;
    }
    let scan = match scan_marker(state, folder).await {
        Ok(scan) => scan,
        Err(e) => {
            tracing::warn!(memory_store_id = %state.memory_store_id, "memory flush failed: {e}");
            report.skipped_reason = Some(e.to_string());
            return report;
        }
    };
    if let Some(reason) = scan.distrust_reason {
        tracing::warn!(
            memory_store_id = %state.memory_store_id,
            "{reason}; not uploading anything from the memory store folder"
        );
        report.skipped_reason = Some(reason.to_owned());
        return report;
    }
    // A path with an unsettled send counts even at its baseline sha.
    let dirty: BTreeMap<String, String> = scan
        .files
        .into_iter()
        .filter(|(rel, sha)| {
            (state.baseline.get(rel) != Some(sha) || state.sent.contains_key(rel))
                && state.refused.get(rel) != Some(sha)
        })
        .collect();
    if dirty.is_empty() {
        return report;
    }
    let remote: BTreeMap<String, RemoteMemory> = match list_remote(state, api, false).await {
        Ok(items) => items.into_iter().map(|m| (m.rel().to_owned(), m)).collect(),
        Err(e) => {
            tracing::warn!(memory_store_id = %state.memory_store_id, "memory flush failed: {e}");
            report.skipped_reason = Some(e.to_string());
            report.not_uploaded = dirty.into_keys().collect();
            return report;
        }
    };
    settle_sent(state, &remote);
    let mut uploads = Vec::new();
    for (rel, local_sha) in dirty {
        let base_sha = state.baseline.get(&rel);
        let existing = remote.get(&rel);
        if Some(&local_sha) == base_sha {
            // Listed only for its unsettled send, which never landed.
            continue;
        }
        if let Some(existing) = existing {
            if existing.content_sha256 == local_sha {
                state.baseline.insert(rel, local_sha);
                continue;
            }
            if Some(&existing.content_sha256) != base_sha {
                tracing::warn!(
                    path = %rel,
                    memory_store_id = %state.memory_store_id,
                    "memory changed both locally and remotely; the flush leaves the remote version"
                );
                report.not_uploaded.push(rel);
                continue;
            }
        }
        uploads.push((rel, local_sha, existing.cloned()));
    }
    let mut results = futures::stream::iter(uploads)
        .map(|(rel, local_sha, existing)| async move {
            let attempt = attempt_upload(folder, api, &rel, existing.as_ref()).await;
            (rel, local_sha, attempt)
        })
        .buffer_unordered(UPLOAD_CONCURRENCY);
    while let Some((rel, local_sha, attempt)) = results.next().await {
        if attempt.refused_locally() {
            report.refused_local.push(rel.clone());
        }
        match apply_upload(state, &rel, Some(&local_sha), attempt) {
            Some(sha) => {
                state.baseline.insert(rel.clone(), sha);
                report.uploaded.push(rel);
            }
            None => report.not_uploaded.push(rel),
        }
    }
    report.uploaded.sort();
    report.not_uploaded.sort();
    report.refused_local.sort();
    report
}

/// Whether teardown may remove the store folder this session created (`dispose`): not when
/// its marker is missing or foreign while files remain (a sync promised to leave such a folder
/// as found, and the next download refuses it visibly). A scan error also keeps it.
pub async fn may_dispose(state: &StoreSyncState, folder: &impl MemoryFolder) -> bool {
    match scan_marker(state, folder).await {
        Ok(scan) => match scan.distrust_reason {
            Some(reason) if !scan.files.is_empty() => {
                tracing::warn!(
                    memory_store_id = %state.memory_store_id,
                    "{reason}; leaving the memory store folder on disk"
                );
                false
            }
            _ => true,
        },
        Err(e) => {
            tracing::warn!(memory_store_id = %state.memory_store_id, "failed to check the memory store folder: {e}");
            false
        }
    }
}
