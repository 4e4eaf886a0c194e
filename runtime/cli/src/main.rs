//! `wasm-sandbox`: the sandbox worker for Claude Managed Agents self-hosted
//! environments.
//!
//! * `wasm-sandbox replay --workdir DIR < calls.jsonl` runs tool calls given
//!   as JSON lines and prints the exact `tool_result` content the worker
//!   would post, one JSON line per call.

mod replay;

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
    /// Run tool calls from JSON lines on stdin; print one result line per call.
    Replay(replay::ReplayCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(cmd) => {
            init_tracing("warn");
            cmd.execute()
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the default level.
fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}
