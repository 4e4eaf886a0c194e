//! Runtime configuration: plain serde data, one table per concern.
//!
//! Every table rejects unknown keys, so a typo in `wasm-sandbox.toml` is an
//! error rather than a silently ignored setting.
//!
//! Durations and sizes follow the one unit convention of the config files
//! ([`wasm_sandbox_units`]): strings with their unit (`tool_timeout = "150s"`,
//! `memory = "256MiB"`), keys without a unit suffix, `"unlimited"` where a setting
//! has a documented "no cap". The Rust fields keep plain numbers whose unit is in the
//! field name (`tool_timeout_ms`, `memory_bytes`), so code building a configuration
//! never deals in strings; each field's doc names its file key.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Configuration of a [`Runtime`](crate::Runtime).
///
/// ```
/// let cfg: wasm_sandbox_runtime::RuntimeConfig = serde_json::from_str(
///     r#"{"engine": {"pooling": false}, "limits": {"memory": "256MiB", "tool_timeout": "2m"}}"#,
/// ).unwrap();
/// assert!(!cfg.engine.pooling);
/// assert_eq!(cfg.limits.memory_bytes, 256 << 20);
/// assert_eq!(cfg.limits.tool_timeout_ms, 120_000);
/// assert!(serde_json::from_str::<wasm_sandbox_runtime::RuntimeConfig>(r#"{"engin": {}}"#).is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Engine settings (allocation strategy, epoch ticks, compile cache).
    pub engine: EngineConfig,
    /// Per-session resource limits for components.
    pub limits: LimitsConfig,
    /// `[bash]`: the native sandbox bash runs in (bubblewrap, Landlock,
    /// seccomp, limits); see [`BashConfig`](wasm_sandbox_native::BashConfig).
    pub bash: wasm_sandbox_native::BashConfig,
    /// `[nn]`: the wasi-nn binding available to command components (local
    /// ONNX models, remote model endpoints by name); see
    /// [`NnConfig`](wasm_sandbox_hostcalls_nn::NnConfig). Default: no models.
    pub nn: wasm_sandbox_hostcalls_nn::NnConfig,
    /// `wasm-run`: WASI components started from bash (see [`WasmRunConfig`]).
    pub wasm_run: WasmRunConfig,
    /// Bash sandboxes started ahead of demand (see [`PoolConfig`]).
    pub pool: PoolConfig,
    /// `[networking]`: per-session network egress through a proxy, in the cloud
    /// environments' vocabulary (see
    /// [`NetworkingConfig`](wasm_sandbox_egress::NetworkingConfig)). Default
    /// `type = "none"`: no network (bash's private namespace, as before).
    pub networking: wasm_sandbox_egress::NetworkingConfig,
    /// `[shape]`: one session's CPU, memory, pids and disk budget, and whether a host
    /// that cannot enforce it may serve; see
    /// [`ShapeConfig`](wasm_sandbox_native::ShapeConfig). Default: 4 vCPUs, 4 GiB,
    /// best effort.
    pub shape: wasm_sandbox_native::ShapeConfig,
    /// `[persistence]`: the session's `/workspace` and `/mnt/session/outputs` saved between
    /// its work items (see
    /// [`PersistenceConfig`](wasm_sandbox_persist::PersistenceConfig)). Default: none (the
    /// workspace is removed at teardown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<wasm_sandbox_persist::PersistenceConfig>,
}

/// The `[pool]` table: bash sandboxes started before sessions need them, so a
/// new session's first bash call does not wait for bubblewrap, Landlock and
/// seccomp set-up, and that set-up does not compete with its first tool calls.
///
/// A pooled sandbox is started on two empty directories under `dir`; a new
/// session without memory stores and with the default environment takes one,
/// and its directories are renamed to the session's `workspace` and `outputs`
/// (the sandbox's mounts follow a rename). The sandbox has run nothing, so it
/// is as fresh as one started for the session. Sessions the pool cannot serve
/// (memory stores, an explicit env, a rename across filesystems) start their
/// own sandbox as before.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// How many started sandboxes to keep ready. Unset = 0 for an embedder;
    /// `wasm-sandbox serve` then uses `min(concurrency, 4)`.
    pub sandboxes: Option<usize>,
    /// Where pooled sandboxes' directories live; must be on the same mount
    /// as the session roots. `wasm-sandbox serve` defaults it to `<workdir>/sessions/.pool`.
    pub dir: Option<PathBuf>,
}

