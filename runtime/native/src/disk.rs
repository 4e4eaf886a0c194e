//! The session disk cap: one size- and inode-capped filesystem per session holding
//! everything the session writes on the host (`/workspace`, `/mnt/session/outputs` and
//! writable memory stores).
//!
//! # Why a per-session filesystem
//!
//! `RLIMIT_FSIZE` caps one file, not a total: a loop writing many 1 GiB files fills the
//! host disk. A total cap needs the kernel to count a session's blocks:
//!
//! * **a loop-mounted ext4 image per session** (this module): a sparse file of `disk`
//!   bytes in the session directory, formatted with `-N disk_inodes`, mounted
//!   `nosuid,nodev`. The session's writes fail with `ENOSPC` at the cap, for bash and
//!   the file tools alike, and the host disk holds at most `disk` bytes for it (the
//!   image is sparse: an idle session costs ~200 KiB). Works on any host filesystem;
//!   adds ~7 ms (p50) to a session's start and ~3 ms to its teardown (BENCHMARKS.md,
//!   "Session shape").
//!   Needs `CAP_SYS_ADMIN` (mount) and loop devices (`/dev/loop-control`).
//! * project quotas (XFS/ext4 `prjquota`): no per-session mount, but the host volume
//!   must be mounted with `prjquota` and the worker needs `CAP_SYS_ADMIN` for the
//!   `FS_IOC_FSSETXATTR` project id and quota set-up anyway; not chosen because it ties
//!   the product to how the node's volume is mounted.
//! * tmpfs with `size=`: capped, but memory-backed (a 10 GiB disk would be 10 GiB of
//!   RAM or swap); used only for `/tmp` and `/dev/shm`, which the memory cgroup also
//!   charges.
//!
//! # Layout
//!
//! The image `<root>/.disk.img` is mounted at `<root>/.disk`; `workspace/` and
//! `outputs/` are created inside and bind-mounted at `<root>/workspace` and
//! `<root>/outputs`, so every path the worker, the file tools and bubblewrap use stays
//! the same while both directories share one cap. The binds inherit `nosuid,nodev`
//! from the loop mount. [`DiskCap`]'s `Drop` detaches the three mounts (lazily: a
//! process still holding a file cannot keep the mount busy), deletes the image and the
//! (now empty) mount points; the loop device is released with the last reference
//! (autoclear). The core `Session` owns it: drop the session before removing its
//! directory, as the worker's teardown does (`remove_tree` never crosses a mount).
//!
//! # Host overcommit
//!
//! The images are sparse, so a cap is a promise, not a reservation. Each mount is
//! admitted against the volume's free space ([`DiskCap::overcommit`]): it must cover what
//! the live caps may still write plus the new cap; `fallocate` was rejected because it
//! would cost every idle session its whole cap on disk.
//!
//! # Writable memory stores and crashes
//!
//! [`DiskCap::adopt`] moves a directory the worker filled before the cap existed (a
//! writable memory store) onto the cap. [`detach_below`] undoes a crashed worker's
//! mounts at the next start. Mount points are created by the worker and checked to be
//! real directories (a symlink planted there is refused, never followed).
//!
//! Nothing from the session is trusted here: the worker creates the image (`O_EXCL`,
//! mode 0600) and the mount points itself before the sandbox starts, and the session
//! only ever sees the inside of the filesystem.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The image file, relative to the session root.
pub const IMAGE: &str = ".disk.img";
/// The loop mount, relative to the session root.
pub const MOUNT: &str = ".disk";

fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn cstr(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{} has a NUL", p.display()))
}

fn bind(src: &Path, dst: &Path) -> Result<(), String> {
    let (s, d) = (cstr(src)?, cstr(dst)?);
    // SAFETY: mount(2) with valid C strings and no data.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot bind {} at {}: {}",
            src.display(),
            dst.display(),
            std::io::Error::last_os_error()
        ))
    }
}

fn detach(p: &Path) {
    if let Ok(c) = cstr(p) {
        // SAFETY: umount2(2) with a valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Refuses anything at `p` but a real directory: a mount on a symlink would land
/// wherever the link points.
fn real_dir(p: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "{} is not a directory (a symlink is refused)",
            p.display()
        )),
        Err(e) => Err(format!("cannot inspect {}: {e}", p.display())),
    }
}

