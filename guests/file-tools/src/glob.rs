//! The `glob` tool: CPython 3.12's `pathlib.Path.glob` under the search root,
//! then the reference's post-filter, mtime sort and 200-line cap.
//!
//! Matching follows `pathlib` 3.12 selector by selector: every non-`**`
//! segment (even a literal one) lists the parent directory and keeps the
//! names that match `fnmatch.translate(segment)` (both from
//! [`wasm_sandbox_pycompat`]), so dotfiles match `*` and names compare
//! case-sensitively; a segment with children keeps only directories
//! (following symlinks); `**` yields the directory itself and every directory
//! below it in `Path.walk` order without descending symlinked directories
//! (so in 3.12 `**` alone lists directories only); a trailing `/` keeps
//! directories only; a pattern with several non-adjacent `**` is
//! de-duplicated. Entries come in directory-listing order, which is the order
//! the stable mtime sort keeps for ties.
//!
//! # Security
//!
//! The walk never lets the OS follow a symlink: each match carries its
//! spelled path (what is printed) and its canonical path, computed by
//! [`crate::paths::canonicalize`] when a symlink is met. Directories are
//! listed and files statted only through canonical paths, and a match is
//! kept only if its canonical path lies inside the search root (the
//! reference's `_confined`), so a link to `/etc` lists nothing and a link
//! loop is dropped. A dangling link inside the root is kept, as in the
//! reference.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_json::Value;

use crate::config::ToolConfig;
use crate::paths;
use crate::result::{ToolFail, ToolValue};
use crate::validate::{self, GlobInput};
use wasm_sandbox_pycompat::fnmatch;
use wasm_sandbox_pycompat::re::{self, CompileError, PyPattern};
use wasm_sandbox_pycompat::repr::repr_str;

/// At most this many paths are printed (silently truncated).
pub const GLOB_RESULT_LIMIT: usize = 200;
/// At most this many raw matches are collected before filtering and sorting.
pub const WALK_MAX_ENTRIES: usize = 50_000;

/// Runs `glob(pattern, path=None)`.
pub fn run(input: &Value, cfg: &ToolConfig) -> Result<ToolValue, ToolFail> {
    let GlobInput { pattern, path } = validate::glob_input(input)?;
    glob(&pattern, path.as_deref(), cfg).map(ToolValue::Text)
}

fn glob(pattern: &str, path: Option<&str>, cfg: &ToolConfig) -> Result<String, ToolFail> {
    if pattern.starts_with('/') {
        return Err(ToolFail::Tool(
            "glob: absolute pattern not permitted; pass a relative pattern (and optionally path)"
                .into(),
        ));
    }
    let mut parts: Vec<String> = pattern
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
        .collect();
    if parts.iter().any(|p| p == "..") {
        return Err(ToolFail::Tool(
            "glob: '..' is not permitted in the pattern".into(),
        ));
    }
    let root = match path {
        Some(p) if !p.is_empty() => paths::resolve_path("glob", p, cfg)?,
        _ => paths::resolved_workdir(cfg),
    };
    if pattern.is_empty() {
        return Err(ToolFail::Tool("glob: Unacceptable pattern: ''".into()));
    }
    if pattern.ends_with('/') {
        parts.push(String::new());
    }
    let selector = make_selector(&parts)?;
    if matches!(selector, Selector::Terminating) {
        return Err(ToolFail::Exception(
            "AttributeError(\"'_TerminatingSelector' object has no attribute 'select_from'\")"
                .into(),
        ));
    }
    let mut walk = Walk {
        cfg,
        found: Vec::new(),
        dedupe: None,
    };
    if fs::metadata(&root).is_ok_and(|m| m.is_dir()) {
        selector.select(&root, &root, &mut walk);
    }
    let mut kept: Vec<(String, f64)> = walk
        .found
        .into_iter()
        .filter_map(|m| {
            let real = m.real?;
            paths::within(&real, &root).then(|| (display_path(&m.spelled), mtime_or_zero(&real)))
        })
        .collect();
    if kept.is_empty() {
        return Ok("no matches".into());
    }
    kept.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    kept.truncate(GLOB_RESULT_LIMIT);
    Ok(kept
        .into_iter()
        .map(|(p, _)| p)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `Path.stat().st_mtime` (following links), or 0.0 when it fails. The float
/// is built the way CPython builds it: `sec + nsec * 1e-9`.
fn mtime_or_zero(real: &Path) -> f64 {
    let Ok(modified) = fs::metadata(real).and_then(|m| m.modified()) else {
        return 0.0;
    };
    let (sec, nsec): (i64, i64) = match modified.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            i64::from(d.subsec_nanos()),
        ),
        Err(e) => {
            let d = e.duration();
            let s = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let ns = i64::from(d.subsec_nanos());
            if ns > 0 {
                (s - 1, 1_000_000_000 - ns)
            } else {
                (s, 0)
            }
        }
    };
    #[allow(
        clippy::cast_precision_loss,
        reason = "CPython converts the C integers to double in exactly this way"
    )]
    let v = sec as f64 + nsec as f64 * 1e-9;
    v
}

