//! [`Settings`]: the flags, the environment and the config file merged (flag or environment
//! variable, then the file, then the default), validated, and turned into the worker
//! library's [`WorkerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use wasm_sandbox_worker::client::load_ca_certs;
use wasm_sandbox_worker::proto::DEFAULT_BASE_URL;
use wasm_sandbox_worker::secret::Secret;
use wasm_sandbox_worker::worker::{WorkerConfig, default_worker_id};

use super::args::{ENVIRONMENT_KEY_ENV, LogFormat, ServeArgs};
use super::file_config::{FileConfig, check_block};

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
    pub usage: wasm_sandbox_worker::usage::UsageFileConfig,
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
                wasm_sandbox_worker::egress_guard::apply(
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

    /// The core runtime's configuration for these settings: `[runtime]`, with
    /// `[runtime.limits] tool_timeout` lowered to the top-level `tool_timeout` when that is
    /// smaller. The core session owns each call's deadline (and answers a late call `timed
    /// out`); the worker's runner only keeps a longer backstop
    /// (`wasm_sandbox_worker::runner::RunnerConfig::backstop`). So the smaller of the two keys
    /// governs, as when both applied their own deadline.
    pub fn core_config(&self) -> wasm_sandbox_runtime::RuntimeConfig {
        let mut runtime = self.runtime.clone();
        let worker_ms = u64::try_from(self.tool_timeout.as_millis()).unwrap_or(u64::MAX);
        runtime.limits.tool_timeout_ms = runtime.limits.tool_timeout_ms.min(worker_ms);
        runtime
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// The core owns each call's deadline; the smaller of the two `tool_timeout` keys governs.
    #[test]
    fn the_smaller_tool_timeout_governs() {
        let dir = tempfile::tempdir().unwrap();
        let resolve = |text: &str| {
            let path = dir.path().join("t.toml");
            std::fs::write(&path, text).unwrap();
            let cli = Cli::try_parse_from([
                "x",
                "--config",
                path.to_str().unwrap(),
                "--environment-id",
                "env",
                "--environment-key",
                "k",
                "--workdir",
                "/srv",
            ])
            .unwrap();
            Settings::resolve(cli.serve).unwrap().core_config()
        };
        let c = resolve("tool_timeout = \"30s\"\n");
        assert_eq!(c.limits.tool_timeout_ms, 30_000);
        let c = resolve("tool_timeout = \"300s\"\n[runtime.limits]\ntool_timeout = \"20s\"\n");
        assert_eq!(c.limits.tool_timeout_ms, 20_000);
        assert_eq!(resolve("").limits.tool_timeout_ms, 150_000);
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
}
