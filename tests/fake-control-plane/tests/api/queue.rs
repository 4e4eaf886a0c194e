//! The work queue: poll, ack, heartbeat leases, reclaim, stop.

use super::*;

#[tokio::test]
async fn claim_ack_heartbeat_stop_lifecycle() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (work_id, session_id) = fake.enqueue_session(scenario(r#"{"steps": []}"#));
    assert_eq!(fake.stats().depth, 1);

    let (status, work) = api.poll(&fake, "?block_ms=999", "w-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(work["id"], json!(work_id));
    assert_eq!(work["type"], "work");
    assert_eq!(work["state"], "queued");
    assert_eq!(work["data"], json!({"type": "session", "id": session_id}));
    assert!(work["acknowledged_at"].is_null());
    let token = sessions_token(work["secret"].as_str().expect("secret"));
    assert!(token.starts_with("sk-ant-req-"));
    let stats = fake.stats();
    assert_eq!((stats.depth, stats.pending), (0, 1));
    assert!(stats.oldest_queued_at.is_some());

    let (status, acked) = api
        .work_call(&fake, &work_id, "ack", "", &fake.environment_key(), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(acked["state"], "starting");
    assert!(
        acked["secret"].is_null(),
        "secret only on the poll response"
    );
    assert!(acked["acknowledged_at"].is_string());
    assert_eq!(fake.stats().pending, 0);

    let (status, hb) = api
        .work_call(
            &fake,
            &work_id,
            "heartbeat",
            "?expected_last_heartbeat=NO_HEARTBEAT",
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hb["type"], "work_heartbeat");
    assert_eq!(hb["state"], "active");
    assert_eq!(hb["lease_extended"], true);
    assert_eq!(hb["ttl_seconds"], 60);
    let first = hb["last_heartbeat"].as_str().expect("last").to_owned();

    // Echoing the value (URL-encoded, as the SDK sends it) extends the lease.
    let q = format!("?expected_last_heartbeat={}", first.replace(':', "%3A"));
    let (status, hb2) = api
        .work_call(&fake, &work_id, "heartbeat", &q, &token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let second = hb2["last_heartbeat"].as_str().expect("last").to_owned();
    assert_ne!(first, second);

    // A stale echo gets 412 with the server's view of the lease.
    let (status, err) = api
        .work_call(&fake, &work_id, "heartbeat", &q, &token, None)
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(err["type"], "error");
    assert_eq!(
        err["error"]["details"]["error_code"],
        "heartbeat_precondition_failed"
    );
    let cur = &err["error"]["details"]["current_state"];
    assert_eq!(cur["state"], "active");
    assert_eq!(cur["last_heartbeat"], json!(second));
    assert_eq!(cur["lease_extended"], false);
    assert_eq!(cur["ttl_seconds"], 60);

    // Force stop: 204 and no body; a second stop is 409.
    let (status, body) = api
        .work_call(
            &fake,
            &work_id,
            "stop",
            "",
            &token,
            Some(json!({"force": true})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));
    let (status, _) = api
        .work_call(
            &fake,
            &work_id,
            "stop",
            "",
            &token,
            Some(json!({"force": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Beats on a stopped item are not compared and report the state.
    let (status, hb) = api
        .work_call(
            &fake,
            &work_id,
            "heartbeat",
            "?expected_last_heartbeat=whatever",
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hb["state"], "stopped");
    assert_eq!(hb["lease_extended"], false);

    let stops = fake.stops();
    assert_eq!(stops.len(), 2);
    assert!(stops[0].force);
    assert_eq!(stops[0].status, 204);
    assert_eq!(stops[1].status, 409);
    assert!(
        matches!(stops[0].credential, Credential::SessionsToken { ref work_id, .. } if *work_id == stops[0].work_id)
    );
    let beats = fake.heartbeats();
    assert_eq!(beats.len(), 4);
    assert_eq!(
        beats[0].expected_last_heartbeat.as_deref(),
        Some("NO_HEARTBEAT")
    );
    assert_eq!(
        beats[1].expected_last_heartbeat.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(beats[2].status, 412);
}

#[tokio::test]
async fn empty_poll_is_json_null_and_block_ms_is_validated() {
    let fake = start().await;
    let api = Api::new(&fake);
    let path = format!(
        "/v1/environments/{}/work/poll?block_ms=20",
        fake.environment_id()
    );
    let resp = api
        .req(Method::GET, &path, Some(&fake.environment_key()))
        .header("anthropic-worker-id", "idle-1")
        .send()
        .await
        .expect("poll");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/json")
    );
    assert!(resp.headers().contains_key("request-id"));
    assert_eq!(resp.text().await.expect("body"), "null");

    for bad in [
        "?block_ms=0",
        "?block_ms=1000",
        "?block_ms=x",
        "?reclaim_older_than_ms=0",
    ] {
        let (status, body) = api.poll(&fake, bad, "idle-1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    let _ = api.poll(&fake, "", "idle-2").await;
    assert_eq!(fake.stats().workers_polling, Some(2));
    assert_eq!(fake.requests_to(Endpoint::Poll).len(), 6);
    assert_eq!(
        fake.requests_to(Endpoint::Poll)[0].header("Anthropic-Worker-ID"),
        Some("idle-1")
    );
}

#[tokio::test]
async fn long_poll_wakes_when_work_arrives() {
    let fake = start().await;
    let api = Api::new(&fake);
    let path = format!(
        "/v1/environments/{}/work/poll?block_ms=999",
        fake.environment_id()
    );
    let req = api
        .req(Method::GET, &path, Some(&fake.environment_key()))
        .send();
    let waiter = tokio::spawn(req);
    fake.wait_for(WAIT, |s| {
        s.requests()
            .iter()
            .any(|r| r.endpoint == Some(Endpoint::Poll))
    })
    .await
    .expect("poll arrived");
    let (work_id, _) = fake.enqueue_session(scenario(r#"{"steps": []}"#));
    let resp = waiter.await.expect("join").expect("poll");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body["id"],
        json!(work_id),
        "the held poll returns the new item"
    );
}

#[tokio::test]
async fn unacked_items_are_reclaimed_with_a_fresh_secret() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (work_id, _) = fake.enqueue_session(scenario(r#"{"steps": []}"#));
    let (_, first) = api.poll(&fake, "", "w-1").await;
    // Within the default 5 s window the pending item is not handed out again.
    let (_, none) = api.poll(&fake, "", "w-2").await;
    assert_eq!(none, Value::Null);
    fake.advance_clock(Duration::from_millis(20));
    let (_, again) = api.poll(&fake, "?reclaim_older_than_ms=10", "w-2").await;
    assert_eq!(again["id"], json!(work_id));
    assert_ne!(first["secret"], again["secret"]);
    fake.inspect(|s| {
        assert_eq!(s.claims(&work_id), 2);
        assert_eq!(s.claimed_by(&work_id), Some("w-2"));
    });
    // The token of the first claim cannot hold the lease any more.
    let old = sessions_token(first["secret"].as_str().expect("secret"));
    let new = sessions_token(again["secret"].as_str().expect("secret"));
    let (status, _) = api
        .work_call(&fake, &work_id, "ack", "", &fake.environment_key(), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let hb = "?expected_last_heartbeat=NO_HEARTBEAT";
    let (status, _) = api
        .work_call(&fake, &work_id, "heartbeat", hb, &old, None)
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, _) = api
        .work_call(&fake, &work_id, "heartbeat", hb, &new, None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn expired_lease_is_requeued_for_a_second_worker() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (work_id, _) = fake.enqueue_session(scenario(r#"{"steps": []}"#));
    let (_, token, last) = claim(&api, &fake).await;
    fake.advance_clock(Duration::from_secs(61));
    fake.wait_for_work_state(&work_id, WorkState::Queued, WAIT)
        .await
        .expect("re-queued");
    let q = format!("?expected_last_heartbeat={last}");
    let (status, err) = api
        .work_call(&fake, &work_id, "heartbeat", &q, &token, None)
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(err["error"]["details"]["current_state"]["state"], "queued");
    assert!(err["error"]["details"]["current_state"]["last_heartbeat"].is_null());
    let (_, work) = api.poll(&fake, "", "w-2").await;
    assert_eq!(work["id"], json!(work_id));
    assert_eq!(fake.inspect(|s| s.lease_expiries().to_vec()), vec![work_id]);
}

#[tokio::test]
async fn graceful_stop_is_reported_by_the_next_heartbeat() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (work_id, _) = fake.enqueue_session(scenario(r#"{"steps": []}"#));
    let (_, token, _) = claim(&api, &fake).await;
    // Ops ask for a graceful stop with the API key.
    let (status, _) = api
        .work_call(
            &fake,
            &work_id,
            "stop",
            "",
            &fake.api_key(),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopping));
    let work = fake.work(&work_id).expect("work");
    assert!(work.stop_requested_at.is_some());
    // The value is not compared while stopping.
    let (status, hb) = api
        .work_call(
            &fake,
            &work_id,
            "heartbeat",
            "?expected_last_heartbeat=stale",
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hb["state"], "stopping");
    let (status, _) = api
        .work_call(
            &fake,
            &work_id,
            "stop",
            "",
            &token,
            Some(json!({"force": true})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));
    let (status, _) = api
        .work_call(
            &fake,
            &work_id,
            "stop",
            "",
            &token,
            Some(json!({"bogus": 1})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown stop fields are refused"
    );
}

#[tokio::test]
async fn stolen_lease_and_unextended_lease() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (work_id, _) = fake.enqueue_session(scenario(r#"{"steps": []}"#));
    let (_, token, last) = claim(&api, &fake).await;
    fake.next_heartbeat_not_extended(&work_id).expect("known");
    let q = format!("?expected_last_heartbeat={last}");
    let (status, hb) = api
        .work_call(&fake, &work_id, "heartbeat", &q, &token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hb["lease_extended"], false);
    assert_eq!(hb["state"], "active");
    let last = hb["last_heartbeat"].as_str().expect("last").to_owned();
    fake.steal_lease(&work_id).expect("known");
    let q = format!("?expected_last_heartbeat={last}");
    let (status, err) = api
        .work_call(&fake, &work_id, "heartbeat", &q, &token, None)
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_ne!(
        err["error"]["details"]["current_state"]["last_heartbeat"],
        json!(last)
    );
}
