//! The reference bash tool's wire semantics, as pure functions.
//!
//! Everything here reproduces `anthropic` 2.10.0 (`lib/tools/agent_toolset.py`,
//! `BashSession.exec` and `beta_bash_tool`) byte for byte; see
//! `shared/spec/toolset.md` §2 and §5.6. Nothing here touches a process, so all of
//! it is unit-tested directly.
//!
//! * [`parse_input`] mirrors `pydantic.validate_call` in lax mode on
//!   `bash(command: Optional[str], restart: Optional[bool], timeout_ms: Optional[int])`.
//! * [`wrap_command`] builds the text written to the shell's stdin.
//! * [`OutputBuffer`] keeps the tail of the raw stream and spots the sentinel.
//! * [`finish_output`] decodes, strips ANSI CSI sequences and splits off the exit code.
//! * [`timeout_message`] formats the timeout the way Python's `repr(float)` does.
//!
//! The Python primitives themselves (`repr(float)`, `str.strip()`, `str.splitlines()`'s line
//! boundaries, `int(s)`, pydantic's lax `bool` and `type(x).__name__`) live in
//! [`wasm_sandbox_pycompat`], shared with the file-tools guest and the skills crate.

use serde_json::Value;
use wasm_sandbox_pycompat::pydantic::{lax_bool, python_type_name};
use wasm_sandbox_pycompat::repr::repr_float;
use wasm_sandbox_pycompat::text::{is_line_break, parse_int, strip};

/// `BASH_OUTPUT_LIMIT`: bytes of the raw stream kept (the tail).
pub const BASH_OUTPUT_LIMIT: usize = 100 * 1024;
/// `BASH_DEFAULT_TIMEOUT` in seconds.
pub const BASH_DEFAULT_TIMEOUT_SECS: f64 = 120.0;
/// Size of one read from the shell's stdout (the reference's `receive(4096)`).
pub const READ_CHUNK: usize = 4096;
/// The reference's validation failure, `repr(ValueError(...))`.
pub const INVALID_ARGUMENTS: &str = "ValueError('Invalid arguments for function bash')";
/// `ToolError("bash: command is required")`.
pub const COMMAND_REQUIRED: &str = "bash: command is required";
/// The result of `restart: true`.
pub const RESTARTED: &str = "bash session restarted";
/// `ToolError(f"bash: {RuntimeError('bash session terminated; restart required')}")`.
pub const TERMINATED: &str = "bash: bash session terminated; restart required";
/// Prefix added when the tail cap dropped bytes.
pub const TRUNCATED_PREFIX: &str = "[output truncated]\n";

/// A validated bash call.
#[derive(Clone, Debug, PartialEq)]
pub enum BashRequest {
    /// `restart` was truthy: kill the shell, start a fresh one; `command` is ignored.
    Restart,
    /// Run `command` with a timeout of `timeout_secs` seconds (may be zero or negative:
    /// the call then times out at once, like `anyio.fail_after` with a past deadline).
    Run {
        /// The command text, verbatim.
        command: String,
        /// `timeout_ms / 1000.0`, or 120.0 when `timeout_ms` is 0 or null.
        timeout_secs: f64,
    },
}

/// Why a call is answered without touching the shell (the exact error text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection(pub String);

