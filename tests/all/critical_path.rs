//! The worker's critical path after a claim (issue 16), against the fake control plane with
//! an injected delay: the ORDER and OVERLAP of the requests the fake recorded (arrival and
//! response times), and what happens when the ack fails.
//!
//! The item's reads (session, event stream, history) and the sandbox set-up start together
//! with the ack; nothing is posted, no heartbeat goes out and no tool runs before the ack
//! succeeded; a failed ack drops all of it and removes the sandbox and its directory; a read
//! refused before the ack's answer is sent again after it; the stop overlaps the local
//! teardown.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use wasm_sandbox_fake_control_plane::{
    Credential, Endpoint, Handle, RecordedRequest, Scenario, WorkState,
};
use wasm_sandbox_worker::sandbox::testing::{ScriptedSandbox, ScriptedSession};
use wasm_sandbox_worker::sandbox::{
    SandboxProvider, SandboxSession, SandboxSpec, Tool, ToolAnswer, ToolCall,
};
use wasm_sandbox_worker::worker::WorkerConfig;

const WAIT: Duration = Duration::from_secs(60);
/// How long the fake holds the ack's answer back.
const ACK_DELAY: Duration = Duration::from_millis(300);

use crate::worker::{fake, finished, start};

fn config(fake: &Handle, dir: &Path) -> WorkerConfig {
    let mut c = crate::worker::config(fake, dir);
    c.worker_id = "w-critical-path".into();
    c.runner.max_idle = Some(Duration::from_millis(300));
    c
}

/// A [`ScriptedSandbox`] that records when things happened to it, and can take its time to
/// close (to show what the teardown overlaps).
#[derive(Clone)]
struct Timed {
    inner: ScriptedSandbox,
    close_delay: Duration,
    log: Arc<Mutex<Vec<(&'static str, SystemTime)>>>,
}

impl Timed {
    fn new(close_delay: Duration) -> Timed {
        Timed {
            inner: ScriptedSandbox::new(),
            close_delay,
            log: Arc::default(),
        }
    }

    fn note(&self, what: &'static str) {
        self.log.lock().unwrap().push((what, SystemTime::now()));
    }

    fn first(&self, what: &str) -> Option<SystemTime> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(w, _)| *w == what)
            .map(|(_, t)| *t)
    }
}

struct TimedSession {
    inner: ScriptedSession,
    owner: Timed,
}

impl SandboxProvider for Timed {
    type Session = TimedSession;

    async fn create(&self, spec: SandboxSpec) -> anyhow::Result<TimedSession> {
        self.note("create");
        Ok(TimedSession {
            inner: self.inner.create(spec).await?,
            owner: self.clone(),
        })
    }
}

impl SandboxSession for TimedSession {
    async fn call(&self, tool: Tool, call: &ToolCall) -> ToolAnswer {
        self.owner.note("call");
        self.inner.call(tool, call).await
    }

    async fn close(&self) {
        self.owner.note("close_start");
        tokio::time::sleep(self.owner.close_delay).await;
        self.inner.close().await;
        self.owner.note("close_end");
    }
}

