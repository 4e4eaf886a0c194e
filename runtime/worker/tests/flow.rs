//! End-to-end tests of the worker against a tiny in-process control-plane double (the full fake
//! control plane lives in `tests/fake-control-plane`; these tests keep the crate testable on
//! its own). Every test asserts the requests the double saw.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use wasm_sandbox_worker::metrics::Metrics;
use wasm_sandbox_worker::proto::WorkSecret;
use wasm_sandbox_worker::sandbox::testing::ScriptedSandbox;
use wasm_sandbox_worker::secret::Secret;
use wasm_sandbox_worker::worker::{Shutdown, Worker, WorkerConfig};

const ENV_KEY: &str = "sk-ant-oat01-ENVKEY-never-log-me";
const ENV_ID: &str = "env_1";

fn token_for(work: &str) -> String {
    format!("sk-ant-req-TOKEN-{work}")
}

#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    query: String,
    auth: String,
    beta: Option<String>,
    version: Option<String>,
    worker_id: Option<String>,
    body: Option<Value>,
}

enum Frame {
    Event(String, String),
    Unnamed(String),
    Drop,
}

#[derive(Clone, Debug)]
enum Hb {
    Ok { state: &'static str, extended: bool },
    Status(u16),
}

#[derive(Clone, Copy, Debug)]
enum PostFail {
    Before(u16),
    After(u16),
}

#[derive(Default)]
struct St {
    log: Vec<Req>,
    queue: VecDeque<Value>,
    history: HashMap<String, Vec<Value>>,
    next_event: u64,
    subs: Vec<(String, mpsc::UnboundedSender<Frame>)>,
    hb: VecDeque<Hb>,
    hb_count: u64,
    post_fail: VecDeque<PostFail>,
    poll_fail: VecDeque<u16>,
    session_status: String,
    stream_opens: usize,
}

#[derive(Clone)]
struct Plane {
    st: Arc<Mutex<St>>,
    changed: Arc<Notify>,
    base: String,
}

fn error_body(code: &str) -> Value {
    json!({"type": "error", "error": {"type": "invalid_request_error", "message": "nope",
           "details": {"error_code": code}}, "request_id": "req_1"})
}

impl Plane {
    async fn start() -> Plane {
        let st = Arc::new(Mutex::new(St {
            session_status: "running".into(),
            ..St::default()
        }));
        let changed = Arc::new(Notify::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let plane = Plane { st, changed, base };
        let app = Router::new().fallback(handle).with_state(plane.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        plane
    }

    fn with<R>(&self, f: impl FnOnce(&mut St) -> R) -> R {
        let r = f(&mut self.st.lock().unwrap());
        self.changed.notify_waiters();
        r
    }

    async fn wait(&self, what: &str, cond: impl Fn(&St) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.changed.notified();
            if cond(&self.st.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // One last look; the condition may depend on time-independent state only.
                if cond(&self.st.lock().unwrap()) {
                    return;
                }
                panic!("timed out waiting for: {what}");
            }
        }
    }

    fn enqueue(&self, work_id: &str, data: Value, with_secret: bool) {
        let secret =
            with_secret.then(|| WorkSecret::encode(&token_for(work_id)).expose().to_owned());
        self.with(|st| {
            st.queue.push_back(json!({
                "type": "work", "id": work_id, "environment_id": ENV_ID, "data": data,
                "state": "queued", "metadata": {}, "secret": secret,
                "created_at": "2026-01-01T00:00:00Z", "acknowledged_at": null,
                "started_at": null, "latest_heartbeat_at": null, "stop_requested_at": null,
                "stopped_at": null
            }))
        });
    }

    fn enqueue_session(&self, work_id: &str, session_id: &str) {
        self.enqueue(work_id, json!({"type": "session", "id": session_id}), true);
    }

    fn stamp(st: &mut St, mut ev: Value) -> Value {
        st.next_event += 1;
        if ev.get("id").is_none() {
            ev["id"] = json!(format!("sevt_{}", st.next_event));
        }
        ev["processed_at"] = json!("2026-01-01T00:00:00Z");
        ev
    }

    fn broadcast(st: &mut St, session: &str, ev: &Value) {
        let name = ev["type"].as_str().unwrap_or("x").to_owned();
        let data = ev.to_string();
        st.subs.retain(|(sid, s)| {
            sid != session || s.send(Frame::Event(name.clone(), data.clone())).is_ok()
        });
    }

    /// Appends to a session's history and broadcasts; returns the event id.
    fn emit_to(&self, session: &str, ev: Value) -> String {
        self.with(|st| {
            let ev = Plane::stamp(st, ev);
            st.history
                .entry(session.to_owned())
                .or_default()
                .push(ev.clone());
            Plane::broadcast(st, session, &ev);
            ev["id"].as_str().unwrap().to_owned()
        })
    }

    fn emit(&self, ev: Value) -> String {
        self.emit_to("sesn_1", ev)
    }

    fn tool_use_to(
        &self,
        session: &str,
        name: &str,
        input: Value,
        permission: Option<&str>,
    ) -> String {
        let mut ev = json!({"type": "agent.tool_use", "name": name, "input": input,
                            "evaluation": {"type": "always_allow"}});
        if let Some(p) = permission {
            ev["evaluated_permission"] = json!(p);
        }
        self.emit_to(session, ev)
    }

    fn tool_use(&self, name: &str, input: Value, permission: Option<&str>) -> String {
        self.tool_use_to("sesn_1", name, input, permission)
    }

    fn confirm(&self, id: &str, result: &str) {
        self.emit(json!({"type": "user.tool_confirmation", "tool_use_id": id, "result": result}));
    }

    fn end_turn(&self) {
        self.emit(json!({"type": "session.status_idle", "stop_reason": {"type": "end_turn"}}));
    }

    /// Drops every open stream and, atomically, appends `missed` to history only.
    fn drop_streams_missing(&self, missed: Vec<Value>) -> Vec<String> {
        self.with(|st| {
            for (_, s) in st.subs.drain(..) {
                let _ = s.send(Frame::Drop);
            }
            missed
                .into_iter()
                .map(|ev| {
                    let ev = Plane::stamp(st, ev);
                    st.history
                        .entry("sesn_1".into())
                        .or_default()
                        .push(ev.clone());
                    ev["id"].as_str().unwrap().to_owned()
                })
                .collect()
        })
    }

    fn send_raw(&self, frame: impl Fn() -> Frame) {
        self.with(|st| st.subs.retain(|(_, s)| s.send(frame()).is_ok()));
    }

    fn results_for(&self, id: &str) -> Vec<Value> {
        self.with(|st| {
            st.history
                .values()
                .flatten()
                .filter(|e| e["type"] == "user.tool_result" && e["tool_use_id"] == id)
                .cloned()
                .collect()
        })
    }

    async fn wait_result(&self, id: &str) -> Value {
        let id2 = id.to_owned();
        self.wait(&format!("result for {id}"), move |st| {
            st.history
                .values()
                .flatten()
                .any(|e| e["type"] == "user.tool_result" && e["tool_use_id"] == id2.as_str())
        })
        .await;
        self.results_for(id).remove(0)
    }

    fn log(&self) -> Vec<Req> {
        self.st.lock().unwrap().log.clone()
    }

    fn requests(&self, method: &str, path_suffix: &str) -> Vec<Req> {
        self.log()
            .into_iter()
            .filter(|r| r.method == method && r.path.ends_with(path_suffix))
            .collect()
    }

    fn posts_for(&self, id: &str) -> usize {
        self.requests("POST", "/events")
            .iter()
            .filter(|r| {
                r.body
                    .as_ref()
                    .and_then(|b| b["events"][0]["tool_use_id"].as_str())
                    == Some(id)
            })
            .count()
    }
}

async fn handle(
    State(plane): State<Plane>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let req = Req {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        auth: h("authorization").unwrap_or_default(),
        beta: h("anthropic-beta"),
        version: h("anthropic-version"),
        worker_id: h("anthropic-worker-id"),
        body: serde_json::from_slice(&body).ok(),
    };
    let path = req.path.clone();
    let query = req.query.clone();
    let body_json = req.body.clone();
    plane.with(|st| st.log.push(req));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let json_resp = |status: u16, v: Value| {
        (StatusCode::from_u16(status).unwrap(), axum::Json(v)).into_response()
    };
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["v1", "environments", _, "work", "poll"]) => {
            if let Some(code) = plane.with(|st| st.poll_fail.pop_front()) {
                return json_resp(code, error_body("x"));
            }
            let item = plane.with(|st| st.queue.pop_front());
            match item {
                Some(w) => json_resp(200, w),
                None => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    json_resp(200, Value::Null)
                }
            }
        }
        ("GET", ["v1", "environments", _, "work", "stats"]) => json_resp(
            200,
            json!({"type": "work_queue_stats", "depth": 2, "pending": 1,
                   "oldest_queued_at": "2026-01-01T00:00:00Z", "workers_polling": 1}),
        ),
        ("POST", ["v1", "environments", _, "work", _, "ack"]) => json_resp(200, json!({})),
        ("POST", ["v1", "environments", _, "work", _, "heartbeat"]) => {
            let reply = plane.with(|st| {
                st.hb_count += 1;
                (st.hb.pop_front(), st.hb_count)
            });
            match reply {
                (Some(Hb::Status(412)), _) => json_resp(
                    412,
                    json!({"type": "error", "error": {"type": "invalid_request_error", "message": "lost",
                        "details": {"error_code": "heartbeat_precondition_failed",
                            "current_state": {"state": "active", "ttl_seconds": 3,
                                              "last_heartbeat": "other", "lease_extended": false}}}}),
                ),
                (Some(Hb::Status(code)), _) => json_resp(code, error_body("x")),
                (reply, n) => {
                    let (state, extended) = match reply {
                        Some(Hb::Ok { state, extended }) => (state, extended),
                        _ => ("active", true),
                    };
                    let _ = query;
                    json_resp(
                        200,
                        json!({"type": "work_heartbeat", "last_heartbeat": format!("2026-01-01T00:00:{n:02}Z"),
                               "lease_extended": extended, "state": state, "ttl_seconds": 3}),
                    )
                }
            }
        }
        ("POST", ["v1", "environments", _, "work", _, "stop"]) => {
            StatusCode::NO_CONTENT.into_response()
        }
        ("GET", ["v1", "sessions", sid]) => {
            let status = plane.with(|st| st.session_status.clone());
            json_resp(
                200,
                json!({"id": sid, "type": "session", "status": status, "resources": [], "metadata": {}}),
            )
        }
        ("GET", ["v1", "sessions", sid, "events"]) => {
            let data = plane.with(|st| st.history.get(*sid).cloned().unwrap_or_default());
            json_resp(200, json!({"data": data, "next_page": null}))
        }
        ("GET", ["v1", "sessions", sid, "events", "stream"]) => {
            let (tx, rx) = mpsc::unbounded_channel();
            plane.with(|st| {
                st.subs.push(((*sid).to_owned(), tx));
                st.stream_opens += 1;
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                match rx.recv().await {
                    Some(Frame::Event(name, data)) => Some((
                        Ok::<_, Infallible>(Event::default().event(name).data(data)),
                        rx,
                    )),
                    Some(Frame::Unnamed(data)) => Some((Ok(Event::default().data(data)), rx)),
                    Some(Frame::Drop) | None => None,
                }
            });
            Sse::new(stream).into_response()
        }
        ("POST", ["v1", "sessions", sid, "events"]) => {
            let fail = plane.with(|st| st.post_fail.pop_front());
            if let Some(PostFail::Before(code)) = fail {
                return json_resp(code, error_body("x"));
            }
            let events = body_json
                .as_ref()
                .and_then(|b| b["events"].as_array().cloned())
                .unwrap_or_default();
            let stored: Vec<Value> = plane.with(|st| {
                events
                    .into_iter()
                    .map(|ev| {
                        let ev = Plane::stamp(st, ev);
                        st.history
                            .entry((*sid).to_owned())
                            .or_default()
                            .push(ev.clone());
                        Plane::broadcast(st, sid, &ev);
                        ev
                    })
                    .collect()
            });
            if let Some(PostFail::After(code)) = fail {
                return json_resp(code, error_body("x"));
            }
            json_resp(200, json!({"data": stored}))
        }
        _ => json_resp(404, error_body("not_found")),
    }
}

