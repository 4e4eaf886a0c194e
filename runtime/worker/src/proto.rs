//! Wire types of the self-hosted environment work API and the session event API, mirroring the
//! `anthropic` SDK 2.10.0 models (`types/beta/environments/`, `types/beta/sessions/`).
//!
//! Like the SDK's pydantic models, every response type tolerates unknown fields and unknown
//! enum values (a newer server may add them); fields the worker does not need default when
//! missing. Session events are decoded from a `serde_json::Value` by their JSON `type`, and an
//! event whose type this worker does not know is kept as [`EventBody::Other`] rather than
//! rejected.
//!
//! Security (hostile event text): event JSON is written by the server from model output, so
//! one event may hold text a strict parser refuses although it is valid JSON text — above
//! all an unpaired UTF-16 surrogate escape (`"\ud800"`), which `serde_json` (like any parser
//! producing Rust `String`s) rejects. Were such an event dropped, its call would never be
//! answered; were the history page that holds it refused as a whole, every later event of the
//! page would be lost with it (the session would stall). So events are decoded one by one
//! ([`SessionEvent::parse`]; [`EventPage`] keeps each element's raw text), and an event the
//! strict parse refuses gets a second, lenient pass ([`repair_lone_surrogates`]: each
//! unpaired surrogate escape becomes `\ufffd`) that recovers its `type`, `id`, `name` and
//! routing ids. A tool call decoded that way is *never run with the altered input*: it
//! carries [`ToolUse::invalid_input`] and is answered with one `is_error` result
//! ([`ToolUse::invalid_input_result`]); a call whose `id` or `name` itself needed repair
//! cannot be answered faithfully and stays undecodable.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::secret::Secret;

/// `anthropic-beta` value sent on every `/v1/environments/**` and `/v1/sessions/**` call.
pub const MANAGED_AGENTS_BETA: &str = "managed-agents-2026-04-01";
/// `anthropic-version` value the SDKs send.
pub const API_VERSION: &str = "2026-10-21";
/// `expected_last_heartbeat` of the first beat, which claims an unclaimed lease.
pub const NO_HEARTBEAT: &str = "NO_HEARTBEAT";
/// Default API base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The server's maximum `block_ms` (0 is rejected).
pub const POLL_BLOCK_MS_MAX: u32 = 999;

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

/// A session (`BetaManagedAgentsSession`); only what the worker reads.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Session {
    /// `sesn_…`.
    #[serde(default)]
    pub id: String,
    /// `rescheduling` | `running` | `idle` | `terminated`.
    #[serde(default)]
    pub status: Option<String>,
    /// Attached resources (memory stores for self-hosted sessions).
    #[serde(default)]
    pub resources: Vec<Value>,
    /// The agent snapshot (`BetaManagedAgentsAgent`); the worker reads `skills` from it.
    #[serde(default)]
    pub agent: Option<Value>,
    /// User metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When the session was archived (RFC 3339), if it was. An archived session takes no more
    /// input; its saved workspace is deleted ([`crate::persist`]).
    #[serde(default)]
    pub archived_at: Option<String>,
}

impl Session {
    /// Whether the session accepts no more tool results.
    pub fn is_terminated(&self) -> bool {
        self.status.as_deref() == Some("terminated")
    }

    /// Whether the session was archived (`archived_at` set).
    pub fn is_archived(&self) -> bool {
        self.archived_at.is_some()
    }

    /// Whether a `memory_store` resource is attached.
    pub fn has_memory_store(&self) -> bool {
        self.resources
            .iter()
            .any(|r| r.get("type").and_then(Value::as_str) == Some("memory_store"))
    }
}

/// `BetaSkillVersion`: what `GET /v1/skills/{id}/versions/{version}` answers; only what the
/// worker reads.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SkillVersion {
    /// The concrete version id (`latest` resolved).
    pub id: String,
    /// `skill_…`.
    #[serde(default)]
    pub skill_id: String,
    /// The skill's kebab-case slug: the directory name under `skills/`.
    #[serde(default)]
    pub name: String,
}

/// One page of `GET /v1/sessions/{id}/events`.
#[derive(Debug, Default, Deserialize)]
pub struct EventPage {
    /// Raw events, each kept as its JSON text (which accepts what a strict parse refuses, e.g.
    /// a lone surrogate escape); decoded one by one with [`SessionEvent::parse`] so one odd
    /// event does not sink the page.
    #[serde(default)]
    pub data: Vec<Box<serde_json::value::RawValue>>,
    /// Cursor of the next page; null or empty at the end.
    #[serde(default)]
    pub next_page: Option<String>,
}

