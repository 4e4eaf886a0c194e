//! Removing directory trees a session wrote.
//!
//! Everything below a session directory was written by code the model chose to run, so the
//! removal must hold whatever shape the tree has. `std::fs::remove_dir_all` (and cap-std's)
//! recurse once per level: a 25,000-deep chain made by bash overflowed a worker thread's stack
//! and aborted the whole worker (every session on it lost). As a non-root worker, a directory
//! left `chmod 000` made the removal fail and the session's data stayed on disk.
//!
//! [`remove_tree`] / [`remove_tree_at`] walk the tree with an explicit heap stack instead:
//!
//! - **No recursion, O(1) descriptors.** Only the current directory is open (plus the fixed
//!   parent of the root and, briefly, the one being entered or left). Going down opens the child
//!   relative to the current directory; going up opens `..` and checks its (device, inode)
//!   against what was recorded on the way down, aborting on a mismatch, so a directory moved
//!   while we were inside it can never make us delete in the wrong place. The heap stack holds
//!   one name and one identity per level: memory grows with depth × name length, i.e. with what
//!   the session actually wrote, never with the call stack.
//! - **Never follows a symbolic link.** Directories are opened with
//!   `O_DIRECTORY | O_NOFOLLOW`; whatever is not a directory (a link, a file, a FIFO, a socket, a
//!   device node) is unlinked by name with `unlinkat`, which removes the link itself. A link to a
//!   host path planted in the tree loses the link; its target is untouched.
//! - **Never blocks.** Nothing but directories is ever opened, and those with `O_NONBLOCK`;
//!   `O_DIRECTORY` is checked before a FIFO or a device would be opened, so a FIFO cannot park
//!   the thread in `open()` waiting for a writer.
//! - **Stays on one mount.** A directory that is a mount root (statx `MOUNT_ROOT`) or on another
//!   device is not entered: a bind mount inside a session tree is reported, never emptied.
//! - **Makes directories removable first.** A directory whose owner bits are not `rwx` gets
//!   `fchmod 0700` through the descriptor we hold (exactly that inode); one we cannot even open
//!   (`EACCES`, e.g. `chmod 000`) is opened `O_PATH | O_NOFOLLOW` and changed through
//!   `/proc/self/fd/N`, which names that same inode and never a link. As root this is moot
//!   (`CAP_DAC_OVERRIDE`); as an unprivileged worker it is what lets teardown remove a tree the
//!   session made unreadable, since the session's files are owned by the worker's uid.
//!
//! An entry that cannot be removed is skipped (the first error is returned at the end) so one
//! stubborn file does not keep the rest of the tree on disk.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;

/// How every directory of the tree is opened: never through a link, never blocking.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

/// Removes `path` and everything below it, without following symbolic links.
///
/// `path`'s final component may be a directory (removed with its contents), or anything else
/// (a link, a file, a FIFO: unlinked itself, never opened). A `path` that does not exist is not
/// an error. The directories leading to `path` are trusted (they are the caller's, e.g.
/// `<workdir>/sessions`); everything from the final component down is treated as hostile.
/// See the [module docs](self) for what this guarantees.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no final component to remove", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = match rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    remove_tree_at(&parent, name)
}

/// Removes the entry `name` of the directory `parent` and everything below it, without
/// following symbolic links; [`remove_tree`] for an already open parent (a cap-std `Dir`, an
/// `OwnedFd`, a `File`). `name` must be one path component (no `/`, not `.` or `..`). A
/// missing entry is not an error.
pub fn remove_tree_at(parent: impl AsFd, name: impl AsRef<OsStr>) -> io::Result<()> {
    let name = component(name.as_ref())?;
    remove_at(parent.as_fd(), &name)
}

/// Removes every entry of the directory `dir` (each with [`remove_tree_at`]) and keeps `dir`
/// itself. Returns how many entries were removed; on failure, the rest is still attempted and
/// the first error is returned. A missing `dir` counts as empty.
///
/// This is the start-up sweep of a worker-owned directory such as `<workdir>/sessions`: `dir`
/// itself is trusted, its entries are not.
pub fn clear_dir(dir: &Path) -> io::Result<usize> {
    let fd = match rustix::fs::open(dir, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    // Names first, then removal: the listing is not disturbed by our own unlinks.
    let mut names = Vec::new();
    let mut entries = Dir::read_from(&fd)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let name = entry.file_name();
        if !is_dot(name) {
            names.push(name.to_owned());
        }
    }
    drop(entries);
    let mut first_err = None;
    let mut removed = 0;
    for name in names {
        match remove_at(fd.as_fd(), &name) {
            Ok(()) => removed += 1,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// Checks that `name` is one component and makes it a C string.
fn component(name: &OsStr) -> io::Result<CString> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single path component"),
        ));
    }
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} contains a NUL byte"),
        )
    })
}

fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

/// A directory's identity: where `..` must lead back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Id {
    dev: (u32, u32),
    ino: u64,
}

/// What one `statx` on an open directory tells us.
struct Probe {
    id: Id,
    mode: u32,
    mount_root: bool,
}

fn probe(fd: BorrowedFd<'_>) -> io::Result<Probe> {
    let st = rustix::fs::statx(
        fd,
        c"",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::TYPE | StatxFlags::MODE | StatxFlags::INO,
    )?;
    Ok(Probe {
        id: Id {
            dev: (st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
        },
        mode: u32::from(st.stx_mode),
        mount_root: st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
            && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT),
    })
}

/// Gives the owner full access to a directory we hold open, so its entries can be listed and
/// unlinked. Best effort: a failure (not the owner) surfaces later as the unlink's error.
fn make_removable(fd: BorrowedFd<'_>, mode: u32) {
    if mode & 0o700 != 0o700 {
        let _ = rustix::fs::fchmod(fd, Mode::from_raw_mode(0o700));
    }
}

/// The entry `name` of `parent`, opened as a directory if it is one.
enum Child {
    Dir(OwnedFd),
    NotDir,
    Gone,
}

fn open_child(parent: BorrowedFd<'_>, name: &CStr) -> io::Result<Child> {
    match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(Child::Dir(fd)),
        // ELOOP: a symbolic link (O_NOFOLLOW); ENOTDIR: anything else that is not a directory.
        Err(Errno::NOTDIR | Errno::LOOP) => Ok(Child::NotDir),
        Err(Errno::NOENT) => Ok(Child::Gone),
        Err(Errno::ACCESS) => {
            // A directory we may not read (`chmod 000` by the session). O_PATH needs no
            // permission on the directory itself and, with O_NOFOLLOW | O_DIRECTORY, yields
            // that directory or fails; `/proc/self/fd/N` then names exactly that inode.
            let path_fd = match rustix::fs::openat(
                parent,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOTDIR | Errno::LOOP) => return Ok(Child::NotDir),
                Err(Errno::NOENT) => return Ok(Child::Gone),
                Err(e) => return Err(e.into()),
            };
            let magic = format!("/proc/self/fd/{}", path_fd.as_raw_fd());
            rustix::fs::chmod(magic.as_str(), Mode::from_raw_mode(0o700))?;
            drop(path_fd);
            match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => Ok(Child::Dir(fd)),
                Err(Errno::NOTDIR | Errno::LOOP) => Ok(Child::NotDir),
                Err(Errno::NOENT) => Ok(Child::Gone),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Unlinks a non-directory entry; a missing one is fine.
fn unlink(parent: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// One directory on the way down.
struct Frame {
    /// Its name in its parent.
    name: CString,
    /// Its identity, checked when we come back up to it through a child's `..`.
    id: Id,
    /// Where its listing resumes after a child subtree is done (a `getdents` offset).
    resume: i64,
    /// Whether the current pass over it removed anything (then one more pass follows, for
    /// filesystems whose offsets shift when entries go).
    progressed: bool,
}

fn changed(what: &str) -> io::Error {
    io::Error::other(format!(
        "the directory tree changed during removal ({what}); stopped so nothing outside it is touched"
    ))
}

fn remove_at(top: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let root = match open_child(top, name)? {
        Child::Gone => return Ok(()),
        Child::NotDir => return unlink(top, name).map_err(Into::into),
        Child::Dir(fd) => fd,
    };
    let p = probe(root.as_fd())?;
    let root_dev = p.id.dev;
    make_removable(root.as_fd(), p.mode);
    let mut stack = vec![Frame {
        name: name.to_owned(),
        id: p.id,
        resume: 0,
        progressed: false,
    }];
    let mut cur = Dir::new(root)?;
    let mut first_err: Option<io::Error> = None;
    let mut record = |e: io::Error| {
        first_err.get_or_insert(e);
    };
    loop {
        let frame = stack
            .last_mut()
            .expect("the stack holds the current directory");
        match scan(&mut cur, frame, root_dev, &mut record)? {
            Some((child, child_name, child_id, resume)) => {
                frame.resume = resume;
                stack.push(Frame {
                    name: child_name,
                    id: child_id,
                    resume: 0,
                    progressed: false,
                });
                cur = Dir::new(child)?;
                continue;
            }
            None if frame.progressed => {
                // Another pass: entries may have moved to offsets before the ones we resumed
                // at. Ends with the first pass that removes nothing.
                frame.progressed = false;
                frame.resume = 0;
                cur.rewind();
                continue;
            }
            None => {}
        }
        // `cur` is done (empty, or only entries we could not remove): remove it from its
        // parent and carry on there.
        let done = stack.pop().expect("the stack holds the current directory");
        let Some(parent_frame) = stack.last_mut() else {
            drop(cur);
            match rustix::fs::unlinkat(top, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => record(e.into()),
            }
            break;
        };
        let parent = rustix::fs::openat(cur.fd()?, c"..", DIR_FLAGS, Mode::empty())?;
        if probe(parent.as_fd())?.id != parent_frame.id {
            return Err(changed("a directory was moved"));
        }
        drop(cur);
        match rustix::fs::unlinkat(&parent, &done.name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => parent_frame.progressed = true,
            Err(e) => record(e.into()),
        }
        cur = Dir::new(parent)?;
        cur.seek(parent_frame.resume)?;
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Continues the listing of `cur`: unlinks what is not a directory, and returns the first
/// subdirectory to enter (its descriptor, name, identity and the offset to resume at), or
/// `None` at the end of the listing.
#[allow(
    clippy::type_complexity,
    reason = "a private helper's one return value, named at its single call site"
)]
fn scan(
    cur: &mut Dir,
    frame: &mut Frame,
    root_dev: (u32, u32),
    record: &mut impl FnMut(io::Error),
) -> io::Result<Option<(OwnedFd, CString, Id, i64)>> {
    while let Some(entry) = cur.read() {
        let entry = entry?;
        let name = entry.file_name();
        if is_dot(name) {
            continue;
        }
        let fd = cur.fd()?;
        let as_dir = match entry.file_type() {
            FileType::Directory | FileType::Unknown => true,
            _ => match unlink(fd, name) {
                Ok(()) => {
                    frame.progressed = true;
                    false
                }
                // Replaced by a directory since the listing: handle it as one.
                Err(Errno::ISDIR) => true,
                Err(e) => {
                    record(e.into());
                    false
                }
            },
        };
        if !as_dir {
            continue;
        }
        match open_child(fd, name) {
            Ok(Child::Dir(child)) => {
                let p = match probe(child.as_fd()) {
                    Ok(p) => p,
                    Err(e) => {
                        record(e);
                        continue;
                    }
                };
                if p.mount_root || p.id.dev != root_dev {
                    record(io::Error::other(format!(
                        "{name:?} is a mount point inside the tree; not entered"
                    )));
                    continue;
                }
                make_removable(child.as_fd(), p.mode);
                return Ok(Some((child, name.to_owned(), p.id, entry.offset())));
            }
            Ok(Child::NotDir) => match unlink(fd, name) {
                Ok(()) => frame.progressed = true,
                Err(e) => record(e.into()),
            },
            Ok(Child::Gone) => {}
            Err(e) => record(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    /// Runs `f` on a thread with a 256 KiB stack, failing if it takes longer than `limit`
    /// (a blocked `open()` on a FIFO would never return).
    fn on_small_stack<T: Send + 'static>(
        limit: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = tx.send(f());
            })
            .unwrap();
        rx.recv_timeout(limit)
            .expect("remove_tree finished in time (no recursion, no blocking)")
    }

    /// A chain of `depth` nested directories `d/d/d/…` under `base`, built with `*at` calls
    /// (a path this long cannot be named at once).
    fn deep_chain(base: &Path, depth: usize) {
        let mut fd = rustix::fs::open(base, DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..depth {
            rustix::fs::mkdirat(&fd, c"d", Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, c"d", DIR_FLAGS, Mode::empty()).unwrap();
        }
        rustix::fs::mkdirat(&fd, c"leaf", Mode::from_raw_mode(0o000)).unwrap();
    }

    #[test]
    fn a_25000_deep_chain_is_removed_on_a_small_stack() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("session");
        std::fs::create_dir(&root).unwrap();
        deep_chain(&root, 25_000);
        let r = root.clone();
        on_small_stack(Duration::from_secs(120), move || remove_tree(&r)).unwrap();
        assert!(!root.exists(), "the whole chain is gone");
        assert!(tmp.path().exists(), "the parent stays");
    }

    #[test]
    fn links_are_removed_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep.txt"), "keep").unwrap();
        let keep_file = tmp.path().join("keep-file");
        std::fs::write(&keep_file, "keep").unwrap();
        let root = tmp.path().join("session");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link-dir")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/b/link-dir")).unwrap();
        std::os::unix::fs::symlink(&keep_file, root.join("a/link-file")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", root.join("a/dangling")).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("keep.txt")).unwrap(),
            "keep"
        );
        assert_eq!(std::fs::read_to_string(&keep_file).unwrap(), "keep");
        // The root itself a link to a directory: the link goes, the target stays.
        std::os::unix::fs::symlink(&outside, &root).unwrap();
        remove_tree(&root).unwrap();
        assert!(std::fs::symlink_metadata(&root).is_err());
        assert!(outside.join("keep.txt").exists());
        // Missing is fine; "/" and ".." are refused.
        remove_tree(&root).unwrap();
        assert!(remove_tree(Path::new("/")).is_err());
        assert!(remove_tree(&tmp.path().join("..")).is_err());
        assert!(tmp.path().exists());
    }

    #[test]
    fn fifos_sockets_and_files_are_removed_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("session");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("sub/fifo").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(root.join("sub/sock")).unwrap();
        for i in 0..3000 {
            std::fs::write(root.join(format!("sub/f{i}")), "x").unwrap();
        }
        for i in 0..200 {
            std::fs::create_dir(root.join(format!("d{i}"))).unwrap();
            std::fs::write(root.join(format!("d{i}/x")), "x").unwrap();
        }
        let r = root.clone();
        on_small_stack(Duration::from_secs(60), move || remove_tree(&r)).unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn remove_tree_at_takes_an_open_parent_and_one_component() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("x/y")).unwrap();
        std::fs::write(tmp.path().join("file"), "f").unwrap();
        let parent = std::fs::File::open(tmp.path()).unwrap();
        remove_tree_at(&parent, "x").unwrap();
        remove_tree_at(&parent, "file").unwrap();
        remove_tree_at(&parent, "missing").unwrap();
        for bad in ["", ".", "..", "a/b"] {
            assert!(remove_tree_at(&parent, bad).is_err(), "{bad:?}");
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn clear_dir_empties_but_keeps_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        let sessions = tmp.path().join("sessions");
        std::fs::create_dir_all(sessions.join("w1.abc/workspace/deep")).unwrap();
        std::fs::create_dir_all(sessions.join(".pool/p1")).unwrap();
        std::os::unix::fs::symlink(&outside, sessions.join("link")).unwrap();
        std::fs::set_permissions(
            sessions.join("w1.abc/workspace"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        assert_eq!(clear_dir(&sessions).unwrap(), 3);
        assert!(sessions.is_dir());
        assert_eq!(std::fs::read_dir(&sessions).unwrap().count(), 0);
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        assert_eq!(clear_dir(&tmp.path().join("missing")).unwrap(), 0);
    }

    /// Builds a tree with unreadable, unwritable and unsearchable directories (as the session
    /// would with `chmod 000`) and removes it; run as root here and, by
    /// [`chmod_000_dirs_are_removed_as_a_non_root_uid`], as uid 10001.
    fn build_and_remove_locked_tree(base: &Path) {
        let root = base.join("session");
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/data"), "secret").unwrap();
        std::fs::write(root.join("a/data"), "secret").unwrap();
        std::fs::create_dir_all(root.join("w/x")).unwrap();
        for (dir, mode) in [
            ("a/b/c", 0o000),
            ("a/b", 0o000),
            ("a", 0o000),
            ("w/x", 0o500),
            ("w", 0o300),
        ] {
            std::fs::set_permissions(root.join(dir), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&root).unwrap();
        assert!(
            std::fs::symlink_metadata(&root).is_err(),
            "the locked tree is gone"
        );
    }

    #[test]
    fn chmod_000_dirs_are_removed_as_root_or_owner() {
        let tmp = tempfile::tempdir().unwrap();
        build_and_remove_locked_tree(tmp.path());
    }

    const NONROOT_DIR_ENV: &str = "WASM_SANDBOX_FS_TEST_NONROOT_DIR";

    /// Run by [`chmod_000_dirs_are_removed_as_a_non_root_uid`] in a child process as uid 10001.
    #[test]
    #[ignore = "helper: run as uid 10001 by chmod_000_dirs_are_removed_as_a_non_root_uid"]
    fn nonroot_child() {
        let dir = std::env::var_os(NONROOT_DIR_ENV).expect("run by the non-root test");
        assert_eq!(
            rustix::process::geteuid().as_raw(),
            10001,
            "runs as uid 10001"
        );
        build_and_remove_locked_tree(Path::new(&dir));
    }

    #[test]
    fn chmod_000_dirs_are_removed_as_a_non_root_uid() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to start a child as uid 10001");
            return;
        }
        if std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: setpriv (util-linux) is not installed");
            return;
        }
        // The test binary and the working directory must be reachable by uid 10001.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = tmp.path().join("test-bin");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        rustix::fs::chown(
            work.as_path(),
            Some(rustix::fs::Uid::from_raw(10001)),
            Some(rustix::fs::Gid::from_raw(10001)),
        )
        .unwrap();
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid=10001",
                "--regid=10001",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(&exe)
            .args([
                "--ignored",
                "--exact",
                "tree::tests::nonroot_child",
                "--nocapture",
            ])
            .env(NONROOT_DIR_ENV, &work)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child failed: {text}");
        assert!(text.contains("1 passed"), "the child test ran: {text}");
        assert!(!work.join("session").exists());
    }
}
