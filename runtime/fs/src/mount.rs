//! `nosuid,nodev` on the host directory that holds session-written files.
//!
//! When the worker runs as root, a file the sandbox wrote can carry a setuid bit owned by root
//! (the sandbox's root is the host's root for file ownership when no unprivileged uid is
//! configured): bash planted a `chmod 4755` copy of `id` in the workspace, and on the host
//! `setpriv --reuid=65534 ./suid-id` printed `euid=0(root)`. Inside the sandbox every bind mount
//! is already `nosuid` (bubblewrap), and seccomp denies setting the bits; this is the host-side
//! layer: the worker bind-mounts its sessions directory onto itself and remounts it
//! `MS_NOSUID | MS_NODEV`. The kernel then ignores setuid/setgid bits and file capabilities on
//! every `execve` of a file below it, and refuses to open device nodes there, for every process
//! on the host, whatever a session left behind. Not `noexec`: bash runs the session's own
//! programs from `/workspace`.
//!
//! [`bind_nosuid_nodev`] makes the mount; the returned [`NosuidMount`] removes it
//! (`MNT_DETACH`) when dropped, so a clean exit leaves the host's mount table as it found it.
//! [`in_effect`] tells whether the directory already is `nosuid,nodev` (an operator's mount, a
//! `nosuid` tmpfs, a mount a crashed predecessor left), in which case nothing needs mounting.

use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, StatVfsMountFlags, StatxAttributes, StatxFlags};
use rustix::mount::{MountFlags, UnmountFlags};

/// Whether files below `path` are already on a `nosuid,nodev` mount.
pub fn in_effect(path: &Path) -> io::Result<bool> {
    let flags = rustix::fs::statvfs(path)?.f_flag;
    Ok(flags.contains(StatVfsMountFlags::NOSUID | StatVfsMountFlags::NODEV))
}

/// Whether `path` is the root of a mount (statx `STATX_ATTR_MOUNT_ROOT`); `false` where the
/// kernel cannot tell.
pub fn is_mount_root(path: &Path) -> io::Result<bool> {
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        StatxFlags::TYPE,
    )?;
    Ok(st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

/// A `nosuid,nodev` bind mount of a directory onto itself; unmounted when dropped.
#[derive(Debug)]
pub struct NosuidMount {
    path: PathBuf,
}

impl NosuidMount {
    /// Takes over a mount made earlier by [`bind_nosuid_nodev`] (by a process that died
    /// before unmounting it), so this one unmounts it when dropped.
    pub fn adopt(path: impl Into<PathBuf>) -> NosuidMount {
        NosuidMount { path: path.into() }
    }

    /// The mounted directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NosuidMount {
    fn drop(&mut self) {
        // Lazy: a process still holding a descriptor below it cannot make this fail.
        let _ = rustix::mount::unmount(
            self.path.as_path(),
            UnmountFlags::DETACH | UnmountFlags::NOFOLLOW,
        );
    }
}

/// Bind-mounts the directory `path` onto itself and remounts it `nosuid,nodev`, keeping the
/// other per-mount flags it had (read-only, `noexec`, atime handling). Needs `CAP_SYS_ADMIN`
/// (fails with `EPERM` otherwise). `path` should be a directory the caller created and owns;
/// the mount is visible to every process in the caller's mount namespace (the host's).
pub fn bind_nosuid_nodev(path: &Path) -> io::Result<NosuidMount> {
    let before = rustix::fs::statvfs(path)?.f_flag;
    rustix::mount::mount_bind(path, path)?;
    let mount = NosuidMount {
        path: path.to_path_buf(),
    };
    // A bind mount inherits its parent's propagation (shared under systemd): make it private
    // so neither it nor its later detach shows up in peer mount namespaces.
    rustix::mount::mount_change(path, rustix::mount::MountPropagationFlags::PRIVATE)?;
    // A bind remount replaces every per-mount flag: carry over the ones the directory had.
    let mut flags = MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV;
    for (had, keep) in [
        (StatVfsMountFlags::RDONLY, MountFlags::RDONLY),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        if before.contains(had) {
            flags |= keep;
        }
    }
    // On failure `mount` is dropped, which undoes the bind.
    rustix::mount::mount_remount(path, flags, c"")?;
    if !in_effect(path)? {
        return Err(io::Error::other(format!(
            "{} is still not nosuid,nodev after the remount",
            path.display()
        )));
    }
    Ok(mount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// Runs a setuid-root copy of `id` placed in `dir` as uid 65534; returns the euid it reports.
    fn euid_of_setuid_copy(dir: &Path) -> String {
        let sub = dir.join("bin");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = sub.join("suid-id");
        std::fs::copy("/usr/bin/id", &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "./suid-id",
                "-u",
            ])
            // Relative to the (world-searchable) directory: the 0700 temp dirs above it need
            // not be reachable by uid 65534.
            .current_dir(&sub)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn setuid_files_below_the_mount_do_not_elevate() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        if !Path::new("/usr/bin/id").exists()
            || std::process::Command::new("setpriv")
                .arg("--version")
                .output()
                .is_err()
        {
            eprintln!("skipped: /usr/bin/id or setpriv missing");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let control = tmp.path().join("control");
        let sessions = tmp.path().join("sessions");
        std::fs::create_dir(&control).unwrap();
        std::fs::create_dir(&sessions).unwrap();
        if in_effect(tmp.path()).unwrap() {
            eprintln!("skipped: the temp directory is already on a nosuid,nodev mount");
            return;
        }
        // Control: without the mount the setuid bit elevates (what the attack relied on).
        assert_eq!(euid_of_setuid_copy(&control), "0", "control elevates");
        assert!(!in_effect(&sessions).unwrap());
        let mount = match bind_nosuid_nodev(&sessions) {
            Ok(m) => m,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: mounting is not permitted here: {e}");
                return;
            }
            Err(e) => panic!("mount: {e}"),
        };
        assert!(in_effect(&sessions).unwrap());
        assert!(is_mount_root(&sessions).unwrap());
        assert_eq!(
            euid_of_setuid_copy(&sessions.join("w1.abc/workspace")),
            "65534",
            "the setuid bit is ignored below the nosuid mount"
        );
        drop(mount);
        assert!(!is_mount_root(&sessions).unwrap(), "unmounted on drop");
        assert!(!in_effect(&sessions).unwrap());
    }
}
