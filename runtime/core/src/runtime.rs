//! The runtime room: the process-wide [`Runtime`] handle. It builds the other rooms
//! once ([`crate::engine`], [`crate::file_tools`], [`crate::commands`], [`crate::bash`],
//! [`crate::pool`]), keeps them in private fields, and hands sessions what they need
//! through methods. [`Runtime::session`] is implemented beside [`Session`](crate::Session)
//! (`session.rs`), so this room imports no room above it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasm_sandbox_hostcalls_nn::NnHost;
use wasm_sandbox_native::{BashSandbox, SandboxReport};
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::bash::BashHost;
use crate::commands::{CommandComponent, Commands};
use crate::config::RuntimeConfig;
use crate::file_tools::{FILE_TOOLS_COMPONENT, FileTools};
use crate::pool::{Pool, Pooled};
use crate::store::{SessionState, Stores};
use crate::{Error, Result};

/// A sandbox runtime: cheap to clone (an `Arc` inside), shared by every
/// session of a worker.
///
/// Creating it compiles the file-tools component once (or loads it from the
/// configured cache); sessions only instantiate it. [`Runtime::compilations`]
/// counts compilations so tests can assert that no session compiles.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    config: RuntimeConfig,
    engine: Engine,
    /// Times the file-tools component was compiled or loaded (see [`Runtime::compilations`]).
    compilations: AtomicU64,
    /// Declared before `host`: pooled shells die (and their directories go) before the
    /// socket directory they are bound to is removed.
    pool: Arc<Pool>,
    tools: FileTools,
    commands: Arc<Commands>,
    host: Arc<BashHost>,
    nn: NnHost,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine and compiles (or loads) the file-tools component.
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        // Leftovers of earlier processes: bridge directories whose owner is gone,
        // cache files past the cap and temp files of interrupted writes.
        crate::bash::sweep_stale();
        crate::engine::prepare_cache_dir(&config)?;
        let engine = crate::engine::build_engine(&config)?;
        let compilations = AtomicU64::new(0);
        let component =
            crate::engine::load_component(&engine, &config, FILE_TOOLS_COMPONENT, &compilations)?;
        let mut linker: Linker<SessionState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(Error::Other)?;
        crate::file_tools::add_to_linker(&mut linker).map_err(Error::Other)?;
        wasm_sandbox_hostcalls_nn::add_to_linker(&mut linker, SessionState::nn_view)
            .map_err(Error::Other)?;
        // `[[nn.remote]] upstream = "<name>"` entries take their URL and headers from
        // `[[networking.upstreams]]` (one definition of an endpoint).
        let nn = NnHost::new(crate::egress::resolve_nn(&config)?)
            .map_err(|e| Error::Config(format!("[nn]: {e}")))?;
        let stores = Stores::new(engine.clone(), config.limits.memory_bytes);
        let tools = FileTools::new(&linker, &component, stores.clone())?;
        crate::engine::spawn_epoch_ticker(&engine, config.engine.epoch_tick_ms)?;
        // Probes bubblewrap, Landlock, seccomp and cgroups once; an unusable
        // sandbox is recorded and makes every bash call fail closed.
        config.shape.validate().map_err(Error::Config)?;
        let bash = Arc::new(BashSandbox::with_shape(config.bash.clone(), &config.shape));
        if let Some(problem) = &bash.report().unavailable_reason {
            tracing::warn!(reason = %problem, "the bash sandbox is unavailable; bash calls will fail");
        }
        // `[runtime.shape] enforce = "required"`: a host that cannot hold a session to
        // its shape does not serve (see wasm_sandbox_native::shape).
        bash.report().shape.check().map_err(Error::Config)?;
        let commands = Arc::new(Commands::new(engine.clone(), stores, linker, &config));
        let egress = crate::egress::build(&config)?;
        let host = Arc::new(BashHost::new(bash, config.wasm_run.enabled, egress));
        let pool = Arc::new(Pool::new(&config.pool));
        let runtime = Runtime {
            inner: Arc::new(RuntimeInner {
                config,
                engine,
                compilations,
                tools,
                commands,
                host,
                nn,
                pool,
            }),
        };
        runtime.fill_pool();
        Ok(runtime)
    }

    /// Compiles a `wasi:cli/command` component once (e.g. a skill's tool)
    /// so any session can run it with [`Session::run_command`](crate::Session::run_command).
    ///
    /// This compiles **in this process**, without limits: only for bytes the
    /// embedder trusts (its own components). Bytes a session could have written go
    /// through [`Runtime::command_by_content`] or [`Runtime::command_for_file`],
    /// which compile in the bounded helper process.
    pub fn load_command(&self, wasm: &[u8]) -> Result<CommandComponent> {
        self.inner.commands.load(wasm)
    }

    /// The compiled form of a `wasi:cli/command` component, compiled at most
    /// once per content: keyed by the SHA-256 of `wasm`, kept in memory (the
    /// `wasm_run.cache_entries` most recent) and, with `engine.cache_dir`, on
    /// disk. Concurrent callers with the same bytes wait for one compilation.
    ///
    /// This is what `wasm-run` uses, and what a host calls to precompile a
    /// skill's components when the skill is installed. The cache holds compiled
    /// code only: the same bytes compile to the same code whoever supplied
    /// them, so sharing it across sessions and tenants reveals nothing but
    /// "these bytes were seen before" (timing).
    ///
    /// Compilation runs in the bounded helper process (see `wasm_run.compile_*`),
    /// for at most `wasm_run.max_skill_component_bytes`; without a helper it fails.
    pub fn command_by_content(&self, wasm: &[u8]) -> Result<CommandComponent> {
        self.inner.commands.by_content(wasm)
    }

    /// [`Runtime::command_by_content`] for an open file, skipping the read and the
    /// hash when this file (same device, inode, size, mtime and ctime) was seen
    /// before and its compiled form is cached or being compiled (then this call
    /// waits for that compilation). Large components (a componentize-py one is
    /// ~18 MB) then cost a `fstat` instead of ~20 ms of reading and hashing. Other
    /// files must be regular files of at most `max_bytes`, and at most that many
    /// bytes are read.
    ///
    /// The worker precompiles installed skills with
    /// `wasm_run.max_skill_component_bytes`; `wasm-run` passes the smaller
    /// `wasm_run.max_component_bytes`, so a session can run the large skill files
    /// the worker installed, unchanged, but not a large file it wrote itself.
    ///
    /// Reusing the identity is safe: the compiled code still comes from bytes
    /// that were hashed, and any change to the file changes its ctime; at worst a
    /// racing writer gets the version it just replaced, which only it could name.
    pub fn command_for_file(
        &self,
        file: &std::fs::File,
        max_bytes: u64,
    ) -> Result<CommandComponent> {
        self.inner.commands.for_file(file, max_bytes)
    }

    /// Marks an open file as a skill component the host installed (an `fstat`, no
    /// read): until the file changes (same device, inode, size, mtime and ctime),
    /// [`Runtime::command_for_file`] accepts it up to
    /// `wasm_run.max_skill_component_bytes` whatever limit its caller passes. A
    /// worker calls this for each installed component before it starts their
    /// precompilation in the background, so a `wasm-run` that comes first is not
    /// refused by the smaller limit for session files. Only for files the host
    /// wrote itself: a session that changes such a file changes its ctime, which
    /// it cannot set back.
    pub fn allow_skill_file(&self, file: &std::fs::File) -> Result<()> {
        self.inner.commands.allow_skill_file(file)
    }

    /// Starts pooled bash sandboxes in the background, one after another, until
    /// `pool.sandboxes` are ready (see [`crate::PoolConfig`]). Called at start-up and
    /// whenever a session takes one; a no-op without a tokio runtime, without a
    /// pool directory or without a usable bash sandbox.
    pub fn fill_pool(&self) {
        self.inner.pool.fill(&self.inner.host);
    }

    /// Takes a ready pooled sandbox whose shell is still running, if any.
    pub(crate) fn take_pooled(&self) -> Option<Pooled> {
        self.inner.pool.take()
    }

    /// How many started sandboxes are waiting in the pool.
    pub fn pooled_sandboxes(&self) -> usize {
        self.inner.pool.len()
    }

    /// How many times this runtime compiled or deserialised the file-tools
    /// component. Stays at 1 however many sessions are created.
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// How many command components (skills, `wasm-run`) this runtime compiled
    /// or deserialised: [`Runtime::load_command`] calls plus cache misses of
    /// [`Runtime::command_by_content`].
    pub fn command_compilations(&self) -> u64 {
        self.inner.commands.compilations()
    }

    /// The configuration in effect.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Which layers of the native bash sandbox are active on this host.
    pub fn sandbox_report(&self) -> &SandboxReport {
        self.inner.host.report()
    }

    /// The underlying engine (for embedders adding their own components).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The file-tools component, ready to instantiate.
    pub(crate) fn file_tools(&self) -> &FileTools {
        &self.inner.tools
    }

    /// The command components (compile, cache, run).
    pub(crate) fn commands(&self) -> &Arc<Commands> {
        &self.inner.commands
    }

    /// What the sessions' bash sandboxes share.
    pub(crate) fn bash_host(&self) -> &BashHost {
        &self.inner.host
    }

    /// The wasi-nn host (models, per-session quotas).
    pub(crate) fn nn(&self) -> &NnHost {
        &self.inner.nn
    }

    /// Epoch ticks of one tool call's deadline.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        crate::engine::deadline_ticks(&self.inner.config)
    }
}
