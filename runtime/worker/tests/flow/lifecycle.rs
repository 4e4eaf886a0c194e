//! The item's life: lease lost or stop requested mid-call, drain and forced shutdown,
//! `max_session`, items that are not sessions, poll errors.

use std::time::Duration;

use serde_json::json;
use wasm_sandbox_fake_control_plane::{Credential, Endpoint, FailureSpec, Scenario};
use wasm_sandbox_worker::sandbox::testing::ScriptedSandbox;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_lost_mid_call_sends_nothing_more() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (work, sid) = enqueue_session(&fake);
    let run = start(config(&fake, dir.path()), &sandbox);
    attached(&fake, &sid, 1).await;

    let a = tool_use(&fake, &sid, "bash", json!({"hold": true}), None);
    wait_held(&sandbox, 1).await;
    // Another worker took the lease: the next beat gets 412.
    fake.steal_lease(&work).unwrap();
    finish(run).await.unwrap();

    assert_eq!(
        sandbox.abandoned(),
        std::slice::from_ref(&a),
        "the running call was not aborted"
    );
    assert_eq!(fake.heartbeats().last().unwrap().status, 412);
    assert_eq!(posts_for(&fake, &a), 0, "posted after the lease was lost");
    assert!(
        fake.requests_to(Endpoint::Stop).is_empty(),
        "stopped an item it no longer holds"
    );
    assert_eq!(sandbox.closed(), [sid]);
    assert!(no_session_dir(dir.path(), &work), "session dir left behind");
}

