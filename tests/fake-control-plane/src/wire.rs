//! Wire types of the control plane, written from the `anthropic` Python SDK 2.10.0 models.
//!
//! These are deliberately **independent** of the worker crate's types: the fake and the worker
//! each read the SDK on their own, so a disagreement between them about a field name, a
//! null-vs-absent choice or a query parameter shows up as a failing end-to-end test instead of
//! being compiled away. Each type names the SDK model it mirrors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The beta header value required on every `/v1/environments/**` and `/v1/sessions/**` call.
pub const MANAGED_AGENTS_BETA: &str = "managed-agents-2026-04-01";
/// The beta header value the SDK sends on `/v1/memory_stores/**`.
pub const AGENT_MEMORY_BETA: &str = "agent-memory-2026-07-22";
/// The first-beat sentinel for `expected_last_heartbeat`.
pub const NO_HEARTBEAT: &str = "NO_HEARTBEAT";

/// `BetaSelfHostedWork.state` (and the lease state of a heartbeat).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkState {
    /// Waiting to be claimed (or claimed but not yet acknowledged).
    Queued,
    /// Acknowledged; the first heartbeat has not arrived yet.
    Starting,
    /// A worker holds the lease.
    Active,
    /// A graceful stop was requested; the worker should tear down and force-stop.
    Stopping,
    /// Terminal.
    Stopped,
}

impl WorkState {
    /// The wire spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            WorkState::Queued => "queued",
            WorkState::Starting => "starting",
            WorkState::Active => "active",
            WorkState::Stopping => "stopping",
            WorkState::Stopped => "stopped",
        }
    }
}

/// `BetaSessionWorkData` (`{"type": "session", "id": "sesn_…"}`), also used for the
/// `healthcheck` items the generated PY type does not model (TS makes `type` optional).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkData {
    /// `session`, `healthcheck`, or anything else a future server sends.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The session id for `session` items.
    pub id: String,
}

/// `BetaSelfHostedWork` (`types/beta/environments/beta_self_hosted_work.py`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Work {
    /// `work_…`
    pub id: String,
    /// Always `work`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `env_…`
    pub environment_id: String,
    /// What to do.
    pub data: WorkData,
    /// Current state.
    pub state: WorkState,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Per-item credential payload; set only on the poll response.
    pub secret: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339 or null.
    pub acknowledged_at: Option<String>,
    /// RFC 3339 or null.
    pub started_at: Option<String>,
    /// RFC 3339 or null.
    pub latest_heartbeat_at: Option<String>,
    /// RFC 3339 or null.
    pub stop_requested_at: Option<String>,
    /// RFC 3339 or null.
    pub stopped_at: Option<String>,
}

/// `BetaSelfHostedWorkHeartbeatResponse`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Always `work_heartbeat`.
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339 of the recorded heartbeat, or `""` when none is recorded.
    pub last_heartbeat: String,
    /// Whether this beat extended the lease.
    pub lease_extended: bool,
    /// Work state now.
    pub state: WorkState,
    /// Effective lease TTL.
    pub ttl_seconds: u64,
}

/// `BetaWorkLeaseState`: `error.details.current_state` of a 412 heartbeat reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkLeaseState {
    /// Stored heartbeat, or null when there has been none.
    pub last_heartbeat: Option<String>,
    /// Always false on a refused beat.
    pub lease_extended: bool,
    /// Work state now.
    pub state: WorkState,
    /// Lease TTL.
    pub ttl_seconds: u64,
}

/// `BetaSelfHostedWorkQueueStats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Always `work_queue_stats`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Items waiting to be claimed.
    pub depth: u64,
    /// Items polled but not yet acknowledged.
    pub pending: u64,
    /// Oldest waiting or pending item.
    pub oldest_queued_at: Option<String>,
    /// Distinct `Anthropic-Worker-ID`s that polled within the window (30 s).
    pub workers_polling: Option<u64>,
}

/// A cursor page (`SyncPageCursor`): `{"data": [...], "next_page": "…" | null}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// Items of this page.
    pub data: Vec<T>,
    /// Cursor for the next page, null at the end.
    pub next_page: Option<String>,
}

/// The decoded work `secret` (TS `BetaWorkSecret`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkSecret {
    /// The bearer for this item's calls (`sk-ant-req-…`).
    pub sessions_token: String,
    /// Optional base URL for downstream calls (no SDK reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
}

/// `ErrorResponse` (`types/shared/error_response.py`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error object.
    pub error: ErrorObject,
    /// `req_…`
    pub request_id: Option<String>,
}