fn config(plane: &Plane, dir: &std::path::Path) -> WorkerConfig {
    let mut c = WorkerConfig::new(plane.base.clone(), ENV_ID, Secret::new(ENV_KEY));
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

struct Running {
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
}

fn start(cfg: WorkerConfig, sandbox: &ScriptedSandbox) -> Running {
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

async fn finish(r: Running) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(30), r.handle)
        .await
        .expect("worker did not finish")
        .unwrap()
}

/// Waits until the worker has opened `sid`'s stream at least `opens` times and read the history
/// after the latest open.
async fn attached_to(plane: &Plane, sid: &str, opens: usize) {
    let stream_path = format!("/v1/sessions/{sid}/events/stream");
    let list_path = format!("/v1/sessions/{sid}/events");
    plane
        .wait(
            &format!("{sid}: stream attached and history listed"),
            move |st| {
                let opened: Vec<usize> = st
                    .log
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.path == stream_path)
                    .map(|(i, _)| i)
                    .collect();
                let listed = st
                    .log
                    .iter()
                    .rposition(|r| r.method == "GET" && r.path == list_path);
                opened.len() >= opens && listed > opened.last().copied()
            },
        )
        .await;
}

async fn attached(plane: &Plane, opens: usize) {
    attached_to(plane, "sesn_1", opens).await;
}

