//! The HTTP sink against a loopback endpoint that counts `Idempotency-Key`s: down then up,
//! restarts, refused records, the auth header.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode};
use wasm_sandbox_usage::{Ledger, SinkConfig, UsageRecord, cursor, spawn_sink};

mod common;
use common::record;

/// What the endpoint saw: every request as (key, status answered, authorization header).
#[derive(Default)]
struct Endpoint {
    requests: Mutex<Vec<(String, u16, Option<String>)>>,
    /// Answer 503 while false.
    up: AtomicBool,
    /// Answer this status to the key `refuse` (0 = none).
    refuse_status: AtomicU16,
    refuse: Mutex<String>,
}

impl Endpoint {
    /// Keys answered 2xx, with how many times each.
    fn accepted(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (k, s, _) in self.requests.lock().unwrap().iter() {
            if (200..300).contains(s) {
                *m.entry(k.clone()).or_default() += 1;
            }
        }
        m
    }
    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

async fn serve(ep: Arc<Endpoint>) -> String {
    let app = axum::Router::new().route(
        "/usage",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let ep = ep.clone();
            async move {
                let key = header(&headers, "idempotency-key").unwrap_or_default();
                let auth = header(&headers, "authorization");
                // The body is the record, with the key as its id.
                let parsed: Result<UsageRecord, _> = serde_json::from_str(&body);
                let status = if !ep.up.load(Ordering::SeqCst) {
                    503
                } else if parsed.as_ref().ok().map(|r| r.record_id.as_str()) != Some(key.as_str()) {
                    500
                } else if *ep.refuse.lock().unwrap() == key {
                    ep.refuse_status.load(Ordering::SeqCst)
                } else {
                    200
                };
                ep.requests.lock().unwrap().push((key, status, auth));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    format!("http://{}/usage", listen(app).await)
}

/// Serves `app` on a loopback port; its address.
async fn listen(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The request's header `name`, when it is text.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn fast(url: &str) -> SinkConfig {
    let mut c = SinkConfig::new(url);
    c.initial_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(200);
    c.poll_interval = Duration::from_millis(50);
    c.timeout = Duration::from_secs(5);
    c
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn keys(ns: impl IntoIterator<Item = u32>) -> HashMap<String, usize> {
    ns.into_iter().map(|n| (record(n).record_id, 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_down_for_a_while_then_up_delivers_every_record_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usage");
    let ep = Arc::new(Endpoint::default());
    let url = serve(ep.clone()).await;
    let mut ledger = Ledger::open(&dir, 1 << 20).unwrap();
    for n in 1..=3 {
        ledger.append(&record(n)).unwrap();
    }
    let sink = spawn_sink(dir.clone(), fast(&url)).unwrap();
    // Down: the first record is tried again and again, nothing is accepted.
    wait_until("several failed attempts", || ep.count() >= 4).await;
    assert!(ep.accepted().is_empty());
    // Records appended while it is down queue up behind.
    for n in 4..=5 {
        ledger.append(&record(n)).unwrap();
        sink.wake();
    }
    ep.up.store(true, Ordering::SeqCst);
    wait_until("all five delivered", || ep.accepted().len() == 5).await;
    // A while longer: nothing is sent again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ep.accepted(), keys(1..=5));
    assert!(sink.stats().failures.load(Ordering::SeqCst) >= 3);
    assert_eq!(sink.stats().delivered.load(Ordering::SeqCst), 5);
    // In order: each key is first tried after every earlier one was accepted.
    let order: Vec<String> = ep
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s, _)| *s == 200)
        .map(|(k, _, _)| k.clone())
        .collect();
    let want: Vec<String> = (1..=5).map(|n| record(n).record_id).collect();
    assert_eq!(order, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_not_listening_yet_gets_every_record_once_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usage");
    // A port nobody listens on (bound, then closed): connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut ledger = Ledger::open(&dir, 1 << 20).unwrap();
    ledger.append(&record(1)).unwrap();
    ledger.append(&record(2)).unwrap();
    let sink = spawn_sink(dir.clone(), fast(&format!("http://127.0.0.1:{port}/usage"))).unwrap();
    wait_until("failed connects", || {
        sink.stats().failures.load(Ordering::SeqCst) >= 3
    })
    .await;
    // Now the endpoint comes up on that port.
    let ep = Arc::new(Endpoint::default());
    ep.up.store(true, Ordering::SeqCst);
    let app_ep = ep.clone();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let app = axum::Router::new().route(
        "/usage",
        axum::routing::post(move |headers: HeaderMap| {
            let ep = app_ep.clone();
            async move {
                let key = header(&headers, "idempotency-key").unwrap_or_default();
                ep.requests.lock().unwrap().push((key, 200, None));
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    wait_until("both delivered", || ep.accepted().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ep.accepted(), keys(1..=2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_sends_what_was_not_sent_and_never_what_was() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usage");
    let ep = Arc::new(Endpoint::default());
    ep.up.store(true, Ordering::SeqCst);
    let url = serve(ep.clone()).await;
    let mut ledger = Ledger::open(&dir, 1 << 20).unwrap();
    for n in 1..=3 {
        ledger.append(&record(n)).unwrap();
    }
    let sink = spawn_sink(dir.clone(), fast(&url)).unwrap();
    wait_until("three delivered", || ep.accepted().len() == 3).await;
    // The sink publishes `sent` only after the cursor is on disk: wait for it to reach the
    // end before the sink is dropped, so the restart below starts from a stored cursor.
    let end = ledger.end();
    wait_until("the cursor at the end", || sink.sent() == end).await;
    assert_eq!(sink.stats().delivered.load(Ordering::SeqCst), 3);
    drop(sink);
    assert_eq!(
        cursor::load(&dir).unwrap(),
        end,
        "the stored cursor is past all three"
    );
    // Written while no sink runs (the worker died, say).
    ledger.append(&record(4)).unwrap();
    ledger.append(&record(5)).unwrap();
    drop(ledger);
    let _sink = spawn_sink(dir.clone(), fast(&url)).unwrap();
    wait_until("the two new ones delivered", || ep.accepted().len() == 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ep.accepted(), keys(1..=5), "each key accepted exactly once");
    assert_eq!(ep.count(), 5, "no request beyond one per record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_is_skipped_and_the_auth_header_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usage");
    let ep = Arc::new(Endpoint::default());
    ep.up.store(true, Ordering::SeqCst);
    *ep.refuse.lock().unwrap() = record(2).record_id;
    ep.refuse_status.store(422, Ordering::SeqCst);
    let url = serve(ep.clone()).await;
    let mut ledger = Ledger::open(&dir, 1 << 20).unwrap();
    for n in 1..=3 {
        ledger.append(&record(n)).unwrap();
    }
    let mut cfg = fast(&url);
    cfg.auth_header = Some(("authorization".into(), "Bearer t0ken".into()));
    let sink = spawn_sink(dir.clone(), cfg).unwrap();
    wait_until("1 and 3 delivered", || ep.accepted().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ep.accepted(), keys([1, 3]));
    assert_eq!(
        ep.count(),
        3,
        "the refused record was sent once, not retried"
    );
    assert_eq!(sink.stats().rejected.load(Ordering::SeqCst), 1);
    assert!(
        ep.requests
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, a)| a.as_deref() == Some("Bearer t0ken"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_delivery_and_gives_up_at_its_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usage");
    let ep = Arc::new(Endpoint::default());
    let url = serve(ep.clone()).await;
    let mut ledger = Ledger::open(&dir, 1 << 20).unwrap();
    ledger.append(&record(1)).unwrap();
    let sink = spawn_sink(dir.clone(), fast(&url)).unwrap();
    // Down: not flushed within the bound.
    let started = Instant::now();
    assert!(!sink.flush(ledger.end(), Duration::from_millis(300)).await);
    assert!(started.elapsed() >= Duration::from_millis(300));
    ep.up.store(true, Ordering::SeqCst);
    ledger.append(&record(2)).unwrap();
    assert!(sink.flush(ledger.end(), Duration::from_secs(20)).await);
    assert_eq!(ep.accepted(), keys(1..=2));
    assert_eq!(sink.sent(), ledger.end());
    assert_eq!(cursor::load(&dir).unwrap(), ledger.end());
}

/// A `302` from the endpoint is not followed (it would turn the `POST` into a body-less `GET`
/// whose 2xx counted as a delivery, and could carry the auth header elsewhere): it is a
/// failure, retried, and the record is delivered once, by `POST` with its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_the_record_is_still_posted_once() {
    #[derive(Default)]
    struct Seen {
        /// (method, body) of each request to `/usage`.
        usage: Mutex<Vec<(Method, String)>>,
        /// Requests that reached the redirect's target.
        target: Mutex<Vec<(Method, Option<String>)>>,
    }
    let seen = Arc::new(Seen::default());
    let (s1, s2) = (seen.clone(), seen.clone());
    let app = axum::Router::new()
        .route(
            "/usage",
            axum::routing::any(move |method: Method, body: String| {
                let seen = s1.clone();
                async move {
                    let mut usage = seen.usage.lock().unwrap();
                    usage.push((method, body));
                    if usage.len() == 1 {
                        (StatusCode::FOUND, [("location", "/target")]).into_response()
                    } else {
                        StatusCode::OK.into_response()
                    }
                }
            }),
        )
        .route(
            "/target",
            axum::routing::any(move |method: Method, headers: HeaderMap| {
                let seen = s2.clone();
                async move {
                    seen.target
                        .lock()
                        .unwrap()
                        .push((method, header(&headers, "authorization")));
                    StatusCode::OK
                }
            }),
        );
    use axum::response::IntoResponse;
    let addr = listen(app).await;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usage");
    let mut ledger = Ledger::open(&dir, 1 << 20).unwrap();
    ledger.append(&record(1)).unwrap();
    let mut cfg = fast(&format!("http://{addr}/usage"));
    cfg.auth_header = Some(("authorization".into(), "Bearer t0ken".into()));
    let sink = spawn_sink(dir.clone(), cfg).unwrap();
    let end = ledger.end();
    wait_until("the record delivered", || sink.sent() == end).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let usage = seen.usage.lock().unwrap().clone();
    assert_eq!(
        usage.len(),
        2,
        "one redirected attempt, one delivery: {usage:?}"
    );
    let body = serde_json::to_string(&record(1)).unwrap();
    for (method, sent) in &usage {
        assert_eq!(*method, Method::POST);
        assert_eq!(*sent, body, "every attempt carries the record");
    }
    assert!(
        seen.target.lock().unwrap().is_empty(),
        "the redirect was followed: {:?}",
        seen.target.lock().unwrap()
    );
    assert_eq!(sink.stats().delivered.load(Ordering::SeqCst), 1);
    assert!(sink.stats().failures.load(Ordering::SeqCst) >= 1);
}

/// Records spread over several rotated segments are all delivered, once each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_crosses_ledger_rotations() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usage");
    let ep = Arc::new(Endpoint::default());
    ep.up.store(true, Ordering::SeqCst);
    let url = serve(ep.clone()).await;
    // A record is a few hundred bytes: about two per 1 KiB segment.
    let mut ledger = Ledger::open(&dir, 1024).unwrap();
    for n in 1..=4 {
        ledger.append(&record(n)).unwrap();
    }
    let sink = spawn_sink(dir.clone(), fast(&url)).unwrap();
    // More while the sink runs, across further rotations.
    for n in 5..=10 {
        ledger.append(&record(n)).unwrap();
        sink.wake();
    }
    let segments = wasm_sandbox_usage::ledger::segments(&dir).unwrap().len();
    assert!(segments >= 3, "only {segments} segments");
    let end = ledger.end();
    wait_until("every record delivered", || sink.sent() == end).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ep.accepted(), keys(1..=10));
    assert_eq!(ep.count(), 10, "no request beyond one per record");
    let order: Vec<String> = ep
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.0.clone())
        .collect();
    let want: Vec<String> = (1..=10).map(|n| record(n).record_id).collect();
    assert_eq!(order, want, "in ledger order");
    assert_eq!(cursor::load(&dir).unwrap(), end);
}
