//! The on-disk cache of compiled components (`engine.cache_dir`).
//!
//! # Safety reasoning
//!
//! `Component::deserialize_file` trusts its input to be wasmtime output for this
//! engine. A file name binds the SHA-256 of the component's bytes and the engine's
//! compatibility hash, and the directory is created 0700; the cache must not be
//! writable by anyone but the worker's user (documented on the config key). It
//! holds compiled code only, never session data.
//!
//! # Bounds
//!
//! Sessions choose what gets compiled (`wasm-run` of any file they wrote), so the
//! directory is bounded: `engine.cache_max_bytes` in total, least recently used
//! files removed first (a cache hit refreshes a file's mtime, which is the LRU
//! clock), checked after every new file and at start-up. The start-up sweep also
//! removes temp files (`*.tmp<pid>`) whose writer is gone (a crash between write
//! and rename) or that are older than an hour. Only names this code creates are
//! touched, never links or directories.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{Error, Result};

/// Temp files older than this are removed whoever wrote them.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// A loaded component and the size of its compiled form.
pub(crate) struct Loaded {
    pub component: Component,
    pub compiled_bytes: u64,
}

/// Loads a component from `dir`'s cache, or compiles it with `compile` (which
/// returns `Engine::precompile_component` output of this engine) and stores the
/// result when it fits in `max_bytes`. `label` prefixes the file name
/// (`file-tools`, `cmd`).
pub(crate) fn load_cached(
    engine: &Engine,
    dir: &Path,
    max_bytes: u64,
    wasm: &[u8],
    label: &str,
    compile: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
) -> Result<Loaded> {
    use sha2::Digest;
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    // And this crate's version: a different build never loads another's files, even where
    // wasmtime's own hash would call them compatible.
    env!("CARGO_PKG_VERSION").hash(&mut h);
    let digest = sha2::Sha256::digest(wasm);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{label}-{hex}-{:016x}.cwasm", h.finish()));
    if let Ok(meta) = std::fs::symlink_metadata(&path)
        && meta.is_file()
    {
        // SAFETY: see the module docs: only this process's user writes the cache.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                touch(&path);
                return Ok(Loaded {
                    component,
                    compiled_bytes: meta.len(),
                });
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cache file")
            }
        }
    }
    let bytes = compile(wasm)?;
    if (bytes.len() as u64) <= max_bytes {
        create_private_dir(dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        match std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path)) {
            Ok(()) => sweep(dir, max_bytes, Some(&path)),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(path = %path.display(), error = %e, "could not write a cache file");
            }
        }
    }
    // SAFETY: `compile` returns `precompile_component` output of this engine's
    // configuration (in-process, or the bounded helper of `crate::compile`);
    // `deserialize` still checks the engine compatibility header.
    let component =
        unsafe { Component::deserialize(engine, &bytes) }.map_err(Error::InvalidComponent)?;
    Ok(Loaded {
        component,
        compiled_bytes: bytes.len() as u64,
    })
}

/// Marks a cache file as just used (the LRU clock is the mtime).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Removes stale temp files and, oldest first, `.cwasm` files until the total is
/// within `max_bytes`; `keep` (the file just written) goes last.
pub(crate) fn sweep(dir: &Path, max_bytes: u64, keep: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Only names this module makes are touched: an operator's explicit `cache_dir` may
        // hold other files.
        if !ours(&name) {
            continue;
        }
        if let Some(pid) = tmp_writer(&name) {
            let old = now.duration_since(modified).unwrap_or_default() > STALE_TMP;
            if old || !process_alive(pid) {
                let _ = std::fs::remove_file(&path);
            }
        } else if name.ends_with(".cwasm") {
            files.push((modified, meta.len(), path));
        }
    }
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort_by_key(|(modified, _, path)| (Some(path.as_path()) == keep, *modified));
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::debug!(path = %path.display(), bytes = len, "evicted a compile cache file");
            total = total.saturating_sub(len);
        }
    }
}

