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
    /// Working directory; each session gets `<workdir>/sessions/<work_id>` [default: .]
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
}

/// The `--config` file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--environment-id`.
    pub environment_id: Option<String>,
    /// `--workdir`.
    pub workdir: Option<PathBuf>,
    /// `--max-idle` (string duration or seconds).
    pub max_idle: Option<toml::Value>,
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
    /// Outer timeout of one tool call (default 150s).
    pub tool_timeout: Option<toml::Value>,
    /// Long-poll hold in ms (1–999, default 999).
    pub block_ms: Option<u32>,
    /// `reclaim_older_than_ms` sent on polls (server default 5000).
    pub reclaim_older_than_ms: Option<u64>,
    /// The core runtime's `RuntimeConfig` (engine, limits, tools, bash).
    pub runtime: Option<toml::Value>,
}

fn toml_duration(v: &toml::Value, key: &str) -> anyhow::Result<Duration> {
    match v {
        toml::Value::String(s) => parse_duration(s).map_err(|e| anyhow::anyhow!("{key}: {e}")),
        toml::Value::Integer(i) if *i >= 0 => Ok(Duration::from_secs(i.unsigned_abs())),
        toml::Value::Float(f) if f.is_finite() && *f >= 0.0 => Ok(Duration::from_secs_f64(*f)),
        _ => anyhow::bail!("{key}: expected a duration such as \"60s\""),
    }
}

impl FileConfig {
    /// Reads and validates a config file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        FileConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses config text; unknown keys are an error.
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        Ok(toml::from_str(text)?)
    }

    /// Checks everything `serve` would check before starting, without starting anything:
    /// the durations and the `[runtime]` table (unknown keys are errors there too).
    /// Returns the runtime configuration in effect (`wasm-sandbox config check`).
    pub fn check(&self) -> anyhow::Result<wasm_sandbox_runtime::RuntimeConfig> {
        for (key, v) in [
            ("max_idle", &self.max_idle),
            ("tool_timeout", &self.tool_timeout),
        ] {
            if let Some(v) = v {
                toml_duration(v, key)?;
            }
        }
        if self.concurrency == Some(0) {
            anyhow::bail!("concurrency: must be at least 1");
        }
        match &self.runtime {
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e| anyhow::anyhow!("[runtime]: {e}")),
            None => Ok(wasm_sandbox_runtime::RuntimeConfig::default()),
        }
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
    /// Reclaim window sent on polls.
    pub reclaim_older_than_ms: Option<u64>,
    /// `[runtime]` table.
    pub runtime: Option<toml::Value>,
    /// `--local`.
    pub local: bool,
    /// `--local-session`.
    pub local_session: Option<PathBuf>,
    /// Whether `--max-idle` was given explicitly.
    pub max_idle_explicit: bool,
}

impl Settings {
    /// Merges flags over the config file over defaults, and validates.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let max_idle_explicit = args.max_idle.is_some() || file.max_idle.is_some();
        let max_idle = match (args.max_idle, &file.max_idle) {
            (Some(d), _) => d,
            (None, Some(v)) => toml_duration(v, "max_idle")?,
            (None, None) => Duration::from_secs(60),
        };
        let tool_timeout = match &file.tool_timeout {
            Some(v) => toml_duration(v, "tool_timeout")?,
            None => Duration::from_secs(150),
        };
        let concurrency = args.concurrency.or(file.concurrency).unwrap_or(1);
        anyhow::ensure!(concurrency >= 1, "--concurrency must be at least 1");
        let block_ms = file.block_ms.unwrap_or(POLL_BLOCK_MS_MAX);
        anyhow::ensure!(
            (1..=POLL_BLOCK_MS_MAX).contains(&block_ms),
            "block_ms must be within 1..=999"
        );
        anyhow::ensure!(!tool_timeout.is_zero(), "tool_timeout must be positive");
        let settings = Settings {
            environment_id: args
                .environment_id
                .or(file.environment_id)
                .filter(|s| !s.is_empty()),
            environment_key: args.environment_key.filter(|k| !k.is_empty()),
            workdir: args
                .workdir
                .or(file.workdir)
                .unwrap_or_else(|| PathBuf::from(".")),
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
            reclaim_older_than_ms: file.reclaim_older_than_ms,
            runtime: file.runtime,
            local: args.local,
            local_session: args.local_session,
            max_idle_explicit,
        };
        if !settings.local {
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
        cfg
    }
}

