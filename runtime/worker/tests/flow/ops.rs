//! The ops endpoints beside a running worker, and credentials kept out of logs and metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wasm_sandbox_fake_control_plane::{Credential, Endpoint, FailureSpec, WorkState};
use wasm_sandbox_worker::metrics::Metrics;
use wasm_sandbox_worker::sandbox::testing::ScriptedSandbox;
use wasm_sandbox_worker::worker::{Shutdown, Worker};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints() {
    use wasm_sandbox_worker::ops::{OpsState, spawn};
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = ScriptedSandbox::new();
    let metrics = Arc::new(Metrics::new());
    let mut cfg = config(&fake, dir.path());
    cfg.exit_after_items = None;
    // Two items queued before anything polls: the ops server's first `work.stats` (made at
    // start-up, then cached) reports them.
    fake.enqueue_raw_work(Some("healthcheck"), "hc_1", false);
    fake.enqueue_raw_work(Some("healthcheck"), "hc_2", false);
    let expected = fake.stats();
    assert_eq!((expected.depth, expected.pending), (2, 0));
    assert!(expected.oldest_queued_at.is_some());
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
    let q: Value = get("/queue").await.json().await.unwrap();
    assert_eq!(
        q,
        json!({"depth": expected.depth, "pending": expected.pending,
               "oldest_queued_at": expected.oldest_queued_at,
               "workers_polling": expected.workers_polling})
    );
    let stats = fake.requests_to(Endpoint::Stats);
    assert_eq!(stats.len(), 1, "the cache asked upstream more than once");
    assert_eq!(stats[0].credential, Credential::EnvironmentKey);

    let shutdown = Shutdown::new();
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    // The worker takes both items (acks and force-stops them), then polls an empty queue.
    wait(&fake, "both items stopped and an empty poll", |st| {
        let stopped = st
            .work_ids()
            .iter()
            .all(|w| st.work_state(w) == Some(WorkState::Stopped));
        let answered_polls = st
            .requests()
            .iter()
            .filter(|r| r.endpoint == Some(Endpoint::Poll) && r.status == Some(200))
            .count();
        stopped && answered_polls >= 3
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
    // The counters move once the worker has read the poll's answer: bounded retry.
    let mut m = String::new();
    for _ in 0..200 {
        m = get("/metrics").await.text().await.unwrap();
        if m.contains("wasm_sandbox_polls_total{result=\"empty\"}") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        m.contains("wasm_sandbox_polls_total{result=\"empty\"}"),
        "{m}"
    );
    assert!(
        m.contains(r#"wasm_sandbox_claims_total{kind="other"} 2"#),
        "{m}"
    );
    assert!(m.contains("wasm_sandbox_sessions_active 0"), "{m}");
    assert!(!m.contains(&fake.environment_key()));
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
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("worker did not finish")
        .unwrap()
        .unwrap();
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

const ENV_KEY: &str = "sk-ant-oat01-ENVKEY-never-log-me";

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
    let minted = rt.block_on(async {
        let fake = fake_with_key(Some(ENV_KEY)).await;
        let dir = tempfile::tempdir().unwrap();
        let sandbox = ScriptedSandbox::new();
        let (work, sid) = enqueue_session(&fake);
        fake.inject_failure(FailureSpec::new(Endpoint::EventsSend, 500));
        fake.inject_failure(FailureSpec::new(Endpoint::Heartbeat, 503));
        let run = start(config(&fake, dir.path()), &sandbox);
        attached(&fake, &sid, 1).await;
        let a = tool_use(&fake, &sid, "bash", json!({"a": 1}), None);
        wait_result(&fake, &sid, &a).await;
        fake.inject_frame(&sid, "event: agent.tool_use\ndata: {bad\n\n");
        attached(&fake, &sid, 2).await;
        end_turn(&fake, &sid);
        let metrics = Arc::clone(&run.metrics);
        finish(run).await.unwrap();
        let minted = fake.minted_secrets(&work);
        assert_eq!(minted.len(), 1);
        let m = metrics.encode();
        assert!(!m.contains("ENVKEY") && !m.contains(&minted[0].sessions_token));
        // The worker really used them, so the checks below are not vacuous.
        assert!(
            fake.requests_to(Endpoint::EventsSend)
                .iter()
                .all(|r| matches!(r.credential, Credential::SessionsToken { .. }))
        );
        assert_eq!(fake.requests_to(Endpoint::Heartbeat)[0].status, Some(503));
        minted
    });
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("tool result send failed"),
        "log capture did not work:\n{logs}"
    );
    let token = &minted[0].sessions_token;
    let token_tail = token.trim_start_matches("sk-ant-req-fake-");
    for needle in [ENV_KEY, "ENVKEY", token, token_tail, &minted[0].secret] {
        assert!(!logs.contains(needle), "log leaks {needle}");
    }
}
