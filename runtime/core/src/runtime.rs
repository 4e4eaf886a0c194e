//! The process-wide [`Runtime`]: one wasmtime `Engine`, one `Linker`, and the
//! file-tools component compiled exactly once and kept as an `InstancePre`.

use crate::config::RuntimeConfig;
use crate::file_tools::{self, SessionState, ToolsPre};
use crate::session::{Session, SessionSpec};
use crate::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasm_sandbox_hostcalls_nn::NnHost;
use wasm_sandbox_native::{BashSandbox, SandboxReport};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::p2::bindings::sync::CommandPre;

/// The file-tools component, built from `guests/file-tools` by `build.rs`.
pub const FILE_TOOLS_COMPONENT: &[u8] = include_bytes!(env!("FILE_TOOLS_WASM"));

/// A sandbox runtime: cheap to clone (an `Arc` inside), shared by every
/// session of a worker.
///
/// Creating it compiles the file-tools component once (or loads it from the
/// configured cache); sessions only instantiate it. [`Runtime::compilations`]
/// counts compilations so tests can assert that no session compiles.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) tools_pre: ToolsPre<SessionState>,
    pub(crate) linker: Linker<SessionState>,
    pub(crate) config: RuntimeConfig,
    pub(crate) bash: Arc<BashSandbox>,
    pub(crate) nn: NnHost,
    compilations: AtomicU64,
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
        let engine = build_engine(&config)?;
        let compilations = AtomicU64::new(0);
        let component = load_component(&engine, &config, FILE_TOOLS_COMPONENT, &compilations)?;
        let mut linker: Linker<SessionState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(Error::Other)?;
        file_tools::add_to_linker(&mut linker).map_err(Error::Other)?;
        wasm_sandbox_hostcalls_nn::add_to_linker(&mut linker, SessionState::nn_view)
            .map_err(Error::Other)?;
        let nn = NnHost::new(config.nn.clone()).map_err(|e| Error::Config(format!("[nn]: {e}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(Error::InvalidComponent)?;
        let tools_pre = ToolsPre::new(pre).map_err(Error::InvalidComponent)?;
        spawn_epoch_ticker(&engine, config.engine.epoch_tick_ms)?;
        // Probes bubblewrap, Landlock, seccomp and cgroups once; an unusable
        // sandbox is recorded and makes every bash call fail closed.
        let bash = Arc::new(BashSandbox::new(config.bash.clone()));
        if let Some(problem) = &bash.report().unavailable_reason {
            tracing::warn!(reason = %problem, "the bash sandbox is unavailable; bash calls will fail");
        }
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                tools_pre,
                linker,
                config,
                bash,
                nn,
                compilations,
            }),
        })
    }

    /// Creates a fresh sandbox for one session (see [`SessionSpec`]).
    ///
    /// # Sandbox
    ///
    /// The session's component gets exactly these preopens and nothing else:
    /// `/workspace` and `/mnt/session/outputs` read-write, and each memory
    /// store at its `/mnt/memory/<name>` path, read-only or read-write as
    /// configured. No environment, no arguments, no sockets, no name lookup.
    pub fn session(&self, spec: SessionSpec) -> Result<Session> {
        Session::new(self.clone(), spec)
    }

    /// Compiles a `wasi:cli/command` component once (e.g. a skill's tool)
    /// so any session can run it with [`Session::run_command`].
    pub fn load_command(&self, wasm: &[u8]) -> Result<CommandComponent> {
        self.inner.compilations.fetch_add(1, Ordering::Relaxed);
        let component =
            Component::new(&self.inner.engine, wasm).map_err(Error::InvalidComponent)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(Error::InvalidComponent)?;
        let pre = CommandPre::new(pre).map_err(Error::InvalidComponent)?;
        Ok(CommandComponent { pre })
    }

    /// How many components this runtime has compiled or deserialised. Stays
    /// at 1 however many sessions are created.
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// The configuration in effect.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Which layers of the native bash sandbox are active on this host.
    pub fn sandbox_report(&self) -> &SandboxReport {
        self.inner.bash.report()
    }

    /// The underlying engine (for embedders adding their own components).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}

/// A compiled `wasi:cli/command` component, ready to instantiate in any
/// session (see [`Runtime::load_command`]). Cheap to clone.
#[derive(Clone)]
pub struct CommandComponent {
    pub(crate) pre: CommandPre<SessionState>,
}

fn build_engine(config: &RuntimeConfig) -> Result<Engine> {
    let mut cfg = Config::new();
    // Deadlines: a tool call that runs past its budget traps at the next
    // epoch check instead of hanging a worker thread.
    cfg.epoch_interruption(true);
    if config.engine.pooling {
        let n = config.engine.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_memory_size(usize::try_from(config.limits.memory_bytes).unwrap_or(usize::MAX));
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&cfg)
        .map_err(|e| Error::Config(format!("failed to build the wasmtime engine: {e}")))
}

fn load_component(
    engine: &Engine,
    config: &RuntimeConfig,
    wasm: &[u8],
    compilations: &AtomicU64,
) -> Result<Component> {
    compilations.fetch_add(1, Ordering::Relaxed);
    if let Some(dir) = &config.engine.cache_dir {
        return file_tools::load_cached(engine, dir, wasm);
    }
    Component::new(engine, wasm).map_err(Error::InvalidComponent)
}

fn spawn_epoch_ticker(engine: &Engine, tick_ms: u64) -> Result<()> {
    let weak = engine.weak();
    let tick = Duration::from_millis(tick_ms.max(1));
    // The thread holds only a weak reference and exits once the engine is gone.
    std::thread::Builder::new()
        .name("wasm-sandbox-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(drop)
        // Without the ticker no deadline could fire: refuse to run rather than
        // run without timeouts.
        .map_err(Error::Io)
}
