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

use super::{
    DELETE_CORROBORATION, DeleteMode, FETCH_CONCURRENCY, MARKER_PATH, MAX_MEMORY_BYTES,
    UPLOAD_BYTES_IN_FLIGHT, UPLOAD_CONCURRENCY, delete_cap, marker_contents, marker_sha,
    sha256_hex,
};

/// The process-wide budget of file bytes held by uploads ([`UPLOAD_BYTES_IN_FLIGHT`]).
/// Process-wide, not per store: the bound must hold however many sessions and stores flush
/// at once, which is when a hostile session's files would otherwise add up.
static UPLOAD_BUDGET: Semaphore = Semaphore::const_new(UPLOAD_BYTES_IN_FLIGHT);

/// What one upload reserves before it reads: the most a read may return, plus the one byte
/// that tells a file which grew past the cap while being read.
const UPLOAD_RESERVATION: usize = MAX_MEMORY_BYTES as usize + 1;
// One reservation must fit the budget, or an upload would wait forever.
const _: () = assert!(UPLOAD_RESERVATION <= UPLOAD_BYTES_IN_FLIGHT);

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

/// Why an upload did not save.
#[derive(Debug)]
enum UploadFailure {
    /// The file is gone.
    LocalMissing,
    /// The store refused to read it (symlink, not a regular file, not UTF-8): permanent.
    LocalRefused(String),
    /// Reading it failed.
    LocalIo(io::Error),
    /// The server answered with an error.
    Remote(RemoteError),
}

struct UploadAttempt {
    sent_sha: Option<String>,
    had_existing: bool,
    outcome: Result<String, UploadFailure>,
}

impl UploadAttempt {
    fn refused_locally(&self) -> bool {
        matches!(self.outcome, Err(UploadFailure::LocalRefused(_)))
    }
}

/// Reads and sends one file; a 404 on an update (deleted remotely since the listing) retries
/// as a create. Touches no state.
async fn attempt_upload(
    folder: &impl MemoryFolder,
    api: &impl MemoryApi,
    rel: &str,
    existing: Option<&RemoteMemory>,
) -> UploadAttempt {
    let mut existing = existing;
    let mut sent_sha = None;
    loop {
        // Reserve the most a read may hold before reading; keep only what was read, until the
        // request is over (the body is built from it). The budget is never closed.
        let Ok(mut permit) = UPLOAD_BUDGET.acquire_many(UPLOAD_RESERVATION as u32).await else {
            return fail(
                sent_sha,
                existing,
                UploadFailure::LocalIo(io::Error::other("closed")),
            );
        };
        let data = match folder.read_file(rel).await {
            Ok(LocalRead::Data(data)) if data.len() as u64 > MAX_MEMORY_BYTES => {
                // A folder breaking its contract must not break the budget's arithmetic.
                return fail(sent_sha, existing, UploadFailure::LocalRefused(over_cap()));
            }
            Ok(LocalRead::Data(data)) => data,
            Ok(LocalRead::Missing) => return fail(sent_sha, existing, UploadFailure::LocalMissing),
            Ok(LocalRead::Refused(reason)) => {
                return fail(sent_sha, existing, UploadFailure::LocalRefused(reason));
            }
            Err(e) => return fail(sent_sha, existing, UploadFailure::LocalIo(e)),
        };
        drop(permit.split(UPLOAD_RESERVATION - data.len()));
        let Ok(text) = String::from_utf8(data) else {
            return fail(
                sent_sha,
                existing,
                UploadFailure::LocalRefused("is not valid utf-8".into()),
            );
        };
        sent_sha = Some(sha256_hex(text.as_bytes()));
        let result = match existing {
            None => api.create(&format!("/{rel}"), &text).await,
            Some(m) => api.update(&m.id, &text, &m.content_sha256).await,
        };
        match result {
            Ok(sha) => {
                return UploadAttempt {
                    sent_sha,
                    had_existing: existing.is_some(),
                    outcome: Ok(sha),
                };
            }
            Err(e) if existing.is_some() && e.status == Some(404) => existing = None,
            Err(e) => return fail(sent_sha, existing, UploadFailure::Remote(e)),
        }
        drop(permit);
    }

    fn fail(
        sent_sha: Option<String>,
        existing: Option<&RemoteMemory>,
        failure: UploadFailure,
    ) -> UploadAttempt {
        UploadAttempt {
            sent_sha,
            had_existing: existing.is_some(),
            outcome: Err(failure),
        }
    }
}

/// Why the store will not upload an over-size file (the wording of [`LocalRead::Refused`]).
pub(crate) fn over_cap() -> String {
    format!("is larger than {MAX_MEMORY_BYTES} bytes, the most a memory holds; not read")
}

