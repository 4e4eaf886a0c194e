//! Driving a session by hand: tool calls a test emits as the agent, one at a time, instead of
//! a [`crate::Scenario`] script. Useful when the test must act between calls (arm a fault,
//! hold a call, drain the worker) and assert on each step.
//!
//! A call emitted here is registered like a scripted one, so the fake applies the same result
//! rules to it (pending, awaiting confirmation, denied; duplicates and unknown ids refused)
//! and [`crate::Handle::tool_results`] names its tool.

use serde_json::{Map, Value, json};

use crate::record::{MintedSecret, StreamCut};
use crate::state::{CallInfo, CallState, State, StreamMsg, new_id};
use crate::{FakeError, Handle};

/// A tool call a test emits as the agent ([`Handle::emit_tool_use`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ToolUse {
    /// Tool name (`bash`, `read`, …, or any other).
    pub name: String,
    /// The call's input.
    pub input: Value,
    /// `evaluated_permission` (`allow`, `ask`, `deny`, or anything else, which gates like
    /// `ask`); `None` leaves the field and `evaluation` out (the call is pending).
    pub permission: Option<String>,
    /// The event id; `None` for a fresh `sevt_…`. Lets a test refer to a call before it
    /// exists (e.g. a `user.tool_confirmation` that arrives first).
    pub id: Option<String>,
    /// Emit `agent.custom_tool_use` instead of `agent.tool_use`.
    pub custom: bool,
}

impl ToolUse {
    /// An `agent.tool_use` of `name` with `input`, no permission fields, a fresh id.
    #[must_use]
    pub fn new(name: &str, input: Value) -> ToolUse {
        ToolUse {
            name: name.to_owned(),
            input,
            permission: None,
            id: None,
            custom: false,
        }
    }

    /// Sets `evaluated_permission` (and the matching `evaluation`).
    #[must_use]
    pub fn permission(mut self, permission: &str) -> ToolUse {
        self.permission = Some(permission.to_owned());
        self
    }

    /// Uses this event id.
    #[must_use]
    pub fn id(mut self, id: &str) -> ToolUse {
        self.id = Some(id.to_owned());
        self
    }

    /// Makes it an `agent.custom_tool_use` (answered with `user.custom_tool_result`).
    #[must_use]
    pub fn custom(mut self) -> ToolUse {
        self.custom = true;
        self
    }
}

/// The `evaluation` object production sends beside an `evaluated_permission`.
pub(crate) fn evaluation_for(permission: &str) -> Option<Value> {
    match permission {
        "allow" => Some(json!({"type": "always_allow"})),
        "ask" => Some(json!({"type": "always_ask"})),
        "deny" => Some(
            json!({"type": "auto", "evaluated_permission": {"type": "deny", "reason_code": "fake_policy"}}),
        ),
        _ => None,
    }
}

/// How the fake regards a new client-executed call with this permission.
pub(crate) fn initial_state(permission: Option<&str>) -> CallState {
    match permission {
        None | Some("allow") => CallState::Pending,
        Some("deny") => CallState::Denied,
        Some(_) => CallState::AwaitingConfirmation,
    }
}

/// Logs `call` on the session and registers it. Under the state lock: the caller decides
/// what else happens atomically with it.
fn emit_locked(
    state: &mut State,
    session_id: &str,
    call: &ToolUse,
    now: std::time::SystemTime,
) -> Result<String, FakeError> {
    let mut ev = Map::new();
    let kind = if call.custom {
        "agent.custom_tool_use"
    } else {
        "agent.tool_use"
    };
    ev.insert("type".into(), json!(kind));
    ev.insert("name".into(), json!(call.name));
    ev.insert("input".into(), call.input.clone());
    if let Some(p) = &call.permission {
        ev.insert("evaluated_permission".into(), json!(p));
        if let Some(e) = evaluation_for(p) {
            ev.insert("evaluation".into(), e);
        }
    }
    let id = call.id.clone().unwrap_or_else(|| new_id("sevt"));
    state
        .append_event_with_id(session_id, id.clone(), ev, now)
        .map_err(|e| FakeError::Refused(e.message))?;
    let mut call_state = if call.custom {
        CallState::Pending
    } else {
        initial_state(call.permission.as_deref())
    };
    // A verdict logged before its call (the test named the id early) applies now, as it
    // would have had the call come first.
    if call_state == CallState::AwaitingConfirmation {
        let verdict = state.events(session_id).iter().rev().find_map(|e| {
            (e["type"] == "user.tool_confirmation" && e["tool_use_id"] == id.as_str())
                .then(|| e["result"] == "allow")
        });
        match verdict {
            Some(true) => call_state = CallState::Pending,
            Some(false) => call_state = CallState::Denied,
            None => {}
        }
    }
    let order = state.sessions.get(session_id).map_or(0, |s| s.calls.len());
    state.register_call(
        session_id,
        &id,
        CallInfo {
            name: call.name.clone(),
            label: None,
            custom: call.custom,
            state: call_state,
            expect: None,
            expect_no_result: false,
            order,
        },
    );
    Ok(id)
}

impl Handle {
    /// Emits a tool call on the session as the agent would (live on open streams and in the
    /// history) and registers it, so a result for it is judged like a scripted call's.
    /// Returns the event id.
    ///
    /// # Errors
    /// When the session is unknown.
    pub fn emit_tool_use(&self, session_id: &str, call: &ToolUse) -> Result<String, FakeError> {
        let now = self.shared.now();
        let r = emit_locked(&mut self.shared.lock(), session_id, call, now);
        self.shared.bump();
        r
    }

    /// Ends every open event stream of the session and, in the same step, emits `calls`: a
    /// client that was connected sees the end of its stream and never these calls live, only
    /// in the history it reads after reconnecting (events made while it was away). Returns
    /// the calls' event ids.
    ///
    /// # Errors
    /// When the session is unknown.
    pub fn drop_streams_missing(
        &self,
        session_id: &str,
        cut: StreamCut,
        calls: &[ToolUse],
    ) -> Result<Vec<String>, FakeError> {
        let now = self.shared.now();
        let msg = match cut {
            StreamCut::Close => StreamMsg::Close,
            StreamCut::Abort => StreamMsg::Abort,
        };
        let r = {
            let mut s = self.shared.lock();
            // Stream tasks read their channel in order: the cut comes before the calls, so a
            // stream open now ends without them; one opened later subscribes after them.
            s.broadcast(session_id, msg);
            calls
                .iter()
                .map(|c| emit_locked(&mut s, session_id, c, now))
                .collect()
        };
        self.shared.bump();
        r
    }

    /// The sessions tokens minted for an item's claims (with the `secret`s they were sent
    /// in), oldest claim first.
    #[must_use]
    pub fn minted_secrets(&self, work_id: &str) -> Vec<MintedSecret> {
        let s = self.shared.lock();
        let mut out: Vec<MintedSecret> = s
            .tokens
            .iter()
            .filter(|(_, t)| t.work_id == work_id)
            .map(|(token, t)| MintedSecret {
                work_id: t.work_id.clone(),
                generation: t.generation,
                sessions_token: token.clone(),
                secret: t.secret.clone(),
            })
            .collect();
        out.sort_by_key(|m| m.generation);
        out
    }
}
