//! Helpers shared by the persistence integration tests (`persist`, `review`, `s3`).
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};

use wasm_sandbox_persist::{Persistence, PersistenceConfig, SessionState};

/// A session's two roots (`workspace`, `outputs`) in a temporary directory that lives as
/// long as this value.
pub struct Session {
    pub _tmp: tempfile::TempDir,
    pub ws: PathBuf,
    pub out: PathBuf,
}

/// Fresh, empty workspace and outputs directories.
pub fn session() -> Session {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("workspace");
    let out = tmp.path().join("outputs");
    std::fs::create_dir(&ws).unwrap();
    std::fs::create_dir(&out).unwrap();
    Session { _tmp: tmp, ws, out }
}

/// Persistence over a `file://` store at `store`, its configuration adjusted by `f`.
pub fn persistence(store: &Path, f: impl FnOnce(&mut PersistenceConfig)) -> Persistence {
    let mut cfg = PersistenceConfig::new(format!("file://{}", store.display()));
    f(&mut cfg);
    Persistence::open(&cfg).unwrap()
}

/// The state of a session never snapshotted.
pub fn fresh(id: &str) -> SessionState {
    SessionState::new(id)
}

/// Standard base64, as manifests spell raw names and link targets.
pub fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Every file (not directory) below `dir`, at any depth.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `len` incompressible bytes (xorshift64 from `seed`), so that sizes on the store are
/// those of the content.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