/// Applies an upload attempt to the state; the new baseline sha on success.
fn apply_upload(
    state: &mut StoreSyncState,
    rel: &str,
    local_sha: Option<&str>,
    attempt: UploadAttempt,
) -> Option<String> {
    if let Some(sent) = attempt.sent_sha {
        state.sent.insert(rel.to_owned(), sent);
    }
    let id = state.memory_store_id.clone();
    match attempt.outcome {
        Ok(sha) => {
            state.refused.remove(rel);
            state.sent.remove(rel);
            Some(sha)
        }
        Err(UploadFailure::LocalMissing) => None,
        Err(UploadFailure::Remote(e)) if attempt.had_existing && e.status == Some(409) => {
            tracing::warn!(
                path = rel,
                memory_store_id = %id,
                "memory changed both locally and remotely; the upload was refused and the local edit loses"
            );
            None
        }
        Err(failure) => {
            let permanent = match &failure {
                UploadFailure::LocalRefused(_) => true,
                UploadFailure::Remote(e) => matches!(e.status, Some(400 | 413)),
                _ => false,
            };
            let detail = match &failure {
                UploadFailure::LocalRefused(reason) => format!("path {rel:?} {reason}"),
                UploadFailure::LocalIo(e) => e.to_string(),
                UploadFailure::Remote(e) => e.to_string(),
                UploadFailure::LocalMissing => String::new(),
            };
            let local = matches!(failure, UploadFailure::LocalRefused(_));
            match local_sha {
                Some(sha) if permanent && local => {
                    state.refused.insert(rel.to_owned(), sha.to_owned());
                    tracing::warn!(
                        path = rel,
                        memory_store_id = %id,
                        "skipping this memory file, so it stays un-synced until it changes: {detail}"
                    );
                }
                Some(sha) if permanent => {
                    state.refused.insert(rel.to_owned(), sha.to_owned());
                    tracing::warn!(
                        path = rel,
                        memory_store_id = %id,
                        "the server rejected this memory file, so it stays un-synced until its content changes: {detail}"
                    );
                }
                _ => {
                    tracing::warn!(path = rel, memory_store_id = %id, "failed to upload memory: {detail}")
                }
            }
            None
        }
    }
}

async fn upload(
    state: &mut StoreSyncState,
    folder: &impl MemoryFolder,
    api: &impl MemoryApi,
    rel: &str,
    local_sha: Option<&str>,
    existing: Option<&RemoteMemory>,
    report: &mut SyncReport,
) -> Option<String> {
    let attempt = attempt_upload(folder, api, rel, existing).await;
    if attempt.refused_locally() {
        report.refused_local.push(rel.to_owned());
    }
    let sha = apply_upload(state, rel, local_sha, attempt);
    if sha.is_some() {
        report.uploaded.push(rel.to_owned());
    }
    sha
}

/// Removes the file of a memory the server no longer has, if it still holds `expect_sha`.
/// `None`: gone from disk; `Some(expect_sha)`: keep in the baseline; other: edited since.
async fn remove_local(
    state: &StoreSyncState,
    folder: &impl MemoryFolder,
    rel: &str,
    expect_sha: &str,
) -> Option<String> {
    let fresh = match folder.hash_file(rel).await {
        Ok(fresh) => fresh?,
        Err(_) => return Some(expect_sha.to_owned()),
    };
    if fresh != expect_sha {
        return Some(fresh);
    }
    match folder.remove_file(rel).await {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!(
                path = rel,
                memory_store_id = %state.memory_store_id,
                "failed to remove memory deleted remotely: {e}"
            );
            Some(expect_sha.to_owned())
        }
    }
}

struct DeletePass {
    mode: DeleteMode,
    cap: usize,
    waive_window: bool,
    attempted: usize,
}

