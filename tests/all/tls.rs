//! The worker's HTTP client against the fake control plane over TLS (issue 16, item 2).
//!
//! The fake serves HTTPS with a CA it makes at start-up and records, for every request, the
//! HTTP version and the connection that carried it, and every connection with its ALPN
//! protocol. These tests assert that:
//! * over TLS the worker speaks HTTP/2 and one connection carries the polls and every request
//!   of a claimed session (no new handshake on the path after a claim);
//! * with a server that offers only HTTP/1.1 the session still completes, over HTTP/1.1;
//! * a server certificate that does not chain to a trusted root is refused before any request
//!   is sent (the fake's CA is trusted only when given as an extra root);
//! * `prewarm` leaves the pool holding the connections a claim needs on HTTP/1.1, and opens
//!   no second connection on HTTP/2.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wasm_sandbox_fake_control_plane::{
    FakeConfig, FakeControlPlane, Handle, Scenario, TlsOptions, WorkState,
};
use wasm_sandbox_worker::client::{Api, ClientConfig, parse_root_certs};
use wasm_sandbox_worker::metrics::Metrics;
use wasm_sandbox_worker::sandbox::testing::ScriptedSandbox;
use wasm_sandbox_worker::secret::Secret;
use wasm_sandbox_worker::worker::{Shutdown, Worker, WorkerConfig};

const WAIT: Duration = Duration::from_secs(60);

async fn tls_fake(alpn_http1_only: bool) -> Handle {
    FakeControlPlane::start(FakeConfig {
        lease_ttl_seconds: 3,
        tls: Some(TlsOptions { alpn_http1_only }),
        ..FakeConfig::default()
    })
    .await
    .expect("fake control plane")
}

/// Client settings that trust the fake's CA (on top of the bundled roots).
fn trusting(fake: &Handle) -> ClientConfig {
    let pem = fake.ca_cert_pem().expect("the TLS fake has a CA");
    ClientConfig {
        extra_root_certs: parse_root_certs(pem.as_bytes()).expect("the fake's CA parses"),
        ..ClientConfig::default()
    }
}

fn config(fake: &Handle, dir: &Path) -> WorkerConfig {
    let mut c = WorkerConfig::new(
        fake.url(),
        fake.environment_id(),
        Secret::new(fake.environment_key()),
    );
    c.worker_id = "w-tls".into();
    c.workdir = dir.to_owned();
    c.client = trusting(fake);
    c.poll.empty_sleep_min = Duration::from_millis(20);
    c.poll.empty_sleep_max = Duration::from_millis(40);
    c.poll.backoff_unit = Duration::from_millis(20);
    c.runner.max_idle = Some(Duration::from_millis(500));
    c.heartbeat.max_interval = Duration::from_millis(500);
    c.heartbeat.min_interval = Duration::from_millis(100);
    c.exit_after_items = Some(1);
    c
}

fn two_calls() -> Scenario {
    Scenario::from_json(
        &json!({
            "name": "tls-two-calls",
            "prompt": "Two calls.",
            "steps": [
                {"tool_use": {"label": "one", "name": "bash", "input": {"command": "echo one"},
                              "expect": {"is_error": false, "contains": ["echo one"]}}},
                {"tool_use": {"label": "two", "name": "read", "input": {"file_path": "/x"},
                              "expect": {"is_error": false}}},
                {"idle": {"stop_reason": "end_turn"}},
                "terminate"
            ]
        })
        .to_string(),
    )
    .expect("scenario")
}

