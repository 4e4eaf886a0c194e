//! The worker's directory on the host: the workdir lock, `<workdir>/sessions` (its owner
//! marker, the sweep of what a crashed predecessor left, the `nosuid,nodev` mount when root),
//! and one fresh directory per claim. Moved out of `worker.rs` unchanged; the security
//! reasoning is beside each check.

use std::path::{Path, PathBuf};

/// Checks that a server-issued id is usable as one path component.
pub(crate) fn safe_component(id: &str) -> Option<&str> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then_some(id)
}

/// The directory below the workdir that holds every session directory (and the sandbox pool).
pub const SESSIONS_DIR: &str = "sessions";

/// The lock file in the workdir held by the worker serving it.
pub const WORKDIR_LOCK: &str = ".wasm-sandbox.lock";

/// Written to the lock file while this worker holds the `nosuid,nodev` mount of the sessions
/// directory, so a successor can tell its predecessor's mount from an operator's.
const MOUNT_MARKER: &str = "nosuid-mount";
/// The file that marks `<workdir>/sessions` as this product's: a `sessions/` folder without it
/// (and not empty) was made by someone else, and the worker refuses to sweep it.
pub const SESSIONS_OWNER_MARKER: &str = ".wasm-sandbox-sessions";

/// Creates this claim's own session directory `<workdir>/sessions/<work_id>.<claim>` (0700).
///
/// `<claim>` is fresh randomness per call, and the directory is created with `mkdir` (it must
/// not exist), so two claims of the same work id never share, reuse or remove each other's
/// directory.
pub(crate) fn prepare_session_dir(workdir: &Path, work_id: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let name = safe_component(work_id)
        .ok_or_else(|| anyhow::anyhow!("work id is not a safe directory name"))?;
    let parent = workdir.join(SESSIONS_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)?;
    let claim = uuid::Uuid::new_v4().simple().to_string();
    let root = parent.join(format!("{name}.{}", &claim[..16]));
    std::fs::DirBuilder::new().mode(0o700).create(&root)?;
    Ok(root)
}

/// Removes a session directory (see the module docs: iterative, never follows a link, never
/// blocks, makes locked directories removable).
pub(crate) fn remove_session_dir(root: &Path) -> std::io::Result<()> {
    wasm_sandbox_fs::tree::remove_tree(root)
}

/// What a worker holds on its workdir while it serves: the exclusive lock, and the
/// `nosuid,nodev` mount of `<workdir>/sessions` when it made one. Dropping it unmounts.
#[derive(Debug)]
pub struct WorkdirGuard {
    lock: std::fs::File,
    mount: Option<wasm_sandbox_fs::mount::NosuidMount>,
    sessions: PathBuf,
}

impl WorkdirGuard {
    /// `<workdir>/sessions`.
    pub fn sessions_dir(&self) -> &Path {
        &self.sessions
    }

    /// Whether this worker mounted (or took over) the `nosuid,nodev` mount of the sessions
    /// directory.
    pub fn mounted(&self) -> bool {
        self.mount.is_some()
    }
}

impl Drop for WorkdirGuard {
    fn drop(&mut self) {
        // Every session was torn down before the worker returned; what is left (the sandbox
        // pool's directory) is this worker's own garbage. Still under the lock.
        if let Err(e) = wasm_sandbox_fs::tree::clear_dir(&self.sessions) {
            tracing::warn!(dir = %self.sessions.display(), error = %e, "could not empty the sessions directory at exit");
        }
        // The folder stays ours: keep the marker so the next start may sweep it.
        let _ = std::fs::write(
            self.sessions.join(SESSIONS_OWNER_MARKER),
            b"created by wasm-sandbox; swept at every start\n",
        );
        if self.mount.take().is_some() {
            // The mount is gone: forget the marker so no successor adopts a mount that is not
            // there (harmless if it did, but the lock file should say what is true).
            let _ = write_lock_file(&self.lock, false);
        }
    }
}

