//! The `grep` tool: the reference's pure-Python walker (`_walk_grep`), the
//! backend it uses when no `rg` is installed.
//!
//! The pattern is Python `re` syntax, compiled by [`wasm_sandbox_pycompat::re`]; an invalid
//! one fails with `grep: invalid regex: <re.error text>`. A regular file is
//! scanned alone; a directory is walked like `os.walk` top-down, in
//! directory-listing order (not sorted): each directory's files first, then
//! its subdirectories, pruning `.git`, `node_modules` and symlinked
//! directories, skipping symlinked and non-regular files, and stopping
//! silently after 50,000 files. A file with a NUL in its first 512 bytes is
//! skipped. Lines are split on `\n`; a line longer than 2000 bytes (counting
//! its `\n`) is skipped but still numbered; the rest are decoded as UTF-8
//! with replacement, stripped of trailing `\r`/`\n`, and searched. Hits print
//! as `<path>:<line>:<text>` until the output would pass 102,400 characters,
//! where `[output truncated at 102400 bytes]` ends it. Unreadable files are
//! skipped silently.
//!
//! The reference stops after 30 s of CPU time (`grep: timed out after 30s`).
//! Here the budget is 30 s of wall-clock time, checked between files and
//! every few hundred lines, and a single search that exceeds the regex
//! engine's backtracking limit ([`wasm_sandbox_pycompat::re::BACKTRACK_LIMIT`]) also counts
//! as the timeout.
//!
//! # Security
//!
//! The search root is the canonical path from [`crate::paths::resolve_path`]
//! (or the resolved workdir). The walk never follows a symlink: symlinked
//! directories are not entered and symlinked files are not opened, so a link
//! planted in the workdir cannot lead the walk outside it. FIFOs and devices
//! are never opened, so a read cannot block.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::ToolConfig;
use crate::glob::display_path;
use crate::paths;
use crate::result::{ToolFail, ToolValue};
use crate::validate::{self, GrepInput};
use wasm_sandbox_pycompat::re::{self, CompileError, PyPattern};

/// Output budget in characters.
pub const GREP_OUTPUT_LIMIT: usize = 102_400;
/// Lines longer than this many bytes (including the `\n`) are skipped.
pub const GREP_MAX_LINE_LENGTH: usize = 2000;
/// At most this many files are searched.
pub const WALK_MAX_ENTRIES: usize = 50_000;
/// The reference's `_GREP_CPU_SECONDS`.
pub const GREP_SECONDS: u64 = 30;

const TRUNCATED: &str = "[output truncated at 102400 bytes]";
const CHUNK: usize = 64 * 1024;
/// Lines between two clock reads.
const CLOCK_EVERY: u32 = 256;

/// Runs `grep(pattern, path=None)`.
pub fn run(input: &Value, cfg: &ToolConfig) -> Result<ToolValue, ToolFail> {
    let GrepInput { pattern, path } = validate::grep_input(input)?;
    let search = match path.as_deref() {
        Some(p) if !p.is_empty() => paths::resolve_path("grep", p, cfg)?,
        _ => paths::resolved_workdir(cfg),
    };
    let rx = compile(&pattern)?;
    let deadline = Instant::now() + Duration::from_secs(GREP_SECONDS);
    walk_grep(&rx, &search, deadline).map(ToolValue::Text)
}

/// `re.compile(pattern)` with the reference's error handling.
fn compile(pattern: &str) -> Result<PyPattern, ToolFail> {
    re::compile(pattern).map_err(|e| match e {
        CompileError::Invalid(msg) | CompileError::Unsupported(msg) => {
            ToolFail::Tool(format!("grep: invalid regex: {msg}"))
        }
        CompileError::Exception(repr) => ToolFail::Exception(repr),
    })
}

fn timeout() -> ToolFail {
    ToolFail::Tool(format!("grep: timed out after {GREP_SECONDS}s"))
}

/// `_walk_grep(rx, search)` with an explicit deadline.
fn walk_grep(rx: &PyPattern, search: &Path, deadline: Instant) -> Result<String, ToolFail> {
    let mut g = Grep {
        rx,
        deadline,
        out: String::new(),
        budget: GREP_OUTPUT_LIMIT as isize,
        any: false,
        buf: vec![0; CHUNK],
        carry: Vec::with_capacity(GREP_MAX_LINE_LENGTH),
        lines_since_clock: 0,
    };
    // `os.walk` of a missing path or of a non-directory yields nothing. A
    // FIFO or device must never be opened: under WASI, opening one blocks
    // the host thread until a writer appears.
    match fs::metadata(search) {
        Ok(m) if m.is_file() => {
            g.scan(search)?;
        }
        Ok(m) if m.is_dir() => g.walk(search)?,
        _ => {}
    }
    Ok(if g.any { g.out } else { "no matches".into() })
}

