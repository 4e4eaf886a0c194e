//! `wasm-sandbox serve`: flags, config file, logging, signals, and the `--local` demo.
//!
//! Flags follow the reference CLI `ant beta:worker poll` (`--environment-id`,
//! `--environment-key`/`ANTHROPIC_ENVIRONMENT_KEY`, `--workdir`, `--max-idle`, `--log-format`,
//! `--base-url`/`ANTHROPIC_BASE_URL`, `--worker-id`/`ANTHROPIC_WORKER_ID`) plus
//! `--concurrency`, `--config FILE` (TOML; unknown keys are an error), `--ops-listen`, `--local`.
//! Precedence: flag or environment variable, then the config file, then the default.
//!
//! Signals: the first SIGTERM/SIGINT drains (stop polling, finish running tool calls, tear down,
//! stop the items); a second forces (abort running calls, bounded final stops).
//!
//! Key hygiene: the environment key may come only from the flag or `ANTHROPIC_ENVIRONMENT_KEY`
//! (not from the config file, which tends to get committed and copied). Once read, the
//! variable is removed from the process environment ([`scrub_environment_key`]) so no child
//! process — bash above all — can inherit it; the value lives on only in a redacted
//! [`Secret`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::core_adapter::CoreProvider;
use crate::metrics::Metrics;
use crate::ops::{self, OpsState};
use crate::proto::{DEFAULT_BASE_URL, POLL_BLOCK_MS_MAX};
use crate::sandbox::SandboxProvider;
use crate::secret::Secret;
use crate::worker::{Shutdown, Worker, WorkerConfig, default_worker_id};

/// The environment variable holding the environment key.
pub const ENVIRONMENT_KEY_ENV: &str = "ANTHROPIC_ENVIRONMENT_KEY";

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

/// Parses a duration: `0` (disabled), bare seconds (`90`), or a Go/humantime duration (`60s`,
/// `1m30s`, `500ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(format!("invalid duration {s:?}"))
        };
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Flags of `wasm-sandbox serve`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Self-hosted environment to serve (`env_…`).
    #[arg(long, env = "ANTHROPIC_ENVIRONMENT_ID")]
    pub environment_id: Option<String>,
    /// Environment key (prefer the environment variable; it is removed from the process
    /// environment once read).
    #[arg(long, env = ENVIRONMENT_KEY_ENV, hide_env_values = true, value_parser = parse_secret)]
    pub environment_key: Option<Secret>,
    /// Working directory; each session gets `<workdir>/sessions/<work_id>.<claim>`; one worker
    /// per workdir (locked) [default: `$STATE_DIRECTORY`, else `/var/lib/wasm-sandbox` for root,
    /// else `$XDG_STATE_HOME/wasm-sandbox`, else `~/.local/state/wasm-sandbox`]
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Stop serving a session this long after its turn ends (`0` = never) [default: 60s]
    #[arg(long, value_parser = parse_duration)]
    pub max_idle: Option<Duration>,
    /// Log format (logs go to stderr) [default: text]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Sessions served at once, each in its own sandbox [default: 1]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// TOML config file (keys as the long flags with `_`, plus `[runtime]`); unknown keys are
    /// an error.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// API base URL [default: <https://api.anthropic.com>]
    #[arg(long, env = "ANTHROPIC_BASE_URL")]
    pub base_url: Option<String>,
    /// Address of the ops endpoints (/healthz, /readyz, /metrics, /queue); off when unset.
    #[arg(long)]
    pub ops_listen: Option<SocketAddr>,
    /// Worker id sent on polls [default: HOSTNAME-RANDOM]
    #[arg(long, env = "ANTHROPIC_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Run against an embedded fake control plane with a sample session from
    /// `examples/sessions/`, print each tool call and result, and exit. Needs no credentials.
    #[arg(long)]
    pub local: bool,
    /// Scenario file for `--local` [default: the first of examples/sessions/*.json]
    #[arg(long, requires = "local")]
    pub local_session: Option<PathBuf>,
    /// Resolve the flags, environment and config file as `serve` would, check them, print
    /// the settings in effect (never the key) and exit without starting anything. The
    /// environment id and key are not required.
    #[arg(long)]
    pub dry_run: bool,
    /// PEM file of extra CA certificates to trust for the API connection, added to the bundled
    /// roots (a TLS-intercepting corporate proxy, a private CA). `HTTPS_PROXY` is honoured.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

