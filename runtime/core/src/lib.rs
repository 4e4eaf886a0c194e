//! # wasm-sandbox-runtime
//!
//! The embedding crate of wasm-sandbox: sandboxed sessions that run the
//! Claude Managed Agents sandbox tools (`bash read write edit glob grep`)
//! with results identical to the reference worker (the `anthropic` Python
//! SDK 2.10.0).
//!
//! * The five file tools run as one WASI component (built from
//!   `guests/file-tools` for `wasm32-wasip2`) under wasmtime, with only the
//!   session's preopens: `/workspace`, `/mnt/session/outputs` and
//!   `/mnt/memory/<store>`. The component is compiled once per process and
//!   instantiated per session from an `InstancePre`.
//! * bash runs natively in a Linux sandbox (crate `wasm-sandbox-native`).
//!
//! ## Components from bash
//!
//! Inside the bash sandbox, `wasm-run COMPONENT.wasm ARGS…` runs a
//! `wasi:cli/command` component (e.g. one a skill ships) under this runtime's
//! engine with the session's preopens, no sockets and the wasi-nn binding; the
//! shim relays stdio over a per-session unix socket. Components are compiled
//! once per content hash ([`Runtime::command_by_content`]). Configured by
//! [`WasmRunConfig`]; on by default whenever bash has its sandbox.
//!
//! ## Recipe
//!
//! 1. Build a [`RuntimeConfig`] (defaults are fine).
//! 2. [`Runtime::new`] — compiles the component once.
//! 3. [`Runtime::session`] with a [`SessionSpec`] — a fresh sandbox.
//! 4. [`Session::call_tool`] for each tool call; `None` means "not ours,
//!    post nothing".
//! 5. [`Session::close`], then remove the session's directories.
//!
//! ```no_run
//! use wasm_sandbox_runtime::{Runtime, RuntimeConfig, SessionSpec, ToolCall};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let session = runtime.session(SessionSpec::new("sesn_1", "/var/lib/wasm-sandbox/sesn_1"))?;
//! let call = ToolCall::new("toolu_1", "write", serde_json::json!({"file_path": "hi.txt", "content": "hi\n"}));
//! let result = session.call_tool(&call).await.expect("a sandbox tool");
//! assert_eq!(result.text_content(), "wrote 3 bytes to hi.txt");
//! session.close().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod cache;
mod compile;
mod config;
mod egress;
mod file_tools;
mod runtime;
mod session;
mod tool;
pub mod usage;
mod wasm_run;

pub use compile::{COMPILER_NAME, compiler_main, run_as_compiler_if_invoked};
pub use config::{
    CacheDir, Cap, EngineConfig, LimitsConfig, PoolConfig, RuntimeConfig, WasmRunConfig,
    default_cache_dir,
};
pub use egress::check_networking;
pub use file_tools::{CommandOutput, SessionState};
pub use runtime::{CommandComponent, FILE_TOOLS_COMPONENT, Runtime};
pub use session::{
    MEMORY_GUEST_PARENT, MemoryMount, OUTPUTS_GUEST, Session, SessionSpec, WORKSPACE_GUEST,
};
pub use tool::{FILE_TOOLS, SANDBOX_TOOLS, ToolCall, ToolResult};
pub use {wasmtime, wasmtime_wasi};

/// Errors an embedder may want to branch on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The component failed to compile, link or instantiate.
    #[error("invalid component: {0}")]
    InvalidComponent(wasmtime::Error),
    /// The sandbox could not be set up (fail closed).
    #[error("sandbox setup failed: {0}")]
    Sandbox(String),
    /// Compiling a component hit one of its limits (memory, CPU time): the same bytes would
    /// hit it again, so the refusal is remembered. Displayed like [`Error::Sandbox`].
    #[error("sandbox setup failed: {0}")]
    CompileLimit(String),
    /// A host I/O error (creating session directories, the compile cache).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Any other wasmtime error.
    #[error(transparent)]
    Other(wasmtime::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
