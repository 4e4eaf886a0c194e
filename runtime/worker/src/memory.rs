//! Memory stores for one claimed item (protocol §7): download each attached store into a host
//! directory, mount it into the sandbox at its `mount_path` (read-only per `access`), sync it
//! back after tool calls on the schedule, and run the final sync / flush at the end.
//!
//! The merge, the marker and the deletion rules are `wasm-sandbox-memory`'s sync engine; this
//! module supplies its HTTP side ([`StoreApi`], a [`MemoryApi`] over the item's sessions token)
//! and its folder ([`CapStdFolder`]: every file operation through directory handles with
//! `O_NOFOLLOW`, so a link the guest plants in a store cannot redirect a sync write or read).
//!
//! Where the files live: the host directory is `<session root>/memory/<memory_store_id>` (the id
//! is checked to be one plain path segment); the guest sees it at [`guest_path`]: the store's
//! `mount_path` normalised (an absolute path below `/mnt/memory/`, nested allowed, no `..`) or
//! `/mnt/memory/<name or id>` without one — the one rule of `wasm_sandbox_fs::guest_path`,
//! which the runtime and the bash sandbox check again. Every store's path is resolved, and the
//! set checked for overlaps, before anything is downloaded, so a bad path fails the item up
//! front with the rule's message. A `read_only` store is mounted read-only for both the file
//! tools and bash, and is never pushed.
//!
//! Memory endpoints reject the environment key, so stores are used only with a sessions token;
//! an item whose session has stores but whose secret carries no token fails, as in the
//! reference. A failed download fails the item.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wasm_sandbox_fs::guest_path::{MemoryMountPath, check_disjoint};
use wasm_sandbox_fs::mounts::{Access, Mount};
use wasm_sandbox_memory::folder::CapStdFolder;
use wasm_sandbox_memory::{
    DeleteMode, FLUSH_TIMEOUT, MAX_STORES_PER_SESSION, MemoryApi, RemoteError, RemoteMemory,
    StoreSyncState, SyncInterval, SyncOptions, SyncSchedule, download_store, flush_store,
    store_mount_path, sync_store,
};

use crate::client::{ApiError, ItemClient, is_safe_path_segment};
use crate::proto::Session;
use crate::runner::{Reporter, RunEnd};

/// One `memory_store` resource of the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRef {
    /// `memstore_…`.
    pub id: String,
    /// Store name.
    pub name: Option<String>,
    /// Where the agent expects it.
    pub mount_path: Option<String>,
    /// `access: "read_only"`.
    pub read_only: bool,
}

/// The `memory_store` resources attached to the session.
pub fn session_stores(session: &Session) -> Vec<StoreRef> {
    session
        .resources
        .iter()
        .filter(|r| r.get("type").and_then(Value::as_str) == Some("memory_store"))
        .filter_map(|r| {
            let id = r.get("memory_store_id").and_then(Value::as_str)?;
            let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
            Some(StoreRef {
                id: id.to_owned(),
                name: s("name"),
                mount_path: s("mount_path"),
                read_only: r.get("access").and_then(Value::as_str) == Some("read_only"),
            })
        })
        .collect()
}

/// Where the agent sees `store` (the mount-path rule; see the module docs).
pub fn guest_path(store: &StoreRef) -> Result<MemoryMountPath, String> {
    store_mount_path(
        store.mount_path.as_deref(),
        store.name.as_deref(),
        &store.id,
    )
    .map_err(|e| e.to_string())
}

/// The memory endpoints of one store, called with the item's sessions token.
#[derive(Clone, Debug)]
pub struct StoreApi {
    item: ItemClient,
    base: String,
}

impl StoreApi {
    /// For store `store_id` (which must be a plain path segment; checked by the caller).
    pub fn new(item: ItemClient, store_id: &str) -> StoreApi {
        StoreApi {
            item,
            base: format!("/v1/memory_stores/{store_id}/memories"),
        }
    }
}

