//! Drives the fake over HTTP, as a worker would, and checks the protocol rules it enforces.
//!
//! The tests are grouped by area: [`queue`], [`auth`], [`sessions`], [`resources`] and
//! [`faults`]; this file holds the client and the helpers they share.

mod auth;
mod faults;
mod queue;
mod resources;
mod sessions;

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wasm_sandbox_fake_control_plane::{
    Credential, Endpoint, FailureSpec, FakeConfig, FakeControlPlane, Handle, Scenario,
    ScriptStatus, StreamCut, WorkState,
};

const WAIT: Duration = Duration::from_secs(10);

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(fake: &Handle) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: fake.url().to_owned(),
        }
    }

    /// A request with the SDK's headers (`anthropic-version`, the managed-agents beta).
    fn req(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("anthropic-version", "2026-10-21")
            .header("anthropic-beta", "managed-agents-2026-04-01");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    async fn poll(&self, fake: &Handle, query: &str, worker: &str) -> (StatusCode, Value) {
        let path = format!(
            "/v1/environments/{}/work/poll{query}",
            fake.environment_id()
        );
        self.send(
            self.req(Method::GET, &path, Some(&fake.environment_key()))
                .header("anthropic-worker-id", worker),
        )
        .await
    }

    async fn work_call(
        &self,
        fake: &Handle,
        work_id: &str,
        action: &str,
        query: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let path = format!(
            "/v1/environments/{}/work/{work_id}/{action}{query}",
            fake.environment_id()
        );
        let mut r = self
            .req(Method::POST, &path, Some(token))
            .header("content-type", "application/json");
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r).await
    }
}

fn sessions_token(secret: &str) -> String {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .expect("secret is url-safe base64 without padding");
    let v: Value = serde_json::from_slice(&raw).expect("secret is JSON");
    v["sessions_token"]
        .as_str()
        .expect("sessions_token")
        .to_owned()
}

async fn start() -> Handle {
    FakeControlPlane::start(FakeConfig::default())
        .await
        .expect("fake starts")
}

fn scenario(json: &str) -> Scenario {
    Scenario::from_json(json).expect("scenario")
}

/// Polls, acks and sends the first heartbeat; returns (work_id, sessions token, last_heartbeat).
async fn claim(api: &Api, fake: &Handle) -> (String, String, String) {
    let (status, work) = api.poll(fake, "?block_ms=999", "w-1").await;
    assert_eq!(status, StatusCode::OK);
    let work_id = work["id"].as_str().expect("id").to_owned();
    let token = sessions_token(work["secret"].as_str().expect("secret"));
    let (status, _) = api
        .work_call(fake, &work_id, "ack", "", &fake.environment_key(), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, hb) = api
        .work_call(
            fake,
            &work_id,
            "heartbeat",
            "?expected_last_heartbeat=NO_HEARTBEAT",
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{hb}");
    (
        work_id,
        token,
        hb["last_heartbeat"].as_str().expect("hb").to_owned(),
    )
}

const ONE_CALL: &str = r#"{"start": "immediately", "steps": [
    {"tool_use": {"label": "ls", "name": "bash", "input": {"command": "ls"},
                  "expect": {"is_error": false, "contains": ["file.txt"]}}},
    {"idle": {}},
    "terminate"
]}"#;

/// Reads the stream until `needle` shows up; returns everything read.
async fn read_until(resp: &mut reqwest::Response, needle: &str) -> String {
    let mut text = String::new();
    while !text.contains(needle) {
        let chunk = tokio::time::timeout(WAIT, resp.chunk())
            .await
            .expect("stream made progress")
            .expect("chunk");
        let Some(chunk) = chunk else { break };
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}
