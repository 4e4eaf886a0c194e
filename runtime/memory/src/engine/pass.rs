//! One sync pass of one store: per-path decisions, corroborated deletes and the pull.

use super::upload::upload;
use super::*;

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

pub(super) async fn sync_pass(
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
