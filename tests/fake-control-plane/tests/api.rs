//! Drives the fake over HTTP, as a worker would, and checks the protocol rules it enforces.

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wasm_sandbox_fake_control_plane::{
    Credential, Endpoint, FailureSpec, FakeConfig, FakeControlPlane, Handle, Scenario,
    ScriptStatus, StreamCut, WorkState,
};

const WAIT: Duration = Duration::from_secs(10);

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(fake: &Handle) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: fake.url().to_owned(),
        }
    }

    /// A request with the SDK's headers (`anthropic-version`, the managed-agents beta).
    fn req(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("anthropic-version", "2026-10-21")
            .header("anthropic-beta", "managed-agents-2026-04-01");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    async fn poll(&self, fake: &Handle, query: &str, worker: &str) -> (StatusCode, Value) {
        let path = format!(
            "/v1/environments/{}/work/poll{query}",
            fake.environment_id()
        );
        self.send(
            self.req(Method::GET, &path, Some(&fake.environment_key()))
                .header("anthropic-worker-id", worker),
        )
        .await
    }

    async fn work_call(
        &self,
        fake: &Handle,
        work_id: &str,
        action: &str,
        query: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let path = format!(
            "/v1/environments/{}/work/{work_id}/{action}{query}",
            fake.environment_id()
        );
        let mut r = self
            .req(Method::POST, &path, Some(token))
            .header("content-type", "application/json");
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r).await
    }
}

fn sessions_token(secret: &str) -> String {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .expect("secret is url-safe base64 without padding");
    let v: Value = serde_json::from_slice(&raw).expect("secret is JSON");
    v["sessions_token"]
        .as_str()
        .expect("sessions_token")
        .to_owned()
}

async fn start() -> Handle {
    FakeControlPlane::start(FakeConfig::default())
        .await
        .expect("fake starts")
}

fn scenario(json: &str) -> Scenario {
    Scenario::from_json(json).expect("scenario")
}

