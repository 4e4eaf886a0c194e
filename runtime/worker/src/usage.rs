//! The usage record of each served work item: measured at teardown, appended to the local
//! ledger before the item is stopped, counted in `/metrics`, and (optionally) sent to an HTTP
//! sink. The record, ledger and sink are `wasm-sandbox-usage`; this module is the worker's side:
//! the `[usage]` table, what a sandbox reports ([`SessionUsage`]), and [`UsageRecorder`].
//!
//! # Order at teardown
//!
//! [`crate::worker`] calls [`UsageRecorder::record`] as soon as the session's run has ended:
//! * **before the sandbox is closed**: closing removes the bash cgroup, whose counters are the
//!   bash CPU and peak memory;
//! * **before the stop is sent**: the record is `fdatasync`ed into the ledger first, so a worker
//!   killed after the stop (or during it) has its record on disk, and the sink sends it after a
//!   restart. No network round trip is added: the sink runs on its own task.
//!   A ledger that cannot write (a full disk) holds the record in memory and makes the worker
//!   unready until it can ([`recorder`]).
//!
//! Processes a session leaves running after its last call keep using CPU until the close a few
//! milliseconds later; that tail is not in the record.
//!
//! # What a session controls
//!
//! Nothing in the record is taken from the session's own output: counts and times are measured
//! by the worker (the core runtime's counters, the kernel's cgroup counters), tool names are
//! only the six sandbox tools, and the ids are the control plane's (work ids are checked as
//! path components before the item is served).

pub mod recorder;

pub use recorder::{MAX_PENDING, RETRIES, RETRY_EVERY, UsageRecorder};

pub use crate::metrics::{EnvironmentLabels, UsageMetrics};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use wasm_sandbox_usage::{CpuSeconds, NetworkUsage, NnUsage, Shape, UsageRecord};

/// What a session's sandbox used, as the sandbox measured it
/// ([`crate::sandbox::SandboxSession::usage`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionUsage {
    /// Sum of the tool calls' wall times.
    pub active: Duration,
    /// Calls per sandbox tool.
    pub tool_calls: BTreeMap<String, u64>,
    /// CPU of the bash sandbox's processes (its cgroup); `None` = not measured.
    pub bash_cpu: Option<Duration>,
    /// CPU of the threads running the file-tools component.
    pub wasm_tools_cpu: Duration,
    /// CPU of the threads running `wasm-run` components.
    pub wasm_run_cpu: Duration,
    /// Peak memory of the bash sandbox; `None` = not measured.
    pub memory_peak_bytes: Option<u64>,
    /// Peak disk use of the session; `None` = not measured.
    pub disk_peak_bytes: Option<u64>,
    /// Remote wasi-nn calls.
    pub nn_calls: u64,
    /// Remote wasi-nn request plus response bytes.
    pub nn_bytes: u64,
    /// Network use through the session's egress proxy; `None` = no proxy measured it.
    pub network: Option<NetworkUsage>,
    /// The shape configured for the session.
    pub shape: Option<Shape>,
}

/// The `[usage]` table of the config file.
///
/// ```toml
/// [usage]
/// ledger_dir = "/var/lib/wasm-sandbox/usage"   # default <workdir>/usage
/// rotate_size = "64MiB"
/// sink_url = "https://billing.example/usage"   # optional
/// auth_header_env = "USAGE_SINK_AUTH"           # the header's value, e.g. "Bearer …"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageFileConfig {
    /// The ledger directory. Default: `<workdir>/usage`.
    pub ledger_dir: Option<PathBuf>,
    /// Size of a ledger segment before the next one is started. Default: `"64MiB"`.
    #[serde(default = "default_rotate_size", with = "wasm_sandbox_units::size")]
    pub rotate_size: u64,
    /// Where each record is `POST`ed (JSON, `Idempotency-Key: <record id>`). Default: none
    /// (the ledger only). No user info (`user:pass@`): put credentials in the auth header.
    /// Redirects are not followed. Logged without its query.
    pub sink_url: Option<String>,
    /// The name of an environment variable holding the auth header's value (say
    /// `Bearer …`); the value never goes in the file. Needs an `https://` `sink_url`
    /// (or `http://` to a loopback address). Default: no auth header.
    pub auth_header_env: Option<String>,
    /// The auth header's name. Default: `"authorization"`.
    #[serde(default = "default_auth_header_name")]
    pub auth_header_name: String,
    /// Bound of one sink request. Default: `"10s"`.
    #[serde(
        default = "default_sink_timeout",
        with = "wasm_sandbox_units::duration"
    )]
    pub sink_timeout: Duration,
    /// Longest wait between retries (exponential backoff with jitter from 500 ms), at most
    /// `"1h"`. Default: `"60s"`.
    #[serde(default = "default_max_backoff", with = "wasm_sandbox_units::duration")]
    pub sink_max_backoff: Duration,
}

