//! Sessions: creation from scenarios, the event log, sending events and their validation,
//! and the scenario report.

use super::*;

impl State {
    /// Creates a session from a scenario (stores, resources, prompt events).
    pub(crate) fn create_session(&mut self, scenario: &Scenario, now: SystemTime) -> String {
        let id = new_id("sesn");
        let mut resources = scenario.session.resources.clone();
        for spec in &scenario.memory_stores {
            let store_id = new_id("memstore");
            let mut memories = BTreeMap::new();
            for (path, content) in &spec.memories {
                let mem = MemEntry {
                    id: new_id("mem"),
                    path: path.clone(),
                    content: content.clone(),
                    version_id: new_id("memver"),
                    created_at: now,
                    updated_at: now,
                };
                memories.insert(mem.id.clone(), mem);
            }
            self.stores.insert(
                store_id.clone(),
                StoreEntry {
                    name: spec.name.clone(),
                    memories,
                },
            );
            let mount = spec
                .mount_path
                .clone()
                .unwrap_or_else(|| format!("/mnt/memory/{}", slug(&spec.name)));
            resources.push(json!({
                "type": "memory_store",
                "memory_store_id": store_id,
                "access": spec.access.clone().unwrap_or_else(|| "read_write".into()),
                "mount_path": mount,
                "name": spec.name,
                "description": null,
                "instructions": null,
            }));
        }
        let (tx, _) = broadcast::channel(1024);
        let entry = SessionEntry {
            id: id.clone(),
            status: scenario.session.status.clone(),
            title: scenario.session.title.clone(),
            metadata: scenario.session.metadata.clone(),
            skills: scenario.session.skills.clone(),
            resources,
            agent_name: scenario.session.agent_name.clone(),
            created_at: now,
            updated_at: now,
            archived_at: None,
            events: Vec::new(),
            tx,
            calls: HashMap::new(),
            labels: HashMap::new(),
            script: ScriptStatus::NotStarted,
            attachments: 0,
            open_streams: 0,
            stream_faults: VecDeque::new(),
            work_ids: Vec::new(),
            scenario_name: scenario.name.clone(),
            awaited: HashMap::new(),
            raw_splices: Vec::new(),
        };
        self.sessions.insert(id.clone(), entry);
        if let Some(prompt) = &scenario.prompt {
            let status = scenario.session.status.clone();
            let _ = self.append_event(
                &id,
                obj(json!({"type": "user.message", "content": [{"type": "text", "text": prompt}]})),
                now,
            );
            if status == "running" {
                let _ = self.append_event(&id, obj(json!({"type": "session.status_running"})), now);
            }
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            for e in &s.events {
                let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
                *s.awaited.entry(kind.to_owned()).or_default() += 1;
            }
        }
        id
    }

    pub(super) fn count_events(s: &SessionEntry, kind: &str) -> usize {
        s.events
            .iter()
            .filter(|e| e.get("type").and_then(Value::as_str) == Some(kind))
            .count()
    }

    /// Consumes the next event of `kind` that no `await_event` step has consumed yet.
    pub(crate) fn consume_event(&mut self, session_id: &str, kind: &str) {
        if let Some(s) = self.sessions.get_mut(session_id) {
            let present = State::count_events(s, kind);
            let consumed = s.awaited.entry(kind.to_owned()).or_default();
            if present > *consumed {
                *consumed += 1;
            }
        }
    }

    /// True when an event of `kind` exists that no `await_event` step has consumed.
    pub(crate) fn has_unconsumed(&self, session_id: &str, kind: &str) -> bool {
        self.sessions.get(session_id).is_some_and(|s| {
            State::count_events(s, kind) > s.awaited.get(kind).copied().unwrap_or(0)
        })
    }

    /// Adds a work item to the queue.
    pub(crate) fn enqueue(&mut self, data: WorkData, with_secret: bool, now: SystemTime) -> String {
        let id = new_id("work");
        if let Some(s) = self.sessions.get_mut(&data.id) {
            s.work_ids.push(id.clone());
        }
        self.work.push(WorkEntry {
            id: id.clone(),
            data,
            state: WorkState::Queued,
            metadata: BTreeMap::new(),
            created_at: now,
            acknowledged_at: None,
            started_at: None,
            latest_heartbeat_at: None,
            stop_requested_at: None,
            stopped_at: None,
            claimed_at: None,
            claimed_by: None,
            generation: 0,
            with_secret,
            last_heartbeat: None,
            last_heartbeat_time: None,
            lease_expires_at: None,
            ttl_seconds: self.lease_ttl,
            not_extended_next: false,
        });
        id
    }

    /// The latest work item of a session.
    pub(crate) fn session_work(&self, session_id: &str) -> Option<String> {
        self.sessions
            .get(session_id)
            .and_then(|s| s.work_ids.last().cloned())
    }

