//! Sessions driven by hand ([`Handle::emit_tool_use`], [`Handle::drop_streams_missing`]),
//! replies lost after serving ([`FailureSpec::after_serving`]) and the minted secrets.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wasm_sandbox_fake_control_plane::{
    Endpoint, FailureSpec, FakeConfig, FakeControlPlane, Handle, Scenario, StreamCut, ToolUse,
};

const WAIT: Duration = Duration::from_secs(10);

fn req(fake: &Handle, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}{path}", fake.url()))
        .header("anthropic-version", "2026-10-21")
        .header("anthropic-beta", "managed-agents-2026-04-01")
        .bearer_auth(token)
}

async fn post_result(fake: &Handle, sid: &str, id: &str) -> StatusCode {
    req(
        fake,
        Method::POST,
        &format!("/v1/sessions/{sid}/events"),
        &fake.environment_key(),
    )
    .json(
        &json!({"events": [{"type": "user.tool_result", "tool_use_id": id,
                              "content": [{"type": "text", "text": "ok"}]}]}),
    )
    .send()
    .await
    .expect("post")
    .status()
}

async fn start() -> (Handle, String) {
    let fake = FakeControlPlane::start(FakeConfig::default())
        .await
        .expect("fake starts");
    let (_, sid) = fake.enqueue_session(Scenario::default());
    (fake, sid)
}

#[tokio::test]
async fn hand_emitted_calls_are_judged_like_scripted_ones() {
    let (fake, sid) = start().await;
    let plain = fake
        .emit_tool_use(&sid, &ToolUse::new("bash", json!({"command": "ls"})))
        .expect("emit");
    let ev = fake
        .events(&sid)
        .into_iter()
        .find(|e| e["id"] == plain.as_str())
        .expect("logged");
    assert_eq!(ev["type"], "agent.tool_use");
    assert!(ev.get("evaluated_permission").is_none());
    assert_eq!(post_result(&fake, &sid, &plain).await, StatusCode::OK);
    assert!(fake.tool_results(&sid)[0].accepted);
    assert_eq!(
        fake.tool_results(&sid)[0].tool_name.as_deref(),
        Some("bash")
    );
    // A second result is a duplicate.
    assert_eq!(
        post_result(&fake, &sid, &plain).await,
        StatusCode::BAD_REQUEST
    );

    let denied = fake
        .emit_tool_use(&sid, &ToolUse::new("bash", json!({})).permission("deny"))
        .expect("emit");
    assert_eq!(
        post_result(&fake, &sid, &denied).await,
        StatusCode::BAD_REQUEST
    );
    let asked = fake
        .emit_tool_use(&sid, &ToolUse::new("read", json!({})).permission("ask"))
        .expect("emit");
    assert_eq!(
        post_result(&fake, &sid, &asked).await,
        StatusCode::BAD_REQUEST
    );

    // A verdict logged before its call (the id chosen by the test) applies to it.
    fake.emit_event(
        &sid,
        json!({"type": "user.tool_confirmation", "tool_use_id": "sevt_early", "result": "allow"}),
    )
    .expect("confirm");
    let early = fake
        .emit_tool_use(
            &sid,
            &ToolUse::new("glob", json!({}))
                .permission("ask")
                .id("sevt_early"),
        )
        .expect("emit");
    assert_eq!(early, "sevt_early");
    assert_eq!(post_result(&fake, &sid, &early).await, StatusCode::OK);

    let custom = fake
        .emit_tool_use(&sid, &ToolUse::new("lookup", json!({})).custom())
        .expect("emit");
    assert_eq!(
        fake.events(&sid).last().expect("event")["type"],
        "agent.custom_tool_use"
    );
    // Answered with the wrong result type: refused and recorded.
    assert_eq!(
        post_result(&fake, &sid, &custom).await,
        StatusCode::BAD_REQUEST
    );
    let refused: Vec<String> = fake
        .tool_results(&sid)
        .into_iter()
        .filter(|r| !r.accepted)
        .map(|r| r.tool_use_id)
        .collect();
    assert_eq!(refused, [plain, denied, asked, custom]);
    assert!(
        fake.emit_tool_use("sesn_nope", &ToolUse::new("bash", json!({})))
            .is_err()
    );
}

#[tokio::test]
async fn a_reply_lost_after_serving_still_applied_the_post() {
    let (fake, sid) = start().await;
    let id = fake
        .emit_tool_use(&sid, &ToolUse::new("bash", json!({})))
        .expect("emit");
    fake.inject_failure(FailureSpec::new(Endpoint::EventsSend, 500).after_serving());
    assert_eq!(
        post_result(&fake, &sid, &id).await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // Persisted, and judged as served.
    let results = fake.tool_results(&sid);
    assert_eq!(results.len(), 1);
    assert!(results[0].accepted);
    assert_eq!(
        fake.events(&sid).last().expect("event")["type"],
        "user.tool_result"
    );
    assert_eq!(fake.requests_to(Endpoint::EventsSend)[0].status, Some(500));
    // Without after_serving the failure comes first: nothing is applied.
    let other = fake
        .emit_tool_use(&sid, &ToolUse::new("bash", json!({})))
        .expect("emit");
    fake.fail_next(Endpoint::EventsSend, 1, 500);
    assert_eq!(
        post_result(&fake, &sid, &other).await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(fake.tool_results(&sid).len(), 1);
}

#[tokio::test]
async fn calls_made_while_streams_were_down_are_only_in_history() {
    let (fake, sid) = start().await;
    let mut resp = req(
        &fake,
        Method::GET,
        &format!("/v1/sessions/{sid}/events/stream"),
        &fake.environment_key(),
    )
    .send()
    .await
    .expect("stream");
    assert_eq!(resp.status(), StatusCode::OK);
    let live = fake
        .emit_tool_use(&sid, &ToolUse::new("bash", json!({"n": 1})))
        .expect("emit");
    let missed = fake
        .drop_streams_missing(
            &sid,
            StreamCut::Close,
            &[ToolUse::new("read", json!({"n": 2}))],
        )
        .expect("drop");
    let mut seen = String::new();
    let read_all = async {
        while let Some(chunk) = resp.chunk().await.expect("chunk") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(WAIT, read_all)
        .await
        .expect("the stream did not end");
    assert!(seen.contains(&live), "{seen}");
    assert!(!seen.contains(&missed[0]), "{seen}");
    let ids: Vec<Value> = fake
        .events(&sid)
        .into_iter()
        .map(|e| e["id"].clone())
        .collect();
    assert!(ids.contains(&json!(missed[0])));
    // Registered: a result for it is accepted.
    assert_eq!(post_result(&fake, &sid, &missed[0]).await, StatusCode::OK);
}

#[tokio::test]
async fn minted_secrets_are_the_ones_handed_out() {
    let fake = FakeControlPlane::start(FakeConfig::default())
        .await
        .expect("fake starts");
    let (work_id, _) = fake.enqueue_session(Scenario::default());
    assert!(fake.minted_secrets(&work_id).is_empty());
    let work: Value = req(
        &fake,
        Method::GET,
        &format!("/v1/environments/{}/work/poll", fake.environment_id()),
        &fake.environment_key(),
    )
    .send()
    .await
    .expect("poll")
    .json()
    .await
    .expect("json");
    let minted = fake.minted_secrets(&work_id);
    assert_eq!(minted.len(), 1);
    assert_eq!(minted[0].generation, 1);
    assert_eq!(work["secret"], minted[0].secret.as_str());
    assert!(minted[0].sessions_token.starts_with("sk-ant-req-fake-"));
}