/// Copies the directories and regular files below `from` into the existing `to`,
/// never following a link (see [`DiskCap::adopt`]).
fn copy_tree(from: &Path, to: &Path, depth: usize) -> std::io::Result<()> {
    if depth > 64 {
        return Err(std::io::Error::other("deeper than 64 levels"));
    }
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst, depth + 1)?;
            std::fs::set_permissions(&dst, entry.metadata()?.permissions())?;
        } else if kind.is_file() {
            use std::os::unix::fs::OpenOptionsExt;
            let mut r = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&src)?;
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&dst)?;
            std::io::copy(&mut r, &mut w)?;
            std::fs::set_permissions(&dst, r.metadata()?.permissions())?;
        } else {
            tracing::warn!(path = %src.display(), "not a file or directory; not copied onto the disk cap");
        }
    }
    Ok(())
}

/// Decodes a path field of `/proc/self/mountinfo` (the kernel writes space, tab,
/// newline and backslash as `\ooo` octal escapes).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let d = |k: usize| u32::from(b[i + k] - b'0');
            out.push((d(1) * 64 + d(2) * 8 + d(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&out),
    ))
}

/// The mount points strictly below `dir` in `mountinfo`, deepest first.
fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p != dir && p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Lazily unmounts (`MNT_DETACH`) every mount strictly below `dir`, deepest first:
/// the disk caps and binds of sessions a crashed worker left behind. Called before the
/// worker sweeps its stale session directories, whose removal never crosses a mount
/// (so without this a crash would leave each session's image, loop device and data on
/// the host for good). `dir` itself is left alone (it may be the worker's own
/// `nosuid,nodev` bind). Returns how many mounts were detached.
///
/// # Errors
/// `dir` or `/proc/self/mountinfo` cannot be read.
pub fn detach_below(dir: &Path) -> Result<usize, String> {
    let dir =
        std::fs::canonicalize(dir).map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    let mut detached = 0;
    // Mounts can be stacked on one point: repeat until none is left (bounded).
    for _ in 0..16 {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let below = mounts_below(&info, &dir);
        if below.is_empty() {
            break;
        }
        let mut progress = false;
        for m in below {
            let Ok(c) = cstr(&m) else { continue };
            // SAFETY: umount2(2) with a valid C string.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } == 0 {
                detached += 1;
                progress = true;
            } else {
                tracing::warn!(mount = %m.display(), error = %std::io::Error::last_os_error(),
                    "cannot detach a stale session mount");
            }
        }
        if !progress {
            break;
        }
    }
    Ok(detached)
}

/// The caps mounted by this process and not yet dropped: `(id, image, cap bytes)`.
///
/// Host overcommit: the images are sparse, so a cap is a promise, not a reservation: ten 10 GiB caps fit
/// on a 20 GiB volume until the sessions start writing, and then the *host* volume fills
/// (the failure the cap exists to prevent, for the worker and every other session).
/// `fallocate` would make every promise real but cost every idle session its whole cap
/// on disk. Instead each mount is admitted against what is free: the volume's free
/// space must cover what the live caps may still write (their cap less what their image
/// already holds) plus the new cap. The check and the registration happen under one lock,
/// so concurrent session starts cannot both take the last room. What it does not cover:
/// other writers on the same volume (the ledger, the compile cache) — keep the workdir on
/// a volume of its own, as `deploy/` does.
static LIVE: std::sync::Mutex<Vec<(u64, PathBuf, u64)>> = std::sync::Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What the live caps may still write: each cap less its image's blocks on the host.
fn outstanding(live: &[(u64, PathBuf, u64)]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    live.iter()
        .map(|(_, image, cap)| {
            let held = std::fs::metadata(image).map_or(0, |m| m.blocks() * 512);
            cap.saturating_sub(held)
        })
        .sum()
}

fn free_on(dir: &Path) -> Option<u64> {
    let c = cstr(dir).ok()?;
    // SAFETY: statvfs(3) into a zeroed struct with a valid path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail * st.f_frsize)
}

/// One session's capped filesystem; unmounted and deleted on drop.
#[derive(Debug)]
pub struct DiskCap {
    root: PathBuf,
    mounted: Vec<PathBuf>,
    image: PathBuf,
    peak: std::sync::atomic::AtomicU64,
    id: u64,
    overcommit: Option<String>,
}

