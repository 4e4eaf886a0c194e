//! What the fake records for assertions, and the fault plans tests arm.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::endpoint::Endpoint;
use crate::wire::WorkState;

/// Which credential a request carried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credential {
    /// No `Authorization`/`x-api-key` header.
    None,
    /// A token the fake does not know.
    Unknown,
    /// The fake's Claude API key.
    ApiKey,
    /// The environment key.
    EnvironmentKey,
    /// A sessions token minted for a claim of a work item.
    SessionsToken {
        /// The item it was minted for.
        work_id: String,
        /// The item's session.
        session_id: String,
        /// Which claim of the item minted it (1 for the first poll).
        generation: u32,
    },
}

/// One HTTP request as the fake received it.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    /// Arrival order, from 1.
    pub seq: u64,
    /// Fake-clock arrival time.
    #[serde(serialize_with = "ser_time")]
    pub at: SystemTime,
    /// `GET`, `POST`, …
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Decoded query pairs in order.
    pub query: Vec<(String, String)>,
    /// The route, when the path is one the fake serves.
    #[serde(serialize_with = "ser_endpoint")]
    pub endpoint: Option<Endpoint>,
    /// Every header, lower-case names (repeated headers joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// The credential class.
    pub credential: Credential,
    /// The body parsed as JSON, when it is JSON.
    pub body: Option<Value>,
    /// Raw body length in bytes.
    pub body_len: usize,
    /// Response status (set once the response is built; for streams, the status line sent).
    pub status: Option<u16>,
    /// Fake-clock time the response was built (for streams: its headers), set with `status`.
    /// With the arrival times this shows which requests a client sent one after another.
    #[serde(serialize_with = "ser_opt_time")]
    pub responded_at: Option<SystemTime>,
    /// `HTTP/1.1`, `HTTP/2.0`, …
    pub http_version: String,
    /// The connection that carried it ([`crate::ConnectionRecord::id`]).
    pub connection: Option<u64>,
}