/// The `[wasm_run]` table: components that code in the bash sandbox runs with
/// `wasm-run COMPONENT.wasm ARGS…`, executed by this runtime's wasmtime with the
/// session's preopens (see the crate docs, "Components from bash").
///
/// Component bytes a session can name are hostile input to the compiler, so they
/// are compiled in a separate, resource-limited process (the `compile_*` keys;
/// the design is in the `compile` module of this crate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WasmRunConfig {
    /// Offer the `wasm-run` shim and socket in each bash sandbox (default true).
    pub enabled: bool,
    /// Largest component file `wasm-run` accepts from a session's directories
    /// (default 8 MiB). A skill component the worker installed and precompiled
    /// (unchanged since: same inode, size, mtime and ctime) is exempt and bounded
    /// by `max_skill_component_bytes` instead. File key `max_component_size = "8MiB"`.
    #[serde(rename = "max_component_size", with = "wasm_sandbox_units::size")]
    pub max_component_bytes: u64,
    /// Largest component of an installed skill that the worker precompiles when
    /// it installs the skill (default 64 MiB; a componentize-py component is
    /// ~19 MB). File key `max_skill_component_size = "64MiB"`.
    #[serde(rename = "max_skill_component_size", with = "wasm_sandbox_units::size")]
    pub max_skill_component_bytes: u64,
    /// Wall-clock cap on one run, in seconds (default 900). bash's own timeout
    /// normally ends a run first: the shim dies and the run is cancelled. File key
    /// `max_run_time = "15m"`.
    #[serde(rename = "max_run_time", with = "wasm_sandbox_units::duration_secs")]
    pub max_run_seconds: u64,
    /// Runs of one session executing at once; more wait (default 2). Bounds how
    /// much of the shared instance pool one session can take.
    pub max_concurrent_per_session: usize,
    /// Compiled components kept in memory, keyed by SHA-256 of their bytes
    /// (default 64). Compiled code only; with `engine.cache_dir` they also go to
    /// disk.
    pub cache_entries: usize,
    /// Total size of the compiled components kept in memory (default 512 MiB);
    /// the least recently compiled go first. File key `cache_max_size = "512MiB"`.
    #[serde(rename = "cache_max_size", with = "wasm_sandbox_units::size")]
    pub cache_max_bytes: u64,
    /// The component compiler helper (`wasm-sandbox-compile`, or any binary
    /// whose `main` calls `run_as_compiler_if_invoked`). Unset: `$WASM_SANDBOX_COMPILE`,
    /// else the current executable when its `main` called
    /// `run_as_compiler_if_invoked`, else `wasm-sandbox-compile` next to it. Without
    /// one, `wasm-run` fails closed (nothing is compiled inside the worker).
    pub compiler_path: Option<PathBuf>,
    /// Address-space limit (`RLIMIT_AS`) of one compiler process, in bytes
    /// (default 2 GiB; the 18.6 MB componentize-py example compiles within 1 GiB,
    /// peaking at ~350 MiB resident). File key `compile_memory = "2GiB"`.
    #[serde(rename = "compile_memory", with = "wasm_sandbox_units::size")]
    pub compile_memory_bytes: u64,
    /// CPU-time limit (`RLIMIT_CPU`) of one compiler process, all threads together,
    /// in seconds (default 60; the componentize-py example takes ~12 s). File key
    /// `compile_cpu_time = "60s"`.
    #[serde(
        rename = "compile_cpu_time",
        with = "wasm_sandbox_units::duration_secs"
    )]
    pub compile_cpu_seconds: u64,
    /// Wall-clock limit of one compilation, in seconds (default 60); the compiler
    /// is killed past it. File key `compile_timeout = "60s"`.
    #[serde(rename = "compile_timeout", with = "wasm_sandbox_units::duration_secs")]
    pub compile_timeout_seconds: u64,
    /// Compiler processes running at once, process-wide (default 2); more wait
    /// (at most `compile_timeout_seconds`).
    pub max_concurrent_compiles: usize,
    /// Largest compiled output accepted from the compiler, in bytes (default
    /// 512 MiB). File key `max_compiled_size = "512MiB"`.
    #[serde(rename = "max_compiled_size", with = "wasm_sandbox_units::size")]
    pub max_compiled_bytes: u64,
}

impl Default for WasmRunConfig {
    fn default() -> Self {
        WasmRunConfig {
            enabled: true,
            max_component_bytes: 8 << 20,
            max_skill_component_bytes: 64 << 20,
            max_run_seconds: 900,
            max_concurrent_per_session: 2,
            cache_entries: 64,
            cache_max_bytes: 512 << 20,
            compiler_path: None,
            compile_memory_bytes: 2 << 30,
            compile_cpu_seconds: 60,
            compile_timeout_seconds: 60,
            max_concurrent_compiles: 2,
            max_compiled_bytes: 512 << 20,
        }
    }
}