/// The `--config` file: one schema for every command that takes `--config` (`serve`,
/// `replay`, `config check`, `doctor`). The top-level keys are `serve`'s (the long flags with
/// `_`, plus `tool_timeout`, `block`, `reclaim_older_than`); `[runtime]` is the core
/// [`RuntimeConfig`](wasm_sandbox_runtime::RuntimeConfig), which `replay` uses alone (it
/// accepts and ignores the serve-only keys, so the deploy ConfigMap's file is valid for all).
///
/// Read in one typed pass ([`FileConfig::parse`]): every error names the line, column and
/// key path, inside `[runtime]` too. Durations and sizes are strings with units
/// ([`wasm_sandbox_units`]); unknown keys are an error, and a key renamed by the unit
/// convention is refused with its new name ([`RENAMED_KEYS`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--environment-id`.
    pub environment_id: Option<String>,
    /// `--workdir`.
    pub workdir: Option<PathBuf>,
    /// `--max-idle` (`"60s"`; `"0s"` = never).
    #[serde(default, with = "wasm_sandbox_units::option_duration")]
    pub max_idle: Option<Duration>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--concurrency`.
    pub concurrency: Option<usize>,
    /// `--base-url`.
    pub base_url: Option<String>,
    /// `--ops-listen`.
    pub ops_listen: Option<SocketAddr>,
    /// `--worker-id`.
    pub worker_id: Option<String>,
    /// Outer timeout of one tool call (default `"150s"`).
    #[serde(default, with = "wasm_sandbox_units::option_duration")]
    pub tool_timeout: Option<Duration>,
    /// Long-poll hold (`"1ms"`..=`"999ms"`, default `"999ms"`).
    #[serde(default, with = "wasm_sandbox_units::option_duration")]
    pub block: Option<Duration>,
    /// `reclaim_older_than_ms` sent on polls (server default `"5s"`).
    #[serde(default, with = "wasm_sandbox_units::option_duration")]
    pub reclaim_older_than: Option<Duration>,
    /// `[runtime]`: the core runtime's configuration (engine, limits, bash, nn, wasm_run,
    /// pool), typed here so its errors keep their line numbers.
    #[serde(default)]
    pub runtime: wasm_sandbox_runtime::RuntimeConfig,
    /// `--ca-cert` (a PEM file; relative paths are relative to the working directory).
    pub ca_cert: Option<PathBuf>,
    /// `[usage]`: the usage ledger (default `<workdir>/usage`) and the optional HTTP sink
    /// ([`crate::usage::UsageFileConfig`]).
    #[serde(default)]
    pub usage: crate::usage::UsageFileConfig,
}

/// Keys the unit convention renamed (old key, what to write instead). A file still using one
/// is refused with this hint rather than a bare "unknown field": silently ignoring it would
/// drop an operator's limit, and reading `5000` in a new unit could turn milliseconds into
/// seconds.
pub const RENAMED_KEYS: &[(&str, &str)] = &[
    ("block_ms", "block = \"999ms\""),
    ("reclaim_older_than_ms", "reclaim_older_than = \"5s\""),
    ("epoch_tick_ms", "epoch_tick = \"10ms\""),
    ("cache_max_bytes", "cache_max_size = \"256MiB\""),
    ("memory_bytes", "memory = \"256MiB\""),
    ("tool_timeout_ms", "tool_timeout = \"150s\""),
    ("max_component_bytes", "max_component_size = \"8MiB\""),
    (
        "max_skill_component_bytes",
        "max_skill_component_size = \"64MiB\"",
    ),
    ("max_run_seconds", "max_run_time = \"15m\""),
    ("compile_memory_bytes", "compile_memory = \"2GiB\""),
    ("compile_cpu_seconds", "compile_cpu_time = \"60s\""),
    ("compile_timeout_seconds", "compile_timeout = \"60s\""),
    ("max_compiled_bytes", "max_compiled_size = \"512MiB\""),
    (
        "memory_limit_bytes",
        "memory_limit = \"2GiB\" (or \"unlimited\")",
    ),
    ("tmp_size_bytes", "tmp_size = \"256MiB\""),
    ("shm_size_bytes", "shm_size = \"64MiB\""),
    (
        "max_file_size_bytes",
        "max_file_size = \"1GiB\" (or \"unlimited\")",
    ),
    ("startup_timeout_ms", "startup_timeout = \"10s\""),
    ("max_bytes", "max_transfer = \"64MiB\""),
    ("max_tensor_bytes", "max_tensor_size = \"256MiB\""),
    ("timeout_ms", "timeout = \"60s\""),
];

/// A config file error: where (1-based line and column, when known), which key, what.
#[derive(Debug)]
pub struct ConfigError {
    /// Line and column of the offending text.
    pub position: Option<(usize, usize)>,
    /// Dotted key path (`runtime.limits.tool_timeout`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((line, col)) = self.position {
            write!(f, "line {line}, column {col}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn from_toml(text: &str, e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let position = inner.span().map(|span| {
            // toml's spans are byte offsets at token boundaries; `get` never panics anyway.
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, col)
        });
        let mut message = inner.message().trim_end().to_owned();
        let mut key = (!path.is_empty() && path != ".").then_some(path);
        if let Some(old) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            // serde_path_to_error's path already ends with the unknown key; add it if not.
            let full = match key.take() {
                Some(p) if p == old || p.ends_with(&format!(".{old}")) => p,
                Some(p) => format!("{p}.{old}"),
                None => old.to_owned(),
            };
            if let Some((_, new)) = RENAMED_KEYS.iter().find(|(o, _)| *o == old) {
                message = format!(
                    "`{old}` was renamed: use `{new}` (sizes and durations are strings with units)"
                );
            }
            key = Some(full);
        }
        ConfigError {
            position,
            key,
            message,
        }
    }
}

impl FileConfig {
    /// Reads and validates a config file; errors start with `FILE:LINE:COLUMN:`.
    pub fn load(path: &std::path::Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        FileConfig::parse_located(&text).map_err(|e| match e.position {
            Some((line, col)) => {
                let e = ConfigError {
                    position: None,
                    ..e
                };
                anyhow::anyhow!("{}:{line}:{col}: {e}", path.display())
            }
            None => anyhow::anyhow!("{}: {e}", path.display()),
        })
    }

    /// Parses config text in one typed pass; unknown keys are an error.
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        Ok(FileConfig::parse_located(text)?)
    }

    /// As [`FileConfig::parse`], with the error's position and key as data.
    pub fn parse_located(text: &str) -> Result<FileConfig, ConfigError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| ConfigError::from_toml(text, e))
    }

    /// Checks everything `serve` would check before starting, without starting anything
    /// (ranges the types cannot say, the CA file). Returns the runtime configuration in
    /// effect (`wasm-sandbox config check`).
    pub fn check(&self) -> anyhow::Result<wasm_sandbox_runtime::RuntimeConfig> {
        if self.concurrency == Some(0) {
            anyhow::bail!("concurrency: must be at least 1");
        }
        check_block(self.block)?;
        if self.tool_timeout.is_some_and(|d| d.is_zero()) {
            anyhow::bail!("tool_timeout: must be positive");
        }
        if let Some(path) = &self.ca_cert {
            load_ca_certs(path).map_err(|e| anyhow::anyhow!("ca_cert: {e}"))?;
        }
        self.usage.check()?;
        // [runtime.networking]: entries, upstream URLs and their header variables, and
        // not together with the legacy host network or the unsandboxed fallback (as
        // `Runtime::new` checks).
        wasm_sandbox_runtime::check_networking(&self.runtime).map_err(|e| match e {
            wasm_sandbox_runtime::Error::Config(m) => anyhow::anyhow!("runtime.{m}"),
            e => anyhow::anyhow!(e),
        })?;
        wasm_sandbox_egress::Egress::new(&self.runtime.networking, Vec::new())
            .map_err(|e| anyhow::anyhow!("runtime.{e}"))?;
        let mut runtime = self.runtime.clone();
        runtime.engine.cache_dir = runtime.engine.cache_dir.or_default_dir();
        Ok(runtime)
    }
}

/// The workdir when neither `--workdir` nor the file names one: a directory that exists for
/// this program's state only, never the current directory (a worker started from a folder
/// holding `sessions/` must not sweep it). `$STATE_DIRECTORY` (systemd's `StateDirectory=`;
/// the first when it lists several), else `/var/lib/wasm-sandbox` when running as root, else
/// `$XDG_STATE_HOME/wasm-sandbox`, else `$HOME/.local/state/wasm-sandbox`. Relative values
/// are ignored.
///
/// # Errors
/// When none applies (no `HOME`): then `--workdir` is required.
pub fn default_workdir() -> anyhow::Result<PathBuf> {
    let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(first) = std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| abs(v.to_string_lossy().split(':').next().map(Into::into)))
    {
        return Ok(first);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/wasm-sandbox"));
    }
    if let Some(d) = abs(std::env::var_os("XDG_STATE_HOME")) {
        return Ok(d.join("wasm-sandbox"));
    }
    abs(std::env::var_os("HOME"))
        .map(|h| h.join(".local/state/wasm-sandbox"))
        .ok_or_else(|| anyhow::anyhow!("no default workdir (no HOME): give --workdir"))
}

/// The poll hold in milliseconds: 1..=999 (default 999).
fn check_block(block: Option<Duration>) -> anyhow::Result<u32> {
    let Some(d) = block else {
        return Ok(POLL_BLOCK_MS_MAX);
    };
    match u32::try_from(d.as_millis()) {
        Ok(ms) if (1..=POLL_BLOCK_MS_MAX).contains(&ms) => Ok(ms),
        _ => anyhow::bail!("block: must be within \"1ms\"..=\"999ms\""),
    }
}

/// Flags, environment and config file merged.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Environment id (required unless `--local`).
    pub environment_id: Option<String>,
    /// Environment key (required unless `--local`).
    pub environment_key: Option<Secret>,
    /// Working directory.
    pub workdir: PathBuf,
    /// Whether the workdir was given (flag or file) rather than defaulted.
    pub workdir_given: bool,
    /// Idle exit; `None` = disabled.
    pub max_idle: Option<Duration>,
    /// Log format.
    pub log_format: LogFormat,
    /// Sessions at once.
    pub concurrency: usize,
    /// API base URL.
    pub base_url: String,
    /// Ops listen address.
    pub ops_listen: Option<SocketAddr>,
    /// Worker id.
    pub worker_id: String,
    /// Tool timeout.
    pub tool_timeout: Duration,
    /// Poll hold.
    pub block_ms: u32,
    /// Reclaim window sent on polls, in milliseconds.
    pub reclaim_older_than_ms: Option<u64>,
    /// `[runtime]` table.
    pub runtime: wasm_sandbox_runtime::RuntimeConfig,
    /// `--local`.
    pub local: bool,
    /// `--local-session`.
    pub local_session: Option<PathBuf>,
    /// Whether `--max-idle` was given explicitly.
    pub max_idle_explicit: bool,
    /// Extra trusted roots from `--ca-cert` / `ca_cert`, parsed.
    pub extra_root_certs: Vec<reqwest::Certificate>,
    /// `[usage]` table.
    pub usage: crate::usage::UsageFileConfig,
}

impl Settings {
    /// Merges flags over the config file over defaults, and validates.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let max_idle_explicit = args.max_idle.is_some() || file.max_idle.is_some();
        let max_idle = args
            .max_idle
            .or(file.max_idle)
            .unwrap_or(Duration::from_secs(60));
        let tool_timeout = file.tool_timeout.unwrap_or(Duration::from_secs(150));
        let concurrency = args.concurrency.or(file.concurrency).unwrap_or(1);
        anyhow::ensure!(concurrency >= 1, "--concurrency must be at least 1");
        let block_ms = check_block(file.block)?;
        anyhow::ensure!(!tool_timeout.is_zero(), "tool_timeout must be positive");
        let settings = Settings {
            environment_id: args
                .environment_id
                .or(file.environment_id)
                .filter(|s| !s.is_empty()),
            environment_key: args.environment_key.filter(|k| !k.is_empty()),
            workdir_given: args.workdir.is_some() || file.workdir.is_some(),
            workdir: match args.workdir.or(file.workdir) {
                Some(w) => w,
                None => default_workdir()?,
            },
            max_idle: (!max_idle.is_zero()).then_some(max_idle),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            concurrency,
            base_url: args
                .base_url
                .or(file.base_url)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()),
            ops_listen: args.ops_listen.or(file.ops_listen),
            worker_id: args
                .worker_id
                .or(file.worker_id)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(default_worker_id),
            tool_timeout,
            block_ms,
            reclaim_older_than_ms: file
                .reclaim_older_than
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            usage: file.usage,
            runtime: {
                let mut runtime = file.runtime;
                runtime.engine.cache_dir = runtime.engine.cache_dir.or_default_dir();
                // The ops listener (and the cluster's API server) joins the egress
                // deny set; the --ca-cert roots reach the upstream aliases.
                crate::egress_guard::apply(
                    &mut runtime,
                    args.ops_listen.or(file.ops_listen),
                    std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
                    args.ca_cert.as_deref().or(file.ca_cert.as_deref()),
                );
                runtime
            },
            local: args.local,
            local_session: args.local_session,
            max_idle_explicit,
            extra_root_certs: match args.ca_cert.or(file.ca_cert) {
                Some(path) => load_ca_certs(&path)?,
                None => Vec::new(),
            },
        };
        if !settings.local && !args.dry_run {
            anyhow::ensure!(
                settings.environment_id.is_some(),
                "--environment-id (or ANTHROPIC_ENVIRONMENT_ID) is required"
            );
            anyhow::ensure!(
                settings.environment_key.is_some(),
                "--environment-key (or {ENVIRONMENT_KEY_ENV}) is required"
            );
        }
        Ok(settings)
    }

    /// The worker configuration for these settings.
    pub fn worker_config(&self, base_url: &str, environment_id: &str, key: Secret) -> WorkerConfig {
        let mut cfg = WorkerConfig::new(base_url, environment_id, key);
        cfg.worker_id = self.worker_id.clone();
        cfg.workdir = self.workdir.clone();
        cfg.concurrency = self.concurrency;
        cfg.block_ms = Some(self.block_ms);
        cfg.reclaim_older_than_ms = self.reclaim_older_than_ms;
        cfg.runner.max_idle = self.max_idle;
        cfg.runner.tool_timeout = self.tool_timeout;
        cfg.client.extra_root_certs = self.extra_root_certs.clone();
        cfg.usage = Some(self.usage.clone());
        cfg.max_session = self.runtime.shape.max_session;
        cfg
    }
}

/// Opens the `[runtime.persistence]` store, if configured.
///
/// # Errors
/// An unusable store URL or a missing encryption key.
pub fn open_persistence(
    runtime: &wasm_sandbox_runtime::RuntimeConfig,
) -> anyhow::Result<Option<std::sync::Arc<wasm_sandbox_persist::Persistence>>> {
    let Some(cfg) = &runtime.persistence else {
        return Ok(None);
    };
    let p = wasm_sandbox_persist::Persistence::open(cfg)?;
    tracing::info!(store = %p.store().url(), encrypted = p.store().encrypted(), "session persistence on");
    Ok(Some(std::sync::Arc::new(p)))
}

/// Reads a `--ca-cert` file: one or more PEM certificates, each checked as a root.
///
/// # Errors
/// When the file cannot be read or holds no usable certificate.
pub fn load_ca_certs(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    crate::client::parse_root_certs(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Connections [`crate::client::EnvironmentClient::prewarm`] opens on HTTP/1.1: a claim
/// starts about four requests at once (ack, session, stream, history) while the poll and the
/// other sessions' streams hold theirs.
fn prewarm_connections(concurrency: usize) -> usize {
    (2 * concurrency + 4).min(24)
}

/// Removes `ANTHROPIC_ENVIRONMENT_KEY` from the process environment so no child inherits it,
/// and overwrites its value in the process's original environment block so that
/// `/proc/<pid>/environ` no longer shows it ([`crate::secret::scrub_environment_block`]:
/// `remove_var` alone leaves those bytes in place). It is the only secret the worker reads from
/// its environment. A key given as `--environment-key VALUE` is likewise overwritten in the
/// argument block, which `/proc/<pid>/cmdline` shows to every user
/// ([`crate::secret::scrub_argument_block`]).
///
/// Call it in `main` right after parsing the flags and before starting the async runtime's
/// threads (`remove_var` is unsound while other threads may read the environment); [`serve`]
/// only warns when it finds the key still there.
pub fn scrub_environment_key() {
    #[cfg(target_os = "linux")]
    {
        // Without /proc nothing shows the blocks either; say so and go on.
        if let Err(e) = crate::secret::scrub_environment_block(&[ENVIRONMENT_KEY_ENV]) {
            eprintln!("warning: could not scrub the environment block: {e}");
        }
        // `--environment-key VALUE` would be readable by every user in /proc/<pid>/cmdline.
        if let Err(e) = crate::secret::scrub_argument_block("--environment-key") {
            eprintln!("warning: could not scrub the argument block: {e}");
        }
    }
    if std::env::var_os(ENVIRONMENT_KEY_ENV).is_some() {
        // SAFETY: `remove_var` is unsound only if another thread reads or writes the
        // environment at the same moment. The documented contract of this function is that it
        // runs in `main` before any other thread exists (the CLI calls it before building the
        // tokio runtime), so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(ENVIRONMENT_KEY_ENV) };
    }
}

/// Whether [`init_logging`] installed JSON lines (read by [`report_fatal`]).
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the `tracing` subscriber (stderr, `RUST_LOG` filter, else `default_level`). Does
/// nothing if one is already installed.
///
/// With [`LogFormat::Json`] each event is one JSON object on one line ([`JsonLine`]):
/// `timestamp` (RFC 3339, UTC), `level`, `message`, `target`, the event's other fields, and
/// the fields of the spans it happened in (`work_id`, `session_id`, `tool`, …), all at the
/// top level, plus `spans` (their names, outermost first). Values are JSON-escaped, so text
/// the agent controls (a path, a command) cannot end the line or forge another entry.
pub fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLine)
            .try_init()
            .is_ok(),
        LogFormat::Text => builder.try_init().is_ok(),
    };
    if installed {
        JSON_LOGS.store(
            format == LogFormat::Json,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Reports an error that ends the process: one JSON line (`level` `ERROR`, the error chain as
/// `message`, `"fatal": true`) when JSON logs are installed, else `error: …` on stderr. Written
/// directly, not through `tracing`, so that no `RUST_LOG` filter can hide it.
pub fn report_fatal(err: &anyhow::Error) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        let mut line = serde_json::Map::new();
        line.insert("fatal".into(), true.into());
        eprintln!(
            "{}",
            json_line(line, "ERROR", "wasm_sandbox", &format!("{err:#}"))
        );
    } else {
        eprintln!("error: {err:#}");
    }
}

/// Adds the fixed keys to `fields` and serialises it. The fixed keys win over fields of the
/// same name, so every line has them with their meaning.
fn json_line(
    mut fields: serde_json::Map<String, serde_json::Value>,
    level: &str,
    target: &str,
    message: &str,
) -> serde_json::Value {
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    fields.insert("timestamp".into(), now.into());
    fields.insert("level".into(), level.into());
    fields.insert("target".into(), target.into());
    fields.insert("message".into(), message.into());
    serde_json::Value::Object(fields)
}

/// The JSON event format of `--log-format json` (see [`init_logging`]). tracing-subscriber's
/// own JSON format nests the span fields under `span`/`spans` and, without
/// `flatten_event`, the message under `fields`; log pipelines want them at the top level.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = serde_json::Map::new();
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            // Outermost first, so an inner span's field wins a clash.
            for span in scope.from_root() {
                spans.push(serde_json::Value::from(span.name()));
                let ext = span.extensions();
                // With `JsonFields` as the field formatter, a span's fields are stored as a
                // JSON object.
                if let Some(stored) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>()
                    && let Ok(serde_json::Value::Object(map)) =
                        serde_json::from_str::<serde_json::Value>(stored.as_str())
                {
                    fields.extend(map);
                }
            }
        }
        if !spans.is_empty() {
            fields.insert("spans".into(), spans.into());
        }
        let mut visitor = JsonVisitor {
            fields: &mut fields,
            message: String::new(),
        };
        event.record(&mut visitor);
        let message = std::mem::take(&mut visitor.message);
        let meta = event.metadata();
        let line = json_line(fields, meta.level().as_str(), meta.target(), &message);
        writeln!(writer, "{line}")
    }
}

/// Collects an event's fields as JSON values; `message` separately.
struct JsonVisitor<'a> {
    fields: &'a mut serde_json::Map<String, serde_json::Value>,
    message: String,
}

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.insert(field.name().into(), value.into());
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.record_str(field, &value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// The log format a `serve` that failed before its settings were resolved should use for its
/// fatal error: the flag, else the config file's `log_format` if the file parses, else text.
fn fatal_log_format(args: &ServeArgs) -> LogFormat {
    args.log_format
        .or_else(|| {
            let path = args.config.as_ref()?;
            let text = std::fs::read_to_string(path).ok()?;
            #[derive(Deserialize)]
            struct OnlyFormat {
                log_format: Option<LogFormat>,
            }
            toml::from_str::<OnlyFormat>(&text).ok()?.log_format
        })
        .unwrap_or_default()
}

/// Turns SIGTERM/SIGINT into `shutdown`: the first drains, the second forces.
pub fn install_signal_handlers(shutdown: Shutdown) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let mut count = 0;
        loop {
            tokio::select! {
                s = term.recv() => if s.is_none() { return },
                s = int.recv() => if s.is_none() { return },
            }
            count += 1;
            if count == 1 {
                tracing::warn!(
                    "shutdown signal: draining (finishing running tool calls); signal again to force"
                );
                shutdown.drain();
            } else {
                tracing::warn!("second shutdown signal: forcing");
                shutdown.force();
                return;
            }
        }
    }))
}

/// Runs a worker with `provider` until `shutdown`, with the ops endpoints when configured.
pub async fn run_worker<P: SandboxProvider>(
    config: WorkerConfig,
    provider: P,
    ops_listen: Option<SocketAddr>,
    shutdown: Shutdown,
    observer: Option<crate::worker::Observer>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    // What sessions need and this host lacks, for `/readyz` (probed once, at start-up).
    let unavailable = provider.unavailable();
    // The session shape: which limits hold, for `/readyz` and `/metrics`.
    let shape_detail = match provider.shape() {
        Some(shape) => {
            metrics.shape_limits(&shape);
            vec![format!("shape ({}): {}", shape.enforce, shape.summary())]
        }
        None => Vec::new(),
    };
    let base_url_is_https = config.base_url.starts_with("https://");
    let concurrency = config.concurrency;
    let mut worker = Worker::new(config, provider, Arc::clone(&metrics))?;
    if let Some(o) = observer {
        worker = worker.with_observer(o);
    }
    let ops_stop = tokio_util::sync::CancellationToken::new();
    let ops_task = match ops_listen {
        Some(addr) => {
            let state = OpsState {
                metrics,
                status: worker.status(),
                env: worker.environment_client(),
            };
            Some(
                ops::spawn_with_detail(addr, state, unavailable, shape_detail, ops_stop.clone())
                    .await?
                    .1,
            )
        }
        None => None,
    };
    // Over TLS a new connection costs two round trips; open the ones a claim needs now, in the
    // background (HTTP/2: the first poll's connection is all it needs; this is one extra read).
    let prewarm = worker.environment_client();
    let prewarm_task = base_url_is_https.then(|| {
        tokio::spawn(async move {
            match prewarm.prewarm(prewarm_connections(concurrency)).await {
                Ok(v) => tracing::debug!(version = ?v, "API connections pre-warmed"),
                Err(e) => tracing::debug!(error = %e, "pre-warming API connections failed"),
            }
        })
    });
    let result = worker.run(shutdown).await;
    if let Some(t) = prewarm_task {
        t.abort();
    }
    ops_stop.cancel();
    if let Some(t) = ops_task {
        let _ = t.await;
    }
    result
}

/// `wasm-sandbox serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let fatal_format = fatal_log_format(&args);
    let dry_run = args.dry_run;
    let settings = match Settings::resolve(args) {
        Ok(s) => s,
        Err(e) => {
            // So that the caller's `report_fatal` writes it in the format asked for.
            init_logging(fatal_format, "info");
            return Err(e);
        }
    };
    if std::env::var_os(ENVIRONMENT_KEY_ENV).is_some() {
        // `serve` runs on the async runtime's threads, where `remove_var` is unsound (another
        // thread may read the environment at the same moment). The key only matters to child
        // processes, and bash's environment is an allow-list that never includes it; still,
        // say that the embedder skipped the early scrub.
        tracing::warn!(
            "{ENVIRONMENT_KEY_ENV} is still in the process environment: call \
             serve::scrub_environment_key() in main before starting the async runtime"
        );
    }
    if dry_run {
        /// The `[runtime]` table, printed under its own name.
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            runtime: &'a wasm_sandbox_runtime::RuntimeConfig,
        }
        println!(
            "# serve --dry-run: settings ok (environment key {})",
            if settings.environment_key.is_some() {
                "given"
            } else {
                "not given"
            }
        );
        println!(
            "workdir = {:?}\nconcurrency = {}\nmax_idle = {:?}\ntool_timeout = {:?}\nbase_url = {:?}\nworker_id = {:?}",
            settings.workdir.display().to_string(),
            settings.concurrency,
            settings
                .max_idle
                .map_or("0s".to_owned(), wasm_sandbox_units::format_duration),
            wasm_sandbox_units::format_duration(settings.tool_timeout),
            settings.base_url,
            settings.worker_id,
        );
        print!(
            "{}",
            toml::to_string(&Shown {
                runtime: &settings.runtime
            })?
        );
        return Ok(());
    }
    // The local demo prints its own account of the session; keep the log to warnings.
    init_logging(
        settings.log_format,
        if settings.local { "warn" } else { "info" },
    );
    if settings.local {
        return crate::serve::local::run(settings).await;
    }
    let (Some(environment_id), Some(key)) = (
        settings.environment_id.clone(),
        settings.environment_key.clone(),
    ) else {
        anyhow::bail!("--environment-id and --environment-key are required");
    };
    // Lock the workdir, sweep stale sessions, mount them nosuid,nodev: before the sandbox pool
    // starts filling below it. Held (and the mount kept) until the worker returns.
    let workdir = crate::worker::claim_workdir(&settings.workdir)?;
    let provider = CoreProvider::from_config(
        settings.runtime.clone(),
        &settings.workdir,
        settings.concurrency,
    )?;
    let shutdown = Shutdown::new();
    let signals = install_signal_handlers(shutdown.clone())?;
    let mut config = settings.worker_config(&settings.base_url, &environment_id, key);
    config.persistence = open_persistence(&settings.runtime)?;
    let result = run_worker(config, provider, settings.ops_listen, shutdown, None).await;
    signals.abort();
    drop(workdir);
    result
}

