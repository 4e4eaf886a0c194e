//! The fake's state and the server-side rules it applies.
//!
//! Everything here is synchronous and runs under one mutex; the HTTP layer (`server.rs`)
//! parses requests, checks credentials and calls these methods. The rules follow
//! `protocol.md` §3 and §15:
//!
//! * **Claim.** A poll claims the oldest `queued` item that is not pending, or whose pending
//!   claim is older than `reclaim_older_than_ms` (default 5000). Each claim mints a fresh
//!   sessions token, bound to the item and its session and tagged with the claim generation,
//!   and returns it inside `secret` (URL-safe base64 without padding of
//!   `{"sessions_token": …}`). `secret` is null on every other path.
//! * **Lease.** Ack moves `queued → starting` and starts a lease of `ttl` seconds. The first
//!   heartbeat must send `NO_HEARTBEAT` and moves the item to `active`. Later beats must echo
//!   the stored `last_heartbeat` exactly. A mismatch, a beat on a re-queued item, or a beat
//!   carrying a sessions token from an older claim gets **412**
//!   `heartbeat_precondition_failed` with the server's `current_state`. Beats on `stopping` /
//!   `stopped` items are not compared.
//! * **Expiry.** An item whose lease runs out goes back to `queued` (claim, heartbeat and
//!   timestamps cleared) so a second worker can poll it. The old holder's next beat then gets
//!   412 because its echo no longer matches. A `stopping` item whose lease runs out becomes
//!   `stopped`.
//! * **Stop.** Graceful on `starting`/`active` ⇒ `stopping` (reported by the next heartbeat);
//!   graceful on `queued` or any force ⇒ `stopped`; on `stopped` ⇒ **409**.
//! * **Results.** A `user.tool_result` must name an `agent.tool_use` of the session that is
//!   pending: not yet answered, not denied, not awaiting confirmation, not run by the server.
//!   Anything else is refused (400; a duplicate gets the configured status, 400 by default,
//!   because what production answers is undocumented, §14 item 25). Refused posts are still
//!   recorded so tests can assert that none were sent. `is_error` results may carry only text;
//!   empty content and empty text blocks are refused.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::broadcast;

use crate::FakeConfig;
use crate::clock::rfc3339;
use crate::endpoint::{Endpoint, Route};
use crate::record::{
    Credential, DelaySpec, FailureSpec, HeartbeatRecord, PostedResult, RecordedRequest, StopRecord,
    StreamFault, join_text,
};
use crate::scenario::{Expect, Scenario};
use crate::wire::{
    self, DeletedMemory, HeartbeatResponse, Memory, MemoryCreateParams, MemoryPrefix,
    MemoryUpdateParams, NO_HEARTBEAT, Page, QueueStats, SkillVersion, StopParams,
    ToolConfirmationParams, UpdateWorkParams, Work, WorkData, WorkLeaseState, WorkSecret,
    WorkState,
};

mod dispatch;
mod memory;
mod read;
mod sessions;
mod work;

pub(crate) use sessions::report_failures;

/// Longest memory content, in UTF-8 bytes.
const MAX_MEMORY_BYTES: usize = 102_400;
/// Most memories in one store.
const MAX_MEMORIES: usize = 2_000;

/// An API error the fake answers with (rendered in the §1.5 envelope).
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            details: None,
            headers: Vec::new(),
        }
    }

    pub fn code(mut self, code: &str) -> ApiError {
        let mut details = match self.details.take() {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        details.insert("error_code".into(), json!(code));
        self.details = Some(Value::Object(details));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found_error", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "permission_error", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, "authentication_error", message)
    }

    /// A 409. Its type is `invalid_request_error`, because `conflict_error` is not in the
    /// SDK's `ErrorObject` union (protocol.md errata).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, "invalid_request_error", message)
    }

    /// The default envelope type for an injected status.
    pub fn for_status(status: u16) -> ApiError {
        let kind = match status {
            400 | 409 | 412 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            408 | 504 => "timeout_error",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        ApiError::new(status, kind, format!("injected fault: status {status}"))
    }
}

