//! The process-wide [`Runtime`]: one wasmtime `Engine`, one `Linker`, and the
//! file-tools component compiled exactly once and kept as an `InstancePre`.

use crate::config::RuntimeConfig;
use crate::file_tools::{self, SessionState, ToolsPre};
use crate::session::{Session, SessionSpec};
use crate::{Error, Result};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// `[networking]`, compiled; `None` for `type = "none"` (see [`crate::egress`]).
    pub(crate) egress: Option<Arc<wasm_sandbox_egress::Egress>>,
    compilations: AtomicU64,
    command_compilations: AtomicU64,
    /// Command components by SHA-256 of their bytes (see [`Runtime::command_by_content`]).
    commands: Mutex<CommandCache>,
    /// File identity → content hash, so a file run again is not re-read and re-hashed
    /// (see [`Runtime::command_for_file`]).
    file_hashes: Mutex<HashMap<FileKey, [u8; 32]>>,
    /// Identities of skill files the worker installed (see [`Runtime::allow_skill_file`]).
    skill_files: Mutex<std::collections::HashSet<FileKey>>,
    /// Private directory for the sessions' `wasm-run` sockets, made on first use,
    /// with the lock file that marks it as in use (see [`sweep_bridge_dirs`]).
    bridge_dir: OnceLock<std::result::Result<(PathBuf, std::fs::File), String>>,
    /// Compiles command components in a bounded helper process (see [`crate::compile`]).
    compiler: crate::compile::Compiler,
    /// Started bash sandboxes waiting for a session (see [`crate::PoolConfig`]).
    pool: Mutex<Vec<Pooled>>,
    /// 1 while a task is filling the pool.
    pool_starting: std::sync::atomic::AtomicUsize,
    pool_names: AtomicU64,
}

