//! The test-only admin API under `/_fake/` (served only with [`crate::FakeConfig::admin_api`]).
//!
//! It lets an out-of-process driver (the SDK check script, benchmarks) enqueue scenarios,
//! arm faults and read the fake's records. It has no authentication: it listens on loopback
//! in test processes only, and these requests are not recorded in the request log.
//!
//! | route | effect |
//! |---|---|
//! | `GET /_fake/state` | summary: stats, work items, sessions, stops, heartbeats |
//! | `GET /_fake/requests` | the request log (with each request's connection and HTTP version) |
//! | `GET /_fake/connections` | every accepted connection (TLS, ALPN protocol) |
//! | `POST /_fake/sessions` | body: a scenario; answers `{"work_id", "session_id"}` |
//! | `GET /_fake/sessions/{id}/report` | the scenario report |
//! | `GET /_fake/sessions/{id}/results` | every posted tool result |
//! | `GET /_fake/sessions/{id}/events` | the persisted events |
//! | `POST /_fake/faults` | `{"endpoint": "heartbeat", "status": 503, "times": 2, "retry_after_ms"?, "should_retry"?, "path_contains"?, "after_serving"?}` |
//! | `POST /_fake/work/{id}/stop` | `{"force": bool}`: stop as ops would |
//! | `POST /_fake/skills/{skill_id}?name=N` | body: archive bytes; publishes a version, answers `{"version_id"}` |
//! | `GET /_fake/sessions/{id}/memory` | `[{"store_id", "name", "memories": [{"path", "content"}]}]` |

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::endpoint::Endpoint;
use crate::record::FailureSpec;
use crate::scenario::Scenario;
use crate::{Shared, state};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    endpoint: String,
    status: u16,
    #[serde(default = "one")]
    times: u32,
    #[serde(default)]
    retry_after_ms: Option<u64>,
    #[serde(default)]
    should_retry: Option<bool>,
    #[serde(default)]
    path_contains: Option<String>,
    /// Serve the request, then answer the failure ([`FailureSpec::after_serving`]).
    #[serde(default)]
    after_serving: bool,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StopBody {
    #[serde(default)]
    force: bool,
}

fn bad(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message.into()})),
    )
        .into_response()
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

pub(crate) async fn handle(shared: &Arc<Shared>, parts: &Parts, body: Body) -> Response {
    let Ok(bytes) = to_bytes(body, 16 * 1024 * 1024).await else {
        return bad("unreadable body");
    };
    let segs: Vec<&str> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = parts.method.as_str();
    match (method, segs.as_slice()) {
        ("GET", ["_fake", "state"]) => ok(summary(shared)),
        ("GET", ["_fake", "requests"]) => ok(json!(shared.lock().requests)),
        ("GET", ["_fake", "connections"]) => ok(json!(shared.lock().connections)),
        ("POST", ["_fake", "sessions"]) => {
            let text = String::from_utf8_lossy(&bytes);
            match Scenario::from_json(&text) {
                Ok(scenario) => {
                    let (work_id, session_id) = shared.enqueue_scenario(scenario);
                    ok(json!({"work_id": work_id, "session_id": session_id}))
                }
                Err(e) => bad(e.to_string()),
            }
        }
        ("GET", ["_fake", "sessions", id, "report"]) => {
            let (script, failures) = state::report_failures(&shared.lock(), id);
            ok(json!({"session_id": id, "script": script, "failures": failures}))
        }
        ("GET", ["_fake", "sessions", id, "results"]) => ok(json!(shared.lock().tool_results(id))),
        ("GET", ["_fake", "sessions", id, "events"]) => ok(json!(shared.lock().events(id))),
        ("POST", ["_fake", "faults"]) => {
            let f: FaultBody = match serde_json::from_slice(&bytes) {
                Ok(f) => f,
                Err(e) => return bad(e.to_string()),
            };
            let endpoint: Endpoint = match f.endpoint.parse() {
                Ok(e) => e,
                Err(e) => return bad(e.to_string()),
            };
            let mut spec = FailureSpec::new(endpoint, f.status).times(f.times);
            if let Some(ms) = f.retry_after_ms {
                spec = spec.retry_after(Duration::from_millis(ms));
            }
            if let Some(r) = f.should_retry {
                spec = spec.should_retry(r);
            }
            if let Some(p) = f.path_contains {
                spec = spec.path_contains(p);
            }
            if f.after_serving {
                spec = spec.after_serving();
            }
            shared.lock().failures.push(spec);
            ok(json!({"armed": true}))
        }
        ("POST", ["_fake", "work", id, "stop"]) => {
            let body: StopBody = if bytes.is_empty() {
                StopBody::default()
            } else {
                match serde_json::from_slice(&bytes) {
                    Ok(b) => b,
                    Err(e) => return bad(e.to_string()),
                }
            };
            let now = shared.now();
            let r = shared.lock().admin_stop(id, body.force, now);
            shared.bump();
            match r {
                Ok(()) => ok(json!({"stopped": true})),
                Err(e) => bad(e.message),
            }
        }
        ("POST", ["_fake", "skills", skill_id]) => {
            let query = crate::endpoint::parse_query(parts.uri.query());
            let name = query
                .iter()
                .find(|(k, _)| k == "name")
                .map_or_else(|| (*skill_id).to_owned(), |(_, v)| v.clone());
            let now = shared.now();
            let version_id = shared.lock().add_skill_version(skill_id, &name, bytes, now);
            ok(json!({"version_id": version_id}))
        }
        ("GET", ["_fake", "sessions", id, "memory"]) => {
            let s = shared.lock();
            let stores: Vec<Value> = s
                .session_store_ids(id)
                .iter()
                .map(|store| {
                    let memories: Vec<Value> = s
                        .memory_contents(store)
                        .into_iter()
                        .map(|(path, content)| json!({"path": path, "content": content}))
                        .collect();
                    json!({"store_id": store, "name": s.store_name(store), "memories": memories})
                })
                .collect();
            ok(json!(stores))
        }
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no such admin route"})),
        )
            .into_response(),
    }
}

fn summary(shared: &Shared) -> Value {
    let now = shared.now();
    let s = shared.lock();
    let work: Vec<Value> = s
        .work_ids()
        .iter()
        .filter_map(|id| {
            let mut w = serde_json::to_value(s.work(id)?).ok()?;
            w["claims"] = json!(s.claims(id));
            w["claimed_by"] = json!(s.claimed_by(id));
            Some(w)
        })
        .collect();
    let sessions: Vec<Value> = s
        .sessions
        .values()
        .map(|sess| {
            let results = s.tool_results(&sess.id);
            json!({
                "id": sess.id,
                "scenario": sess.scenario_name,
                "status": sess.status,
                "script": sess.script,
                "stream_attachments": sess.attachments,
                "open_streams": sess.open_streams,
                "work_ids": sess.work_ids,
                "results_accepted": results.iter().filter(|r| r.accepted).count(),
                "results_refused": results.iter().filter(|r| !r.accepted).count(),
            })
        })
        .collect();
    json!({
        "environment_id": s.environment_id,
        "stats": s.stats(now),
        "work": work,
        "sessions": sessions,
        "stops": s.stops(),
        "heartbeats": s.heartbeats(),
        "lease_expiries": s.lease_expiries(),
    })
}
