//! Tool calls and results in their wire shape.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The six sandbox tools a self-hosted worker executes, in the reference
/// toolset's order. Any other tool name (`web_fetch`, `web_search`, custom
/// tools) belongs to someone else: the worker posts nothing for it.
pub const SANDBOX_TOOLS: [&str; 6] = ["bash", "read", "write", "edit", "glob", "grep"];

/// The file tools, served by the WASI component.
pub const FILE_TOOLS: [&str; 5] = ["read", "write", "edit", "glob", "grep"];

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

    /// Whether this call is one of [`SANDBOX_TOOLS`].
    pub fn is_sandbox_tool(&self) -> bool {
        SANDBOX_TOOLS.contains(&self.name.as_str())
    }
}

/// The exact `content` and `is_error` posted as a `user.tool_result`.
///
/// `content` is a list of content blocks in wire shape (`text`, `image`,
/// `document`); it is never empty (an empty result reads `(no output)`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// Content blocks.
    pub content: Vec<Value>,
    /// Whether the call failed.
    pub is_error: bool,
}

impl ToolResult {
    /// A single text block (`(no output)` when `text` is empty, as the
    /// reference session runner does).
    pub fn text(text: impl Into<String>, is_error: bool) -> Self {
        let text = text.into();
        let text = if text.is_empty() {
            "(no output)".to_string()
        } else {
            text
        };
        ToolResult {
            content: vec![json!({"type": "text", "text": text})],
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