fn remote(e: ApiError) -> RemoteError {
    RemoteError {
        status: e.status(),
        message: e.to_string(),
    }
}

fn bad(what: &str) -> RemoteError {
    RemoteError {
        status: None,
        message: what.to_owned(),
    }
}

fn parse_memory(v: &Value) -> Option<RemoteMemory> {
    if v.get("type").and_then(Value::as_str) != Some("memory") {
        return None;
    }
    Some(RemoteMemory {
        id: v.get("id")?.as_str()?.to_owned(),
        path: v.get("path")?.as_str()?.to_owned(),
        content_sha256: v.get("content_sha256")?.as_str()?.to_owned(),
        content: v.get("content").and_then(Value::as_str).map(str::to_owned),
    })
}

fn sha_of(v: Option<Value>) -> Result<String, RemoteError> {
    v.as_ref()
        .and_then(|v| v.get("content_sha256"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad("response without content_sha256"))
}

fn checked_id(id: &str) -> Result<&str, RemoteError> {
    if is_safe_path_segment(id) {
        Ok(id)
    } else {
        Err(bad("unsafe memory id"))
    }
}

impl MemoryApi for StoreApi {
    async fn list(&self, full: bool) -> Result<Vec<RemoteMemory>, RemoteError> {
        let (view, limit) = if full {
            ("full", "20")
        } else {
            ("basic", "100")
        };
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        // A bound on pages (2,000 memories per store at ≥20 a page, with slack).
        for _ in 0..1000 {
            let mut query = vec![("view", view), ("limit", limit)];
            if let Some(p) = &page {
                query.push(("page", p.as_str()));
            }
            let body = self
                .item
                .memory_call("memory.list", Method::GET, &self.base, &query, None)
                .await
                .map_err(remote)?
                .ok_or_else(|| bad("empty list page"))?;
            if let Some(data) = body.get("data").and_then(Value::as_array) {
                out.extend(data.iter().filter_map(parse_memory));
            }
            match body.get("next_page").and_then(Value::as_str) {
                Some(next) if Some(next) != page.as_deref() => page = Some(next.to_owned()),
                _ => return Ok(out),
            }
        }
        Err(bad("too many list pages"))
    }

    async fn fetch(&self, memory_id: &str) -> Result<RemoteMemory, RemoteError> {
        let path = format!("{}/{}", self.base, checked_id(memory_id)?);
        let v = self
            .item
            .memory_call(
                "memory.retrieve",
                Method::GET,
                &path,
                &[("view", "full")],
                None,
            )
            .await
            .map_err(remote)?;
        v.as_ref()
            .and_then(parse_memory)
            .ok_or_else(|| bad("undecodable memory"))
    }

    async fn create(&self, path: &str, content: &str) -> Result<String, RemoteError> {
        let body = json!({"path": path, "content": content});
        let v = self
            .item
            .memory_call("memory.create", Method::POST, &self.base, &[], Some(&body))
            .await
            .map_err(remote)?;
        sha_of(v)
    }

    async fn update(
        &self,
        memory_id: &str,
        content: &str,
        precondition_sha: &str,
    ) -> Result<String, RemoteError> {
        let path = format!("{}/{}", self.base, checked_id(memory_id)?);
        let body = json!({
            "content": content,
            "precondition": {"type": "content_sha256", "content_sha256": precondition_sha},
        });
        let v = self
            .item
            .memory_call("memory.update", Method::POST, &path, &[], Some(&body))
            .await
            .map_err(remote)?;
        sha_of(v)
    }

    async fn delete(&self, memory_id: &str, expected_sha: &str) -> Result<(), RemoteError> {
        let path = format!("{}/{}", self.base, checked_id(memory_id)?);
        self.item
            .memory_call(
                "memory.delete",
                Method::DELETE,
                &path,
                &[("expected_content_sha256", expected_sha)],
                None,
            )
            .await
            .map_err(remote)?;
        Ok(())
    }
}

struct Store {
    state: StoreSyncState,
    folder: CapStdFolder,
    api: StoreApi,
}

/// The session's downloaded stores and their sync schedule.
pub struct MemoryStores {
    stores: Vec<Store>,
    schedule: SyncSchedule,
    mode: DeleteMode,
}

impl std::fmt::Debug for MemoryStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStores")
            .field("stores", &self.stores.len())
            .finish_non_exhaustive()
    }
}