fn default_rotate_size() -> u64 {
    wasm_sandbox_usage::DEFAULT_ROTATE_SIZE
}
fn default_auth_header_name() -> String {
    "authorization".to_owned()
}
fn default_sink_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}

impl Default for UsageFileConfig {
    fn default() -> UsageFileConfig {
        UsageFileConfig {
            ledger_dir: None,
            rotate_size: default_rotate_size(),
            sink_url: None,
            auth_header_env: None,
            auth_header_name: default_auth_header_name(),
            sink_timeout: default_sink_timeout(),
            sink_max_backoff: default_max_backoff(),
        }
    }
}

impl UsageFileConfig {
    /// Checks what the types cannot say (`wasm-sandbox config check` and `serve`).
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.rotate_size >= 4096, "usage.rotate_size: at least 4KiB");
        if let Some(url) = &self.sink_url {
            let u = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("usage.sink_url: {e}"))?;
            anyhow::ensure!(
                matches!(u.scheme(), "http" | "https"),
                "usage.sink_url: must be http:// or https://"
            );
            // The URL is in the config file and the logs: credentials belong in the header.
            anyhow::ensure!(
                u.username().is_empty() && u.password().is_none(),
                "usage.sink_url: must not carry user info (user:password@); use usage.auth_header_env"
            );
            // A secret header over plain HTTP is readable on every hop; loopback never leaves
            // the host (a local relay or a test endpoint).
            if self.auth_header_env.is_some() && u.scheme() == "http" && !is_loopback(&u) {
                anyhow::bail!(
                    "usage.auth_header_env: the auth header would go in clear text over http:// to {}; use https://",
                    u.host_str().unwrap_or("?")
                );
            }
        } else {
            anyhow::ensure!(
                self.auth_header_env.is_none(),
                "usage.auth_header_env: set without usage.sink_url"
            );
        }
        reqwest::header::HeaderName::from_bytes(self.auth_header_name.as_bytes())
            .map_err(|e| anyhow::anyhow!("usage.auth_header_name: {e}"))?;
        anyhow::ensure!(
            !self.sink_timeout.is_zero(),
            "usage.sink_timeout: must be positive"
        );
        anyhow::ensure!(
            self.sink_max_backoff >= Duration::from_millis(500)
                && self.sink_max_backoff <= Duration::from_secs(3600),
            "usage.sink_max_backoff: between 500ms and 1h"
        );
        Ok(())
    }

    /// The ledger directory for `workdir`.
    pub fn ledger_dir(&self, workdir: &Path) -> PathBuf {
        self.ledger_dir
            .clone()
            .unwrap_or_else(|| workdir.join("usage"))
    }

    /// The sink's settings, reading the auth header's value from the environment.
    ///
    /// # Errors
    /// When `auth_header_env` names a variable that is unset or not a valid header value.
    pub fn sink(&self) -> anyhow::Result<Option<wasm_sandbox_usage::SinkConfig>> {
        let Some(url) = &self.sink_url else {
            return Ok(None);
        };
        let mut sink = wasm_sandbox_usage::SinkConfig::new(url.clone());
        sink.timeout = self.sink_timeout;
        sink.max_backoff = self.sink_max_backoff;
        if let Some(var) = &self.auth_header_env {
            let value = std::env::var(var).map_err(|_| {
                anyhow::anyhow!("usage.auth_header_env: environment variable {var} is not set")
            })?;
            reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                anyhow::anyhow!("usage.auth_header_env: {var} is not a valid header value")
            })?;
            sink.auth_header = Some((self.auth_header_name.clone(), value));
        }
        Ok(Some(sink))
    }
}