/// A result event this worker posts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OutgoingEvent {
    /// Answer to an `agent.tool_use`.
    #[serde(rename = "user.tool_result")]
    ToolResult {
        /// The `agent.tool_use` event id.
        tool_use_id: String,
        /// Whether the content is an error.
        is_error: bool,
        /// Content blocks.
        content: Vec<Value>,
    },
}

impl OutgoingEvent {
    /// The tool-use id this event answers.
    pub fn tool_use_id(&self) -> &str {
        match self {
            OutgoingEvent::ToolResult { tool_use_id, .. } => tool_use_id,
        }
    }
}

/// Body of `POST /v1/sessions/{id}/events`.
#[derive(Clone, Debug, Serialize)]
pub struct SendEvents<'a> {
    /// Events to append.
    pub events: &'a [OutgoingEvent],
}

/// A verdict of `user.tool_confirmation`: anything but `allow` is a denial (fails closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Run the call.
    Allow,
    /// Never run it.
    Deny,
}

impl Verdict {
    fn parse(s: Option<&str>) -> Verdict {
        if s == Some("allow") {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }
}

/// `evaluated_permission` of an `agent.tool_use`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Absent or `allow`: run.
    Allow,
    /// `ask` or an unknown value: hold for a confirmation.
    Ask,
    /// `deny`: never run, post nothing.
    Deny,
}

impl Permission {
    fn parse(v: Option<&Value>) -> Permission {
        match v {
            None | Some(Value::Null) => Permission::Allow,
            Some(Value::String(s)) if s == "allow" => Permission::Allow,
            Some(Value::String(s)) if s == "deny" => Permission::Deny,
            // `ask` and anything newer than this worker (fails closed).
            Some(_) => Permission::Ask,
        }
    }
}

/// A built-in or custom tool call.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolUse {
    /// Event id (`sevt_…`), which the result references.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Tool input (an object).
    pub input: Value,
    /// Server-evaluated permission.
    pub permission: Permission,
    /// Cross-posted from this subagent thread, if set.
    pub session_thread_id: Option<String>,
    /// `true` for `agent.custom_tool_use`.
    pub custom: bool,
    /// Set when the event's JSON text could only be decoded after a repair (e.g. a lone
    /// surrogate escape replaced): `input` is then not what was sent, so the call must not
    /// run; it is answered with [`ToolUse::invalid_input_result`]. Holds the reason.
    pub invalid_input: Option<String>,
}

/// Prefix of the error text for a call whose input cannot be represented; the same wording the
/// file-tools component uses for a request a strict parser refuses (`docs/deviations.md`).
pub const INVALID_REQUEST_PREFIX: &str = "invalid request: ";

impl ToolUse {
    /// The text of the one `is_error` result a call with [`ToolUse::invalid_input`] gets.
    pub fn invalid_input_result(reason: &str) -> String {
        format!("{INVALID_REQUEST_PREFIX}{reason}")
    }
}

/// The reason text for input that held the lone surrogate escape `escape` (e.g. `\ud800`).
pub fn lone_surrogate_reason(escape: &str) -> String {
    format!(
        "the input holds a lone surrogate escape ({escape}), which is not a Unicode character; \
         the call was not run"
    )
}