/// Downloads every store attached to the session under `<root>/memory/` and returns them with
/// the mounts for the sandbox. `Ok(None)`: nothing to mount (no stores).
/// `Err`: the item must fail (stores but no sessions token, as the reference fails it; a bad
/// mount path; a failed download); what was created is left for the session directory's
/// removal.
pub async fn prepare(
    item: &ItemClient,
    session: &Session,
    root: &Path,
    has_sessions_token: bool,
) -> Result<Option<(MemoryStores, Vec<Mount>)>, String> {
    let refs = session_stores(session);
    if refs.is_empty() {
        return Ok(None);
    }
    if !has_sessions_token {
        // The reference (sync enabled, its default) fails such an item rather than run the
        // agent without the memories it was promised; so do we.
        return Err(
            "the session has memory stores attached, but the work item carried no sessions \
             token; the memory endpoints reject the environment key, so the stores cannot be \
             mounted"
                .to_owned(),
        );
    }
    if refs.len() > MAX_STORES_PER_SESSION {
        return Err(format!(
            "{} memory stores attached; at most {MAX_STORES_PER_SESSION} are supported",
            refs.len()
        ));
    }
    // Every path first, so a bad or overlapping one fails the item before any download.
    let mut planned = Vec::with_capacity(refs.len());
    for r in refs {
        if !is_safe_path_segment(&r.id) {
            return Err(format!("unsafe memory_store_id {:?}", r.id));
        }
        let guest_path = guest_path(&r)?;
        planned.push((r, guest_path));
    }
    check_disjoint(planned.iter().map(|(_, p)| p)).map_err(|e| e.to_string())?;
    let mut stores = Vec::new();
    let mut mounts = Vec::new();
    for (r, guest_path) in planned {
        let host_path: PathBuf = root.join("memory").join(&r.id);
        let folder = CapStdFolder::new(host_path.clone());
        let api = StoreApi::new(item.clone(), &r.id);
        let mut state = StoreSyncState::new(r.id.clone(), r.read_only);
        let parent = root.join("memory");
        tokio::task::spawn_blocking(move || std::fs::create_dir_all(parent))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("creating the memory directory: {e}"))?;
        {
            use wasm_sandbox_memory::MemoryFolder as _;
            folder
                .create_root()
                .await
                .map_err(|e| format!("memory store {}: creating its folder: {e}", r.id))?;
        }
        download_store(&mut state, &folder, &api)
            .await
            .map_err(|e| e.to_string())?;
        mounts.push(Mount::memory_store(
            guest_path,
            host_path,
            Access::from_read_only(r.read_only),
        ));
        stores.push(Store { state, folder, api });
    }
    Ok(Some((
        MemoryStores {
            stores,
            schedule: SyncSchedule::new(SyncInterval::default(), Instant::now()),
            mode: DeleteMode::default(),
        },
        mounts,
    )))
}

impl MemoryStores {
    /// Syncs every store in parallel (errors are logged by the engine).
    pub async fn sync_all(&mut self, final_pass: bool) {
        let now = Instant::now();
        let opts = SyncOptions {
            mode: self.mode,
            final_pass,
            now,
        };
        futures::future::join_all(
            self.stores
                .iter_mut()
                .map(|s| sync_store(&mut s.state, &s.folder, &s.api, opts)),
        )
        .await;
        self.schedule.mark_synced(now);
    }

    /// Syncs if the schedule says one is due.
    pub async fn sync_if_due(&mut self) {
        if self.schedule.is_due(Instant::now()) {
            self.sync_all(false).await;
        }
    }

