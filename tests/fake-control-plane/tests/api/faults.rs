//! Injected and scripted faults, scenario reports, shutdown.

use super::*;

#[tokio::test]
async fn injected_failures_and_delays() {
    let fake = start().await;
    let api = Api::new(&fake);
    fake.inject_failure(
        FailureSpec::new(Endpoint::Poll, 503)
            .times(2)
            .retry_after(Duration::from_millis(1500))
            .should_retry(true),
    );
    fake.fail_next(Endpoint::Stats, 1, 529);
    for _ in 0..2 {
        let resp = api
            .req(
                Method::GET,
                &format!("/v1/environments/{}/work/poll", fake.environment_id()),
                Some(&fake.environment_key()),
            )
            .send()
            .await
            .expect("poll");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after-ms"], "1500");
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(resp.headers()["x-should-retry"], "true");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["type"], "api_error");
    }
    let (s, _) = api.poll(&fake, "", "w").await;
    assert_eq!(s, StatusCode::OK);
    let stats = format!("/v1/environments/{}/work/stats", fake.environment_id());
    let (s, body) = api
        .send(api.req(Method::GET, &stats, Some(&fake.api_key())))
        .await;
    assert_eq!(s.as_u16(), 529);
    assert_eq!(body["error"]["type"], "overloaded_error");
    fake.delay_next(Endpoint::Stats, 1, Duration::from_millis(30));
    let (s, _) = api
        .send(api.req(Method::GET, &stats, Some(&fake.api_key())))
        .await;
    assert_eq!(s, StatusCode::OK);
    let statuses: Vec<Option<u16>> = fake
        .requests_to(Endpoint::Poll)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![Some(503), Some(503), Some(200)]);
}

#[tokio::test]
async fn scripted_faults_stop_and_steal() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (work_id, session_id) = fake.enqueue_session(scenario(
        r#"{"start": "immediately", "prompt": "first", "steps": [{"await_event": {"type": "user.message"}}, "steal_lease", {"request_stop": {}}]}"#,
    ));
    let (_, token, last) = claim(&api, &fake).await;
    fake.emit_event(
        &session_id,
        json!({"type": "user.message", "content": [{"type": "text", "text": "go"}]}),
    )
    .expect("emit");
    assert_eq!(
        fake.wait_for_script(&session_id, WAIT).await.expect("done"),
        ScriptStatus::Done
    );
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopping));
    let stops = fake.stops();
    assert_eq!((stops.len(), stops[0].seq, stops[0].force), (1, 0, false));
    // Stopping items are not compared, so even the stolen lease answers 200 "stopping".
    let q = format!("?expected_last_heartbeat={last}");
    let (s, hb) = api
        .work_call(&fake, &work_id, "heartbeat", &q, &token, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hb["state"], "stopping");
}

#[tokio::test]
async fn report_passes_when_every_expectation_holds() {
    let fake = FakeControlPlane::start(FakeConfig {
        stop_returns_work: true,
        ..FakeConfig::default()
    })
    .await
    .expect("start");
    let api = Api::new(&fake);
    let (work_id, session_id) = fake.enqueue_session(scenario(
        r#"{"start": "immediately", "steps": [
            {"tool_use": {"label": "one", "name": "bash", "input": {"command": "echo one"},
                          "expect": {"is_error": false, "contains": ["one"]}}},
            {"tool_use": {"label": "web", "name": "web_fetch", "input": {"url": "https://example.com"},
                          "server_result": "<html/>"}},
            {"custom_tool_use": {"label": "crm", "name": "crm_lookup", "expect_no_result": true}},
            {"idle": {"stop_reason": "requires_action", "event_ids": ["crm"]}}
        ]}"#,
    ));
    let (_, token, _) = claim(&api, &fake).await;
    fake.wait_for(WAIT, |s| s.call_id(&session_id, "one").is_some())
        .await
        .expect("emitted");
    let id = fake.call_id(&session_id, "one").expect("id");
    let path = format!("/v1/sessions/{session_id}/events");
    let result = json!({"events": [{"type": "user.tool_result", "tool_use_id": id, "is_error": false,
                                    "content": [{"type": "text", "text": "one\n"}]}]});
    let (s, _) = api
        .send(api.req(Method::POST, &path, Some(&token)).json(&result))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        fake.wait_for_script(&session_id, WAIT).await.expect("done"),
        ScriptStatus::Done
    );
    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{:?}", report.failures);
    let events = fake.events(&session_id);
    let idle = events.last().expect("events");
    assert_eq!(idle["stop_reason"]["type"], "requires_action");
    assert_eq!(
        idle["stop_reason"]["event_ids"],
        json!([fake.call_id(&session_id, "crm")])
    );
    assert!(
        events.iter().any(|e| e["type"] == "agent.tool_result"),
        "server tool resolved"
    );
    // Posting for the server-run call is refused and breaks the report.
    let web = fake.call_id(&session_id, "web").expect("web id");
    let bad = json!({"events": [{"type": "user.tool_result", "tool_use_id": web,
                                 "content": [{"type": "text", "text": "x"}]}]});
    let (s, _) = api
        .send(api.req(Method::POST, &path, Some(&token)).json(&bad))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(!fake.scenario_report(&session_id).is_ok());
    // With `stop_returns_work`, stop answers 200 and the work item.
    let (s, body) = api
        .work_call(
            &fake,
            &work_id,
            "stop",
            "",
            &token,
            Some(json!({"force": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["state"], "stopped");
}

#[tokio::test]
async fn dropping_the_handle_ends_streams_and_stops_serving() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (_, session_id) = fake.enqueue_session(scenario(r#"{"steps": []}"#));
    let resp = api
        .req(
            Method::GET,
            &format!("/v1/sessions/{session_id}/events/stream"),
            Some(&fake.environment_key()),
        )
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), StatusCode::OK);
    drop(fake);
    let rest = tokio::time::timeout(WAIT, resp.text())
        .await
        .expect("the stream ends once the fake is dropped");
    assert!(rest.is_ok_and(|t| !t.contains("agent.")));
}
