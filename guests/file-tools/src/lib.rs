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
//! Entry point: [`call`] takes the JSON request of the `file-tools` WIT
//! interface and returns the JSON result.

pub mod config;
pub mod edit;
pub mod glob;
pub mod grep;
pub mod paths;
pub mod pyre;
pub mod pyrepr;
pub mod read;
pub mod result;
pub mod validate;
pub mod write;

use config::Request;
use result::ToolOutput;

/// Runs one tool call from its JSON request and returns the JSON result.
///
/// Request: `{"name": "...", "input": {...}, "config": {...}}` (see
/// [`config::ToolConfig`]). Result: `{"content": [...], "is_error": bool}`,
/// already bridged the way the reference session runner bridges it (an empty
/// result reads `(no output)`).
pub fn call(request: &str) -> String {
    let out = match serde_json::from_str::<Request>(request) {
        Ok(req) => dispatch(&req),
        Err(e) => ToolOutput::error_text(format!("invalid request: {e}")),
    };
    out.to_json()
}

/// Dispatches a parsed request to its tool.
pub fn dispatch(req: &Request) -> ToolOutput {
    let r = match req.name.as_str() {
        "read" => read::run(&req.input, &req.config),
        "write" => write::run(&req.input, &req.config),
        "edit" => edit::run(&req.input, &req.config),
        "glob" => glob::run(&req.input, &req.config),
        "grep" => grep::run(&req.input, &req.config),
        other => Err(result::ToolFail::Tool(format!("unknown tool {other}"))),
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

    struct Component;

    impl exports::wasm_sandbox::tools::file_tools::Guest for Component {
        fn call(request: String) -> String {
            super::call(&request)
        }
    }

    export!(Component);
}
