//! The `read` tool: a file's raw UTF-8 text (no line numbers), an optional
//! 1-indexed inclusive `view_range`, and images/PDFs as base64 blocks.
//!
//! Order of checks, as in the reference: validate → resolve the path →
//! `view_range` length → `stat` (never `open` first, so a FIFO or device is
//! refused without blocking on it) → regular-file check → image/PDF branch
//! (chosen by the extension of the canonical path, no sniffing) → size cap
//! → strict UTF-8 → slice. Over the cap, a ranged read streams the file in
//! 64 KiB chunks and applies the cap to the selected bytes only.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::config::ToolConfig;
use crate::paths::{fs_reason, resolve_path};
use crate::result::{ToolFail, ToolValue};
use crate::validate::{PyInt, read_input};

/// Chunk size of the streamed ranged read (`READ_STREAM_CHUNK_BYTES`).
const STREAM_CHUNK_BYTES: usize = 64 * 1024;

/// Runs the `read` tool.
pub fn run(input: &Value, cfg: &ToolConfig) -> Result<ToolValue, ToolFail> {
    let args = read_input(input)?;
    let file_path = args.file_path.as_str();
    let target = resolve_path("read", file_path, cfg)?;
    // `if view_range`: an empty list reads as no range.
    let view_range = args.view_range.filter(|v| !v.is_empty());
    let range = match view_range.as_deref() {
        None => None,
        Some([start, end]) => Some((start, end)),
        Some(_) => {
            return Err(ToolFail::Tool(
                "read: view_range must be [start_line, end_line]".into(),
            ));
        }
    };
    let meta = std::fs::metadata(&target).map_err(|e| fs_reason("read", file_path, &e))?;
    if !meta.is_file() {
        return Err(ToolFail::Tool(format!(
            "read: {file_path}: not a regular file"
        )));
    }
    let size = meta.len();
    if let Some(media_type) = binary_media_type(&target) {
        if range.is_some() {
            return Err(ToolFail::Tool(
                "read: view_range is not supported for image/PDF files".into(),
            ));
        }
        return binary_block(&target, file_path, size, media_type, cfg)
            .map(|b| ToolValue::Blocks(vec![b]));
    }
    if let Some(limit) = cfg.max_file_bytes
        && size > limit
    {
        let Some((start, end)) = range else {
            return Err(ToolFail::Tool(format!(
                "read: {file_path} is {size} bytes, exceeds {limit}-byte limit. Use the view_range parameter to \
                 read specific line ranges, e.g. view_range: [1, 500]."
            )));
        };
        return read_line_range(&target, file_path, start, end, limit).map(ToolValue::Text);
    }
    let bytes = std::fs::read(&target).map_err(|e| fs_reason("read", file_path, &e))?;
    let text = String::from_utf8(bytes).map_err(|_| not_utf8(file_path))?;
    Ok(ToolValue::Text(match range {
        None => text,
        Some((start, end)) => slice_lines(&text, start.value, end.value),
    }))
}

fn not_utf8(file_path: &str) -> ToolFail {
    ToolFail::Tool(format!(
        "read: {file_path}: not valid UTF-8 text (binary files are only supported for image/PDF extensions)"
    ))
}

/// `_BINARY_MEDIA_TYPES.get(target.suffix.lower())`.
fn binary_media_type(target: &Path) -> Option<&'static str> {
    let name = target.file_name()?.to_string_lossy();
    // pathlib's suffix: from the last dot, not a leading dot, not a trailing one.
    let dot = name.rfind('.')?;
    if dot == 0 || dot + 1 >= name.len() {
        return None;
    }
    match name[dot..].to_lowercase().as_str() {
        ".png" => Some("image/png"),
        ".jpg" | ".jpeg" => Some("image/jpeg"),
        ".gif" => Some("image/gif"),
        ".webp" => Some("image/webp"),
        ".pdf" => Some("application/pdf"),
        _ => None,
    }
}

