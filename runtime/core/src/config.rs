//! Runtime configuration: plain serde data, one table per concern.
//!
//! Every table rejects unknown keys, so a typo in `wasm-sandbox.toml` is an
//! error rather than a silently ignored setting.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Configuration of a [`Runtime`](crate::Runtime).
///
/// ```
/// let cfg: wasm_sandbox_runtime::RuntimeConfig = serde_json::from_str(
///     r#"{"engine": {"pooling": false}, "limits": {"memory_bytes": 268435456}}"#,
/// ).unwrap();
/// assert!(!cfg.engine.pooling);
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
    /// Where pooled sandboxes' directories live; must be on the same filesystem
    /// as the session roots. `wasm-sandbox serve` defaults it to `<workdir>/pool`.
    pub dir: Option<PathBuf>,
}

/// The `[wasm_run]` table: components that code in the bash sandbox runs with
/// `wasm-run COMPONENT.wasm ARGS…`, executed by this runtime's wasmtime with the
/// session's preopens (see the crate docs, "Components from bash").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WasmRunConfig {
    /// Offer the `wasm-run` shim and socket in each bash sandbox (default true).
    pub enabled: bool,
    /// Largest component file accepted (default 128 MiB).
    pub max_component_bytes: u64,
    /// Wall-clock cap on one run, in seconds (default 900). bash's own timeout
    /// normally ends a run first: the shim dies and the run is cancelled.
    pub max_run_seconds: u64,
    /// Runs of one session executing at once; more wait (default 2). Bounds how
    /// much of the shared instance pool one session can take.
    pub max_concurrent_per_session: usize,
    /// Compiled components kept in memory, keyed by SHA-256 of their bytes
    /// (default 64). Compiled code only; with `engine.cache_dir` they also go to
    /// disk.
    pub cache_entries: usize,
}

impl Default for WasmRunConfig {
    fn default() -> Self {
        WasmRunConfig {
            enabled: true,
            max_component_bytes: 128 << 20,
            max_run_seconds: 900,
            max_concurrent_per_session: 2,
            cache_entries: 64,
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
    /// ticks, so this is the granularity of tool timeouts.
    pub epoch_tick_ms: u64,
    /// Directory for compiled-component (`.cwasm`) cache files (default: none,
    /// compile at start-up). Files are keyed by the component's hash and the
    /// engine's compatibility hash; the directory must be writable only by the
    /// worker's user because cached code is loaded without re-validation.
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pooling: true,
            max_instances: 1000,
            epoch_tick_ms: 10,
            cache_dir: None,
        }
    }
}

/// `[limits]`: what one session's component may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Linear memory per component instance in bytes (default 256 MiB). A
    /// 20 MiB PDF read needs ~60 MiB (file, base64, JSON).
    pub memory_bytes: u64,
    /// Outer deadline for one file-tool call in milliseconds (default
    /// 150,000, the reference runner's `TOOL_TIMEOUT`). Past it the call
    /// returns `tool '<name>' timed out` and the instance is replaced.
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
    /// Parses the CLI/config spelling: `default`, `none`/`unlimited`, or a
    /// positive integer.
    pub fn parse(s: &str) -> Result<Cap, String> {
        match s {
            "default" => Ok(Cap::Default),
            "none" | "unlimited" => Ok(Cap::Unlimited),
            n => match n.parse::<u64>() {
                Ok(0) | Err(_) => Err(format!(
                    "expected a positive byte count, `none` or `default`, got {n:?}"
                )),
                Ok(v) => Ok(Cap::Bytes(v)),
            },
        }
    }

    /// Inserts the cap into a tool config object under `key` (absent for
    /// default, `null` for unlimited).
    pub(crate) fn write_to(self, obj: &mut serde_json::Map<String, serde_json::Value>, key: &str) {
        match self {
            Cap::Default => {}
            Cap::Unlimited => {
                obj.insert(key.to_string(), serde_json::Value::Null);
            }
            Cap::Bytes(n) => {
                obj.insert(key.to_string(), serde_json::Value::from(n));
            }
        }
    }
}
