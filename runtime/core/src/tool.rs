//! Tool calls and results in their wire shape, and the one place their wording lives.
//!
//! * [`Tool`] is the sandbox's toolset; [`Tool::from_name`] is the only parser of a tool
//!   name, used by the worker's ownership gate, so an unknown name never reaches a session.
//! * A session answers every call with a [`ToolAnswer`]: the result to post, tagged with how
//!   the call ended ([`CallOutcome`]).
//! * The texts a session writes itself live here: [`NO_OUTPUT`] for an empty result, the
//!   `tool '<name>' timed out` and `tool '<name>' failed: …` errors, and the cut of an
//!   exception's text ([`ERROR_TEXT_CAP`]). The file-tools component reports its outcome and
//!   raw blocks; [`bridge`] words them the way the reference session runner does
//!   (`_call_tool` + `_to_session_content`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The text of an empty result (the reference session runner's wording).
pub const NO_OUTPUT: &str = "(no output)";

/// How many characters of an exception's text an error result keeps (the reference runner
/// cuts `repr(exc)` to 4096 characters; a `ToolError`'s text is kept whole).
pub const ERROR_TEXT_CAP: usize = 4096;

/// One of the six sandbox tools a self-hosted worker executes ([`Tool::ALL`], in the
/// reference toolset's order). Any other tool name (`web_fetch`, `web_search`, custom
/// tools) belongs to someone else: the worker posts nothing for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tool {
    /// `bash`, run in the native sandbox.
    Bash,
    /// `read` (file-tools component).
    Read,
    /// `write` (file-tools component).
    Write,
    /// `edit` (file-tools component).
    Edit,
    /// `glob` (file-tools component).
    Glob,
    /// `grep` (file-tools component).
    Grep,
}

impl Tool {
    /// Every tool, in the reference toolset's order.
    pub const ALL: [Tool; 6] = [
        Tool::Bash,
        Tool::Read,
        Tool::Write,
        Tool::Edit,
        Tool::Glob,
        Tool::Grep,
    ];

    /// The tool of this (case-sensitive) name; `None` for any tool that is not the
    /// sandbox's (custom tools, server tools, unknown names).
    pub fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The tool's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Bash => "bash",
            Tool::Read => "read",
            Tool::Write => "write",
            Tool::Edit => "edit",
            Tool::Glob => "glob",
            Tool::Grep => "grep",
        }
    }

    /// Whether the file-tools component serves it (all but `bash`).
    pub fn is_file_tool(self) -> bool {
        self != Tool::Bash
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tool call, as carried by an `agent.tool_use` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The `tool_use` event id (echoed as `tool_use_id` in the result).
    pub id: String,
    /// The tool name (case-sensitive).
    pub name: String,
    /// The model's input object, unvalidated.
    #[serde(default)]
    pub input: Value,
}

impl ToolCall {
    /// Builds a call.
    pub fn new(id: impl Into<String>, name: impl Into<String>, input: Value) -> Self {
        ToolCall {
            id: id.into(),
            name: name.into(),
            input,
        }
    }

    /// The sandbox tool this call names, if any ([`Tool::from_name`]).
    pub fn tool(&self) -> Option<Tool> {
        Tool::from_name(&self.name)
    }
}

/// The exact `content` and `is_error` posted as a `user.tool_result`.
///
/// `content` is a list of content blocks in wire shape (`text`, `image`,
/// `document`); it is never empty (an empty result reads [`NO_OUTPUT`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// Content blocks.
    pub content: Vec<Value>,
    /// Whether the call failed.
    pub is_error: bool,
}

impl ToolResult {
    /// A single text block ([`NO_OUTPUT`] when `text` is empty, as the
    /// reference session runner does).
    pub fn text(text: impl Into<String>, is_error: bool) -> Self {
        ToolResult {
            content: vec![text_block(text.into())],
            is_error,
        }
    }

    /// An error result with one text block.
    pub fn error(text: impl Into<String>) -> Self {
        Self::text(text, true)
    }

    /// The concatenated text of the text blocks (handy in tests and logs).
    pub fn text_content(&self) -> String {
        self.content
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")
    }
}

/// A text block in wire shape; an empty text reads [`NO_OUTPUT`]. The one place that rule
/// is applied: results the session words ([`ToolResult::text`], the file tools' bridge) and the worker's
/// shaping of any result for the API both build their text blocks here.
pub fn text_block(text: impl Into<String>) -> Value {
    let text = text.into();
    let text = if text.is_empty() {
        NO_OUTPUT.to_string()
    } else {
        text
    };
    json!({"type": "text", "text": text})
}

/// How a tool call ended, as the session saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// The tool ran and returned a result that is not an error.
    Ok,
    /// The tool ran and failed, or the session could not run it (an error result).
    Error,
    /// The call passed its deadline (`[runtime.limits] tool_timeout`); the result is the
    /// `tool '<name>' timed out` error.
    TimedOut,
}

/// A session's answer to one call: the result to post and how the call ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolAnswer {
    /// How the call ended.
    pub outcome: CallOutcome,
    /// The result to post.
    pub result: ToolResult,
}

impl ToolAnswer {
    /// A result the tool produced: [`CallOutcome::Error`] when it is an error result.
    pub fn ran(result: ToolResult) -> Self {
        let outcome = if result.is_error {
            CallOutcome::Error
        } else {
            CallOutcome::Ok
        };
        ToolAnswer { outcome, result }
    }