struct Grep<'a> {
    rx: &'a PyPattern,
    deadline: Instant,
    out: String,
    budget: isize,
    any: bool,
    buf: Vec<u8>,
    carry: Vec<u8>,
    lines_since_clock: u32,
}

/// Whether to go on after a file.
type Go = bool;

enum Entry {
    Dir(OsString),
    File(OsString),
}

impl Grep<'_> {
    fn check_clock(&self) -> Result<(), ToolFail> {
        if Instant::now() >= self.deadline {
            return Err(timeout());
        }
        Ok(())
    }

    /// `os.walk(search)` with the reference's pruning.
    fn walk(&mut self, search: &Path) -> Result<(), ToolFail> {
        let mut seen = 0usize;
        let mut stack: Vec<PathBuf> = vec![search.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Some(entries) = list_dir(&dir) else {
                continue;
            };
            let mut dirs = Vec::new();
            for entry in entries {
                match entry {
                    Entry::File(name) => {
                        seen += 1;
                        if seen > WALK_MAX_ENTRIES || !self.scan(&dir.join(name))? {
                            return Ok(());
                        }
                    }
                    Entry::Dir(name) => {
                        if name != ".git" && name != "node_modules" {
                            dirs.push(name);
                        }
                    }
                }
            }
            for d in dirs.into_iter().rev() {
                stack.push(dir.join(d));
            }
        }
        Ok(())
    }

    /// `scan(full)`: false once the output budget is spent.
    fn scan(&mut self, path: &Path) -> Result<Go, ToolFail> {
        self.check_clock()?;
        let Ok(mut file) = File::open(path) else {
            return Ok(true);
        };
        // `f.read(512)` reads until 512 bytes or EOF.
        let mut filled = 0usize;
        while filled < 512 {
            match file.read(&mut self.buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Ok(true),
            }
        }
        if self.buf[..filled.min(512)].contains(&0) {
            return Ok(true);
        }
        let shown = display_path(path);
        let shown_chars = shown.chars().count();
        let mut buf = std::mem::take(&mut self.buf);
        let mut carry = std::mem::take(&mut self.carry);
        carry.clear();
        let r = self.scan_lines(&mut file, &mut buf, filled, &mut carry, &shown, shown_chars);
        self.buf = buf;
        self.carry = carry;
        r
    }

    fn scan_lines(
        &mut self,
        file: &mut File,
        buf: &mut [u8],
        mut filled: usize,
        carry: &mut Vec<u8>,
        shown: &str,
        shown_chars: usize,
    ) -> Result<Go, ToolFail> {
        let mut lineno = 0usize;
        // Raw bytes of the current unfinished line (may exceed `carry`).
        let mut carry_len = 0usize;
        loop {
            let data = &buf[..filled];
            let mut start = 0;
            while let Some(pos) = memchr::memchr(b'\n', &data[start..]) {
                let end = start + pos;
                lineno += 1;
                if carry_len + (end - start) < GREP_MAX_LINE_LENGTH {
                    let go = if carry_len == 0 {
                        self.line(&data[start..end], lineno, shown, shown_chars)?
                    } else {
                        carry.extend_from_slice(&data[start..end]);
                        self.line(carry, lineno, shown, shown_chars)?
                    };
                    if !go {
                        return Ok(false);
                    }
                }
                carry.clear();
                carry_len = 0;
                start = end + 1;
            }
            let rest = &data[start..];
            if carry_len + rest.len() <= GREP_MAX_LINE_LENGTH {
                carry.extend_from_slice(rest);
            }
            carry_len += rest.len();
            filled = loop {
                match file.read(buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // OSError mid-file: keep what was found, go on.
                    Err(_) => return Ok(true),
                }
            };
            if filled == 0 {
                break;
            }
        }
        if carry_len > 0 {
            lineno += 1;
            if carry_len <= GREP_MAX_LINE_LENGTH {
                return self.line(carry, lineno, shown, shown_chars);
            }
        }
        Ok(true)
    }

    /// One line (without its `\n`): decode, strip, search, print.
    fn line(
        &mut self,
        raw: &[u8],
        lineno: usize,
        shown: &str,
        shown_chars: usize,
    ) -> Result<Go, ToolFail> {
        self.lines_since_clock += 1;
        if self.lines_since_clock >= CLOCK_EVERY {
            self.lines_since_clock = 0;
            self.check_clock()?;
        }
        let text: Cow<'_, str> = String::from_utf8_lossy(raw);
        let text = text.trim_end_matches(['\r', '\n']);
        if !self.rx.search(text).map_err(|_| timeout())? {
            return Ok(true);
        }
        let digits = lineno.to_string();
        let cost = shown_chars + 1 + digits.len() + 1 + text.chars().count() + 1;
        self.budget -= isize::try_from(cost).unwrap_or(isize::MAX);
        if self.any {
            self.out.push('\n');
        }
        self.any = true;
        if self.budget < 0 {
            self.out.push_str(TRUNCATED);
            return Ok(false);
        }
        self.out.push_str(shown);
        self.out.push(':');
        self.out.push_str(&digits);
        self.out.push(':');
        self.out.push_str(text);
        Ok(true)
    }
}