/// `_read_binary_block`: the media cap (tightened by an explicit
/// `max_file_bytes`), then the whole file as one base64 block.
fn binary_block(
    target: &Path,
    file_path: &str,
    size: u64,
    media_type: &str,
    cfg: &ToolConfig,
) -> Result<Value, ToolFail> {
    let pdf = media_type == "application/pdf";
    let mut limit = if pdf {
        cfg.max_pdf_bytes
    } else {
        cfg.max_image_base64_bytes.map(|cap| (cap / 4) * 3)
    };
    if cfg.max_file_bytes_explicit
        && let Some(m) = cfg.max_file_bytes
    {
        limit = Some(limit.map_or(m, |l| l.min(m)));
    }
    if let Some(limit) = limit
        && size > limit
    {
        return Err(ToolFail::Tool(format!(
            "read: {file_path} is {size} bytes, exceeds {limit}-byte limit for image/PDF files."
        )));
    }
    let bytes = std::fs::read(target).map_err(|e| fs_reason("read", file_path, &e))?;
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    let kind = if pdf { "document" } else { "image" };
    Ok(json!({"type": kind, "source": {"type": "base64", "media_type": media_type, "data": data}}))
}

/// In-memory slicing: split on `\n`, `start = max(0, s - 1)`,
/// `end = e if e > 0 else all`, join with `\n`.
fn slice_lines(text: &str, start_line: i64, end_line: i64) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let start = usize::try_from(start_line.saturating_sub(1).max(0)).unwrap_or(usize::MAX);
    let end = if end_line > 0 {
        usize::try_from(end_line).unwrap_or(usize::MAX)
    } else {
        lines.len()
    };
    let end = end.min(lines.len());
    if start >= end {
        return String::new();
    }
    lines[start..end].join("\n")
}

/// `read_line_range`: lines `[start_line, end_line]`, streamed, with the cap
/// on the selected bytes.
fn read_line_range(
    target: &Path,
    file_path: &str,
    start: &PyInt,
    end: &PyInt,
    limit: u64,
) -> Result<String, ToolFail> {
    let mut lines = LineRangeCollector::new(file_path, start, end, limit);
    if lines.range_is_empty() {
        return Ok(String::new());
    }
    let io_err = |e: io::Error| fs_reason("read", file_path, &e);
    let mut file = File::open(target).map_err(io_err)?;
    let mut chunk = vec![0u8; STREAM_CHUNK_BYTES];
    loop {
        let n = read_full(&mut file, &mut chunk).map_err(io_err)?;
        if n == 0 {
            break;
        }
        lines.collect_from(&chunk[..n])?;
        if lines.range_is_collected() {
            break;
        }
    }
    String::from_utf8(lines.collected).map_err(|_| not_utf8(file_path))
}

/// Reads until the buffer is full or the file ends (like Python's
/// buffered `f.read(n)`).
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The reference's `LineRangeCollector`.
struct LineRangeCollector<'a> {
    file_path: &'a str,
    start_line: &'a PyInt,
    end_line: &'a PyInt,
    /// 0-based first line collected.
    start: i64,
    /// 0-based line after the last one collected (`i64::MAX`: to EOF).
    end: i64,
    limit: u64,
    line: i64,
    collected: Vec<u8>,
}

impl<'a> LineRangeCollector<'a> {
    fn new(file_path: &'a str, start_line: &'a PyInt, end_line: &'a PyInt, limit: u64) -> Self {
        LineRangeCollector {
            file_path,
            start_line,
            end_line,
            start: start_line.value.saturating_sub(1).max(0),
            end: if end_line.value > 0 {
                end_line.value
            } else {
                i64::MAX
            },
            limit,
            line: 0,
            collected: Vec::new(),
        }
    }

    fn range_is_empty(&self) -> bool {
        self.end <= self.start
    }