/// A successful reply.
#[derive(Debug)]
pub(crate) enum Reply {
    Json(Value),
    NoContent,
    Bytes {
        content_type: &'static str,
        body: Bytes,
    },
}

impl Reply {
    fn json<T: Serialize>(v: &T) -> Result<Reply, ApiError> {
        serde_json::to_value(v)
            .map(Reply::Json)
            .map_err(|e| ApiError::new(500, "api_error", format!("serialising reply: {e}")))
    }
}

/// What a live stream receives.
#[derive(Clone, Debug)]
pub(crate) enum StreamMsg {
    /// A named event frame (counts toward stream-drop faults).
    Event(Bytes),
    /// Raw bytes written as they are.
    Raw(Bytes),
    /// End the response cleanly.
    Close,
    /// Abort the connection.
    Abort,
}

/// How the fake regards one tool call of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Waiting for a result from a client.
    Pending,
    /// Ask-gated (or an unknown permission): waiting for `user.tool_confirmation`.
    AwaitingConfirmation,
    /// A result was accepted.
    Answered,
    /// Denied by policy or by the user; no result may be posted.
    Denied,
    /// Run by the server (`web_fetch`, `web_search`); no result may be posted.
    Server,
}

/// Progress of a session's script.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ScriptStatus {
    /// Waiting for a stream to attach (or for the task to start).
    NotStarted,
    /// Executing a step.
    Running {
        /// Index of the step.
        step: usize,
    },
    /// Every step ran.
    Done,
    /// A wait timed out or a step could not run.
    Failed {
        /// Why.
        message: String,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct CallInfo {
    pub name: String,
    pub label: Option<String>,
    pub custom: bool,
    pub state: CallState,
    pub expect: Option<Expect>,
    pub expect_no_result: bool,
    pub order: usize,
}

pub(crate) struct WorkEntry {
    pub id: String,
    pub data: WorkData,
    pub state: WorkState,
    pub metadata: BTreeMap<String, String>,
    pub created_at: SystemTime,
    pub acknowledged_at: Option<SystemTime>,
    pub started_at: Option<SystemTime>,
    pub latest_heartbeat_at: Option<SystemTime>,
    pub stop_requested_at: Option<SystemTime>,
    pub stopped_at: Option<SystemTime>,
    pub claimed_at: Option<SystemTime>,
    pub claimed_by: Option<String>,
    pub generation: u32,
    pub with_secret: bool,
    pub last_heartbeat: Option<String>,
    pub last_heartbeat_time: Option<SystemTime>,
    pub lease_expires_at: Option<SystemTime>,
    pub ttl_seconds: u64,
    pub not_extended_next: bool,
}

impl WorkEntry {
    fn to_wire(&self, environment_id: &str, secret: Option<String>) -> Work {
        let ts = |t: Option<SystemTime>| t.map(rfc3339);
        Work {
            id: self.id.clone(),
            kind: "work".into(),
            environment_id: environment_id.to_owned(),
            data: self.data.clone(),
            state: self.state,
            metadata: self.metadata.clone(),
            secret,
            created_at: rfc3339(self.created_at),
            acknowledged_at: ts(self.acknowledged_at),
            started_at: ts(self.started_at),
            latest_heartbeat_at: ts(self.latest_heartbeat_at),
            stop_requested_at: ts(self.stop_requested_at),
            stopped_at: ts(self.stopped_at),
        }
    }

    fn lease_state(&self) -> WorkLeaseState {
        WorkLeaseState {
            last_heartbeat: self.last_heartbeat.clone(),
            lease_extended: false,
            state: self.state,
            ttl_seconds: self.ttl_seconds,
        }
    }

    fn requeue(&mut self) {
        self.state = WorkState::Queued;
        self.claimed_at = None;
        self.claimed_by = None;
        self.acknowledged_at = None;
        self.started_at = None;
        self.last_heartbeat = None;
        self.last_heartbeat_time = None;
        self.lease_expires_at = None;
    }
}

pub(crate) struct SessionEntry {
    pub id: String,
    pub status: String,
    pub title: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub skills: Vec<Value>,
    pub resources: Vec<Value>,
    pub agent_name: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// Set by [`crate::Handle::archive_session`].
    pub archived_at: Option<SystemTime>,
    pub events: Vec<Value>,
    pub tx: broadcast::Sender<StreamMsg>,
    pub calls: HashMap<String, CallInfo>,
    pub labels: HashMap<String, String>,
    pub script: ScriptStatus,
    pub attachments: u32,
    pub open_streams: u32,
    pub stream_faults: VecDeque<StreamFault>,
    pub work_ids: Vec<String>,
    pub scenario_name: String,
    /// Per event type, how many events of that type `await_event` steps have consumed
    /// (starts at the count present when the session was created).
    pub awaited: HashMap<String, usize>,
    /// Raw JSON splices: (a placeholder string as serialized JSON, the raw JSON text written in
    /// its place on the wire). Lets a scenario send text a `serde_json::Value` cannot hold, such
    /// as a lone surrogate escape (`"\ud800"`), on the stream and in the history.
    pub raw_splices: Vec<(String, String)>,
}

impl SessionEntry {
    /// `text` (serialized JSON of this session's events) with every raw splice applied.
    pub(crate) fn spliced(&self, mut text: String) -> String {
        for (placeholder, raw) in &self.raw_splices {
            text = text.replace(placeholder.as_str(), raw);
        }
        text
    }

    fn to_wire(&self, environment_id: &str) -> Value {
        json!({
            "id": self.id,
            "type": "session",
            "agent": {
                "id": "agent_fake0000000000000001",
                "type": "agent",
                "name": self.agent_name,
                "description": null,
                "version": 1,
                "model": {"id": "claude-sonnet-5-5"},
                "system": null,
                "tools": [{
                    "type": "agent_toolset_20260401",
                    "configs": [],
                    "default_config": {"enabled": true, "permission_policy": {"type": "always_allow"}},
                }],
                "skills": self.skills,
                "mcp_servers": [],
                "execution_identity": {"type": "service_account"},
                "multiagent": null,
            },
            "archived_at": self.archived_at.map(rfc3339),
            "budget": null,
            "created_at": rfc3339(self.created_at),
            "environment_id": environment_id,
            "metadata": self.metadata,
            "outcome_evaluations": [],
            "resources": self.resources,
            "stats": {"active_seconds": 0.0, "duration_seconds": 0.0},
            "status": self.status,
            "title": self.title,
            "updated_at": rfc3339(self.updated_at),
            "usage": {"input_tokens": 0, "output_tokens": 0},
            "vault_ids": [],
            "deployment_id": null,
        })
    }

    /// The memory-store resource entry for `store_id`, if attached.
    fn store_resource(&self, store_id: &str) -> Option<&Value> {
        self.resources.iter().find(|r| {
            r.get("type").and_then(Value::as_str) == Some("memory_store")
                && r.get("memory_store_id").and_then(Value::as_str) == Some(store_id)
        })
    }
}

pub(crate) struct TokenInfo {
    pub work_id: String,
    pub session_id: String,
    pub generation: u32,
    /// The `secret` the token was handed out in (for [`crate::Handle::minted_secrets`]).
    pub secret: String,
}

pub(crate) struct SkillEntry {
    pub version: SkillVersion,
    pub archive: Bytes,
}

pub(crate) struct MemEntry {
    pub id: String,
    pub path: String,
    pub content: String,
    pub version_id: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl MemEntry {
    fn to_wire(&self, store_id: &str, full: bool) -> Memory {
        Memory {
            id: self.id.clone(),
            kind: "memory".into(),
            memory_store_id: store_id.to_owned(),
            path: self.path.clone(),
            content: full.then(|| self.content.clone()),
            content_sha256: sha256_hex(&self.content),
            content_size_bytes: self.content.len() as u64,
            memory_version_id: self.version_id.clone(),
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }
}

pub(crate) struct StoreEntry {
    pub name: String,
    pub memories: BTreeMap<String, MemEntry>,
}

/// Inputs of one dispatched request.
pub(crate) struct Ctx<'a> {
    pub seq: u64,
    pub route: &'a Route,
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
    pub credential: &'a Credential,
    pub now: SystemTime,
}

impl Ctx<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn item(&self) -> &str {
        self.route.item.as_deref().unwrap_or_default()
    }
}

/// Lowercase hex SHA-256 of the UTF-8 bytes.
#[must_use]
pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh id with a prefix, e.g. `work_0f3a…`.
pub(crate) fn new_id(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &hex[..24])
}