/// `[engine]`: how the wasmtime `Engine` is built (once per process).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Use the pooling instance allocator (default `true`): instance memory,
    /// tables and fiber stacks come from pre-reserved slots, which makes
    /// instantiation a few microseconds cheaper and bounds the total.
    pub pooling: bool,
    /// Pool size: the most component instances alive at once (default 1000,
    /// i.e. 1000 concurrent sessions). Ignored without pooling.
    pub max_instances: u32,
    /// Epoch tick in milliseconds (default 10). Deadlines are counted in
    /// ticks, so this is the granularity of tool timeouts. File key
    /// `epoch_tick = "10ms"`.
    #[serde(rename = "epoch_tick", with = "wasm_sandbox_units::duration_ms")]
    pub epoch_tick_ms: u64,
    /// Where compiled components (`.cwasm` files) are cached on disk. Files are keyed by
    /// the component's SHA-256, the engine's compatibility hash (wasmtime version and
    /// settings) and this crate's version; the directory must be writable only by the
    /// worker's user because cached code is loaded without re-validation (it is created
    /// 0700). In the file: a path, `"off"`, or unset ([`CacheDir::Default`]: the commands
    /// use [`default_cache_dir`], a [`Runtime`](crate::Runtime) built in code caches
    /// nothing).
    pub cache_dir: CacheDir,
    /// Total size of the `.cwasm` files in `cache_dir` (default 256 MiB): past it
    /// the least recently used files are removed (after each new file and at
    /// start-up, which also removes temp files left by a crash). File key
    /// `cache_max_size = "256MiB"`.
    #[serde(rename = "cache_max_size", with = "wasm_sandbox_units::size")]
    pub cache_max_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pooling: true,
            max_instances: 1000,
            epoch_tick_ms: 10,
            cache_dir: CacheDir::Default,
            cache_max_bytes: 256 << 20,
        }
    }
}

/// `engine.cache_dir`: the on-disk compile cache.
///
/// Written in a file as a path, `"off"`, or left out. Leaving it out is not the same as
/// `"off"`: the `wasm-sandbox` commands turn [`CacheDir::Default`] into
/// [`default_cache_dir`] (the cache is on by default for them: start-up then loads the
/// file-tools component in milliseconds instead of compiling it for seconds), while a
/// [`Runtime`](crate::Runtime) built from code resolves it to no cache, so an embedder's
/// process never writes to the disk unasked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CacheDir {
    /// Not configured (see the type docs).
    #[default]
    Default,
    /// No on-disk cache: compile at every start.
    Off,
    /// This directory.
    Dir(PathBuf),
}

impl CacheDir {
    /// The directory to use, if any ([`CacheDir::Default`] is none here; the commands
    /// resolve it first with [`CacheDir::or_default_dir`]).
    pub fn dir(&self) -> Option<&std::path::Path> {
        match self {
            CacheDir::Dir(d) => Some(d),
            CacheDir::Default | CacheDir::Off => None,
        }
    }

    /// [`CacheDir::Default`] replaced by [`default_cache_dir`], created (0700) if missing.
    /// When there is no such directory or it cannot be created (a read-only home in a
    /// container), `Off` with a warning: a cache that is on by default must never stop a
    /// start. An explicit directory is left to fail loudly where it is used.
    pub fn or_default_dir(self) -> CacheDir {
        use std::os::unix::fs::DirBuilderExt;
        match self {
            CacheDir::Default => match default_cache_dir() {
                Some(dir) => match std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                {
                    Ok(()) if private_dir(&dir) => CacheDir::Dir(dir),
                    Ok(()) => {
                        tracing::warn!(dir = %dir.display(),
                            "compile cache off: its default directory (or its parent) is not owned by this user or is writable by others, and cached code is loaded without re-validation");
                        CacheDir::Off
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e,
                            "compile cache off: cannot create its default directory (set [runtime.engine] cache_dir)");
                        CacheDir::Off
                    }
                },
                None => CacheDir::Off,
            },
            other => other,
        }
    }
}

impl Serialize for CacheDir {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CacheDir::Default => s.serialize_none(),
            CacheDir::Off => s.serialize_str("off"),
            CacheDir::Dir(d) => d.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for CacheDir {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CacheDir, D::Error> {
        // `null` (JSON of `Default`, e.g. the compile helper's job) is `Default`.
        let Some(path) = Option::<PathBuf>::deserialize(d)? else {
            return Ok(CacheDir::Default);
        };
        Ok(if path.as_os_str() == "off" {
            CacheDir::Off
        } else if path.as_os_str().is_empty() {
            return Err(serde::de::Error::custom(
                "an empty path: give a directory, or \"off\"",
            ));
        } else {
            CacheDir::Dir(path)
        })
    }
}

/// Whether `dir` itself is a directory owned by this process's user and writable by no one
/// else (not through a link). The check applied to an explicitly configured cache directory,
/// whose parent the operator chose (a Kubernetes `emptyDir` is mode 0777).
pub(crate) fn owned_private_dir(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0)
}

