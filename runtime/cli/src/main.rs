//! `wasm-sandbox`: the sandbox worker for Claude Managed Agents self-hosted
//! environments.
//!
//! * `wasm-sandbox serve` polls an environment's work queue and serves its
//!   sessions; `serve --local` does so against an embedded fake control
//!   plane with a sample session.
//! * `wasm-sandbox replay --workdir DIR < calls.jsonl` runs tool calls given
//!   as JSON lines and prints the exact `tool_result` content the worker
//!   would post, one JSON line per call.
//! * `wasm-sandbox doctor` checks this host for what `serve` needs (user
//!   namespaces, AppArmor, bubblewrap, a real sandbox start, Landlock,
//!   seccomp, cgroups, ONNX Runtime, the compile cache) and says what to fix.
//! * `wasm-sandbox usage --ledger DIR` summarises the usage ledger per environment
//!   and day (table, JSON or CSV).
//! * `wasm-sandbox snapshots list|delete --config FILE [--session ID]` lists or deletes the
//!   session snapshots of `[runtime.persistence]`.

mod doctor;
mod replay;
mod serve;
mod snapshots;
mod usage;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Sandbox worker for Claude Managed Agents self-hosted environments.
#[derive(Parser, Debug)]
#[command(name = "wasm-sandbox", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a self-hosted environment's work queue (the worker).
    ///
    /// `--local` runs the whole job against an embedded fake control plane,
    /// with no credentials and no network.
    Serve(Box<serve::ServeArgs>),
    /// Run tool calls from JSON lines on stdin; print one result line per call.
    Replay(replay::ReplayCommand),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check this host for what `serve` needs; say what to fix. Exits non-zero when
    /// `serve` cannot work here.
    Doctor(doctor::DoctorCommand),
    /// Summarise a usage ledger per environment and day (sessions, active CPU-seconds,
    /// vCPU-hours and GB-hours of the shape while active).
    Usage(usage::UsageCommand),
    /// List or delete stored session snapshots (`[runtime.persistence]`).
    Snapshots(snapshots::SnapshotsCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Check a config file as `serve` and `replay` would (unknown keys, units, the
    /// `[runtime]` table; errors as FILE:LINE:COLUMN with the key) without starting anything;
    /// print the runtime configuration in effect as TOML.
    Check {
        /// The TOML file.
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

fn config(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { config } => {
            let file = serve::FileConfig::load(&config)?;
            let runtime = file
                .check()
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            /// The `[runtime]` table under its own name, so the output is itself a valid file.
            #[derive(serde::Serialize)]
            struct Shown {
                runtime: wasm_sandbox_runtime::RuntimeConfig,
            }
            println!("# {}: ok; the [runtime] table in effect:", config.display());
            print!("{}", toml::to_string(&Shown { runtime })?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    // Inside a bash sandbox this binary is also the init step (Landlock,
    // seccomp, limits, then exec bash): it is bind-mounted at the sandbox's
    // init path, or called as `wasm-sandbox __sandbox-init ...`.
    wasm_sandbox_native::run_as_init_if_invoked();
    // Also the bounded compiler of `wasm-run` components (started as
    // `wasm-sandbox-compile`, see `wasm_sandbox_runtime::compiler_main`).
    wasm_sandbox_runtime::run_as_compiler_if_invoked();
    let mut rest = std::env::args_os().skip(1);
    if rest.next().as_deref() == Some(std::ffi::OsStr::new("__sandbox-init")) {
        wasm_sandbox_native::sandbox_init_main(rest);
    }
    use_self_as_init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run_serve(*args),
        Command::Replay(cmd) => {
            init_tracing("warn");
            cmd.execute()
        }
        Command::Config(cmd) => config(cmd),
        Command::Doctor(cmd) => cmd.execute(),
        Command::Usage(cmd) => {
            init_tracing("error");
            cmd.execute()
        }
        Command::Snapshots(cmd) => {
            init_tracing("error");
            cmd.execute()
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            // One JSON line when `serve` logs JSON, else `error: …`.
            serve::report_fatal(&err);
            ExitCode::FAILURE
        }
    }
}

fn run_serve(args: serve::ServeArgs) -> anyhow::Result<ExitCode> {
    // The environment key must never reach a child: drop it from the process
    // environment before any thread (or sandbox) exists.
    serve::scrub_environment_key();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(serve::serve(args))?;
    Ok(ExitCode::SUCCESS)
}

/// Makes this binary the sandbox init helper unless one is configured
/// (`WASM_SANDBOX_INIT`) or installed beside it (`wasm-sandbox-init`).
fn use_self_as_init() {
    if std::env::var_os("WASM_SANDBOX_INIT").is_some()
        || wasm_sandbox_native::locate_init().is_some()
    {
        return;
    }
    if let Ok(exe) = std::env::current_exe() {
        // SAFETY: called at the top of `main`, before any other thread exists.
        unsafe { std::env::set_var("WASM_SANDBOX_INIT", exe) };
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the default level.
fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