impl RecordedRequest {
    /// A header value by (case-insensitive) name.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The first value of a query parameter.
    #[must_use]
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One heartbeat call and what the fake answered.
#[derive(Clone, Debug, Serialize)]
pub struct HeartbeatRecord {
    /// Request sequence number.
    pub seq: u64,
    /// The item.
    pub work_id: String,
    /// `expected_last_heartbeat` as received.
    pub expected_last_heartbeat: Option<String>,
    /// `desired_ttl_seconds` as received.
    pub desired_ttl_seconds: Option<String>,
    /// Credential class.
    pub credential: Credential,
    /// HTTP status answered.
    pub status: u16,
    /// Item state after the call.
    pub state: Option<WorkState>,
    /// `last_heartbeat` returned (200 only).
    pub last_heartbeat: Option<String>,
    /// `lease_extended` returned (200 only).
    pub lease_extended: Option<bool>,
}

/// One stop call.
#[derive(Clone, Debug, Serialize)]
pub struct StopRecord {
    /// Request sequence number (0 for stops made through the handle).
    pub seq: u64,
    /// The item.
    pub work_id: String,
    /// Whether `force` was true.
    pub force: bool,
    /// Credential class ([`Credential::None`] for stops made through the handle).
    pub credential: Credential,
    /// HTTP status answered.
    pub status: u16,
    /// State before the call.
    pub prior_state: Option<WorkState>,
}

/// One tool result the worker posted, accepted or not.
#[derive(Clone, Debug, Serialize)]
pub struct PostedResult {
    /// Request sequence number.
    pub seq: u64,
    /// The session it was posted to.
    pub session_id: String,
    /// `user.tool_result` or `user.custom_tool_result`.
    pub kind: String,
    /// The call it answers.
    pub tool_use_id: String,
    /// Tool name of the call, when the id is known.
    pub tool_name: Option<String>,
    /// Scenario label of the call, when the id is known.
    pub label: Option<String>,
    /// `is_error` as sent.
    pub is_error: Option<bool>,
    /// Content blocks as sent.
    pub content: Vec<Value>,
    /// Whether the fake accepted (persisted) it.
    pub accepted: bool,
    /// HTTP status the batch got.
    pub status: u16,
    /// Why it was refused.
    pub rejection: Option<String>,
    /// Credential class.
    pub credential: Credential,
}

impl PostedResult {
    /// The text blocks joined with newlines.
    #[must_use]
    pub fn text(&self) -> String {
        join_text(&self.content)
    }
}

pub(crate) fn join_text(blocks: &[Value]) -> String {
    blocks
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A planned failure: the next `times` matching requests get `status` with an error envelope.
#[derive(Clone, Debug)]
pub struct FailureSpec {
    /// Route to fail.
    pub endpoint: Endpoint,
    /// Status to answer.
    pub status: u16,
    /// How many matching requests fail.
    pub times: u32,
    /// Add `retry-after-ms`.
    pub retry_after: Option<Duration>,
    /// Add `x-should-retry`.
    pub should_retry: Option<bool>,
    /// Only requests whose path contains this (e.g. a work or session id).
    pub path_contains: Option<String>,
    /// Only requests with this query parameter present (any value).
    pub with_query_param: Option<String>,
    /// Override the `error.details.error_code`.
    pub error_code: Option<String>,
    /// Serve the request first (its effect applies and is recorded: a posted result is
    /// persisted, a poll claims), then answer the failure instead of the real reply: a
    /// response lost on its way back. Default false: fail before serving.
    pub after_serving: bool,
}

impl FailureSpec {
    /// Fails the next request to `endpoint` with `status`.
    #[must_use]
    pub fn new(endpoint: Endpoint, status: u16) -> FailureSpec {
        FailureSpec {
            endpoint,
            status,
            times: 1,
            retry_after: None,
            should_retry: None,
            path_contains: None,
            with_query_param: None,
            error_code: None,
            after_serving: false,
        }
    }

    /// Serve the request, then answer the failure (see [`FailureSpec::after_serving`]).
    #[must_use]
    pub fn after_serving(mut self) -> FailureSpec {
        self.after_serving = true;
        self
    }

    /// Fail `n` requests.
    #[must_use]
    pub fn times(mut self, n: u32) -> FailureSpec {
        self.times = n;
        self
    }

    /// Send `retry-after-ms` (and `retry-after` in whole seconds).
    #[must_use]
    pub fn retry_after(mut self, d: Duration) -> FailureSpec {
        self.retry_after = Some(d);
        self
    }

    /// Send `x-should-retry`.
    #[must_use]
    pub fn should_retry(mut self, yes: bool) -> FailureSpec {
        self.should_retry = Some(yes);
        self
    }

    /// Only requests whose path contains `s`.
    #[must_use]
    pub fn path_contains(mut self, s: impl Into<String>) -> FailureSpec {
        self.path_contains = Some(s.into());
        self
    }

    /// Only requests carrying query parameter `name` (e.g. `page` to fail the second page).
    #[must_use]
    pub fn with_query_param(mut self, name: impl Into<String>) -> FailureSpec {
        self.with_query_param = Some(name.into());
        self
    }

    /// Use this `error_code` in the envelope.
    #[must_use]
    pub fn error_code(mut self, code: impl Into<String>) -> FailureSpec {
        self.error_code = Some(code.into());
        self
    }

    pub(crate) fn matches(
        &self,
        endpoint: Endpoint,
        path: &str,
        query: &[(String, String)],
    ) -> bool {
        self.times > 0
            && self.endpoint == endpoint
            && self
                .path_contains
                .as_ref()
                .is_none_or(|s| path.contains(s.as_str()))
            && self
                .with_query_param
                .as_ref()
                .is_none_or(|q| query.iter().any(|(k, _)| k == q))
    }
}

/// A planned slow response.
#[derive(Clone, Debug)]
pub(crate) struct DelaySpec {
    pub endpoint: Endpoint,
    pub delay: Duration,
    /// `None` = every request until cleared.
    pub remaining: Option<u32>,
}

/// A sessions token the fake minted when a poll claimed an item, and the `secret` it was
/// handed out in ([`crate::Handle::minted_secrets`]); lets a test look for credentials in logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintedSecret {
    /// The item.
    pub work_id: String,
    /// Which claim of the item minted it (1 for the first poll).
    pub generation: u32,
    /// The bearer (`sk-ant-req-fake-…`).
    pub sessions_token: String,
    /// The `secret` field of the claimed work (URL-safe base64 of `{"sessions_token": …}`).
    pub secret: String,
}

/// How a stream connection is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamCut {
    /// End the response cleanly (the client sees end-of-stream).
    Close,
    /// Abort the connection mid-body (the client sees a transport error).
    Abort,
}

/// A planned cut of the next stream connection of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamFault {
    pub after_events: u32,
    pub cut: StreamCut,
}

pub(crate) fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::clock::rfc3339(*t))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}

fn ser_endpoint<S: serde::Serializer>(e: &Option<Endpoint>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_str(e.as_str()),
        None => s.serialize_none(),
    }
}