/// The whole fake state. Tests read it through [`crate::Handle`] accessors or inside
/// [`crate::Handle::wait_for`] predicates.
pub struct State {
    pub(crate) config: FakeConfig,
    pub(crate) environment_id: String,
    pub(crate) environment_key: String,
    pub(crate) api_key: String,
    pub(crate) base_url: String,
    pub(crate) lease_ttl: u64,
    pub(crate) work: Vec<WorkEntry>,
    pub(crate) sessions: BTreeMap<String, SessionEntry>,
    pub(crate) tokens: HashMap<String, TokenInfo>,
    pub(crate) skills: BTreeMap<String, Vec<SkillEntry>>,
    pub(crate) stores: BTreeMap<String, StoreEntry>,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) connections: Vec<crate::transport::ConnectionRecord>,
    pub(crate) heartbeats: Vec<HeartbeatRecord>,
    pub(crate) stops: Vec<StopRecord>,
    pub(crate) results: Vec<PostedResult>,
    pub(crate) failures: Vec<FailureSpec>,
    pub(crate) delays: Vec<DelaySpec>,
    pub(crate) pollers: HashMap<String, SystemTime>,
    pub(crate) lease_expiries: Vec<String>,
    last_skill_version: u128,
}

impl State {
    pub(crate) fn new(config: FakeConfig) -> State {
        let environment_id = config
            .environment_id
            .clone()
            .unwrap_or_else(|| new_id("env"));
        let environment_key = config
            .environment_key
            .clone()
            .unwrap_or_else(|| format!("sk-ant-oat01-fake-{}", uuid::Uuid::new_v4().simple()));
        let api_key = config
            .api_key
            .clone()
            .unwrap_or_else(|| format!("sk-ant-api03-fake-{}", uuid::Uuid::new_v4().simple()));
        let lease_ttl = config.lease_ttl_seconds;
        State {
            config,
            environment_id,
            environment_key,
            api_key,
            base_url: String::new(),
            lease_ttl,
            work: Vec::new(),
            sessions: BTreeMap::new(),
            tokens: HashMap::new(),
            skills: BTreeMap::new(),
            stores: BTreeMap::new(),
            requests: Vec::new(),
            connections: Vec::new(),
            heartbeats: Vec::new(),
            stops: Vec::new(),
            results: Vec::new(),
            failures: Vec::new(),
            delays: Vec::new(),
            pollers: HashMap::new(),
            lease_expiries: Vec::new(),
            last_skill_version: 0,
        }
    }

