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

fn skill_zip(files: &[(&str, &str, u32)]) -> Vec<u8> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body, mode) in files {
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        zip.start_file(*name, opts).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A tar.gz whose member names are written raw (so `../x` can be put in).
fn skill_tar_gz(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, body, mode) in files {
        let mut h = tar::Header::new_gnu();
        let raw = &mut h.as_gnu_mut().unwrap().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(body.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append(&h, body.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn find_named(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == name {
                out.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(find_named(&p, name));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_are_installed_in_the_workspace_and_removed_after() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    fake.add_skill_version(
        "skill_zip01",
        "zip-skill",
        skill_zip(&[
            (
                "SKILL.md",
                "---\nname: zip-skill\ndescription: Zip.\n---\nzip skill body\n",
                0o644,
            ),
            ("scripts/tool.py", "print('zip')\n", 0o644),
        ]),
    );
    // An older version, then the one `latest` must resolve to.
    fake.add_skill_version(
        "skill_tar01",
        "tar-skill",
        skill_tar_gz(&[("tar-skill/SKILL.md", "stale version\n", 0o644)]),
    );
    fake.add_skill_version(
        "skill_tar01",
        "tar-skill",
        skill_tar_gz(&[
            (
                "tar-skill/SKILL.md",
                "---\nname: tar-skill\ndescription: Tar.\n---\ntar skill body\n",
                0o644,
            ),
            ("tar-skill/scripts/run.sh", "#!/bin/sh\necho run\n", 0o755),
        ]),
    );
    fake.add_skill_version(
        "skill_evil01",
        "evil-skill",
        skill_tar_gz(&[
            ("evil-skill/SKILL.md", "evil\n", 0o644),
            ("../x", "escaped\n", 0o644),
        ]),
    );
    let (work_id, session_id) = fake.enqueue_session(scenario(json!({
        "name": "skills",
        "session": {"skills": [
            {"type": "custom", "skill_id": "skill_zip01", "version": "latest"},
            {"type": "custom", "skill_id": "skill_missing01", "version": "latest"},
            {"type": "custom", "skill_id": "skill_evil01", "version": "latest"},
            {"type": "custom", "skill_id": "skill_tar01", "version": "latest"}
        ]},
        "prompt": "Use the skills.",
        "steps": [
            {"tool_use": {"label": "zip", "name": "read",
                          "input": {"file_path": "/workspace/skills/zip-skill/SKILL.md"},
                          "expect": {"is_error": false, "contains": ["zip skill body"]}}},
            {"tool_use": {"label": "tar", "name": "read",
                          "input": {"file_path": "/workspace/skills/tar-skill/SKILL.md"},
                          "expect": {"is_error": false, "contains": ["tar skill body"]}}},
            {"tool_use": {"label": "tree", "name": "bash",
                          "input": {"command": "cd /workspace/skills && ls -A | tr '\\n' ' '; echo; test -f zip-skill/scripts/tool.py && echo zip-tree-ok; test -x tar-skill/scripts/run.sh && echo tar-exec-ok; test -e tar-skill/tar-skill || echo wrapper-stripped; test -e evil-skill || echo no-evil; test -e x || test -e ../x || echo no-x"},
                          "expect": {"is_error": false,
                                     "contains": ["zip-tree-ok", "tar-exec-ok", "wrapper-stripped", "no-evil", "no-x"]}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();

    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    let results = accepted_results(&fake, &session_id);
    let labels: Vec<&str> = results.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["zip", "tar", "tree"]);
    let tree = &results[2].1;
    // Exactly the two good skills (plus no leftover work directories).
    assert!(
        tree.lines().next().unwrap().trim() == "tar-skill zip-skill"
            || tree.lines().next().unwrap().trim() == "zip-skill tar-skill",
        "{tree}"
    );

    // Skill calls: no beta header, the item's sessions token, binary Accept on content,
    // `latest` resolved before the content is fetched by concrete id.
    let reqs = fake.requests();
    let skill_reqs: Vec<_> = reqs
        .iter()
        .filter(|r| {
            matches!(
                r.endpoint,
                Some(Endpoint::SkillVersion | Endpoint::SkillContent)
            )
        })
        .collect();
    assert!(!skill_reqs.is_empty());
    for r in &skill_reqs {
        assert_eq!(r.header("anthropic-beta"), None, "{}", r.path);
        assert!(item_token(&work_id, 1)(&r.credential), "{}", r.path);
        if r.endpoint == Some(Endpoint::SkillContent) {
            assert_eq!(r.header("accept"), Some("application/binary"));
            assert!(!r.path.contains("latest"), "{}", r.path);
        } else {
            assert!(r.path.ends_with("/versions/latest"), "{}", r.path);
        }
    }
    let contents: Vec<&str> = skill_reqs
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::SkillContent))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(contents.len(), 3, "{contents:?}"); // the missing skill has no content call
    // The skills were in place before the first tool ran (the event stream itself is
    // attached while they download).
    let seq = endpoints(&fake);
    let last_skill = seq
        .iter()
        .rposition(|e| *e == Endpoint::SkillContent)
        .unwrap();
    let first_result = seq.iter().position(|e| *e == Endpoint::EventsSend).unwrap();
    assert!(last_skill < first_result);

    assert!(
        find_named(dir.path(), "x").is_empty(),
        "an archive member escaped"
    );
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
        "session directory (and its skills) left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stores_are_mounted_read_only_per_access_and_synced_back() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let (work_id, session_id) = fake.enqueue_session(scenario(json!({
        "name": "memory",
        "memory_stores": [
            {"name": "notes", "memories": {"/a.md": "hello notes\n"}},
            {"name": "prefs", "access": "read_only", "memories": {"/p.md": "pref value\n"}}
        ],
        "prompt": "Use memory.",
        "steps": [
            {"tool_use": {"label": "ro-read", "name": "read",
                          "input": {"file_path": "/mnt/memory/prefs/p.md"},
                          "expect": {"is_error": false, "contains": ["pref value"]}}},
            {"tool_use": {"label": "ro-write", "name": "write",
                          "input": {"file_path": "/mnt/memory/prefs/new.md", "content": "no"},
                          "expect": {"is_error": true}}},
            {"tool_use": {"label": "ro-edit", "name": "edit",
                          "input": {"file_path": "/mnt/memory/prefs/p.md",
                                    "old_string": "pref", "new_string": "changed"},
                          "expect": {"is_error": true}}},
            {"tool_use": {"label": "ro-bash", "name": "bash",
                          "input": {"command": "(echo hi > /mnt/memory/prefs/b.md) 2>/dev/null && echo ro-WROTE || echo ro-refused; (echo x >> /mnt/memory/prefs/p.md) 2>/dev/null || echo append-refused; cat /mnt/memory/notes/a.md"},
                          "expect": {"is_error": false,
                                     "contains": ["ro-refused", "append-refused", "hello notes"]}}},
            {"tool_use": {"label": "rw-write", "name": "write",
                          "input": {"file_path": "/mnt/memory/notes/new.md", "content": "fresh memory\n"},
                          "expect": {"is_error": false}}},
            {"tool_use": {"label": "rw-bash", "name": "bash",
                          "input": {"command": "echo more >> /mnt/memory/notes/a.md && echo appended"},
                          "expect": {"is_error": false, "contains": ["appended"]}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    let stores = fake.session_memory_stores(&session_id);
    let store = |name: &str| {
        stores
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| id.clone())
            .unwrap()
    };
    let (notes, prefs) = (store("notes"), store("prefs"));
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();

    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    assert!(
        !accepted_results(&fake, &session_id)[3]
            .1
            .contains("ro-WROTE")
    );

    // The final sync at the clean end pushed the read-write store's changes...
    let notes_now = fake.memories(&notes);
    assert!(
        notes_now.contains(&("/new.md".to_owned(), "fresh memory\n".to_owned())),
        "{notes_now:?}"
    );
    assert!(
        notes_now.contains(&("/a.md".to_owned(), "hello notes\nmore\n".to_owned())),
        "{notes_now:?}"
    );
    // ...and nothing reached the read-only one.
    assert_eq!(
        fake.memories(&prefs),
        [("/p.md".to_owned(), "pref value\n".to_owned())]
    );
    let reqs = fake.requests();
    let mem_reqs: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/v1/memory_stores/"))
        .collect();
    assert!(
        mem_reqs
            .iter()
            .any(|r| r.method == "POST" && r.path.contains(&notes))
    );
    for r in &mem_reqs {
        assert!(item_token(&work_id, 1)(&r.credential), "{}", r.path);
        assert_eq!(r.header("anthropic-beta"), Some("agent-memory-2026-07-22"));
        assert!(
            !(r.method != "GET" && r.path.contains(&prefs)),
            "{} {}",
            r.method,
            r.path
        );
    }
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
        "session directory (and its memory) left behind"
    );
}

fn skill_zip_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in files {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(body).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Skills that ship WASI components (the Rust and the componentize-py example),
/// served by the control plane, installed per session and run by the agent from
/// bash with `wasm-run`: they read `/workspace` but not the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::await_holding_lock,
    reason = "the guard only orders this test with the blocking wasm_run tests, which count compilations; no task here takes it"
)]
async fn skill_components_run_from_bash_end_to_end() {
    let _serial = crate::wasm_run::serial();
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rust_md = std::fs::read(root.join("examples/skills/rust-wordcount/SKILL.md")).unwrap();
    let py_md = std::fs::read(root.join("examples/skills/py-wordfreq/SKILL.md")).unwrap();
    let wordcount = crate::wasm_run::wordcount();
    let wordfreq = crate::wasm_run::wordfreq();
    fake.add_skill_version(
        "skill_rustwc01",
        "rust-wordcount",
        skill_zip_bytes(&[
            ("rust-wordcount/SKILL.md", &rust_md),
            ("rust-wordcount/wordcount.wasm", &wordcount),
        ]),
    );
    fake.add_skill_version(
        "skill_pywf01",
        "py-wordfreq",
        skill_zip_bytes(&[("SKILL.md", &py_md), ("wordfreq.wasm", &wordfreq)]),
    );
    let (_work_id, session_id) = fake.enqueue_session(scenario(json!({
        "name": "skill-components",
        "session": {"skills": [
            {"type": "custom", "skill_id": "skill_rustwc01", "version": "latest"},
            {"type": "custom", "skill_id": "skill_pywf01", "version": "latest"}
        ]},
        "prompt": "Count the words.",
        "steps": [
            {"tool_use": {"label": "write", "name": "write",
                          "input": {"file_path": "/workspace/notes.txt", "content": "red green red\nblue red\n"},
                          "expect": {"is_error": false}}},
            {"tool_use": {"label": "rust", "name": "bash",
                          "input": {"command": "wasm-run skills/rust-wordcount/wordcount.wasm --top 1 notes.txt"},
                          "expect": {"is_error": false, "contains": ["2 5 23 notes.txt", "3 red"]}}},
            {"tool_use": {"label": "python", "name": "bash",
                          "input": {"command": "wasm-run skills/py-wordfreq/wordfreq.wasm --top 1 /workspace/notes.txt"},
                          "expect": {"is_error": false,
                                     "contains": ["{\"files\": {\"/workspace/notes.txt\": {\"lines\": 2, \"words\": 5}}, \"top\": [[\"red\", 3]]}"]}}},
            {"tool_use": {"label": "host", "name": "bash",
                          "input": {"command": "wasm-run skills/rust-wordcount/wordcount.wasm /etc/hostname; echo rc=$?; wasm-run skills/py-wordfreq/wordfreq.wasm /etc/hostname; echo rc=$?"},
                          "expect": {"contains": ["wordcount: /etc/hostname: ", "wordfreq: /etc/hostname: No such file or directory", "rc=1"]}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();
    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    let results = accepted_results(&fake, &session_id);
    let labels: Vec<&str> = results.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["write", "rust", "python", "host"]);
    assert_eq!(results[1].1, "2 5 23 notes.txt\n3 red");
}

/// As in the reference: an item whose session has memory stores but whose secret
/// carries no sessions token fails (force-stopped, no tool run) instead of running
/// the agent without its memories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stores_without_a_sessions_token_fail_the_item() {
    let fake = FakeControlPlane::start(FakeConfig {
        lease_ttl_seconds: 3,
        mint_secrets: false,
        ..FakeConfig::default()
    })
    .await
    .expect("fake control plane");
    let dir = tempfile::tempdir().unwrap();
    let (work_id, session_id) = fake.enqueue_session(scenario(json!({
        "name": "memory-no-token",
        "memory_stores": [{"name": "notes", "memories": {"/a.md": "hello\n"}}],
        "prompt": "Use memory.",
        "steps": [
            {"tool_use": {"label": "read", "name": "read",
                          "input": {"file_path": "/mnt/memory/notes/a.md"}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    })));
    finished(start(config(&fake, dir.path()), core_provider()))
        .await
        .unwrap();
    assert!(fake.tool_results(&session_id).is_empty());
    let stops: Vec<_> = fake
        .stops()
        .into_iter()
        .filter(|s| s.work_id == work_id)
        .collect();
    assert!(stops.iter().any(|s| s.force), "{stops:?}");
    assert!(
        !fake.requests().iter().any(|r| r.path.contains("memor")),
        "no memory endpoint is called without a token"
    );
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

/// Memory-store mount paths end to end (issue 11): the one rule of
/// `wasm_sandbox_fs::guest_path`, applied alike by the worker, the file tools and bash.
mod memory_paths {
    use super::*;

    fn store_id(fake: &Handle, session_id: &str, name: &str) -> String {
        fake.session_memory_stores(session_id)
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| id)
            .unwrap()
    }

    /// A store whose resource carries no usable `mount_path` (empty here; absent or null takes
    /// the same branch, see `runtime/worker/src/memory.rs`'s unit test) is mounted at
    /// `/mnt/memory/<name>` for the file tools and bash, and syncs back. Before the fix it
    /// became `/mnt/memory//<name>`, which the runtime refused, failing the item.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_without_mount_path_is_mounted_at_mnt_memory_name() {
        let fake = fake().await;
        let dir = tempfile::tempdir().unwrap();
        let (_work_id, session_id) = fake.enqueue_session(scenario(json!({
            "name": "memory-default-path",
            "memory_stores": [
                {"name": "notes", "mount_path": "", "memories": {"/a.md": "hello default\n"}}
            ],
            "prompt": "Use memory.",
            "steps": [
                {"tool_use": {"label": "read", "name": "read",
                              "input": {"file_path": "/mnt/memory/notes/a.md"},
                              "expect": {"is_error": false, "contains": ["hello default"]}}},
                {"tool_use": {"label": "bash", "name": "bash",
                              "input": {"command": "cat /mnt/memory/notes/a.md && echo from-bash > /mnt/memory/notes/b.md && echo bash-ok"},
                              "expect": {"is_error": false, "contains": ["hello default", "bash-ok"]}}},
                {"tool_use": {"label": "write", "name": "write",
                              "input": {"file_path": "/mnt/memory/notes/c.md", "content": "from tools\n"},
                              "expect": {"is_error": false}}},
                {"idle": {"stop_reason": "end_turn"}},
                "terminate"
            ]
        })));
        let notes = store_id(&fake, &session_id, "notes");
        finished(start(config(&fake, dir.path()), core_provider()))
            .await
            .unwrap();
        let report = fake.scenario_report(&session_id);
        assert!(report.is_ok(), "{report:?}");
        let now = fake.memories(&notes);
        for want in [("/b.md", "from-bash\n"), ("/c.md", "from tools\n")] {
            assert!(
                now.contains(&(want.0.to_owned(), want.1.to_owned())),
                "{now:?}"
            );
        }
    }

    /// A nested `mount_path` (accepted by the reference) works for the file tools and for
    /// bash, next to a sibling store; before the fix the bash sandbox refused it and every
    /// bash call failed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nested_mount_path_works_with_bash_and_the_file_tools() {
        let fake = fake().await;
        let dir = tempfile::tempdir().unwrap();
        let (_work_id, session_id) = fake.enqueue_session(scenario(json!({
            "name": "memory-nested-path",
            "memory_stores": [
                {"name": "shared", "mount_path": "/mnt/memory/team/shared/",
                 "memories": {"/a.md": "nested hello\n"}},
                {"name": "prefs", "mount_path": "/mnt/memory/team/prefs", "access": "read_only",
                 "memories": {"/p.md": "pref\n"}}
            ],
            "prompt": "Use memory.",
            "steps": [
                {"tool_use": {"label": "read", "name": "read",
                              "input": {"file_path": "/mnt/memory/team/shared/a.md"},
                              "expect": {"is_error": false, "contains": ["nested hello"]}}},
                {"tool_use": {"label": "bash", "name": "bash",
                              "input": {"command": "cat /mnt/memory/team/shared/a.md /mnt/memory/team/prefs/p.md && echo nested-bash > /mnt/memory/team/shared/b.md && (echo x > /mnt/memory/team/prefs/q.md) 2>/dev/null || echo ro-refused"},
                              "expect": {"is_error": false,
                                         "contains": ["nested hello", "pref", "ro-refused"]}}},
                {"tool_use": {"label": "write", "name": "write",
                              "input": {"file_path": "/mnt/memory/team/shared/sub/c.md", "content": "deep\n"},
                              "expect": {"is_error": false}}},
                {"tool_use": {"label": "ro-write", "name": "write",
                              "input": {"file_path": "/mnt/memory/team/prefs/q.md", "content": "no"},
                              "expect": {"is_error": true}}},
                {"idle": {"stop_reason": "end_turn"}},
                "terminate"
            ]
        })));
        let shared = store_id(&fake, &session_id, "shared");
        let prefs = store_id(&fake, &session_id, "prefs");
        finished(start(config(&fake, dir.path()), core_provider()))
            .await
            .unwrap();
        let report = fake.scenario_report(&session_id);
        assert!(report.is_ok(), "{report:?}");
        let now = fake.memories(&shared);
        for want in [("/b.md", "nested-bash\n"), ("/sub/c.md", "deep\n")] {
            assert!(
                now.contains(&(want.0.to_owned(), want.1.to_owned())),
                "{now:?}"
            );
        }
        assert_eq!(
            fake.memories(&prefs),
            [("/p.md".to_owned(), "pref\n".to_owned())]
        );
    }

    /// Mount paths the rule refuses (outside `/mnt/memory/`, or one store inside another) fail
    /// the item up front: no tool runs and no memory is downloaded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_mount_paths_fail_the_item_before_any_download() {
        for stores in [
            json!([{"name": "a", "mount_path": "/mnt/memory/a"},
                   {"name": "b", "mount_path": "/mnt/memory/a/b"}]),
            json!([{"name": "w", "mount_path": "/workspace/memory"}]),
            json!([{"name": "x", "mount_path": "/mnt/memory/../../etc"}]),
        ] {
            let fake = fake().await;
            let dir = tempfile::tempdir().unwrap();
            let (work_id, session_id) = fake.enqueue_session(scenario(json!({
                "name": "memory-refused-path",
                "memory_stores": stores,
                "prompt": "Use memory.",
                "steps": [
                    {"tool_use": {"label": "bash", "name": "bash",
                                  "input": {"command": "echo ran"}}},
                    {"idle": {"stop_reason": "end_turn"}},
                    "terminate"
                ]
            })));
            finished(start(config(&fake, dir.path()), core_provider()))
                .await
                .unwrap();
            assert!(fake.tool_results(&session_id).is_empty(), "{stores}");
            assert!(
                fake.stops().iter().any(|s| s.work_id == work_id && s.force),
                "{stores}"
            );
            assert!(
                !fake
                    .requests()
                    .iter()
                    .any(|r| r.path.starts_with("/v1/memory_stores/")),
                "{stores}: nothing is downloaded for a refused path"
            );
        }
    }
}

/// Memory-store sync against hostile files (issue 11), end to end through the worker.
mod memory_sync {
    use super::*;

    /// bash writes four 64 MiB files (sparse) and a FIFO into a read-write store; the final
    /// sync and the flush upload the small file only, never send the big ones, never block on
    /// the FIFO, and the item ends normally.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_files_and_fifos_written_by_bash_are_not_uploaded() {
        let fake = fake().await;
        let dir = tempfile::tempdir().unwrap();
        let (_work_id, session_id) = fake.enqueue_session(scenario(json!({
            "name": "memory-hostile-files",
            "memory_stores": [{"name": "notes", "memories": {"/a.md": "a\n"}}],
            "prompt": "Use memory.",
            "steps": [
                {"tool_use": {"label": "bash", "name": "bash",
                              "input": {"command": "cd /mnt/memory/notes && for i in 0 1 2 3; do truncate -s 64M big$i.md; done; (mkfifo pipe.md 2>/dev/null || true); echo small > small.md; echo made"},
                              "expect": {"is_error": false, "contains": ["made"]}}},
                {"idle": {"stop_reason": "end_turn"}},
                "terminate"
            ]
        })));
        let notes = fake
            .session_memory_stores(&session_id)
            .into_iter()
            .find(|(_, n)| n == "notes")
            .map(|(id, _)| id)
            .unwrap();
        finished(start(config(&fake, dir.path()), core_provider()))
            .await
            .unwrap();
        let report = fake.scenario_report(&session_id);
        assert!(report.is_ok(), "{report:?}");
        let now = fake.memories(&notes);
        assert!(
            now.contains(&("/small.md".to_owned(), "small\n".to_owned())),
            "{now:?}"
        );
        assert!(
            !now.iter()
                .any(|(p, _)| p.starts_with("/big") || p == "/pipe.md"),
            "{:?}",
            now.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
        // Not even attempted: the old code read each file whole and sent it (the fake, like
        // the API, answered 413), holding gigabytes in the worker on the way.
        for r in fake
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/v1/memory_stores/"))
        {
            assert!(
                r.body_len <= 1 << 20 && r.status != Some(413),
                "{} {}: {} bytes sent, status {:?}",
                r.method,
                r.path,
                r.body_len,
                r.status
            );
        }
    }
}
