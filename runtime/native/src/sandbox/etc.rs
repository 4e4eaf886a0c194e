//! The sandbox's `/etc`: only allow-listed files, never secrets, prepared once as a
//! private copy so each sandbox binds one directory.

use std::path::{Path, PathBuf};

use crate::config::BashConfig;

fn is_forbidden_etc(p: &Path) -> bool {
    let s = p.to_string_lossy();
    ["shadow", "gshadow", "sudoers", "ssl/private", "ssh"]
        .iter()
        .any(|bad| s.contains(bad))
}

/// The configured `/etc` entries that exist and are not on the deny-list.
pub(super) fn allowed_etc_files(c: &BashConfig) -> Vec<PathBuf> {
    c.etc_files
        .iter()
        .filter(|f| {
            f.starts_with("/etc")
                && !f
                    .components()
                    .any(|x| matches!(x, std::path::Component::ParentDir))
                && std::fs::symlink_metadata(f).is_ok()
                && !is_forbidden_etc(f)
        })
        .cloned()
        .collect()
}

/// A private host directory holding copies of the allow-listed `/etc` entries, so
/// each sandbox needs one bind mount for `/etc` instead of one per file (each mount
/// costs bubblewrap time at every session start). Symlinks are copied as symlinks
/// (they resolve inside the sandbox); modes are kept. Removed on drop.
#[derive(Debug)]
pub(super) struct PreparedEtc {
    pub(super) dir: PathBuf,
}

impl PreparedEtc {
    pub(super) fn create(c: &BashConfig) -> std::io::Result<Self> {
        Self::remove_stale();
        let dir = std::env::temp_dir().join(format!(
            "wasm-sandbox-etc-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&dir)?;
        let prepared = Self { dir };
        std::fs::set_permissions(
            &prepared.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        for f in allowed_etc_files(c) {
            let Ok(rel) = f.strip_prefix("/etc") else {
                continue;
            };
            let target = prepared.dir.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            copy_tree(&f, &target)?;
        }
        Ok(prepared)
    }
}

impl PreparedEtc {
    /// Removes copies left by processes that exited without dropping their sandbox
    /// (e.g. one held in a `static`, or a crash).
    fn remove_stale() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("wasm-sandbox-etc-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        std::fs::set_permissions(dst, meta.permissions())?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else if meta.is_file() {
        std::fs::copy(src, dst)?;
    }
    Ok(())
}

impl Drop for PreparedEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
