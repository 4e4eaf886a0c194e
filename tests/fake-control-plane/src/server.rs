//! HTTP layer: routing, request recording, fault injection, header and credential checks,
//! the long poll and the SSE event stream.
//!
//! Every request is handled in this order, so tests can reason about what a fault hides:
//! 1. record it (method, path, query, headers, JSON body, credential class);
//! 2. apply an armed delay for its endpoint, then an armed failure (answered before any
//!    check, like an overloaded front end; one armed with `after_serving` is answered after
//!    steps 3 to 7 ran, like a response lost on its way back);
//! 3. require `anthropic-version` (400 without it, any value accepted);
//! 4. require a known credential (`Authorization: Bearer …` or `x-api-key`): 401 otherwise;
//! 5. require the route's beta header (`managed-agents-2026-04-01` on environment and session
//!    routes, it or `agent-memory-2026-07-22` on memory routes, none on skills): 404 otherwise,
//!    as the real beta routes answer;
//! 6. apply the auth matrix of protocol.md §15.1 (403 for a known credential used where it is
//!    not accepted; memory routes refuse the environment key);
//! 7. serve.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State as AxState};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::Shared;
use crate::endpoint::{self, BetaRequirement, Endpoint, Route, parse_query};
use crate::record::{Credential, FailureSpec, RecordedRequest, StreamCut, StreamFault};
use crate::state::{ApiError, Ctx, Reply, StreamMsg};
use crate::wire::{AGENT_MEMORY_BETA, ErrorEnvelope, ErrorObject, MANAGED_AGENTS_BETA};

/// Largest request body accepted.
const MAX_BODY: usize = 32 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_owned())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

