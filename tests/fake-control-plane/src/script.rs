//! The scripted agent: plays a [`Scenario`]'s steps on its session.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::scenario::{Scenario, StartMode, Step};
use crate::state::{CallInfo, CallState, ScriptStatus, StreamMsg};

/// An `agent.message` frame whose data is not JSON.
pub(crate) const MALFORMED_FRAME: &str =
    "event: agent.message\ndata: {\"type\": \"agent.message\", this is not json\n\n";

enum Stop {
    Failed(String),
    Shutdown,
}

pub(crate) async fn run(shared: Arc<Shared>, session_id: String, scenario: Scenario) {
    let outcome = run_steps(&shared, &session_id, &scenario).await;
    let status = match outcome {
        Ok(()) => ScriptStatus::Done,
        Err(Stop::Failed(message)) => {
            tracing::warn!(
                session_id,
                scenario = scenario.name,
                message,
                "scenario script failed"
            );
            ScriptStatus::Failed { message }
        }
        Err(Stop::Shutdown) => return,
    };
    set_status(&shared, &session_id, status);
}

fn set_status(shared: &Shared, session_id: &str, status: ScriptStatus) {
    if let Some(s) = shared.lock().sessions.get_mut(session_id) {
        s.script = status;
    }
    shared.bump();
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn emit(shared: &Shared, session_id: &str, event: Map<String, Value>) -> Result<String, Stop> {
    let now = shared.now();
    let v = shared
        .lock()
        .append_event(session_id, event, now)
        .map_err(|e| Stop::Failed(e.message))?;
    shared.bump();
    Ok(v.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned())
}

async fn wait(
    shared: &Shared,
    timeout_ms: Option<u64>,
    what: &str,
    pred: impl FnMut(&crate::State) -> bool,
) -> Result<(), Stop> {
    match shared
        .wait_until(timeout_ms.map(Duration::from_millis), pred)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(Stop::Failed(format!("timed out waiting for {what}"))),
        Err(()) => Err(Stop::Shutdown),
    }
}

fn resolve(shared: &Shared, session_id: &str, label: &str) -> String {
    shared
        .lock()
        .call_id(session_id, label)
        .unwrap_or(label)
        .to_owned()
}

fn session_work(shared: &Shared, session_id: &str) -> Result<String, Stop> {
    shared
        .lock()
        .session_work(session_id)
        .ok_or_else(|| Stop::Failed("the session has no work item".into()))
}

async fn await_answer(
    shared: &Shared,
    session_id: &str,
    label: &str,
    timeout_ms: Option<u64>,
) -> Result<(), Stop> {
    wait(shared, timeout_ms, &format!("a result for {label}"), |s| {
        !matches!(
            s.call_state(session_id, label),
            Some(CallState::Pending | CallState::AwaitingConfirmation) | None
        )
    })
    .await
}

