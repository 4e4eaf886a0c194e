//! The usage ledger and sink with the real `wasm-sandbox serve` process: a worker killed with
//! `kill -9` right after an item's teardown (the stop already sent) leaves the item's record in
//! its ledger; a restarted worker with `[usage] sink_url` sends it to a loopback endpoint
//! exactly once (its `Idempotency-Key` is the record id, the auth header comes from the
//! environment), and a second restart sends nothing again (the cursor is durable).

use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane, Handle, Scenario, WorkState};

mod common;

fn serve(fake: &Handle, workdir: &std::path::Path, config: Option<&std::path::Path>) -> Child {
    serve_with(fake, workdir, config, Stdio::null())
}

fn serve_with(
    fake: &Handle,
    workdir: &std::path::Path,
    config: Option<&std::path::Path>,
    stderr: Stdio,
) -> Child {
    let mut cmd = common::serve_command(fake, workdir);
    cmd.args(common::FAST_JSON)
        .env("USAGE_TEST_SINK_AUTH", "Bearer usage-t0ken")
        .stderr(stderr);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.spawn().expect("spawn wasm-sandbox serve")
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Seen = Arc<Mutex<Vec<(String, Option<String>, String)>>>;

/// A loopback endpoint recording (Idempotency-Key, Authorization, body) of every POST.
async fn endpoint() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/v1/usage",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let s = s.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                s.lock().unwrap().push((
                    h("idempotency-key").unwrap_or_default(),
                    h("authorization"),
                    body,
                ));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1/usage"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_teardown_then_restart_sends_the_record_exactly_once() {
    let fake = FakeControlPlane::start(FakeConfig::default())
        .await
        .expect("fake");
    let scenario = Scenario::from_json(
        &serde_json::json!({
            "name": "usage-kill",
            "steps": [
                {"tool_use": {"label": "hi", "name": "bash", "input": {"command": "echo hi"}}},
                {"idle": {"stop_reason": "end_turn"}},
                "terminate"
            ]
        })
        .to_string(),
    )
    .unwrap();
    let (work_id, session_id) = fake.enqueue_session(scenario);
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("work");
    let ledger = workdir.join("usage");

    // 1. A worker with the default [usage] (ledger only), killed as soon as the stop arrived.
    let mut first = serve(&fake, &workdir, None);
    wait_until("the stop", || {
        fake.work_state(&work_id) == Some(WorkState::Stopped)
    })
    .await;
    first.kill().expect("kill -9");
    let _ = first.wait();
    let records = wasm_sandbox_usage::read_all(&ledger).unwrap();
    assert_eq!(records.len(), 1, "the record is on disk");
    let record_id = records[0].record_id.clone();
    assert_eq!(records[0].session_id, session_id);
    assert_eq!(records[0].tool_calls.get("bash"), Some(&1));
    assert!(!ledger.join("sent.cursor").exists());

    // 2. Restarted with a sink: the record goes out once, with its key and the auth header.
    let (url, seen) = endpoint().await;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[usage]\nsink_url = \"{url}\"\nauth_header_env = \"USAGE_TEST_SINK_AUTH\"\n"),
    )
    .unwrap();
    let mut second = serve(&fake, &workdir, Some(&config));
    wait_until("the delivery", || !seen.lock().unwrap().is_empty()).await;
    // The stored cursor reaches the ledger's end before the kill, so the next start does not
    // re-send (a re-send would carry the same key, but this test asserts none happens).
    let (_, end) =
        wasm_sandbox_usage::read_from(&ledger, wasm_sandbox_usage::Position::default(), usize::MAX)
            .unwrap();
    wait_until("the cursor at the end", || {
        wasm_sandbox_usage::cursor::load(&ledger).is_ok_and(|c| c == end)
    })
    .await;
    second.kill().expect("kill -9");
    let _ = second.wait();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "sent once: {seen:?}");
        assert_eq!(seen[0].0, record_id);
        assert_eq!(seen[0].1.as_deref(), Some("Bearer usage-t0ken"));
        let body: wasm_sandbox_usage::UsageRecord = serde_json::from_str(&seen[0].2).unwrap();
        assert_eq!(body, records[0]);
    }

    // 3. Restarted again: nothing is sent twice. Positively wait until the third worker's sink
    // runs (its log line) and has read the ledger at least twice (once at start, once more a
    // poll interval, 5 s, later) before asserting nothing was sent.
    let mut third = serve_with(&fake, &workdir, Some(&config), Stdio::piped());
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let started = started.clone();
        let stderr = third.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("usage sink started") {
                    started.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
    }
    wait_until("the third worker's sink", || {
        started.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    third.kill().expect("kill -9");
    let _ = third.wait();
    assert_eq!(seen.lock().unwrap().len(), 1, "never sent again");
}