    /// Persists an event (adding `id` and `processed_at`), applies its effect on the
    /// session and broadcasts it. Returns the persisted event.
    pub(crate) fn append_event(
        &mut self,
        session_id: &str,
        event: Map<String, Value>,
        now: SystemTime,
    ) -> Result<Value, ApiError> {
        self.append_event_with_id(session_id, new_id("sevt"), event, now)
    }

    /// [`State::append_event`] with the event id chosen by the caller (a test that needs to
    /// name a call before it exists, e.g. to confirm it early).
    pub(crate) fn append_event_with_id(
        &mut self,
        session_id: &str,
        id: String,
        mut event: Map<String, Value>,
        now: SystemTime,
    ) -> Result<Value, ApiError> {
        let session = self.session_mut(session_id)?;
        event.insert("id".into(), json!(id));
        event
            .entry("processed_at")
            .or_insert_with(|| json!(rfc3339(now)));
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let str_field = |name: &str| {
            event
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match kind.as_str() {
            "session.status_running" => session.status = "running".into(),
            "session.status_idle" => session.status = "idle".into(),
            "session.status_rescheduled" => session.status = "rescheduling".into(),
            "session.status_terminated" | "session.deleted" => session.status = "terminated".into(),
            "user.tool_result" => {
                if let Some(c) = session.calls.get_mut(&str_field("tool_use_id")) {
                    c.state = CallState::Answered;
                }
            }
            "user.custom_tool_result" => {
                if let Some(c) = session.calls.get_mut(&str_field("custom_tool_use_id")) {
                    c.state = CallState::Answered;
                }
            }
            "user.tool_confirmation" => {
                let allow = str_field("result") == "allow";
                if let Some(c) = session.calls.get_mut(&str_field("tool_use_id")) {
                    match (c.state, allow) {
                        (CallState::AwaitingConfirmation, true) => c.state = CallState::Pending,
                        (CallState::AwaitingConfirmation | CallState::Pending, false) => {
                            c.state = CallState::Denied;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        let value = Value::Object(event);
        let frame = wire::sse_frame(&kind, &session.spliced(value.to_string()));
        let _ = session.tx.send(StreamMsg::Event(Bytes::from(frame)));
        session.events.push(value.clone());
        session.updated_at = now;
        Ok(value)
    }

    /// Registers a tool call the script emitted.
    pub(crate) fn register_call(&mut self, session_id: &str, event_id: &str, info: CallInfo) {
        if let Some(s) = self.sessions.get_mut(session_id) {
            if let Some(label) = &info.label {
                s.labels.insert(label.clone(), event_id.to_owned());
            }
            s.calls.insert(event_id.to_owned(), info);
        }
    }

    pub(crate) fn broadcast(&self, session_id: &str, msg: StreamMsg) {
        if let Some(s) = self.sessions.get(session_id) {
            let _ = s.tx.send(msg);
        }
    }

    pub(super) fn list_events(&self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let session = self
            .sessions
            .get(&ctx.route.owner)
            .ok_or_else(|| ApiError::not_found("session not found").code("session_not_found"))?;
        let limit = parse_limit(ctx.param("limit"), 20, 1000)?;
        let start = parse_cursor(ctx.param("page"), "evp_")?;
        let mut events = session.events.clone();
        match ctx.param("order") {
            None | Some("asc") => {}
            Some("desc") => events.reverse(),
            Some(other) => return Err(ApiError::bad_request(format!("invalid order {other:?}"))),
        }
        let page = paginate(events, start, limit, "evp_");
        if session.raw_splices.is_empty() {
            return Reply::json(&page);
        }
        let text = serde_json::to_string(&page)
            .map_err(|e| ApiError::new(500, "api_error", format!("serialising reply: {e}")))?;
        Ok(Reply::Bytes {
            content_type: "application/json",
            body: Bytes::from(session.spliced(text)),
        })
    }

    /// Registers `raw` (JSON text, sent verbatim) for a session and returns the placeholder
    /// value to put into an event in its place (see [`SessionEntry::raw_splices`]).
    pub(crate) fn raw_splice(&mut self, session_id: &str, raw: &str) -> Result<Value, ApiError> {
        let session = self.session_mut(session_id)?;
        let placeholder = format!("\u{1}fake-raw-splice-{}\u{1}", session.raw_splices.len());
        let quoted = Value::String(placeholder.clone()).to_string();
        session.raw_splices.push((quoted, raw.to_owned()));
        Ok(Value::String(placeholder))
    }

    pub(super) fn send_events_call(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let session_id = ctx.route.owner.clone();
        let params: wire::SendEventsParams = serde_json::from_slice(ctx.body)
            .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
        let verdict = self.validate_events(&session_id, &params.events);
        let status = match &verdict {
            Ok(()) => 200,
            Err((_, e)) => e.status,
        };
        // Record every result the batch carried, accepted or not.
        for (i, ev) in params.events.iter().enumerate() {
            let kind = ev.get("type").and_then(Value::as_str).unwrap_or_default();
            let id_field = match kind {
                "user.tool_result" => "tool_use_id",
                "user.custom_tool_result" => "custom_tool_use_id",
                _ => continue,
            };
            let tool_use_id = ev
                .get(id_field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let call = self
                .sessions
                .get(&session_id)
                .and_then(|s| s.calls.get(&tool_use_id));
            let rejection = match &verdict {
                Ok(()) => None,
                Err((idx, e)) if *idx == i => Some(e.message.clone()),
                Err((_, e)) => Some(format!("batch refused: {}", e.message)),
            };
            self.results.push(PostedResult {
                seq: ctx.seq,
                session_id: session_id.clone(),
                kind: kind.to_owned(),
                tool_use_id: tool_use_id.clone(),
                tool_name: call.map(|c| c.name.clone()),
                label: call.and_then(|c| c.label.clone()),
                is_error: ev.get("is_error").and_then(Value::as_bool),
                content: ev
                    .get("content")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                accepted: verdict.is_ok(),
                status,
                rejection,
                credential: ctx.credential.clone(),
            });
        }
        verdict.map_err(|(_, e)| e)?;
        let mut persisted = Vec::with_capacity(params.events.len());
        for ev in params.events {
            let Value::Object(map) = ev else { continue };
            persisted.push(self.append_event(&session_id, map, ctx.now)?);
        }
        Ok(Reply::Json(json!({ "data": persisted })))
    }

    /// Validates a batch; on failure returns the index of the offending event.
    pub(super) fn validate_events(
        &self,
        session_id: &str,
        events: &[Value],
    ) -> Result<(), (usize, ApiError)> {
        let session = self.sessions.get(session_id).ok_or_else(|| {
            (
                0,
                ApiError::not_found("session not found").code("session_not_found"),
            )
        })?;
        if events.is_empty() {
            return Err((0, ApiError::bad_request("events must not be empty")));
        }
        let mut answered_here: Vec<String> = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            let fail = |e: ApiError| (i, e);
            let kind = ev.get("type").and_then(Value::as_str).unwrap_or_default();
            match kind {
                "user.tool_result" | "user.custom_tool_result" => {
                    let custom = kind == "user.custom_tool_result";
                    let (id, content, is_error) = if custom {
                        let p: wire::CustomToolResultParams = serde_json::from_value(ev.clone())
                            .map_err(|e| {
                                fail(ApiError::bad_request(format!("invalid {kind}: {e}")))
                            })?;
                        (p.custom_tool_use_id, p.content, p.is_error)
                    } else {
                        let p: wire::ToolResultParams = serde_json::from_value(ev.clone())
                            .map_err(|e| {
                                fail(ApiError::bad_request(format!("invalid {kind}: {e}")))
                            })?;
                        (p.tool_use_id, p.content, p.is_error)
                    };
                    validate_content(content.as_deref(), is_error.unwrap_or(false)).map_err(
                        |m| fail(ApiError::bad_request(m).code("invalid_tool_result_content")),
                    )?;
                    let Some(call) = session.calls.get(&id) else {
                        return Err(fail(
                            ApiError::bad_request(format!(
                                "{id} is not a tool call of this session"
                            ))
                            .code("tool_use_not_found"),
                        ));
                    };
                    if call.custom != custom {
                        let want = if call.custom {
                            "user.custom_tool_result"
                        } else {
                            "user.tool_result"
                        };
                        return Err(fail(
                            ApiError::bad_request(format!("{id} must be answered with {want}"))
                                .code("tool_result_type_mismatch"),
                        ));
                    }
                    let duplicate_here = answered_here.contains(&id);
                    match call.state {
                        CallState::Pending if !duplicate_here => {}
                        CallState::Pending | CallState::Answered => {
                            let mut e = ApiError::bad_request(format!("{id} already has a result"))
                                .code("tool_result_duplicate");
                            e.status = self.config.duplicate_result_status;
                            return Err(fail(e));
                        }
                        CallState::AwaitingConfirmation => {
                            return Err(fail(
                                ApiError::bad_request(format!(
                                    "{id} awaits user.tool_confirmation"
                                ))
                                .code("tool_use_awaiting_confirmation"),
                            ));
                        }
                        CallState::Denied => {
                            return Err(fail(
                                ApiError::bad_request(format!("{id} was denied"))
                                    .code("tool_use_denied"),
                            ));
                        }
                        CallState::Server => {
                            return Err(fail(
                                ApiError::bad_request(format!("{id} is executed by the server"))
                                    .code("tool_use_not_client_executed"),
                            ));
                        }
                    }
                    if session.status == "terminated" {
                        return Err(fail(
                            ApiError::bad_request("the session is terminated")
                                .code("session_terminated"),
                        ));
                    }
                    answered_here.push(id);
                }
                "user.tool_confirmation" => {
                    let p: ToolConfirmationParams = serde_json::from_value(ev.clone())
                        .map_err(|e| fail(ApiError::bad_request(format!("invalid {kind}: {e}"))))?;
                    let gated = session
                        .calls
                        .get(&p.tool_use_id)
                        .is_some_and(|c| c.state == CallState::AwaitingConfirmation);
                    if !gated {
                        return Err(fail(ApiError::bad_request(format!(
                            "{} does not await a confirmation",
                            p.tool_use_id
                        ))));
                    }
                }
                "user.message" => {
                    if !ev.get("content").is_some_and(Value::is_array) {
                        return Err(fail(ApiError::bad_request("user.message needs content")));
                    }
                }
                "user.interrupt" => {}
                other => {
                    return Err(fail(ApiError::bad_request(format!(
                        "event type {other:?} cannot be sent"
                    ))));
                }
            }
        }
        Ok(())
    }
}

/// Tool-result content rules (§5.6): known block types; text blocks non-empty; `is_error`
/// results text-only; at least one block.
pub(super) fn validate_content(content: Option<&[Value]>, is_error: bool) -> Result<(), String> {
    let blocks = content.unwrap_or_default();
    if blocks.is_empty() {
        return Err("content must hold at least one block".into());
    }
    for b in blocks {
        let kind = b.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "text" => {
                let Some(Value::Object(m)) = Some(b) else {
                    return Err("a block must be an object".into());
                };
                if m.keys().any(|k| k != "type" && k != "text") {
                    return Err("a text block takes only `type` and `text`".into());
                }
                match m.get("text").and_then(Value::as_str) {
                    Some(t) if !t.is_empty() => {}
                    _ => return Err("text blocks must carry non-empty text".into()),
                }
            }
            "image" | "document" | "search_result" => {
                if is_error {
                    return Err("an is_error result may only contain text blocks".into());
                }
                if b.get("source").is_none() {
                    return Err(format!("{kind} block needs a source"));
                }
            }
            other => return Err(format!("unsupported content block type {other:?}")),
        }
    }
    Ok(())
}

/// Checks a session's outcome against its scenario (used by [`crate::ScenarioReport`]).
pub(crate) fn report_failures(state: &State, session_id: &str) -> (ScriptStatus, Vec<String>) {
    let Some(session) = state.sessions.get(session_id) else {
        return (
            ScriptStatus::Failed {
                message: "unknown session".into(),
            },
            vec![format!("unknown session {session_id}")],
        );
    };
    let mut failures = Vec::new();
    if session.script != ScriptStatus::Done {
        failures.push(format!("script not finished: {:?}", session.script));
    }
    let results = state.tool_results(session_id);
    let mut calls: Vec<(&String, &CallInfo)> = session.calls.iter().collect();
    calls.sort_by_key(|(_, c)| c.order);
    for (id, call) in calls {
        let name = call.label.clone().unwrap_or_else(|| id.clone());
        let posted: Vec<&&PostedResult> = results.iter().filter(|r| &r.tool_use_id == id).collect();
        let accepted: Vec<&&PostedResult> = posted.iter().copied().filter(|r| r.accepted).collect();
        let must_be_silent =
            call.expect_no_result || matches!(call.state, CallState::Denied | CallState::Server);
        if must_be_silent && !posted.is_empty() {
            failures.push(format!(
                "{name} ({}): {} result(s) posted, expected none",
                call.name,
                posted.len()
            ));
        }
        if let Some(expect) = &call.expect {
            if accepted.len() != 1 {
                failures.push(format!(
                    "{name} ({}): {} accepted result(s), expected exactly 1",
                    call.name,
                    accepted.len()
                ));
            }
            if let Some(r) = accepted.first() {
                if let Some(want) = expect.is_error
                    && r.is_error.unwrap_or(false) != want
                {
                    failures.push(format!(
                        "{name} ({}): is_error {:?}, expected {want}; text: {}",
                        call.name,
                        r.is_error,
                        join_text(&r.content)
                    ));
                }
                let text = join_text(&r.content);
                for needle in &expect.contains {
                    if !text.contains(needle.as_str()) {
                        failures.push(format!(
                            "{name} ({}): result lacks {needle:?}; text: {text}",
                            call.name
                        ));
                    }
                }
            }
        }
    }
    for r in results.iter().filter(|r| !r.accepted) {
        failures.push(format!(
            "refused post for {} ({}): {}",
            r.label.clone().unwrap_or_else(|| r.tool_use_id.clone()),
            r.tool_name.clone().unwrap_or_default(),
            r.rejection.clone().unwrap_or_default()
        ));
    }
    (session.script.clone(), failures)
}
