//! Tool calls: the exact requests of one session, the permission gate, stream drops and bad
//! frames, result posts that fail.

use std::sync::Arc;

use serde_json::json;
use wasm_sandbox_fake_control_plane::{
    Credential, Endpoint, FailureSpec, RecordedRequest, StreamCut, ToolUse,
};
use wasm_sandbox_worker::sandbox::testing::ScriptedSandbox;

use crate::harness::*;

fn index_of(log: &[RecordedRequest], pred: impl Fn(&RecordedRequest) -> bool) -> usize {
    log.iter().position(pred).expect("request not found")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_six_tools_and_the_exact_requests() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (work, sid) = enqueue_session(&fake);
    let mut cfg = config(&fake, dir.path());
    // Beat often (before the fake reports its TTL, and after), so several beats are checked.
    cfg.heartbeat.max_interval = std::time::Duration::from_millis(150);
    let run = start(cfg, &sandbox);
    let metrics = Arc::clone(&run.metrics);
    attached(&fake, &sid, 1).await;

    let mut ids = Vec::new();
    for tool in ["bash", "read", "write", "edit", "glob", "grep"] {
        let id = tool_use(&fake, &sid, tool, json!({"n": tool}), Some("allow"));
        let result = wait_result(&fake, &sid, &id).await;
        assert_eq!(result["is_error"], false);
        assert_eq!(
            result["content"],
            json!([{"type": "text", "text": format!("{tool}:{}", json!({"n": tool}))}])
        );
        ids.push(id);
    }
    // Not ours: a server tool, a custom tool, and a custom call named like a sandbox tool.
    let ws = tool_use(&fake, &sid, "web_search", json!({"query": "x"}), None);
    let custom = fake
        .emit_tool_use(&sid, &ToolUse::new("lookup", json!({})).custom())
        .unwrap();
    let custom_bash = fake
        .emit_tool_use(&sid, &ToolUse::new("bash", json!({})).custom())
        .unwrap();
    // A final call proves the three above were passed over, not merely still queued.
    let last = tool_use(&fake, &sid, "bash", json!({"n": "last"}), None);
    wait_result(&fake, &sid, &last).await;
    end_turn(&fake, &sid);
    finish(run).await.unwrap();

    for id in [&ws, &custom, &custom_bash] {
        assert!(
            fake.tool_results(&sid).iter().all(|r| &r.tool_use_id != id),
            "posted a result for an unowned call {id}"
        );
        assert_eq!(posts_for(&fake, id), 0);
    }
    for id in &ids {
        assert_eq!(posts_for(&fake, id), 1, "exactly one post for {id}");
    }
    assert!(
        fake.tool_results(&sid).iter().all(|r| r.accepted),
        "{:?}",
        fake.tool_results(&sid)
    );
    let names: Vec<String> = sandbox.calls().into_iter().map(|c| c.1).collect();
    assert_eq!(
        names,
        ["bash", "read", "write", "edit", "glob", "grep", "bash"]
    );
    assert_eq!(sandbox.closed(), std::slice::from_ref(&sid));
    assert!(no_session_dir(dir.path(), &work), "session dir left behind");

    let log = fake.requests();
    fn is(e: Endpoint, id: &str) -> impl Fn(&RecordedRequest) -> bool + '_ {
        move |r| r.endpoint == Some(e) && r.path.split('/').any(|s| s == id)
    }
    let poll = index_of(&log, |r| r.endpoint == Some(Endpoint::Poll));
    let ack = index_of(&log, is(Endpoint::Ack, &work));
    let hb = index_of(&log, is(Endpoint::Heartbeat, &work));
    let sess = index_of(&log, is(Endpoint::SessionRetrieve, &sid));
    let stream = index_of(&log, is(Endpoint::EventsStream, &sid));
    let list = index_of(&log, is(Endpoint::EventsList, &sid));
    let stop = index_of(&log, is(Endpoint::Stop, &work));
    // The session fetch and the stream (then the history) go out with the ack (issue 16);
    // the heartbeat only after it.
    assert!(poll < ack && ack < hb && poll < sess && poll < stream && stream < list);
    let last_post = log
        .iter()
        .rposition(is(Endpoint::EventsSend, &sid))
        .unwrap();
    assert!(last_post < stop, "stopped before the last result");
    assert!(
        log[stop + 1..]
            .iter()
            .all(|r| r.endpoint == Some(Endpoint::Poll)),
        "requests for the item after its stop"
    );
    assert_eq!(log[poll].query, [("block_ms".to_owned(), "50".to_owned())]);
    assert_eq!(log[poll].header("anthropic-worker-id"), Some("w-test"));
    assert_eq!(log[poll].credential, Credential::EnvironmentKey);
    assert_eq!(log[ack].credential, Credential::EnvironmentKey);
    assert_eq!(
        log[hb].query,
        [(
            "expected_last_heartbeat".to_owned(),
            "NO_HEARTBEAT".to_owned()
        )]
    );
    // Every per-item call rides the sessions token of this claim, never the environment key.
    for r in &log[poll + 1..] {
        if !matches!(r.endpoint, Some(Endpoint::Poll | Endpoint::Ack)) {
            assert!(
                matches!(&r.credential, Credential::SessionsToken { work_id, generation: 1, .. } if *work_id == work),
                "{} {}: {:?}",
                r.method,
                r.path,
                r.credential
            );
        }
    }
    assert_eq!(log[stop].body, Some(json!({"force": true})));
    for r in &log {
        assert_eq!(
            r.header("anthropic-beta"),
            Some("managed-agents-2026-04-01"),
            "{}",
            r.path
        );
        assert_eq!(r.header("anthropic-version"), Some("2026-10-21"));
    }
    // Later beats echo the server's last_heartbeat exactly (the fake would answer 412).
    let beats = fake.heartbeats();
    assert!(beats.len() >= 2, "{beats:?}");
    for pair in beats.windows(2) {
        assert_eq!(pair[1].status, 200, "{beats:?}");
        assert_eq!(pair[1].expected_last_heartbeat, pair[0].last_heartbeat);
    }
    let body = requests_for(&fake, Endpoint::EventsSend, &sid)[0]
        .body
        .clone()
        .unwrap();
    assert_eq!(body["events"][0]["type"], "user.tool_result");
    assert_eq!(body["events"][0]["tool_use_id"], ids[0].as_str());
    let m = metrics.encode();
    assert!(
        m.contains(r#"wasm_sandbox_tool_calls_total{tool="bash",outcome="ok"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"wasm_sandbox_claims_total{kind="session"} 1"#),
        "{m}"
    );
    assert!(
        m.contains("wasm_sandbox_session_cold_start_seconds_count 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_gate() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (work, sid) = enqueue_session(&fake);
    let run = start(config(&fake, dir.path()), &sandbox);
    attached(&fake, &sid, 1).await;

    let ask_allow = tool_use(&fake, &sid, "bash", json!({"c": 1}), Some("ask"));
    let ask_deny = tool_use(&fake, &sid, "bash", json!({"c": 2}), Some("ask"));
    let denied = tool_use(&fake, &sid, "bash", json!({"c": 3}), Some("deny"));
    let unknown = tool_use(&fake, &sid, "read", json!({"c": 4}), Some("maybe_later"));
    // A verdict that arrives before its call is remembered.
    confirm(&fake, &sid, "sevt_early", "allow");
    let early = fake
        .emit_tool_use(
            &sid,
            &ToolUse::new("glob", json!({"c": 5}))
                .permission("ask")
                .id("sevt_early"),
        )
        .unwrap();
    wait_result(&fake, &sid, &early).await;
    assert!(
        results_for(&fake, &sid, &ask_allow).is_empty(),
        "ran before confirmation"
    );
    confirm(&fake, &sid, &ask_allow, "allow");
    wait_result(&fake, &sid, &ask_allow).await;
    confirm(&fake, &sid, &ask_deny, "deny");
    confirm(&fake, &sid, &denied, "allow"); // a stray allow never overrides a server deny
    confirm(&fake, &sid, &unknown, "allow");
    wait_result(&fake, &sid, &unknown).await;
    end_turn(&fake, &sid);
    finish(run).await.unwrap();

    // Nothing was even posted for the denied calls (the fake records refused posts too).
    for id in [&ask_deny, &denied] {
        assert_eq!(posts_for(&fake, id), 0, "{id}");
        assert!(results_for(&fake, &sid, id).is_empty());
    }
    assert!(fake.tool_results(&sid).iter().all(|r| r.accepted));
    let ran: Vec<String> = sandbox.calls().into_iter().map(|c| c.2).collect();
    assert_eq!(ran, [early.clone(), ask_allow.clone(), unknown.clone()]);
    assert_eq!(requests_for(&fake, Endpoint::Stop, &work).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_drop_malformed_event_and_reconnect_without_duplicates() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (_, sid) = enqueue_session(&fake);
    let run = start(config(&fake, dir.path()), &sandbox);
    attached(&fake, &sid, 1).await;

    let a = tool_use(&fake, &sid, "bash", json!({"a": 1}), None);
    wait_result(&fake, &sid, &a).await;
    // The stream drops; a call made meanwhile is only in history.
    let missed = fake
        .drop_streams_missing(
            &sid,
            StreamCut::Close,
            &[ToolUse::new("read", json!({"b": 2}))],
        )
        .unwrap();
    let b = wait_result(&fake, &sid, &missed[0]).await;
    assert_eq!(b["is_error"], false);
    attached(&fake, &sid, 2).await;
    // A malformed frame and a frame without an event name: logged, session survives.
    fake.inject_frame(&sid, "event: agent.tool_use\ndata: {not json\n\n");
    fake.inject_frame(
        &sid,
        "data: {\"type\":\"agent.tool_use\",\"id\":\"sevt_x\",\"name\":\"bash\",\"input\":{}}\n\n",
    );
    attached(&fake, &sid, 3).await;
    let c = tool_use(&fake, &sid, "grep", json!({"c": 3}), None);
    wait_result(&fake, &sid, &c).await;
    end_turn(&fake, &sid);
    finish(run).await.unwrap();

    let ran: Vec<String> = sandbox.calls().into_iter().map(|c| c.2).collect();
    assert_eq!(
        ran,
        [a.clone(), missed[0].clone(), c.clone()],
        "a call ran twice or was lost"
    );
    for id in [&a, &missed[0], &c] {
        assert_eq!(posts_for(&fake, id), 1, "{id}");
        assert_eq!(results_for(&fake, &sid, id).len(), 1, "{id}");
    }
    assert_eq!(posts_for(&fake, "sevt_x"), 0, "acted on an unnamed frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_post_retries_without_duplicates() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (_, sid) = enqueue_session(&fake);
    let run = start(config(&fake, dir.path()), &sandbox);
    attached(&fake, &sid, 1).await;

    for status in [500, 503, 429] {
        fake.inject_failure(FailureSpec::new(Endpoint::EventsSend, status));
    }
    let a = tool_use(&fake, &sid, "bash", json!({"a": 1}), None);
    wait_result(&fake, &sid, &a).await;
    assert_eq!(posts_for(&fake, &a), 4);

    // The post lands but the response says 500: the retry must see it in history.
    fake.inject_failure(FailureSpec::new(Endpoint::EventsSend, 500).after_serving());
    let b = tool_use(&fake, &sid, "bash", json!({"b": 1}), None);
    wait_result(&fake, &sid, &b).await;
    // Then a fatal 400: given up at once, never retried or re-run.
    fake.fail_next(Endpoint::EventsSend, 1, 400);
    let c = tool_use(&fake, &sid, "bash", json!({"c": 1}), None);
    let d = tool_use(&fake, &sid, "bash", json!({"d": 1}), None);
    wait_result(&fake, &sid, &d).await;
    end_turn(&fake, &sid);
    finish(run).await.unwrap();

    assert_eq!(results_for(&fake, &sid, &b).len(), 1, "duplicate result");
    assert_eq!(
        posts_for(&fake, &b),
        1,
        "re-posted a result that had landed"
    );
    assert_eq!(
        requests_for(&fake, Endpoint::EventsSend, &sid)
            .iter()
            .filter(|r| r.status == Some(500))
            .count(),
        2,
        "the lost reply was not answered 500"
    );
    assert_eq!(posts_for(&fake, &c), 1);
    assert!(results_for(&fake, &sid, &c).is_empty());
    assert!(
        fake.tool_results(&sid).iter().all(|r| r.accepted),
        "a duplicate was refused: {:?}",
        fake.tool_results(&sid)
    );
    let ran: Vec<String> = sandbox.calls().into_iter().map(|c| c.2).collect();
    assert_eq!(ran, [a, b, c, d]);
}
