//! The session API's types (protocol §5–§6): the session, skill versions, event pages, the
//! decoded session events (tool calls, confirmations, turn ends) and the result events this
//! worker posts; the lenient decoding of event text a strict parse refuses (module docs of
//! [`crate::proto`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