fn credential_token(headers: &HeaderMap) -> Option<String> {
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .unwrap_or(auth);
        return Some(token.trim().to_owned());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

fn request_id(seq: u64) -> String {
    format!("req_fake{seq:012}")
}

pub(crate) fn error_response(e: ApiError, seq: u64) -> Response {
    let body = ErrorEnvelope {
        kind: "error".into(),
        error: ErrorObject {
            kind: e.kind.into(),
            message: e.message,
            details: e.details,
        },
        request_id: Some(request_id(seq)),
    };
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(body)).into_response();
    for (k, v) in e.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

fn failure_response(f: &FailureSpec, seq: u64) -> Response {
    let mut e = ApiError::for_status(f.status);
    if let Some(code) = &f.error_code {
        e = e.code(code);
    }
    if let Some(d) = f.retry_after {
        e.headers
            .push(("retry-after-ms", d.as_millis().to_string()));
        e.headers
            .push(("retry-after", d.as_secs().max(1).to_string()));
    }
    if let Some(yes) = f.should_retry {
        e.headers.push(("x-should-retry", yes.to_string()));
    }
    error_response(e, seq)
}

fn reply_response(r: Result<Reply, ApiError>, seq: u64) -> Response {
    match r {
        Ok(Reply::Json(v)) => (StatusCode::OK, axum::Json(v)).into_response(),
        Ok(Reply::NoContent) => StatusCode::NO_CONTENT.into_response(),
        Ok(Reply::Bytes { content_type, body }) => {
            let mut resp = Response::new(Body::from(body));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            resp
        }
        Err(e) => error_response(e, seq),
    }
}

async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if shared.config.admin_api && (path == "/_fake" || path.starts_with("/_fake/")) {
        return crate::admin::handle(&shared, &parts, body).await;
    }
    let bytes = to_bytes(body, MAX_BODY).await.unwrap_or_default();
    let query = parse_query(parts.uri.query());
    let route = endpoint::parse(&parts.method, &path);
    let token = credential_token(&parts.headers);
    let now = shared.now();
    let (seq, cred) = {
        let mut s = shared.lock();
        let cred = s.identify(token.as_deref());
        let seq = s.requests.len() as u64 + 1;
        s.requests.push(RecordedRequest {
            seq,
            at: now,
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            endpoint: route.as_ref().map(|r| r.endpoint),
            headers: header_map(&parts.headers),
            credential: cred.clone(),
            body: serde_json::from_slice(&bytes).ok(),
            body_len: bytes.len(),
            status: None,
            responded_at: None,
            http_version: format!("{:?}", parts.version),
            connection: parts
                .extensions
                .get::<crate::transport::ConnectionId>()
                .map(|c| c.0),
        });
        (seq, cred)
    };
    shared.bump();
    let mut resp = match route {
        None => error_response(
            ApiError::not_found(format!("no route for {} {path}", parts.method))
                .code("route_not_found"),
            seq,
        ),
        Some(route) => serve(&shared, seq, &route, &parts, &query, &bytes, &cred).await,
    };
    let now = shared.now();
    shared.lock().set_status(seq, resp.status().as_u16(), now);
    shared.bump();
    if let Ok(v) = HeaderValue::from_str(&request_id(seq)) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

fn has_beta(headers: &HeaderMap, wanted: &[&str]) -> bool {
    headers.get_all("anthropic-beta").iter().any(|v| {
        v.to_str()
            .unwrap_or_default()
            .split(',')
            .any(|b| wanted.contains(&b.trim()))
    })
}

async fn serve(
    shared: &Arc<Shared>,
    seq: u64,
    route: &Route,
    parts: &Parts,
    query: &[(String, String)],
    body: &Bytes,
    cred: &Credential,
) -> Response {
    let endpoint = route.endpoint;
    let delay = shared.lock().take_delay(endpoint);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let failure = shared
        .lock()
        .take_failure(endpoint, parts.uri.path(), query);
    match failure {
        Some(f) if f.after_serving => {
            // Served for real, then the answer is "lost": the client sees only the failure.
            drop(serve_checked(shared, seq, route, parts, query, body, cred).await);
            failure_response(&f, seq)
        }
        Some(f) => failure_response(&f, seq),
        None => serve_checked(shared, seq, route, parts, query, body, cred).await,
    }
}

/// Steps 3 to 7 of the module docs: headers, credential, beta, auth matrix, then the route.
async fn serve_checked(
    shared: &Arc<Shared>,
    seq: u64,
    route: &Route,
    parts: &Parts,
    query: &[(String, String)],
    body: &Bytes,
    cred: &Credential,
) -> Response {
    let endpoint = route.endpoint;
    if shared.config.require_version_header && !parts.headers.contains_key("anthropic-version") {
        return error_response(
            ApiError::bad_request("anthropic-version: header is required"),
            seq,
        );
    }
    match cred {
        Credential::None => {
            return error_response(
                ApiError::unauthorized("missing credentials: send Authorization: Bearer <key>"),
                seq,
            );
        }
        Credential::Unknown => {
            return error_response(ApiError::unauthorized("invalid credentials"), seq);
        }
        _ => {}
    }
    let beta_ok = match endpoint.beta() {
        BetaRequirement::None => true,
        BetaRequirement::ManagedAgents => has_beta(&parts.headers, &[MANAGED_AGENTS_BETA]),
        BetaRequirement::Memory => {
            has_beta(&parts.headers, &[AGENT_MEMORY_BETA, MANAGED_AGENTS_BETA])
        }
    };
    if !beta_ok {
        return error_response(
            ApiError::not_found(format!(
                "{} requires the anthropic-beta header",
                parts.uri.path()
            ))
            .code("beta_header_required"),
            seq,
        );
    }
    if let Err(e) = shared.lock().authorize(route, cred) {
        return error_response(e, seq);
    }
    match endpoint {
        Endpoint::Poll => reply_response(poll(shared, parts, query).await, seq),
        Endpoint::EventsStream => match stream(shared, route) {
            Ok(resp) => resp,
            Err(e) => error_response(e, seq),
        },
        _ => {
            let now = shared.now();
            let ctx = Ctx {
                seq,
                route,
                query,
                body,
                credential: cred,
                now,
            };
            let result = {
                let mut s = shared.lock();
                s.sweep(now);
                s.dispatch(&ctx)
            };
            shared.bump();
            reply_response(result, seq)
        }
    }
}

fn query_param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `GET …/work/poll`: validates `block_ms` (1–999) and `reclaim_older_than_ms` (≥ 1), holds
/// the request up to `block_ms` for an item, answers `200 null` when there is none.
async fn poll(
    shared: &Arc<Shared>,
    parts: &Parts,
    query: &[(String, String)],
) -> Result<Reply, ApiError> {
    let block_ms = match query_param(query, "block_ms") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=999).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "block_ms must be an integer between 1 and 999, got {v:?}"
                )));
            }
        },
    };
    let reclaim_ms = match query_param(query, "reclaim_older_than_ms") {
        None => shared.config.default_reclaim_ms,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "reclaim_older_than_ms must be a positive integer, got {v:?}"
                )));
            }
        },
    };
    let reclaim = Duration::from_millis(reclaim_ms);
    let worker_id = parts
        .headers
        .get("anthropic-worker-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let deadline = block_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let mut changed = shared.changed.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    {
        let now = shared.now();
        shared.lock().note_poller(worker_id.as_deref(), now);
    }
    loop {
        changed.borrow_and_update();
        let now = shared.now();
        let claimed = {
            let mut s = shared.lock();
            s.sweep(now);
            s.claim(now, worker_id.as_deref(), reclaim)
        };
        if let Some(work) = claimed {
            shared.bump();
            return serde_json::to_value(work)
                .map(Reply::Json)
                .map_err(|e| ApiError::new(500, "api_error", e.to_string()));
        }
        let Some(deadline) = deadline else {
            return Ok(Reply::Json(Value::Null));
        };
        if tokio::time::Instant::now() >= deadline || shared.is_shutting_down() {
            return Ok(Reply::Json(Value::Null));
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return Ok(Reply::Json(Value::Null)) },
            _ = shutdown.changed() => return Ok(Reply::Json(Value::Null)),
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Decrements the session's open-stream count when the response body is dropped.
struct OpenStream {
    shared: Arc<Shared>,
    session_id: String,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if let Some(s) = self.shared.lock().sessions.get_mut(&self.session_id) {
            s.open_streams = s.open_streams.saturating_sub(1);
        }
        self.shared.bump();
    }
}

