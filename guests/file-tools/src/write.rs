//! The `write` tool: create or overwrite a whole file, creating parent
//! directories as needed.
//!
//! As in the reference: resolve → read-only check → `mkdir -p` the parent
//! (pathlib's `mkdir(parents=True, exist_ok=True)`) → write the bytes in
//! place (`O_TRUNC`, not atomic; an existing file keeps its mode and inode)
//! → `wrote <N> bytes to <file_path>`, where `N` counts characters (code
//! points), not bytes.
//!
//! A lone surrogate in `content` cannot reach this code: the request is JSON
//! parsed by `serde_json`, which refuses `\ud800`-style escapes, so such a
//! call is answered by the request parser (the reference would raise
//! `UnicodeEncodeError(...)` after creating the parent directories).

use serde_json::Value;

use crate::config::ToolConfig;
use crate::paths::{check_writable, fs_reason, make_dirs, resolve_path};
use crate::result::{ToolFail, ToolValue};
use crate::validate::write_input;

/// Runs the `write` tool.
pub fn run(input: &Value, cfg: &ToolConfig) -> Result<ToolValue, ToolFail> {
    let args = write_input(input)?;
    let file_path = args.file_path.as_str();
    let target = resolve_path("write", file_path, cfg)?;
    check_writable("write", &target, file_path, cfg)?;
    if let Some(parent) = target.parent() {
        make_dirs(cfg, parent).map_err(|e| fs_reason("write", file_path, &e))?;
    }
    // Deliberate deviation: the reference opens a FIFO for writing and hangs
    // until a reader appears (forever, in practice). Under WASI that would
    // block a host thread, so anything that is neither a file nor a
    // directory (which fails below with `is a directory`) is refused.
    if let Ok(m) = std::fs::metadata(&target)
        && !m.is_file()
        && !m.is_dir()
    {
        return Err(ToolFail::Tool(format!(
            "write: {file_path}: not a regular file"
        )));
    }
    std::fs::write(&target, args.content.as_bytes())
        .map_err(|e| fs_reason("write", file_path, &e))?;
    Ok(ToolValue::Text(format!(
        "wrote {} bytes to {file_path}",
        args.content.chars().count()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn setup() -> (tempfile::TempDir, std::path::PathBuf, ToolConfig) {
        let tmp = tempfile::tempdir().unwrap();
        let ws = std::fs::canonicalize(tmp.path()).unwrap().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let cfg = ToolConfig {
            workdir: ws.to_string_lossy().into_owned(),
            ..ToolConfig::default()
        };
        (tmp, ws, cfg)
    }

    fn tool_err(r: Result<ToolValue, ToolFail>) -> String {
        match r {
            Err(ToolFail::Tool(s)) => s,
            other => panic!("expected a tool error, got {other:?}"),
        }
    }

    #[test]
    fn counts_characters_and_creates_parents() {
        let (_t, ws, cfg) = setup();
        let r = run(
            &json!({"file_path": "a/b/c.txt", "content": "héllo ✓ 名前\n"}),
            &cfg,
        )
        .unwrap();
        assert_eq!(r, ToolValue::Text("wrote 11 bytes to a/b/c.txt".into()));
        assert_eq!(
            std::fs::read(ws.join("a/b/c.txt")).unwrap(),
            "héllo ✓ 名前\n".as_bytes()
        );
        let r = run(&json!({"file_path": "crlf", "content": "x\r\ny"}), &cfg).unwrap();
        assert_eq!(r, ToolValue::Text("wrote 4 bytes to crlf".into()));
        assert_eq!(std::fs::read(ws.join("crlf")).unwrap(), b"x\r\ny");
        // A trailing slash is dropped: this creates a file named `sub`.
        run(&json!({"file_path": "scratch/sub/", "content": ""}), &cfg).unwrap();
        assert!(ws.join("scratch/sub").is_file());
    }

    #[test]
    fn overwrite_keeps_mode_and_inode() {
        let (_t, ws, cfg) = setup();
        let f = ws.join("f.sh");
        std::fs::write(&f, "old content that is longer").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o751)).unwrap();
        let ino = std::fs::metadata(&f).unwrap().ino();
        run(&json!({"file_path": "f.sh", "content": "new"}), &cfg).unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.ino(), m.mode() & 0o777), (ino, 0o751));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
    }

    #[test]
    fn writes_through_links_to_the_target() {
        let (_t, ws, cfg) = setup();
        std::fs::write(ws.join("real"), "x").unwrap();
        symlink("real", ws.join("link")).unwrap();
        symlink("made/by/write", ws.join("dangling")).unwrap();
        run(&json!({"file_path": "link", "content": "via link"}), &cfg).unwrap();
        assert_eq!(
            std::fs::read_to_string(ws.join("real")).unwrap(),
            "via link"
        );
        assert!(
            std::fs::symlink_metadata(ws.join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        run(&json!({"file_path": "dangling", "content": "new"}), &cfg).unwrap();
        assert_eq!(
            std::fs::read_to_string(ws.join("made/by/write")).unwrap(),
            "new"
        );
        symlink(ws.parent().unwrap(), ws.join("up")).unwrap();
        assert_eq!(
            tool_err(run(&json!({"file_path": "up/evil", "content": ""}), &cfg)),
            "write: path 'up/evil' is outside the session's working directory"
        );
        assert!(!ws.parent().unwrap().join("evil").exists());
    }

    #[test]
    fn os_errors_are_normalised() {
        let (_t, ws, cfg) = setup();
        std::fs::create_dir(ws.join("dir")).unwrap();
        std::fs::write(ws.join("file"), "x").unwrap();
        assert_eq!(
            tool_err(run(&json!({"file_path": "dir", "content": ""}), &cfg)),
            "write: dir: is a directory"
        );
        assert_eq!(
            tool_err(run(&json!({"file_path": "file/x", "content": ""}), &cfg)),
            "write: file/x: file already exists"
        );
        assert_eq!(
            tool_err(run(&json!({"file_path": "file/x/y", "content": ""}), &cfg)),
            "write: file/x/y: not a directory"
        );
    }

    #[test]
    fn read_only_roots_refuse_after_resolution() {
        let (_t, ws, mut cfg) = setup();
        std::fs::create_dir_all(ws.join("memory/org-policies")).unwrap();
        cfg.read_only_roots
            .push(format!("{}/memory/org-policies", ws.display()));
        let r = run(
            &json!({"file_path": "memory/notes/../org-policies/x.md", "content": "x"}),
            &cfg,
        );
        assert_eq!(
            tool_err(r),
            format!(
                "write: memory/notes/../org-policies/x.md is inside read-only directory {}/memory/org-policies",
                ws.display()
            )
        );
        assert!(!ws.join("memory/notes").exists());
    }

    #[test]
    fn lone_surrogates_never_reach_the_tool() {
        let (_t, ws, cfg) = setup();
        let input = json!({"file_path": "s/f", "content": "x"})
            .to_string()
            .replace("\"x\"", "\"bad \\ud800 surrogate\"");
        let out = crate::call(crate::Tool::Write, &input, &cfg);
        assert_eq!(out.outcome, crate::result::Outcome::ToolError);
        assert!(out.text().starts_with("invalid request: "));
        assert!(!ws.join("s").exists());
    }

    #[test]
    fn validation_errors() {
        let (_t, _ws, cfg) = setup();
        assert_eq!(
            run(&json!({"file_path": "f", "content": 123}), &cfg),
            Err(ToolFail::Exception(
                "ValueError('Invalid arguments for function write')".into()
            ))
        );
    }
}
