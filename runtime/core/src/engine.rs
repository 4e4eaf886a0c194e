//! The engine room: the process's wasmtime [`Engine`] (epoch interruption, the pooling
//! allocator), its epoch ticker, the per-call deadline in ticks, and the file-tools
//! component loaded through the compile cache ([`crate::cache`]). Untrusted bytes are
//! compiled elsewhere, in the bounded helper process of [`crate::compile`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::RuntimeConfig;
use crate::{Error, Result};

/// Refuses a compile cache directory others could write into, and trims it: leftovers of
/// earlier processes (files past the cap, temp files of interrupted writes).
pub(crate) fn prepare_cache_dir(config: &RuntimeConfig) -> Result<()> {
    if let Some(dir) = config.engine.cache_dir.dir() {
        // Cached code is mapped and run without re-validation: a directory someone else
        // can write into (or swap) would let them plant it. Refused, loudly.
        if std::fs::symlink_metadata(dir).is_ok() && !crate::config::owned_private_dir(dir) {
            return Err(Error::Config(format!(
                "engine.cache_dir {}: not a directory owned by this user, or writable by \
                 others; cached code is loaded without re-validation (use a 0700 \
                 directory, or cache_dir = \"off\")",
                dir.display()
            )));
        }
        crate::cache::sweep(dir, config.engine.cache_max_bytes, None);
    }
    Ok(())
}

pub(crate) fn build_engine(config: &RuntimeConfig) -> Result<Engine> {
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

/// Compiles (or loads from the cache) the file-tools component, counting it in
/// `compilations`.
pub(crate) fn load_component(
    engine: &Engine,
    config: &RuntimeConfig,
    wasm: &[u8],
    compilations: &AtomicU64,
) -> Result<Component> {
    compilations.fetch_add(1, Ordering::Relaxed);
    // Compiling takes seconds: say so before, and how long after, so a start-up is never
    // silent (the cache makes the next start load it in milliseconds).
    let announce = |cached: bool| {
        tracing::info!(
            "compiling the file-tools component ({})…",
            if cached {
                "first start with this compile cache; cached afterwards"
            } else {
                "no compile cache: every start compiles"
            }
        );
        std::time::Instant::now()
    };
    let done = |started: std::time::Instant| {
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "file-tools component compiled in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    };
    if let Some(dir) = config.engine.cache_dir.dir() {
        // The file-tools component is ours (embedded at build time): compiled in
        // this process.
        let compile = |wasm: &[u8]| {
            let started = announce(true);
            let out = engine
                .precompile_component(wasm)
                .map_err(Error::InvalidComponent);
            done(started);
            out
        };
        return crate::cache::load_cached(
            engine,
            dir,
            config.engine.cache_max_bytes,
            wasm,
            "file-tools",
            compile,
        )
        .map(|l| l.component);
    }
    let started = announce(false);
    let out = Component::new(engine, wasm).map_err(Error::InvalidComponent);
    done(started);
    out
}

/// Epoch ticks of one tool call's deadline (`limits.tool_timeout_ms`), at least one.
pub(crate) fn deadline_ticks(config: &RuntimeConfig) -> u64 {
    config
        .limits
        .tool_timeout_ms
        .div_ceil(config.engine.epoch_tick_ms.max(1))
        .max(1)
}

/// Starts the thread that advances the engine's epoch every `tick_ms`: what makes
/// every deadline fire.
pub(crate) fn spawn_epoch_ticker(engine: &Engine, tick_ms: u64) -> Result<()> {
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
