//! Adapter from the core runtime (`wasm-sandbox-runtime`) to the worker's sandbox seam.
//!
//! TODO(core): the core crate is not compilable yet; until it is, `serve` (without `--local`)
//! refuses to start. Replace this stub with the `Runtime`/`Session` adapter.

use crate::sandbox::{SandboxProvider, SandboxSession, SandboxSpec, ToolCall, ToolResult};

/// Sandboxes made by the core runtime.
#[derive(Clone, Debug)]
pub struct CoreProvider;

/// One core session.
#[derive(Debug)]
pub struct CoreSession;

impl CoreProvider {
    /// Builds the runtime from the `[runtime]` table of the config file.
    pub fn from_config(_runtime: Option<toml::Value>) -> anyhow::Result<CoreProvider> {
        anyhow::bail!("the core sandbox runtime is not available in this build yet")
    }
}

impl SandboxProvider for CoreProvider {
    type Session = CoreSession;

    async fn create(&self, _spec: SandboxSpec) -> anyhow::Result<CoreSession> {
        anyhow::bail!("the core sandbox runtime is not available in this build yet")
    }
}

impl SandboxSession for CoreSession {
    async fn call_tool(&self, _call: &ToolCall) -> Option<ToolResult> {
        None
    }

    async fn close(&self) {}
}
