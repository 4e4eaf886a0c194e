//! The bash room: the runtime's side of the native bash sandbox that every session
//! shares — the probed [`BashSandbox`], the `[networking]` policy, and the private
//! directory where each sandbox's `wasm-run` socket and egress directory live (with the
//! sweep of the ones a dead process left behind). Per-sandbox pieces are built on it:
//! the bridge ([`crate::wasm_run`]), the egress directory ([`crate::egress`]) and the
//! sandbox itself ([`crate::sandbox`]).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use wasm_sandbox_egress::Egress;
use wasm_sandbox_native::{BashSandbox, SandboxReport};

use crate::{Error, Result};

/// Prefix of the bridge directories' names: `wasm-sandbox-run-<pid>-<nanos>`.
const BRIDGE_DIR_PREFIX: &str = "wasm-sandbox-run-";

/// What sessions' bash sandboxes share (see [the module docs](self)).
pub(crate) struct BashHost {
    bash: Arc<BashSandbox>,
    /// `wasm_run.enabled`.
    wasm_run: bool,
    /// `[networking]`, compiled; `None` for `type = "none"` (see [`crate::egress`]).
    egress: Option<Arc<Egress>>,
    /// Private directory for the sandboxes' `wasm-run` sockets and egress directories,
    /// made on first use, with the lock file that marks it as in use (see
    /// [`sweep_bridge_dirs`]).
    socket_dir: OnceLock<std::result::Result<(PathBuf, std::fs::File), String>>,
}

impl Drop for BashHost {
    fn drop(&mut self) {
        if let Some(Ok((dir, _lock))) = self.socket_dir.get() {
            let _ = wasm_sandbox_fs::tree::remove_tree(dir);
        }
    }
}

impl BashHost {
    /// The shared side of the bash sandboxes.
    pub(crate) fn new(
        bash: Arc<BashSandbox>,
        wasm_run: bool,
        egress: Option<Arc<Egress>>,
    ) -> BashHost {
        BashHost {
            bash,
            wasm_run,
            egress,
            socket_dir: OnceLock::new(),
        }
    }

    /// The probed sandbox.
    pub(crate) fn sandbox(&self) -> &Arc<BashSandbox> {
        &self.bash
    }

    /// Which layers of the sandbox are active on this host.
    pub(crate) fn report(&self) -> &SandboxReport {
        self.bash.report()
    }

    /// Whether bash runs in its sandbox here (available, and not the unsandboxed
    /// fallback): only then can a socket or a proxy be bound into it.
    pub(crate) fn sandboxed(&self) -> bool {
        let report = self.bash.report();
        report.available && !report.unsandboxed_fallback
    }

    /// `wasm_run.enabled`.
    pub(crate) fn wasm_run_enabled(&self) -> bool {
        self.wasm_run
    }

    /// The compiled `[networking]` policy, when networking is on.
    pub(crate) fn egress(&self) -> Option<&Arc<Egress>> {
        self.egress.as_ref()
    }

    /// The private directory holding the sessions' bridge sockets (0700, made
    /// once, removed with the runtime; under `/dev/shm` when present, else the
    /// temp dir). Short on purpose: a unix socket path must fit in 108 bytes.
    ///
    /// Its `lock` file is `flock`ed for the runtime's life, which is how a later
    /// process knows the directory is still in use (see [`sweep_bridge_dirs`]).
    pub(crate) fn socket_dir(&self) -> Result<PathBuf> {
        self.socket_dir
            .get_or_init(|| {
                use std::os::unix::fs::DirBuilderExt;
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                let dir = bridge_base().join(format!(
                    "{BRIDGE_DIR_PREFIX}{}-{nanos:08x}",
                    std::process::id()
                ));
                // `create` (not recursive) fails if the name exists: nobody can
                // pre-plant the directory.
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .and_then(|()| {
                        let lock = std::fs::File::create_new(dir.join("lock"))?;
                        lock_exclusive(&lock, false)?;
                        Ok((dir, lock))
                    })
                    .map_err(|e| format!("cannot create the wasm-run socket directory: {e}"))
            })
            .as_ref()
            .map(|(dir, _)| dir.clone())
            .map_err(|e| Error::Sandbox(e.clone()))
    }
}

/// Removes the socket directories that dead processes left (see [`sweep_bridge_dirs`]).
pub(crate) fn sweep_stale() {
    sweep_bridge_dirs(&bridge_base());
}

/// Where bridge directories go: tmpfs when there is one (a socket is an inode
/// created and removed per session, which costs ~100 µs each on a busy disk and
/// ~5 µs there), else the temp dir.
fn bridge_base() -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// `flock(LOCK_EX)`, without waiting when `nonblocking`.
fn lock_exclusive(file: &std::fs::File, nonblocking: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let op = if nonblocking {
        libc::LOCK_EX | libc::LOCK_NB
    } else {
        libc::LOCK_EX
    };
    // SAFETY: an open descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes the bridge directories under `base` that a runtime left behind when
/// its process died (a crash or `SIGKILL` skips `Drop`): those named
/// `wasm-sandbox-run-<pid>-…`, owned by this user, not links, whose `<pid>` is not
/// a live process **and** whose `lock` is not held. The pid check covers the
/// moment between a directory's creation and its lock; the lock covers a pid that
/// is dead here but alive elsewhere (another pid namespace sharing `/dev/shm`). A
/// reused pid only delays the sweep. Returns how many were removed.
pub(crate) fn sweep_bridge_dirs(base: &std::path::Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(BRIDGE_DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let free = match std::fs::File::open(dir.join("lock")) {
            Ok(lock) => lock_exclusive(&lock, true).is_ok(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if free && std::fs::remove_dir_all(&dir).is_ok() {
            tracing::info!(dir = %dir.display(), "removed a stale wasm-run bridge directory");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_abandoned_bridge_dirs_of_this_product() {
        let base = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let make = |name: &str, lock: bool| {
            let d = base.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("0.sock"), "").unwrap();
            if lock {
                std::fs::write(d.join("lock"), "").unwrap();
            }
            d
        };
        let abandoned = make(&format!("{BRIDGE_DIR_PREFIX}{dead}-0a"), true);
        let old_style = make(&format!("{BRIDGE_DIR_PREFIX}{dead}-0b"), false);
        let locked = make(&format!("{BRIDGE_DIR_PREFIX}{dead}-0c"), true);
        let alive = make(
            &format!("{BRIDGE_DIR_PREFIX}{}-0d", std::process::id()),
            true,
        );
        let foreign = make(&format!("other-{dead}-0e"), false);
        let file = base.path().join(format!("{BRIDGE_DIR_PREFIX}{dead}-0f"));
        std::fs::write(&file, "").unwrap();
        let link = base.path().join(format!("{BRIDGE_DIR_PREFIX}{dead}-0g"));
        std::os::unix::fs::symlink(&foreign, &link).unwrap();
        let held = std::fs::File::open(locked.join("lock")).unwrap();
        lock_exclusive(&held, false).unwrap();

        assert_eq!(sweep_bridge_dirs(base.path()), 2);
        assert!(!abandoned.exists() && !old_style.exists());
        assert!(locked.exists() && alive.exists() && foreign.exists());
        assert!(file.exists() && link.symlink_metadata().is_ok());
        assert!(foreign.join("0.sock").exists(), "a link is not followed");
        drop(held);
        assert_eq!(sweep_bridge_dirs(base.path()), 1, "once its lock is free");
        assert!(!locked.exists());
    }
}