pub mod local {
    //! `serve --local`: the whole job in one command, without credentials.
    //!
    //! Starts the fake control plane (`wasm-sandbox-fake-control-plane`) embedded on loopback,
    //! enqueues a sample session (`--local-session FILE`, else
    //! `examples/sessions/all-tools.json` from the current directory, else a built-in copy of
    //! it), serves it with the real sandbox, and prints the session cold-start time and each
    //! tool call with its result. Exits once the item is done; fails if the scenario's
    //! expectations did not hold.

    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::Value;
    use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane, Scenario};

    use super::{Settings, install_signal_handlers, run_worker};
    use crate::core_adapter::CoreProvider;
    use crate::runner::ToolOutcome;
    use crate::secret::Secret;
    use crate::worker::{Shutdown, WorkerEvent};

    const BUILTIN_SCENARIO: &str = include_str!("../../../examples/sessions/all-tools.json");

    fn excerpt(text: &str, max: usize) -> String {
        let one_line = text.trim_end().replace('\n', "\n       ");
        if one_line.chars().count() > max {
            format!("{}…", one_line.chars().take(max).collect::<String>())
        } else {
            one_line
        }
    }

    fn print_event(ev: WorkerEvent) {
        match ev {
            WorkerEvent::Claimed {
                work_id,
                session_id,
            } => println!(
                "claimed  {work_id} (session {})",
                session_id.as_deref().unwrap_or("-")
            ),
            WorkerEvent::SessionReady { cold_start, .. } => println!(
                "sandbox  ready; session cold start {:.1} ms",
                cold_start.as_secs_f64() * 1000.0
            ),
            WorkerEvent::Tool { report, .. } => {
                println!("tool  -> {} {}", report.name, report.input);
                match (&report.outcome, &report.result) {
                    (ToolOutcome::Denied, _) => println!("      <- denied; nothing posted"),
                    (_, Some(r)) => {
                        let text: String = r
                            .content
                            .iter()
                            .map(|b| match b.get("text").and_then(Value::as_str) {
                                Some(t) => t.to_owned(),
                                None => format!(
                                    "[{} block]",
                                    b.get("type").and_then(Value::as_str).unwrap_or("?")
                                ),
                            })
                            .collect::<Vec<_>>()
                            .join("\n");
                        println!(
                            "      <- {}{} in {:.1} ms{}: {}",
                            if r.is_error { "error" } else { "ok" },
                            if report.posted {
                                ", posted"
                            } else {
                                ", not posted"
                            },
                            report.duration.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
                            match report.outcome {
                                ToolOutcome::Timeout => " (timed out)",
                                _ => "",
                            },
                            excerpt(&text, 400)
                        );
                    }
                    (outcome, None) => println!("      <- {}", outcome.as_str()),
                }
            }
            WorkerEvent::ItemDone {
                run_end, stop_sent, ..
            } => println!(
                "done     session ended ({}); item {}",
                run_end.map_or("not run", |e| e.as_str()),
                if stop_sent { "stopped" } else { "not stopped" }
            ),
        }
    }

    /// The demo's workdir: its lock (and mount), then, when the demo made it, the directory.
    struct LocalWorkdir {
        guard: Option<crate::worker::WorkdirGuard>,
        remove: Option<std::path::PathBuf>,
    }

    impl Drop for LocalWorkdir {
        fn drop(&mut self) {
            drop(self.guard.take());
            if let Some(dir) = &self.remove {
                let _ = wasm_sandbox_fs::tree::remove_tree(dir);
            }
        }
    }

    /// Runs the local demo.
    pub async fn run(settings: Settings) -> anyhow::Result<()> {
        let scenario = match &settings.local_session {
            Some(path) => Scenario::load(path)?,
            None if Path::new("examples/sessions/all-tools.json").exists() => {
                Scenario::load("examples/sessions/all-tools.json")?
            }
            None => Scenario::from_json(BUILTIN_SCENARIO)?,
        };
        let own_workdir = !settings.workdir_given;
        let workdir = if own_workdir {
            // A fresh, unguessable 0700 directory that must not exist yet: another user cannot
            // have planted it (or a link in its place) for the worker to lock, sweep and mount.
            use std::os::unix::fs::DirBuilderExt as _;
            let dir = std::env::temp_dir().join(format!(
                "wasm-sandbox-local-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
            dir
        } else {
            settings.workdir.clone()
        };
        // As `serve`: lock, sweep, mount; the pool lives in the same workdir as the sessions.
        // However `run` returns from here on, the lock and mount go, then our own temp workdir.
        let guard = LocalWorkdir {
            guard: Some(crate::worker::claim_workdir(&workdir)?),
            remove: own_workdir.then(|| workdir.clone()),
        };
        let provider =
            CoreProvider::from_config(settings.runtime.clone(), &workdir, settings.concurrency)?;
        let fake = FakeControlPlane::start(FakeConfig::default()).await?;
        println!("control plane (fake, embedded) at {}", fake.url());
        let (work_id, session_id) = fake.enqueue_session(scenario);
        println!("enqueued {work_id} for session {session_id}");

        let mut config = settings.worker_config(
            fake.url(),
            &fake.environment_id(),
            Secret::new(fake.environment_key()),
        );
        config.workdir = workdir.clone();
        config.exit_after_items = Some(1);
        // The demo's sessions are the fake's: nothing for a usage ledger or a billing sink.
        config.usage = None;
        config.poll.empty_sleep_min = Duration::from_millis(50);
        config.poll.empty_sleep_max = Duration::from_millis(100);
        if !settings.max_idle_explicit {
            config.runner.max_idle = Some(Duration::from_secs(1));
        }
        let shutdown = Shutdown::new();
        let signals = install_signal_handlers(shutdown.clone())?;
        let result = run_worker(
            config,
            provider,
            settings.ops_listen,
            shutdown,
            Some(Arc::new(print_event)),
        )
        .await;
        signals.abort();
        drop(guard);
        let report = fake.scenario_report(&session_id);
        fake.shutdown().await;
        result?;
        if report.is_ok() {
            println!("scenario passed");
            Ok(())
        } else {
            anyhow::bail!("scenario expectations failed: {:?}", report.failures)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn config_rejects_unknown_keys_and_the_key() {
        assert!(FileConfig::parse("concurrency = 2\nbogus = 1\n").is_err());
        let checked = FileConfig::parse("[runtime.wasm_run]\nmax_concurrent_per_session = 3\n")
            .unwrap()
            .check()
            .unwrap();
        assert_eq!(checked.wasm_run.max_concurrent_per_session, 3);
        let typo = FileConfig::parse("[runtime.engine]\ncache_dri = \"/x\"\n").unwrap_err();
        assert!(typo.to_string().contains("cache_dri"), "{typo}");
        assert!(FileConfig::parse("max_idle = \"soon\"\n").is_err());
        let e = FileConfig::parse("environment_key = \"sk\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("environment_key"), "{e:#}");
        let c = FileConfig::parse(
            "environment_id = \"env_1\"\nmax_idle = \"2m\"\nconcurrency = 3\nlog_format = \"json\"\n\
             block = \"500ms\"\nreclaim_older_than = \"10s\"\n[runtime.limits]\nmemory = \"128MiB\"\n",
        )
        .unwrap();
        assert_eq!(c.concurrency, Some(3));
        assert_eq!(c.log_format, Some(LogFormat::Json));
        assert_eq!(c.max_idle, Some(Duration::from_secs(120)));
        assert_eq!(c.block, Some(Duration::from_millis(500)));
        assert_eq!(c.runtime.limits.memory_bytes, 128 << 20);
        assert!(
            FileConfig::parse("block = \"2s\"\n")
                .unwrap()
                .check()
                .is_err()
        );
    }

    /// Issue 17: an error inside `[runtime]` names its line, column and key path (the table
    /// used to be re-parsed from a `toml::Value`, which lost the position).
    #[test]
    fn errors_inside_runtime_name_line_and_key() {
        let text = "concurrency = 2\n\n[runtime.limits]\nmemory = \"256MiB\"\ntool_timeout = \"forever\"\n";
        let e = FileConfig::parse_located(text).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(5), "{e}");
        assert_eq!(e.key.as_deref(), Some("runtime.limits.tool_timeout"), "{e}");
        assert!(e.message.contains("invalid duration"), "{e}");
        let text = "[runtime.bash]\nnetwork = false\nnetwrok = true\n";
        let e = FileConfig::parse_located(text).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
        assert_eq!(e.key.as_deref(), Some("runtime.bash.netwrok"), "{e}");
        // Through `load`, the file name leads: FILE:LINE:COLUMN.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(&path, text).unwrap();
        let e = FileConfig::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:3:1: ", path.display())), "{e}");
    }

    /// Issue 17: a key renamed by the unit convention is refused with its new name.
    #[test]
    fn old_unit_keys_are_refused_with_the_new_key() {
        for (text, old, new) in [
            (
                "[runtime.limits]\ntool_timeout_ms = 150000\n",
                "tool_timeout_ms",
                "tool_timeout = \"150s\"",
            ),
            (
                "[runtime.limits]\nmemory_bytes = 1\n",
                "memory_bytes",
                "memory = \"256MiB\"",
            ),
            ("block_ms = 500\n", "block_ms", "block = \"999ms\""),
            (
                "[runtime.bash]\nmemory_limit_bytes = 1\n",
                "memory_limit_bytes",
                "memory_limit = ",
            ),
            (
                "[[runtime.nn.remote]]\nname = \"llm-a\"\nkind = \"chat\"\nurl = \"http://x\"\ntimeout_ms = 5\n",
                "timeout_ms",
                "timeout = \"60s\"",
            ),
        ] {
            let e = FileConfig::parse(text).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{old}` was renamed: use `{new}")),
                "{e}"
            );
            assert!(e.contains("line "), "{e}");
        }
        // Bare numbers where a unit is needed are refused, naming the expected form.
        let e = FileConfig::parse("max_idle = 60\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("duration string"), "{e}");
    }

    /// `"unlimited"` is how a file says "no cap" for the bash limits that allow it.
    #[test]
    fn unlimited_is_written_as_a_string() {
        let c = FileConfig::parse(
            "[runtime.bash]\nmemory_limit = \"unlimited\"\npids_limit = \"unlimited\"\nmax_file_size = \"4GiB\"\n",
        )
        .unwrap();
        assert_eq!(c.runtime.bash.memory_limit_bytes, None);
        assert_eq!(c.runtime.bash.pids_limit, None);
        assert_eq!(c.runtime.bash.max_file_size_bytes, Some(4 << 30));
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            "environment_id = \"env_file\"\nmax_idle = \"2m\"\nconcurrency = 3\nworkdir = \"/srv\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "--config",
            path.to_str().unwrap(),
            "--concurrency",
            "5",
            "--environment-key",
            "sk-ant-oat01-FLAG",
            "--max-idle",
            "0",
        ])
        .unwrap();
        assert!(!format!("{cli:?}").contains("FLAG"), "Debug leaks the key");
        let s = Settings::resolve(cli.serve).unwrap();
        assert_eq!(s.concurrency, 5);
        assert_eq!(s.environment_id.as_deref(), Some("env_file"));
        assert_eq!(s.workdir, PathBuf::from("/srv"));
        assert_eq!(s.max_idle, None);
        assert!(!format!("{s:?}").contains("FLAG"));
        let cli = Cli::try_parse_from([
            "x",
            "--config",
            path.to_str().unwrap(),
            "--environment-key",
            "k",
        ])
        .unwrap();
        let s = Settings::resolve(cli.serve).unwrap();
        assert_eq!(s.max_idle, Some(Duration::from_secs(120)));
        assert_eq!(s.concurrency, 3);
    }

    /// `--ca-cert FILE` / `ca_cert = "FILE"`: the roots reach the client; a file holding no
    /// certificate stops start-up (and `config check`) with the file named.
    #[tokio::test]
    async fn ca_cert_from_the_flag_or_the_file() {
        use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane, TlsOptions};
        let fake = FakeControlPlane::start(FakeConfig {
            tls: Some(TlsOptions::default()),
            ..FakeConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, fake.ca_cert_pem().unwrap()).unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a certificate\n").unwrap();
        let base = ["x", "--environment-id", "env_1", "--environment-key", "k"];

        let cli = Cli::try_parse_from(
            base.iter()
                .copied()
                .chain(["--ca-cert", ca.to_str().unwrap()]),
        )
        .unwrap();
        let s = Settings::resolve(cli.serve).unwrap();
        assert_eq!(s.extra_root_certs.len(), 1);
        let cfg = s.worker_config("https://x", "env_1", Secret::new("k"));
        assert_eq!(cfg.client.extra_root_certs.len(), 1);

        let file = dir.path().join("w.toml");
        std::fs::write(&file, format!("ca_cert = {:?}\n", ca.to_str().unwrap())).unwrap();
        let cli = Cli::try_parse_from(
            base.iter()
                .copied()
                .chain(["--config", file.to_str().unwrap()]),
        )
        .unwrap();
        assert_eq!(
            Settings::resolve(cli.serve).unwrap().extra_root_certs.len(),
            1
        );

        let cli = Cli::try_parse_from(
            base.iter()
                .copied()
                .chain(["--ca-cert", bad.to_str().unwrap()]),
        )
        .unwrap();
        let e = Settings::resolve(cli.serve).unwrap_err();
        assert!(format!("{e:#}").contains("bad.pem"), "{e:#}");
        let checked = FileConfig::parse(&format!("ca_cert = {:?}\n", bad.to_str().unwrap()))
            .unwrap()
            .check();
        assert!(checked.is_err());

        // Without any: the bundled roots only.
        let cli = Cli::try_parse_from(base).unwrap();
        assert!(
            Settings::resolve(cli.serve)
                .unwrap()
                .extra_root_certs
                .is_empty()
        );
    }

    #[test]
    fn key_and_id_required_unless_local() {
        let cli = Cli::try_parse_from(["x", "--environment-id", "env_1"]).unwrap();
        // The key may be in the test process environment only if someone set it; guard.
        if std::env::var_os(ENVIRONMENT_KEY_ENV).is_none() {
            assert!(Settings::resolve(cli.serve).is_err());
        }
        let cli = Cli::try_parse_from(["x", "--local"]).unwrap();
        assert!(Settings::resolve(cli.serve).unwrap().local);
    }

    /// `--log-format json`: text the agent controls (a path, a command) may hold newlines,
    /// quotes or a field called `level`; none of it can end the line or forge another entry's
    /// fixed keys. Span fields sit at the top level beside `message` (issue 17).
    #[test]
    fn json_lines_are_flat_and_cannot_be_forged() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLine)
            .finish();
        let hostile = "x\n{\"level\":\"ERROR\",\"message\":\"forged\"}";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("work", work_id = "work_1", session_id = "sesn_1");
            let _g = span.enter();
            tracing::info!(path = hostile, level = "FORGED", "read {}", hostile);
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "INFO", "{v}");
        assert_eq!(v["message"], format!("read {hostile}"));
        assert_eq!(v["path"], hostile);
        assert_eq!(v["work_id"], "work_1");
        assert_eq!(v["session_id"], "sesn_1");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
        assert!(v.get("fields").is_none() && v.get("span").is_none(), "{v}");
    }
}
