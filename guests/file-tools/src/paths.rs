//! Path resolution and confinement: the reference's `resolve_path`,
//! `_canonicalize`, `_reject_read_only` and `_fs_reason`.
//!
//! # Security
//!
//! Every path a file tool touches goes through [`resolve_path`] first. The
//! input is joined onto the resolved workdir (or taken as is when absolute),
//! `.`/`..` are collapsed lexically, and then **every** symlink on the way is
//! followed — intermediate ones, the leaf, and dangling ones (followed by
//! hand, at most 40 hops) — before the containment test. The tool then
//! operates on that canonical path, never on the spelling it was given, so a
//! link that points outside the permitted roots can neither pass the check
//! nor be followed afterwards. Containment compares whole path components
//! (`/workspace2` is not inside `/workspace`).
//!
//! Symlink targets are read with `readlink` and interpreted by this code, not
//! by the OS: every `lstat` this module issues is on a path whose existing
//! components have already been resolved, so the OS never follows a link on
//! our behalf. In the WASI component that also matters for correctness: the
//! runtime refuses to follow absolute or escaping links itself, and guest
//! paths outside the preopens do not exist at all.
//!
//! The guest view ([`FsView`]): in the component (`target_os = "wasi"`), the
//! only real directories are the preopens (the workdir, the allowed roots
//! and the read-only roots). Their ancestors (`/`, `/mnt`, `/mnt/memory`)
//! are presented as plain directories and everything else as missing, so a
//! link to `/etc/passwd` canonicalises to `/etc/passwd` and is refused as
//! outside, exactly as on a host where `/etc/passwd` exists, and nothing
//! outside a preopen is ever asked of the runtime. Native builds (the unit
//! tests) use the host file system directly.
//!
//! Python-isms kept on purpose: the roots are resolved non-strictly (like
//! `Path.resolve()`), at every check; a NUL byte anywhere in the input is
//! reported as `embedded null byte` without echoing the path; errors while
//! canonicalising quote the input with Python `repr`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::config::ToolConfig;
use crate::pyrepr::repr_str;
use crate::result::ToolFail;

/// Maximum number of dangling-symlink hops followed by hand (the reference's
/// `_MAX_SYMLINK_HOPS`).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// Nesting limit for links resolved through other links. CPython's
/// `realpath` recurses once per nested link and turns the resulting
/// `RecursionError` into a symlink-loop error near its recursion limit of
/// 1000 frames; this bound stands in for that (and keeps the guest's stack
/// small).
const MAX_LINK_NESTING: usize = 900;

/// Resolves a tool's path argument to the canonical path the tool operates
/// on, or fails with the reference's message (`<op>: path '<p>' is outside
/// the session's working directory`, …).
///
/// `input` is the model's spelling; relative inputs are joined onto the
/// resolved workdir, an empty input means the workdir itself.
pub fn resolve_path(op: &str, input: &str, cfg: &ToolConfig) -> Result<PathBuf, ToolFail> {
    if input.contains('\0') {
        return Err(ToolFail::Tool(format!("{op}: embedded null byte")));
    }
    let view = FsView::new(cfg);
    let root = view.resolve_root(&cfg.workdir);
    let candidate = Path::new(input);
    let joined = if candidate.is_absolute() {
        candidate.to_path_buf()
    } else {
        root.join(candidate)
    };
    let full = view
        .canonicalize(&joined)
        .map_err(|e| ToolFail::Tool(format!("{op}: path {}: {}", repr_str(input), reason(&e))))?;
    if full.starts_with(&root)
        || cfg
            .allowed_roots
            .iter()
            .any(|r| full.starts_with(view.resolve_root(r)))
    {
        return Ok(full);
    }
    let msg = if cfg.allowed_roots.is_empty() {
        format!(
            "{op}: path {} is outside the session's working directory",
            repr_str(input)
        )
    } else {
        format!(
            "{op}: path {} is outside the session's working directory and its other permitted directories",
            repr_str(input)
        )
    };
    Err(ToolFail::Tool(msg))
}