/// Serves one session with the scripted sandbox; returns `(work_id, session_id)`.
async fn serve_one_session(fake: &Handle) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (work_id, session_id) = fake.enqueue_session(two_calls());
    let worker = Worker::new(
        config(fake, dir.path()),
        ScriptedSandbox::new(),
        Arc::new(Metrics::new()),
    )
    .expect("worker");
    tokio::time::timeout(WAIT, worker.run(Shutdown::new()))
        .await
        .expect("worker did not finish")
        .expect("worker failed");
    let report = fake.scenario_report(&session_id);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));
    (work_id, session_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_speaks_http2_over_tls_on_one_connection() {
    let fake = tls_fake(false).await;
    assert!(fake.url().starts_with("https://"), "{}", fake.url());
    let (work_id, _) = serve_one_session(&fake).await;

    let reqs = fake.requests();
    assert!(reqs.iter().any(|r| r.path.ends_with("/ack")));
    for r in &reqs {
        assert_eq!(r.http_version, "HTTP/2.0", "{} {}", r.method, r.path);
    }
    // One TLS connection, negotiated as h2, carried the polls and every request of the
    // session (ack, session, stream, history, results, heartbeats, stop): nothing on the
    // path after the claim waited for a TCP or TLS handshake.
    let conns = fake.connections();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert!(conns[0].tls && !conns[0].handshake_failed);
    assert_eq!(conns[0].alpn.as_deref(), Some("h2"));
    assert!(reqs.iter().all(|r| r.connection == Some(conns[0].id)));
    let mine = reqs
        .iter()
        .filter(|r| r.path.contains(&format!("/work/{work_id}/")))
        .count();
    assert!(mine >= 3, "ack, heartbeat(s) and stop went over it: {mine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_falls_back_to_http1_over_tls() {
    let fake = tls_fake(true).await;
    serve_one_session(&fake).await;
    let reqs = fake.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r.http_version, "HTTP/1.1", "{} {}", r.method, r.path);
    }
    let conns = fake.connections();
    assert!(conns.iter().all(|c| c.alpn.as_deref() == Some("http/1.1")));
    // The open event stream holds one connection for the session's life, so HTTP/1.1 needs
    // more than one; idle ones are reused rather than opened per request.
    assert!(conns.len() >= 2, "{conns:?}");
    assert!(
        conns.len() < reqs.len(),
        "{} connections for {} requests",
        conns.len(),
        reqs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_certificate_is_refused() {
    let fake = tls_fake(false).await;
    // The bundled roots only: the fake's self-signed CA is not among them.
    let api = Api::new(fake.url(), ClientConfig::default()).unwrap();
    let env = api.environment(&fake.environment_id(), Secret::new(fake.environment_key()));
    let err = env.stats_once().await.expect_err("an unknown CA must fail");
    assert!(err.status().is_none(), "no HTTP answer expected: {err}");
    assert!(
        fake.requests().is_empty(),
        "no request (and so no credential) may reach a server that failed verification"
    );
    // (The fake notes the failed handshake when its side of it ends, just after the client's.)
    fake.wait_for(WAIT, |s| {
        !s.connections().is_empty() && s.connections().iter().all(|c| c.handshake_failed)
    })
    .await
    .unwrap_or_else(|_| panic!("handshakes not all failed: {:?}", fake.connections()));

    // The same client with the fake's CA as an extra root gets through.
    let api = Api::new(fake.url(), trusting(&fake)).unwrap();
    let env = api.environment(&fake.environment_id(), Secret::new(fake.environment_key()));
    env.stats_once().await.expect("trusted with the extra root");
}

#[test]
fn extra_roots_must_be_certificates() {
    assert!(parse_root_certs(b"").is_err());
    assert!(parse_root_certs(b"not a certificate").is_err());
    let e = parse_root_certs(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        .expect_err("a block that is not DER must fail");
    assert!(!e.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewarm_fills_the_http1_pool_and_reuses_it() {
    let fake = tls_fake(true).await;
    let api = Api::new(fake.url(), trusting(&fake)).unwrap();
    let env = api.environment(&fake.environment_id(), Secret::new(fake.environment_key()));
    // Each answer takes a while, as over a real distance: the five pre-warm requests are all
    // in flight at once (on bare loopback an early answer could free its connection for a
    // later request, which made the count timing-dependent).
    fake.delay(
        wasm_sandbox_fake_control_plane::Endpoint::Stats,
        Duration::from_millis(150),
    );
    let v = env.prewarm(5).await.unwrap();
    assert_eq!(format!("{v:?}"), "HTTP/1.1");
    // Five connections (six when the probe's connection had not yet gone back to the pool,
    // which hyper does asynchronously); never the single connection a client without
    // pre-warming would hold.
    let warmed = fake.connections().len();
    assert!((5..=6).contains(&warmed), "{:?}", fake.connections());
    // Once the pool has settled (pre-warming runs at start-up, long before a claim), as many
    // concurrent requests as there are pooled connections open no new one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..warmed.min(5) {
        let env = env.clone();
        calls.spawn(async move { env.stats_once().await });
    }
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(fake.connections().len(), warmed, "{:?}", fake.connections());

    let fake = tls_fake(false).await;
    let api = Api::new(fake.url(), trusting(&fake)).unwrap();
    let env = api.environment(&fake.environment_id(), Secret::new(fake.environment_key()));
    let v = env.prewarm(5).await.unwrap();
    assert_eq!(format!("{v:?}"), "HTTP/2.0");
    assert_eq!(fake.connections().len(), 1, "HTTP/2 needs one connection");
    assert_eq!(fake.requests().len(), 1, "and one request to learn that");
}