struct StreamCtx {
    rx: broadcast::Receiver<StreamMsg>,
    fault: Option<StreamFault>,
    events_sent: u32,
    pending_cut: Option<StreamCut>,
    done: bool,
    ping: Option<tokio::time::Interval>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    _guard: OpenStream,
}

const PING_FRAME: &str = "event: ping\ndata: {\"type\": \"ping\"}\n\n";

async fn next_tick(ping: &mut Option<tokio::time::Interval>) {
    match ping {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn aborted() -> std::io::Error {
    std::io::Error::other("stream aborted by an injected fault")
}

async fn next_frame(mut c: StreamCtx) -> Option<(Result<Bytes, std::io::Error>, StreamCtx)> {
    if c.done {
        return None;
    }
    if let Some(cut) = c.pending_cut.take() {
        c.done = true;
        return match cut {
            StreamCut::Close => None,
            StreamCut::Abort => Some((Err(aborted()), c)),
        };
    }
    tokio::select! {
        msg = c.rx.recv() => match msg {
            Ok(StreamMsg::Event(frame)) => {
                c.events_sent += 1;
                if let Some(f) = c.fault
                    && c.events_sent >= f.after_events
                {
                    c.pending_cut = Some(f.cut);
                }
                Some((Ok(frame), c))
            }
            Ok(StreamMsg::Raw(frame)) => Some((Ok(frame), c)),
            Ok(StreamMsg::Abort) => {
                c.done = true;
                Some((Err(aborted()), c))
            }
            // Close, a lagging subscriber, or a dropped session: end cleanly; the client
            // reconnects and reconciles from history.
            Ok(StreamMsg::Close) | Err(_) => None,
        },
        () = next_tick(&mut c.ping) => Some((Ok(Bytes::from_static(PING_FRAME.as_bytes())), c)),
        _ = c.shutdown.changed() => None,
    }
}

/// `GET /v1/sessions/{id}/events/stream`: live events only, `event: <type>` frames, served
/// whatever `Accept` says.
fn stream(shared: &Arc<Shared>, route: &Route) -> Result<Response, ApiError> {
    let (rx, fault) = {
        let mut s = shared.lock();
        let session = s.sessions.get_mut(&route.owner).ok_or_else(|| {
            ApiError::not_found(format!("session {} not found", route.owner))
                .code("session_not_found")
        })?;
        session.attachments += 1;
        session.open_streams += 1;
        (session.tx.subscribe(), session.stream_faults.pop_front())
    };
    shared.bump();
    let guard = OpenStream {
        shared: Arc::clone(shared),
        session_id: route.owner.clone(),
    };
    let ping = shared.config.sse_ping_interval.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let ctx = StreamCtx {
        rx,
        fault,
        events_sent: 0,
        pending_cut: fault.filter(|f| f.after_events == 0).map(|f| f.cut),
        done: false,
        ping,
        shutdown: shared.shutdown.subscribe(),
        _guard: guard,
    };
    let body = Body::from_stream(futures::stream::unfold(ctx, next_frame));
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(CACHE_CONTROL, "no-cache")
        .body(body)
        .map_err(|e| ApiError::new(500, "api_error", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(Some(
            "expected_last_heartbeat=2026-01-01T00%3A00%3A01Z&block_ms=999&a+b=c+d&bad=%zz",
        ));
        assert_eq!(q[0].1, "2026-01-01T00:00:01Z");
        assert_eq!(q[1], ("block_ms".into(), "999".into()));
        assert_eq!(q[2], ("a b".into(), "c d".into()));
        assert_eq!(q[3].1, "%zz");
    }
}
