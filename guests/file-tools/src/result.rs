//! Tool outcomes and how they become `user.tool_result` content.

use serde_json::{Value, json};

/// Why a tool call failed, mirroring the reference's exception kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolFail {
    /// A `ToolError(text)`: the text is the whole result, not truncated.
    Tool(String),
    /// Any other exception: the text is Python's `repr(exc)`, which the
    /// runner cuts to 4096 characters.
    Exception(String),
}

/// A tool's successful return value.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolValue {
    /// A string result (one text block).
    Text(String),
    /// Content blocks (image/document) passed through.
    Blocks(Vec<Value>),
}

/// The bridged result: the exact `content` and `is_error` of a tool result.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// Content blocks in wire shape.
    pub content: Vec<Value>,
    /// Whether the call failed.
    pub is_error: bool,
}

const NO_OUTPUT: &str = "(no output)";
const ERROR_TEXT_CAP: usize = 4096;

impl ToolOutput {
    /// An error result with the given text (empty text reads `(no output)`).
    pub fn error_text(text: impl Into<String>) -> Self {
        Self::text(text.into(), true)
    }

    fn text(text: String, is_error: bool) -> Self {
        let text = if text.is_empty() {
            NO_OUTPUT.to_string()
        } else {
            text
        };
        ToolOutput {
            content: vec![json!({"type": "text", "text": text})],
            is_error,
        }
    }

    /// Bridges a tool's outcome like the reference session runner
    /// (`_call_tool` + `_to_session_content`).
    pub fn from_result(r: Result<ToolValue, ToolFail>) -> Self {
        match r {
            Ok(ToolValue::Text(s)) => Self::text(s, false),
            Ok(ToolValue::Blocks(blocks)) if blocks.is_empty() => Self::text(String::new(), false),
            Ok(ToolValue::Blocks(blocks)) => ToolOutput {
                content: blocks,
                is_error: false,
            },
            Err(ToolFail::Tool(s)) => Self::text(s, true),
            Err(ToolFail::Exception(s)) => {
                let cut: String = s.chars().take(ERROR_TEXT_CAP).collect();
                Self::text(cut, true)
            }
        }
    }

    /// Serialises to the JSON the WIT `call` returns.
    pub fn to_json(&self) -> String {
        json!({"content": self.content, "is_error": self.is_error}).to_string()
    }
}