/// How Python prints a path: invalid UTF-8 bytes become lone surrogates
/// (`surrogateescape`), which the runner folds to U+FFFD one by one.
pub(crate) fn display_path(p: &Path) -> String {
    let os = p.as_os_str();
    match os.to_str() {
        Some(s) => s.to_string(),
        None => lossy_per_byte(os.as_encoded_bytes()),
    }
}

/// UTF-8 decoding with one U+FFFD per undecodable byte.
pub(crate) fn lossy_per_byte(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len());
                out.extend(std::iter::repeat_n('\u{FFFD}', bad));
                bytes = &rest[bad..];
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Selectors (`pathlib._make_selector` and friends, CPython 3.12)
// ---------------------------------------------------------------------------

enum Selector {
    /// `_TerminatingSelector`: yields the path it is given.
    Terminating,
    /// `_WildcardSelector`: children whose name matches.
    Wildcard {
        matcher: Box<PyPattern>,
        dironly: bool,
        next: Box<Selector>,
    },
    /// `_RecursiveWildcardSelector` (`**`); `dedupe` for
    /// `_DoubleRecursiveWildcardSelector`.
    Recursive { next: Box<Selector>, dedupe: bool },
}

fn make_selector(parts: &[String]) -> Result<Selector, ToolFail> {
    let Some(pat) = parts.first() else {
        return Err(ToolFail::Exception(
            "IndexError('tuple index out of range')".into(),
        ));
    };
    if pat.is_empty() {
        return Ok(Selector::Terminating);
    }
    if pat == "**" {
        let skip = parts.iter().take_while(|p| *p == "**").count();
        let child = &parts[skip..];
        let dedupe = child.iter().any(|p| p == "**");
        let (next, _) = successor(child)?;
        return Ok(Selector::Recursive { next, dedupe });
    }
    if pat.contains("**") {
        return Err(ToolFail::Tool(
            "glob: Invalid pattern: '**' can only be an entire path component".into(),
        ));
    }
    let (next, dironly) = successor(&parts[1..])?;
    let matcher = Box::new(compile_segment(pat)?);
    Ok(Selector::Wildcard {
        matcher,
        dironly,
        next,
    })
}

/// `_Selector.__init__`: the successor and `dironly`.
fn successor(child: &[String]) -> Result<(Box<Selector>, bool), ToolFail> {
    if child.is_empty() {
        Ok((Box::new(Selector::Terminating), false))
    } else {
        Ok((Box::new(make_selector(child)?), true))
    }
}

/// `re.compile(fnmatch.translate(pat)).match`.
fn compile_segment(pat: &str) -> Result<PyPattern, ToolFail> {
    let translated = fnmatch::translate(pat).map_err(ToolFail::Exception)?;
    re::compile(&format!("\\A{translated}")).map_err(|e| match e {
        CompileError::Invalid(msg) => ToolFail::Exception(format!("error({})", repr_str(&msg))),
        CompileError::Exception(repr) => ToolFail::Exception(repr),
        CompileError::Unsupported(msg) => ToolFail::Tool(format!("glob: {msg}")),
    })
}