/// Whether `url`'s host is a loopback address (`localhost`, `127.0.0.0/8`, `::1`).
fn is_loopback(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(|h| {
        h.eq_ignore_ascii_case("localhost")
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// Who served what: the context of a record.
#[derive(Clone, Copy, Debug)]
pub struct ItemContext<'a> {
    /// `env_…`.
    pub environment_id: &'a str,
    /// The work item.
    pub work_id: &'a str,
    /// The session.
    pub session_id: &'a str,
    /// This worker.
    pub worker_id: &'a str,
    /// When the item was claimed.
    pub claimed_at: Instant,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The record of one served item, `now` being the teardown time.
pub fn build_record(item: ItemContext<'_>, usage: &SessionUsage, now: SystemTime) -> UsageRecord {
    let claimed = now
        .checked_sub(item.claimed_at.elapsed())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // A nonce per claim: a re-claim of the same work item gets its own record (and key).
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    UsageRecord {
        schema: wasm_sandbox_usage::SCHEMA_VERSION,
        record_id: wasm_sandbox_usage::record_id(
            item.environment_id,
            item.session_id,
            item.work_id,
            &nonce[..16],
        ),
        environment_id: item.environment_id.to_owned(),
        work_id: item.work_id.to_owned(),
        session_id: item.session_id.to_owned(),
        worker_id: item.worker_id.to_owned(),
        claimed_at: wasm_sandbox_usage::rfc3339(claimed),
        torn_down_at: wasm_sandbox_usage::rfc3339(now),
        active_ms: u64::try_from(usage.active.as_millis()).unwrap_or(u64::MAX),
        cpu: CpuSeconds::new(
            usage.bash_cpu.map(secs),
            secs(usage.wasm_tools_cpu),
            secs(usage.wasm_run_cpu),
        ),
        memory_peak_bytes: usage.memory_peak_bytes,
        disk_peak_bytes: usage.disk_peak_bytes,
        tool_calls: usage.tool_calls.clone(),
        wasi_nn: NnUsage {
            calls: usage.nn_calls,
            bytes: usage.nn_bytes,
        },
        network: usage.network,
        shape: usage.shape,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_with_defaults_and_refuses_unknown_keys() {
        let c: UsageFileConfig = toml::from_str("sink_url = \"http://127.0.0.1:9/u\"").unwrap();
        assert_eq!(c.rotate_size, 64 << 20);
        assert_eq!(c.auth_header_name, "authorization");
        c.check().unwrap();
        let c: UsageFileConfig = toml::from_str("rotate_size = \"1MiB\"").unwrap();
        assert_eq!(c.rotate_size, 1 << 20);
        assert!(toml::from_str::<UsageFileConfig>("sink = \"x\"").is_err());
        let c: UsageFileConfig = toml::from_str("sink_url = \"ftp://x\"").unwrap();
        assert!(c.check().is_err());
        let c: UsageFileConfig = toml::from_str("auth_header_env = \"X\"").unwrap();
        assert!(c.check().is_err());
    }

    /// Review finding: secrets of the sink URL and header must not leak by config.
    #[test]
    fn the_check_refuses_user_info_clear_text_auth_and_an_unbounded_backoff() {
        let check = |toml_text: &str| {
            toml::from_str::<UsageFileConfig>(toml_text)
                .unwrap()
                .check()
                .map_err(|e| e.to_string())
        };
        let e = check("sink_url = \"https://u:pw@billing.example/u\"").unwrap_err();
        assert!(
            e.contains("usage.sink_url") && e.contains("user info"),
            "{e}"
        );
        let e =
            check("sink_url = \"http://billing.example/u\"\nauth_header_env = \"T\"").unwrap_err();
        assert!(
            e.contains("usage.auth_header_env") && e.contains("http://"),
            "{e}"
        );
        for ok in [
            "sink_url = \"https://billing.example/u\"\nauth_header_env = \"T\"",
            "sink_url = \"http://127.0.0.1:9/u\"\nauth_header_env = \"T\"",
            "sink_url = \"http://[::1]:9/u\"\nauth_header_env = \"T\"",
            "sink_url = \"http://localhost:9/u\"\nauth_header_env = \"T\"",
            "sink_url = \"http://billing.example/u\"",
        ] {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let e = check("sink_max_backoff = \"1000h\"").unwrap_err();
        assert!(e.contains("usage.sink_max_backoff"), "{e}");
        let e = check("sink_max_backoff = \"1ms\"").unwrap_err();
        assert!(e.contains("usage.sink_max_backoff"), "{e}");
    }

    #[test]
    fn an_unset_auth_variable_is_an_error_naming_it() {
        let c: UsageFileConfig = toml::from_str(
            "sink_url = \"http://x/\"\nauth_header_env = \"WASM_SANDBOX_TEST_UNSET_VAR\"",
        )
        .unwrap();
        let e = c.sink().unwrap_err().to_string();
        assert!(e.contains("WASM_SANDBOX_TEST_UNSET_VAR"), "{e}");
    }

    #[test]
    fn counters_are_labelled_by_environment_only() {
        let metrics = crate::metrics::Metrics::new();
        let item = ItemContext {
            environment_id: "env_m",
            work_id: "work_1",
            session_id: "sesn_1",
            worker_id: "w",
            claimed_at: Instant::now(),
        };
        let usage = SessionUsage {
            active: Duration::from_millis(2500),
            bash_cpu: Some(Duration::from_millis(1500)),
            network: Some(NetworkUsage {
                bytes_up: 100,
                bytes_down: 2000,
                connections: 1,
                denials: 0,
            }),
            ..SessionUsage::default()
        };
        for _ in 0..2 {
            metrics
                .usage
                .add(&build_record(item, &usage, SystemTime::now()));
        }
        let text = metrics.encode();
        for needle in [
            r#"wasm_sandbox_usage_sessions_total{environment="env_m"} 2"#,
            r#"wasm_sandbox_usage_cpu_seconds_total{environment="env_m"} 3.0"#,
            r#"wasm_sandbox_usage_active_seconds_total{environment="env_m"} 5.0"#,
            r#"wasm_sandbox_usage_network_sent_bytes_total{environment="env_m"} 200"#,
            r#"wasm_sandbox_usage_network_received_bytes_total{environment="env_m"} 4000"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(
            !text.contains("sesn_1") && !text.contains("work_1"),
            "{text}"
        );
    }

    #[test]
    fn a_record_carries_the_measurements_and_a_per_claim_id() {
        let usage = SessionUsage {
            active: Duration::from_millis(1500),
            tool_calls: BTreeMap::from([("bash".to_owned(), 2)]),
            bash_cpu: Some(Duration::from_millis(750)),
            wasm_tools_cpu: Duration::from_millis(250),
            shape: Some(Shape {
                vcpus: 4.0,
                memory_bytes: Some(4 << 30),
            }),
            ..SessionUsage::default()
        };
        let item = ItemContext {
            environment_id: "env_1",
            work_id: "work_1",
            session_id: "sesn_1",
            worker_id: "w",
            claimed_at: Instant::now(),
        };
        let a = build_record(item, &usage, SystemTime::now());
        let b = build_record(item, &usage, SystemTime::now());
        assert!(a.record_id.starts_with("env_1/sesn_1/work_1/"));
        assert_ne!(a.record_id, b.record_id);
        assert_eq!(a.active_ms, 1500);
        assert_eq!(a.cpu.total, 1.0);
        assert_eq!(a.cpu.bash, Some(0.75));
        assert!(a.claimed_at <= a.torn_down_at);
    }
}