#[allow(
    clippy::too_many_lines,
    reason = "one flat match over the step kinds reads best"
)]
async fn run_steps(shared: &Shared, sid: &str, scenario: &Scenario) -> Result<(), Stop> {
    if scenario.start == StartMode::OnAttach {
        wait(shared, None, "a stream to attach", |s| {
            s.stream_attachments(sid) > 0
        })
        .await?;
    }
    for (i, step) in scenario.steps.iter().enumerate() {
        set_status(shared, sid, ScriptStatus::Running { step: i });
        match step {
            Step::ToolUse(t) => {
                let label = Scenario::label_of(i, t.label.as_ref());
                let mut ev = json!({"type": "agent.tool_use", "name": t.name, "input": t.input});
                let permission = t.permission();
                if let Some(p) = permission {
                    ev["evaluated_permission"] = json!(p);
                    let evaluation = t
                        .evaluation
                        .clone()
                        .or_else(|| crate::drive::evaluation_for(p));
                    if let Some(e) = evaluation {
                        ev["evaluation"] = e;
                    }
                }
                if let Some(thread) = &t.session_thread_id {
                    ev["session_thread_id"] = json!(thread);
                }
                let state = if t.server_result.is_some() {
                    CallState::Server
                } else {
                    crate::drive::initial_state(permission)
                };
                {
                    let now = shared.now();
                    let mut s = shared.lock();
                    if let Some(raw) = &t.raw_input {
                        ev["input"] = s
                            .raw_splice(sid, raw)
                            .map_err(|e| Stop::Failed(e.message))?;
                    }
                    let v = s
                        .append_event(sid, obj(ev), now)
                        .map_err(|e| Stop::Failed(e.message))?;
                    let id = v
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    s.register_call(
                        sid,
                        &id,
                        CallInfo {
                            name: t.name.clone(),
                            label: Some(label.clone()),
                            custom: false,
                            state,
                            expect: t.expect.clone(),
                            expect_no_result: t.expect_no_result,
                            order: i,
                        },
                    );
                }
                shared.bump();
                if let Some(text) = &t.server_result {
                    let id = resolve(shared, sid, &label);
                    emit(
                        shared,
                        sid,
                        obj(json!({
                            "type": "agent.tool_result",
                            "tool_use_id": id,
                            "is_error": false,
                            "content": [{"type": "text", "text": text}],
                        })),
                    )?;
                }
                if t.waits() {
                    await_answer(shared, sid, &label, t.timeout_ms).await?;
                }
            }
            Step::CustomToolUse(t) => {
                let label = Scenario::label_of(i, t.label.as_ref());
                let mut ev =
                    json!({"type": "agent.custom_tool_use", "name": t.name, "input": t.input});
                if let Some(thread) = &t.session_thread_id {
                    ev["session_thread_id"] = json!(thread);
                }
                {
                    let now = shared.now();
                    let mut s = shared.lock();
                    let v = s
                        .append_event(sid, obj(ev), now)
                        .map_err(|e| Stop::Failed(e.message))?;
                    let id = v
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    s.register_call(
                        sid,
                        &id,
                        CallInfo {
                            name: t.name.clone(),
                            label: Some(label.clone()),
                            custom: true,
                            state: CallState::Pending,
                            expect: t.expect.clone(),
                            expect_no_result: t.expect_no_result,
                            order: i,
                        },
                    );
                }
                shared.bump();
                if t.wait.unwrap_or(false) {
                    await_answer(shared, sid, &label, t.timeout_ms).await?;
                }
            }
            Step::AwaitResult(a) => {
                await_answer(shared, sid, &a.tool_use, a.timeout_ms).await?;
            }
            Step::Confirm(c) => {
                let id = resolve(shared, sid, &c.tool_use);
                let mut ev = json!({"type": "user.tool_confirmation", "tool_use_id": id, "result": c.result});
                if let Some(m) = &c.deny_message {
                    ev["deny_message"] = json!(m);
                }
                emit(shared, sid, obj(ev))?;
            }
            Step::Message(text) => {
                emit(
                    shared,
                    sid,
                    obj(
                        json!({"type": "agent.message", "content": [{"type": "text", "text": text}]}),
                    ),
                )?;
            }
            Step::Idle(idle) => {
                let mut reason = json!({"type": idle.stop_reason});
                if idle.stop_reason == "requires_action" || !idle.event_ids.is_empty() {
                    let ids: Vec<String> = idle
                        .event_ids
                        .iter()
                        .map(|l| resolve(shared, sid, l))
                        .collect();
                    reason["event_ids"] = json!(ids);
                }
                let mut ev = json!({"type": "session.status_idle", "stop_reason": reason});
                if let Some(d) = &idle.stop_details {
                    ev["stop_details"] = d.clone();
                }
                emit(shared, sid, obj(ev))?;
            }
            Step::Running => {
                emit(shared, sid, obj(json!({"type": "session.status_running"})))?;
            }
            Step::Terminate => {
                emit(
                    shared,
                    sid,
                    obj(json!({"type": "session.status_terminated"})),
                )?;
            }
            Step::Delete => {
                emit(shared, sid, obj(json!({"type": "session.deleted"})))?;
            }
            Step::ThreadTerminated(t) => {
                emit(
                    shared,
                    sid,
                    obj(json!({
                        "type": "session.thread_status_terminated",
                        "session_thread_id": t.session_thread_id,
                        "agent_name": "fake-subagent",
                    })),
                )?;
            }
            Step::Emit(map) => {
                emit(shared, sid, map.clone())?;
            }
            Step::AwaitEvent(a) => {
                wait(shared, a.timeout_ms, &format!("a {} event", a.kind), |s| {
                    s.has_unconsumed(sid, &a.kind)
                })
                .await?;
                shared.lock().consume_event(sid, &a.kind);
            }
            Step::AwaitAttachments(n) => {
                wait(shared, None, &format!("{n} stream attachments"), |s| {
                    s.stream_attachments(sid) >= *n
                })
                .await?;
            }
            Step::SleepMs(ms) => {
                let mut shutdown = shared.shutdown.subscribe();
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(*ms)) => {}
                    _ = shutdown.changed() => return Err(Stop::Shutdown),
                }
            }
            Step::RequestStop(r) => {
                let work = session_work(shared, sid)?;
                let now = shared.now();
                let result = shared.lock().admin_stop(&work, r.force, now);
                shared.bump();
                result.map_err(|e| Stop::Failed(format!("request_stop: {}", e.message)))?;
            }
            Step::StealLease => {
                let work = session_work(shared, sid)?;
                let now = shared.now();
                let result = shared.lock().steal_lease(&work, now);
                shared.bump();
                result.map_err(|e| Stop::Failed(format!("steal_lease: {}", e.message)))?;
            }
            Step::ExpireLease => {
                let work = session_work(shared, sid)?;
                let now = shared.now();
                let result = shared.lock().expire_lease(&work, now);
                shared.bump();
                result.map_err(|e| Stop::Failed(format!("expire_lease: {}", e.message)))?;
            }
            Step::DropStream => shared.lock().broadcast(sid, StreamMsg::Close),
            Step::InjectFrame(raw) => shared
                .lock()
                .broadcast(sid, StreamMsg::Raw(Bytes::from(raw.clone()))),
            Step::MalformedEvent => shared.lock().broadcast(
                sid,
                StreamMsg::Raw(Bytes::from_static(MALFORMED_FRAME.as_bytes())),
            ),
        }
    }
    Ok(())
}