/// Refuses a canonical path inside a read-only root (the reference's
/// `_reject_read_only`): `<op>: <input> is inside read-only directory
/// <root>`. The root is printed the way `str(Path(root))` prints it.
pub fn check_writable(
    op: &str,
    canonical: &Path,
    input: &str,
    cfg: &ToolConfig,
) -> Result<(), ToolFail> {
    let view = FsView::new(cfg);
    for root in &cfg.read_only_roots {
        if canonical.starts_with(view.resolve_root(root)) {
            return Err(ToolFail::Tool(format!(
                "{op}: {input} is inside read-only directory {}",
                pathlib_str(root)
            )));
        }
    }
    Ok(())
}

/// The reference's `_fs_error`: `<op>: <input>: <reason>` as a `ToolError`.
pub fn fs_reason(op: &str, input: &str, err: &io::Error) -> ToolFail {
    ToolFail::Tool(format!("{op}: {input}: {}", reason(err)))
}

/// The reference's `_fs_reason`: a runtime-independent phrase for an OS
/// error (`no such file or directory`, `permission denied`, …, otherwise
/// glibc's `strerror` lower-cased).
pub fn reason(err: &io::Error) -> String {
    if let Some(code) = err.raw_os_error() {
        if code == libc::ENOENT {
            return "no such file or directory".into();
        }
        if code == libc::ENOTDIR {
            return "not a directory".into();
        }
        if code == libc::EISDIR {
            return "is a directory".into();
        }
        if code == libc::EACCES || code == libc::EPERM || is_not_capable(code) {
            return "permission denied".into();
        }
        if code == libc::EEXIST {
            return "file already exists".into();
        }
        if code == libc::ELOOP {
            return "too many levels of symbolic links".into();
        }
        return strerror_lower(code);
    }
    match err.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::NotADirectory => "not a directory".into(),
        io::ErrorKind::IsADirectory => "is a directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::AlreadyExists => "file already exists".into(),
        _ => "i/o error".into(),
    }
}

#[cfg(target_os = "wasi")]
fn is_not_capable(code: i32) -> bool {
    // Python counts ENOTCAPABLE as a PermissionError.
    code == libc::ENOTCAPABLE
}

#[cfg(not(target_os = "wasi"))]
fn is_not_capable(_code: i32) -> bool {
    false
}

/// glibc's `strerror` texts (what CPython shows on Linux), lower-cased. The
/// errno values come from `libc`, so the WASI numbering maps to the same
/// words.
fn strerror_lower(code: i32) -> String {
    const TABLE: &[(i32, &str)] = &[
        (libc::EIO, "input/output error"),
        (libc::ENXIO, "no such device or address"),
        (libc::E2BIG, "argument list too long"),
        (libc::EBADF, "bad file descriptor"),
        (libc::EAGAIN, "resource temporarily unavailable"),
        (libc::ENOMEM, "cannot allocate memory"),
        (libc::EFAULT, "bad address"),
        (libc::EBUSY, "device or resource busy"),
        (libc::EXDEV, "invalid cross-device link"),
        (libc::ENODEV, "no such device"),
        (libc::EINVAL, "invalid argument"),
        (libc::ENFILE, "too many open files in system"),
        (libc::EMFILE, "too many open files"),
        (libc::ETXTBSY, "text file busy"),
        (libc::EFBIG, "file too large"),
        (libc::ENOSPC, "no space left on device"),
        (libc::ESPIPE, "illegal seek"),
        (libc::EROFS, "read-only file system"),
        (libc::EMLINK, "too many links"),
        (libc::ENAMETOOLONG, "file name too long"),
        (libc::ENOTEMPTY, "directory not empty"),
        (libc::EDQUOT, "disk quota exceeded"),
        (libc::ESTALE, "stale file handle"),
        (libc::EOVERFLOW, "value too large for defined data type"),
        (
            libc::EILSEQ,
            "invalid or incomplete multibyte or wide character",
        ),
        (libc::ENOSYS, "function not implemented"),
        (libc::ENOTSUP, "operation not supported"),
        (libc::EINTR, "interrupted system call"),
        (libc::ETIMEDOUT, "connection timed out"),
        (libc::ENOEXEC, "exec format error"),
        (libc::EDEADLK, "resource deadlock avoided"),
    ];
    TABLE.iter().find(|(c, _)| *c == code).map_or_else(
        || format!("unknown error {code}"),
        |(_, s)| (*s).to_string(),
    )
}