/// A raw match: the spelled path and its canonical path (`None` when it
/// cannot be canonicalised).
struct Found {
    spelled: PathBuf,
    real: Option<PathBuf>,
}

struct Walk<'a> {
    cfg: &'a ToolConfig,
    found: Vec<Found>,
    /// Paths already yielded by the outermost de-duplicating `**`.
    dedupe: Option<std::collections::HashSet<PathBuf>>,
}

impl Walk<'_> {
    fn full(&self) -> bool {
        self.found.len() >= WALK_MAX_ENTRIES
    }

    fn push(&mut self, spelled: PathBuf, real: Option<PathBuf>) {
        if self.full() {
            return;
        }
        if let Some(seen) = &mut self.dedupe
            && !seen.insert(spelled.clone())
        {
            return;
        }
        self.found.push(Found { spelled, real });
    }

    /// The canonical path of `real_parent/name`, following the entry when it
    /// is a symlink.
    fn child_real(&self, real_parent: &Path, entry: &Entry) -> Option<PathBuf> {
        let joined = real_parent.join(&entry.name);
        if entry.kind == Kind::Symlink {
            paths::canonicalize(self.cfg, &joined).ok()
        } else {
            Some(joined)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Symlink,
    Other,
}

struct Entry {
    name: OsString,
    kind: Kind,
}

/// `list(os.scandir(dir))`; any error (opening or while reading) → `None`.
fn list_dir(dir: &Path) -> Option<Vec<Entry>> {
    let rd = fs::read_dir(dir).ok()?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.ok()?;
        let kind = match e.file_type() {
            Ok(t) => kind_of(t),
            Err(_) => {
                fs::symlink_metadata(e.path()).map_or(Kind::Other, |m| kind_of(m.file_type()))
            }
        };
        out.push(Entry {
            name: e.file_name(),
            kind,
        });
    }
    Some(out)
}

fn kind_of(t: fs::FileType) -> Kind {
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else {
        Kind::Other
    }
}