fn write_lock_file(mut file: &std::fs::File, mounted: bool) -> std::io::Result<()> {
    use std::io::{Seek as _, Write as _};
    file.set_len(0)?;
    file.rewind()?;
    let marker = if mounted {
        format!("{MOUNT_MARKER}\n")
    } else {
        String::new()
    };
    write!(file, "pid {}\n{marker}", std::process::id())
}

/// Takes the workdir for this worker: locks it, sweeps what a crashed predecessor left in
/// `<workdir>/sessions`, and mounts that directory `nosuid,nodev` where this process may mount.
///
/// Fails (refusing to start) when another worker holds the workdir: sharing it would let this
/// worker's sweep delete a live worker's sessions. The lock is an `flock` on
/// `<workdir>/.wasm-sandbox.lock`, released by the kernel when the process exits however it
/// exits, so a crashed worker never blocks its successor. Nothing in the workdir but
/// `sessions/` (which only the worker writes) is swept. When mounting is not permitted (an
/// unprivileged worker), that step is skipped with a logged reason.
pub fn claim_workdir(workdir: &Path) -> anyhow::Result<WorkdirGuard> {
    use std::io::Read as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(workdir)
        .map_err(|e| anyhow::anyhow!("creating the workdir {}: {e}", workdir.display()))?;
    let lock_path = workdir.join(WORKDIR_LOCK);
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", lock_path.display()))?;
    let mut previous = String::new();
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let _ = lock.read_to_string(&mut previous);
            let holder = previous
                .lines()
                .next()
                .unwrap_or("")
                .strip_prefix("pid ")
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            anyhow::bail!(
                "another wasm-sandbox worker{holder} is serving the workdir {}: {} is locked; \
                 give each worker its own --workdir",
                workdir.display(),
                lock_path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("locking {}: {e}", lock_path.display())
        }
    }
    let _ = lock.read_to_string(&mut previous);
    let sessions = workdir.join(SESSIONS_DIR);
    let owner_marker = sessions.join(SESSIONS_OWNER_MARKER);
    match std::fs::symlink_metadata(&sessions) {
        // Never delete what the worker did not create: an explicit `--workdir` may be a folder
        // that already holds someone's `sessions/`. Only a folder carrying our marker (or an
        // empty one) is ours to sweep.
        Ok(m) if m.is_dir() => {
            let ours = std::fs::symlink_metadata(&owner_marker).is_ok_and(|m| m.is_file());
            let empty = std::fs::read_dir(&sessions)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !ours && !empty {
                anyhow::bail!(
                    "{} holds files this worker did not create (no {SESSIONS_OWNER_MARKER} \
                     marker); move them away or choose another --workdir",
                    sessions.display()
                );
            }
        }
        Ok(_) => anyhow::bail!(
            "{} is not a directory; remove it or choose another --workdir",
            sessions.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&sessions)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", sessions.display()))?;
        }
        Err(e) => anyhow::bail!("{}: {e}", sessions.display()),
    }
    // A crashed run's disk caps and binds first (`clear_dir` never crosses a mount, so
    // their images, loop devices and data would otherwise stay on the host for good).
    match wasm_sandbox_native::disk::detach_below(&sessions) {
        Ok(0) => {}
        Ok(n) => tracing::info!(dir = %sessions.display(), detached = n,
            "detached mounts left by an earlier run"),
        Err(e) => tracing::warn!(dir = %sessions.display(), error = %e,
            "could not look for mounts left by an earlier run"),
    }
    match wasm_sandbox_fs::tree::clear_dir(&sessions) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            dir = %sessions.display(),
            removed = n,
            "removed stale session directories left by an earlier run"
        ),
        Err(e) => tracing::warn!(
            dir = %sessions.display(),
            error = %e,
            "could not remove every stale session directory"
        ),
    }
    std::fs::write(
        &owner_marker,
        b"created by wasm-sandbox; swept at every start\n",
    )
    .map_err(|e| anyhow::anyhow!("writing {}: {e}", owner_marker.display()))?;
    let mount = mount_sessions_nosuid(&sessions, previous.lines().any(|l| l == MOUNT_MARKER));
    write_lock_file(&lock, mount.is_some())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", lock_path.display()))?;
    Ok(WorkdirGuard {
        lock,
        mount,
        sessions,
    })
}

