//! The command room: `wasi:cli/command` components (a skill's tools, what `wasm-run`
//! starts) — compiled once per content hash and cached, and run in a fresh store with
//! the session's mounts.
//!
//! # Security reasoning
//!
//! * Bytes a session could have written are compiled in the bounded helper process
//!   ([`crate::compile`]), never in the worker; only the embedder's own bytes
//!   ([`Commands::load`]) compile in-process.
//! * The cache is keyed by the SHA-256 of the bytes and holds compiled code only: the
//!   same bytes compile to the same code whoever supplied them, so sharing it across
//!   sessions reveals nothing but "these bytes were seen before" (timing). It is bounded
//!   in memory (`wasm_run.cache_entries`, `wasm_run.cache_max_bytes`) and on disk
//!   (`engine.cache_max_bytes`).
//! * A file is identified without reading it by device, inode, size, mtime and ctime
//!   ([`Commands::for_file`]); any change to the file changes its ctime, which an
//!   unprivileged process cannot set.
//! * A run gets exactly the session's mounts ([`crate::store`]), plus what its caller
//!   configures, under an epoch deadline.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use wasm_sandbox_fs::mounts::MountSet;
use wasm_sandbox_hostcalls_nn::WasiNnCtx;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi::p2::bindings::sync::CommandPre;

use crate::compile::Compiler;
use crate::config::{EngineConfig, RuntimeConfig, WasmRunConfig};
use crate::store::{SessionState, Stores};
use crate::{Error, Result};

/// How a command run is bounded.
pub(crate) enum CommandDeadline {
    /// Trap after this many epoch ticks.
    Ticks(u64),
    /// Asked at every epoch tick: `Ok(Continue(1))` to go on, an error to trap.
    Callback(Box<dyn FnMut() -> wasmtime::Result<wasmtime::UpdateDeadline> + Send + Sync>),
}

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

/// A compiled `wasi:cli/command` component, ready to instantiate in any
/// session (see [`Runtime::load_command`](crate::Runtime::load_command)). Cheap to clone.
#[derive(Clone)]
pub struct CommandComponent {
    pub(crate) pre: CommandPre<SessionState>,
    /// Size of the compiled form (for the in-memory cache's byte cap).
    pub(crate) compiled_bytes: u64,
}

type CommandCell = Arc<OnceLock<std::result::Result<CommandComponent, CellError>>>;

/// A failed compilation, shared with the callers that waited for it.
#[derive(Clone)]
enum CellError {
    /// Not a valid component.
    Invalid(String),
    /// Compilation hit its memory or CPU limit: deterministic for the same bytes.
    Limit(String),
    /// Anything else (busy slots, wall-clock timeout, no helper, I/O).
    Other(String),
}

/// What identifies a file's content without reading it: device, inode, size, mtime and
/// ctime (nanoseconds). Every write, truncate or rename updates ctime, and ctime cannot be
/// set by an unprivileged process.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(meta: &std::fs::Metadata) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Most file identities remembered by [`Commands::for_file`].
const FILE_HASHES_MAX: usize = 4096;

/// Compiled command components in memory: at most `wasm_run.cache_entries` and
/// `wasm_run.cache_max_bytes` of compiled code (oldest first out).
#[derive(Default)]
struct CommandCache {
    cells: HashMap<[u8; 32], CommandCell>,
    order: VecDeque<[u8; 32]>,
    /// Compiled size of the entries that finished compiling.
    sizes: HashMap<[u8; 32], u64>,
    total: u64,
}

impl CommandCache {
    fn remove(&mut self, key: &[u8; 32]) {
        self.cells.remove(key);
        self.total = self
            .total
            .saturating_sub(self.sizes.remove(key).unwrap_or(0));
    }
}