/// True for the errors `_canonicalize` treats as "this component does not
/// exist yet" (`ENOENT`, `ENOTDIR`).
fn is_missing(err: &io::Error) -> bool {
    match err.raw_os_error() {
        Some(code) => code == libc::ENOENT || code == libc::ENOTDIR,
        None => matches!(
            err.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
        ),
    }
}

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

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// `str(PurePosixPath(s))`: repeated slashes collapsed (two leading ones
/// kept), `.` components and a trailing slash dropped, `..` kept; `""` reads
/// `.`.
pub fn pathlib_str(s: &str) -> String {
    let (root, rest) = if s.starts_with("//") && !s.starts_with("///") {
        ("//", &s[2..])
    } else if s.starts_with('/') {
        ("/", s.trim_start_matches('/'))
    } else {
        ("", s)
    };
    let parts: Vec<&str> = rest
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let out = format!("{root}{}", parts.join("/"));
    if out.is_empty() { ".".to_string() } else { out }
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

/// True if `child` is `root` or inside it, comparing whole components (the
/// reference's `_within`).
pub fn within(child: &Path, root: &Path) -> bool {
    child.starts_with(root)
}

/// The resolved workdir (`Path(workdir).resolve()`), the default root of
/// glob and grep.
pub fn resolved_workdir(cfg: &ToolConfig) -> PathBuf {
    FsView::new(cfg).resolve_root(&cfg.workdir)
}

/// pathlib's `Path.mkdir(parents=True, exist_ok=True)` under this
/// session's view: try `mkdir`; on `ENOENT` create the parent first and
/// retry; on any other error succeed only if the path is (now) a directory.
/// The ancestors of the preopens (`/`, `/mnt`) count as existing
/// directories, as they do on the reference's host.
pub fn make_dirs(cfg: &ToolConfig, dir: &Path) -> io::Result<()> {
    let view = FsView::new(cfg);
    view.make_dirs(dir)
}

/// The reference's `_canonicalize` under this session's view: `.`/`..`
/// collapsed, every symlink followed (dangling ones by hand), missing
/// trailing components kept as spelled. `path` must be absolute.
pub fn canonicalize(cfg: &ToolConfig, path: &Path) -> io::Result<PathBuf> {
    FsView::new(cfg).canonicalize(path)
}

/// What the file tools may see of the file system (see the module docs).
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

    /// See [`make_dirs`].
    fn make_dirs(&self, dir: &Path) -> io::Result<()> {
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

    /// The reference's `_canonicalize` (see [`canonicalize`]).
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
    use std::os::unix::fs::symlink;

    fn cfg_for(dir: &Path) -> ToolConfig {
        ToolConfig {
            workdir: dir.to_string_lossy().into_owned(),
            ..ToolConfig::default()
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf, ToolConfig) {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let ws = base.join("ws");
        std::fs::create_dir(&ws).unwrap();
        let cfg = cfg_for(&ws);
        (tmp, ws, cfg)
    }

    fn tool_err(r: Result<PathBuf, ToolFail>) -> String {
        match r {
            Err(ToolFail::Tool(s)) => s,
            other => panic!("expected a tool error, got {other:?}"),
        }
    }

    #[test]
    fn relative_absolute_and_empty_inputs() {
        let (_t, ws, cfg) = setup();
        std::fs::write(ws.join("a.txt"), "x").unwrap();
        assert_eq!(
            resolve_path("read", "a.txt", &cfg).unwrap(),
            ws.join("a.txt")
        );
        assert_eq!(
            resolve_path("read", ws.join("a.txt").to_str().unwrap(), &cfg).unwrap(),
            ws.join("a.txt")
        );
        assert_eq!(resolve_path("read", "", &cfg).unwrap(), ws);
        assert_eq!(resolve_path("read", ".", &cfg).unwrap(), ws);
        assert_eq!(
            resolve_path("read", "a.txt/", &cfg).unwrap(),
            ws.join("a.txt")
        );
        assert_eq!(
            resolve_path("write", "new/dir/f.txt", &cfg).unwrap(),
            ws.join("new/dir/f.txt")
        );
        assert_eq!(
            resolve_path("write", "x/../a.txt", &cfg).unwrap(),
            ws.join("a.txt")
        );
    }

    #[test]
    fn outside_messages_use_python_repr() {
        let (_t, _ws, mut cfg) = setup();
        assert_eq!(
            tool_err(resolve_path("read", "../x", &cfg)),
            "read: path '../x' is outside the session's working directory"
        );
        assert_eq!(
            tool_err(resolve_path("edit", "/etc/it's\tx", &cfg)),
            "edit: path \"/etc/it's\\tx\" is outside the session's working directory"
        );
        cfg.allowed_roots.push("/nonexistent-root-for-test".into());
        assert_eq!(
            tool_err(resolve_path("glob", "/etc/passwd", &cfg)),
            "glob: path '/etc/passwd' is outside the session's working directory and its other permitted directories"
        );
    }

    #[test]
    fn sibling_with_common_prefix_is_outside() {
        let (_t, ws, cfg) = setup();
        let sibling = format!("{}2/x", ws.display());
        assert!(tool_err(resolve_path("read", &sibling, &cfg)).contains("is outside"));
    }

    #[test]
    fn nul_byte_is_reported_without_the_path() {
        let (_t, _ws, cfg) = setup();
        assert_eq!(
            tool_err(resolve_path("read", "a\0b", &cfg)),
            "read: embedded null byte"
        );
    }

    #[test]
    fn links_inside_are_followed_and_links_out_refused() {
        let (_t, ws, cfg) = setup();
        let base = ws.parent().unwrap().to_path_buf();
        std::fs::write(ws.join("target.txt"), "t").unwrap();
        std::fs::create_dir(base.join("outside")).unwrap();
        symlink("target.txt", ws.join("in")).unwrap();
        symlink(base.join("outside"), ws.join("out")).unwrap();
        symlink("missing/new.txt", ws.join("dangling")).unwrap();
        symlink(base.join("outside/nothing"), ws.join("dangling_out")).unwrap();
        assert_eq!(
            resolve_path("read", "in", &cfg).unwrap(),
            ws.join("target.txt")
        );
        assert_eq!(
            resolve_path("write", "dangling", &cfg).unwrap(),
            ws.join("missing/new.txt")
        );
        assert!(tool_err(resolve_path("read", "out", &cfg)).contains("'out' is outside"));
        assert!(tool_err(resolve_path("read", "out/f", &cfg)).contains("'out/f' is outside"));
        assert!(tool_err(resolve_path("write", "dangling_out", &cfg)).contains("is outside"));
        // `..` is lexical: `out/..` is the workdir itself.
        assert_eq!(resolve_path("read", "out/..", &cfg).unwrap(), ws);
    }

    #[test]
    fn link_chains_through_directories_resolve() {
        let (_t, ws, cfg) = setup();
        std::fs::create_dir_all(ws.join("real/sub")).unwrap();
        symlink(ws.join("real"), ws.join("abs_dir")).unwrap();
        symlink("real/sub", ws.join("rel_dir")).unwrap();
        symlink("../../real", ws.join("real/sub/up")).unwrap();
        assert_eq!(
            resolve_path("write", "abs_dir/new/f", &cfg).unwrap(),
            ws.join("real/new/f")
        );
        assert_eq!(
            resolve_path("write", "rel_dir/f", &cfg).unwrap(),
            ws.join("real/sub/f")
        );
        assert_eq!(
            resolve_path("read", "rel_dir/up/sub", &cfg).unwrap(),
            ws.join("real/sub")
        );
        // A dangling link under a linked directory.
        symlink("../gone", ws.join("real/sub/dl")).unwrap();
        assert_eq!(
            resolve_path("write", "abs_dir/sub/dl", &cfg).unwrap(),
            ws.join("real/gone")
        );
    }

    #[test]
    fn loops_and_long_names_are_os_errors() {
        let (_t, ws, cfg) = setup();
        symlink("b", ws.join("a")).unwrap();
        symlink("a", ws.join("b")).unwrap();
        symlink("self", ws.join("self")).unwrap();
        assert_eq!(
            tool_err(resolve_path("read", "a", &cfg)),
            "read: path 'a': too many levels of symbolic links"
        );
        assert_eq!(
            tool_err(resolve_path("read", "self/x", &cfg)),
            "read: path 'self/x': too many levels of symbolic links"
        );
        let long = "n".repeat(300);
        assert_eq!(
            tool_err(resolve_path("read", &long, &cfg)),
            format!("read: path '{long}': file name too long")
        );
    }

    #[test]
    fn long_link_chains_resolve_past_the_kernel_limit() {
        let (_t, ws, cfg) = setup();
        std::fs::write(ws.join("c60"), "hi").unwrap();
        for i in 0..60 {
            symlink(format!("c{}", i + 1), ws.join(format!("c{i}"))).unwrap();
        }
        // The kernel gives up after 40 links; CPython's realpath (and this
        // code) follows the whole chain.
        assert_eq!(resolve_path("read", "c0", &cfg).unwrap(), ws.join("c60"));
    }

    #[test]
    fn dangling_hops_are_capped_at_forty() {
        let (_t, ws, cfg) = setup();
        // A chain of dangling links: l0 -> l1/x, l1 -> l2/x ... each hop is
        // followed by hand because the strict resolution fails.
        for i in 0..45 {
            symlink(format!("l{}/x", i + 1), ws.join(format!("l{i}"))).unwrap();
        }
        assert_eq!(
            tool_err(resolve_path("read", "l0", &cfg)),
            "read: path 'l0': too many levels of symbolic links"
        );
        assert!(resolve_path("read", "l10", &cfg).is_ok());
    }

    #[test]
    fn file_as_directory_keeps_the_tail() {
        let (_t, ws, cfg) = setup();
        std::fs::write(ws.join("f"), "x").unwrap();
        assert_eq!(resolve_path("read", "f/x", &cfg).unwrap(), ws.join("f/x"));
    }

    #[test]
    fn allowed_roots_and_read_only_roots() {
        let (_t, ws, mut cfg) = setup();
        let base = ws.parent().unwrap().to_path_buf();
        let mem = base.join("mem");
        std::fs::create_dir_all(mem.join("ro")).unwrap();
        cfg.allowed_roots.push(format!("{}/", mem.display()));
        cfg.read_only_roots.push(format!("{}/./ro/", mem.display()));
        let p = resolve_path("write", mem.join("ro/x.md").to_str().unwrap(), &cfg).unwrap();
        assert_eq!(p, mem.join("ro/x.md"));
        match check_writable("write", &p, "in/x.md", &cfg) {
            Err(ToolFail::Tool(s)) => {
                assert_eq!(
                    s,
                    format!(
                        "write: in/x.md is inside read-only directory {}/ro",
                        mem.display()
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        let q = resolve_path("write", mem.join("rw.md").to_str().unwrap(), &cfg).unwrap();
        assert!(check_writable("write", &q, "x", &cfg).is_ok());
        assert!(check_writable("write", &ws.join("f"), "f", &cfg).is_ok());
    }

    #[test]
    fn fs_reasons_are_normalised() {
        let e = std::fs::read("/definitely/not/here").unwrap_err();
        assert_eq!(
            fs_reason("read", "x", &e),
            ToolFail::Tool("read: x: no such file or directory".into())
        );
        assert_eq!(reason(&os_error(libc::EISDIR)), "is a directory");
        assert_eq!(reason(&os_error(libc::EPERM)), "permission denied");
        assert_eq!(reason(&os_error(libc::EEXIST)), "file already exists");
        assert_eq!(reason(&os_error(libc::ENAMETOOLONG)), "file name too long");
        assert_eq!(reason(&os_error(libc::ENOSPC)), "no space left on device");
        assert_eq!(reason(&io::Error::other("x")), "i/o error");
    }

    #[test]
    fn pathlib_spelling() {
        assert_eq!(pathlib_str("/mnt/memory/x/"), "/mnt/memory/x");
        assert_eq!(pathlib_str("/a//./b/../c"), "/a/b/../c");
        assert_eq!(pathlib_str("//a"), "//a");
        assert_eq!(pathlib_str("///a"), "/a");
        assert_eq!(pathlib_str(""), ".");
    }

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
