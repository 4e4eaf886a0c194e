//! The shared harness of the flow tests: a fake control plane whose sessions the tests drive
//! by hand (one tool call at a time, [`ToolUse`]), a worker serving them with the scripted
//! in-memory sandbox, and helpers that read what the fake saw.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wasm_sandbox_fake_control_plane::{
    Endpoint, FakeConfig, FakeControlPlane, Handle, RecordedRequest, Scenario, State, ToolUse,
};
use wasm_sandbox_worker::metrics::Metrics;
use wasm_sandbox_worker::sandbox::testing::ScriptedSandbox;
use wasm_sandbox_worker::secret::Secret;
use wasm_sandbox_worker::worker::{Shutdown, Worker, WorkerConfig};

/// Bound on every wait: generous, for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// A fake reporting a 3 s lease TTL (the worker beats every second) with `key` as the
/// environment key when given.
pub async fn fake_with_key(key: Option<&str>) -> Handle {
    FakeControlPlane::start(FakeConfig {
        lease_ttl_seconds: 3,
        environment_key: key.map(str::to_owned),
        ..FakeConfig::default()
    })
    .await
    .expect("fake control plane")
}

/// A fake with a random environment key.
pub async fn fake() -> Handle {
    fake_with_key(None).await
}

/// Queues a session with an empty script: the test emits its events.
pub fn enqueue_session(fake: &Handle) -> (String, String) {
    fake.enqueue_session(Scenario::default())
}

/// Short sleeps, backoffs and idle time; one item per run.
pub fn config(fake: &Handle, dir: &Path) -> WorkerConfig {
    let mut c = WorkerConfig::new(
        fake.url(),
        fake.environment_id(),
        Secret::new(fake.environment_key()),
    );
    c.worker_id = "w-test".into();
    c.workdir = dir.to_owned();
    c.block_ms = Some(50);
    c.poll.empty_sleep_min = Duration::from_millis(10);
    c.poll.empty_sleep_max = Duration::from_millis(20);
    c.poll.backoff_unit = Duration::from_millis(10);
    c.runner.max_idle = Some(Duration::from_millis(300));
    c.runner.stream_backoff_start = Duration::from_millis(20);
    c.runner.stream_backoff_cap = Duration::from_millis(100);
    c.runner.send_backoff_start = Duration::from_millis(10);
    c.runner.send_backoff_cap = Duration::from_millis(50);
    c.heartbeat.min_interval = Duration::from_millis(100);
    c.exit_after_items = Some(1);
    c
}

/// A worker running on the test's runtime.
pub struct Running {
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub shutdown: Shutdown,
    pub metrics: Arc<Metrics>,
}

pub fn start(cfg: WorkerConfig, sandbox: &ScriptedSandbox) -> Running {
    let metrics = Arc::new(Metrics::new());
    let worker = Worker::new(cfg, sandbox.clone(), Arc::clone(&metrics)).unwrap();
    let shutdown = Shutdown::new();
    let s2 = shutdown.clone();
    Running {
        handle: tokio::spawn(worker.run(s2)),
        shutdown,
        metrics,
    }
}

/// Waits (bounded) for the worker to return.
pub async fn finish(r: Running) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, r.handle)
        .await
        .expect("worker did not finish")
        .unwrap()
}

/// Waits until `cond` holds on the fake's state (re-checked on every change).
pub async fn wait(fake: &Handle, what: &str, cond: impl FnMut(&State) -> bool) {
    if fake.wait_for(WAIT, cond).await.is_err() {
        panic!("timed out waiting for: {what}");
    }
}

/// Waits until the scripted sandbox holds `n` calls.
pub async fn wait_held(sandbox: &ScriptedSandbox, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while sandbox.held_count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} held calls"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the worker has opened `sid`'s stream at least `opens` times, the latest open
/// was answered (so the fake delivers every later event on it), and it listed the history
/// after that open.
pub async fn attached(fake: &Handle, sid: &str, opens: usize) {
    let stream_path = format!("/v1/sessions/{sid}/events/stream");
    let list_path = format!("/v1/sessions/{sid}/events");
    wait(
        fake,
        &format!("{sid}: stream attached ({opens}) and history listed"),
        |st| {
            let reqs = st.requests();
            let opened: Vec<usize> = reqs
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.endpoint == Some(Endpoint::EventsStream) && r.path == stream_path
                })
                .map(|(i, _)| i)
                .collect();
            let Some(&last) = opened.last() else {
                return false;
            };
            let listed = reqs
                .iter()
                .rposition(|r| r.endpoint == Some(Endpoint::EventsList) && r.path == list_path);
            opened.len() >= opens && reqs[last].status == Some(200) && listed > Some(last)
        },
    )
    .await;
}

