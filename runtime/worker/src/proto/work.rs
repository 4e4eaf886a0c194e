//! The work API's types (protocol §3–§4): work items and their secret, heartbeats and the
//! lease, queue statistics, stop bodies, the error envelope.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::secret::Secret;

/// State of a work item. Unknown values are kept as [`WorkState::Unknown`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkState {
    /// Waiting to be claimed.
    Queued,
    /// Acked, no heartbeat yet.
    Starting,
    /// Leased and heartbeating.
    Active,
    /// A graceful stop was requested.
    Stopping,
    /// Terminal.
    Stopped,
    /// A state this worker does not know.
    #[serde(other)]
    Unknown,
}

impl WorkState {
    /// Whether the state asks the worker to end the session.
    pub fn is_stopping(&self) -> bool {
        matches!(self, WorkState::Stopping | WorkState::Stopped)
    }
}

/// `data` of a work item: `{"type": "session", "id": "sesn_…"}`, or a `healthcheck`, or an
/// unknown kind (`type` may even be missing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkData {
    /// `session`, `healthcheck`, or something newer.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The session id for `session` items.
    #[serde(default)]
    pub id: String,
}

impl WorkData {
    /// The session id when this is a session item.
    pub fn session_id(&self) -> Option<&str> {
        (self.kind.as_deref() == Some("session") && !self.id.is_empty()).then_some(self.id.as_str())
    }
}

/// A work item (`BetaSelfHostedWork`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Work {
    /// `work_…`.
    pub id: String,
    /// Always `work`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `env_…`.
    #[serde(default)]
    pub environment_id: String,
    /// What to do.
    #[serde(default)]
    pub data: WorkData,
    /// Item state.
    #[serde(default)]
    pub state: Option<WorkState>,
    /// User metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Per-item credential payload, only on the poll response.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: Option<String>,
    /// RFC 3339 or null.
    #[serde(default)]
    pub acknowledged_at: Option<String>,
    /// RFC 3339 or null.
    #[serde(default)]
    pub started_at: Option<String>,
    /// RFC 3339 or null.
    #[serde(default)]
    pub latest_heartbeat_at: Option<String>,
    /// RFC 3339 or null.
    #[serde(default)]
    pub stop_requested_at: Option<String>,
    /// RFC 3339 or null.
    #[serde(default)]
    pub stopped_at: Option<String>,
}

/// The decoded `secret` payload: URL-safe base64 (padding optional) of a JSON object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkSecret {
    /// The bearer for every per-item call (`sk-ant-req-…`).
    pub sessions_token: Option<Secret>,
    /// Declared by the TS type, read by no SDK; parsed and not used.
    pub api_base_url: Option<String>,
}

impl WorkSecret {
    /// Decodes a secret the way both SDKs do: restore padding, URL-safe alphabet, the JSON must
    /// be an object and the token a non-empty string. Anything else yields no token.
    pub fn decode(secret: &Secret) -> WorkSecret {
        let raw = secret.expose().trim();
        if raw.is_empty() {
            return WorkSecret::default();
        }
        let unpadded = raw.trim_end_matches('=');
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(unpadded) else {
            return WorkSecret::default();
        };
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) else {
            return WorkSecret::default();
        };
        let sessions_token = match map.get("sessions_token") {
            Some(Value::String(t)) if !t.is_empty() => Some(Secret::new(t.clone())),
            _ => None,
        };
        let api_base_url = match map.get("api_base_url") {
            Some(Value::String(u)) if !u.is_empty() => Some(u.clone()),
            _ => None,
        };
        WorkSecret {
            sessions_token,
            api_base_url,
        }
    }

    /// Encodes a payload (base64url without padding), as the server does. For tests and the
    /// local demo.
    pub fn encode(sessions_token: &str) -> Secret {
        let json = serde_json::json!({ "sessions_token": sessions_token });
        Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string()))
    }
}

/// 200 response of the heartbeat (`BetaSelfHostedWorkHeartbeatResponse`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// `work_heartbeat`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// RFC 3339 of the recorded beat, or `""`; echo it on the next beat.
    #[serde(default)]
    pub last_heartbeat: String,
    /// Whether this beat extended the lease.
    #[serde(default)]
    pub lease_extended: bool,
    /// Item state now.
    pub state: WorkState,
    /// Effective lease TTL.
    #[serde(default)]
    pub ttl_seconds: i64,
}

/// The lease as the server holds it (`details.current_state` of a 412).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    /// Item state.
    #[serde(default)]
    pub state: Option<WorkState>,
    /// Lease TTL.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// Stored heartbeat or null.
    #[serde(default)]
    pub last_heartbeat: Option<String>,
    /// Always false on a 412.
    #[serde(default)]
    pub lease_extended: Option<bool>,
}

/// Queue statistics (`BetaSelfHostedWorkQueueStats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Items waiting to be claimed.
    #[serde(default)]
    pub depth: u64,
    /// Claimed, not yet acked.
    #[serde(default)]
    pub pending: u64,
    /// Oldest item still waiting or claimed-but-unacked.
    #[serde(default)]
    pub oldest_queued_at: Option<String>,
    /// Distinct worker ids that polled in the last 30 s.
    #[serde(default)]
    pub workers_polling: Option<u64>,
}

/// Body of `POST …/stop`: `{}` (graceful) or `{"force": true}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StopRequest {
    /// Stop without graceful shutdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// The error envelope of every endpoint.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    #[serde(default)]
    pub error: Option<ErrorBody>,
    /// `req_…`.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// `error` of the envelope.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorBody {
    /// e.g. `invalid_request_error`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Human text; never branch on it.
    #[serde(default)]
    pub message: Option<String>,
    /// `error_code` and friends.
    #[serde(default)]
    pub details: Option<Value>,
}

impl fmt::Display for WorkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkState::Queued => "queued",
            WorkState::Starting => "starting",
            WorkState::Active => "active",
            WorkState::Stopping => "stopping",
            WorkState::Stopped => "stopped",
            WorkState::Unknown => "unknown",
        })
    }
}
