//! The `--config` file ([`FileConfig`]): one typed pass over the TOML text, errors with
//! their line, column and key path ([`ConfigError`]), renamed keys refused with their new
//! name ([`RENAMED_KEYS`]), and the checks `serve` makes before starting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wasm_sandbox_worker::client::load_ca_certs;
use wasm_sandbox_worker::proto::POLL_BLOCK_MS_MAX;

use super::args::LogFormat;

/// The `--config` file: one schema for every command that takes `--config` (`serve`,
/// `replay`, `config check`, `doctor`). The top-level keys are `serve`'s (the long flags with
/// `_`, plus `tool_timeout`, `block`, `reclaim_older_than`); `[runtime]` is the core
/// [`RuntimeConfig`](wasm_sandbox_runtime::RuntimeConfig), which `replay` uses alone (it
/// accepts and ignores the serve-only keys, so the deploy ConfigMap's file is valid for all).
///
/// Read in one typed pass ([`FileConfig::parse_located`]): every error names the line, column and
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
    /// ([`wasm_sandbox_worker::usage::UsageFileConfig`]).
    #[serde(default)]
    pub usage: wasm_sandbox_worker::usage::UsageFileConfig,
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

    /// Parses config text in one typed pass; unknown keys are an error (the unit tests' entry
    /// point; the commands read files with [`FileConfig::load`]).
    #[cfg(test)]
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        Ok(FileConfig::parse_located(text)?)
    }

    /// Parses config text in one typed pass (unknown keys are an error), with the error's
    /// position and key as data ([`FileConfig::load`] puts the file name in front).
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

/// The poll hold in milliseconds: 1..=999 (default 999).
pub(crate) fn check_block(block: Option<Duration>) -> anyhow::Result<u32> {
    let Some(d) = block else {
        return Ok(POLL_BLOCK_MS_MAX);
    };
    match u32::try_from(d.as_millis()) {
        Ok(ms) if (1..=POLL_BLOCK_MS_MAX).contains(&ms) => Ok(ms),
        _ => anyhow::bail!("block: must be within \"1ms\"..=\"999ms\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