    /// End of the session: a final sync on a clean end, then the push-only flush on every
    /// end, each bounded by [`FLUSH_TIMEOUT`].
    pub async fn finish(mut self, end: Option<RunEnd>) {
        let clean = matches!(
            end,
            Some(RunEnd::Terminated | RunEnd::IdleTimeout | RunEnd::Drained)
        );
        if clean
            && tokio::time::timeout(FLUSH_TIMEOUT, self.sync_all(true))
                .await
                .is_err()
        {
            tracing::warn!("final memory sync timed out");
        }
        let flush = futures::future::join_all(
            self.stores
                .iter_mut()
                .map(|s| flush_store(&mut s.state, &s.folder, &s.api)),
        );
        if tokio::time::timeout(FLUSH_TIMEOUT, flush).await.is_err() {
            tracing::warn!("memory flush timed out");
        }
    }
}

/// Runs the after-tool-call syncs in the background. Returns the sender to signal on each
/// finished tool call and the task, which hands the stores back once `done` is cancelled
/// (after the sync under way, if any, finished).
pub fn spawn_syncer(
    mut stores: MemoryStores,
    done: tokio_util::sync::CancellationToken,
) -> (
    mpsc::UnboundedSender<()>,
    tokio::task::JoinHandle<MemoryStores>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                () = done.cancelled() => break,
                got = rx.recv() => {
                    if got.is_none() {
                        break;
                    }
                    // Coalesce calls that finished while a sync ran.
                    while rx.try_recv().is_ok() {}
                    stores.sync_if_due().await;
                }
            }
        }
        stores
    });
    (tx, task)
}

/// Chains a tool-call signal to `tx` in front of the runner's reporter.
pub fn chain_reporter(tx: mpsc::UnboundedSender<()>, next: Option<Reporter>) -> Reporter {
    Arc::new(move |report| {
        // The syncer gone (session ending) is fine: nothing more to schedule.
        let _ = tx.send(());
        if let Some(next) = &next {
            next(report);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_read_from_the_resources() {
        let session: Session = serde_json::from_value(json!({
            "resources": [
                {"type": "memory_store", "memory_store_id": "memstore_a",
                 "access": "read_only", "mount_path": "/mnt/memory/a", "name": "a"},
                {"type": "file", "file_id": "file_1"},
                {"type": "memory_store", "memory_store_id": "memstore_b"}
            ]
        }))
        .unwrap();
        let got = session_stores(&session);
        assert_eq!(got.len(), 2);
        assert!(got[0].read_only);
        assert_eq!(got[0].mount_path.as_deref(), Some("/mnt/memory/a"));
        assert!(!got[1].read_only);
        assert_eq!(got[1].id, "memstore_b");
    }

    #[test]
    fn a_store_without_mount_path_is_mounted_at_mnt_memory_name() {
        let session: Session = serde_json::from_value(json!({
            "resources": [
                {"type": "memory_store", "memory_store_id": "memstore_a", "name": "notes"},
                {"type": "memory_store", "memory_store_id": "memstore_b", "name": "team",
                 "mount_path": ""},
                {"type": "memory_store", "memory_store_id": "memstore_c", "name": "../x",
                 "mount_path": null},
                {"type": "memory_store", "memory_store_id": "memstore_d",
                 "mount_path": "/mnt/memory/team/shared/"}
            ]
        }))
        .unwrap();
        let got: Vec<String> = session_stores(&session)
            .iter()
            .map(|s| guest_path(s).unwrap().into())
            .collect();
        assert_eq!(
            got,
            [
                "/mnt/memory/notes",
                "/mnt/memory/team",
                "/mnt/memory/memstore_c",
                "/mnt/memory/team/shared"
            ]
        );
        let bad = StoreRef {
            id: "memstore_e".into(),
            name: None,
            mount_path: Some("/workspace/mem".into()),
            read_only: false,
        };
        let err = guest_path(&bad).unwrap_err();
        assert!(err.contains("below /mnt/memory/"), "{err}");
    }
}
