//! The `edit` tool: exact-substring replacement.
//!
//! As in the reference: resolve → read-only check → `stat` and
//! regular-file check → size cap → strict UTF-8 read (no image special
//! case) → `count = text.count(old_string)` → 0: not found; more than one
//! without `replace_all`: not unique; otherwise replace the first (or every)
//! occurrence and rewrite the file in place. The empty `old_string` "occurs"
//! `len + 1` times, as in Python. No line-ending normalisation.

use serde_json::Value;

use crate::config::ToolConfig;
use crate::paths::{check_writable, fs_reason, resolve_path};
use crate::result::{ToolFail, ToolValue};
use crate::validate::edit_input;

/// Runs the `edit` tool.
pub fn run(input: &Value, cfg: &ToolConfig) -> Result<ToolValue, ToolFail> {
    let args = edit_input(input)?;
    let file_path = args.file_path.as_str();
    let target = resolve_path("edit", file_path, cfg)?;
    check_writable("edit", &target, file_path, cfg)?;
    let meta = std::fs::metadata(&target).map_err(|e| fs_reason("edit", file_path, &e))?;
    if !meta.is_file() {
        return Err(ToolFail::Tool(format!(
            "edit: {file_path}: not a regular file"
        )));
    }
    if let Some(limit) = cfg.max_file_bytes
        && meta.len() > limit
    {
        return Err(ToolFail::Tool(format!(
            "edit: {file_path} is {} bytes, exceeds {limit}-byte limit. The edit tool loads the whole file and \
             cannot modify a file this large.",
            meta.len()
        )));
    }
    let bytes = std::fs::read(&target).map_err(|e| fs_reason("edit", file_path, &e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ToolFail::Tool(format!(
            "edit: {file_path}: not valid UTF-8 text (cannot edit binary files)"
        ))
    })?;
    let old = args.old_string.as_str();
    let count = text.matches(old).count();
    if count == 0 {
        return Err(ToolFail::Tool(format!(
            "edit: old_string not found in {file_path}"
        )));
    }
    let replace_all = args.replace_all.unwrap_or(false);
    if !replace_all && count > 1 {
        return Err(ToolFail::Tool(format!(
            "edit: old_string appears {count} times in {file_path} (must be unique)"
        )));
    }
    let updated = if replace_all {
        text.replace(old, &args.new_string)
    } else {
        text.replacen(old, &args.new_string, 1)
    };
    std::fs::write(&target, updated.as_bytes()).map_err(|e| fs_reason("edit", file_path, &e))?;
    let k = if replace_all { count } else { 1 };
    Ok(ToolValue::Text(format!(
        "edited {file_path} ({k} replacement(s))"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn setup() -> (tempfile::TempDir, std::path::PathBuf, ToolConfig) {
        let tmp = tempfile::tempdir().unwrap();
        let ws = std::fs::canonicalize(tmp.path()).unwrap();
        let cfg = ToolConfig {
            workdir: ws.to_string_lossy().into_owned(),
            ..ToolConfig::default()
        };
        (tmp, ws, cfg)
    }

    fn ok(r: Result<ToolValue, ToolFail>) -> String {
        match r {
            Ok(ToolValue::Text(s)) => s,
            other => panic!("expected text, got {other:?}"),
        }
    }

    fn tool_err(r: Result<ToolValue, ToolFail>) -> String {
        match r {
            Err(ToolFail::Tool(s)) => s,
            other => panic!("expected a tool error, got {other:?}"),
        }
    }

    fn edit(
        cfg: &ToolConfig,
        old: &str,
        new: &str,
        all: Option<bool>,
    ) -> Result<ToolValue, ToolFail> {
        let mut input = json!({"file_path": "f.txt", "old_string": old, "new_string": new});
        if let Some(all) = all {
            input["replace_all"] = json!(all);
        }
        run(&input, cfg)
    }

    #[test]
    fn unique_and_replace_all() {
        let (_t, ws, cfg) = setup();
        let f = ws.join("f.txt");
        std::fs::write(&f, "a-b-a\r\n").unwrap();
        assert_eq!(
            tool_err(edit(&cfg, "zzz", "y", None)),
            "edit: old_string not found in f.txt"
        );
        assert_eq!(
            tool_err(edit(&cfg, "a", "y", None)),
            "edit: old_string appears 2 times in f.txt (must be unique)"
        );
        assert_eq!(
            tool_err(edit(&cfg, "a", "y", Some(false))),
            "edit: old_string appears 2 times in f.txt (must be unique)"
        );
        assert_eq!(
            ok(edit(&cfg, "b", "$1 \\1", None)),
            "edited f.txt (1 replacement(s))"
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a-$1 \\1-a\r\n");
        assert_eq!(
            ok(edit(&cfg, "a", "é", Some(true))),
            "edited f.txt (2 replacement(s))"
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "é-$1 \\1-é\r\n");
        // No line-ending normalisation.
        assert_eq!(
            tool_err(edit(&cfg, "é\n", "x", None)),
            "edit: old_string not found in f.txt"
        );
        // A no-op edit succeeds.
        assert_eq!(
            ok(edit(&cfg, "$1", "$1", None)),
            "edited f.txt (1 replacement(s))"
        );
        // Overlapping occurrences count like Python's str.count.
        std::fs::write(&f, "aaaa").unwrap();
        assert_eq!(
            ok(edit(&cfg, "aa", "b", Some(true))),
            "edited f.txt (2 replacement(s))"
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "bb");
    }

    #[test]
    fn empty_old_string() {
        let (_t, ws, cfg) = setup();
        let f = ws.join("f.txt");
        std::fs::write(&f, "ab").unwrap();
        assert_eq!(
            tool_err(edit(&cfg, "", "x", None)),
            "edit: old_string appears 3 times in f.txt (must be unique)"
        );
        assert_eq!(
            ok(edit(&cfg, "", "-", Some(true))),
            "edited f.txt (3 replacement(s))"
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "-a-b-");
        std::fs::write(&f, "").unwrap();
        assert_eq!(
            ok(edit(&cfg, "", "new", None)),
            "edited f.txt (1 replacement(s))"
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
    }

    #[test]
    fn refusals() {
        let (_t, ws, mut cfg) = setup();
        std::fs::create_dir(ws.join("d")).unwrap();
        std::fs::write(ws.join("img.png"), [0x89, b'P', b'N', b'G', 0xff]).unwrap();
        std::fs::write(ws.join("notes.png"), "text").unwrap();
        let e = |p: &str, cfg: &ToolConfig| {
            run(
                &json!({"file_path": p, "old_string": "t", "new_string": "T"}),
                cfg,
            )
        };
        assert_eq!(
            tool_err(e("missing", &cfg)),
            "edit: missing: no such file or directory"
        );
        assert_eq!(tool_err(e("d", &cfg)), "edit: d: not a regular file");
        assert_eq!(
            tool_err(e("img.png", &cfg)),
            "edit: img.png: not valid UTF-8 text (cannot edit binary files)"
        );
        assert_eq!(
            tool_err(e("notes.png", &cfg)),
            "edit: old_string appears 2 times in notes.png (must be unique)"
        );
        cfg.max_file_bytes = Some(3);
        assert_eq!(
            tool_err(e("notes.png", &cfg)),
            "edit: notes.png is 4 bytes, exceeds 3-byte limit. The edit tool loads the whole file and cannot modify \
             a file this large."
        );
        cfg.read_only_roots.push(ws.to_string_lossy().into_owned());
        assert_eq!(
            tool_err(e("missing", &cfg)),
            format!(
                "edit: missing is inside read-only directory {}",
                ws.display()
            )
        );
        assert_eq!(
            run(
                &json!({"file_path": "x", "old_string": "a", "new_string": "b", "replace_all": "maybe"}),
                &cfg
            ),
            Err(ToolFail::Exception(
                "ValueError('Invalid arguments for function edit')".into()
            ))
        );
    }
}
