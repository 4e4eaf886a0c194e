//! The flags of `wasm-sandbox serve` ([`ServeArgs`]) and their value parsers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wasm_sandbox_worker::secret::Secret;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