impl DiskCap {
    /// Creates `<root>/.disk.img` of `bytes` with `inodes` inodes, mounts it and binds
    /// its `workspace/` and `outputs/` at `<root>/workspace` and `<root>/outputs`
    /// (created empty; they must not exist or be empty).
    ///
    /// # Errors
    /// Missing tools, no permission to mount, no loop device; everything made is undone.
    pub fn mount(root: &Path, bytes: u64, inodes: Option<u64>) -> Result<DiskCap, String> {
        let mkfs = find_tool("mkfs.ext4").ok_or("mkfs.ext4 not found (package e2fsprogs)")?;
        let mount = find_tool("mount").ok_or("mount not found (package mount)")?;
        let image = root.join(IMAGE);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let overcommit = {
            let mut live = LIVE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let promised = outstanding(&live);
            let free = free_on(root);
            live.push((id, image.clone(), bytes));
            match free {
                Some(free) if free < promised.saturating_add(bytes) => Some(format!(
                    "the host volume of {} has {} free, but the live sessions' disk caps may \
                     still write {} and this session's cap is {}: the host disk could fill",
                    root.display(),
                    wasm_sandbox_units::format_size(free),
                    wasm_sandbox_units::format_size(promised),
                    wasm_sandbox_units::format_size(bytes)
                )),
                _ => None,
            }
        };
        let mut cap = DiskCap {
            root: root.to_path_buf(),
            mounted: Vec::new(),
            image: image.clone(),
            peak: std::sync::atomic::AtomicU64::new(0),
            id,
            overcommit,
        };
        {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&image)
                .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
            f.set_len(bytes)
                .map_err(|e| format!("cannot size {}: {e}", image.display()))?;
        }
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut mk = Command::new(&mkfs);
        // No journal (the filesystem dies with the session), no reserved blocks (the
        // session gets all of `disk`), lazy inode tables (formatting writes ~200 KiB).
        mk.args(["-q", "-F", "-O", "^has_journal,^resize_inode", "-m", "0"])
            .arg("-E")
            .arg(format!(
                "lazy_itable_init=1,nodiscard,root_owner={uid}:{gid}"
            ));
        if let Some(n) = inodes {
            mk.arg("-N").arg(n.to_string());
        }
        mk.arg(&image);
        run(&mut mk, "mkfs.ext4")?;
        let mnt = root.join(MOUNT);
        for d in [&mnt, &root.join("workspace"), &root.join("outputs")] {
            if let Err(e) = std::fs::create_dir(d)
                && e.kind() != std::io::ErrorKind::AlreadyExists
            {
                return Err(format!("cannot create {}: {e}", d.display()));
            }
            real_dir(d)?;
        }
        // `noinit_itable`: no background thread zeroing the inode tables mkfs left
        // uninitialised (`lazy_itable_init`). The kernel never reads an inode past a
        // group's used count, and the image is sparse, so the holes read as zero anyway;
        // without it every session's mount writes its whole inode table to the host disk
        // in the background (BENCHMARKS.md, "Session shape").
        run(
            Command::new(&mount)
                .args([
                    "-t",
                    "ext4",
                    "-o",
                    "loop,nosuid,nodev,noatime,noinit_itable",
                ])
                .arg(&image)
                .arg(&mnt),
            "mount -o loop",
        )?;
        cap.mounted.push(mnt.clone());
        for name in ["workspace", "outputs"] {
            let inner = mnt.join(name);
            std::fs::create_dir(&inner)
                .map_err(|e| format!("cannot create {}: {e}", inner.display()))?;
            bind(&inner, &root.join(name))?;
            cap.mounted.push(root.join(name));
        }
        Ok(cap)
    }

    /// Moves the host directory `dir` (inside the session root, made by the worker, for
    /// instance a writable memory store `<root>/memory/<id>` it downloaded) onto the
    /// capped filesystem: its tree is copied to the same relative path inside the cap and
    /// that copy is bound over `dir`, so every later write through `dir`, by bash, the
    /// file tools or the memory sync, counts against `disk`.
    ///
    /// Why a copy: the worker downloads memory stores before the core session (which owns
    /// this cap) exists, and a rename cannot cross filesystems. The originals stay hidden
    /// under the bind until teardown; they are bounded by the memory-store download limits
    /// and were never writable by the session. Only directories and regular files are
    /// copied (the worker's download writes nothing else); nothing is followed.
    ///
    /// # Errors
    /// `dir` outside the root, not a real directory (a symlink anywhere below the root
    /// is refused), or larger than the room left on the cap (`ENOSPC`).
    pub fn adopt(&mut self, dir: &Path) -> Result<(), String> {
        let rel = dir
            .strip_prefix(&self.root)
            .map_err(|_| format!("{} is not inside {}", dir.display(), self.root.display()))?;
        let mut at = self.root.clone();
        for c in rel.components() {
            match c {
                std::path::Component::Normal(n) if n != MOUNT && n != IMAGE => at.push(n),
                _ => {
                    return Err(format!(
                        "{} is not a plain path below the root",
                        dir.display()
                    ));
                }
            }
            real_dir(&at)?;
        }
        let inner = self.root.join(MOUNT).join(rel);
        std::fs::create_dir_all(&inner)
            .map_err(|e| format!("cannot create {}: {e}", inner.display()))?;
        copy_tree(dir, &inner, 0)
            .and_then(|()| {
                std::fs::set_permissions(&inner, std::fs::symlink_metadata(dir)?.permissions())
            })
            .map_err(|e| {
                format!(
                    "cannot copy {} onto the session's disk cap: {e}",
                    dir.display()
                )
            })?;
        bind(&inner, dir)?;
        self.mounted.push(dir.to_path_buf());
        Ok(())
    }

    /// Why this cap overcommits the host volume, when it does (module docs, "Host
    /// overcommit"): the
    /// caller refuses the session under `enforce = "required"` and logs it otherwise.
    pub fn overcommit(&self) -> Option<&str> {
        self.overcommit.as_deref()
    }

    fn statvfs(&self) -> Option<libc::statvfs> {
        let c = cstr(&self.root.join(MOUNT)).ok()?;
        // SAFETY: statvfs(3) into a zeroed struct with a valid path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then_some(st)
    }

    /// Bytes still free on the filesystem.
    pub fn free_bytes(&self) -> Option<u64> {
        let st = self.statvfs()?;
        Some(st.f_bavail * st.f_frsize)
    }

    /// The cap, in bytes (the filesystem's size).
    pub fn size_bytes(&self) -> Option<u64> {
        let st = self.statvfs()?;
        Some(st.f_blocks * st.f_frsize)
    }

    /// Bytes in use on the filesystem now (blocks, as `df` counts them), and the peak
    /// seen by this and earlier calls.
    pub fn used_bytes(&self) -> Option<u64> {
        let st = self.statvfs()?;
        let used = (st.f_blocks - st.f_bfree) * st.f_frsize;
        self.peak
            .fetch_max(used, std::sync::atomic::Ordering::Relaxed);
        Some(used)
    }

    /// The most bytes [`used_bytes`](Self::used_bytes) has seen (sampled after each
    /// tool call by the caller).
    pub fn peak_bytes(&self) -> u64 {
        let _ = self.used_bytes();
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks once that this host can mount a capped filesystem (a 4 MiB one in a
    /// temporary directory under `dir`).
    ///
    /// # Errors
    /// What is missing, for the report and `enforce = "required"`.
    pub fn probe(dir: &Path) -> Result<(), String> {
        let tmp = dir.join(format!(
            "wasm-sandbox-disk-probe-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let r = DiskCap::mount(&tmp, 4 << 20, Some(64)).map(drop);
        let _ = std::fs::remove_dir_all(&tmp);
        r.map_err(|e| {
            format!(
                "{e} (a per-session capped filesystem needs root or CAP_SYS_ADMIN, \
                 /dev/loop-control and mkfs.ext4)"
            )
        })
    }
}

impl Drop for DiskCap {
    fn drop(&mut self) {
        LIVE.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(id, _, _)| *id != self.id);
        for m in self.mounted.iter().rev() {
            detach(m);
        }
        let _ = std::fs::remove_file(&self.image);
        // The mount points, now empty directories (`remove_tree` does not cross mounts,
        // so a removal that ran while they were mounted left them behind).
        for d in [MOUNT, "workspace", "outputs"] {
            let _ = std::fs::remove_dir(self.root.join(d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_below_decodes_and_orders_deepest_first() {
        let info = "\
22 1 0:21 / / rw - ext4 /dev/root rw
30 22 7:0 / /w/sessions rw - ext4 /dev/root rw
31 30 7:1 / /w/sessions/a/.disk rw - ext4 /dev/loop1 rw
32 30 7:1 /workspace /w/sessions/a/workspace rw - ext4 /dev/loop1 rw
33 30 7:1 /m /w/sessions/a\\040b/memory/x rw - ext4 /dev/loop1 rw
34 22 0:5 / /w/sessions-other rw - tmpfs tmpfs rw
";
        let got = mounts_below(info, Path::new("/w/sessions"));
        assert_eq!(
            got,
            [
                PathBuf::from("/w/sessions/a b/memory/x"),
                PathBuf::from("/w/sessions/a/.disk"),
                PathBuf::from("/w/sessions/a/workspace"),
            ]
        );
    }
}
