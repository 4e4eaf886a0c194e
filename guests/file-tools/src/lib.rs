//! # wasm-sandbox file tools
//!
//! The `read`, `write`, `edit`, `glob` and `grep` tools of the Claude Managed
//! Agents toolset (`agent_toolset_20260401`), written to match the reference
//! implementation (the `anthropic` Python SDK 2.10.0) byte for byte, and
//! compiled to a `wasm32-wasip2` component that runs under wasmtime with only
//! the session's preopens.
//!
//! The same code also builds natively so its unit tests run on the host; in
//! that build the preopen confinement is not there, which is why the host
//! always runs the component and never this crate natively.
//!
//! Entry point: [`call`] takes one call of the `file-tools` WIT interface (the
//! tool, the model's input as JSON text, the session's [`config::ToolConfig`])
//! and returns its outcome-tagged [`result::ToolOutput`]; the host words it.

pub mod config;
pub mod edit;
pub mod glob;
pub mod grep;
pub mod paths;
pub mod read;
pub mod result;
pub mod validate;
pub mod write;

use config::ToolConfig;
use result::ToolOutput;
use serde_json::Value;

/// A file tool (the WIT `tool` enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `edit`.
    Edit,
    /// `glob`.
    Glob,
    /// `grep`.
    Grep,
}

/// Runs one tool call: `input` is the model's input object as JSON text.
///
/// Input that is not JSON (the host never sends such) is a `ToolError`
/// `invalid request: …`.
pub fn call(tool: Tool, input: &str, config: &ToolConfig) -> ToolOutput {
    match serde_json::from_str::<Value>(input) {
        Ok(input) => dispatch(tool, &input, config),
        Err(e) => ToolOutput::tool_error(format!("invalid request: {e}")),
    }
}

/// Runs a parsed call on its tool.
pub fn dispatch(tool: Tool, input: &Value, config: &ToolConfig) -> ToolOutput {
    let r = match tool {
        Tool::Read => read::run(input, config),
        Tool::Write => write::run(input, config),
        Tool::Edit => edit::run(input, config),
        Tool::Glob => glob::run(input, config),
        Tool::Grep => grep::run(input, config),
    };
    ToolOutput::from_result(r)
}

/// The host interface (`wasm-sandbox:tools/host`), only in the component.
#[cfg(target_arch = "wasm32")]
pub(crate) use component::wasm_sandbox::tools::host;

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "../../hostcalls/wit",
        world: "tools",
    });

    use crate::config::{Cap, ConfigInput};
    use crate::result::{Block, Outcome};
    use exports::wasm_sandbox::tools::file_tools as wit;

    struct Component;

    fn cap(c: wit::Cap) -> Cap {
        match c {
            wit::Cap::Default => Cap::Default,
            wit::Cap::Unlimited => Cap::Unlimited,
            wit::Cap::Bytes(n) => Cap::Bytes(n),
        }
    }

    impl wit::Guest for Component {
        fn call(tool: wit::Tool, input: String, config: wit::ToolConfig) -> wit::ToolResult {
            let tool = match tool {
                wit::Tool::Read => super::Tool::Read,
                wit::Tool::Write => super::Tool::Write,
                wit::Tool::Edit => super::Tool::Edit,
                wit::Tool::Glob => super::Tool::Glob,
                wit::Tool::Grep => super::Tool::Grep,
            };
            let config = ConfigInput {
                workdir: config.workdir,
                allowed_roots: config.allowed_roots,
                read_only_roots: config.read_only_roots,
                max_file_bytes: cap(config.max_file_bytes),
                max_image_base64_bytes: cap(config.max_image_base64_bytes),
                max_pdf_bytes: cap(config.max_pdf_bytes),
            }
            .into();
            let out = super::call(tool, &input, &config);
            wit::ToolResult {
                outcome: match out.outcome {
                    Outcome::Ok => wit::Outcome::Ok,
                    Outcome::ToolError => wit::Outcome::ToolError,
                    Outcome::Exception => wit::Outcome::Exception,
                },
                content: out
                    .content
                    .into_iter()
                    .map(|b| match b {
                        Block::Text(t) => wit::Block::Text(t),
                        Block::Json(v) => wit::Block::Json(v.to_string()),
                    })
                    .collect(),
            }
        }
    }

    export!(Component);
}
