//! The worker end to end against the fake control plane (`wasm-sandbox-fake-control-plane`),
//! whose wire types are written independently of the worker's: a wire mismatch fails here.
//!
//! Most tests serve sessions with the worker's scripted in-memory sandbox (so they test the
//! protocol, not the tools, and can hold a call "mid-flight"); the first tests use the real
//! core sandbox. Each asserts what the fake saw: requests, credentials, results, stops.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::json;
use wasm_sandbox_fake_control_plane::{
    Credential, Endpoint, FakeConfig, FakeControlPlane, StreamCut, WorkState,
};
use wasm_sandbox_fake_control_plane::{Handle, Scenario};
use wasm_sandbox_worker::core_adapter::CoreProvider;
use wasm_sandbox_worker::metrics::Metrics;
use wasm_sandbox_worker::sandbox::SandboxProvider;
use wasm_sandbox_worker::sandbox::testing::ScriptedSandbox;
use wasm_sandbox_worker::secret::Secret;
use wasm_sandbox_worker::worker::{Shutdown, Worker, WorkerConfig};

// Split by topic: skills and memory stores, and the two issue-11 memory modules.
mod memory_paths;
mod memory_sync;
mod skills;

const WAIT: Duration = Duration::from_secs(60);

fn core_provider() -> CoreProvider {
    static P: OnceLock<CoreProvider> = OnceLock::new();
    P.get_or_init(|| CoreProvider::new(crate::common::runtime().clone()))
        .clone()
}

pub(crate) async fn fake() -> Handle {
    FakeControlPlane::start(FakeConfig {
        lease_ttl_seconds: 3,
        ..FakeConfig::default()
    })
    .await
    .expect("fake control plane")
}

/// The worker settings the end-to-end tests share: short sleeps, backoffs and idle times,
/// one item per run.
pub(crate) fn config(fake: &Handle, dir: &Path) -> WorkerConfig {
    let mut c = WorkerConfig::new(
        fake.url(),
        fake.environment_id(),
        Secret::new(fake.environment_key()),
    );
    c.worker_id = "w-e2e".into();
    c.workdir = dir.to_owned();
    c.poll.empty_sleep_min = Duration::from_millis(20);
    c.poll.empty_sleep_max = Duration::from_millis(40);
    c.poll.backoff_unit = Duration::from_millis(20);
    c.runner.max_idle = Some(Duration::from_millis(500));
    c.runner.stream_backoff_start = Duration::from_millis(50);
    c.runner.stream_backoff_cap = Duration::from_millis(200);
    c.runner.send_backoff_start = Duration::from_millis(20);
    c.runner.send_backoff_cap = Duration::from_millis(100);
    c.heartbeat.max_interval = Duration::from_millis(500);
    c.heartbeat.min_interval = Duration::from_millis(100);
    c.exit_after_items = Some(1);
    c
}

/// A worker running on the test's runtime.
pub(crate) struct Running {
    pub(crate) shutdown: Shutdown,
    handle: tokio::task::JoinHandle<Result<(), String>>,
}

/// Starts a worker with `cfg` and `provider`.
pub(crate) fn start<P: SandboxProvider>(cfg: WorkerConfig, provider: P) -> Running {
    let worker = Worker::new(cfg, provider, Arc::new(Metrics::new())).expect("worker");
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let handle = tokio::spawn(async move { worker.run(s).await.map_err(|e| format!("{e:#}")) });
    Running { shutdown, handle }
}

/// Waits (bounded) for the worker to return.
pub(crate) async fn finished(r: Running) -> Result<(), String> {
    tokio::time::timeout(WAIT, r.handle)
        .await
        .expect("worker did not finish")
        .expect("worker panicked")
}

fn scenario(json: serde_json::Value) -> Scenario {
    Scenario::from_json(&json.to_string()).expect("scenario")
}