/// Validates `input` like the reference (pydantic lax mode) and applies the
/// `restart` / `command is required` / timeout rules of `beta_bash_tool`.
pub fn parse_input(input: &Value) -> Result<BashRequest, Rejection> {
    let Value::Object(map) = input else {
        // `BetaAsyncFunctionTool.call` checks `is_dict` before validating.
        return Err(Rejection(format!(
            "TypeError('Input must be a dictionary, got {}')",
            python_type_name(input)
        )));
    };
    let invalid = || Rejection(INVALID_ARGUMENTS.to_owned());
    let mut command: Option<String> = None;
    let mut restart: Option<bool> = None;
    let mut timeout_ms: Option<LaxInt> = None;
    for (key, value) in map {
        match key.as_str() {
            "command" => command = lax_optional_str(value).ok_or_else(invalid)?,
            "restart" => restart = lax_optional_bool(value).ok_or_else(invalid)?,
            "timeout_ms" => timeout_ms = lax_optional_int(value).ok_or_else(invalid)?,
            _ => return Err(invalid()),
        }
    }
    if restart == Some(true) {
        return Ok(BashRequest::Restart);
    }
    let command = match command {
        Some(c) if !c.is_empty() => c,
        _ => return Err(Rejection(COMMAND_REQUIRED.to_owned())),
    };
    let timeout_secs = match timeout_ms {
        None | Some(LaxInt::Zero) => BASH_DEFAULT_TIMEOUT_SECS,
        Some(LaxInt::NonZero(ms)) => {
            if ms.is_infinite() {
                // `int / float` converts the int first; Python raises for huge ints.
                return Err(Rejection(
                    "OverflowError('int too large to convert to float')".to_owned(),
                ));
            }
            ms / 1000.0
        }
    };
    Ok(BashRequest::Run {
        command,
        timeout_secs,
    })
}

/// An int accepted by lax validation, as the float Python would convert it to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum LaxInt {
    Zero,
    /// The value converted to `f64` with correct rounding (infinite when Python would overflow).
    NonZero(f64),
}

/// `Optional[str]` in lax mode: only a string or null (JSON has no bytes).
fn lax_optional_str(v: &Value) -> Option<Option<String>> {
    match v {
        Value::Null => Some(None),
        Value::String(s) => Some(Some(s.clone())),
        _ => None,
    }
}

/// `Optional[bool]` in lax mode: null, or pydantic's lax `bool` (bools, ints 0/1, floats
/// 0.0/1.0 and a fixed set of case-insensitive strings, no trimming).
fn lax_optional_bool(v: &Value) -> Option<Option<bool>> {
    match v {
        Value::Null => Some(None),
        v => lax_bool(v).map(Some),
    }
}

/// `Optional[int]` in lax mode: ints, bools, integral floats with |x| < 2^63, and
/// strings holding a (possibly signed, underscored, `.0…`-suffixed) decimal integer
/// after trimming Unicode whitespace.
fn lax_optional_int(v: &Value) -> Option<Option<LaxInt>> {
    let from_f64 = |f: f64| {
        if f == 0.0 {
            LaxInt::Zero
        } else {
            LaxInt::NonZero(f)
        }
    };
    match v {
        Value::Null => Some(None),
        Value::Bool(b) => Some(Some(if *b {
            LaxInt::NonZero(1.0)
        } else {
            LaxInt::Zero
        })),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                // Rust's int→float `as` rounds to nearest, ties to even, like Python.
                #[allow(
                    clippy::cast_precision_loss,
                    reason = "Python converts the int to float the same way"
                )]
                Some(Some(from_f64(i as f64)))
            } else if let Some(u) = n.as_u64() {
                #[allow(
                    clippy::cast_precision_loss,
                    reason = "Python converts the int to float the same way"
                )]
                Some(Some(from_f64(u as f64)))
            } else {
                let f = n.as_f64()?;
                // pydantic: finite, integral, and inside the i64 range (exclusive of -2^63).
                const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
                if f.is_finite() && f.fract() == 0.0 && f.abs() < LIMIT {
                    Some(Some(from_f64(f)))
                } else {
                    None
                }
            }
        }
        Value::String(s) => parse_lax_int_str(s).map(|f| Some(from_f64(f))),
        _ => None,
    }
}

