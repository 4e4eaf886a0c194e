//! `wasm-sandbox serve` as a real process against the fake control plane:
//! SIGTERM drains sessions in flight; `kill -9` mid-session, then a second
//! worker process reclaims the item and finishes it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wasm_sandbox_fake_control_plane::{
    Endpoint, FakeConfig, FakeControlPlane, Handle, Scenario, WorkState,
};

fn serve(fake: &Handle, workdir: &std::path::Path, concurrency: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
        .args([
            "serve",
            "--base-url",
            fake.url(),
            "--environment-id",
            &fake.environment_id(),
        ])
        .args([
            "--concurrency",
            &concurrency.to_string(),
            "--max-idle",
            "300ms",
            "--log-format",
            "json",
        ])
        .arg("--workdir")
        .arg(workdir)
        .env("ANTHROPIC_ENVIRONMENT_KEY", fake.environment_key())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasm-sandbox serve")
}

fn slow_bash(name: &str, secs: f32) -> Scenario {
    let json = serde_json::json!({
        "name": name,
        "steps": [
            {"tool_use": {"label": "slow", "name": "bash",
                          "input": {"command": format!("sleep {secs}; echo done-{name}")}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    });
    Scenario::from_json(&json.to_string()).expect("scenario")
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(fake: &Handle, e: Endpoint) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.endpoint == Some(e))
        .count()
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "serve did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_three_sessions_in_flight() {
    let fake = FakeControlPlane::start(FakeConfig::default())
        .await
        .expect("fake");
    let ids: Vec<(String, String)> = (0..3)
        .map(|i| fake.enqueue_session(slow_bash(&format!("s{i}"), 1.5)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve(&fake, dir.path(), 3);
    // All three sessions attached their event streams: the bash calls are running.
    wait_until("three streams", || {
        count(&fake, Endpoint::EventsStream) >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child))
        .await
        .unwrap();
    assert!(status.success(), "drain exits cleanly: {status:?}");
    for (work_id, session_id) in &ids {
        let results: Vec<_> = fake
            .tool_results(session_id)
            .into_iter()
            .filter(|r| r.accepted)
            .collect();
        assert_eq!(
            results.len(),
            1,
            "{session_id}: the running call finished and was posted"
        );
        assert!(
            results[0].text().starts_with("done-s"),
            "{}",
            results[0].text()
        );
        assert_eq!(
            fake.work_state(work_id),
            Some(WorkState::Stopped),
            "{work_id} stopped"
        );
    }
    assert!(
        std::fs::read_dir(dir.path().join("sessions"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "session dirs removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_session_then_another_worker_reclaims() {
    let fake = FakeControlPlane::start(FakeConfig {
        lease_ttl_seconds: 2,
        ..FakeConfig::default()
    })
    .await
    .expect("fake");
    let (work_id, session_id) = fake.enqueue_session(slow_bash("k", 3.0));
    let dir = tempfile::tempdir().unwrap();
    let mut first = serve(&fake, dir.path(), 1);
    wait_until("the stream", || count(&fake, Endpoint::EventsStream) >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill().expect("kill -9");
    let _ = first.wait();
    assert!(
        fake.tool_results(&session_id).is_empty(),
        "nothing was posted by the killed worker"
    );
    // The lease runs out (no more heartbeats); a new worker process reclaims.
    let mut second = serve(&fake, dir.path(), 1);
    wait_until("the reclaimed session to finish", || {
        fake.work_state(&work_id) == Some(WorkState::Stopped)
    })
    .await;
    let results: Vec<_> = fake
        .tool_results(&session_id)
        .into_iter()
        .filter(|r| r.accepted)
        .collect();
    assert_eq!(results.len(), 1, "exactly one result: {results:?}");
    assert_eq!(results[0].text(), "done-k");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut second))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