/// Whether `name` is one this module writes: `<label>-<64 hex>-<16 hex>.cwasm`, or that stem
/// with `.tmp<pid>` instead of `.cwasm`.
fn ours(name: &str) -> bool {
    let stem = match name.strip_suffix(".cwasm") {
        Some(stem) => stem,
        None => match tmp_writer(name) {
            Some(_) => name.rsplit_once(".tmp").map_or("", |(stem, _)| stem),
            None => return false,
        },
    };
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut parts = stem.rsplitn(3, '-');
    let (Some(engine), Some(digest), Some(label)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    hex(engine, 16)
        && hex(digest, 64)
        && !label.is_empty()
        && label.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

/// The writer's pid of a temp file this module names `<stem>.tmp<pid>`.
fn tmp_writer(name: &str) -> Option<u32> {
    let (stem, pid) = name.rsplit_once(".tmp")?;
    if stem.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name stem as `load_cached` writes it: `cmd-<sha-256>-<engine hash>`.
    fn stem(n: u8) -> String {
        format!("cmd-{}-{:016x}", format!("{n:x}").repeat(64), u64::from(n))
    }

    fn file(dir: &Path, name: &str, len: usize, age_s: u64) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, vec![0u8; len]).unwrap();
        let t = SystemTime::now() - Duration::from_secs(age_s);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
        p
    }

    #[test]
    fn sweep_evicts_least_recently_used_files_and_stale_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let oldest = file(dir, &format!("{}.cwasm", stem(1)), 400, 300);
        let middle = file(dir, &format!("{}.cwasm", stem(2)), 400, 200);
        let newest = file(dir, &format!("{}.cwasm", stem(3)), 400, 100);
        let just_written = file(dir, &format!("{}.cwasm", stem(4)), 400, 1000);
        // A temp file of a dead writer (a crash between write and rename), one of a
        // live writer (this process) and one too old whoever wrote it.
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let crashed = file(dir, &format!("{}.tmp{dead_pid}", stem(5)), 10, 0);
        let live = file(
            dir,
            &format!("{}.tmp{}", stem(6), std::process::id()),
            10,
            0,
        );
        let ancient = file(
            dir,
            &format!("{}.tmp{}", stem(7), std::process::id()),
            10,
            7200,
        );
        // Not ours: left alone, whatever they are called.
        let other = file(dir, "notes.txt", 5000, 9000);
        let foreign_cwasm = file(dir, "someone-elses.cwasm", 5000, 9000);
        let foreign_tmp = file(dir, &format!("data.tmp{dead_pid}"), 10, 9000);
        std::os::unix::fs::symlink(&other, dir.join("link.cwasm")).unwrap();

        sweep(dir, 1000, Some(&just_written));
        assert!(!oldest.exists() && !middle.exists(), "oldest two evicted");
        assert!(newest.exists() && just_written.exists());
        assert!(!crashed.exists() && !ancient.exists());
        assert!(live.exists() && other.exists());
        assert!(foreign_cwasm.exists() && foreign_tmp.exists());
        assert!(dir.join("link.cwasm").symlink_metadata().is_ok());

        // A hit refreshes a file: the other one goes next.
        touch(&newest);
        let newer = file(dir, &format!("{}.cwasm", stem(8)), 400, 0);
        sweep(dir, 1000, None);
        assert!(newest.exists() && newer.exists());
        assert!(!just_written.exists());
    }

    #[test]
    fn only_our_names_are_swept() {
        assert!(ours(&format!("{}.cwasm", stem(1))));
        assert!(ours(&format!("{}.tmp42", stem(1))));
        assert!(ours(&format!(
            "file-tools-{}-{:016x}.cwasm",
            "a".repeat(64),
            7
        )));
        for not in [
            "notes.cwasm",
            "cmd-a.cwasm",
            "data.tmp12",
            &format!("cmd-{}-{:016x}.cwasm.bak", "a".repeat(64), 7),
            &format!("CMD-{}-{:016x}.cwasm", "a".repeat(64), 7),
        ] {
            assert!(!ours(not), "{not}");
        }
    }

    #[test]
    fn temp_file_names() {
        assert_eq!(tmp_writer("cmd-x.tmp123"), Some(123));
        assert_eq!(tmp_writer("cmd-x.cwasm"), None);
        assert_eq!(tmp_writer(".tmp1"), None);
        assert_eq!(tmp_writer("a.tmpx"), None);
    }
}