/// Replaces every unpaired UTF-16 surrogate escape (`\uD800`–`\uDFFF` not forming a
/// high+low pair) in JSON text with `\ufffd`. Returns `None` when there was none, else the
/// repaired text and the first escape replaced (as written, e.g. `\ud800`).
///
/// A backslash only occurs inside JSON strings, where it always starts an escape, so scanning
/// escape by escape without tracking string boundaries is exact for JSON text (for text that
/// is not JSON the result is irrelevant: the parse fails either way).
pub fn repair_lone_surrogates(text: &str) -> Option<(String, String)> {
    fn hex4(b: &[u8]) -> Option<u16> {
        let s = std::str::from_utf8(b.get(..4)?).ok()?;
        u16::from_str_radix(s, 16).ok()
    }
    // The code unit of a `\uXXXX` escape starting at byte `i`, if there is one.
    fn escape_at(b: &[u8], i: usize) -> Option<u16> {
        if b.get(i) != Some(&b'\\') || b.get(i + 1) != Some(&b'u') {
            return None;
        }
        hex4(b.get(i + 2..)?)
    }
    let b = text.as_bytes();
    let mut repaired = String::new();
    let mut first: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(unit) = escape_at(b, i) else {
            // `\"`, `\\`, `\n`, …: skip the escaped character (ASCII in valid JSON; a
            // non-ASCII one is skipped byte by byte, never split, as only `\\` is looked at).
            i += 2;
            continue;
        };
        let lone = match unit {
            0xD800..=0xDBFF => !matches!(escape_at(b, i + 6), Some(0xDC00..=0xDFFF)),
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if !lone {
            // A plain escape, or a high surrogate with its low half (skip both).
            i += if (0xD800..=0xDBFF).contains(&unit) {
                12
            } else {
                6
            };
            continue;
        }
        first.get_or_insert_with(|| text[i..i + 6].to_owned());
        repaired.push_str(&text[copied..i]);
        repaired.push_str("\\ufffd");
        i += 6;
        copied = i;
    }
    let first = first?;
    repaired.push_str(&text[copied..]);
    Some((repaired, first))
}

/// The decoded body of a session event.
#[derive(Clone, Debug, PartialEq)]
pub enum EventBody {
    /// `agent.tool_use` / `agent.custom_tool_use`.
    ToolUse(ToolUse),
    /// `user.tool_result` / `user.custom_tool_result`: the id it answers.
    ToolResult {
        /// Answered call id.
        tool_use_id: String,
    },
    /// `user.tool_confirmation`.
    Confirmation {
        /// Gated call id.
        tool_use_id: String,
        /// Verdict.
        verdict: Verdict,
    },
    /// `session.status_idle`.
    Idle {
        /// `stop_reason.type` (`end_turn`, `requires_action`, …), if present.
        stop_reason: Option<String>,
    },
    /// `session.status_terminated` or `session.deleted`.
    Terminated,
    /// `session.thread_status_terminated`.
    ThreadTerminated {
        /// The thread.
        session_thread_id: String,
    },
    /// Anything else.
    Other,
}

/// One session event with its JSON `type`.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionEvent {
    /// The JSON `type`.
    pub kind: String,
    /// `id`, when present.
    pub id: Option<String>,
    /// Decoded body.
    pub body: EventBody,
}

/// Why an event could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not JSON at all.
    #[error("event data is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object with a string `type`.
    #[error("event has no string `type`")]
    NoType,
    /// A tool call whose `id` or `name` holds text that cannot be represented (a lone
    /// surrogate escape): it cannot be answered faithfully.
    #[error("`{0}` event has an unrepresentable `id` or `name`")]
    Unrepresentable(String),
    /// A known type lacks a required field.
    #[error("`{kind}` event lacks `{field}`")]
    MissingField {
        /// Event type.
        kind: String,
        /// Missing field.
        field: &'static str,
    },
}

impl SessionEvent {
    /// Decodes one event from its JSON text (an SSE frame's `data`, or one element of a
    /// history page). Text a strict parse refuses because of lone surrogate escapes is
    /// repaired and decoded again; a tool call decoded that way carries
    /// [`ToolUse::invalid_input`] (see the module docs).
    pub fn parse(data: &str) -> Result<SessionEvent, EventError> {
        let strict_err = match serde_json::from_str::<Value>(data) {
            Ok(value) => return SessionEvent::from_value(&value),
            Err(e) => e,
        };
        let Some((repaired, escape)) = repair_lone_surrogates(data) else {
            return Err(EventError::NotJson(strict_err.to_string()));
        };
        let value: Value = serde_json::from_str(&repaired)
            .map_err(|_| EventError::NotJson(strict_err.to_string()))?;
        let mut ev = SessionEvent::from_value(&value)?;
        // Ids route: a result, a confirmation or a thread named by a repaired stand-in could
        // mark or answer a different call. Any top-level `id`/`*_id` the repair touched makes
        // the whole event unrepresentable.
        let repaired_id = value.as_object().is_some_and(|o| {
            o.iter().any(|(k, v)| {
                (k == "id" || k.ends_with("_id"))
                    && v.as_str().is_some_and(|s| s.contains('\u{fffd}'))
            })
        });
        if repaired_id {
            return Err(EventError::Unrepresentable(ev.kind));
        }
        if let EventBody::ToolUse(tu) = &mut ev.body {
            // The id is what the result must name, and the name picks the tool: neither may be
            // a repaired stand-in.
            if tu.id.contains('\u{fffd}') || tu.name.contains('\u{fffd}') {
                return Err(EventError::Unrepresentable(ev.kind));
            }
            tu.invalid_input = Some(lone_surrogate_reason(&escape));
        }
        Ok(ev)
    }