/// Whether `dir` and its parent are owned by this process's user and writable by no one
/// else. A cache directory someone else can write into (or swap, through the parent) would
/// let them plant compiled code that the worker loads and runs without re-validation; a
/// default location that fails this is not used.
///
/// A sticky parent writable by others (`/tmp`, mode 1777) is accepted: there only the owner
/// may rename or remove `dir`.
pub(crate) fn private_dir(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let meta = |p: &std::path::Path| std::fs::symlink_metadata(p).ok().filter(|m| m.is_dir());
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let own = owned_private_dir(dir);
    let parent_ok = dir.parent().is_none_or(|p| {
        meta(p).is_some_and(|m| {
            (m.uid() == uid || m.uid() == 0) && (m.mode() & 0o022 == 0 || m.mode() & 0o1000 != 0)
        })
    });
    own && parent_ok
}

/// The compile cache of the `wasm-sandbox` commands when `engine.cache_dir` is not set:
/// `$CACHE_DIRECTORY/compile` (systemd's `CacheDirectory=`), else
/// `/var/cache/wasm-sandbox/compile` when running as root, else
/// `$XDG_CACHE_HOME/wasm-sandbox/compile`, else `$HOME/.cache/wasm-sandbox/compile`.
/// `None` when none applies. Relative values of
/// the variables are ignored (a cache of executable code must not depend on the current
/// directory).
pub fn default_cache_dir() -> Option<PathBuf> {
    let abs = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = std::env::var_os("CACHE_DIRECTORY") {
        // systemd may list several, separated by ':'; the first is ours.
        let first = dir.to_string_lossy().split(':').next().map(PathBuf::from);
        if let Some(d) = first.filter(|p| p.is_absolute()) {
            return Some(d.join("compile"));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/cache/wasm-sandbox/compile"));
    }
    if let Some(d) = abs("XDG_CACHE_HOME") {
        return Some(d.join("wasm-sandbox").join("compile"));
    }
    abs("HOME").map(|h| h.join(".cache").join("wasm-sandbox").join("compile"))
}

/// `[limits]`: what one session's component may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Linear memory per component instance in bytes (default 256 MiB). A
    /// 20 MiB PDF read needs ~60 MiB (file, base64, JSON). File key
    /// `memory = "256MiB"`.
    #[serde(rename = "memory", with = "wasm_sandbox_units::size")]
    pub memory_bytes: u64,
    /// Outer deadline for one file-tool call in milliseconds (default
    /// 150,000, the reference runner's `TOOL_TIMEOUT`). Past it the call
    /// returns `tool '<name>' timed out` and the instance is replaced. File key
    /// `tool_timeout = "150s"`.
    #[serde(rename = "tool_timeout", with = "wasm_sandbox_units::duration_ms")]
    pub tool_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            memory_bytes: 256 << 20,
            tool_timeout_ms: 150_000,
        }
    }
}

/// A per-session size cap, as the reference's `max_*_bytes` settings: unset
/// takes the default, `Unlimited` is the reference's `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cap {
    /// The reference default.
    #[default]
    Default,
    /// No cap.
    Unlimited,
    /// A positive number of bytes.
    Bytes(u64),
}