fn index_of(log: &[Req], pred: impl Fn(&Req) -> bool) -> usize {
    log.iter().position(pred).expect("request not found")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_six_tools_and_the_exact_requests() {
    let plane = Plane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    plane.enqueue_session("work_1", "sesn_1");
    let run = start(config(&plane, dir.path()), &sandbox);
    let metrics = Arc::clone(&run.metrics);
    attached(&plane, 1).await;

    let mut ids = Vec::new();
    for tool in ["bash", "read", "write", "edit", "glob", "grep"] {
        let id = plane.tool_use(tool, json!({"n": tool}), Some("allow"));
        let result = plane.wait_result(&id).await;
        assert_eq!(result["is_error"], false);
        assert_eq!(
            result["content"],
            json!([{"type": "text", "text": format!("{tool}:{}", json!({"n": tool}))}])
        );
        ids.push(id);
    }
    // Not ours: a server tool, a custom tool, and a custom call named like a sandbox tool.
    let ws = plane.tool_use("web_search", json!({"query": "x"}), None);
    let custom =
        plane.emit(json!({"type": "agent.custom_tool_use", "name": "lookup", "input": {}}));
    let custom_bash =
        plane.emit(json!({"type": "agent.custom_tool_use", "name": "bash", "input": {}}));
    // A final call proves the three above were passed over, not merely still queued.
    let last = plane.tool_use("bash", json!({"n": "last"}), None);
    plane.wait_result(&last).await;
    plane.end_turn();
    finish(run).await.unwrap();

    for id in [&ws, &custom, &custom_bash] {
        assert!(
            plane.results_for(id).is_empty(),
            "posted a result for an unowned call {id}"
        );
        assert_eq!(plane.posts_for(id), 0);
    }
    for id in &ids {
        assert_eq!(plane.posts_for(id), 1, "exactly one post for {id}");
    }
    let names: Vec<String> = sandbox.calls().into_iter().map(|c| c.1).collect();
    assert_eq!(
        names,
        ["bash", "read", "write", "edit", "glob", "grep", "bash"]
    );
    assert_eq!(sandbox.closed(), ["sesn_1"]);
    // Session directories are `<work_id>.<claim>`.
    assert!(
        !std::fs::read_dir(dir.path().join("sessions"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("work_1.")),
        "session dir left behind"
    );

    let log = plane.log();
    let token = format!("Bearer {}", token_for("work_1"));
    let env = format!("Bearer {ENV_KEY}");
    let poll = index_of(&log, |r| r.path.ends_with("/work/poll"));
    let ack = index_of(&log, |r| r.path.ends_with("/work_1/ack"));
    let hb = index_of(&log, |r| r.path.ends_with("/work_1/heartbeat"));
    let sess = index_of(&log, |r| {
        r.method == "GET" && r.path == "/v1/sessions/sesn_1"
    });
    let stream = index_of(&log, |r| r.path.ends_with("/events/stream"));
    let list = index_of(&log, |r| {
        r.method == "GET" && r.path.ends_with("/sesn_1/events")
    });
    let stop = index_of(&log, |r| r.path.ends_with("/work_1/stop"));
    // The session fetch and the stream (then the history) go out with the ack (issue 16);
    // the heartbeat only after it.
    assert!(poll < ack && ack < hb && poll < sess && poll < stream && stream < list);
    let last_post = log
        .iter()
        .rposition(|r| r.method == "POST" && r.path.ends_with("/sesn_1/events"))
        .unwrap();
    assert!(last_post < stop, "stopped before the last result");
    assert!(
        log[stop + 1..]
            .iter()
            .all(|r| r.path.ends_with("/work/poll")),
        "requests for the item after its stop"
    );
    assert_eq!(log[poll].query, "block_ms=50");
    assert_eq!(log[poll].worker_id.as_deref(), Some("w-test"));
    assert_eq!(log[poll].auth, env);
    assert_eq!(log[ack].auth, env);
    assert_eq!(log[hb].query, "expected_last_heartbeat=NO_HEARTBEAT");
    // Every per-item call rides the sessions token, never the environment key.
    for r in &log[poll + 1..] {
        if !r.path.ends_with("/work/poll") && !r.path.ends_with("/ack") {
            assert_eq!(r.auth, token, "{} {}", r.method, r.path);
        }
    }
    assert_eq!(log[stop].body, Some(json!({"force": true})));
    for r in &log {
        assert_eq!(
            r.beta.as_deref(),
            Some("managed-agents-2026-04-01"),
            "{}",
            r.path
        );
        assert_eq!(r.version.as_deref(), Some("2026-10-21"));
    }
    // Later beats echo the server's last_heartbeat exactly.
    let beats = plane.requests("POST", "/heartbeat");
    for (i, b) in beats.iter().enumerate().skip(1) {
        assert_eq!(
            b.query,
            format!("expected_last_heartbeat=2026-01-01T00%3A00%3A{i:02}Z")
        );
    }
    assert_eq!(plane.posts_for(&ids[0]), 1);
    let body = plane.requests("POST", "/sesn_1/events")[0]
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
    let plane = Plane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    plane.enqueue_session("work_1", "sesn_1");
    let run = start(config(&plane, dir.path()), &sandbox);
    attached(&plane, 1).await;

    let ask_allow = plane.tool_use("bash", json!({"c": 1}), Some("ask"));
    let ask_deny = plane.tool_use("bash", json!({"c": 2}), Some("ask"));
    let denied = plane.tool_use("bash", json!({"c": 3}), Some("deny"));
    let unknown = plane.tool_use("read", json!({"c": 4}), Some("maybe_later"));
    // A verdict that arrives before its call is remembered.
    plane.confirm("sevt_early", "allow");
    let early = plane.emit(
        json!({"type": "agent.tool_use", "id": "sevt_early", "name": "glob",
                                  "input": {"c": 5}, "evaluated_permission": "ask"}),
    );
    plane.wait_result(&early).await;
    assert!(
        plane.results_for(&ask_allow).is_empty(),
        "ran before confirmation"
    );
    plane.confirm(&ask_allow, "allow");
    plane.wait_result(&ask_allow).await;
    plane.confirm(&ask_deny, "deny");
    plane.confirm(&denied, "allow"); // a stray allow never overrides a server deny
    plane.confirm(&unknown, "allow");
    plane.wait_result(&unknown).await;
    plane.end_turn();
    finish(run).await.unwrap();

    assert!(plane.results_for(&ask_deny).is_empty());
    assert!(plane.results_for(&denied).is_empty());
    let ran: Vec<String> = sandbox.calls().into_iter().map(|c| c.2).collect();
    assert_eq!(ran, [early.clone(), ask_allow.clone(), unknown.clone()]);
    assert_eq!(plane.requests("POST", "/work_1/stop").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_drop_malformed_event_and_reconnect_without_duplicates() {
    let plane = Plane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    plane.enqueue_session("work_1", "sesn_1");
    let run = start(config(&plane, dir.path()), &sandbox);
    attached(&plane, 1).await;

    let a = plane.tool_use("bash", json!({"a": 1}), None);
    plane.wait_result(&a).await;
    // The stream drops; a call made meanwhile is only in history.
    let missed = plane.drop_streams_missing(vec![
        json!({"type": "agent.tool_use", "name": "read", "input": {"b": 2}}),
    ]);
    let b = plane.wait_result(&missed[0]).await;
    assert_eq!(b["is_error"], false);
    attached(&plane, 2).await;
    // A malformed frame and a frame without an event name: logged, session survives.
    plane.send_raw(|| Frame::Event("agent.tool_use".into(), "{not json".into()));
    plane.send_raw(|| {
        Frame::Unnamed(r#"{"type":"agent.tool_use","id":"sevt_x","name":"bash","input":{}}"#.into())
    });
    attached(&plane, 3).await;
    let c = plane.tool_use("grep", json!({"c": 3}), None);
    plane.wait_result(&c).await;
    plane.end_turn();
    finish(run).await.unwrap();

    let ran: Vec<String> = sandbox.calls().into_iter().map(|c| c.2).collect();
    assert_eq!(
        ran,
        [a.clone(), missed[0].clone(), c.clone()],
        "a call ran twice or was lost"
    );
    for id in [&a, &missed[0], &c] {
        assert_eq!(plane.posts_for(id), 1, "{id}");
        assert_eq!(plane.results_for(id).len(), 1, "{id}");
    }
    assert!(
        plane.results_for("sevt_x").is_empty(),
        "acted on an unnamed frame"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_post_retries_without_duplicates() {
    let plane = Plane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    plane.enqueue_session("work_1", "sesn_1");
    let run = start(config(&plane, dir.path()), &sandbox);
    attached(&plane, 1).await;

    plane.with(|st| {
        st.post_fail.extend([
            PostFail::Before(500),
            PostFail::Before(503),
            PostFail::Before(429),
        ])
    });
    let a = plane.tool_use("bash", json!({"a": 1}), None);
    plane.wait_result(&a).await;
    assert_eq!(plane.posts_for(&a), 4);

    // The post lands but the response says 500: the retry must see it in history.
    plane.with(|st| st.post_fail.push_back(PostFail::After(500)));
    let b = plane.tool_use("bash", json!({"b": 1}), None);
    plane.wait_result(&b).await;
    // Then a fatal 400: given up at once, never retried or re-run.
    plane.with(|st| st.post_fail.push_back(PostFail::Before(400)));
    let c = plane.tool_use("bash", json!({"c": 1}), None);
    let d = plane.tool_use("bash", json!({"d": 1}), None);
    plane.wait_result(&d).await;
    plane.end_turn();
    finish(run).await.unwrap();

    assert_eq!(plane.results_for(&b).len(), 1, "duplicate result");
    assert_eq!(plane.posts_for(&b), 1, "re-posted a result that had landed");
    assert_eq!(plane.posts_for(&c), 1);
    assert!(plane.results_for(&c).is_empty());
    let ran: Vec<String> = sandbox.calls().into_iter().map(|c| c.2).collect();
    assert_eq!(ran, [a, b, c, d]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_lost_mid_call_sends_nothing_more() {
    let plane = Plane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    plane.enqueue_session("work_1", "sesn_1");
    let run = start(config(&plane, dir.path()), &sandbox);
    attached(&plane, 1).await;

    let a = plane.tool_use("bash", json!({"hold": true}), None);
    let sb = sandbox.clone();
    plane.wait("call held", move |_| sb.held_count() == 1).await;
    plane.with(|st| st.hb.push_back(Hb::Status(412)));
    finish(run).await.unwrap();

    assert_eq!(
        sandbox.abandoned(),
        std::slice::from_ref(&a),
        "the running call was not aborted"
    );
    assert_eq!(plane.posts_for(&a), 0, "posted after the lease was lost");
    assert!(
        plane.requests("POST", "/stop").is_empty(),
        "stopped an item it no longer holds"
    );
    assert_eq!(sandbox.closed(), ["sesn_1"]);
    assert!(
        !std::fs::read_dir(dir.path().join("sessions"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("work_1.")),
        "session dir left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_requested_mid_call_force_stops() {
    for (state, extended) in [("stopping", true), ("stopped", false), ("active", false)] {
        let plane = Plane::start().await;
        let dir = tempfile::tempdir().unwrap();
        let sandbox = ScriptedSandbox::new();
        plane.enqueue_session("work_1", "sesn_1");
        let run = start(config(&plane, dir.path()), &sandbox);
        attached(&plane, 1).await;
        let a = plane.tool_use("bash", json!({"hold": true}), None);
        let sb = sandbox.clone();
        plane.wait("call held", move |_| sb.held_count() == 1).await;
        plane.with(|st| st.hb.push_back(Hb::Ok { state, extended }));
        finish(run).await.unwrap();
        assert_eq!(sandbox.abandoned(), std::slice::from_ref(&a), "{state}");
        assert_eq!(plane.posts_for(&a), 0, "{state}");
        let stops = plane.requests("POST", "/work_1/stop");
        assert_eq!(stops.len(), 1, "{state}");
        assert_eq!(stops[0].body, Some(json!({"force": true})));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_running_calls_of_three_sessions() {
    let plane = Plane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    for i in 1..=3 {
        plane.enqueue_session(&format!("work_{i}"), &format!("sesn_{i}"));
    }
    let mut cfg = config(&plane, dir.path());
    cfg.concurrency = 3;
    cfg.exit_after_items = None;
    let run = start(cfg, &sandbox);
    let mut held = Vec::new();
    for i in 1..=3 {
        let sid = format!("sesn_{i}");
        attached_to(&plane, &sid, 1).await;
        held.push(plane.tool_use_to(&sid, "bash", json!({"hold": true}), None));
    }
    let sb = sandbox.clone();
    plane
        .wait("three held calls", move |_| sb.held_count() == 3)
        .await;
    run.shutdown.drain();
    // Calls that arrive during the drain are not started.
    let late = plane.tool_use_to("sesn_1", "bash", json!({}), None);
    sandbox.release(3);
    finish(run).await.unwrap();

    // Each session finished its running call and posted its result, then stopped its item.
    for id in &held {
        assert_eq!(plane.posts_for(id), 1, "{id}");
    }
    assert_eq!(plane.posts_for(&late), 0);
    assert_eq!(sandbox.calls().len(), 3);
    assert!(sandbox.abandoned().is_empty());
    for i in 1..=3 {
        let stops = plane.requests("POST", &format!("/work_{i}/stop"));
        assert_eq!(stops.len(), 1);
        let stop_at = plane
            .log()
            .iter()
            .position(|r| r.path.ends_with(&format!("/work_{i}/stop")))
            .unwrap();
        let post_at = plane
            .log()
            .iter()
            .position(|r| r.path == format!("/v1/sessions/sesn_{i}/events") && r.method == "POST")
            .unwrap();
        assert!(post_at < stop_at);
    }
    let mut closed = sandbox.closed();
    closed.sort();
    assert_eq!(closed, ["sesn_1", "sesn_2", "sesn_3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_shutdown_aborts_running_calls() {
    let plane = Plane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    plane.enqueue_session("work_1", "sesn_1");
    let run = start(config(&plane, dir.path()), &sandbox);
    attached(&plane, 1).await;
    let a = plane.tool_use("bash", json!({"hold": true}), None);
    let sb = sandbox.clone();
    plane.wait("call held", move |_| sb.held_count() == 1).await;
    run.shutdown.drain();
    run.shutdown.force();
    finish(run).await.unwrap();
    assert_eq!(sandbox.abandoned(), std::slice::from_ref(&a));
    assert_eq!(plane.posts_for(&a), 0);
    assert_eq!(plane.requests("POST", "/work_1/stop").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_session_and_terminated_items_are_force_stopped() {
    let plane = Plane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    plane.enqueue(
        "work_hc",
        json!({"type": "healthcheck", "id": "hc_1"}),
        false,
    );
    plane.enqueue("work_odd", json!({"id": "x"}), false);
    plane.enqueue_session("work_t", "sesn_t");
    plane.with(|st| st.session_status = "terminated".into());
    let mut cfg = config(&plane, dir.path());
    cfg.exit_after_items = Some(3);
    finish(start(cfg, &sandbox)).await.unwrap();

    for w in ["work_hc", "work_odd", "work_t"] {
        assert_eq!(plane.requests("POST", &format!("/{w}/ack")).len(), 1, "{w}");
        let stops = plane.requests("POST", &format!("/{w}/stop"));
        assert_eq!(stops.len(), 1, "{w}");
        assert_eq!(stops[0].body, Some(json!({"force": true})));
    }
    // No heartbeat for non-session items.
    assert!(plane.requests("POST", "/work_hc/heartbeat").is_empty());
    // The stream may be opened beside the ack (issue 16); nothing is posted or run.
    assert!(plane.requests("POST", "/sesn_t/events").is_empty());
    // Without a secret the environment key is the item credential.
    assert_eq!(
        plane.requests("POST", "/work_hc/stop")[0].auth,
        format!("Bearer {ENV_KEY}")
    );
    assert!(sandbox.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_errors_back_off_and_fatal_ends_the_worker() {
    let plane = Plane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    plane.with(|st| st.poll_fail.extend([500, 502, 429, 401]));
    let err = finish(start(config(&plane, dir.path()), &sandbox))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");
    assert_eq!(plane.requests("GET", "/work/poll").len(), 4);
    assert!(plane.requests("POST", "/ack").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints() {
    use wasm_sandbox_worker::ops::{OpsState, spawn};
    let plane = Plane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let metrics = Arc::new(Metrics::new());
    let mut cfg = config(&plane, dir.path());
    cfg.exit_after_items = None;
    let worker = Worker::new(cfg, sandbox.clone(), Arc::clone(&metrics)).unwrap();
    let state = OpsState {
        metrics: Arc::clone(&metrics),
        status: worker.status(),
        env: worker.environment_client(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, _task) = spawn("127.0.0.1:0".parse().unwrap(), state, stop.clone())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let get = |p: &'static str| {
        let http = http.clone();
        async move { http.get(format!("http://{addr}{p}")).send().await.unwrap() }
    };
    assert_eq!(get("/healthz").await.status(), 200);
    assert_eq!(get("/readyz").await.status(), 503);
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    plane
        .wait("a poll", |st| {
            st.log.iter().any(|r| r.path.ends_with("/poll"))
        })
        .await;
    let mut ready = false;
    for _ in 0..200 {
        if get("/readyz").await.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready, "never became ready");
    let q: Value = get("/queue").await.json().await.unwrap();
    assert_eq!(
        q,
        json!({"depth": 2, "pending": 1, "oldest_queued_at": "2026-01-01T00:00:00Z", "workers_polling": 1})
    );
    assert_eq!(
        plane.requests("GET", "/work/stats")[0].auth,
        format!("Bearer {ENV_KEY}")
    );
    let m = get("/metrics").await.text().await.unwrap();
    assert!(
        m.contains("wasm_sandbox_polls_total{result=\"empty\"}"),
        "{m}"
    );
    assert!(m.contains("wasm_sandbox_sessions_active 0"), "{m}");
    assert!(!m.contains(ENV_KEY));
    shutdown.drain();
    // The worker loop notices the drain asynchronously; readiness must drop
    // to 503 once it has (bounded wait, never 200 forever).
    let mut status = 200;
    for _ in 0..500 {
        status = get("/readyz").await.status().as_u16();
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 503);
    handle.await.unwrap().unwrap();
    stop.cancel();
}

/// A writer that appends to a shared buffer, for capturing logs.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn credentials_never_reach_logs() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let plane = Plane::start().await;
        let dir = tempfile::tempdir().unwrap();
        let sandbox = ScriptedSandbox::new();
        plane.enqueue_session("work_1", "sesn_1");
        plane.with(|st| {
            st.post_fail.push_back(PostFail::Before(500));
            st.hb.push_back(Hb::Status(503));
        });
        let run = start(config(&plane, dir.path()), &sandbox);
        attached(&plane, 1).await;
        let a = plane.tool_use("bash", json!({"a": 1}), None);
        plane.wait_result(&a).await;
        plane.send_raw(|| Frame::Event("agent.tool_use".into(), "{bad".into()));
        attached(&plane, 2).await;
        plane.end_turn();
        let metrics = Arc::clone(&run.metrics);
        finish(run).await.unwrap();
        let m = metrics.encode();
        assert!(!m.contains("ENVKEY") && !m.contains("TOKEN"));
    });
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("tool result send failed"),
        "log capture did not work:\n{logs}"
    );
    let secret = WorkSecret::encode(&token_for("work_1"));
    for needle in [ENV_KEY, "ENVKEY", "TOKEN-work_1", secret.expose()] {
        assert!(!logs.contains(needle), "log leaks {needle}");
    }
}
