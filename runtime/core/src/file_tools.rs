//! The file-tools room: the component (`guests/file-tools`, embedded at build time),
//! its host interface (`read-link`), the `InstancePre` every session instantiates, and
//! one live instance per session. The instance's store and WASI context are built by
//! [`crate::store`] from the session's mounts (its only authority: see there).

use crate::store::{SessionState, Stores};
use crate::tool::{GuestBlock, GuestOutcome, Tool, ToolAnswer};
use crate::{Error, Result};
use std::sync::Arc;
use wasm_sandbox_fs::mounts::MountSet;
use wasm_sandbox_hostcalls_nn::WasiNnCtx;
use wasmtime::Store;

/// The file-tools component, built from `guests/file-tools` by `build.rs`.
pub const FILE_TOOLS_COMPONENT: &[u8] = include_bytes!(env!("FILE_TOOLS_WASM"));

wasmtime::component::bindgen!({
    path: "../../hostcalls/wit",
    world: "tools",
});

pub(crate) use self::exports::wasm_sandbox::tools::file_tools as wit;
/// The file tools' configuration record (the WIT `tool-config`), built once per session by
/// the host.
pub(crate) use self::exports::wasm_sandbox::tools::file_tools::ToolConfig;
use self::wasm_sandbox::tools::host::{Host as ToolsHost, LinkError};

impl ToolsHost for SessionState {
    /// Reads a link's raw target through a capability handle on the
    /// preopen: cap-std resolves the *parent* components beneath the
    /// preopen (refusing `..` and escaping links), and returns the leaf
    /// link's contents without following it. Only the target string is
    /// revealed; the guest still reaches files through the preopens alone.
    fn read_link(&mut self, path: String) -> Result<String, LinkError> {
        let Some((preopen, rel)) = self.mounts().containing(&path) else {
            return Err(LinkError::NotFound);
        };
        if rel.is_empty() {
            return Err(LinkError::NotALink);
        }
        let dir = cap_std::fs::Dir::open_ambient_dir(&preopen.host, cap_std::ambient_authority())
            .map_err(|e| link_error(&e))?;
        let target = dir.read_link_contents(rel).map_err(|e| link_error(&e))?;
        target
            .into_os_string()
            .into_string()
            .map_err(|_| LinkError::Other)
    }
}

fn link_error(e: &std::io::Error) -> LinkError {
    match (e.kind(), e.raw_os_error()) {
        (std::io::ErrorKind::NotFound, _) => LinkError::NotFound,
        // EINVAL: not a link; ENOTDIR; ELOOP (Linux numbers).
        (_, Some(22)) => LinkError::NotALink,
        (_, Some(20)) => LinkError::NotADirectory,
        (_, Some(40)) => LinkError::Loop,
        (std::io::ErrorKind::PermissionDenied, _) => LinkError::Denied,
        _ => LinkError::Other,
    }
}

/// Adds the file-tools host interface to a linker.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<SessionState>,
) -> wasmtime::Result<()> {
    self::wasm_sandbox::tools::host::add_to_linker::<
        SessionState,
        wasmtime::component::HasSelf<SessionState>,
    >(linker, |s| s)
}

/// The file-tools component, linked and ready to instantiate per session.
pub(crate) struct FileTools {
    pre: ToolsPre<SessionState>,
    stores: Stores,
}

impl FileTools {
    /// Links the compiled component; every session instantiates it into a store of
    /// `stores`.
    pub(crate) fn new(
        linker: &wasmtime::component::Linker<SessionState>,
        component: &wasmtime::component::Component,
        stores: Stores,
    ) -> Result<FileTools> {
        let pre = linker
            .instantiate_pre(component)
            .map_err(Error::InvalidComponent)?;
        let pre = ToolsPre::new(pre).map_err(Error::InvalidComponent)?;
        Ok(FileTools { pre, stores })
    }

    /// A fresh instance with exactly the session's `mounts` as preopens.
    pub(crate) fn instantiate(
        &self,
        mounts: &Arc<MountSet>,
        nn: WasiNnCtx,
    ) -> Result<FileToolsInstance> {
        let builder = crate::store::wasi_builder(mounts)?;
        let mut store = self.stores.store(builder, mounts, nn);
        let bindings = self.pre.instantiate(&mut store).map_err(Error::Other)?;
        Ok(FileToolsInstance { store, bindings })
    }
}

/// A live instance of the component in its own store.
pub(crate) struct FileToolsInstance {
    pub store: Store<SessionState>,
    pub bindings: Tools,
}

impl FileToolsInstance {
    /// Calls the component's `call` export with a deadline in epoch ticks and bridges
    /// its outcome-tagged result ([`crate::tool::bridge`] words it). A trap (the
    /// deadline, out of memory, a guest bug) is an error.
    pub fn call(
        &mut self,
        tool: Tool,
        input: &serde_json::Value,
        config: &ToolConfig,
        deadline_ticks: u64,
    ) -> wasmtime::Result<ToolAnswer> {
        let wit_tool = match tool {
            // The caller routes bash elsewhere; answer rather than trap if not.
            Tool::Bash => return Ok(ToolAnswer::failed(tool.name(), "not a file tool")),
            Tool::Read => wit::Tool::Read,
            Tool::Write => wit::Tool::Write,
            Tool::Edit => wit::Tool::Edit,
            Tool::Glob => wit::Tool::Glob,
            Tool::Grep => wit::Tool::Grep,
        };
        self.store.set_epoch_deadline(deadline_ticks);
        self.store.epoch_deadline_trap();
        let out = self.bindings.wasm_sandbox_tools_file_tools().call_call(
            &mut self.store,
            wit_tool,
            &input.to_string(),
            config,
        )?;
        let outcome = match out.outcome {
            wit::Outcome::Ok => GuestOutcome::Ok,
            wit::Outcome::ToolError => GuestOutcome::ToolError,
            wit::Outcome::Exception => GuestOutcome::Exception,
        };
        let blocks = out
            .content
            .into_iter()
            .map(|b| match b {
                wit::Block::Text(t) => GuestBlock::Text(t),
                wit::Block::Json(j) => GuestBlock::Json(j),
            })
            .collect();
        Ok(crate::tool::bridge(tool, outcome, blocks))
    }
}

/// A session cap as the WIT `cap` variant: unset is `default` (the guest alone knows the
/// reference defaults), `unlimited` the reference's `None`.
pub(crate) fn wit_cap(cap: crate::config::Cap) -> wit::Cap {
    match cap {
        crate::config::Cap::Default => wit::Cap::Default,
        crate::config::Cap::Unlimited => wit::Cap::Unlimited,
        crate::config::Cap::Bytes(n) => wit::Cap::Bytes(n),
    }
}