/// Emits an `agent.tool_use` (with `evaluated_permission` when given); returns its id.
pub fn tool_use(
    fake: &Handle,
    sid: &str,
    name: &str,
    input: Value,
    permission: Option<&str>,
) -> String {
    let mut call = ToolUse::new(name, input);
    if let Some(p) = permission {
        call = call.permission(p);
    }
    fake.emit_tool_use(sid, &call).unwrap()
}

/// Emits any event; returns its id.
pub fn emit(fake: &Handle, sid: &str, event: Value) -> String {
    let ev = fake.emit_event(sid, event).unwrap();
    ev["id"].as_str().unwrap().to_owned()
}

/// The app's verdict on an ask-gated call.
pub fn confirm(fake: &Handle, sid: &str, id: &str, result: &str) {
    emit(
        fake,
        sid,
        json!({"type": "user.tool_confirmation", "tool_use_id": id, "result": result}),
    );
}

/// The agent ends its turn.
pub fn end_turn(fake: &Handle, sid: &str) {
    emit(
        fake,
        sid,
        json!({"type": "session.status_idle", "stop_reason": {"type": "end_turn"}}),
    );
}

/// The results for `id` the fake accepted (persisted in the session's history).
pub fn results_for(fake: &Handle, sid: &str, id: &str) -> Vec<Value> {
    fake.events(sid)
        .into_iter()
        .filter(|e| e["type"] == "user.tool_result" && e["tool_use_id"] == id)
        .collect()
}

/// Waits until a result for `id` is in the history; returns the first.
pub async fn wait_result(fake: &Handle, sid: &str, id: &str) -> Value {
    wait(fake, &format!("a result for {id}"), |st| {
        st.events(sid)
            .iter()
            .any(|e| e["type"] == "user.tool_result" && e["tool_use_id"] == id)
    })
    .await;
    results_for(fake, sid, id).remove(0)
}

/// How many `POST …/events` carried a result for `id` (answered or failed, any session).
pub fn posts_for(fake: &Handle, id: &str) -> usize {
    fake.requests_to(Endpoint::EventsSend)
        .iter()
        .filter(|r| {
            r.body
                .as_ref()
                .and_then(|b| b["events"].as_array())
                .is_some_and(|evs| {
                    evs.iter()
                        .any(|e| e["tool_use_id"] == id || e["custom_tool_use_id"] == id)
                })
        })
        .count()
}

/// Requests to `endpoint` whose path names `id` (a work item or a session).
pub fn requests_for(fake: &Handle, endpoint: Endpoint, id: &str) -> Vec<RecordedRequest> {
    fake.requests_to(endpoint)
        .into_iter()
        .filter(|r| r.path.split('/').any(|seg| seg == id))
        .collect()
}

/// How an item whose running call was cut off must end: the call `id` abandoned (the only
/// one), no result posted for it, and exactly one force-stop of `work`. `ctx` names the case
/// in failure messages.
pub fn assert_abandoned_and_force_stopped(
    fake: &Handle,
    sandbox: &ScriptedSandbox,
    work: &str,
    id: &str,
    ctx: &str,
) {
    assert_eq!(sandbox.abandoned(), [id.to_owned()], "{ctx}");
    assert_eq!(posts_for(fake, id), 0, "{ctx}");
    let stops = requests_for(fake, Endpoint::Stop, work);
    assert_eq!(stops.len(), 1, "{ctx}");
    assert_eq!(stops[0].body, Some(json!({"force": true})), "{ctx}");
}

/// True when the worker left no session directory of `work_id` behind
/// (they are `sessions/<work_id>.<claim>`).
pub fn no_session_dir(dir: &Path, work_id: &str) -> bool {
    !std::fs::read_dir(dir.join("sessions"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{work_id}."))
        })
}
