//! The file-tools component: host bindings, per-session store state, and
//! one instance per session.
//!
//! # Sandbox
//!
//! The component's only authority is its WASI context, built here from
//! deny-all defaults: the session's preopens, no environment, no
//! arguments, no network. Path confinement therefore does not rest on the
//! guest's own checks (which reproduce the reference's error messages):
//! wasmtime-wasi resolves every path beneath a preopened directory handle
//! with cap-std, which refuses `..` past the preopen, absolute symlinks and
//! symlinks that escape, so even a compromised guest cannot name a host
//! file outside its mounts.

use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;
use wasm_sandbox_hostcalls_nn::{WasiNnCtx, WasiNnView};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../../hostcalls/wit",
    world: "tools",
});

/// The `T` of a session's `Store<T>`.
pub struct SessionState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    preopens: Arc<Vec<Preopen>>,
    nn: WasiNnCtx,
}

impl SessionState {
    /// The wasi-nn view of this store (models by name, the session's quotas).
    pub(crate) fn nn_view(&mut self) -> WasiNnView<'_> {
        WasiNnView::new(&mut self.table, &mut self.nn)
    }
}

use self::wasm_sandbox::tools::host::{Host as ToolsHost, LinkError};

impl ToolsHost for SessionState {
    /// Reads a link's raw target through a capability handle on the
    /// preopen: cap-std resolves the *parent* components beneath the
    /// preopen (refusing `..` and escaping links), and returns the leaf
    /// link's contents without following it. Only the target string is
    /// revealed; the guest still reaches files through the preopens alone.
    fn read_link(&mut self, path: String) -> Result<String, LinkError> {
        let Some((preopen, rel)) = Preopen::containing(&self.preopens, &path) else {
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

impl WasiView for SessionState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
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

/// A directory mapped into the guest.
/// How a command run is bounded.
pub(crate) enum CommandDeadline {
    /// Trap after this many epoch ticks.
    Ticks(u64),
    /// Asked at every epoch tick: `Ok(Continue(1))` to go on, an error to trap.
    Callback(Box<dyn FnMut() -> wasmtime::Result<wasmtime::UpdateDeadline> + Send + Sync>),
}

#[derive(Clone, Debug)]
pub(crate) struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

impl Preopen {
    /// The preopen whose guest directory contains the absolute, normalised guest
    /// `path` (the deepest one when they nest), and the path relative to it (`""`
    /// for the directory itself).
    pub fn containing<'a, 'p>(
        preopens: &'a [Preopen],
        path: &'p str,
    ) -> Option<(&'a Preopen, &'p str)> {
        preopens
            .iter()
            .filter_map(|p| {
                let rest = path.strip_prefix(p.guest.trim_end_matches('/'))?;
                let rest = if rest.is_empty() {
                    ""
                } else {
                    rest.strip_prefix('/')?
                };
                Some((p, rest))
            })
            .max_by_key(|(p, _)| p.guest.len())
    }
}

/// Epoch ticks allowed for instantiation (start-up code only).
const INSTANTIATE_DEADLINE_TICKS: u64 = 1000;

/// What a command component printed and how it exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code (0 on success).
    pub exit_code: i32,
    /// Captured stdout (at most 16 MiB).
    pub stdout: Vec<u8>,
    /// Captured stderr (at most 16 MiB).
    pub stderr: Vec<u8>,
}

/// A live instance of the component in its own store.
pub(crate) struct FileToolsInstance {
    pub store: Store<SessionState>,
    pub bindings: Tools,
}

impl FileToolsInstance {
    /// Instantiates the precompiled component with the given preopens.
    pub fn new(
        engine: &Engine,
        pre: &ToolsPre<SessionState>,
        preopens: &Arc<Vec<Preopen>>,
        memory_bytes: u64,
        nn: WasiNnCtx,
    ) -> Result<Self> {
        let builder = Self::builder(preopens)?;
        let mut store = Self::store(engine, builder, preopens, memory_bytes, nn);
        let bindings = pre.instantiate(&mut store).map_err(Error::Other)?;
        Ok(FileToolsInstance { store, bindings })
    }

    pub(crate) fn builder(preopens: &[Preopen]) -> Result<wasmtime_wasi::WasiCtxBuilder> {
        let mut builder = WasiCtx::builder();
        // The tools run on a blocking thread already; doing file I/O inline
        // saves a thread hop per WASI call (~100 us per tool call).
        builder.allow_blocking_current_thread(true);
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for p in preopens {
            let perms = if p.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&p.host, &p.guest, perms)
                .map_err(|e| {
                    Error::Sandbox(format!(
                        "failed to preopen {} at {}: {e}",
                        p.host.display(),
                        p.guest
                    ))
                })?;
        }
        Ok(builder)
    }

    fn store(
        engine: &Engine,
        mut builder: wasmtime_wasi::WasiCtxBuilder,
        preopens: &Arc<Vec<Preopen>>,
        memory_bytes: u64,
        nn: WasiNnCtx,
    ) -> Store<SessionState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(memory_bytes).unwrap_or(usize::MAX))
            .instances(32)
            .build();
        let state = SessionState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limits,
            preopens: preopens.clone(),
            nn,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        // Instantiation runs the guest's start-up code; give it the same
        // kind of budget as a call (each call sets its own deadline).
        store.set_epoch_deadline(INSTANTIATE_DEADLINE_TICKS);
        store.epoch_deadline_trap();
        store
    }

    /// Runs a command component in a fresh store with the same preopens.
    pub fn run_command(
        runtime: &crate::runtime::RuntimeInner,
        pre: &wasmtime_wasi::p2::bindings::sync::CommandPre<SessionState>,
        preopens: &Arc<Vec<Preopen>>,
        args: &[String],
        stdin: &[u8],
        deadline_ticks: u64,
        nn: WasiNnCtx,
    ) -> Result<CommandOutput> {
        use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
        const CAPTURE: usize = 16 << 20;
        let stdout = MemoryOutputPipe::new(CAPTURE);
        let stderr = MemoryOutputPipe::new(CAPTURE);
        let exit_code = Self::run_command_with(
            runtime,
            pre,
            preopens,
            nn,
            |builder| {
                builder.args(args);
                builder.stdin(MemoryInputPipe::new(stdin.to_vec()));
                builder.stdout(stdout.clone()).stderr(stderr.clone());
                Ok(())
            },
            CommandDeadline::Ticks(deadline_ticks),
        )?;
        Ok(CommandOutput {
            exit_code,
            stdout: stdout.contents().to_vec(),
            stderr: stderr.contents().to_vec(),
        })
    }

    /// Runs a command component in a fresh store with `preopens`, after
    /// `configure` has added arguments, environment, stdio and any extra
    /// preopen. Returns the exit status; a trap (deadline, out of memory,
    /// guest bug) is an error.
    pub fn run_command_with(
        runtime: &crate::runtime::RuntimeInner,
        pre: &wasmtime_wasi::p2::bindings::sync::CommandPre<SessionState>,
        preopens: &Arc<Vec<Preopen>>,
        nn: WasiNnCtx,
        configure: impl FnOnce(&mut wasmtime_wasi::WasiCtxBuilder) -> Result<()>,
        deadline: CommandDeadline,
    ) -> Result<i32> {
        let mut builder = Self::builder(preopens)?;
        configure(&mut builder)?;
        let memory_bytes = runtime.config.limits.memory_bytes;
        let mut store = Self::store(&runtime.engine, builder, preopens, memory_bytes, nn);
        match deadline {
            CommandDeadline::Ticks(ticks) => {
                store.set_epoch_deadline(ticks);
                store.epoch_deadline_trap();
            }
            CommandDeadline::Callback(mut check) => {
                store.set_epoch_deadline(1);
                store.epoch_deadline_callback(move |_| check());
            }
        }
        let command = pre.instantiate(&mut store).map_err(Error::Other)?;
        let exit_code = match command.wasi_cli_run().call_run(&mut store) {
            Ok(Ok(())) => 0,
            Ok(Err(())) => 1,
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => exit.0,
                None => return Err(Error::Other(e)),
            },
        };
        Ok(exit_code)
    }

    /// Calls the component's `call` export with a deadline in epoch ticks.
    pub fn call(&mut self, request: &str, deadline_ticks: u64) -> wasmtime::Result<String> {
        self.store.set_epoch_deadline(deadline_ticks);
        self.store.epoch_deadline_trap();
        self.bindings
            .wasm_sandbox_tools_file_tools()
            .call_call(&mut self.store, request)
    }
}