    /// Decodes one event from JSON.
    pub fn from_value(value: &Value) -> Result<SessionEvent, EventError> {
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or(EventError::NoType)?
            .to_owned();
        let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        let str_field = |field: &'static str| -> Result<String, EventError> {
            value
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| EventError::MissingField {
                    kind: kind.clone(),
                    field,
                })
        };
        let body = match kind.as_str() {
            "agent.tool_use" | "agent.custom_tool_use" => {
                let id = str_field("id")?;
                let name = str_field("name")?;
                let input = match value.get("input") {
                    Some(v @ Value::Object(_)) => v.clone(),
                    _ => Value::Object(serde_json::Map::new()),
                };
                let custom = kind == "agent.custom_tool_use";
                // Only `agent.tool_use` carries it today; read it on custom calls too so the
                // gate keeps failing closed if it ever lands there.
                let permission = Permission::parse(value.get("evaluated_permission"));
                EventBody::ToolUse(ToolUse {
                    id,
                    name,
                    input,
                    permission,
                    session_thread_id: value
                        .get("session_thread_id")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                    custom,
                    invalid_input: None,
                })
            }
            "user.tool_result" => EventBody::ToolResult {
                tool_use_id: str_field("tool_use_id")?,
            },
            "user.custom_tool_result" => EventBody::ToolResult {
                tool_use_id: str_field("custom_tool_use_id")?,
            },
            "user.tool_confirmation" => EventBody::Confirmation {
                tool_use_id: str_field("tool_use_id")?,
                verdict: Verdict::parse(value.get("result").and_then(Value::as_str)),
            },
            "session.status_idle" => EventBody::Idle {
                stop_reason: value
                    .get("stop_reason")
                    .and_then(|r| r.get("type"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            },
            "session.status_terminated" | "session.deleted" => EventBody::Terminated,
            "session.thread_status_terminated" => EventBody::ThreadTerminated {
                session_thread_id: str_field("session_thread_id")?,
            },
            _ => EventBody::Other,
        };
        Ok(SessionEvent { kind, id, body })
    }

    /// Whether this is a `session.status_idle` that ends the turn (any stop reason but
    /// `requires_action`, including unknown ones and a missing one).
    pub fn ends_turn(&self) -> bool {
        matches!(&self.body, EventBody::Idle { stop_reason } if stop_reason.as_deref() != Some("requires_action"))
    }

    /// Whether the idle countdown ignores this event.
    pub fn is_idle_neutral(&self) -> bool {
        matches!(
            self.body,
            EventBody::Confirmation { .. } | EventBody::ThreadTerminated { .. }
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn work_item_tolerates_unknown_fields_and_states() {
        let w: Work = serde_json::from_value(json!({
            "id": "work_1", "type": "work", "environment_id": "env_1",
            "data": {"type": "session", "id": "sesn_1"}, "state": "brand_new_state",
            "metadata": {}, "secret": null, "created_at": "2026-01-01T00:00:00Z",
            "future_field": {"x": 1}
        }))
        .unwrap();
        assert_eq!(w.state, Some(WorkState::Unknown));
        assert_eq!(w.data.session_id(), Some("sesn_1"));
        let hc: Work =
            serde_json::from_value(json!({"id": "work_2", "data": {"id": "h"}})).unwrap();
        assert_eq!(hc.data.session_id(), None);
        let hc: Work = serde_json::from_value(
            json!({"id": "work_2", "data": {"type": "healthcheck", "id": "h"}}),
        )
        .unwrap();
        assert_eq!(hc.data.session_id(), None);
    }

    #[test]
    fn secret_decodes_with_and_without_padding() {
        let enc = WorkSecret::encode("sk-ant-req-T");
        assert!(!enc.expose().ends_with('='));
        assert_eq!(
            WorkSecret::decode(&enc).sessions_token,
            Some(Secret::new("sk-ant-req-T"))
        );
        // Padded standard URL-safe form.
        let padded = base64::engine::general_purpose::URL_SAFE
            .encode(br#"{"sessions_token":"tok?>","api_base_url":"https://x"}"#);
        let d = WorkSecret::decode(&Secret::new(padded));
        assert_eq!(d.sessions_token, Some(Secret::new("tok?>")));
        assert_eq!(d.api_base_url.as_deref(), Some("https://x"));
    }

    #[test]
    fn secret_garbage_yields_no_token() {
        for bad in [
            "",
            "!!!not base64!!!",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("[1,2]"),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sessions_token":""}"#),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sessions_token":5}"#),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("not json"),
        ] {
            assert_eq!(
                WorkSecret::decode(&Secret::new(bad)).sessions_token,
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn heartbeat_response_parses() {
        let r: HeartbeatResponse = serde_json::from_value(json!({
            "type": "work_heartbeat", "last_heartbeat": "2026-01-01T00:00:01Z",
            "lease_extended": true, "state": "active", "ttl_seconds": 60
        }))
        .unwrap();
        assert_eq!(r.state, WorkState::Active);
        assert_eq!(r.ttl_seconds, 60);
        assert!(r.lease_extended);
    }

    #[test]
    fn stop_request_bodies() {
        assert_eq!(
            serde_json::to_string(&StopRequest::default()).unwrap(),
            "{}"
        );
        assert_eq!(
            serde_json::to_string(&StopRequest { force: Some(true) }).unwrap(),
            r#"{"force":true}"#
        );
    }

    #[test]
    fn tool_result_serializes_like_the_sdk() {
        let ev = OutgoingEvent::ToolResult {
            tool_use_id: "sevt_1".into(),
            is_error: false,
            content: vec![json!({"type": "text", "text": "hi"})],
        };
        assert_eq!(
            serde_json::to_value(SendEvents { events: &[ev] }).unwrap(),
            json!({"events": [{"type": "user.tool_result", "tool_use_id": "sevt_1",
                               "is_error": false, "content": [{"type": "text", "text": "hi"}]}]})
        );
    }

    #[test]
    fn lone_surrogates_are_repaired_and_only_them() {
        // Valid pairs, escaped backslashes and other escapes are left alone.
        for ok in [
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\\ud800"}"#,
            r#"{"a":"\n\"\u0041"}"#,
            "{\"a\":\"é\\\\\"}",
        ] {
            assert_eq!(repair_lone_surrogates(ok), None, "{ok}");
        }
        let (fixed, first) =
            repair_lone_surrogates(r#"{"a":"x\ud800y","b":"\uDC00","c":"\ud800\ud800\udc00"}"#)
                .unwrap();
        assert_eq!(first, r"\ud800");
        assert_eq!(
            fixed,
            r#"{"a":"x\ufffdy","b":"\ufffd","c":"\ufffd\ud800\udc00"}"#
        );
        let v: Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(v["c"], "\u{fffd}\u{10000}");
        // A high surrogate at the very end of the text.
        assert_eq!(repair_lone_surrogates(r"\ud800").unwrap().0, r"\ufffd");
    }

    #[test]
    fn a_tool_use_with_a_lone_surrogate_is_decoded_and_marked() {
        let text = r#"{"type":"agent.tool_use","id":"sevt_1","name":"write","input":{"file_path":"a\ud800","content":"x"}}"#;
        assert!(
            serde_json::from_str::<Value>(text).is_err(),
            "strict parse must refuse it"
        );
        let ev = SessionEvent::parse(text).unwrap();
        let EventBody::ToolUse(tu) = ev.body else {
            panic!("not a tool use")
        };
        assert_eq!(tu.id, "sevt_1");
        assert_eq!(tu.name, "write");
        let reason = tu.invalid_input.expect("marked as altered");
        assert!(reason.contains(r"\ud800"), "{reason}");
        assert!(ToolUse::invalid_input_result(&reason).starts_with("invalid request: "));
        // A clean call is not marked.
        let clean = SessionEvent::parse(
            r#"{"type":"agent.tool_use","id":"b","name":"read","input":{"file_path":"\ufffd"}}"#,
        )
        .unwrap();
        assert!(matches!(
            clean.body,
            EventBody::ToolUse(ToolUse {
                invalid_input: None,
                ..
            })
        ));
        // The id itself cannot be repaired faithfully.
        assert_eq!(
            SessionEvent::parse(
                r#"{"type":"agent.tool_use","id":"s\udc00","name":"read","input":{}}"#
            ),
            Err(EventError::Unrepresentable("agent.tool_use".into()))
        );
        // Other events keep their routing fields.
        let r = SessionEvent::parse(r#"{"type":"user.tool_result","tool_use_id":"sevt_1","content":[{"type":"text","text":"\ud800"}]}"#).unwrap();
        assert_eq!(
            r.body,
            EventBody::ToolResult {
                tool_use_id: "sevt_1".into()
            }
        );
        // … unless the repair touched one of them: a stand-in id could name another call.
        assert_eq!(
            SessionEvent::parse(
                r#"{"type":"user.tool_result","tool_use_id":"sevt_\ud800","content":[]}"#
            ),
            Err(EventError::Unrepresentable("user.tool_result".into()))
        );
    }

    #[test]
    fn a_history_page_with_one_odd_event_yields_the_rest() {
        let body = r#"{"data":[
            {"type":"agent.tool_use","id":"a","name":"bash","input":{"command":"echo \ud800"}},
            {"type":"agent.tool_use","id":"b","name":"bash","input":{"command":"ls"}},
            {"type":"agent.tool_use","id":"\ud800"}
        ],"next_page":null}"#;
        let page: EventPage = serde_json::from_str(body).unwrap();
        let evs: Vec<_> = page
            .data
            .iter()
            .map(|r| SessionEvent::parse(r.get()))
            .collect();
        assert_eq!(evs.len(), 3);
        let EventBody::ToolUse(a) = &evs[0].as_ref().unwrap().body else {
            panic!()
        };
        assert!(a.invalid_input.is_some());
        let EventBody::ToolUse(b) = &evs[1].as_ref().unwrap().body else {
            panic!()
        };
        assert_eq!((b.id.as_str(), b.invalid_input.as_ref()), ("b", None));
        assert!(evs[2].is_err());
    }

    #[test]
    fn events_decode() {
        let e = SessionEvent::parse(
            r#"{"type":"agent.tool_use","id":"sevt_1","name":"bash","input":{"command":"ls"},
                "processed_at":"2026-01-01T00:00:00Z","evaluated_permission":"ask","new":1}"#,
        )
        .unwrap();
        let EventBody::ToolUse(tu) = &e.body else {
            panic!("not a tool use: {e:?}")
        };
        assert_eq!(tu.permission, Permission::Ask);
        assert_eq!(tu.name, "bash");
        assert!(!tu.custom);

        let perm = |p: Value| {
            let EventBody::ToolUse(tu) = SessionEvent::from_value(
                &json!({"type":"agent.tool_use","id":"a","name":"read","input":{},"evaluated_permission":p}),
            )
            .unwrap()
            .body
            else {
                panic!()
            };
            tu.permission
        };
        assert_eq!(perm(json!("allow")), Permission::Allow);
        assert_eq!(perm(Value::Null), Permission::Allow);
        assert_eq!(perm(json!("deny")), Permission::Deny);
        assert_eq!(perm(json!("maybe")), Permission::Ask);

        let c = SessionEvent::parse(
            r#"{"type":"user.tool_confirmation","id":"x","tool_use_id":"a","result":"weird"}"#,
        )
        .unwrap();
        assert_eq!(
            c.body,
            EventBody::Confirmation {
                tool_use_id: "a".into(),
                verdict: Verdict::Deny
            }
        );
        assert!(c.is_idle_neutral());

        let idle = |r: Value| {
            SessionEvent::from_value(&json!({"type":"session.status_idle","stop_reason":r}))
                .unwrap()
        };
        assert!(idle(json!({"type": "end_turn"})).ends_turn());
        assert!(idle(json!({"type": "brand_new"})).ends_turn());
        assert!(!idle(json!({"type": "requires_action", "event_ids": ["a"]})).ends_turn());

        assert_eq!(
            SessionEvent::parse(r#"{"type":"session.deleted"}"#)
                .unwrap()
                .body,
            EventBody::Terminated
        );
        assert_eq!(
            SessionEvent::parse(r#"{"type":"agent.message","content":[]}"#)
                .unwrap()
                .body,
            EventBody::Other
        );
        assert!(matches!(
            SessionEvent::parse("{not json"),
            Err(EventError::NotJson(_))
        ));
        assert_eq!(SessionEvent::parse("[1]"), Err(EventError::NoType));
        assert!(matches!(
            SessionEvent::parse(r#"{"type":"agent.tool_use","id":"x"}"#),
            Err(EventError::MissingField { field: "name", .. })
        ));
    }
}