    fn range_is_collected(&self) -> bool {
        self.line >= self.end
    }

    fn collect_from(&mut self, chunk: &[u8]) -> Result<(), ToolFail> {
        let mut line_start = 0;
        while line_start < chunk.len() && !self.range_is_collected() {
            let newline = chunk[line_start..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|i| i + line_start);
            let line_end = newline.unwrap_or(chunk.len());
            if self.line >= self.start {
                self.collect(&chunk[line_start..line_end], newline.is_some())?;
            }
            let Some(nl) = newline else { break };
            self.line += 1;
            line_start = nl + 1;
        }
        Ok(())
    }

    fn collect(&mut self, line: &[u8], newline_terminated: bool) -> Result<(), ToolFail> {
        self.collected.extend_from_slice(line);
        if newline_terminated && self.line.saturating_add(1) < self.end {
            self.collected.push(b'\n');
        }
        if self.collected.len() as u64 > self.limit {
            return Err(self.over_limit_error());
        }
        Ok(())
    }

    fn over_limit_error(&self) -> ToolFail {
        let (file_path, limit) = (self.file_path, self.limit);
        if self.end - self.start == 1 {
            return ToolFail::Tool(format!(
                "read: line {} of {file_path} alone exceeds {limit}-byte limit. The read tool cannot return part of \
                 a line, so view_range cannot narrow this further.",
                self.start + 1
            ));
        }
        ToolFail::Tool(format!(
            "read: view_range [{}, {}] of {file_path} exceeds {limit}-byte limit. Narrow the view_range to read a \
             smaller portion.",
            self.start_line.text, self.end_line.text
        ))
    }
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