impl DeletePass {
    fn take_slot(&mut self, report: &mut SyncReport) -> bool {
        if self.attempted >= self.cap {
            report.delete_capped += 1;
            return false;
        }
        self.attempted += 1;
        true
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the reference's per-path signature"
)]
async fn sync_path(
    state: &mut StoreSyncState,
    folder: &impl MemoryFolder,
    api: &impl MemoryApi,
    rel: &str,
    remote: Option<&RemoteMemory>,
    local_sha: Option<&str>,
    pulls: &mut Vec<(String, RemoteMemory)>,
    report: &mut SyncReport,
) -> Option<String> {
    let id = state.memory_store_id.clone();
    let base_sha = state.baseline.get(rel).cloned();
    if local_sha.is_some() {
        state.pending_deletes.remove(rel);
    }

    let Some(remote) = remote else {
        let Some(mut local) = local_sha.map(str::to_owned) else {
            state.pending_deletes.remove(rel);
            return None;
        };
        if let Some(base) = &base_sha {
            if local == *base {
                match remove_local(state, folder, rel, base).await {
                    None => {
                        report.removed_local.push(rel.to_owned());
                        return None;
                    }
                    Some(fresh) if fresh == *base => return Some(fresh),
                    Some(fresh) => local = fresh,
                }
            }
            // An un-pushed edit exists only in this file, so the remote delete loses.
            if state.read_only {
                tracing::warn!(
                    path = rel,
                    memory_store_id = %id,
                    "memory deleted remotely but edited locally; keeping the file, which a read-only store cannot push"
                );
            } else if state.refused.get(rel) != Some(&local) {
                tracing::info!(
                    path = rel,
                    memory_store_id = %id,
                    "memory deleted remotely but edited locally; re-creating it from the file"
                );
            }
        }
        if state.read_only || state.refused.get(rel) == Some(&local) {
            return None;
        }
        return upload(state, folder, api, rel, Some(&local), None, report).await;
    };

    let remote_sha = remote.content_sha256.as_str();
    let remote_changed = base_sha.as_deref() != Some(remote_sha);
    let locally_edited =
        local_sha.is_some_and(|l| Some(l) != base_sha.as_deref() && l != remote_sha);
    let local_changed = !state.read_only && locally_edited;

    if local_sha.is_none() && base_sha.is_some() {
        // Only successful writes enter the baseline: a real local deletion.
        if remote_changed {
            tracing::warn!(
                path = rel,
                memory_store_id = %id,
                "memory deleted locally but changed remotely; restoring the remote version"
            );
            state.pending_deletes.remove(rel);
            pulls.push((rel.to_owned(), remote.clone()));
        }
        return base_sha;
    }
    if remote_changed {
        if local_sha == Some(remote_sha) {
            return Some(remote_sha.to_owned());
        }
        if locally_edited {
            tracing::warn!(
                path = rel,
                memory_store_id = %id,
                "memory changed both locally and remotely; keeping the remote version"
            );
        }
        pulls.push((rel.to_owned(), remote.clone()));
        return base_sha;
    }
    if local_changed && let Some(local) = local_sha {
        if state.refused.get(rel).map(String::as_str) == Some(local) {
            return Some(remote_sha.to_owned());
        }
        return upload(state, folder, api, rel, Some(local), Some(remote), report)
            .await
            .or_else(|| Some(remote_sha.to_owned()));
    }
    Some(remote_sha.to_owned())
}

#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the reference's per-path signature"
)]
async fn corroborated_delete(
    state: &mut StoreSyncState,
    folder: &impl MemoryFolder,
    api: &impl MemoryApi,
    rel: &str,
    remote: &RemoteMemory,
    base_sha: &str,
    deletes: &mut DeletePass,
    now: Instant,
    report: &mut SyncReport,
) -> Option<String> {
    let keep = Some(base_sha.to_owned());
    if deletes.mode == DeleteMode::Disabled {
        report.delete_suppressed += 1;
        return keep;
    }
    let first_absent = *state.pending_deletes.entry(rel.to_owned()).or_insert(now);
    if !deletes.waive_window && now.saturating_duration_since(first_absent) < DELETE_CORROBORATION {
        return keep;
    }
    // Re-check now: the folder may have been destroyed mid-sync.
    let marker_ok = matches!(folder.hash_file(MARKER_PATH).await, Ok(Some(sha)) if sha == marker_sha(&state.memory_store_id));
    let still_absent = matches!(folder.hash_file(rel).await, Ok(None));
    if !marker_ok {
        return keep;
    }
    if !still_absent {
        state.pending_deletes.remove(rel);
        return keep;
    }
    if !deletes.take_slot(report) {
        return keep;
    }
    if deletes.mode == DeleteMode::LogOnly {
        tracing::info!(
            path = rel,
            memory_store_id = %state.memory_store_id,
            "log-only: sync would delete this memory on the server"
        );
        report.would_delete.push(rel.to_owned());
        return keep;
    }
    let result = match api.delete(&remote.id, base_sha).await {
        Ok(()) => {
            tracing::info!(path = rel, memory_store_id = %state.memory_store_id, "propagated local deletion");
            None
        }
        Err(e) if e.status == Some(404) => None,
        Err(e) if matches!(e.status, Some(409 | 412)) => {
            tracing::warn!(
                path = rel,
                memory_store_id = %state.memory_store_id,
                "memory deleted locally but changed remotely; keeping the remote version"
            );
            keep
        }
        Err(e) => {
            tracing::warn!(path = rel, memory_store_id = %state.memory_store_id, "failed to delete memory: {e}");
            keep
        }
    };
    if result.is_none() {
        state.pending_deletes.remove(rel);
        report.deleted_remote.push(rel.to_owned());
    }
    result
}