/// One `write` call, an idle turn end, termination.
fn one_call() -> Scenario {
    Scenario::from_json(
        &json!({"name": "one-call", "steps": [
            {"tool_use": {"label": "w", "name": "write",
                          "input": {"file_path": "out.txt", "content": "x"}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"]})
        .to_string(),
    )
    .expect("scenario")
}

fn the_one(reqs: &[RecordedRequest], endpoint: Endpoint) -> &RecordedRequest {
    let mut it = reqs.iter().filter(|r| r.endpoint == Some(endpoint));
    let one = it
        .next()
        .unwrap_or_else(|| panic!("no {endpoint:?} request"));
    assert!(it.next().is_none(), "more than one {endpoint:?} request");
    one
}

fn session_dirs(dir: &Path, work_id: &str) -> Vec<String> {
    std::fs::read_dir(dir.join("sessions"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{work_id}.")))
        .collect()
}

/// (b) The session fetch, the stream and the history read reach the fake while the ack's
/// answer is still held back, and the sandbox is made then too; (a) yet the first heartbeat,
/// every post, the stop and the first tool call come after the ack was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_overlap_a_slow_ack_and_nothing_is_posted_before_it() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Timed::new(Duration::ZERO);
    let (work_id, session_id) = fake.enqueue_session(one_call());
    fake.delay_next(Endpoint::Ack, 1, ACK_DELAY);
    finished(start(config(&fake, dir.path()), sandbox.clone()))
        .await
        .unwrap();

    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));
    let results = fake.tool_results(&session_id);
    assert_eq!(results.len(), 1, "one result");
    assert!(results[0].accepted);

    let reqs = fake.requests();
    let ack = the_one(&reqs, Endpoint::Ack);
    let ack_answered = ack.responded_at.expect("ack answered");
    assert!(
        ack_answered.duration_since(ack.at).unwrap() >= ACK_DELAY,
        "the ack was held back"
    );
    for endpoint in [
        Endpoint::SessionRetrieve,
        Endpoint::EventsStream,
        Endpoint::EventsList,
    ] {
        let r = reqs
            .iter()
            .find(|r| r.endpoint == Some(endpoint))
            .unwrap_or_else(|| panic!("no {endpoint:?}"));
        assert!(
            r.at < ack_answered,
            "{endpoint:?} arrived {:?} after the ack's answer: it waited for the ack",
            r.at.duration_since(ack_answered).unwrap_or_default()
        );
        assert!(
            matches!(r.credential, Credential::SessionsToken { .. }),
            "{endpoint:?} rides the item's sessions token"
        );
    }
    let created = sandbox.first("create").expect("sandbox made");
    assert!(
        created < ack_answered,
        "the sandbox was made beside the ack"
    );

    // Nothing that needs the ack went out before its answer.
    for r in &reqs {
        let needs_ack = matches!(
            r.endpoint,
            Some(Endpoint::Heartbeat | Endpoint::EventsSend | Endpoint::Stop)
        );
        if needs_ack {
            assert!(
                r.at >= ack_answered,
                "{:?} {} arrived before the ack was answered",
                r.endpoint,
                r.path
            );
        }
    }
    let first_hb = the_first(&reqs, Endpoint::Heartbeat);
    assert_eq!(
        first_hb.query_param("expected_last_heartbeat"),
        Some("NO_HEARTBEAT")
    );
    let call = sandbox.first("call").expect("the tool ran");
    assert!(
        call >= ack_answered,
        "a tool ran before the ack was answered"
    );
}

fn the_first(reqs: &[RecordedRequest], endpoint: Endpoint) -> &RecordedRequest {
    reqs.iter()
        .find(|r| r.endpoint == Some(endpoint))
        .unwrap_or_else(|| panic!("no {endpoint:?} request"))
}

/// (c) The ack fails permanently after the set-up finished: no heartbeat, no result, no tool
/// call; the sandbox is closed and its directory removed; the one stop is the force-stop with
/// the environment key that a failed ack always got (nothing of the item's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_ack_drops_everything_started_for_the_item() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Timed::new(Duration::ZERO);
    let (work_id, session_id) = fake.enqueue_session(one_call());
    fake.delay_next(Endpoint::Ack, 1, ACK_DELAY);
    fake.fail_next(Endpoint::Ack, 1, 400);
    let running = start(config(&fake, dir.path()), sandbox.clone());

    // The worker does not count an unacked item; wait for the sandbox to be gone, then drain.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let closed = sandbox.inner.closed().contains(&session_id);
        let stopped = !fake.requests_to(Endpoint::Stop).is_empty();
        if closed && stopped && session_dirs(dir.path(), &work_id).is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sandbox of the unacked item was not removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give anything still running for the item the time to (wrongly) send something.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.shutdown.drain();
    finished(running).await.unwrap();

    let reqs = fake.requests();
    let ack = the_one(&reqs, Endpoint::Ack);
    assert_eq!(ack.status, Some(400));
    let created = sandbox
        .first("create")
        .expect("the set-up ran beside the ack");
    assert!(created < ack.responded_at.unwrap());
    assert!(
        fake.requests_to(Endpoint::Heartbeat).is_empty(),
        "heartbeat for an unacked item"
    );
    assert!(
        fake.requests_to(Endpoint::EventsSend).is_empty(),
        "posted for an unacked item"
    );
    assert!(sandbox.inner.calls().is_empty(), "a tool ran");
    assert!(fake.tool_results(&session_id).is_empty());
    let stops = fake.requests_to(Endpoint::Stop);
    assert_eq!(
        stops.len(),
        1,
        "only the loop's force-stop of the unacked item"
    );
    assert_eq!(stops[0].credential, Credential::EnvironmentKey);
    assert!(
        session_dirs(dir.path(), &work_id).is_empty(),
        "session dir left"
    );
}

/// (d) The session fetch and the stream are refused (401, 403) before the ack's answer: both
/// are sent again after the ack, and the session is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_refused_before_the_ack_is_retried_after_it() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Timed::new(Duration::ZERO);
    let (work_id, session_id) = fake.enqueue_session(one_call());
    fake.delay_next(Endpoint::Ack, 1, ACK_DELAY);
    fake.fail_next(Endpoint::SessionRetrieve, 1, 401);
    fake.fail_next(Endpoint::EventsStream, 1, 403);
    finished(start(config(&fake, dir.path()), sandbox.clone()))
        .await
        .unwrap();

    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));
    let results = fake.tool_results(&session_id);
    assert_eq!(results.len(), 1);
    assert!(results[0].accepted, "the session was served");
    let reqs = fake.requests();
    let ack_answered = the_one(&reqs, Endpoint::Ack).responded_at.unwrap();
    for (endpoint, refused) in [
        (Endpoint::SessionRetrieve, 401),
        (Endpoint::EventsStream, 403),
    ] {
        let sent: Vec<&RecordedRequest> = reqs
            .iter()
            .filter(|r| r.endpoint == Some(endpoint))
            .collect();
        assert_eq!(sent.len(), 2, "{endpoint:?}: refused once, then sent again");
        assert_eq!(sent[0].status, Some(refused));
        assert!(sent[0].at < ack_answered);
        assert!(
            sent[1].at >= ack_answered,
            "{endpoint:?} retried only after the ack"
        );
        assert_eq!(sent[1].status, Some(200));
    }
    assert_eq!(session_dirs(dir.path(), &work_id), Vec::<String>::new());
}