/// The runtime's command components: the linker they are linked against, the bounded
/// compiler, and the caches (see [the module docs](self)).
pub(crate) struct Commands {
    engine: Engine,
    stores: Stores,
    linker: Linker<SessionState>,
    compiler: Compiler,
    wasm_run: WasmRunConfig,
    engine_config: EngineConfig,
    compilations: AtomicU64,
    /// Command components by SHA-256 of their bytes (see [`Commands::by_content`]).
    cache: Mutex<CommandCache>,
    /// File identity → content hash, so a file run again is not re-read and re-hashed
    /// (see [`Commands::for_file`]).
    file_hashes: Mutex<HashMap<FileKey, [u8; 32]>>,
    /// Identities of skill files the worker installed (see [`Commands::allow_skill_file`]).
    skill_files: Mutex<HashSet<FileKey>>,
}

impl Commands {
    /// The command room of a runtime: `linker` has WASI, the file-tools host and wasi-nn.
    pub(crate) fn new(
        engine: Engine,
        stores: Stores,
        linker: Linker<SessionState>,
        config: &RuntimeConfig,
    ) -> Commands {
        Commands {
            engine,
            stores,
            linker,
            compiler: Compiler::new(config),
            wasm_run: config.wasm_run.clone(),
            engine_config: config.engine.clone(),
            compilations: AtomicU64::new(0),
            cache: Mutex::default(),
            file_hashes: Mutex::default(),
            skill_files: Mutex::default(),
        }
    }

    /// How many command components were compiled or deserialised.
    pub(crate) fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// `[wasm_run]` as configured.
    pub(crate) fn wasm_run_config(&self) -> &WasmRunConfig {
        &self.wasm_run
    }

    /// Compiles a component **in this process**, without limits: only for bytes the
    /// embedder trusts (see [`Runtime::load_command`](crate::Runtime::load_command)).
    pub(crate) fn load(&self, wasm: &[u8]) -> Result<CommandComponent> {
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let component = Component::new(&self.engine, wasm).map_err(Error::InvalidComponent)?;
        self.command_pre(&component)
    }