/// Fetches and writes the given memories, [`FETCH_CONCURRENCY`] at a time; a success advances
/// the path's baseline to the fetched sha, anything else leaves it for the next sync.
async fn pull_all(
    state: &mut StoreSyncState,
    folder: &impl MemoryFolder,
    api: &impl MemoryApi,
    pulls: Vec<(String, RemoteMemory)>,
    report: &mut SyncReport,
) {
    let id = state.memory_store_id.clone();
    let mut results = futures::stream::iter(pulls)
        .map(|(rel, listed)| {
            let id = id.clone();
            async move {
                let item = match api.fetch(&listed.id).await {
                    Ok(item) => item,
                    Err(e) if e.status == Some(404) => return (rel, None),
                    Err(e) => {
                        tracing::warn!(path = %rel, memory_store_id = %id, "failed to fetch memory content: {e}");
                        return (rel, None);
                    }
                };
                let written = match folder
                    .write_file(&rel, item.content.as_deref().unwrap_or(""))
                    .await
                {
                    Ok(()) => Some(item.content_sha256),
                    Err(e) => {
                        tracing::warn!(path = %rel, memory_store_id = %id, "failed to write memory: {e}");
                        None
                    }
                };
                (rel, written)
            }
        })
        .buffer_unordered(FETCH_CONCURRENCY);
    while let Some((rel, written)) = results.next().await {
        if let Some(sha) = written {
            state.baseline.insert(rel.clone(), sha);
            report.pulled.push(rel);
        }
    }
    report.pulled.sort();
}

async fn sync_pass(
    state: &mut StoreSyncState,
    folder: &impl MemoryFolder,
    api: &impl MemoryApi,
    opts: SyncOptions,
    report: &mut SyncReport,
) -> Result<(), PassError> {
    let scan = scan_marker(state, folder).await?;
    if let Some(reason) = scan.distrust_reason {
        if !scan.files.is_empty() {
            tracing::warn!(
                memory_store_id = %state.memory_store_id,
                "{reason}; leaving the memory store folder as found and not syncing"
            );
            report.outcome = SyncOutcome::Distrusted(reason.to_owned());
            return Ok(());
        }
        let reason = "the folder or its marker is gone";
        recover(state, folder, api, reason).await?;
        report.outcome = SyncOutcome::Recovered(reason.to_owned());
        return Ok(());
    }
    let local = scan.files;
    let remote: BTreeMap<String, RemoteMemory> = list_remote(state, api, false)
        .await?
        .into_iter()
        .map(|m| (m.rel().to_owned(), m))
        .collect();
    settle_sent(state, &remote);
    // One file gone is a delete; every file gone at once is a wipe.
    if local.is_empty() && state.baseline.len() > 1 {
        let reason = "every memory file is gone at once";
        recover(state, folder, api, reason).await?;
        report.outcome = SyncOutcome::Recovered(reason.to_owned());
        return Ok(());
    }
    let mut deletes = DeletePass {
        mode: opts.mode,
        cap: delete_cap(state.baseline.len()),
        waive_window: opts.final_pass,
        attempted: 0,
    };
    let mut pulls = Vec::new();
    let mut baseline = BTreeMap::new();
    let paths: BTreeSet<String> = remote
        .keys()
        .chain(local.keys())
        .chain(state.baseline.keys())
        .cloned()
        .collect();
    for rel in paths {
        let remote_item = remote.get(&rel);
        let local_sha = local.get(&rel).map(String::as_str);
        let base_sha = state.baseline.get(&rel).cloned();
        let sha = match (local_sha, &base_sha, remote_item) {
            (None, Some(base), Some(item)) if item.content_sha256 == *base && !state.read_only => {
                corroborated_delete(
                    state,
                    folder,
                    api,
                    &rel,
                    item,
                    base,
                    &mut deletes,
                    opts.now,
                    report,
                )
                .await
            }
            _ => {
                sync_path(
                    state,
                    folder,
                    api,
                    &rel,
                    remote_item,
                    local_sha,
                    &mut pulls,
                    report,
                )
                .await
            }
        };
        if let Some(sha) = sha {
            baseline.insert(rel, sha);
        }
    }
    state.baseline = baseline;
    pull_all(state, folder, api, pulls, report).await;
    if report.delete_suppressed > 0 {
        tracing::debug!(
            memory_store_id = %state.memory_store_id,
            "server deletes are disabled; {} locally deleted memories stay on the server",
            report.delete_suppressed
        );
    }
    if report.delete_capped > 0 {
        tracing::warn!(
            memory_store_id = %state.memory_store_id,
            "delete cap reached: {} {} deletes, held {} for later syncs",
            if opts.mode == DeleteMode::LogOnly { "would send" } else { "sent" },
            deletes.attempted,
            report.delete_capped
        );
    }
    Ok(())
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