    /// The call passed its deadline: `tool '<name>' timed out`.
    pub fn timed_out(tool: &str) -> Self {
        ToolAnswer {
            outcome: CallOutcome::TimedOut,
            result: ToolResult::error(format!("tool '{tool}' timed out")),
        }
    }

    /// The session could not run the call: `tool '<name>' failed: <why>`.
    pub fn failed(tool: &str, why: impl std::fmt::Display) -> Self {
        ToolAnswer {
            outcome: CallOutcome::Error,
            result: ToolResult::error(format!("tool '{tool}' failed: {why}")),
        }
    }
}

/// How a file-tools call ended, as the component reports it (the WIT `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GuestOutcome {
    /// The tool returned.
    Ok,
    /// `ToolError(text)`: the text is the whole result.
    ToolError,
    /// Any other exception: `repr(exc)`, cut here to [`ERROR_TEXT_CAP`] characters.
    Exception,
}

/// One block of a file-tools result (the WIT `block`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum GuestBlock {
    /// A text block's text (possibly empty).
    Text(String),
    /// Any other block in wire shape, as JSON text (passed through).
    Json(String),
}

/// Words a file-tools result like the reference session runner: an empty result (no
/// blocks, or an empty text) reads [`NO_OUTPUT`], an exception's text is cut to
/// [`ERROR_TEXT_CAP`] characters, other blocks pass through. A block that is not JSON
/// is the component's bug: `tool '<name>' failed: malformed result: …`.
pub(crate) fn bridge(tool: Tool, outcome: GuestOutcome, blocks: Vec<GuestBlock>) -> ToolAnswer {
    let is_error = outcome != GuestOutcome::Ok;
    let mut content = Vec::with_capacity(blocks.len().max(1));
    for block in blocks {
        match block {
            GuestBlock::Text(text) if outcome == GuestOutcome::Exception => {
                content.push(text_block(
                    text.chars().take(ERROR_TEXT_CAP).collect::<String>(),
                ));
            }
            GuestBlock::Text(text) => content.push(text_block(text)),
            GuestBlock::Json(json) => match serde_json::from_str::<Value>(&json) {
                Ok(v) => content.push(v),
                Err(e) => {
                    return ToolAnswer::failed(tool.name(), format!("malformed result: {e}"));
                }
            },
        }
    }
    if content.is_empty() {
        content.push(text_block(""));
    }
    ToolAnswer::ran(ToolResult { content, is_error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(
            Tool::ALL.map(Tool::name),
            ["bash", "read", "write", "edit", "glob", "grep"]
        );
        let files: Vec<&str> = Tool::ALL
            .into_iter()
            .filter(|t| t.is_file_tool())
            .map(Tool::name)
            .collect();
        assert_eq!(files, ["read", "write", "edit", "glob", "grep"]);
        assert!(
            Tool::ALL
                .into_iter()
                .all(|t| Tool::from_name(t.name()) == Some(t))
        );
        assert_eq!(Tool::from_name("grep"), Some(Tool::Grep));
        assert_eq!(Tool::from_name("Bash"), None);
        assert_eq!(Tool::from_name("web_search"), None);
    }

    #[test]
    fn bridging() {
        let t = |s: &str| GuestBlock::Text(s.into());
        let text = |s: &str| json!({"type": "text", "text": s});
        let a = bridge(Tool::Read, GuestOutcome::Ok, vec![t("")]);
        assert_eq!(a.result, ToolResult::text(NO_OUTPUT, false));
        assert_eq!(a.outcome, CallOutcome::Ok);
        let a = bridge(Tool::Read, GuestOutcome::Ok, vec![]);
        assert_eq!(a.result.content, [text(NO_OUTPUT)]);
        let a = bridge(Tool::Read, GuestOutcome::ToolError, vec![t("")]);
        assert_eq!((a.result.is_error, a.outcome), (true, CallOutcome::Error));
        assert_eq!(a.result.content, [text(NO_OUTPUT)]);
        // A ToolError's text is whole; an exception's is cut.
        let long = "x".repeat(ERROR_TEXT_CAP + 10);
        let a = bridge(Tool::Edit, GuestOutcome::ToolError, vec![t(&long)]);
        assert_eq!(a.result.text_content().len(), ERROR_TEXT_CAP + 10);
        let a = bridge(Tool::Edit, GuestOutcome::Exception, vec![t(&long)]);
        assert_eq!(a.result.text_content().len(), ERROR_TEXT_CAP);
        let img = json!({"type": "image", "source": {"type": "base64", "data": "AA=="}});
        let a = bridge(
            Tool::Read,
            GuestOutcome::Ok,
            vec![GuestBlock::Json(img.to_string())],
        );
        assert_eq!(a.result.content, [img]);
        let a = bridge(
            Tool::Read,
            GuestOutcome::Ok,
            vec![GuestBlock::Json("{".into())],
        );
        assert!(
            a.result
                .text_content()
                .starts_with("tool 'read' failed: malformed result: ")
        );
    }

    #[test]
    fn wording() {
        let a = ToolAnswer::timed_out("bash");
        assert_eq!(a.outcome, CallOutcome::TimedOut);
        assert_eq!(a.result, ToolResult::error("tool 'bash' timed out"));
        let a = ToolAnswer::failed("grep", "a previous call is still running");
        assert_eq!(
            a.result.text_content(),
            "tool 'grep' failed: a previous call is still running"
        );
    }
}
