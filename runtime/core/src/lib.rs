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
//!
//! ## Rooms
//!
//! The crate is split by capability. Each room imports only rooms listed before it in
//! this table (no room imports `session`, and only `session` imports `runtime`), and
//! [`Runtime`] keeps its state private, offering methods:
//!
//! | room | holds |
//! |---|---|
//! | `config`, `tool`, `usage` | configuration; tool calls and results; usage counters |
//! | `engine` (+ `cache`, `compile`) | the wasmtime engine, its epoch ticker and deadlines; the on-disk compile cache; the bounded compiler helper |
//! | `store` | a guest's `Store` and WASI context, built from the session's [`MountSet`] |
//! | `file_tools` | the file-tools component: host interface, `InstancePre`, one instance per session |
//! | `commands` | `wasi:cli/command` components: compile once per content, cache, run |
//! | `bash` | what the bash sandboxes share: the probed sandbox, the socket directory, the egress policy |
//! | `wasm_run`, `egress` | per sandbox: the `wasm-run` bridge; the egress directory and proxy |
//! | `sandbox` | one bash sandbox with its bridge and egress directory; the one `BashSessionSpec` builder |
//! | `pool` | sandboxes started ahead of demand |
//! | `disk` | a session's capped filesystem |
//! | `runtime` | the [`Runtime`] handle: builds the rooms before it once, keeps them private |
//! | `session` | one [`Session`] (and [`Runtime::session`]): `Session::new` calls the rooms; tool calls |
#![deny(missing_docs)]

mod bash;
mod cache;
mod commands;
mod compile;
mod config;
mod disk;
mod egress;
mod engine;
mod file_tools;
mod pool;
mod runtime;
mod sandbox;
mod session;
mod store;
mod tool;
pub mod usage;
mod wasm_run;

pub use commands::{CommandComponent, CommandOutput};
pub use compile::{COMPILER_NAME, compiler_main, run_as_compiler_if_invoked};
pub use config::{
    CacheDir, Cap, EngineConfig, LimitsConfig, PoolConfig, RuntimeConfig, WasmRunConfig,
    default_cache_dir,
};
pub use egress::check_networking;
pub use file_tools::FILE_TOOLS_COMPONENT;
pub use runtime::Runtime;
pub use session::{Session, SessionSpec};
pub use store::SessionState;
pub use tool::{
    CallOutcome, ERROR_TEXT_CAP, NO_OUTPUT, Tool, ToolAnswer, ToolCall, ToolResult, text_block,
};
/// The mount vocabulary of `wasm-sandbox-fs`, re-exported for embedders building a
/// [`SessionSpec`] (memory stores are [`Mount::memory_store`]s).
pub use wasm_sandbox_fs::{
    guest_path::MemoryMountPath,
    mounts::{Access, GuestPath, Mount, MountSet},
};
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
