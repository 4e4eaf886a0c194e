//! Uploads: one attempt (create, or update with a `content_sha256` precondition) and how its
//! outcome moves the baseline, under the process-wide byte budget.

use super::*;

/// The process-wide budget of file bytes held by uploads ([`UPLOAD_BYTES_IN_FLIGHT`]).
/// Process-wide, not per store: the bound must hold however many sessions and stores flush
/// at once, which is when a hostile session's files would otherwise add up.
static UPLOAD_BUDGET: Semaphore = Semaphore::const_new(UPLOAD_BYTES_IN_FLIGHT);

/// What one upload reserves before it reads: the most a read may return, plus the one byte
/// that tells a file which grew past the cap while being read.
const UPLOAD_RESERVATION: usize = MAX_MEMORY_BYTES as usize + 1;
// One reservation must fit the budget, or an upload would wait forever.
const _: () = assert!(UPLOAD_RESERVATION <= UPLOAD_BYTES_IN_FLIGHT);

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

pub(super) struct UploadAttempt {
    sent_sha: Option<String>,
    had_existing: bool,
    outcome: Result<String, UploadFailure>,
}

impl UploadAttempt {
    pub(super) fn refused_locally(&self) -> bool {
        matches!(self.outcome, Err(UploadFailure::LocalRefused(_)))
    }
}

/// Reads and sends one file; a 404 on an update (deleted remotely since the listing) retries
/// as a create. Touches no state.
pub(super) async fn attempt_upload(
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
pub(super) fn apply_upload(
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

pub(super) async fn upload(
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