/// (e) A session terminated at the claim: its reads may go out beside the ack, but no sandbox
/// is made, nothing runs, nothing is posted; the item is stopped after the ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_session_ends_without_running_anything() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Timed::new(Duration::ZERO);
    let (work_id, session_id) =
        fake.enqueue_session(Scenario::example("terminated-at-claim").unwrap());
    fake.delay_next(Endpoint::Ack, 1, ACK_DELAY);
    finished(start(config(&fake, dir.path()), sandbox.clone()))
        .await
        .unwrap();

    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));
    assert!(
        sandbox.first("create").is_none(),
        "made a sandbox for nothing"
    );
    assert!(sandbox.inner.calls().is_empty());
    assert!(fake.requests_to(Endpoint::EventsSend).is_empty());
    assert!(fake.tool_results(&session_id).is_empty());
    let reqs = fake.requests();
    let ack_answered = the_one(&reqs, Endpoint::Ack).responded_at.unwrap();
    let stop = the_one(&reqs, Endpoint::Stop);
    assert!(stop.at >= ack_answered);
    assert!(session_dirs(dir.path(), &work_id).is_empty());
}

/// Item 3: after the last result, the stop does not wait for the sandbox to close: with a
/// close that takes 400 ms, the stop reaches the fake before the close has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_overlaps_the_local_teardown() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Timed::new(Duration::from_millis(400));
    let (work_id, _) = fake.enqueue_session(one_call());
    finished(start(config(&fake, dir.path()), sandbox.clone()))
        .await
        .unwrap();

    let reqs = fake.requests();
    let stop = the_one(&reqs, Endpoint::Stop);
    let close_start = sandbox.first("close_start").expect("closed");
    let close_end = sandbox.first("close_end").expect("closed");
    assert!(
        stop.at < close_end,
        "the stop waited for the sandbox to close ({:?} after the close ended)",
        stop.at.duration_since(close_end).unwrap_or_default()
    );
    assert!(
        stop.at + Duration::from_millis(100) >= close_start,
        "the stop went out with the teardown, not before the run ended"
    );
    // The worker returned only after both: the directory is gone.
    assert!(session_dirs(dir.path(), &work_id).is_empty());
}
