//! The guest view of the file system ([`FsView`]) and the symlink
//! resolution done by hand (CPython's `realpath`, the reference's
//! `_canonicalize`); see the [`paths`](super) module docs for the security
//! reasoning.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::config::ToolConfig;

use super::errors::{is_missing, os_error};

/// Maximum number of dangling-symlink hops followed by hand (the reference's
/// `_MAX_SYMLINK_HOPS`).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// Nesting limit for links resolved through other links. CPython's
/// `realpath` recurses once per nested link and turns the resulting
/// `RecursionError` into a symlink-loop error near its recursion limit of
/// 1000 frames; this bound stands in for that (and keeps the guest's stack
/// small).
const MAX_LINK_NESTING: usize = 900;

/// `readlink` returning the raw target. In the component this asks the
/// host (WASI's `readlink-at` refuses absolute targets, which the reference
/// follows, e.g. `ln -s /workspace/a b`); natively it is `std::fs::read_link`.
#[cfg(target_arch = "wasm32")]
fn read_link_raw(p: &Path) -> io::Result<PathBuf> {
    use crate::host::LinkError;
    let Some(path) = p.to_str() else {
        return Err(os_error(libc::ENOENT));
    };
    crate::host::read_link(path)
        .map(PathBuf::from)
        .map_err(|e| {
            os_error(match e {
                LinkError::NotFound => libc::ENOENT,
                LinkError::NotALink => libc::EINVAL,
                LinkError::NotADirectory => libc::ENOTDIR,
                LinkError::Denied => libc::EPERM,
                LinkError::Loop => libc::ELOOP,
                LinkError::Other => libc::EIO,
            })
        })
}

#[cfg(not(target_arch = "wasm32"))]
fn read_link_raw(p: &Path) -> io::Result<PathBuf> {
    std::fs::read_link(p)
}

