//! The pool room: bash sandboxes started ahead of demand (`[runtime.pool]`, see
//! [`PoolConfig`]), each on `<pool dir>/<name>/{workspace,outputs}`, waiting for a
//! session that looks like the one they were started for (no stores, the default
//! environment and layout: see `Session::new`). A session adopts one by renaming its
//! directories onto its own paths (same filesystem, so the running sandbox's mounts
//! follow them); the sandbox has run nothing, so it is as fresh as one started for it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wasm_sandbox_fs::mounts::MountSet;

use crate::bash::BashHost;
use crate::config::PoolConfig;
use crate::sandbox::Sandbox;
use crate::{Error, Result};

/// A bash sandbox started ahead of demand, on `<pool dir>/<name>/{workspace,outputs}`.
pub(crate) struct Pooled {
    dir: PathBuf,
    sandbox: Sandbox,
}

impl Pooled {
    /// Moves the sandbox's directories to the session's paths (same filesystem:
    /// `rename`, so the running sandbox's mounts follow them) and returns the sandbox;
    /// `None` (the sandbox gone, its directory removed) when that fails.
    pub(crate) fn adopt_dirs(
        self,
        root: &Path,
        workspace: &Path,
        outputs: &Path,
    ) -> Option<Sandbox> {
        match adopt_dirs(&self.dir, root, workspace, outputs) {
            Ok(()) => Some(self.sandbox),
            Err(e) => {
                tracing::warn!(error = %e, "could not adopt a pooled sandbox; starting a fresh one");
                let dir = self.dir.clone();
                drop(self);
                let _ = wasm_sandbox_fs::tree::remove_tree(&dir);
                None
            }
        }
    }
}

/// Sandboxes started ahead of demand, and the one task that starts them.
pub(crate) struct Pool {
    config: PoolConfig,
    ready: Mutex<Vec<Pooled>>,
    /// 1 while a task is filling the pool.
    starting: AtomicUsize,
    names: AtomicU64,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Pooled shells die with their `BashSession`s; their directories go too.
        let pooled = std::mem::take(self.ready.get_mut().unwrap_or_else(|p| p.into_inner()));
        for p in pooled {
            let dir = p.dir.clone();
            drop(p);
            let _ = wasm_sandbox_fs::tree::remove_tree(&dir);
        }
    }
}

impl Pool {
    /// An empty pool for `[runtime.pool]`.
    pub(crate) fn new(config: &PoolConfig) -> Pool {
        Pool {
            config: config.clone(),
            ready: Mutex::default(),
            starting: AtomicUsize::new(0),
            names: AtomicU64::new(0),
        }
    }

    /// Starts sandboxes in the background, one after another, until `pool.sandboxes`
    /// are ready. A no-op without a tokio runtime, without a pool directory or without a
    /// usable bash sandbox.
    pub(crate) fn fill(self: &Arc<Self>, host: &Arc<BashHost>) {
        let want = self.config.sandboxes.unwrap_or(0);
        let Some(dir) = self.config.dir.clone() else {
            return;
        };
        let report = host.report();
        // Disk-capped sessions start their own sandbox (see `Session::new`).
        let disk_capped = report.disk_limit == wasm_sandbox_native::LimitMechanism::Filesystem;
        if want == 0 || !report.available || report.unsandboxed_fallback || disk_capped {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // One filler at a time: each sandbox start forks the worker, and a burst of
        // them (say at start-up, while the first sessions are claimed) would compete
        // with those sessions' first calls.
        if self
            .starting
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let pool = self.clone();
        let host = host.clone();
        handle.spawn(async move {
            let mut failed = false;
            while pool.len() < want {
                if let Err(e) = pool.start_one(&host, &dir).await {
                    tracing::warn!(error = %e, "could not start a pooled bash sandbox");
                    failed = true;
                    break;
                }
            }
            pool.starting.store(0, Ordering::Release);
            // A session may have taken one between the last check and the store.
            if !failed && pool.len() < want {
                pool.fill(&host);
            }
            // This task may hold the last references (the runtime dropped while it
            // filled). The order in which an async block's captures drop is not
            // specified, so drop them explicitly, pool first: pooled shells die (and
            // their directories go) before the host removes the socket directory they
            // are bound to, as `RuntimeInner`'s field order ensures for the runtime's own.
            drop(pool);
            drop(host);
        });
    }

    async fn start_one(&self, host: &BashHost, dir: &Path) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        let name = format!("p{}-{n}", std::process::id());
        let root = dir.join(&name);
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for sub in ["workspace", "outputs"] {
            builder.create(root.join(sub)).map_err(Error::Io)?;
        }
        let mounts = MountSet::session(root.join("workspace"), root.join("outputs"), [])
            .map_err(|e| Error::Config(e.to_string()))?;
        let mut sandbox = Sandbox::new(host, &format!("pool-{name}"), &mounts, None)?;
        if let Err(e) = sandbox.bash.prestart().await {
            let _ = wasm_sandbox_fs::tree::remove_tree(&root);
            return Err(Error::Sandbox(e.to_string()));
        }
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pooled { dir: root, sandbox });
        Ok(())
    }

    /// Takes a ready sandbox whose shell is still running, if any.
    pub(crate) fn take(&self) -> Option<Pooled> {
        let mut pool = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(p) = pool.pop() {
            if p.sandbox.bash.is_running() {
                return Some(p);
            }
            let _ = wasm_sandbox_fs::tree::remove_tree(&p.dir);
        }
        None
    }

    /// How many started sandboxes are waiting.
    pub(crate) fn len(&self) -> usize {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Moves a pooled sandbox's directories to the session's paths (same
/// filesystem: `rename`, so the running sandbox's mounts follow them).
fn adopt_dirs(
    pool_dir: &Path,
    root: &Path,
    workspace: &Path,
    outputs: &Path,
) -> std::io::Result<()> {
    for dir in [workspace, outputs] {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
    }
    std::fs::create_dir_all(root)?;
    std::fs::rename(pool_dir.join("workspace"), workspace)?;
    std::fs::rename(pool_dir.join("outputs"), outputs)?;
    std::fs::remove_dir(pool_dir)
}