    /// Links a compiled `wasi:cli/command` component against this runtime's linker.
    fn command_pre(&self, component: &Component) -> Result<CommandComponent> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(Error::InvalidComponent)?;
        let pre = CommandPre::new(pre).map_err(Error::InvalidComponent)?;
        Ok(CommandComponent {
            pre,
            compiled_bytes: 0,
        })
    }

    /// The compiled form of a component, compiled at most once per content (keyed by
    /// the SHA-256 of `wasm`), in the bounded helper process, for at most
    /// `wasm_run.max_skill_component_bytes` (see
    /// [`Runtime::command_by_content`](crate::Runtime::command_by_content)). Concurrent
    /// callers with the same bytes wait for one compilation.
    pub(crate) fn by_content(&self, wasm: &[u8]) -> Result<CommandComponent> {
        use sha2::Digest;
        let max = self.wasm_run.max_skill_component_bytes;
        if wasm.len() as u64 > max {
            return Err(too_large(wasm.len() as u64, max));
        }
        let key: [u8; 32] = sha2::Sha256::digest(wasm).into();
        self.command_in(key, &self.command_cell(key), wasm)
    }

    /// [`Commands::by_content`] for an open file, skipping the read and the hash when
    /// this file (same device, inode, size, mtime and ctime) was seen before and its
    /// compiled form is cached or being compiled (see
    /// [`Runtime::command_for_file`](crate::Runtime::command_for_file)). Other files must
    /// be regular files of at most `max_bytes` (more for installed skills), and at most
    /// that many bytes are read.
    ///
    /// Reusing the identity is safe: the compiled code still comes from bytes
    /// that were hashed, and any change to the file changes its ctime; at worst a
    /// racing writer gets the version it just replaced, which only it could name.
    pub(crate) fn for_file(
        &self,
        file: &std::fs::File,
        max_bytes: u64,
    ) -> Result<CommandComponent> {
        use sha2::Digest;
        use std::io::Read;
        let meta = file.metadata().map_err(Error::Io)?;
        if !meta.is_file() {
            return Err(Error::Sandbox("not a regular file".into()));
        }
        let id = FileKey::of(&meta);
        let skill = self
            .skill_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id);
        let max_bytes = if skill {
            max_bytes.max(self.wasm_run.max_skill_component_bytes)
        } else {
            max_bytes
        };
        let known = self
            .file_hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied();
        if let Some(cell) = known.and_then(|hash| self.existing_cell(&hash)) {
            return cell_result(cell.wait());
        }
        if meta.len() > max_bytes {
            return Err(too_large(meta.len(), max_bytes));
        }
        let mut wasm = Vec::with_capacity(meta.len() as usize);
        file.take(max_bytes.saturating_add(1))
            .read_to_end(&mut wasm)
            .map_err(Error::Io)?;
        if wasm.len() as u64 > max_bytes {
            return Err(Error::Sandbox("component grew past the size limit".into()));
        }
        let hash: [u8; 32] = sha2::Sha256::digest(&wasm).into();
        // The cell first, then the identity: a concurrent caller that finds the
        // identity finds the cell too, and waits for this compilation.
        let cell = self.command_cell(hash);
        {
            let mut ids = self.file_hashes.lock().unwrap_or_else(|p| p.into_inner());
            if ids.len() >= FILE_HASHES_MAX {
                ids.clear();
            }
            ids.insert(id, hash);
        }
        self.command_in(hash, &cell, &wasm)
    }

    /// Marks an open file as a skill component the host installed, so that until it
    /// changes [`Commands::for_file`] accepts it up to `wasm_run.max_skill_component_bytes`
    /// (see [`Runtime::allow_skill_file`](crate::Runtime::allow_skill_file)). Only for
    /// files the host wrote itself: a session that changes such a file changes its
    /// ctime, which it cannot set back.
    pub(crate) fn allow_skill_file(&self, file: &std::fs::File) -> Result<()> {
        let meta = file.metadata().map_err(Error::Io)?;
        if !meta.is_file() {
            return Err(Error::Sandbox("not a regular file".into()));
        }
        let mut skills = self.skill_files.lock().unwrap_or_else(|p| p.into_inner());
        if skills.len() >= FILE_HASHES_MAX {
            skills.clear();
        }
        skills.insert(FileKey::of(&meta));
        Ok(())
    }

    fn existing_cell(&self, hash: &[u8; 32]) -> Option<CommandCell> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.cells.get(hash).cloned()
    }

    /// The cache cell for `key`, made (and older entries evicted) if absent.
    fn command_cell(&self, key: [u8; 32]) -> CommandCell {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cell) = cache.cells.get(&key) {
            return cell.clone();
        }
        let cap = self.wasm_run.cache_entries.max(1);
        while cache.order.len() >= cap {
            if let Some(old) = cache.order.pop_front() {
                cache.remove(&old);
            }
        }
        let cell = CommandCell::default();
        cache.cells.insert(key, cell.clone());
        cache.order.push_back(key);
        cell
    }

    /// Compiles into `cell` unless done or under way (then waits for it).
    fn command_in(
        &self,
        key: [u8; 32],
        cell: &CommandCell,
        wasm: &[u8],
    ) -> Result<CommandComponent> {
        let result = cell.get_or_init(|| {
            // A panic would leave the cell empty and its waiters blocked forever.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.compile_command(wasm)
            })) {
                Ok(Ok(command)) => {
                    self.account(key, command.compiled_bytes);
                    Ok(command)
                }
                Ok(Err(Error::InvalidComponent(e))) => Err(CellError::Invalid(format!("{e:#}"))),
                Ok(Err(Error::CompileLimit(msg))) => Err(CellError::Limit(msg)),
                Ok(Err(Error::Sandbox(msg))) => Err(CellError::Other(msg)),
                Ok(Err(e)) => Err(CellError::Other(e.to_string())),
                Err(_) => Err(CellError::Other("the compilation panicked".into())),
            }
        });
        if matches!(result, Err(CellError::Other(_))) {
            // Not kept: such a failure may be transient (all compile slots busy, a
            // timeout under load), and the same bytes may be tried again. An invalid
            // component, or one whose compilation hit its memory or CPU limit, stays
            // refused (bounded by `cache_entries`): a session re-running a compile bomb
            // must not cost the worker a minute of CPU each time.
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.cells.get(&key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
                cache.remove(&key);
                cache.order.retain(|k| *k != key);
            }
        }
        cell_result(result)
    }

    /// Records an entry's compiled size and evicts the oldest finished entries
    /// while the total is over `wasm_run.cache_max_bytes`.
    fn account(&self, key: [u8; 32], bytes: u64) {
        let cap = self.wasm_run.cache_max_bytes;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.cells.contains_key(&key) {
            return;
        }
        if cache.sizes.insert(key, bytes).is_none() {
            cache.total = cache.total.saturating_add(bytes);
        }
        while cache.total > cap {
            let Some(pos) = cache
                .order
                .iter()
                .position(|k| *k != key && cache.sizes.contains_key(k))
            else {
                break;
            };
            if let Some(old) = cache.order.remove(pos) {
                cache.remove(&old);
            }
        }
    }

    /// Compiles in the bounded helper process (see [`crate::compile`]), through
    /// the disk cache when there is one.
    fn compile_command(&self, wasm: &[u8]) -> Result<CommandComponent> {
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let inner = self;
        let compile = |wasm: &[u8]| inner.compiler.compile(wasm);
        let (component, compiled_bytes) = match inner.engine_config.cache_dir.dir() {
            Some(dir) => {
                let loaded = crate::cache::load_cached(
                    &inner.engine,
                    dir,
                    inner.engine_config.cache_max_bytes,
                    wasm,
                    "cmd",
                    compile,
                )?;
                (loaded.component, loaded.compiled_bytes)
            }
            None => {
                let bytes = compile(wasm)?;
                // SAFETY: `precompile_component` output of this engine's
                // configuration from our own helper, over a private pipe;
                // `deserialize` also checks the engine compatibility header.
                let component = unsafe { Component::deserialize(&inner.engine, &bytes) }
                    .map_err(Error::InvalidComponent)?;
                (component, bytes.len() as u64)
            }
        };
        let mut command = self.command_pre(&component)?;
        command.compiled_bytes = compiled_bytes;
        tracing::debug!(
            bytes = wasm.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "command component ready"
        );
        Ok(command)
    }

    /// Runs a command component in a fresh store with the same preopens.
    pub(crate) fn run(
        &self,
        command: &CommandComponent,
        preopens: &Arc<MountSet>,
        args: &[String],
        stdin: &[u8],
        deadline_ticks: u64,
        nn: WasiNnCtx,
    ) -> Result<CommandOutput> {
        use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
        const CAPTURE: usize = 16 << 20;
        let stdout = MemoryOutputPipe::new(CAPTURE);
        let stderr = MemoryOutputPipe::new(CAPTURE);
        let exit_code = self.run_with(
            command,
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
    pub(crate) fn run_with(
        &self,
        command: &CommandComponent,
        preopens: &Arc<MountSet>,
        nn: WasiNnCtx,
        configure: impl FnOnce(&mut wasmtime_wasi::WasiCtxBuilder) -> Result<()>,
        deadline: CommandDeadline,
    ) -> Result<i32> {
        let mut builder = crate::store::wasi_builder(preopens)?;
        configure(&mut builder)?;
        let mut store = self.stores.store(builder, preopens, nn);
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
        let command = command.pre.instantiate(&mut store).map_err(Error::Other)?;
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
}

/// `Err` of a shared compilation, as this crate's error.
fn cell_result(
    result: &std::result::Result<CommandComponent, CellError>,
) -> Result<CommandComponent> {
    result.clone().map_err(|e| match e {
        CellError::Invalid(msg) => Error::InvalidComponent(wasmtime::format_err!("{msg}")),
        CellError::Limit(msg) => Error::CompileLimit(msg),
        CellError::Other(msg) => Error::Sandbox(msg),
    })
}

fn too_large(len: u64, max: u64) -> Error {
    Error::Sandbox(format!(
        "component of {len} bytes exceeds the limit of {max}"
    ))
}