/// Lexical `os.path.normpath` of an absolute path: `.` dropped, `..` pops
/// (and stops at `/`), repeated and trailing slashes dropped.
pub fn normpath(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// What the file tools may see of the file system (see the [`paths`](super)
/// module docs).
#[derive(Debug, Clone)]
pub struct FsView {
    /// `None`: the host file system as is. `Some(mounts)`: only paths under
    /// a mount exist; ancestors of a mount are plain directories.
    mounts: Option<Vec<PathBuf>>,
}

impl FsView {
    /// The view the tools use: confined to the preopens in the component,
    /// the host file system in native builds.
    pub fn new(cfg: &ToolConfig) -> Self {
        if cfg!(target_os = "wasi") {
            Self::confined(cfg)
        } else {
            FsView { mounts: None }
        }
    }

    /// A view in which only the workdir, the allowed roots and the
    /// read-only roots (and their ancestors) exist, as in the component.
    pub fn confined(cfg: &ToolConfig) -> Self {
        let mounts = std::iter::once(&cfg.workdir)
            .chain(&cfg.allowed_roots)
            .chain(&cfg.read_only_roots)
            .map(|r| normpath(&absolute(Path::new(r))))
            .collect();
        FsView {
            mounts: Some(mounts),
        }
    }

    /// `lstat`: whether the path is a symlink. Only ever called on paths
    /// whose parent is already resolved.
    fn is_symlink(&self, p: &Path) -> io::Result<bool> {
        if let Some(mounts) = &self.mounts
            && !mounts.iter().any(|m| p.starts_with(m))
        {
            return if mounts.iter().any(|m| m.starts_with(p)) {
                Ok(false)
            } else {
                Err(os_error(libc::ENOENT))
            };
        }
        std::fs::symlink_metadata(p).map(|m| m.file_type().is_symlink())
    }

    fn read_link(&self, p: &Path) -> io::Result<PathBuf> {
        if let Some(mounts) = &self.mounts
            && !mounts.iter().any(|m| p.starts_with(m))
        {
            return Err(os_error(libc::EINVAL));
        }
        read_link_raw(p)
    }

    /// True for a strict ancestor of a mount in a confined view: a directory
    /// that exists for the reference but is not reachable in the guest.
    fn is_virtual_dir(&self, p: &Path) -> bool {
        self.mounts.as_ref().is_some_and(|mounts| {
            !mounts.iter().any(|m| p.starts_with(m)) && mounts.iter().any(|m| m.starts_with(p))
        })
    }

    fn is_dir(&self, p: &Path) -> bool {
        self.is_virtual_dir(p) || p.is_dir()
    }

    /// See [`make_dirs`](super::make_dirs).
    pub(super) fn make_dirs(&self, dir: &Path) -> io::Result<()> {
        if self.is_virtual_dir(dir) {
            return Ok(());
        }
        match std::fs::create_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match dir.parent() {
                    Some(parent) if parent != dir => self.make_dirs(parent)?,
                    _ => return Err(e),
                }
                match std::fs::create_dir(dir) {
                    Ok(()) => Ok(()),
                    Err(_) if self.is_dir(dir) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(_) if self.is_dir(dir) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `Path(root).resolve()`: a non-strict realpath (what cannot be
    /// resolved is kept as spelled).
    pub fn resolve_root(&self, root: &str) -> PathBuf {
        let abs = absolute(Path::new(root));
        let mut r = Realpath {
            view: self,
            strict: false,
            seen: HashMap::new(),
            depth: 0,
        };
        match r.join(PathBuf::from("/"), &abs) {
            Ok((p, _)) => normpath(&p),
            Err(_) => normpath(&abs),
        }
    }

    /// `os.path.realpath(path, strict=True)`.
    fn realpath_strict(&self, path: &Path) -> io::Result<PathBuf> {
        let mut r = Realpath {
            view: self,
            strict: true,
            seen: HashMap::new(),
            depth: 0,
        };
        r.join(PathBuf::from("/"), path).map(|(p, _)| p)
    }

    /// `lstat` of a spelled (unresolved) path, with its parent resolved by
    /// this code rather than by the OS.
    fn is_symlink_spelled(&self, p: &Path) -> io::Result<bool> {
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => {
                self.is_symlink(&self.realpath_strict(parent)?.join(name))
            }
            _ => Ok(false),
        }
    }

    fn read_link_spelled(&self, p: &Path) -> io::Result<PathBuf> {
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => self.read_link(&self.realpath_strict(parent)?.join(name)),
            _ => Err(os_error(libc::EINVAL)),
        }
    }

    /// The reference's `_canonicalize` (see [`canonicalize`](super::canonicalize)).
    pub fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        let mut prefix = normpath(&absolute(path));
        let mut missing_tail: Vec<OsString> = Vec::new();
        let mut hops = 0usize;
        loop {
            let unresolved = match self.realpath_strict(&prefix) {
                Ok(mut p) => {
                    p.extend(missing_tail.iter().rev());
                    return Ok(p);
                }
                Err(e) if !is_missing(&e) => return Err(e),
                Err(e) => e,
            };
            let is_link = match self.is_symlink_spelled(&prefix) {
                Ok(l) => l,
                Err(e) => {
                    let (Some(parent), Some(name)) = (prefix.parent(), prefix.file_name()) else {
                        return Err(e);
                    };
                    if !is_missing(&e) {
                        return Err(e);
                    }
                    missing_tail.push(name.to_os_string());
                    prefix = parent.to_path_buf();
                    continue;
                }
            };
            if !is_link {
                return Err(unresolved);
            }
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(os_error(libc::ELOOP));
            }
            let parent = self.realpath_strict(prefix.parent().unwrap_or(Path::new("/")))?;
            let target = self.read_link_spelled(&prefix)?;
            let mut next = parent.join(target);
            next.extend(missing_tail.iter().rev());
            prefix = normpath(&next);
            missing_tail.clear();
        }
    }
}

/// Makes a path absolute the way `os.path.abspath` would (relative to the
/// current directory, or `/` where there is none).
fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    std::env::current_dir()
        .unwrap_or_else(|_| PathBuf::from("/"))
        .join(p)
}