/// `ErrorObject` with the optional `details`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// `invalid_request_error`, `authentication_error`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable; never branch on it.
    pub message: String,
    /// `{"error_code": …, …}` when the error has a code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Body of `POST …/work/{id}/stop` (`WorkStopParams`): `{}` or `{"force": bool}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopParams {
    /// Force-stop without graceful shutdown.
    #[serde(default)]
    pub force: Option<bool>,
}

/// Body of `POST …/work/{id}` (`WorkUpdateParams`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkParams {
    /// Merge patch; `null` deletes a key.
    pub metadata: BTreeMap<String, Option<String>>,
}

/// `BetaSkillVersion`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkillVersion {
    /// Concrete version id (epoch microseconds in the old beta).
    pub id: String,
    /// Always `skill_version`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `skill_…`
    pub skill_id: String,
    /// The kebab-case skill name (the archive's top directory).
    pub name: String,
    /// Description.
    pub description: String,
    /// RFC 3339.
    pub created_at: String,
}

/// `BetaManagedAgentsMemory`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// `mem_…`
    pub id: String,
    /// Always `memory`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `memstore_…`
    pub memory_store_id: String,
    /// Starts with `/`.
    pub path: String,
    /// Null in `view=basic`.
    pub content: Option<String>,
    /// Lowercase hex SHA-256 of the UTF-8 content.
    pub content_sha256: String,
    /// UTF-8 byte length of the content.
    pub content_size_bytes: u64,
    /// `memver_…`
    pub memory_version_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// `BetaManagedAgentsMemoryPrefix` (list item when `depth` groups deeper paths).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryPrefix {
    /// Always `memory_prefix`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The prefix, ending with `/`.
    pub path: String,
}

/// `BetaManagedAgentsDeletedMemory`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeletedMemory {
    /// `mem_…`
    pub id: String,
    /// Always `memory_deleted`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Body of `POST /v1/memory_stores/{id}/memories` (`MemoryCreateParams`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryCreateParams {
    /// Path of the new memory.
    pub path: String,
    /// UTF-8 text (may be `""`; `null` is allowed by the type and treated as empty).
    pub content: Option<String>,
}

/// `BetaManagedAgentsPreconditionParam`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Precondition {
    /// Always `content_sha256`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Expected current sha.
    pub content_sha256: Option<String>,
}

/// Body of `POST /v1/memory_stores/{id}/memories/{mem_id}` (`MemoryUpdateParams`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryUpdateParams {
    /// New content.
    #[serde(default)]
    pub content: Option<String>,
    /// New path (rename).
    #[serde(default)]
    pub path: Option<String>,
    /// Optimistic-concurrency guard.
    #[serde(default)]
    pub precondition: Option<Precondition>,
}

/// Body of `POST /v1/sessions/{id}/events`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendEventsParams {
    /// The events to append (the worker sends exactly one).
    pub events: Vec<Value>,
}

/// `BetaManagedAgentsUserToolResultEventParams`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolResultParams {
    /// `user.tool_result`
    #[serde(rename = "type")]
    pub kind: String,
    /// The `agent.tool_use` event id.
    pub tool_use_id: String,
    /// Result blocks.
    #[serde(default)]
    pub content: Option<Vec<Value>>,
    /// Error flag.
    #[serde(default)]
    pub is_error: Option<bool>,
}

/// `BetaManagedAgentsUserCustomToolResultEventParams`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomToolResultParams {
    /// `user.custom_tool_result`
    #[serde(rename = "type")]
    pub kind: String,
    /// The `agent.custom_tool_use` event id.
    pub custom_tool_use_id: String,
    /// Result blocks.
    #[serde(default)]
    pub content: Option<Vec<Value>>,
    /// Error flag.
    #[serde(default)]
    pub is_error: Option<bool>,
}

/// `BetaManagedAgentsUserToolConfirmationEventParams`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfirmationParams {
    /// `user.tool_confirmation`
    #[serde(rename = "type")]
    pub kind: String,
    /// The gated call.
    pub tool_use_id: String,
    /// `allow` or `deny`.
    pub result: String,
    /// Optional reason for a deny.
    #[serde(default)]
    pub deny_message: Option<String>,
}

/// Builds the frame of one server-sent event: `event: <name>\ndata: <json>\n\n`.
#[must_use]
pub fn sse_frame(name: &str, data: &str) -> String {
    let mut out = String::with_capacity(name.len() + data.len() + 16);
    out.push_str("event: ");
    out.push_str(name);
    out.push('\n');
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}