    fn text(r: Result<ToolValue, ToolFail>) -> String {
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

    #[test]
    fn raw_text_is_returned_unchanged() {
        let (_t, ws, cfg) = setup();
        std::fs::write(ws.join("f.txt"), "\u{feff}a\r\nb\0\n").unwrap();
        assert_eq!(
            text(run(&json!({"file_path": "f.txt"}), &cfg)),
            "\u{feff}a\r\nb\0\n"
        );
        assert_eq!(
            text(run(&json!({"file_path": "f.txt/", "view_range": []}), &cfg)),
            "\u{feff}a\r\nb\0\n"
        );
    }

    #[test]
    fn view_range_slicing() {
        let (_t, ws, cfg) = setup();
        std::fs::write(ws.join("f.txt"), "l1\nl2\r\nl3\nl4\n").unwrap();
        let r = |vr: Value| text(run(&json!({"file_path": "f.txt", "view_range": vr}), &cfg));
        assert_eq!(r(json!([2, 3])), "l2\r\nl3");
        assert_eq!(r(json!([2, -1])), "l2\r\nl3\nl4\n");
        assert_eq!(r(json!([2, 0])), "l2\r\nl3\nl4\n");
        assert_eq!(r(json!([0, 1])), "l1");
        assert_eq!(r(json!([-5, 1])), "l1");
        assert_eq!(r(json!([3, 2])), "");
        assert_eq!(r(json!([10, 20])), "");
        assert_eq!(r(json!(["2", 2.0])), "l2\r");
        assert_eq!(
            r(json!([1, "99999999999999999999999"])),
            "l1\nl2\r\nl3\nl4\n"
        );
        assert_eq!(
            tool_err(run(&json!({"file_path": "f.txt", "view_range": [1]}), &cfg)),
            "read: view_range must be [start_line, end_line]"
        );
        assert_eq!(
            tool_err(run(
                &json!({"file_path": "f.txt", "view_range": [1, 2, 3]}),
                &cfg
            )),
            "read: view_range must be [start_line, end_line]"
        );
    }

    #[test]
    fn errors_echo_the_path_as_given() {
        let (_t, ws, cfg) = setup();
        std::fs::create_dir(ws.join("d")).unwrap();
        std::fs::write(ws.join("bin.dat"), [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(
            tool_err(run(&json!({"file_path": "nope.txt"}), &cfg)),
            "read: nope.txt: no such file or directory"
        );
        assert_eq!(
            tool_err(run(&json!({"file_path": "d"}), &cfg)),
            "read: d: not a regular file"
        );
        assert_eq!(
            tool_err(run(&json!({"file_path": ""}), &cfg)),
            "read: : not a regular file"
        );
        assert_eq!(
            tool_err(run(&json!({"file_path": "bin.dat"}), &cfg)),
            "read: bin.dat: not valid UTF-8 text (binary files are only supported for image/PDF extensions)"
        );
        assert_eq!(
            tool_err(run(&json!({"file_path": "../x"}), &cfg)),
            "read: path '../x' is outside the session's working directory"
        );
        // The range length is checked after resolution, before stat.
        assert_eq!(
            tool_err(run(&json!({"file_path": "nope", "view_range": [1]}), &cfg)),
            "read: view_range must be [start_line, end_line]"
        );
        assert_eq!(
            run(&json!({"file_path": 1}), &cfg),
            Err(ToolFail::Exception(
                "ValueError('Invalid arguments for function read')".into()
            ))
        );
    }

    #[test]
    fn fifo_is_not_opened() {
        let (_t, ws, cfg) = setup();
        let fifo = ws.join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert_eq!(
            tool_err(run(&json!({"file_path": "pipe"}), &cfg)),
            "read: pipe: not a regular file"
        );
    }

    #[test]
    fn whole_file_cap() {
        let (_t, ws, mut cfg) = setup();
        cfg.max_file_bytes = Some(10);
        std::fs::write(ws.join("big.txt"), "0123456789A").unwrap();
        assert_eq!(
            tool_err(run(&json!({"file_path": "big.txt"}), &cfg)),
            "read: big.txt is 11 bytes, exceeds 10-byte limit. Use the view_range parameter to read specific line \
             ranges, e.g. view_range: [1, 500]."
        );
        cfg.max_file_bytes = None;
        assert_eq!(
            text(run(&json!({"file_path": "big.txt"}), &cfg)),
            "0123456789A"
        );
    }

    #[test]
    fn streamed_range_matches_in_memory_slicing() {
        let (_t, ws, mut cfg) = setup();
        // Lines that straddle the 64 KiB chunk boundary.
        let mut content = String::new();
        for i in 0..3000 {
            content.push_str(&format!("line {i} {}\n", "x".repeat(i % 97)));
        }
        content.push_str("tail without newline");
        std::fs::write(ws.join("f.txt"), &content).unwrap();
        let ranges = [
            (1, 5),
            (1000, 1010),
            (2990, -1),
            (2995, 0),
            (3001, 3001),
            (2, 1),
            (0, 1),
            (2999, 3005),
        ];
        for (s, e) in ranges {
            cfg.max_file_bytes = None;
            let full = text(run(
                &json!({"file_path": "f.txt", "view_range": [s, e]}),
                &cfg,
            ));
            cfg.max_file_bytes = Some(4000);
            let streamed = text(run(
                &json!({"file_path": "f.txt", "view_range": [s, e]}),
                &cfg,
            ));
            assert_eq!(full, streamed, "[{s}, {e}]");
        }
    }

    #[test]
    fn streamed_range_cap_messages() {
        let (_t, ws, mut cfg) = setup();
        cfg.max_file_bytes = Some(10);
        std::fs::write(ws.join("f.txt"), "short\nthis line is long\nx\n").unwrap();
        assert_eq!(
            tool_err(run(
                &json!({"file_path": "f.txt", "view_range": [2, 2]}),
                &cfg
            )),
            "read: line 2 of f.txt alone exceeds 10-byte limit. The read tool cannot return part of a line, so \
             view_range cannot narrow this further."
        );
        assert_eq!(
            tool_err(run(
                &json!({"file_path": "f.txt", "view_range": ["01", "99999999999999999999"]}),
                &cfg
            )),
            "read: view_range [1, 99999999999999999999] of f.txt exceeds 10-byte limit. Narrow the view_range to \
             read a smaller portion."
        );
        assert_eq!(
            text(run(
                &json!({"file_path": "f.txt", "view_range": [1, 1]}),
                &cfg
            )),
            "short"
        );
        assert_eq!(
            text(run(
                &json!({"file_path": "f.txt", "view_range": [3, 9]}),
                &cfg
            )),
            "x\n"
        );
        assert_eq!(
            text(run(
                &json!({"file_path": "f.txt", "view_range": [5, 4]}),
                &cfg
            )),
            ""
        );
        // Invalid UTF-8 outside the selected lines does not matter.
        std::fs::write(ws.join("g.txt"), b"ok\n\xff\xfe long binary line\n").unwrap();
        assert_eq!(
            text(run(
                &json!({"file_path": "g.txt", "view_range": [1, 1]}),
                &cfg
            )),
            "ok"
        );
        assert!(
            tool_err(run(
                &json!({"file_path": "g.txt", "view_range": [2, 2]}),
                &cfg
            ))
            .contains("alone exceeds")
        );
    }

    #[test]
    fn images_and_pdfs_are_blocks_by_extension() {
        let (_t, ws, mut cfg) = setup();
        std::fs::write(ws.join("notes.PNG"), "just text").unwrap();
        std::fs::write(ws.join("doc.pdf"), b"%PDF-1.4\xff").unwrap();
        std::fs::write(ws.join(".png"), "hidden").unwrap();
        let r = run(&json!({"file_path": "notes.PNG"}), &cfg).unwrap();
        assert_eq!(
            r,
            ToolValue::Blocks(vec![
                json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "anVzdCB0ZXh0"}})
            ])
        );
        let r = run(&json!({"file_path": "doc.pdf"}), &cfg).unwrap();
        assert_eq!(
            r,
            ToolValue::Blocks(vec![
                json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjT/"}})
            ])
        );
        assert_eq!(text(run(&json!({"file_path": ".png"}), &cfg)), "hidden");
        assert_eq!(
            tool_err(run(
                &json!({"file_path": "doc.pdf", "view_range": [1, 2]}),
                &cfg
            )),
            "read: view_range is not supported for image/PDF files"
        );
        // An empty range is no range.
        assert!(run(&json!({"file_path": "doc.pdf", "view_range": []}), &cfg).is_ok());
        cfg.max_image_base64_bytes = Some(8);
        assert_eq!(
            tool_err(run(&json!({"file_path": "notes.PNG"}), &cfg)),
            "read: notes.PNG is 9 bytes, exceeds 6-byte limit for image/PDF files."
        );
        // The default text cap does not bind images; an explicit one does.
        cfg.max_image_base64_bytes = None;
        cfg.max_file_bytes = Some(4);
        assert!(run(&json!({"file_path": "notes.PNG"}), &cfg).is_ok());
        cfg.max_file_bytes_explicit = true;
        assert_eq!(
            tool_err(run(&json!({"file_path": "notes.PNG"}), &cfg)),
            "read: notes.PNG is 9 bytes, exceeds 4-byte limit for image/PDF files."
        );
        cfg.max_pdf_bytes = Some(3);
        assert_eq!(
            tool_err(run(&json!({"file_path": "doc.pdf"}), &cfg)),
            "read: doc.pdf is 9 bytes, exceeds 3-byte limit for image/PDF files."
        );
    }

    #[test]
    fn empty_file_is_empty_text() {
        let (_t, ws, cfg) = setup();
        std::fs::write(ws.join("e"), "").unwrap();
        assert_eq!(text(run(&json!({"file_path": "e"}), &cfg)), "");
    }
}
