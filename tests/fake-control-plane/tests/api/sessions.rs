//! Sessions: tool results, the event stream and its history, confirmations.

use super::*;

#[tokio::test]
async fn tool_results_are_validated_recorded_and_deduplicated() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (_, session_id) = fake.enqueue_session(scenario(ONE_CALL));
    let (_, token, _) = claim(&api, &fake).await;
    fake.wait_for(WAIT, |s| s.call_id(&session_id, "ls").is_some())
        .await
        .expect("call emitted");
    let call_id = fake.call_id(&session_id, "ls").expect("id");

    // History shows the call, with id and processed_at.
    let (s, page) = api
        .send(api.req(
            Method::GET,
            &format!("/v1/sessions/{session_id}/events?limit=1000"),
            Some(&token),
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    let ev = page["data"]
        .as_array()
        .and_then(|d| d.iter().find(|e| e["type"] == "agent.tool_use"))
        .expect("tool_use in history")
        .clone();
    assert_eq!(ev["id"], json!(call_id));
    assert_eq!(ev["name"], "bash");
    assert_eq!(ev["evaluated_permission"], "allow");
    assert!(ev["processed_at"].is_string());

    let send = |body: Value| {
        api.req(
            Method::POST,
            &format!("/v1/sessions/{session_id}/events"),
            Some(&token),
        )
        .json(&body)
    };
    // Error results must be text only; empty text is refused.
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}});
    let (s, _) = api
        .send(send(json!({"events": [{"type": "user.tool_result", "tool_use_id": call_id, "is_error": true, "content": [image]}]})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api
        .send(send(json!({"events": [{"type": "user.tool_result", "tool_use_id": call_id, "content": [{"type": "text", "text": ""}]}]})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The right result is accepted and echoed with id and processed_at.
    let good = json!({"events": [{"type": "user.tool_result", "tool_use_id": call_id, "is_error": false,
                                  "content": [{"type": "text", "text": "file.txt"}]}]});
    let (s, body) = api.send(send(good.clone())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["data"][0]["type"], "user.tool_result");
    assert!(
        body["data"][0]["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("sevt_"))
    );
    // A duplicate is refused, and recorded.
    let (s, body) = api.send(send(good)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["details"]["error_code"],
        "tool_result_duplicate"
    );
    // Unknown ids are refused.
    let (s, _) = api
        .send(send(json!({"events": [{"type": "user.tool_result", "tool_use_id": "sevt_nope", "content": [{"type": "text", "text": "x"}]}]})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let results = fake.tool_results(&session_id);
    assert_eq!(results.len(), 5);
    let accepted: Vec<_> = results.iter().filter(|r| r.accepted).collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].label.as_deref(), Some("ls"));
    assert_eq!(accepted[0].tool_name.as_deref(), Some("bash"));
    assert_eq!(accepted[0].text(), "file.txt");
    let status = fake
        .wait_for_script(&session_id, WAIT)
        .await
        .expect("script ends");
    assert_eq!(status, ScriptStatus::Done);
    assert_eq!(
        fake.session_status(&session_id).as_deref(),
        Some("terminated")
    );
    let report = fake.scenario_report(&session_id);
    assert!(!report.is_ok(), "refused posts are reported");
    assert_eq!(report.failures.len(), 4, "{:?}", report.failures);
}

#[tokio::test]
async fn duplicate_status_is_configurable() {
    let fake = FakeControlPlane::start(FakeConfig {
        duplicate_result_status: 409,
        ..FakeConfig::default()
    })
    .await
    .expect("start");
    let api = Api::new(&fake);
    let (_, session_id) = fake.enqueue_session(scenario(ONE_CALL));
    let (_, token, _) = claim(&api, &fake).await;
    fake.wait_for(WAIT, |s| s.call_id(&session_id, "ls").is_some())
        .await
        .expect("call emitted");
    let call_id = fake.call_id(&session_id, "ls").expect("id");
    let good = json!({"events": [{"type": "user.tool_result", "tool_use_id": call_id,
                                  "content": [{"type": "text", "text": "file.txt"}]}]});
    let path = format!("/v1/sessions/{session_id}/events");
    let (s, _) = api
        .send(api.req(Method::POST, &path, Some(&token)).json(&good))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .send(api.req(Method::POST, &path, Some(&token)).json(&good))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    fake.wait_for_script(&session_id, WAIT)
        .await
        .expect("script ends");
}

#[tokio::test]
async fn event_stream_delivers_live_events_and_drops_on_demand() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (_, session_id) = fake.enqueue_session(scenario(
        r#"{"steps": [
            {"tool_use": {"label": "a", "name": "bash", "input": {"command": "echo a"}, "await": false}},
            {"await_attachments": 2},
            {"tool_use": {"label": "b", "name": "read", "input": {"file_path": "x"}, "await": false}},
            "malformed_event"
        ]}"#,
    ));
    let key = fake.environment_key();
    fake.drop_stream_after(&session_id, 1, StreamCut::Close);
    let path = format!("/v1/sessions/{session_id}/events/stream");
    // The SDK sends Accept: application/json; the stream is served anyway.
    let mut resp = api
        .req(Method::GET, &path, Some(&key))
        .header("accept", "application/json")
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let text = read_until(&mut resp, "\n\n").await;
    assert!(text.starts_with("event: agent.tool_use\ndata: {"), "{text}");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    let ev: Value = serde_json::from_str(data).expect("json event");
    assert_eq!(ev["name"], "bash");
    // The stream ends after one event (the planned cut).
    let rest = tokio::time::timeout(WAIT, resp.text())
        .await
        .expect("ended")
        .expect("text");
    assert!(!rest.contains("agent.tool_use"), "{rest}");

    // A second connection gets what is emitted next, including the malformed frame.
    let mut resp = api
        .req(Method::GET, &path, Some(&key))
        .send()
        .await
        .expect("stream");
    let text = read_until(&mut resp, "this is not json").await;
    assert!(text.contains("\"name\":\"read\""), "{text}");
    fake.wait_for_script(&session_id, WAIT).await.expect("done");
    assert_eq!(fake.inspect(|s| s.stream_attachments(&session_id)), 2);
    assert_eq!(fake.inspect(|s| s.open_streams(&session_id)), 1);
}

#[tokio::test]
async fn event_history_paginates() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (_, session_id) = fake.enqueue_session(scenario(
        r#"{"start": "immediately", "prompt": "hi", "steps": ["running", {"message": "hello"}]}"#,
    ));
    fake.wait_for_script(&session_id, WAIT).await.expect("done");
    let key = fake.environment_key();
    let mut types = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let q = page.map_or_else(|| "?limit=2".to_owned(), |p| format!("?limit=2&page={p}"));
        let (s, body) = api
            .send(api.req(
                Method::GET,
                &format!("/v1/sessions/{session_id}/events{q}"),
                Some(&key),
            ))
            .await;
        assert_eq!(s, StatusCode::OK);
        for e in body["data"].as_array().expect("data") {
            types.push(e["type"].as_str().expect("type").to_owned());
        }
        match body["next_page"].as_str() {
            Some(p) => page = Some(p.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        types,
        [
            "user.message",
            "session.status_running",
            "session.status_running",
            "agent.message"
        ]
    );
    let (s, _) = api
        .send(api.req(
            Method::GET,
            &format!("/v1/sessions/{session_id}/events?limit=1001"),
            Some(&key),
        ))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn confirmation_gates_results() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (_, session_id) = fake.enqueue_session(scenario(
        r#"{"start": "immediately", "steps": [
            {"tool_use": {"label": "g", "name": "bash", "evaluated_permission": "ask", "input": {"command": "id"}}},
            {"idle": {"stop_reason": "requires_action", "event_ids": ["g"]}},
            {"await_event": {"type": "user.tool_confirmation"}},
            {"await_result": {"tool_use": "g"}},
            "terminate"
        ]}"#,
    ));
    let (_, token, _) = claim(&api, &fake).await;
    fake.wait_for(WAIT, |s| s.call_id(&session_id, "g").is_some())
        .await
        .expect("emitted");
    let id = fake.call_id(&session_id, "g").expect("id");
    let events = fake.events(&session_id);
    let idle = events.iter().find(|e| e["type"] == "session.status_idle");
    assert!(idle.is_none() || idle.is_some_and(|e| e["stop_reason"]["event_ids"] == json!([id])));
    let path = format!("/v1/sessions/{session_id}/events");
    let result = json!({"events": [{"type": "user.tool_result", "tool_use_id": id, "content": [{"type": "text", "text": "uid=0"}]}]});
    let (s, body) = api
        .send(api.req(Method::POST, &path, Some(&token)).json(&result))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "held calls take no result");
    assert_eq!(
        body["error"]["details"]["error_code"],
        "tool_use_awaiting_confirmation"
    );
    // The app confirms with the API key.
    let confirm = json!({"events": [{"type": "user.tool_confirmation", "tool_use_id": id, "result": "allow"}]});
    let (s, _) = api
        .send(
            api.req(Method::POST, &path, Some(&fake.api_key()))
                .json(&confirm),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .send(api.req(Method::POST, &path, Some(&token)).json(&result))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        fake.wait_for_script(&session_id, WAIT).await.expect("done"),
        ScriptStatus::Done
    );
}