/// CPython's `posixpath._joinrealpath`.
struct Realpath<'a> {
    view: &'a FsView,
    strict: bool,
    /// Links met so far: `None` while being resolved (a loop if met again),
    /// then their resolution.
    seen: HashMap<PathBuf, Option<PathBuf>>,
    depth: usize,
}

impl Realpath<'_> {
    /// Joins `rest` onto the resolved `path`, resolving links; the flag is
    /// false when a loop stopped a non-strict resolution early.
    fn join(&mut self, mut path: PathBuf, rest: &Path) -> io::Result<(PathBuf, bool)> {
        let comps: Vec<Component<'_>> = rest.components().collect();
        if rest.is_absolute() {
            path = PathBuf::from("/");
        }
        let mut i = 0;
        while i < comps.len() {
            let comp = comps[i];
            i += 1;
            let name = match comp {
                Component::Normal(name) => name,
                Component::ParentDir => {
                    path.pop();
                    continue;
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
            };
            let newpath = path.join(name);
            let is_link = match self.view.is_symlink(&newpath) {
                Ok(l) => l,
                Err(e) if self.strict => return Err(e),
                Err(_) => false,
            };
            if !is_link {
                path = newpath;
                continue;
            }
            if let Some(entry) = self.seen.get(&newpath) {
                match entry {
                    Some(resolved) => {
                        path = resolved.clone();
                        continue;
                    }
                    None if self.strict => return Err(os_error(libc::ELOOP)),
                    None => return Ok((join_rest(newpath, &comps[i..]), false)),
                }
            }
            self.seen.insert(newpath.clone(), None);
            let target = self.view.read_link(&newpath)?;
            self.depth += 1;
            if self.depth > MAX_LINK_NESTING {
                return Err(os_error(libc::ELOOP));
            }
            let (resolved, ok) = self.join(path, &target)?;
            self.depth -= 1;
            if !ok {
                return Ok((join_rest(resolved, &comps[i..]), false));
            }
            self.seen.insert(newpath, Some(resolved.clone()));
            path = resolved;
        }
        Ok((path, true))
    }
}

fn join_rest(mut path: PathBuf, rest: &[Component<'_>]) -> PathBuf {
    for c in rest {
        path.push(c.as_os_str());
    }
    normpath(&path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::tests::setup;
    use std::os::unix::fs::symlink;

    #[test]
    fn confined_view_hides_everything_outside_the_mounts() {
        let (_t, ws, cfg) = setup();
        let base = ws.parent().unwrap().to_path_buf();
        std::fs::create_dir(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/f"), "x").unwrap();
        symlink(base.join("outside/f"), ws.join("out")).unwrap();
        symlink(base.join("outside"), ws.join("outdir")).unwrap();
        symlink(&ws, ws.join("me")).unwrap();
        let view = FsView::confined(&cfg);
        // Ancestors of the workdir read as plain directories.
        assert_eq!(view.resolve_root(&cfg.workdir), ws);
        assert_eq!(view.canonicalize(&ws.join("me/a")).unwrap(), ws.join("a"));
        // Outside paths resolve to their spelling (and are then refused).
        assert_eq!(
            view.canonicalize(&ws.join("out")).unwrap(),
            base.join("outside/f")
        );
        assert_eq!(
            view.canonicalize(&ws.join("outdir/g")).unwrap(),
            base.join("outside/g")
        );
        assert_eq!(
            view.canonicalize(Path::new("/etc/passwd")).unwrap(),
            PathBuf::from("/etc/passwd")
        );
        // Ancestors of the mounts exist as directories; mkdir under a mount
        // is real.
        assert!(view.make_dirs(ws.parent().unwrap()).is_ok());
        assert!(view.make_dirs(Path::new("/")).is_ok());
        view.make_dirs(&ws.join("n1/n2")).unwrap();
        assert!(ws.join("n1/n2").is_dir());
        std::fs::write(ws.join("file"), "x").unwrap();
        let err = |p: &str| view.make_dirs(&ws.join(p)).unwrap_err().raw_os_error();
        assert_eq!(err("file"), Some(libc::EEXIST));
        assert_eq!(err("file/x"), Some(libc::ENOTDIR));
    }
}