    // ----------------------------------------------------------------- bookkeeping

    fn work_entry(&self, work_id: &str) -> Option<&WorkEntry> {
        self.work.iter().find(|w| w.id == work_id)
    }

    fn work_mut(&mut self, work_id: &str) -> Result<&mut WorkEntry, ApiError> {
        self.work
            .iter_mut()
            .find(|w| w.id == work_id)
            .ok_or_else(|| {
                ApiError::not_found(format!("work item {work_id} not found")).code("work_not_found")
            })
    }

    fn session_mut(&mut self, session_id: &str) -> Result<&mut SessionEntry, ApiError> {
        self.sessions.get_mut(session_id).ok_or_else(|| {
            ApiError::not_found(format!("session {session_id} not found")).code("session_not_found")
        })
    }

    pub(crate) fn identify(&self, token: Option<&str>) -> Credential {
        let Some(token) = token else {
            return Credential::None;
        };
        if token == self.api_key {
            Credential::ApiKey
        } else if token == self.environment_key {
            Credential::EnvironmentKey
        } else if let Some(t) = self.tokens.get(token) {
            Credential::SessionsToken {
                work_id: t.work_id.clone(),
                session_id: t.session_id.clone(),
                generation: t.generation,
            }
        } else {
            Credential::Unknown
        }
    }

