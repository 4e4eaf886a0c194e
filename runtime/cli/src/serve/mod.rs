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
//! [`Secret`](wasm_sandbox_worker::secret::Secret).
//!
//! Modules: [`args`] (the flags), [`file_config`] (the `--config` file, shared with `replay`,
//! `config check`, `doctor` and `snapshots`), [`settings`] (flags over file over defaults, and
//! the worker library's `WorkerConfig`), [`logging`], [`signals`] (key scrubbing, SIGTERM/SIGINT),
//! [`local`] (the `--local` demo on the embedded fake control plane). The worker itself —
//! poll loop, ops endpoints, sandbox provider — is the `wasm-sandbox-worker` library, driven
//! here through [`run_worker`].

pub mod args;
pub mod file_config;
pub mod local;
pub mod logging;
pub mod settings;
pub mod signals;

pub use args::{ENVIRONMENT_KEY_ENV, ServeArgs};
pub use file_config::FileConfig;
pub use logging::{init_logging, report_fatal};
pub use settings::Settings;
pub use signals::{install_signal_handlers, scrub_environment_key};

use wasm_sandbox_worker::core_adapter::CoreProvider;
use wasm_sandbox_worker::worker::{Shutdown, claim_workdir, run_worker};

use logging::fatal_log_format;

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
        return local::run(settings).await;
    }
    let (Some(environment_id), Some(key)) = (
        settings.environment_id.clone(),
        settings.environment_key.clone(),
    ) else {
        anyhow::bail!("--environment-id and --environment-key are required");
    };
    // Lock the workdir, sweep stale sessions, mount them nosuid,nodev: before the sandbox pool
    // starts filling below it. Held (and the mount kept) until the worker returns.
    let workdir = claim_workdir(&settings.workdir)?;
    let provider = CoreProvider::from_config(
        settings.core_config(),
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
