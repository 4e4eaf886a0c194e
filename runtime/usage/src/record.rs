//! The usage record: one JSON object per work item of a session, written at teardown.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Version of the record layout; bumped when a field changes meaning or is removed (new
/// optional fields keep it).
pub const SCHEMA_VERSION: u32 = 1;

/// What one work item of a session used. The JSON form is the ledger line and the sink's
/// request body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// [`SCHEMA_VERSION`] when written.
    pub schema: u32,
    /// Unique and stable: `<environment>/<session>/<work>/<claim nonce>`. The idempotency key
    /// of the sink (a resend of the same record carries the same key).
    pub record_id: String,
    /// `env_…`.
    pub environment_id: String,
    /// The work item.
    pub work_id: String,
    /// The session.
    pub session_id: String,
    /// The worker that served it.
    pub worker_id: String,
    /// When the item was claimed (RFC 3339, UTC, milliseconds).
    pub claimed_at: String,
    /// When the session's sandbox was measured at teardown (RFC 3339, UTC, milliseconds).
    pub torn_down_at: String,
    /// Sum of the wall times of the session's tool calls, in milliseconds (idle time between
    /// calls is not in it).
    pub active_ms: u64,
    /// CPU time, split by where it ran.
    pub cpu: CpuSeconds,
    /// Peak memory of the bash sandbox (its cgroup), bytes; `null` where not measured.
    pub memory_peak_bytes: Option<u64>,
    /// Peak bytes the session had on disk; `null` where not measured.
    pub disk_peak_bytes: Option<u64>,
    /// Tool calls per tool name (`{"bash": 3, "read": 1}`).
    pub tool_calls: BTreeMap<String, u64>,
    /// Remote wasi-nn use.
    pub wasi_nn: NnUsage,
    /// Network use of the session's egress proxy; `null` where no proxy accounted for it.
    pub network: Option<NetworkUsage>,
    /// The shape in effect (what billing multiplies active time by); `null` when unknown.
    pub shape: Option<Shape>,
}

/// CPU seconds of a session, by where they ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSeconds {
    /// The bash sandbox's cgroup (`cpuacct.usage` / `cpu.stat usage_usec`); `null` where no
    /// cgroup measured it.
    pub bash: Option<f64>,
    /// Threads running the file tools' component (`read write edit glob grep`).
    pub wasm_tools: f64,
    /// Threads running `wasm-run` components.
    pub wasm_run: f64,
    /// The sum of the three (a `null` bash counts as 0).
    pub total: f64,
}

impl CpuSeconds {
    /// The split with `total` computed.
    pub fn new(bash: Option<f64>, wasm_tools: f64, wasm_run: f64) -> CpuSeconds {
        CpuSeconds {
            bash,
            wasm_tools,
            wasm_run,
            total: bash.unwrap_or(0.0) + wasm_tools + wasm_run,
        }
    }
}

/// Remote wasi-nn calls and bytes (request plus response).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NnUsage {
    /// Remote `compute` attempts.
    pub calls: u64,
    /// Request plus response bytes.
    pub bytes: u64,
}

/// Network use through the session's egress proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkUsage {
    /// Bytes sent by the session.
    pub bytes_up: u64,
    /// Bytes received by the session.
    pub bytes_down: u64,
    /// Connections opened.
    pub connections: u64,
    /// Connections refused by policy.
    pub denials: u64,
}

/// The sandbox shape configured for the session (`[runtime.shape]`): what its active time is
/// billed at. Recorded as configured, whether the host enforced every limit or not (the
/// worker's `/readyz` and log say which limits are active).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    /// vCPUs (fractional allowed).
    pub vcpus: f64,
    /// Memory limit, bytes; `null` = no memory cap in the shape (adds nothing to GB-hours).
    pub memory_bytes: Option<u64>,
}

/// `<environment>/<session>/<work>/<nonce>`: the record id and idempotency key.
pub fn record_id(environment_id: &str, session_id: &str, work_id: &str, nonce: &str) -> String {
    format!("{environment_id}/{session_id}/{work_id}/{nonce}")
}

/// `t` as RFC 3339 in UTC with milliseconds (`2026-12-07T18:00:00.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