/// What the heartbeat reports after the call started.
#[derive(Clone, Copy, Debug)]
enum Beat {
    /// `stopping` (ops asked for a graceful stop).
    Stopping,
    /// `stopped` (ops force-stopped the item; the worker's own stop then meets 409).
    Stopped,
    /// `active` with `lease_extended: false`.
    NotExtended,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_requested_mid_call_force_stops() {
    for beat in [Beat::Stopping, Beat::Stopped, Beat::NotExtended] {
        let fake = fake().await;
        let dir = tempfile::tempdir().unwrap();
        let sandbox = ScriptedSandbox::new();
        let (work, sid) = enqueue_session(&fake);
        let run = start(config(&fake, dir.path()), &sandbox);
        attached(&fake, &sid, 1).await;
        let a = tool_use(&fake, &sid, "bash", json!({"hold": true}), None);
        wait_held(&sandbox, 1).await;
        match beat {
            Beat::Stopping => fake.request_stop(&work, false).unwrap(),
            Beat::Stopped => fake.request_stop(&work, true).unwrap(),
            Beat::NotExtended => fake.next_heartbeat_not_extended(&work).unwrap(),
        }
        finish(run).await.unwrap();
        assert_abandoned_and_force_stopped(&fake, &sandbox, &work, &a, &format!("{beat:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_running_calls_of_three_sessions() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let items: Vec<(String, String)> = (0..3).map(|_| enqueue_session(&fake)).collect();
    let mut cfg = config(&fake, dir.path());
    cfg.concurrency = 3;
    cfg.exit_after_items = None;
    let run = start(cfg, &sandbox);
    let mut held = Vec::new();
    for (_, sid) in &items {
        attached(&fake, sid, 1).await;
        held.push(tool_use(&fake, sid, "bash", json!({"hold": true}), None));
    }
    wait_held(&sandbox, 3).await;
    run.shutdown.drain();
    // Calls that arrive during the drain are not started.
    let late = tool_use(&fake, &items[0].1, "bash", json!({}), None);
    sandbox.release(3);
    finish(run).await.unwrap();

    // Each session finished its running call and posted its result, then stopped its item.
    for id in &held {
        assert_eq!(posts_for(&fake, id), 1, "{id}");
    }
    assert_eq!(posts_for(&fake, &late), 0);
    assert_eq!(sandbox.calls().len(), 3);
    assert!(sandbox.abandoned().is_empty());
    for (work, sid) in &items {
        let stops = requests_for(&fake, Endpoint::Stop, work);
        assert_eq!(stops.len(), 1, "{work}");
        let posts = requests_for(&fake, Endpoint::EventsSend, sid);
        assert_eq!(posts.len(), 1, "{sid}");
        assert!(
            posts[0].seq < stops[0].seq,
            "{work}: stopped before its result"
        );
    }
    let mut closed = sandbox.closed();
    closed.sort();
    let mut sids: Vec<String> = items.iter().map(|(_, s)| s.clone()).collect();
    sids.sort();
    assert_eq!(closed, sids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_shutdown_aborts_running_calls() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (work, sid) = enqueue_session(&fake);
    let run = start(config(&fake, dir.path()), &sandbox);
    attached(&fake, &sid, 1).await;
    let a = tool_use(&fake, &sid, "bash", json!({"hold": true}), None);
    wait_held(&sandbox, 1).await;
    run.shutdown.drain();
    run.shutdown.force();
    finish(run).await.unwrap();
    assert_abandoned_and_force_stopped(&fake, &sandbox, &work, &a, "");
}

/// `[runtime.shape] max_session`: the cap alone (no shutdown, no stop request, the lease kept)
/// ends the run of a session whose call never finishes; the call is abandoned and the item
/// stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_session_ends_the_run_and_stops_the_item() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let (work, sid) = enqueue_session(&fake);
    let mut cfg = config(&fake, dir.path());
    cfg.max_session = Some(Duration::from_millis(1500));
    let started = tokio::time::Instant::now();
    let run = start(cfg, &sandbox);
    attached(&fake, &sid, 1).await;
    let a = tool_use(&fake, &sid, "bash", json!({"hold": true}), None);
    wait_held(&sandbox, 1).await;
    // exit_after_items = 1: the worker returns once the capped item is done.
    finish(run).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_abandoned_and_force_stopped(&fake, &sandbox, &work, &a, "");
    // One heartbeat loop for the whole item: the cap never restarts it from NO_HEARTBEAT
    // (which a server answers with 412).
    assert!(
        fake.heartbeats()
            .iter()
            .skip(1)
            .all(|h| h.expected_last_heartbeat.as_deref() != Some("NO_HEARTBEAT")),
        "{:?}",
        fake.heartbeats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_session_and_terminated_items_are_force_stopped() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let hc = fake.enqueue_raw_work(Some("healthcheck"), "hc_1", false);
    let odd = fake.enqueue_raw_work(None, "x", false);
    let terminated =
        Scenario::from_json(r#"{"name": "terminated", "session": {"status": "terminated"}}"#)
            .unwrap();
    let (work_t, sid_t) = fake.enqueue_session(terminated);
    let mut cfg = config(&fake, dir.path());
    cfg.exit_after_items = Some(3);
    finish(start(cfg, &sandbox)).await.unwrap();

    for w in [&hc, &odd, &work_t] {
        assert_eq!(requests_for(&fake, Endpoint::Ack, w).len(), 1, "{w}");
        let stops = requests_for(&fake, Endpoint::Stop, w);
        assert_eq!(stops.len(), 1, "{w}");
        assert_eq!(stops[0].body, Some(json!({"force": true})));
    }
    // No heartbeat for non-session items.
    assert!(requests_for(&fake, Endpoint::Heartbeat, &hc).is_empty());
    // The stream may be opened beside the ack (issue 16); nothing is posted or run.
    assert!(requests_for(&fake, Endpoint::EventsSend, &sid_t).is_empty());
    // Without a secret the environment key is the item credential.
    assert_eq!(
        requests_for(&fake, Endpoint::Stop, &hc)[0].credential,
        Credential::EnvironmentKey
    );
    assert!(sandbox.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_errors_back_off_and_fatal_ends_the_worker() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    for status in [500, 502, 429, 401] {
        fake.inject_failure(FailureSpec::new(Endpoint::Poll, status));
    }
    let err = finish(start(config(&fake, dir.path()), &sandbox))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");
    let polls = fake.requests_to(Endpoint::Poll);
    assert_eq!(polls.len(), 4);
    let statuses: Vec<Option<u16>> = polls.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(500), Some(502), Some(429), Some(401)]);
    assert!(fake.requests_to(Endpoint::Ack).is_empty());
}