/// One `os.scandir` listing, classified the way the walk uses it:
/// directories to descend (not symlinks) and regular files to scan (not
/// symlinks); symlinks and other file types are dropped. Any error while
/// listing drops the whole directory, as `os.walk` does.
fn list_dir(dir: &Path) -> Option<Vec<Entry>> {
    let rd = fs::read_dir(dir).ok()?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.ok()?;
        let ft = match e.file_type() {
            Ok(t) => t,
            Err(_) => match fs::symlink_metadata(e.path()) {
                Ok(m) => m.file_type(),
                Err(_) => continue,
            },
        };
        if ft.is_symlink() {
            continue;
        }
        if ft.is_dir() {
            out.push(Entry::Dir(e.file_name()));
        } else if ft.is_file() {
            out.push(Entry::File(e.file_name()));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

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

    fn write(path: &Path, data: impl AsRef<[u8]>) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, data).unwrap();
    }

    fn grep(cfg: &ToolConfig, input: serde_json::Value) -> Result<String, ToolFail> {
        run(&input, cfg).map(|v| match v {
            ToolValue::Text(s) => s,
            other => panic!("unexpected {other:?}"),
        })
    }

    fn grep_ok(cfg: &ToolConfig, pattern: &str) -> String {
        grep(cfg, json!({ "pattern": pattern })).unwrap()
    }

    #[test]
    fn prints_path_line_and_text() {
        let (_t, ws, cfg) = setup();
        write(&ws.join("a.txt"), "one\nneedle two\r\nthree needle\r\r\n");
        let w = ws.display();
        assert_eq!(
            grep_ok(&cfg, "needle"),
            format!("{w}/a.txt:2:needle two\n{w}/a.txt:3:three needle")
        );
        // A single file keeps the path prefix.
        assert_eq!(
            grep(&cfg, json!({"pattern": "^one$", "path": "a.txt"})).unwrap(),
            format!("{w}/a.txt:1:one")
        );
        assert_eq!(grep_ok(&cfg, "absent"), "no matches");
    }

    #[test]
    fn walk_order_pruning_and_skips() {
        let (_t, ws, cfg) = setup();
        write(&ws.join("top.txt"), "hit\n");
        write(&ws.join("sub/inner.txt"), "hit\n");
        write(&ws.join(".git/config"), "hit\n");
        write(&ws.join("node_modules/m.js"), "hit\n");
        write(&ws.join(".hidden"), "hit\n");
        std::os::unix::fs::symlink("top.txt", ws.join("link.txt")).unwrap();
        std::os::unix::fs::symlink("sub", ws.join("linkdir")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(ws.join("sock")).unwrap();
        let out = grep_ok(&cfg, "hit");
        let mut lines: Vec<&str> = out.lines().collect();
        // The subdirectory's file comes after every file of the top level.
        assert_eq!(
            lines.pop(),
            Some(format!("{}/sub/inner.txt:1:hit", ws.display()).as_str())
        );
        lines.sort_unstable();
        let w = ws.display();
        assert_eq!(
            lines,
            [format!("{w}/.hidden:1:hit"), format!("{w}/top.txt:1:hit")]
        );
    }

    #[test]
    fn binary_files_and_long_lines() {
        let (_t, ws, cfg) = setup();
        write(&ws.join("bin"), b"hit\x00\n");
        let mut late = vec![b'a'; 600];
        late.extend_from_slice(b"\nhit\x00late\n");
        write(&ws.join("late"), &late);
        let w = ws.display();
        assert_eq!(grep_ok(&cfg, "hit"), format!("{w}/late:2:hit\u{0}late"));

        fs::remove_file(ws.join("late")).unwrap();
        fs::remove_file(ws.join("bin")).unwrap();
        let mut text = String::new();
        text.push_str(&format!("hit{}\n", "x".repeat(1996))); // 2000 bytes with \n
        text.push_str(&format!("hit{}\n", "x".repeat(1997))); // 2001: skipped
        text.push_str("hit short\n");
        text.push_str(&format!("hit{}", "y".repeat(1997))); // 2000, no \n
        write(&ws.join("long"), &text);
        let out = grep_ok(&cfg, "^hit");
        let numbers: Vec<&str> = out.lines().map(|l| l.split(':').nth(1).unwrap()).collect();
        assert_eq!(numbers, ["1", "3", "4"]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let (_t, ws, cfg) = setup();
        write(&ws.join("bad"), b"a\xff\xfeb hit\nok \xe2\x82 hit\n");
        let w = ws.display();
        assert_eq!(
            grep_ok(&cfg, "hit"),
            format!("{w}/bad:1:a\u{FFFD}\u{FFFD}b hit\n{w}/bad:2:ok \u{FFFD} hit")
        );
        assert_eq!(
            grep_ok(&cfg, "\u{FFFD}b"),
            format!("{w}/bad:1:a\u{FFFD}\u{FFFD}b hit")
        );
    }

    #[test]
    fn output_budget_truncates() {
        let (_t, ws, cfg) = setup();
        let line = "hit ".repeat(20);
        write(&ws.join("big"), format!("{line}\n").repeat(5000));
        let out = grep_ok(&cfg, "hit");
        assert!(out.ends_with("\n[output truncated at 102400 bytes]"));
        let lines: Vec<&str> = out.lines().collect();
        let kept = &lines[..lines.len() - 1];
        // Lines are kept while the running total (each plus one) stays
        // within the budget; the next one would not have fit.
        let total: usize = kept.iter().map(|l| l.chars().count() + 1).sum();
        assert!(total <= GREP_OUTPUT_LIMIT);
        let next = format!("{}/big:{}:{line}", ws.display(), kept.len() + 1);
        assert!(total + next.chars().count() + 1 > GREP_OUTPUT_LIMIT);
    }

    #[test]
    fn errors() {
        let (_t, ws, cfg) = setup();
        write(&ws.join("f"), "x\n");
        assert_eq!(
            grep(&cfg, json!({"pattern": "("})).unwrap_err(),
            ToolFail::Tool(
                "grep: invalid regex: missing ), unterminated subpattern at position 0".into()
            )
        );
        assert_eq!(
            grep(&cfg, json!({"pattern": "a{4294967295}"})).unwrap_err(),
            ToolFail::Exception("OverflowError('the repetition number is too large')".into())
        );
        assert_eq!(
            grep(&cfg, json!({"pattern": "x", "path": "/"})).unwrap_err(),
            ToolFail::Tool("grep: path '/' is outside the session's working directory".into())
        );
        // The path is resolved before the pattern is compiled.
        assert_eq!(
            grep(&cfg, json!({"pattern": "(", "path": "/"})).unwrap_err(),
            ToolFail::Tool("grep: path '/' is outside the session's working directory".into())
        );
        assert_eq!(
            grep(&cfg, json!({"pattern": "x", "path": "missing"})).unwrap(),
            "no matches"
        );
    }

    #[test]
    fn deadline_stops_the_walk() {
        let (_t, ws, _cfg) = setup();
        write(&ws.join("f"), "x\n");
        let rx = compile("x").unwrap();
        assert_eq!(
            walk_grep(&rx, &ws, Instant::now()),
            Err(ToolFail::Tool("grep: timed out after 30s".into()))
        );
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(
            walk_grep(&rx, &ws, later),
            Ok(format!("{}/f:1:x", ws.display()))
        );
    }
}