/// A session whose one bash call is held by the scripted sandbox until released.
fn held_call_scenario(name: &str) -> Scenario {
    scenario(json!({
        "name": name,
        "prompt": "Run the slow job.",
        "steps": [
            {"tool_use": {"label": "slow", "name": "bash",
                          "input": {"command": "echo slow-done", "hold": true},
                          "expect": {"is_error": false, "contains": ["slow-done"]}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    }))
}

async fn wait_held(sandbox: &ScriptedSandbox, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while sandbox.held_count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn endpoints(fake: &Handle) -> Vec<Endpoint> {
    fake.requests().iter().filter_map(|r| r.endpoint).collect()
}

fn accepted_results(fake: &Handle, session_id: &str) -> Vec<(String, String)> {
    fake.tool_results(session_id)
        .into_iter()
        .filter(|r| r.accepted)
        .map(|r| (r.label.clone().unwrap_or_default(), r.text()))
        .collect()
}

fn item_token(work_id: &str, generation: u32) -> impl Fn(&Credential) -> bool {
    let work_id = work_id.to_owned();
    move |c| matches!(c, Credential::SessionsToken { work_id: w, generation: g, .. } if *w == work_id && *g == generation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_six_tools_with_the_real_sandbox() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let (work_id, session_id) = fake.enqueue_session(Scenario::example("all-tools").unwrap());
    let mut cfg = config(&fake, dir.path());
    cfg.block_ms = Some(999);
    finished(start(cfg, core_provider())).await.unwrap();

    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    let labels: Vec<String> = accepted_results(&fake, &session_id)
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(labels, ["write", "read", "edit", "bash", "glob", "grep"]);
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));

    // The exact conversation, heartbeats aside.
    let seq: Vec<Endpoint> = endpoints(&fake)
        .into_iter()
        .filter(|e| *e != Endpoint::Heartbeat)
        .collect();
    let after: Vec<Endpoint> = seq
        .iter()
        .copied()
        .filter(|e| *e != Endpoint::Poll)
        .collect();
    // The ack, the session fetch and the stream (then the history) go out together (issue
    // 16), so they may arrive in any order; the stream always precedes the history read.
    let mut opening = after[..4].to_vec();
    let stream_at = opening.iter().position(|e| *e == Endpoint::EventsStream);
    let list_at = opening.iter().position(|e| *e == Endpoint::EventsList);
    assert!(stream_at < list_at, "{after:?}");
    opening.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        opening,
        [
            Endpoint::Ack,
            Endpoint::EventsList,
            Endpoint::EventsStream,
            Endpoint::SessionRetrieve
        ],
        "{after:?}"
    );
    let mut want = vec![Endpoint::EventsSend; 6];
    want.push(Endpoint::Stop);
    assert_eq!(after[4..], want);

    let reqs = fake.requests();
    let polls: Vec<_> = reqs
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::Poll))
        .collect();
    assert_eq!(polls[0].query_param("block_ms"), Some("999"));
    assert_eq!(polls[0].header("anthropic-worker-id"), Some("w-e2e"));
    for r in &reqs {
        match r.endpoint {
            Some(Endpoint::Poll | Endpoint::Ack) => {
                assert_eq!(r.credential, Credential::EnvironmentKey)
            }
            Some(_) => assert!(
                item_token(&work_id, 1)(&r.credential),
                "{:?} used {:?}",
                r.endpoint,
                r.credential
            ),
            None => panic!("unexpected request {} {}", r.method, r.path),
        }
        assert_eq!(
            r.header("anthropic-beta"),
            Some("managed-agents-2026-04-01")
        );
        assert!(r.header("x-api-key").is_none());
    }
    let beats = fake.heartbeats();
    assert_eq!(
        beats[0].expected_last_heartbeat.as_deref(),
        Some("NO_HEARTBEAT")
    );
    for pair in beats.windows(2) {
        assert_eq!(pair[1].expected_last_heartbeat, pair[0].last_heartbeat);
    }
    let stops = fake.stops();
    assert_eq!(stops.len(), 1);
    assert!(stops[0].force);
    // Session directories are `<work_id>.<claim>`.
    assert!(
        !std::fs::read_dir(dir.path().join("sessions"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{work_id}."))),
        "session directory left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_key_never_reaches_a_child() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, session_id) = fake.enqueue_session(scenario(json!({
        "name": "env-probe",
        "steps": [
            {"tool_use": {"label": "env", "name": "bash",
                          "input": {"command": "env; cat /proc/self/environ | tr '\\0' '\\n'"}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();
    let results = fake.tool_results(&session_id);
    assert_eq!(results.len(), 1);
    let text = results[0].text();
    assert!(
        text.contains("PATH="),
        "bash ran and printed its environment:\n{text}"
    );
    assert!(
        !text.contains(&fake.environment_key()),
        "child saw the key:\n{text}"
    );
    assert!(
        !text.contains("ANTHROPIC_"),
        "child saw ANTHROPIC_*:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_then_allow_and_ask_then_deny() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (w1, allow) = fake.enqueue_session(Scenario::example("ask-allow").unwrap());
    let (w2, deny) = fake.enqueue_session(Scenario::example("ask-deny").unwrap());
    let mut cfg = config(&fake, dir.path());
    cfg.concurrency = 2;
    cfg.exit_after_items = Some(2);
    finished(start(cfg, sandbox.clone())).await.unwrap();

    for s in [&allow, &deny] {
        let report = fake.scenario_report(s);
        assert!(report.is_ok(), "{report:?}");
    }
    assert_eq!(accepted_results(&fake, &allow).len(), 1);
    assert!(
        fake.tool_results(&deny).is_empty(),
        "posted for a denied call"
    );
    // Only the approved call ran; the held call ran only after its confirmation.
    let ran = sandbox.calls();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].0, allow);
    let events = fake.events(&allow);
    let confirm_at = events
        .iter()
        .position(|e| e["type"] == "user.tool_confirmation")
        .unwrap();
    let result_at = events
        .iter()
        .position(|e| e["type"] == "user.tool_result")
        .unwrap();
    assert!(confirm_at < result_at);
    for w in [&w1, &w2] {
        assert_eq!(fake.work_state(w), Some(WorkState::Stopped));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_lost_mid_call_abandons_the_session() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (work_id, session_id) = fake.enqueue_session(held_call_scenario("lease-lost"));
    let run = start(config(&fake, dir.path()), sandbox.clone());
    wait_held(&sandbox, 1).await;
    fake.steal_lease(&work_id).unwrap();
    finished(run).await.unwrap();

    assert_eq!(
        sandbox.abandoned().len(),
        1,
        "the running call was not aborted"
    );
    assert!(
        fake.tool_results(&session_id).is_empty(),
        "posted after losing the lease"
    );
    assert!(
        fake.stops()
            .iter()
            .all(|s| s.credential == Credential::None),
        "stopped an item it no longer holds: {:?}",
        fake.stops()
    );
    let last_beat = fake.heartbeats().last().cloned().unwrap();
    assert_eq!(last_beat.status, 412);
    assert_eq!(sandbox.closed(), [session_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_requested_mid_call_graceful_and_force() {
    for force in [false, true] {
        let fake = fake().await;
        let dir = tempfile::tempdir().unwrap();
        let sandbox = ScriptedSandbox::new();
        let (work_id, session_id) = fake.enqueue_session(held_call_scenario("stop-mid-call"));
        let run = start(config(&fake, dir.path()), sandbox.clone());
        wait_held(&sandbox, 1).await;
        fake.request_stop(&work_id, force).unwrap();
        finished(run).await.unwrap();

        assert_eq!(sandbox.abandoned().len(), 1, "force={force}");
        assert!(fake.tool_results(&session_id).is_empty(), "force={force}");
        assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));
        let ours: Vec<_> = fake
            .stops()
            .into_iter()
            .filter(|s| s.credential != Credential::None)
            .collect();
        assert_eq!(ours.len(), 1, "force={force}: {ours:?}");
        assert!(ours[0].force);
        // After an ops force-stop the worker's own stop meets 409, which it swallows.
        assert_eq!(
            ours[0].status,
            if force { 409 } else { 204 },
            "force={force}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_xx_bursts_on_poll_heartbeat_and_results() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    fake.fail_next(Endpoint::Poll, 3, 503);
    fake.fail_next(Endpoint::Heartbeat, 2, 500);
    fake.fail_next(Endpoint::EventsSend, 3, 502);
    let (work_id, session_id) = fake.enqueue_session(Scenario::example("stream-drop").unwrap());
    finished(start(config(&fake, dir.path()), sandbox.clone()))
        .await
        .unwrap();

    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    let accepted = accepted_results(&fake, &session_id);
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert_eq!(sandbox.calls().len(), 2, "a call ran twice");
    assert!(
        fake.tool_results(&session_id)
            .iter()
            .all(|r| r.accepted || r.status >= 500),
        "a duplicate result was refused: {:?}",
        fake.tool_results(&session_id)
    );
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));
    let polls = fake.requests_to(Endpoint::Poll);
    assert!(polls.len() >= 4);
    assert!(polls[..3].iter().all(|r| r.status == Some(503)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_drop_and_reconnect() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (_, session_id) = fake.enqueue_session(Scenario::example("stream-drop").unwrap());
    finished(start(config(&fake, dir.path()), sandbox.clone()))
        .await
        .unwrap();
    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(sandbox.calls().len(), 2);
    assert_eq!(fake.tool_results(&session_id).len(), 2, "duplicate post");
    assert!(fake.requests_to(Endpoint::EventsStream).len() >= 2);
    // Every reconnect reads history after opening the stream.
    let eps = endpoints(&fake);
    let opens: Vec<usize> = eps
        .iter()
        .enumerate()
        .filter(|(_, e)| **e == Endpoint::EventsStream)
        .map(|(i, _)| i)
        .collect();
    for o in opens {
        assert!(
            eps[o..].contains(&Endpoint::EventsList),
            "no reconcile after a reconnect"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_error_and_unnamed_frames_are_survived() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (_, session_id) = fake.enqueue_session(scenario(json!({
        "name": "bad-frames",
        "steps": [
            "malformed_event",
            {"sleep_ms": 100},
            {"tool_use": {"label": "one", "name": "bash", "input": {"command": "echo one"},
                          "expect": {"is_error": false, "contains": ["one"]}}},
            {"inject_frame": "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\n\n"},
            {"sleep_ms": 100},
            {"inject_frame": "data: {\"type\":\"agent.tool_use\",\"id\":\"sevt_ghost\",\"name\":\"bash\",\"input\":{}}\n\n"},
            {"tool_use": {"label": "two", "name": "bash", "input": {"command": "echo two"},
                          "expect": {"is_error": false, "contains": ["two"]}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    finished(start(config(&fake, dir.path()), sandbox.clone()))
        .await
        .unwrap();
    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(sandbox.calls().len(), 2);
    assert!(
        fake.tool_results(&session_id)
            .iter()
            .all(|r| r.tool_use_id != "sevt_ghost"),
        "acted on a frame without an event name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_after_end_turn_then_force_stop() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (work_id, session_id) = fake.enqueue_session(Scenario::example("idle-end-turn").unwrap());
    finished(start(config(&fake, dir.path()), sandbox.clone()))
        .await
        .unwrap();
    assert!(fake.scenario_report(&session_id).is_ok());
    // The session never terminated: the worker stopped on its own after max_idle.
    assert_ne!(
        fake.session_status(&session_id).as_deref(),
        Some("terminated")
    );
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));
    let stops = fake.stops();
    assert_eq!(stops.len(), 1);
    assert!(stops[0].force && item_token(&work_id, 1)(&stops[0].credential));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unowned_custom_tool_is_left_pending() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (work_id, session_id) =
        fake.enqueue_session(Scenario::example("unowned-custom-tool").unwrap());
    let run = start(config(&fake, dir.path()), sandbox.clone());
    fake.wait_for_script(&session_id, WAIT).await.unwrap();
    // requires_action does not start the idle countdown: well past max_idle the worker still
    // serves the session.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Active));
    assert!(fake.tool_results(&session_id).is_empty());
    fake.request_stop(&work_id, false).unwrap();
    finished(run).await.unwrap();
    assert!(sandbox.calls().is_empty());
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_session_and_healthcheck_are_force_stopped() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (work_t, _) = fake.enqueue_session(Scenario::example("terminated-at-claim").unwrap());
    let work_h = fake.enqueue_healthcheck();
    let mut cfg = config(&fake, dir.path());
    cfg.exit_after_items = Some(2);
    finished(start(cfg, sandbox.clone())).await.unwrap();

    for w in [&work_t, &work_h] {
        assert_eq!(fake.work_state(w), Some(WorkState::Stopped), "{w}");
    }
    // The stream may be opened beside the ack (issue 16), before the session is known to be
    // terminated; it is dropped, and nothing is posted or run.
    assert!(fake.requests_to(Endpoint::EventsSend).is_empty());
    assert!(
        fake.heartbeats().iter().all(|h| h.work_id != work_h),
        "heartbeat for a healthcheck"
    );
    assert!(sandbox.calls().is_empty());
    assert!(sandbox.closed().is_empty(), "made a sandbox for nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_with_three_sessions_in_flight() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let items: Vec<(String, String)> = (0..3)
        .map(|i| fake.enqueue_session(held_call_scenario(&format!("drain-{i}"))))
        .collect();
    let mut cfg = config(&fake, dir.path());
    cfg.concurrency = 3;
    cfg.exit_after_items = None;
    let run = start(cfg, sandbox.clone());
    wait_held(&sandbox, 3).await;
    let polls_before = fake.requests_to(Endpoint::Poll).len();
    run.shutdown.drain();
    sandbox.release(3);
    finished(run).await.unwrap();

    for (work_id, session_id) in &items {
        let results = accepted_results(&fake, session_id);
        assert_eq!(results.len(), 1, "{session_id}: running call not finished");
        assert_eq!(fake.work_state(work_id), Some(WorkState::Stopped));
    }
    assert!(sandbox.abandoned().is_empty());
    assert_eq!(sandbox.closed().len(), 3);
    assert!(
        fake.requests_to(Endpoint::Poll).len() <= polls_before + 1,
        "kept polling while draining"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_then_another_reclaims_and_finishes() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let first = ScriptedSandbox::new();
    let (work_id, session_id) = fake.enqueue_session(held_call_scenario("reclaim"));
    let run = start(config(&fake, dir.path()), first.clone());
    wait_held(&first, 1).await;
    // kill -9: no teardown, no stop, no more heartbeats.
    run.handle.abort();
    let _ = run.handle.await;
    let requests_at_kill = fake.requests().len();
    fake.expire_lease(&work_id).unwrap();

    let second = ScriptedSandbox::new();
    second.release(1);
    finished(start(config(&fake, dir.path()), second.clone()))
        .await
        .unwrap();

    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    let results = fake.tool_results(&session_id);
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(item_token(&work_id, 2)(&results[0].credential));
    assert_eq!(second.calls().len(), 1);
    // Nothing more came from the killed worker's first claim.
    assert!(
        fake.requests()[requests_at_kill..]
            .iter()
            .all(|r| !item_token(&work_id, 1)(&r.credential)),
        "the killed worker kept talking"
    );
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_cut_mid_frame_is_a_disconnect() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (_, session_id) = fake.enqueue_session(scenario(json!({
        "name": "cut",
        "steps": [
            {"tool_use": {"label": "one", "name": "bash", "input": {"command": "echo one"}}},
            {"await_attachments": 2},
            {"tool_use": {"label": "two", "name": "read", "input": {"file_path": "two"}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    let run = start(config(&fake, dir.path()), sandbox.clone());
    fake.wait_for_tool_results(&session_id, 1, WAIT)
        .await
        .unwrap();
    fake.drop_streams(&session_id, StreamCut::Abort);
    finished(run).await.unwrap();
    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(fake.tool_results(&session_id).len(), 2);
}

/// A call whose input holds a lone surrogate escape (valid JSON text, refused by strict
/// parsers) is answered once with an `invalid request: …` error and never reaches the
/// sandbox; the call after it runs. Issue 11.
fn lone_surrogate_results_ok(fake: &Handle, session_id: &str, sandbox: &ScriptedSandbox) {
    let report = fake.scenario_report(session_id);
    assert!(report.is_ok(), "{report:?}");
    let results: Vec<_> = fake
        .tool_results(session_id)
        .into_iter()
        .filter(|r| r.accepted)
        .collect();
    let bad: Vec<_> = results
        .iter()
        .filter(|r| r.label.as_deref() == Some("bad"))
        .collect();
    assert_eq!(
        bad.len(),
        1,
        "exactly one result for the bad call: {results:?}"
    );
    assert_eq!(bad[0].is_error, Some(true));
    let text = bad[0].text();
    assert!(text.starts_with("invalid request: "), "{text}");
    assert!(text.contains(r"\ud800"), "{text}");
    let good: Vec<_> = results
        .iter()
        .filter(|r| r.label.as_deref() == Some("good"))
        .collect();
    assert_eq!(good.len(), 1, "{results:?}");
    assert_eq!(good[0].is_error, Some(false));
    assert!(good[0].text().contains("after-bad"), "{}", good[0].text());
    // Only the good call reached the sandbox.
    let calls = sandbox.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(Some(&calls[0].2), fake.call_id(session_id, "good").as_ref());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_surrogate_input_on_the_live_stream_gets_one_error_result() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (_, session_id) = fake.enqueue_session(scenario(json!({
        "name": "lone-surrogate-live",
        "steps": [
            {"tool_use": {"label": "bad", "name": "bash", "raw_input": r#"{"command": "echo \ud800"}"#,
                          "timeout_ms": 20000,
                          "expect": {"is_error": true, "contains": ["invalid request: "]}}},
            {"tool_use": {"label": "good", "name": "bash", "input": {"command": "echo after-bad"},
                          "timeout_ms": 20000,
                          "expect": {"is_error": false, "contains": ["after-bad"]}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    finished(start(config(&fake, dir.path()), sandbox.clone()))
        .await
        .unwrap();
    lone_surrogate_results_ok(&fake, &session_id, &sandbox);
    // Decoded on the stream itself: no reconnect was needed.
    assert_eq!(fake.requests_to(Endpoint::EventsStream).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_surrogate_input_in_history_does_not_sink_the_page() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    // Both calls are in the history before any worker attaches (the stream carries live events
    // only), so they reach the worker through the history read alone.
    let (_, session_id) = fake.enqueue_session(scenario(json!({
        "name": "lone-surrogate-history",
        "start": "immediately",
        "steps": [
            {"tool_use": {"label": "bad", "name": "bash", "raw_input": r#"{"command": "echo \ud800"}"#,
                          "await": false, "expect": {"is_error": true, "contains": ["invalid request: "]}}},
            {"tool_use": {"label": "good", "name": "bash", "input": {"command": "echo after-bad"},
                          "await": false, "expect": {"is_error": false, "contains": ["after-bad"]}}},
            {"await_result": {"tool_use": "bad", "timeout_ms": 20000}},
            {"await_result": {"tool_use": "good", "timeout_ms": 20000}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    fake.wait_for(WAIT, |s| {
        s.call_id(&session_id, "bad").is_some() && s.call_id(&session_id, "good").is_some()
    })
    .await
    .expect("the script did not emit both calls");
    finished(start(config(&fake, dir.path()), sandbox.clone()))
        .await
        .unwrap();
    lone_surrogate_results_ok(&fake, &session_id, &sandbox);
}