/// A bash sandbox started ahead of demand, on `<pool dir>/<name>/{workspace,outputs}`.
pub(crate) struct Pooled {
    pub dir: PathBuf,
    pub bash: wasm_sandbox_native::BashSession,
    pub bridge: Option<crate::wasm_run::Bridge>,
    /// The sandbox's egress directory (networking on): the session's proxy starts
    /// in it on adoption.
    pub egress: Option<crate::egress::EgressDir>,
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

/// Prefix of the bridge directories' names: `wasm-sandbox-run-<pid>-<nanos>`.
const BRIDGE_DIR_PREFIX: &str = "wasm-sandbox-run-";

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

/// Most file identities remembered by [`Runtime::command_for_file`].
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

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        // Pooled shells die with their `BashSession`s; their directories go too.
        let pooled = std::mem::take(self.pool.get_mut().unwrap_or_else(|p| p.into_inner()));
        for p in pooled {
            let dir = p.dir.clone();
            drop(p);
            let _ = wasm_sandbox_fs::tree::remove_tree(&dir);
        }
        if let Some(Ok((dir, _lock))) = self.bridge_dir.get() {
            let _ = wasm_sandbox_fs::tree::remove_tree(dir);
        }
    }
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
        sweep_bridge_dirs(&bridge_base());
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
        let engine = build_engine(&config)?;
        let compilations = AtomicU64::new(0);
        let component = load_component(&engine, &config, FILE_TOOLS_COMPONENT, &compilations)?;
        let mut linker: Linker<SessionState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(Error::Other)?;
        file_tools::add_to_linker(&mut linker).map_err(Error::Other)?;
        wasm_sandbox_hostcalls_nn::add_to_linker(&mut linker, SessionState::nn_view)
            .map_err(Error::Other)?;
        // `[[nn.remote]] upstream = "<name>"` entries take their URL and headers from
        // `[[networking.upstreams]]` (one definition of an endpoint).
        let nn = NnHost::new(crate::egress::resolve_nn(&config)?)
            .map_err(|e| Error::Config(format!("[nn]: {e}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(Error::InvalidComponent)?;
        let tools_pre = ToolsPre::new(pre).map_err(Error::InvalidComponent)?;
        spawn_epoch_ticker(&engine, config.engine.epoch_tick_ms)?;
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
        let compiler = crate::compile::Compiler::new(&config);
        let egress = crate::egress::build(&config)?;
        let runtime = Runtime {
            inner: Arc::new(RuntimeInner {
                compiler,
                engine,
                tools_pre,
                linker,
                config,
                bash,
                nn,
                egress,
                compilations,
                command_compilations: AtomicU64::new(0),
                commands: Mutex::default(),
                file_hashes: Mutex::default(),
                skill_files: Mutex::default(),
                pool: Mutex::default(),
                pool_starting: std::sync::atomic::AtomicUsize::new(0),
                pool_names: AtomicU64::new(0),
                bridge_dir: OnceLock::new(),
            }),
        };
        runtime.fill_pool();
        Ok(runtime)
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
    ///
    /// This compiles **in this process**, without limits: only for bytes the
    /// embedder trusts (its own components). Bytes a session could have written go
    /// through [`Runtime::command_by_content`] or [`Runtime::command_for_file`],
    /// which compile in the bounded helper process.
    pub fn load_command(&self, wasm: &[u8]) -> Result<CommandComponent> {
        self.inner
            .command_compilations
            .fetch_add(1, Ordering::Relaxed);
        let component =
            Component::new(&self.inner.engine, wasm).map_err(Error::InvalidComponent)?;
        self.command_pre(&component)
    }

    /// Links a compiled `wasi:cli/command` component against this runtime's linker.
    fn command_pre(&self, component: &Component) -> Result<CommandComponent> {
        let pre = self
            .inner
            .linker
            .instantiate_pre(component)
            .map_err(Error::InvalidComponent)?;
        let pre = CommandPre::new(pre).map_err(Error::InvalidComponent)?;
        Ok(CommandComponent {
            pre,
            compiled_bytes: 0,
        })
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
        use sha2::Digest;
        let max = self.inner.config.wasm_run.max_skill_component_bytes;
        if wasm.len() as u64 > max {
            return Err(too_large(wasm.len() as u64, max));
        }
        let key: [u8; 32] = sha2::Sha256::digest(wasm).into();
        self.command_in(key, &self.command_cell(key), wasm)
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
        use sha2::Digest;
        use std::io::Read;
        let meta = file.metadata().map_err(Error::Io)?;
        if !meta.is_file() {
            return Err(Error::Sandbox("not a regular file".into()));
        }
        let id = FileKey::of(&meta);
        let skill = self
            .inner
            .skill_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id);
        let max_bytes = if skill {
            max_bytes.max(self.inner.config.wasm_run.max_skill_component_bytes)
        } else {
            max_bytes
        };
        let known = self
            .inner
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
            let mut ids = self
                .inner
                .file_hashes
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if ids.len() >= FILE_HASHES_MAX {
                ids.clear();
            }
            ids.insert(id, hash);
        }
        self.command_in(hash, &cell, &wasm)
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
        let meta = file.metadata().map_err(Error::Io)?;
        if !meta.is_file() {
            return Err(Error::Sandbox("not a regular file".into()));
        }
        let mut skills = self
            .inner
            .skill_files
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if skills.len() >= FILE_HASHES_MAX {
            skills.clear();
        }
        skills.insert(FileKey::of(&meta));
        Ok(())
    }

    fn existing_cell(&self, hash: &[u8; 32]) -> Option<CommandCell> {
        let cache = self
            .inner
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache.cells.get(hash).cloned()
    }

    /// The cache cell for `key`, made (and older entries evicted) if absent.
    fn command_cell(&self, key: [u8; 32]) -> CommandCell {
        let mut cache = self
            .inner
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(cell) = cache.cells.get(&key) {
            return cell.clone();
        }
        let cap = self.inner.config.wasm_run.cache_entries.max(1);
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
            let mut cache = self
                .inner
                .commands
                .lock()
                .unwrap_or_else(|p| p.into_inner());
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
        let cap = self.inner.config.wasm_run.cache_max_bytes;
        let mut cache = self
            .inner
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner());
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
        self.inner
            .command_compilations
            .fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let inner = &self.inner;
        let compile = |wasm: &[u8]| inner.compiler.compile(wasm);
        let (component, compiled_bytes) = match inner.config.engine.cache_dir.dir() {
            Some(dir) => {
                let loaded = crate::cache::load_cached(
                    &inner.engine,
                    dir,
                    inner.config.engine.cache_max_bytes,
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

    /// The private directory holding the sessions' bridge sockets (0700, made
    /// once, removed with the runtime; under `/dev/shm` when present, else the
    /// temp dir). Short on purpose: a unix socket path must fit in 108 bytes.
    ///
    /// Its `lock` file is `flock`ed for the runtime's life, which is how a later
    /// process knows the directory is still in use (see [`sweep_bridge_dirs`]).
    pub(crate) fn bridge_dir(&self) -> Result<PathBuf> {
        self.inner
            .bridge_dir
            .get_or_init(|| {
                use std::os::unix::fs::DirBuilderExt;
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                let dir = bridge_base().join(format!(
                    "{BRIDGE_DIR_PREFIX}{}-{nanos:08x}",
                    std::process::id()
                ));
                // `create` (not recursive) fails if the name exists: nobody can
                // pre-plant the directory.
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .and_then(|()| {
                        let lock = std::fs::File::create_new(dir.join("lock"))?;
                        lock_exclusive(&lock, false)?;
                        Ok((dir, lock))
                    })
                    .map_err(|e| format!("cannot create the wasm-run socket directory: {e}"))
            })
            .as_ref()
            .map(|(dir, _)| dir.clone())
            .map_err(|e| Error::Sandbox(e.clone()))
    }

    /// Starts pooled bash sandboxes in the background, one after another, until
    /// `pool.sandboxes` are ready (see [`crate::PoolConfig`]). Called at start-up and
    /// whenever a session takes one; a no-op without a tokio runtime, without a
    /// pool directory or without a usable bash sandbox.
    pub fn fill_pool(&self) {
        let inner = &self.inner;
        let want = inner.config.pool.sandboxes.unwrap_or(0);
        let Some(dir) = inner.config.pool.dir.clone() else {
            return;
        };
        let report = inner.bash.report();
        // Disk-capped sessions start their own sandbox (see `Session::new`).
        let disk_capped = report.disk_limit == wasm_sandbox_native::LimitMechanism::Filesystem;
        if want == 0 || !report.available || report.unsandboxed_fallback || disk_capped {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // One filler at a time: each sandbox start forks the worker, and a burst of
        // them (say at start-up, while the first sessions are claimed) would compete
        // with those sessions' first calls.
        if inner
            .pool_starting
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let runtime = self.clone();
        handle.spawn(async move {
            loop {
                let ready = runtime
                    .inner
                    .pool
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .len();
                if ready >= want {
                    break;
                }
                if let Err(e) = runtime.start_pooled(&dir).await {
                    tracing::warn!(error = %e, "could not start a pooled bash sandbox");
                    runtime.inner.pool_starting.store(0, Ordering::Release);
                    return;
                }
            }
            runtime.inner.pool_starting.store(0, Ordering::Release);
            // A session may have taken one between the last check and the store.
            let ready = runtime
                .inner
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len();
            if ready < want {
                runtime.fill_pool();
            }
        });
    }

    async fn start_pooled(&self, dir: &std::path::Path) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let n = self.inner.pool_names.fetch_add(1, Ordering::Relaxed);
        let name = format!("p{}-{n}", std::process::id());
        let root = dir.join(&name);
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for sub in ["workspace", "outputs"] {
            builder.create(root.join(sub)).map_err(Error::Io)?;
        }
        let bridge = crate::wasm_run::Bridge::bind(self)?;
        let egress = crate::egress::EgressDir::create(self)?;
        let spec = wasm_sandbox_native::BashSessionSpec {
            session_id: format!("pool-{name}"),
            workspace: root.join("workspace"),
            outputs: root.join("outputs"),
            memory_stores: Vec::new(),
            env: None,
            wasm_run_socket: bridge.as_ref().map(|b| b.socket().to_path_buf()),
            egress_dir: egress.as_ref().map(|e| e.path().to_path_buf()),
        };
        let mut bash = wasm_sandbox_native::BashSession::new(self.inner.bash.clone(), spec);
        if let Err(e) = bash.prestart().await {
            let _ = wasm_sandbox_fs::tree::remove_tree(&root);
            return Err(Error::Sandbox(e.to_string()));
        }
        self.inner
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pooled {
                dir: root,
                bash,
                bridge,
                egress,
            });
        Ok(())
    }

    /// Takes a ready pooled sandbox whose shell is still running, if any.
    pub(crate) fn take_pooled(&self) -> Option<Pooled> {
        let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(p) = pool.pop() {
            if p.bash.is_running() {
                return Some(p);
            }
            let _ = wasm_sandbox_fs::tree::remove_tree(&p.dir);
        }
        None
    }

    /// How many started sandboxes are waiting in the pool.
    pub fn pooled_sandboxes(&self) -> usize {
        self.inner
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
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
        self.inner.command_compilations.load(Ordering::Relaxed)
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
    /// Size of the compiled form (for the in-memory cache's byte cap).
    pub(crate) compiled_bytes: u64,
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

fn load_component(
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

/// Where bridge directories go: tmpfs when there is one (a socket is an inode
/// created and removed per session, which costs ~100 µs each on a busy disk and
/// ~5 µs there), else the temp dir.
fn bridge_base() -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// `flock(LOCK_EX)`, without waiting when `nonblocking`.
fn lock_exclusive(file: &std::fs::File, nonblocking: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let op = if nonblocking {
        libc::LOCK_EX | libc::LOCK_NB
    } else {
        libc::LOCK_EX
    };
    // SAFETY: an open descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes the bridge directories under `base` that a runtime left behind when
/// its process died (a crash or `SIGKILL` skips `Drop`): those named
/// `wasm-sandbox-run-<pid>-…`, owned by this user, not links, whose `<pid>` is not
/// a live process **and** whose `lock` is not held. The pid check covers the
/// moment between a directory's creation and its lock; the lock covers a pid that
/// is dead here but alive elsewhere (another pid namespace sharing `/dev/shm`). A
/// reused pid only delays the sweep. Returns how many were removed.
pub(crate) fn sweep_bridge_dirs(base: &std::path::Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(BRIDGE_DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let free = match std::fs::File::open(dir.join("lock")) {
            Ok(lock) => lock_exclusive(&lock, true).is_ok(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if free && std::fs::remove_dir_all(&dir).is_ok() {
            tracing::info!(dir = %dir.display(), "removed a stale wasm-run bridge directory");
            removed += 1;
        }
    }
    removed
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_abandoned_bridge_dirs_of_this_product() {
        let base = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let make = |name: &str, lock: bool| {
            let d = base.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("0.sock"), "").unwrap();
            if lock {
                std::fs::write(d.join("lock"), "").unwrap();
            }
            d
        };
        let abandoned = make(&format!("{BRIDGE_DIR_PREFIX}{dead}-0a"), true);
        let old_style = make(&format!("{BRIDGE_DIR_PREFIX}{dead}-0b"), false);
        let locked = make(&format!("{BRIDGE_DIR_PREFIX}{dead}-0c"), true);
        let alive = make(
            &format!("{BRIDGE_DIR_PREFIX}{}-0d", std::process::id()),
            true,
        );
        let foreign = make(&format!("other-{dead}-0e"), false);
        let file = base.path().join(format!("{BRIDGE_DIR_PREFIX}{dead}-0f"));
        std::fs::write(&file, "").unwrap();
        let link = base.path().join(format!("{BRIDGE_DIR_PREFIX}{dead}-0g"));
        std::os::unix::fs::symlink(&foreign, &link).unwrap();
        let held = std::fs::File::open(locked.join("lock")).unwrap();
        lock_exclusive(&held, false).unwrap();

        assert_eq!(sweep_bridge_dirs(base.path()), 2);
        assert!(!abandoned.exists() && !old_style.exists());
        assert!(locked.exists() && alive.exists() && foreign.exists());
        assert!(file.exists() && link.symlink_metadata().is_ok());
        assert!(foreign.join("0.sock").exists(), "a link is not followed");
        drop(held);
        assert_eq!(sweep_bridge_dirs(base.path()), 1, "once its lock is free");
        assert!(!locked.exists());
    }
}