/// Mounts `sessions` onto itself `nosuid,nodev` unless that is already in effect; takes over
/// the mount a crashed predecessor left (`left_by_predecessor`: its lock file said so).
fn mount_sessions_nosuid(
    sessions: &Path,
    left_by_predecessor: bool,
) -> Option<wasm_sandbox_fs::mount::NosuidMount> {
    use wasm_sandbox_fs::mount;
    let in_effect = match mount::in_effect(sessions) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(dir = %sessions.display(), error = %e, "statvfs failed; not mounting the sessions directory nosuid,nodev");
            return None;
        }
    };
    if in_effect {
        if left_by_predecessor && mount::is_mount_root(sessions).unwrap_or(false) {
            tracing::info!(dir = %sessions.display(), "taking over the nosuid,nodev mount an earlier run left");
            return Some(mount::NosuidMount::adopt(sessions));
        }
        tracing::info!(dir = %sessions.display(), "sessions directory is already nosuid,nodev");
        return None;
    }
    match mount::bind_nosuid_nodev(sessions) {
        Ok(m) => {
            tracing::info!(dir = %sessions.display(), "mounted the sessions directory nosuid,nodev");
            Some(m)
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                // Root without CAP_SYS_ADMIN (a container's default): a session's files are
                // root's on the host, and only the sandbox's seccomp filter keeps set-id bits
                // off them. Say so loudly; the deploy manifests run as uid 10001 instead.
                tracing::warn!(
                    dir = %sessions.display(),
                    "running as root but not permitted to mount the sessions directory nosuid,nodev \
                     (needs CAP_SYS_ADMIN): set-id files are kept out by the sandbox's seccomp \
                     filter alone; run the worker as an unprivileged user"
                );
            } else {
                // Unprivileged: a session's files belong to this worker's uid, so no setuid-root
                // file can come from one; the sandbox's seccomp filter denies setting the bits.
                tracing::info!(
                    dir = %sessions.display(),
                    "not mounting the sessions directory nosuid,nodev: not permitted (needs CAP_SYS_ADMIN)"
                );
            }
            None
        }
        Err(e) => {
            tracing::warn!(dir = %sessions.display(), error = %e, "could not mount the sessions directory nosuid,nodev");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_ids_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\0b",
            "a b",
            &"x".repeat(200),
        ] {
            assert!(safe_component(bad).is_none(), "{bad:?}");
        }
        assert_eq!(safe_component("work_01ABC-x.y"), Some("work_01ABC-x.y"));
    }

    #[test]
    fn session_dir_removal_does_not_follow_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep.txt"), "keep").unwrap();
        let root = prepare_session_dir(tmp.path(), "work_1").unwrap();
        assert!(root.parent().unwrap().ends_with("sessions"));
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("sub/link2")).unwrap();
        remove_session_dir(&root).unwrap();
        assert!(!root.exists());
        assert!(outside.join("keep.txt").exists());
        // The session root itself replaced by a link: the link goes, the target stays.
        std::os::unix::fs::symlink(&outside, &root).unwrap();
        remove_session_dir(&root).unwrap();
        assert!(std::fs::symlink_metadata(&root).is_err());
        assert!(outside.join("keep.txt").exists());
        assert!(prepare_session_dir(tmp.path(), "../escape").is_err());
    }

    /// Issue 11: keyed by work id, a re-claim of the same item during the first run's teardown
    /// removed the first run's files at set-up, and the first teardown then removed the second
    /// run's. Keyed by claim, each run has its own directory.
    #[test]
    fn two_claims_of_one_work_id_get_their_own_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let first = prepare_session_dir(tmp.path(), "work_1").unwrap();
        std::fs::write(first.join("first.txt"), "1").unwrap();
        let second = prepare_session_dir(tmp.path(), "work_1").unwrap();
        assert_ne!(first, second, "two claims, two directories");
        for root in [&first, &second] {
            let name = root.file_name().unwrap().to_str().unwrap();
            let claim = name.strip_prefix("work_1.").expect("<work_id>.<claim>");
            assert_eq!(claim.len(), 16, "{name}");
            assert!(claim.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        }
        assert_eq!(
            std::fs::read_to_string(first.join("first.txt")).unwrap(),
            "1",
            "setting up the second claim left the first run's files alone"
        );
        std::fs::write(second.join("second.txt"), "2").unwrap();
        remove_session_dir(&first).unwrap();
        assert_eq!(
            std::fs::read_to_string(second.join("second.txt")).unwrap(),
            "2",
            "tearing down the first claim left the second run's files alone"
        );
    }

    /// Start-up: stale session directories are swept (and nothing else in the workdir), the
    /// workdir is locked against a second worker, and, as root, the sessions directory is
    /// mounted nosuid,nodev until the guard is dropped.
    #[test]
    fn claim_workdir_sweeps_locks_and_mounts() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let workdir = tmp.path().join("w");
        let stale = workdir.join("sessions/work_old.0123456789abcdef");
        std::fs::create_dir_all(stale.join("workspace/locked/inner")).unwrap();
        std::fs::write(stale.join("workspace/locked/inner/data"), "stale").unwrap();
        std::fs::set_permissions(
            stale.join("workspace/locked"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        std::fs::create_dir_all(workdir.join("sessions/.pool/p1-0/workspace")).unwrap();
        // An earlier run of ours left these: its marker is there.
        std::fs::write(workdir.join("sessions").join(SESSIONS_OWNER_MARKER), "").unwrap();
        let outside = tmp.path().join("outside.txt");
        std::fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, stale.join("workspace/link")).unwrap();
        std::fs::write(workdir.join("operator-notes.txt"), "keep").unwrap();

        let guard = claim_workdir(&workdir).unwrap();
        let left: Vec<_> = std::fs::read_dir(workdir.join("sessions"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            [SESSIONS_OWNER_MARKER],
            "stale session directories swept, the marker kept"
        );
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(workdir.join("operator-notes.txt")).unwrap(),
            "keep",
            "nothing outside sessions/ is touched"
        );
        let err = claim_workdir(&workdir).unwrap_err().to_string();
        assert!(
            err.contains("another wasm-sandbox worker")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        let sessions = workdir.join("sessions");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root && !wasm_sandbox_fs::mount::in_effect(tmp.path()).unwrap() {
            assert!(guard.mounted(), "root mounts the sessions directory");
            assert!(wasm_sandbox_fs::mount::in_effect(&sessions).unwrap());
        } else {
            eprintln!("mount check skipped: not root, or the temp dir is already nosuid,nodev");
        }
        drop(guard);
        assert!(
            !wasm_sandbox_fs::mount::is_mount_root(&sessions).unwrap(),
            "unmounted on drop"
        );
        let again = claim_workdir(&workdir).expect("the lock is released with the guard");
        drop(again);
    }

    /// Issue 17: never delete what the worker did not create. An explicit workdir that already
    /// holds someone's `sessions/` folder (no marker, not empty) is refused, untouched; an
    /// empty one is adopted.
    #[test]
    fn a_foreign_sessions_folder_is_refused_not_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let workdir = tmp.path().join("w");
        std::fs::create_dir_all(workdir.join("sessions/notes")).unwrap();
        std::fs::write(workdir.join("sessions/notes/todo.txt"), "mine").unwrap();
        let err = claim_workdir(&workdir).unwrap_err().to_string();
        assert!(
            err.contains("did not create") && err.contains(SESSIONS_OWNER_MARKER),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(workdir.join("sessions/notes/todo.txt")).unwrap(),
            "mine"
        );
        let empty = tmp.path().join("e");
        std::fs::create_dir_all(empty.join("sessions")).unwrap();
        let guard = claim_workdir(&empty).expect("an empty sessions folder is adopted");
        assert!(empty.join("sessions").join(SESSIONS_OWNER_MARKER).is_file());
        drop(guard);
        assert!(
            empty.join("sessions").join(SESSIONS_OWNER_MARKER).is_file(),
            "the marker outlives the run"
        );
    }
}