/// Removes `ANTHROPIC_ENVIRONMENT_KEY` from the process environment so no child inherits it.
///
/// Call it as early as possible — ideally in `main` right after parsing the flags and before
/// starting the async runtime's threads; [`serve`] calls it too.
pub fn scrub_environment_key() {
    if std::env::var_os(ENVIRONMENT_KEY_ENV).is_some() {
        // SAFETY: `remove_var` is unsound only if another thread reads or writes the
        // environment at the same moment. This runs at start-up, before the worker spawns any
        // task or child process, and nothing else in this process touches the environment
        // concurrently.
        unsafe { std::env::remove_var(ENVIRONMENT_KEY_ENV) };
    }
}

/// Installs the `tracing` subscriber (stderr, `RUST_LOG` filter, else `default_level`). Does
/// nothing if one is already installed.
pub fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
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
            Some(ops::spawn(addr, state, ops_stop.clone()).await?.1)
        }
        None => None,
    };
    let result = worker.run(shutdown).await;
    ops_stop.cancel();
    if let Some(t) = ops_task {
        let _ = t.await;
    }
    result
}

/// `wasm-sandbox serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args)?;
    scrub_environment_key();
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
    let provider = CoreProvider::from_config(
        settings.runtime.clone(),
        &settings.workdir,
        settings.concurrency,
    )?;
    let shutdown = Shutdown::new();
    let signals = install_signal_handlers(shutdown.clone())?;
    let config = settings.worker_config(&settings.base_url, &environment_id, key);
    let result = run_worker(config, provider, settings.ops_listen, shutdown, None).await;
    signals.abort();
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

    /// Runs the local demo.
    pub async fn run(settings: Settings) -> anyhow::Result<()> {
        let scenario = match &settings.local_session {
            Some(path) => Scenario::load(path)?,
            None if Path::new("examples/sessions/all-tools.json").exists() => {
                Scenario::load("examples/sessions/all-tools.json")?
            }
            None => Scenario::from_json(BUILTIN_SCENARIO)?,
        };
        let provider = CoreProvider::from_config(
            settings.runtime.clone(),
            &settings.workdir,
            settings.concurrency,
        )?;
        let fake = FakeControlPlane::start(FakeConfig::default()).await?;
        println!("control plane (fake, embedded) at {}", fake.url());
        let (work_id, session_id) = fake.enqueue_session(scenario);
        println!("enqueued {work_id} for session {session_id}");

        let own_workdir = settings.workdir == Path::new(".");
        let workdir = if own_workdir {
            std::env::temp_dir().join(format!("wasm-sandbox-local-{}", std::process::id()))
        } else {
            settings.workdir.clone()
        };
        let mut config = settings.worker_config(
            fake.url(),
            &fake.environment_id(),
            Secret::new(fake.environment_key()),
        );
        config.workdir = workdir.clone();
        config.exit_after_items = Some(1);
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
        if own_workdir {
            let _ = std::fs::remove_dir_all(&workdir);
        }
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
        let typo = FileConfig::parse("[runtime.engine]\ncache_dri = \"/x\"\n").unwrap();
        assert!(typo.check().unwrap_err().to_string().contains("cache_dri"));
        let bad = FileConfig::parse("max_idle = \"soon\"\n").unwrap();
        assert!(bad.check().is_err());
        let e = FileConfig::parse("environment_key = \"sk\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("environment_key"), "{e:#}");
        let c = FileConfig::parse(
            "environment_id = \"env_1\"\nmax_idle = \"2m\"\nconcurrency = 3\nlog_format = \"json\"\n[runtime]\nx = 1\n",
        )
        .unwrap();
        assert_eq!(c.concurrency, Some(3));
        assert_eq!(c.log_format, Some(LogFormat::Json));
        assert!(c.runtime.is_some());
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
