//! Shared helpers for the sandbox integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use wasm_sandbox_fs::guest_path::MemoryMountPath;
use wasm_sandbox_fs::mounts::{Access, Mount, MountSet};
use wasm_sandbox_native::{BashConfig, BashOutput, BashSandbox, BashSession, BashSessionSpec};

/// One probed sandbox per test binary.
pub fn sandbox() -> Arc<BashSandbox> {
    static SANDBOX: OnceLock<Arc<BashSandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let sb = BashSandbox::new(BashConfig {
                init_path: Some(env!("CARGO_BIN_EXE_wasm-sandbox-init").into()),
                memory_limit_bytes: Some(256 << 20),
                pids_limit: Some(128),
                tmp_size_bytes: 8 << 20,
                shm_size_bytes: 4 << 20,
                max_file_size_bytes: Some(16 << 20),
                ..BashConfig::default()
            });
            assert!(
                sb.report().available,
                "sandbox unavailable: {:?}",
                sb.report().unavailable_reason
            );
            Arc::new(sb)
        })
        .clone()
}

/// A session's host directories.
pub struct Dirs {
    pub root: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("wsn-test-")
            .tempdir()
            .unwrap();
        for d in ["workspace", "outputs", "store-ro", "store-rw", "private"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        Self { root }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }
    pub fn workspace(&self) -> PathBuf {
        self.path("workspace")
    }
}

pub fn spec(dirs: &Dirs, id: &str) -> BashSessionSpec {
    BashSessionSpec {
        session_id: id.to_owned(),
        mounts: mounts(dirs, dirs.workspace()),
        env: None,
        wasm_run_socket: None,
        egress_dir: None,
    }
}

/// The test layout with `workspace` as the workspace's host directory: outputs, a
/// read-only store at `/mnt/memory/ro` and a read-write one at `/mnt/memory/rw`.
pub fn mounts(dirs: &Dirs, workspace: PathBuf) -> MountSet {
    let store = |guest: &str, host: &str, access| {
        Mount::memory_store(
            MemoryMountPath::parse(guest).unwrap(),
            dirs.path(host),
            access,
        )
    };
    MountSet::session(
        workspace,
        dirs.path("outputs"),
        [
            store("/mnt/memory/ro", "store-ro", Access::ReadOnly),
            store("/mnt/memory/rw", "store-rw", Access::ReadWrite),
        ],
    )
    .unwrap()
}

pub fn session(dirs: &Dirs) -> BashSession {
    BashSession::new(sandbox(), spec(dirs, "test"))
}

pub async fn run(s: &mut BashSession, cmd: &str) -> BashOutput {
    s.call(&json!({ "command": cmd })).await
}

pub async fn call(s: &mut BashSession, input: Value) -> BashOutput {
    s.call(&input).await
}

pub fn ok(text: &str) -> BashOutput {
    BashOutput {
        text: text.to_owned(),
        is_error: false,
    }
}

pub fn err(text: &str) -> BashOutput {
    BashOutput {
        text: text.to_owned(),
        is_error: true,
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