    pub(crate) fn set_status(&mut self, seq: u64, status: u16, now: SystemTime) {
        if let Some(r) = self.requests.iter_mut().rev().find(|r| r.seq == seq) {
            r.status = Some(status);
            r.responded_at = Some(now);
        }
    }

    /// Records an accepted connection; returns its number.
    pub(crate) fn record_connection(
        &mut self,
        peer: std::net::SocketAddr,
        tls: bool,
        now: SystemTime,
    ) -> u64 {
        let id = self.connections.len() as u64 + 1;
        self.connections.push(crate::transport::ConnectionRecord {
            id,
            at: now,
            peer: peer.to_string(),
            tls,
            alpn: None,
            handshake_failed: false,
        });
        id
    }

    pub(crate) fn connection_alpn(&mut self, id: u64, alpn: Option<String>) {
        if let Some(c) = self.connections.iter_mut().find(|c| c.id == id) {
            c.alpn = alpn;
        }
    }

    pub(crate) fn connection_handshake_failed(&mut self, id: u64) {
        if let Some(c) = self.connections.iter_mut().find(|c| c.id == id) {
            c.handshake_failed = true;
        }
    }

    /// Every accepted connection, in order.
    pub fn connections(&self) -> &[crate::transport::ConnectionRecord] {
        &self.connections
    }

    pub(crate) fn take_failure(
        &mut self,
        endpoint: Endpoint,
        path: &str,
        query: &[(String, String)],
    ) -> Option<FailureSpec> {
        let f = self
            .failures
            .iter_mut()
            .find(|f| f.matches(endpoint, path, query))?;
        f.times -= 1;
        let out = f.clone();
        self.failures.retain(|f| f.times > 0);
        Some(out)
    }

    pub(crate) fn take_delay(&mut self, endpoint: Endpoint) -> Option<Duration> {
        let d = self.delays.iter_mut().find(|d| d.endpoint == endpoint)?;
        let delay = d.delay;
        if let Some(n) = d.remaining.as_mut() {
            *n = n.saturating_sub(1);
        }
        self.delays.retain(|d| d.remaining != Some(0));
        Some(delay)
    }

    /// Returns expired leases to the queue. True when something changed.
    pub(crate) fn sweep(&mut self, now: SystemTime) -> bool {
        let mut changed = false;
        for w in &mut self.work {
            let live = matches!(
                w.state,
                WorkState::Starting | WorkState::Active | WorkState::Stopping
            );
            if live && w.lease_expires_at.is_some_and(|t| now > t) {
                if w.state == WorkState::Stopping {
                    w.state = WorkState::Stopped;
                    w.stopped_at = Some(now);
                    w.lease_expires_at = None;
                } else {
                    w.requeue();
                }
                self.lease_expiries.push(w.id.clone());
                changed = true;
            }
        }
        changed
    }
}

pub(super) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Lower-case slug: runs of non-alphanumerics become `-`.
pub(crate) fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "store".to_owned()
    } else {
        trimmed.to_owned()
    }
}

pub(super) fn parse_limit(v: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be between 1 and {max}"
            ))),
        },
    }
}

pub(super) fn parse_cursor(v: Option<&str>, prefix: &str) -> Result<usize, ApiError> {
    match v {
        None | Some("") => Ok(0),
        Some(s) => s
            .strip_prefix(prefix)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::bad_request("invalid page cursor")),
    }
}

pub(super) fn paginate<T>(all: Vec<T>, start: usize, limit: usize, prefix: &str) -> Page<T> {
    let total = all.len();
    let data: Vec<T> = all.into_iter().skip(start).take(limit).collect();
    let end = start + data.len();
    Page {
        data,
        next_page: (end < total).then(|| format!("{prefix}{end}")),
    }
}

#[cfg(test)]
mod tests;
