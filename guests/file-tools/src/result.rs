//! Tool outcomes and their outcome-tagged form (the WIT `tool-result`).
//!
//! The guest reports what the tool did and how it ended; the host words the
//! result (`(no output)` for an empty one, the cut of an exception's text),
//! in one place (`wasm_sandbox_runtime::tool`).

use serde_json::Value;

/// Why a tool call failed, mirroring the reference's exception kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolFail {
    /// A `ToolError(text)`: the text is the whole result, not truncated.
    Tool(String),
    /// Any other exception: the text is Python's `repr(exc)`, which the
    /// runner (the host) cuts to 4096 characters.
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

/// How a call ended (the WIT `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The tool returned.
    Ok,
    /// `ToolError`.
    ToolError,
    /// Any other exception.
    Exception,
}

/// One block of a result (the WIT `block`).
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A text block's text (possibly empty).
    Text(String),
    /// Any other block in wire shape.
    Json(Value),
}

/// The outcome-tagged result of one call (the WIT `tool-result`).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// How the call ended.
    pub outcome: Outcome,
    /// The blocks (empty for an empty result).
    pub content: Vec<Block>,
}

impl ToolOutput {
    /// A `ToolError` with the given text.
    pub fn tool_error(text: impl Into<String>) -> Self {
        ToolOutput {
            outcome: Outcome::ToolError,
            content: vec![Block::Text(text.into())],
        }
    }

    /// Tags a tool's outcome like the reference session runner's `_call_tool`
    /// (the host then bridges it like `_to_session_content`).
    pub fn from_result(r: Result<ToolValue, ToolFail>) -> Self {
        match r {
            Ok(ToolValue::Text(s)) => ToolOutput {
                outcome: Outcome::Ok,
                content: vec![Block::Text(s)],
            },
            Ok(ToolValue::Blocks(blocks)) => ToolOutput {
                outcome: Outcome::Ok,
                content: blocks.into_iter().map(Block::Json).collect(),
            },
            Err(ToolFail::Tool(s)) => Self::tool_error(s),
            Err(ToolFail::Exception(s)) => ToolOutput {
                outcome: Outcome::Exception,
                content: vec![Block::Text(s)],
            },
        }
    }

    /// The concatenated text of the text blocks (for tests).
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|b| match b {
                Block::Text(t) => Some(t.as_str()),
                Block::Json(_) => None,
            })
            .collect()
    }
}