/// Polls, acks and sends the first heartbeat; returns (work_id, sessions token, last_heartbeat).
async fn claim(api: &Api, fake: &Handle) -> (String, String, String) {
    let (status, work) = api.poll(fake, "?block_ms=999", "w-1").await;
    assert_eq!(status, StatusCode::OK);
    let work_id = work["id"].as_str().expect("id").to_owned();
    let token = sessions_token(work["secret"].as_str().expect("secret"));
    let (status, _) = api
        .work_call(fake, &work_id, "ack", "", &fake.environment_key(), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, hb) = api
        .work_call(
            fake,
            &work_id,
            "heartbeat",
            "?expected_last_heartbeat=NO_HEARTBEAT",
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{hb}");
    (
        work_id,
        token,
        hb["last_heartbeat"].as_str().expect("hb").to_owned(),
    )
}

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

#[tokio::test]
async fn auth_headers_and_matrix() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (work_id, session_id) = fake.enqueue_session(scenario(r#"{"steps": []}"#));
    let env = fake.environment_id();
    let poll = format!("/v1/environments/{env}/work/poll");
    let key = fake.environment_key();

    let (s, body) = api.send(api.req(Method::GET, &poll, None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["type"], "error");
    assert!(
        body["request_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("req_"))
    );
    let (s, _) = api
        .send(api.req(Method::GET, &poll, Some("sk-ant-oat01-nope")))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, body) = api
        .send(api.req(Method::GET, &poll, Some(&fake.api_key())))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the API key cannot poll");
    assert_eq!(body["error"]["type"], "permission_error");
    // x-api-key is accepted too.
    let (s, _) = api
        .send(
            api.http
                .get(format!("{}{poll}", api.base))
                .header("anthropic-version", "2023-06-01")
                .header("anthropic-beta", "managed-agents-2026-04-01")
                .header("x-api-key", &key),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Missing beta header: 404; missing version: 400.
    let (s, _) = api
        .send(
            api.http
                .get(format!("{}{poll}", api.base))
                .header("anthropic-version", "2026-10-21")
                .bearer_auth(&key),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .send(
            api.http
                .get(format!("{}{poll}", api.base))
                .header("anthropic-beta", "managed-agents-2026-04-01")
                .bearer_auth(&key),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Unknown query parameters (`?beta=true`) are ignored; a wrong environment is 404.
    let (s, _) = api
        .send(api.req(Method::GET, &format!("{poll}?beta=true"), Some(&key)))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .send(api.req(
            Method::GET,
            "/v1/environments/env_other/work/poll",
            Some(&key),
        ))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Stats: API key and environment key.
    let stats = format!("/v1/environments/{env}/work/stats");
    let (s, body) = api
        .send(api.req(Method::GET, &stats, Some(&fake.api_key())))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["type"], "work_queue_stats");
    let (s, _) = api.send(api.req(Method::GET, &stats, Some(&key))).await;
    assert_eq!(s, StatusCode::OK);
    // Retrieve: API key only, secret null.
    let item = format!("/v1/environments/{env}/work/{work_id}");
    let (s, _) = api.send(api.req(Method::GET, &item, Some(&key))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = api
        .send(api.req(Method::GET, &item, Some(&fake.api_key())))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(body["secret"].is_null());
    // List: environment key.
    let (s, body) = api
        .send(api.req(
            Method::GET,
            &format!("/v1/environments/{env}/work?limit=10"),
            Some(&key),
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert!(body["next_page"].is_null());

    // Sessions: a sessions token only for its own session.
    let (_, other_session) = fake.enqueue_session(scenario(r#"{"steps": []}"#));
    fake.advance_clock(Duration::from_secs(6));
    let (_, work) = api.poll(&fake, "", "w").await;
    let token = sessions_token(work["secret"].as_str().expect("secret"));
    let mine = work["data"]["id"].as_str().expect("sid").to_owned();
    let theirs = if mine == session_id {
        &other_session
    } else {
        &session_id
    };
    let (s, body) = api
        .send(api.req(Method::GET, &format!("/v1/sessions/{mine}"), Some(&token)))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["type"], "session");
    let (s, _) = api
        .send(api.req(Method::GET, &format!("/v1/sessions/{theirs}"), Some(&token)))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let unknown = fake
        .requests()
        .iter()
        .filter(|r| r.credential == Credential::Unknown)
        .count();
    assert_eq!(unknown, 1);
}

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

const ONE_CALL: &str = r#"{"start": "immediately", "steps": [
    {"tool_use": {"label": "ls", "name": "bash", "input": {"command": "ls"},
                  "expect": {"is_error": false, "contains": ["file.txt"]}}},
    {"idle": {}},
    "terminate"
]}"#;

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

/// Reads the stream until `needle` shows up; returns everything read.
async fn read_until(resp: &mut reqwest::Response, needle: &str) -> String {
    let mut text = String::new();
    while !text.contains(needle) {
        let chunk = tokio::time::timeout(WAIT, resp.chunk())
            .await
            .expect("stream made progress")
            .expect("chunk");
        let Some(chunk) = chunk else { break };
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
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

#[tokio::test]
async fn skills_are_served_latest_and_by_id() {
    let fake = start().await;
    let api = Api::new(&fake);
    let v1 = fake.add_skill_version("skill_1", "pdf", b"PK\x03\x04old".to_vec());
    let v2 = fake.add_skill_version("skill_1", "pdf", b"PK\x03\x04new".to_vec());
    assert_ne!(v1, v2);
    let key = fake.environment_key();
    // No beta header is needed on skills routes.
    let get = |path: String| {
        api.http
            .get(format!("{}{path}", api.base))
            .header("anthropic-version", "2026-10-21")
            .bearer_auth(&key)
    };
    let (s, body) = api
        .send(get("/v1/skills/skill_1/versions/latest".into()))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["id"], json!(v2));
    assert_eq!(body["type"], "skill_version");
    assert_eq!(body["name"], "pdf");
    let resp = get(format!("/v1/skills/skill_1/versions/{v1}/content"))
        .header("accept", "application/binary")
        .send()
        .await
        .expect("content");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/zip");
    assert_eq!(
        resp.bytes().await.expect("bytes").as_ref(),
        b"PK\x03\x04old"
    );
    let (s, _) = api
        .send(get("/v1/skills/skill_9/versions/latest".into()))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn memory_stores_follow_the_sessions_token_rules() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (_, session_id) = fake.enqueue_session(scenario(
        r#"{"memory_stores": [
              {"name": "User Prefs", "memories": {"/a.md": "alpha", "/dir/b.md": "beta", "/dir/sub/c.md": "gamma"}},
              {"name": "ro", "access": "read_only", "memories": {"/r.md": "read me"}}
           ], "steps": []}"#,
    ));
    let (_, token, _) = claim(&api, &fake).await;
    let stores = fake.session_memory_stores(&session_id);
    assert_eq!(stores.len(), 2);
    let (rw, ro) = (&stores[0].0, &stores[1].0);
    let (s, session) = api
        .send(api.req(
            Method::GET,
            &format!("/v1/sessions/{session_id}"),
            Some(&token),
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        session["resources"][0]["mount_path"],
        "/mnt/memory/user-prefs"
    );
    assert_eq!(session["resources"][1]["access"], "read_only");

    let mem = |method: Method, path: &str, tok: &str| {
        api.http
            .request(method, format!("{}/v1/memory_stores{path}", api.base))
            .header("anthropic-version", "2026-10-21")
            .header("anthropic-beta", "agent-memory-2026-07-22")
            .bearer_auth(tok)
    };
    // The environment key is refused.
    let (s, _) = api
        .send(mem(
            Method::GET,
            &format!("/{rw}/memories"),
            &fake.environment_key(),
        ))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Full view pages hold at most 20; basic view has null content and a sha.
    let (s, body) = api
        .send(mem(
            Method::GET,
            &format!("/{rw}/memories?view=full&limit=20"),
            &token,
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    let items = body["data"].as_array().expect("data");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["path"], "/a.md");
    assert_eq!(items[0]["content"], "alpha");
    let (_, body) = api
        .send(mem(
            Method::GET,
            &format!("/{rw}/memories?view=basic&limit=100&depth=1"),
            &token,
        ))
        .await;
    let items = body["data"].as_array().expect("data");
    assert_eq!(items.len(), 2);
    assert!(items[0]["content"].is_null());
    assert_eq!(items[0]["content_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(items[1], json!({"type": "memory_prefix", "path": "/dir/"}));

    // Create, update with a precondition, delete with a guard.
    let (s, created) = api
        .send(
            mem(Method::POST, &format!("/{rw}/memories"), &token)
                .json(&json!({"path": "/new.md", "content": "agent wrote"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let id = created["id"].as_str().expect("id").to_owned();
    let sha = created["content_sha256"].as_str().expect("sha").to_owned();
    let (s, _) = api
        .send(
            mem(Method::POST, &format!("/{rw}/memories"), &token)
                .json(&json!({"path": "/new.md", "content": "again"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let stale = json!({"content": "v2", "precondition": {"type": "content_sha256", "content_sha256": "0".repeat(64)}});
    let (s, body) = api
        .send(mem(Method::POST, &format!("/{rw}/memories/{id}"), &token).json(&stale))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["error"]["type"], "memory_precondition_failed_error");
    let fresh =
        json!({"content": "v2", "precondition": {"type": "content_sha256", "content_sha256": sha}});
    let (s, updated) = api
        .send(mem(Method::POST, &format!("/{rw}/memories/{id}"), &token).json(&fresh))
        .await;
    assert_eq!(s, StatusCode::OK);
    let sha2 = updated["content_sha256"].as_str().expect("sha").to_owned();
    let (s, _) = api
        .send(mem(
            Method::DELETE,
            &format!("/{rw}/memories/{id}?expected_content_sha256={sha}"),
            &token,
        ))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, body) = api
        .send(mem(
            Method::DELETE,
            &format!("/{rw}/memories/{id}?expected_content_sha256={sha2}"),
            &token,
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, json!({"id": id, "type": "memory_deleted"}));
    let (s, _) = api
        .send(mem(Method::DELETE, &format!("/{rw}/memories/{id}"), &token))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Oversized content: 413.
    let big = "x".repeat(102_401);
    let (s, _) = api
        .send(
            mem(Method::POST, &format!("/{rw}/memories"), &token)
                .json(&json!({"path": "/big.md", "content": big})),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // Read-only store: reads pass, writes are refused.
    let (s, _) = api
        .send(mem(Method::GET, &format!("/{ro}/memories"), &token))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .send(
            mem(Method::POST, &format!("/{ro}/memories"), &token)
                .json(&json!({"path": "/x.md", "content": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A remote edit shows up.
    fake.put_memory(rw, "/a.md", "alpha v2").expect("store");
    assert!(
        fake.memories(rw)
            .contains(&("/a.md".to_owned(), "alpha v2".to_owned()))
    );
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