impl Cap {
    /// Parses the CLI/config spelling: `default`, `none`/`unlimited`, a positive
    /// byte count, or a size with its unit (`5MiB`, as in the config files).
    pub fn parse(s: &str) -> Result<Cap, String> {
        match s {
            "default" => Ok(Cap::Default),
            "none" | "unlimited" => Ok(Cap::Unlimited),
            n => match n
                .parse::<u64>()
                .or_else(|_| wasm_sandbox_units::parse_size(n))
            {
                Ok(0) | Err(_) => Err(format!(
                    "expected a positive byte count (`262144`, `5MiB`), `none` or `default`, got {n:?}"
                )),
                Ok(v) => Ok(Cap::Bytes(v)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cache_dir`: a path, `"off"`, or unset (`Default`, which only the commands turn into
    /// a location); JSON `null` (the compile helper's job) reads back as `Default`.
    #[test]
    fn cache_dir_is_a_path_off_or_unset() {
        let e: EngineConfig = toml::from_str("cache_dir = \"off\"\n").unwrap();
        assert_eq!(e.cache_dir, CacheDir::Off);
        let e: EngineConfig = toml::from_str("cache_dir = \"/c\"\n").unwrap();
        assert_eq!(e.cache_dir, CacheDir::Dir("/c".into()));
        assert_eq!(e.cache_dir.dir(), Some(std::path::Path::new("/c")));
        let e: EngineConfig = toml::from_str("").unwrap();
        assert_eq!(e.cache_dir, CacheDir::Default);
        assert_eq!(
            e.cache_dir.dir(),
            None,
            "a Runtime built in code caches nothing"
        );
        assert!(toml::from_str::<EngineConfig>("cache_dir = \"\"\n").is_err());
        let json = serde_json::to_string(&EngineConfig::default()).unwrap();
        let back: EngineConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back.cache_dir, CacheDir::Default);
        let off = toml::to_string(&EngineConfig {
            cache_dir: CacheDir::Off,
            ..EngineConfig::default()
        })
        .unwrap();
        assert!(off.contains("cache_dir = \"off\""), "{off}");
    }

    /// A cache directory others can write into (or whose parent they can) is refused: its
    /// code would be loaded without re-validation.
    #[test]
    fn a_shared_cache_directory_is_not_private() {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let dir = top.path().join("compile");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(private_dir(&dir));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!private_dir(&dir), "world-writable");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!private_dir(&dir), "world-writable parent");
        assert!(
            owned_private_dir(&dir),
            "an explicit directory is judged by itself (an emptyDir parent is 0777)"
        );
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            private_dir(&dir),
            "a sticky parent (like /tmp) cannot swap it"
        );
        assert!(!private_dir(&top.path().join("missing")));
    }

    #[test]
    fn cap_takes_counts_sizes_and_unlimited() {
        assert_eq!(Cap::parse("262144"), Ok(Cap::Bytes(262_144)));
        assert_eq!(Cap::parse("5MiB"), Ok(Cap::Bytes(5 << 20)));
        assert_eq!(Cap::parse("unlimited"), Ok(Cap::Unlimited));
        assert_eq!(Cap::parse("default"), Ok(Cap::Default));
        assert!(Cap::parse("0").is_err() && Cap::parse("0B").is_err());
        assert!(Cap::parse("lots").is_err());
    }

    /// Every duration and size key of the file is a string with its unit; the unit-suffixed
    /// keys of before are unknown keys now.
    #[test]
    fn file_keys_take_units_and_old_keys_fail() {
        let c: RuntimeConfig = toml::from_str(
            "[engine]\nepoch_tick = \"5ms\"\ncache_max_size = \"1GiB\"\n\
             [limits]\nmemory = \"512MiB\"\ntool_timeout = \"30s\"\n\
             [wasm_run]\nmax_component_size = \"16MiB\"\nmax_run_time = \"5m\"\n\
             compile_memory = \"1GiB\"\ncompile_timeout = \"90s\"\ncompile_cpu_time = \"30s\"\n\
             [bash]\nmemory_limit = \"unlimited\"\n",
        )
        .unwrap();
        assert_eq!(c.engine.epoch_tick_ms, 5);
        assert_eq!(c.engine.cache_max_bytes, 1 << 30);
        assert_eq!(c.limits.memory_bytes, 512 << 20);
        assert_eq!(c.limits.tool_timeout_ms, 30_000);
        assert_eq!(c.wasm_run.max_component_bytes, 16 << 20);
        assert_eq!(c.wasm_run.max_run_seconds, 300);
        assert_eq!(c.wasm_run.compile_memory_bytes, 1 << 30);
        assert_eq!(c.wasm_run.compile_timeout_seconds, 90);
        assert_eq!(c.wasm_run.compile_cpu_seconds, 30);
        assert_eq!(c.bash.memory_limit_bytes, None);
        // What `config check` prints reads back as the same configuration.
        let back: RuntimeConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            toml::from_str::<RuntimeConfig>(&toml::to_string(&RuntimeConfig::default()).unwrap())
                .unwrap(),
            RuntimeConfig::default()
        );
        for old in [
            "[limits]\ntool_timeout_ms = 1000\n",
            "[limits]\nmemory_bytes = 1\n",
            "[engine]\nepoch_tick_ms = 10\n",
            "[wasm_run]\ncompile_timeout_seconds = 60\n",
            "[limits]\nmemory = 268435456\n",
        ] {
            assert!(toml::from_str::<RuntimeConfig>(old).is_err(), "{old}");
        }
    }
}