/// pydantic-core's `str → int`: trim (Unicode White_Space), optional sign, digits with
/// single underscores between them, optionally followed by `.` and one or more zeros.
/// Returns the value as a correctly rounded `f64` (the only use the caller has for it).
fn parse_lax_int_str(s: &str) -> Option<f64> {
    let s = s.trim();
    let s = match s.split_once('.') {
        Some((int_part, frac)) => {
            if frac.is_empty() || !frac.bytes().all(|b| b == b'0') {
                return None;
            }
            int_part
        }
        None => s,
    };
    let (negative, clean) = wasm_sandbox_pycompat::text::int_literal(s)?;
    // Decimal string → f64 is correctly rounded, like Python's int.__float__;
    // it yields +inf exactly where Python raises OverflowError.
    let magnitude: f64 = clean.parse().ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// The reference's timeout message.
pub fn timeout_message(timeout_secs: f64) -> String {
    format!(
        "bash: bash command timed out after {}s",
        repr_float(timeout_secs)
    )
}

/// A fresh per-call sentinel, `__ANT_CMD_<uuid4 hex>_DONE__`.
pub fn new_sentinel() -> String {
    format!("__ANT_CMD_{}_DONE__", uuid::Uuid::new_v4().simple())
}

/// The exact bytes written to the shell for one call:
/// `{ <cmd>\n} </dev/null 2>&1; printf '\n<sentinel split by ''>%d\n' $?\n`.
pub fn wrap_command(command: &str, sentinel: &str) -> String {
    let split = sentinel.len().min(8);
    let (head, tail) = sentinel.split_at(split);
    format!("{{ {command}\n}} </dev/null 2>&1; printf '\\n{head}''{tail}%d\\n' $?\n")
}

/// The raw-stream buffer of one call: keeps the last [`BASH_OUTPUT_LIMIT`] bytes and
/// reports when the sentinel and the end of its exit-code line have arrived.
///
/// One deliberate refinement over the reference: the reference stops reading as soon
/// as the sentinel is in the buffer, so when a 4 KiB read happens to end between the
/// sentinel and the exit code printed right after it (one `write`, split by the
/// read), it reports exit code -1 (an error) for a successful command and leaves the
/// code in the pipe for the next call. This buffer waits for the newline that ends
/// the exit-code line, which is what the reference gets whenever that race does not
/// hit.
#[derive(Debug)]
pub struct OutputBuffer {
    buf: Vec<u8>,
    truncated: bool,
    marker: Vec<u8>,
    /// Bytes dropped from the front so far.
    dropped: usize,
    /// Absolute stream offset just after the first sentinel seen.
    marker_end: Option<usize>,
}

impl OutputBuffer {
    /// A buffer looking for `sentinel`.
    pub fn new(sentinel: &str) -> Self {
        Self {
            buf: Vec::with_capacity(READ_CHUNK),
            truncated: false,
            marker: sentinel.as_bytes().to_vec(),
            dropped: 0,
            marker_end: None,
        }
    }

    /// Appends one chunk; returns true once the sentinel and a newline after it are
    /// in the stream.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        let before = self.buf.len();
        self.buf.extend_from_slice(chunk);
        let mut search_from = before.saturating_sub(self.marker.len());
        if self.buf.len() > BASH_OUTPUT_LIMIT {
            let drop = self.buf.len() - BASH_OUTPUT_LIMIT;
            self.buf.drain(..drop);
            self.dropped += drop;
            self.truncated = true;
            search_from = search_from.saturating_sub(drop);
        }
        if self.marker_end.is_none() {
            let found = self.buf[search_from..]
                .windows(self.marker.len())
                .position(|w| w == self.marker.as_slice());
            if let Some(i) = found {
                self.marker_end = Some(self.dropped + search_from + i + self.marker.len());
            }
        }
        match self.marker_end {
            Some(end) => {
                let start = end.saturating_sub(self.dropped).min(self.buf.len());
                self.buf[start..].contains(&b'\n')
            }
            None => false,
        }
    }

    /// Whether bytes were dropped from the front.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The kept bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Output text and exit code of one call (`BashResult`); `-1` when no sentinel came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecResult {
    /// Combined stdout+stderr after decoding, ANSI stripping and trimming.
    pub output: String,
    /// The exit status after the sentinel, or -1.
    pub exit_code: i64,
}

/// Turns the raw buffer into the reference's `BashResult`.
pub fn finish_output(buffer: &OutputBuffer, sentinel: &str) -> ExecResult {
    let text = strip_ansi(&String::from_utf8_lossy(buffer.bytes()));
    let Some(idx) = text.rfind(sentinel) else {
        return ExecResult {
            output: strip(&text).to_owned(),
            exit_code: -1,
        };
    };
    let out = text[..idx].trim_end_matches('\n');
    let tail = strip(&text[idx + sentinel.len()..]);
    let exit_code = if tail.is_empty() {
        -1
    } else {
        let first_line = tail.split(is_line_break).next().unwrap_or("");
        parse_int(first_line).unwrap_or(-1)
    };
    let output = if buffer.truncated() {
        format!("{TRUNCATED_PREFIX}{out}")
    } else {
        out.to_owned()
    };
    ExecResult { output, exit_code }
}