impl Selector {
    fn select(&self, spelled: &Path, real: &Path, walk: &mut Walk<'_>) {
        match self {
            Selector::Terminating => walk.push(spelled.to_path_buf(), Some(real.to_path_buf())),
            Selector::Wildcard {
                matcher,
                dironly,
                next,
            } => {
                let Some(entries) = list_dir(real) else {
                    return;
                };
                for entry in entries {
                    if walk.full() {
                        return;
                    }
                    let name = display_path(Path::new(&entry.name));
                    if !matcher.search(&name).unwrap_or(false) {
                        continue;
                    }
                    let child_real = walk.child_real(real, &entry);
                    if *dironly {
                        // `entry.is_dir()` follows symlinks; errors count as "no".
                        let is_dir = match entry.kind {
                            Kind::Dir => true,
                            Kind::Symlink => child_real
                                .as_deref()
                                .is_some_and(|r| fs::metadata(r).is_ok_and(|m| m.is_dir())),
                            Kind::Other => false,
                        };
                        if !is_dir {
                            continue;
                        }
                    }
                    let child_spelled = spelled.join(&entry.name);
                    match (next.as_ref(), child_real) {
                        (Selector::Terminating, r) => walk.push(child_spelled, r),
                        (sel, Some(r)) => sel.select(&child_spelled, &r, walk),
                        (_, None) => {}
                    }
                }
            }
            Selector::Recursive { next, dedupe } => {
                let owns_dedupe = *dedupe && walk.dedupe.is_none();
                if owns_dedupe {
                    walk.dedupe = Some(std::collections::HashSet::new());
                }
                next.select(spelled, real, walk);
                // `Path.walk()`: top-down, symlinks not followed, each
                // directory's subdirectories yielded when it is listed.
                let mut stack = vec![(spelled.to_path_buf(), real.to_path_buf())];
                while let Some((ds, dr)) = stack.pop() {
                    if walk.full() {
                        break;
                    }
                    let Some(entries) = list_dir(&dr) else {
                        continue;
                    };
                    let dirs: Vec<OsString> = entries
                        .into_iter()
                        .filter(|e| e.kind == Kind::Dir)
                        .map(|e| e.name)
                        .collect();
                    for d in &dirs {
                        if walk.full() {
                            break;
                        }
                        next.select(&ds.join(d), &dr.join(d), walk);
                    }
                    for d in dirs.iter().rev() {
                        stack.push((ds.join(d), dr.join(d)));
                    }
                }
                if owns_dedupe {
                    walk.dedupe = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime};

    use serde_json::json;

    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, ToolConfig) {
        let tmp = tempfile::tempdir().unwrap();
        let ws = fs::canonicalize(tmp.path()).unwrap();
        let cfg = ToolConfig {
            workdir: ws.to_string_lossy().into_owned(),
            ..ToolConfig::default()
        };
        (tmp, ws, cfg)
    }

    fn touch(path: &Path, secs: u64, nanos: u32) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        if !path.exists() {
            fs::write(path, "x").unwrap();
        }
        set_mtime(path, secs, nanos);
    }

    fn set_mtime(path: &Path, secs: u64, nanos: u32) {
        let t = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        fs::File::open(path).unwrap().set_modified(t).unwrap();
    }

    fn run_glob(cfg: &ToolConfig, input: serde_json::Value) -> Result<String, ToolFail> {
        run(&input, cfg).map(|v| match v {
            ToolValue::Text(s) => s,
            other => panic!("unexpected {other:?}"),
        })
    }

    fn glob_ok(cfg: &ToolConfig, pattern: &str) -> String {
        run_glob(cfg, json!({ "pattern": pattern })).unwrap()
    }

    fn rel(ws: &Path, out: &str) -> Vec<String> {
        if out == "no matches" {
            return Vec::new();
        }
        let prefix = format!("{}/", ws.display());
        out.lines()
            .map(|l| {
                if l == ws.to_str().unwrap() {
                    ".".to_string()
                } else {
                    l.strip_prefix(&prefix).unwrap().to_string()
                }
            })
            .collect()
    }

    #[test]
    fn lists_files_directories_and_dotfiles_newest_first() {
        let (_t, ws, cfg) = setup();
        touch(&ws.join("a.py"), 1_700_000_300, 0);
        touch(&ws.join(".hidden"), 1_700_000_200, 0);
        fs::create_dir(ws.join("d")).unwrap();
        touch(&ws.join("d/inner.py"), 1_700_000_400, 0);
        set_mtime(&ws.join("d"), 1_700_000_100, 0);
        assert_eq!(rel(&ws, &glob_ok(&cfg, "*")), ["a.py", ".hidden", "d"]);
        assert_eq!(rel(&ws, &glob_ok(&cfg, "*/")), ["d"]);
        assert_eq!(rel(&ws, &glob_ok(&cfg, "**/*.py")), ["d/inner.py", "a.py"]);
        assert_eq!(rel(&ws, &glob_ok(&cfg, "?.py")), ["a.py"]);
        assert_eq!(rel(&ws, &glob_ok(&cfg, "[!a].py")), Vec::<String>::new());
        assert_eq!(rel(&ws, &glob_ok(&cfg, "A.PY")), Vec::<String>::new());
        assert_eq!(rel(&ws, &glob_ok(&cfg, "{a,b}.py")), Vec::<String>::new());
    }

    #[test]
    fn double_star_yields_directories_only_including_the_root() {
        let (_t, ws, cfg) = setup();
        touch(&ws.join("top.txt"), 1_700_000_000, 0);
        touch(&ws.join("a/b/file.txt"), 1_700_000_000, 0);
        set_mtime(&ws.join("a/b"), 1_600_000_300, 0);
        set_mtime(&ws.join("a"), 1_600_000_200, 0);
        set_mtime(&ws, 1_600_000_100, 0);
        assert_eq!(rel(&ws, &glob_ok(&cfg, "**")), ["a/b", "a", "."]);
        assert_eq!(rel(&ws, &glob_ok(&cfg, "a/**")), ["a/b", "a"]);
        assert_eq!(rel(&ws, &glob_ok(&cfg, "**/")), ["a/b", "a", "."]);
    }

    #[test]
    fn symlinks_keep_their_spelling_and_cannot_escape() {
        let (_t, ws, cfg) = setup();
        let outside = tempfile::tempdir().unwrap();
        touch(&outside.path().join("secret"), 1_700_000_000, 0);
        touch(&ws.join("real/f.txt"), 1_700_000_000, 0);
        std::os::unix::fs::symlink(outside.path(), ws.join("out")).unwrap();
        std::os::unix::fs::symlink("real", ws.join("in")).unwrap();
        std::os::unix::fs::symlink("missing", ws.join("dangling")).unwrap();
        std::os::unix::fs::symlink("loop2", ws.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", ws.join("loop2")).unwrap();
        assert_eq!(glob_ok(&cfg, "out/*"), "no matches");
        assert_eq!(glob_ok(&cfg, "out"), "no matches");
        assert_eq!(rel(&ws, &glob_ok(&cfg, "in/*")), ["in/f.txt"]);
        assert_eq!(rel(&ws, &glob_ok(&cfg, "dangling")), ["dangling"]);
        assert_eq!(glob_ok(&cfg, "loop1"), "no matches");
        // `**` does not descend a symlinked directory.
        assert_eq!(rel(&ws, &glob_ok(&cfg, "**/f.txt")), ["real/f.txt"]);
        // A symlinked search root is used canonically.
        let out = run_glob(&cfg, json!({"pattern": "*", "path": "in"})).unwrap();
        assert_eq!(rel(&ws, &out), ["real/f.txt"]);
    }

    #[test]
    fn pattern_errors_use_the_reference_wording() {
        let (_t, _ws, cfg) = setup();
        let err = |p: &str| run_glob(&cfg, json!({ "pattern": p })).unwrap_err();
        assert_eq!(
            err("/etc/*"),
            ToolFail::Tool(
                "glob: absolute pattern not permitted; pass a relative pattern (and optionally path)"
                    .into()
            )
        );
        assert_eq!(
            err("a/../b"),
            ToolFail::Tool("glob: '..' is not permitted in the pattern".into())
        );
        assert_eq!(
            err(""),
            ToolFail::Tool("glob: Unacceptable pattern: ''".into())
        );
        assert_eq!(
            err("a**"),
            ToolFail::Tool(
                "glob: Invalid pattern: '**' can only be an entire path component".into()
            )
        );
        assert_eq!(
            err("."),
            ToolFail::Exception("IndexError('tuple index out of range')".into())
        );
        assert_eq!(
            err("./"),
            ToolFail::Exception(
                "AttributeError(\"'_TerminatingSelector' object has no attribute 'select_from'\")"
                    .into()
            )
        );
    }

    #[test]
    fn search_root_handling() {
        let (_t, ws, cfg) = setup();
        touch(&ws.join("f.txt"), 1_700_000_000, 0);
        let with_path = |p: &str| run_glob(&cfg, json!({"pattern": "*", "path": p}));
        assert_eq!(with_path("missing").unwrap(), "no matches");
        assert_eq!(with_path("f.txt").unwrap(), "no matches");
        assert_eq!(rel(&ws, &with_path("").unwrap()), ["f.txt"]);
        assert_eq!(
            with_path("/").unwrap_err(),
            ToolFail::Tool("glob: path '/' is outside the session's working directory".into())
        );
    }

    #[test]
    fn output_is_capped_at_200_lines() {
        let (_t, ws, cfg) = setup();
        for i in 0..250u64 {
            touch(&ws.join(format!("f{i:03}")), 1_700_000_000 + i, 0);
        }
        let out = rel(&ws, &glob_ok(&cfg, "f*"));
        assert_eq!(out.len(), 200);
        assert_eq!(out[0], "f249");
        assert_eq!(out[199], "f050");
    }

    #[test]
    fn ties_keep_directory_listing_order_at_float_precision() {
        let (_t, ws, cfg) = setup();
        // 1 ns apart: the same `st_mtime` float in Python, so a tie.
        for (i, name) in ["n1", "n2", "n3", "n4"].iter().enumerate() {
            touch(&ws.join(name), 1_700_000_000, i as u32);
        }
        let listing: Vec<String> = fs::read_dir(&ws)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(rel(&ws, &glob_ok(&cfg, "n*")), listing);
    }
}
