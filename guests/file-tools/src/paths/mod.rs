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

mod errors;
mod view;

use std::io;
use std::path::{Path, PathBuf};

use crate::config::ToolConfig;
use crate::result::ToolFail;
use wasm_sandbox_pycompat::repr::repr_str;

pub use errors::{fs_reason, reason};
pub use view::{FsView, MAX_SYMLINK_HOPS, normpath};

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

    pub(super) fn setup() -> (tempfile::TempDir, PathBuf, ToolConfig) {
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
    fn pathlib_spelling() {
        assert_eq!(pathlib_str("/mnt/memory/x/"), "/mnt/memory/x");
        assert_eq!(pathlib_str("/a//./b/../c"), "/a/b/../c");
        assert_eq!(pathlib_str("//a"), "//a");
        assert_eq!(pathlib_str("///a"), "/a");
        assert_eq!(pathlib_str(""), ".");
    }
}