/// `re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", text)`. The three classes are disjoint,
/// so a greedy scan without backtracking matches exactly what the regex matches.
pub fn strip_ansi(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'[') {
            let mut j = i + 2;
            while j < bytes.len()
                && (bytes[j].is_ascii_digit() || bytes[j] == b';' || bytes[j] == b'?')
            {
                j += 1;
            }
            while j < bytes.len() && (0x20..=0x2f).contains(&bytes[j]) {
                j += 1;
            }
            if j < bytes.len() && (0x40..=0x7e).contains(&bytes[j]) {
                out.push_str(&text[copied..i]);
                i = j + 1;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(command: &str, timeout_secs: f64) -> Result<BashRequest, Rejection> {
        Ok(BashRequest::Run {
            command: command.to_owned(),
            timeout_secs,
        })
    }

    fn invalid() -> Result<BashRequest, Rejection> {
        Err(Rejection(INVALID_ARGUMENTS.to_owned()))
    }

    #[test]
    fn input_validation_matches_pydantic_lax() {
        assert_eq!(parse_input(&json!({"command": "ls"})), run("ls", 120.0));
        assert_eq!(
            parse_input(&json!({"restart": true})),
            Ok(BashRequest::Restart)
        );
        assert_eq!(
            parse_input(&json!({"restart": "YES", "command": "ls"})),
            Ok(BashRequest::Restart)
        );
        assert_eq!(
            parse_input(&json!({"restart": 1.0})),
            Ok(BashRequest::Restart)
        );
        assert_eq!(
            parse_input(&json!({"restart": "off", "command": "ls"})),
            run("ls", 120.0)
        );
        for bad in [
            json!(2),
            json!(1.5),
            json!(" true"),
            json!(""),
            json!([]),
            json!("1.0"),
        ] {
            assert_eq!(
                parse_input(&json!({"restart": bad, "command": "x"})),
                invalid()
            );
        }
        assert_eq!(
            parse_input(&json!({"command": "ls", "timeout_ms": "2500"})),
            run("ls", 2.5)
        );
        assert_eq!(
            parse_input(&json!({"command": "ls", "timeout_ms": " +7.00 "})),
            run("ls", 0.007)
        );
        assert_eq!(
            parse_input(&json!({"command": "ls", "timeout_ms": "2_500"})),
            run("ls", 2.5)
        );
        assert_eq!(
            parse_input(&json!({"command": "ls", "timeout_ms": true})),
            run("ls", 0.001)
        );
        assert_eq!(
            parse_input(&json!({"command": "ls", "timeout_ms": 0})),
            run("ls", 120.0)
        );
        assert_eq!(
            parse_input(&json!({"command": "ls", "timeout_ms": "-0.0"})),
            run("ls", 120.0)
        );
        assert_eq!(
            parse_input(&json!({"command": "ls", "timeout_ms": -1})),
            run("ls", -0.001)
        );
        assert_eq!(
            parse_input(&json!({"command": "ls", "timeout_ms": 9.2e18})),
            run("ls", 9.2e15)
        );
        for bad in [
            json!(1.5),
            json!(9.3e18),
            json!("1e3"),
            json!("1."),
            json!(".0"),
            json!("_1"),
            json!("1__0"),
            json!("0x10"),
            json!(""),
            json!(" "),
            json!("1.0_0"),
            json!([1]),
            json!({}),
        ] {
            assert_eq!(
                parse_input(&json!({"command": "ls", "timeout_ms": bad})),
                invalid(),
                "{bad}"
            );
        }
        assert_eq!(
            parse_input(&json!({"command": "ls", "timeout_ms": "9".repeat(400)})),
            Err(Rejection(
                "OverflowError('int too large to convert to float')".to_owned()
            ))
        );
        for bad in [json!(1), json!(true), json!(["ls"]), json!({})] {
            assert_eq!(parse_input(&json!({"command": bad})), invalid());
        }
        assert_eq!(
            parse_input(&json!({"command": "ls", "extra": 1})),
            invalid()
        );
        let required = Err(Rejection(COMMAND_REQUIRED.to_owned()));
        assert_eq!(parse_input(&json!({})), required);
        assert_eq!(parse_input(&json!({"command": ""})), required);
        assert_eq!(parse_input(&json!({"command": null})), required);
        assert_eq!(parse_input(&json!({"restart": false})), required);
        assert_eq!(parse_input(&json!({"command": " "})), run(" ", 120.0));
        assert_eq!(
            parse_input(&json!(["ls"])),
            Err(Rejection(
                "TypeError('Input must be a dictionary, got list')".to_owned()
            ))
        );
    }

    #[test]
    fn wrapper_is_byte_exact() {
        let s = "__ANT_CMD_0123456789abcdef0123456789abcdef_DONE__";
        assert_eq!(
            wrap_command("echo hi", s),
            "{ echo hi\n} </dev/null 2>&1; printf '\\n__ANT_CM''D_0123456789abcdef0123456789abcdef_DONE__%d\\n' $?\n"
        );
        let fresh = new_sentinel();
        assert_eq!(fresh.len(), s.len());
        assert!(!wrap_command("x", &fresh).contains(&fresh));
    }

    #[test]
    fn ansi_strip_matches_regex() {
        assert_eq!(strip_ansi("\x1b[31mred\x1b[0m"), "red");
        assert_eq!(strip_ansi("a\x1b[?25lb"), "ab");
        assert_eq!(strip_ansi("a\x1b[1;2 qb"), "ab");
        assert_eq!(strip_ansi("a\x1b[1:2mb"), "a\x1b[1:2mb");
        assert_eq!(strip_ansi("a\x1b]0;t\x07b"), "a\x1b]0;t\x07b");
        assert_eq!(strip_ansi("a\x1b[é"), "a\x1b[é");
        assert_eq!(strip_ansi("\x1b[\x1b[0m"), "\x1b[");
        assert_eq!(strip_ansi("x\x1b["), "x\x1b[");
    }

    fn finish(raw: &[u8], sentinel: &str) -> ExecResult {
        let mut b = OutputBuffer::new(sentinel);
        for c in raw.chunks(READ_CHUNK) {
            if b.push(c) {
                break;
            }
        }
        finish_output(&b, sentinel)
    }

    #[test]
    fn waits_for_the_exit_code_line_after_the_sentinel() {
        let s = "__ANT_CMD_x_DONE__";
        let mut b = OutputBuffer::new(s);
        assert!(!b.push(b"out\n__ANT_CMD_x_DO"));
        assert!(!b.push(b"NE__0"));
        assert!(b.push(b"\nlater"));
        assert_eq!(finish_output(&b, s).exit_code, 0);
    }

    #[test]
    fn output_processing() {
        let s = "__ANT_CMD_x_DONE__";
        assert_eq!(
            finish(b"  hi\n\n\n__ANT_CMD_x_DONE__0\n", s),
            ExecResult {
                output: "  hi".into(),
                exit_code: 0
            }
        );
        assert_eq!(finish(b"\n__ANT_CMD_x_DONE__3\nlate", s).exit_code, 3);
        assert_eq!(
            finish(b"\n bye \n", s),
            ExecResult {
                output: "bye".into(),
                exit_code: -1
            }
        );
        assert_eq!(finish(b"\xff\n__ANT_CMD_x_DONE__0\n", s).output, "\u{fffd}");
        let mut big = vec![b'a'; BASH_OUTPUT_LIMIT + 10];
        big.extend_from_slice(b"\n__ANT_CMD_x_DONE__1\n");
        let r = finish(&big, s);
        assert_eq!(r.exit_code, 1);
        assert!(r.output.starts_with(TRUNCATED_PREFIX));
        let kept = BASH_OUTPUT_LIMIT - "\n__ANT_CMD_x_DONE__1\n".len();
        assert_eq!(r.output.len(), TRUNCATED_PREFIX.len() + kept);
    }
}
