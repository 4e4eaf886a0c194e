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
}

impl SessionEntry {
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
            "archived_at": null,
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

    // ----------------------------------------------------------------- public read API

    /// The state of a work item.
    #[must_use]
    pub fn work_state(&self, work_id: &str) -> Option<WorkState> {
        self.work_entry(work_id).map(|w| w.state)
    }

    /// A work item as `GET …/work/{id}` would return it (`secret` null).
    #[must_use]
    pub fn work(&self, work_id: &str) -> Option<Work> {
        self.work_entry(work_id)
            .map(|w| w.to_wire(&self.environment_id, None))
    }

    /// How many times the item has been claimed by a poll.
    #[must_use]
    pub fn claims(&self, work_id: &str) -> u32 {
        self.work_entry(work_id).map_or(0, |w| w.generation)
    }

    /// The `Anthropic-Worker-ID` of the item's latest claim.
    #[must_use]
    pub fn claimed_by(&self, work_id: &str) -> Option<&str> {
        self.work_entry(work_id)
            .and_then(|w| w.claimed_by.as_deref())
    }

    /// Work item ids in creation order.
    #[must_use]
    pub fn work_ids(&self) -> Vec<String> {
        self.work.iter().map(|w| w.id.clone()).collect()
    }

    /// A session's `status`.
    #[must_use]
    pub fn session_status(&self, session_id: &str) -> Option<&str> {
        self.sessions.get(session_id).map(|s| s.status.as_str())
    }

    /// A session's script progress.
    #[must_use]
    pub fn script_status(&self, session_id: &str) -> Option<&ScriptStatus> {
        self.sessions.get(session_id).map(|s| &s.script)
    }

    /// How many event streams were ever opened for the session.
    #[must_use]
    pub fn stream_attachments(&self, session_id: &str) -> u32 {
        self.sessions.get(session_id).map_or(0, |s| s.attachments)
    }

    /// How many event streams of the session are open now.
    #[must_use]
    pub fn open_streams(&self, session_id: &str) -> u32 {
        self.sessions.get(session_id).map_or(0, |s| s.open_streams)
    }

    /// The session's persisted events.
    #[must_use]
    pub fn events(&self, session_id: &str) -> &[Value] {
        self.sessions
            .get(session_id)
            .map_or(&[], |s| s.events.as_slice())
    }

    /// The event id the script gave a labelled call.
    #[must_use]
    pub fn call_id(&self, session_id: &str, label: &str) -> Option<&str> {
        self.sessions
            .get(session_id)
            .and_then(|s| s.labels.get(label))
            .map(String::as_str)
    }

    /// How the fake regards a labelled call.
    #[must_use]
    pub fn call_state(&self, session_id: &str, label: &str) -> Option<CallState> {
        let s = self.sessions.get(session_id)?;
        let id = s.labels.get(label)?;
        s.calls.get(id).map(|c| c.state)
    }

    /// Every request received, in order.
    #[must_use]
    pub fn requests(&self) -> &[RecordedRequest] {
        &self.requests
    }

    /// Every tool result posted to a session, accepted or refused, in order.
    #[must_use]
    pub fn tool_results(&self, session_id: &str) -> Vec<&PostedResult> {
        self.results
            .iter()
            .filter(|r| r.session_id == session_id)
            .collect()
    }

    /// Every stop call, in order.
    #[must_use]
    pub fn stops(&self) -> &[StopRecord] {
        &self.stops
    }

    /// Every heartbeat call, in order.
    #[must_use]
    pub fn heartbeats(&self) -> &[HeartbeatRecord] {
        &self.heartbeats
    }

    /// Work items whose lease expired (re-queued or stopped by the sweep), in order.
    #[must_use]
    pub fn lease_expiries(&self) -> &[String] {
        &self.lease_expiries
    }

    /// Queue statistics as `GET …/work/stats` would report them now.
    #[must_use]
    pub fn stats(&self, now: SystemTime) -> QueueStats {
        let queued = self.work.iter().filter(|w| w.state == WorkState::Queued);
        let pending = queued.clone().filter(|w| w.claimed_at.is_some()).count() as u64;
        let depth = queued.clone().filter(|w| w.claimed_at.is_none()).count() as u64;
        let oldest = queued.map(|w| w.created_at).min().map(rfc3339);
        let window = self.config.workers_polling_window;
        let polling = self
            .pollers
            .values()
            .filter(|t| now.duration_since(**t).unwrap_or_default() <= window)
            .count() as u64;
        QueueStats {
            kind: "work_queue_stats".into(),
            depth,
            pending,
            oldest_queued_at: oldest,
            workers_polling: Some(polling),
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

    pub(crate) fn set_status(&mut self, seq: u64, status: u16) {
        if let Some(r) = self.requests.iter_mut().rev().find(|r| r.seq == seq) {
            r.status = Some(status);
        }
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

    // ----------------------------------------------------------------- authorisation

    /// Applies the §15.1 auth matrix. `Credential::None`/`Unknown` were handled already.
    pub(crate) fn authorize(&self, route: &Route, cred: &Credential) -> Result<(), ApiError> {
        use Endpoint as E;
        let denied = |what: &str| {
            ApiError::forbidden(format!("this credential may not call {what}"))
                .code("credential_not_permitted")
        };
        let env_route = matches!(
            route.endpoint,
            E::EnvironmentRetrieve
                | E::Poll
                | E::Ack
                | E::Heartbeat
                | E::Stop
                | E::Stats
                | E::ListWork
                | E::RetrieveWork
                | E::UpdateWork
        );
        if env_route && route.owner != self.environment_id {
            return Err(
                ApiError::not_found(format!("environment {} not found", route.owner))
                    .code("environment_not_found"),
            );
        }
        let own_item = |c: &Credential| matches!(c, Credential::SessionsToken { work_id, .. } if Some(work_id.as_str()) == route.item.as_deref());
        let ok = match route.endpoint {
            E::Poll | E::Ack | E::ListWork => matches!(cred, Credential::EnvironmentKey),
            E::Heartbeat => matches!(cred, Credential::EnvironmentKey) || own_item(cred),
            E::Stop => {
                matches!(cred, Credential::ApiKey | Credential::EnvironmentKey) || own_item(cred)
            }
            E::Stats | E::EnvironmentRetrieve => {
                matches!(cred, Credential::ApiKey | Credential::EnvironmentKey)
            }
            E::RetrieveWork | E::UpdateWork => matches!(cred, Credential::ApiKey),
            E::SessionRetrieve | E::EventsStream | E::EventsList | E::EventsSend => match cred {
                Credential::ApiKey | Credential::EnvironmentKey => true,
                Credential::SessionsToken { session_id, .. } => *session_id == route.owner,
                _ => false,
            },
            E::SkillVersion | E::SkillContent => true,
            E::MemoryList
            | E::MemoryRetrieve
            | E::MemoryCreate
            | E::MemoryUpdate
            | E::MemoryDelete => {
                return self.authorize_memory(route, cred);
            }
        };
        if ok {
            Ok(())
        } else {
            Err(denied(route.endpoint.as_str()))
        }
    }

    fn authorize_memory(&self, route: &Route, cred: &Credential) -> Result<(), ApiError> {
        match cred {
            Credential::ApiKey => Ok(()),
            Credential::EnvironmentKey => Err(ApiError::forbidden(
                "memory store endpoints do not accept the environment key",
            )
            .code("environment_key_not_accepted")),
            Credential::SessionsToken { session_id, .. } => {
                let resource = self
                    .sessions
                    .get(session_id)
                    .and_then(|s| s.store_resource(&route.owner));
                let Some(resource) = resource else {
                    return Err(ApiError::forbidden(
                        "this memory store is not attached to the token's session",
                    )
                    .code("memory_store_not_attached"));
                };
                let write = matches!(
                    route.endpoint,
                    Endpoint::MemoryCreate | Endpoint::MemoryUpdate | Endpoint::MemoryDelete
                );
                let read_only = resource.get("access").and_then(Value::as_str) == Some("read_only");
                if write && read_only {
                    Err(
                        ApiError::forbidden("this memory store is attached read-only")
                            .code("memory_store_read_only"),
                    )
                } else {
                    Ok(())
                }
            }
            Credential::None | Credential::Unknown => {
                Err(ApiError::unauthorized("invalid credentials"))
            }
        }
    }

    // ----------------------------------------------------------------- dispatch

    /// Serves every route except poll and the event stream (which wait).
    pub(crate) fn dispatch(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        use Endpoint as E;
        match ctx.route.endpoint {
            E::EnvironmentRetrieve => Ok(Reply::Json(self.environment_json(ctx.now))),
            E::Ack => self.ack(ctx.item(), ctx.now).and_then(|w| Reply::json(&w)),
            E::Heartbeat => self.heartbeat_call(ctx),
            E::Stop => self.stop_call(ctx),
            E::Stats => Reply::json(&self.stats(ctx.now)),
            E::ListWork => self.list_work(ctx),
            E::RetrieveWork => {
                let w = self.work(ctx.item()).ok_or_else(|| {
                    ApiError::not_found(format!("work item {} not found", ctx.item()))
                        .code("work_not_found")
                })?;
                Reply::json(&w)
            }
            E::UpdateWork => self.update_work(ctx),
            E::SessionRetrieve => {
                let env = self.environment_id.clone();
                let s = self.session_mut(&ctx.route.owner)?;
                Ok(Reply::Json(s.to_wire(&env)))
            }
            E::EventsList => self.list_events(ctx),
            E::EventsSend => self.send_events_call(ctx),
            E::SkillVersion => {
                let v = self.skill_version(&ctx.route.owner, ctx.item())?;
                Reply::json(&v.version)
            }
            E::SkillContent => {
                let v = self.skill_version(&ctx.route.owner, ctx.item())?;
                Ok(Reply::Bytes {
                    content_type: archive_content_type(&v.archive),
                    body: v.archive.clone(),
                })
            }
            E::MemoryList => self.memory_list(ctx),
            E::MemoryRetrieve => self.memory_retrieve(ctx),
            E::MemoryCreate => self.memory_create(ctx),
            E::MemoryUpdate => self.memory_update(ctx),
            E::MemoryDelete => self.memory_delete(ctx),
            E::Poll | E::EventsStream => {
                Err(ApiError::new(500, "api_error", "not dispatched here"))
            }
        }
    }

    fn environment_json(&self, now: SystemTime) -> Value {
        json!({
            "id": self.environment_id,
            "type": "environment",
            "name": "fake-self-hosted",
            "description": null,
            "config": {"type": "self_hosted"},
            "metadata": {},
            "scope": "organization",
            "created_at": rfc3339(now),
            "updated_at": rfc3339(now),
            "archived_at": null,
        })
    }

    // ----------------------------------------------------------------- work queue

    pub(crate) fn note_poller(&mut self, worker_id: Option<&str>, now: SystemTime) {
        if let Some(id) = worker_id {
            self.pollers.insert(id.to_owned(), now);
        }
    }

    /// Claims the next claimable item (see the module docs), minting its secret.
    pub(crate) fn claim(
        &mut self,
        now: SystemTime,
        worker_id: Option<&str>,
        reclaim: Duration,
    ) -> Option<Work> {
        let idx = self.work.iter().position(|w| {
            w.state == WorkState::Queued
                && w.claimed_at
                    .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= reclaim)
        })?;
        let env = self.environment_id.clone();
        let api_base_url = self
            .config
            .secret_api_base_url
            .then(|| self.base_url.clone());
        let w = &mut self.work[idx];
        w.claimed_at = Some(now);
        w.claimed_by = worker_id.map(str::to_owned);
        w.generation += 1;
        let secret = if w.with_secret {
            let token = format!("sk-ant-req-fake-{}", uuid::Uuid::new_v4().simple());
            let payload = WorkSecret {
                sessions_token: token.clone(),
                api_base_url,
            };
            let json = serde_json::to_vec(&payload).unwrap_or_default();
            self.tokens.insert(
                token,
                TokenInfo {
                    work_id: w.id.clone(),
                    session_id: w.data.id.clone(),
                    generation: w.generation,
                },
            );
            Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
        } else {
            None
        };
        Some(w.to_wire(&env, secret))
    }

    pub(crate) fn ack(&mut self, work_id: &str, now: SystemTime) -> Result<Work, ApiError> {
        let ttl = self.lease_ttl;
        let env = self.environment_id.clone();
        let w = self.work_mut(work_id)?;
        match w.state {
            WorkState::Queued if w.claimed_at.is_none() => {
                return Err(
                    ApiError::conflict("work item has not been claimed by a poll")
                        .code("work_not_claimed"),
                );
            }
            WorkState::Queued => {
                w.state = WorkState::Starting;
                w.acknowledged_at = Some(now);
                w.ttl_seconds = ttl;
                w.lease_expires_at = Some(now + Duration::from_secs(ttl));
            }
            WorkState::Starting | WorkState::Active => {}
            WorkState::Stopping | WorkState::Stopped => {
                return Err(
                    ApiError::conflict(format!("work item is {}", w.state.as_str()))
                        .code("work_stopped"),
                );
            }
        }
        Ok(w.to_wire(&env, None))
    }

    fn heartbeat_call(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let expected = ctx.param("expected_last_heartbeat").map(str::to_owned);
        let desired = ctx.param("desired_ttl_seconds").map(str::to_owned);
        let result = self.heartbeat(
            ctx.item(),
            ctx.credential,
            expected.as_deref(),
            desired.as_deref(),
            ctx.now,
        );
        let (status, state, hb, extended) = match &result {
            Ok(r) => (
                200,
                Some(r.state),
                Some(r.last_heartbeat.clone()),
                Some(r.lease_extended),
            ),
            Err(e) => (e.status, self.work_state(ctx.item()), None, None),
        };
        self.heartbeats.push(HeartbeatRecord {
            seq: ctx.seq,
            work_id: ctx.item().to_owned(),
            expected_last_heartbeat: expected,
            desired_ttl_seconds: desired,
            credential: ctx.credential.clone(),
            status,
            state,
            last_heartbeat: hb,
            lease_extended: extended,
        });
        result.and_then(|r| Reply::json(&r))
    }

    pub(crate) fn heartbeat(
        &mut self,
        work_id: &str,
        cred: &Credential,
        expected: Option<&str>,
        desired_ttl: Option<&str>,
        now: SystemTime,
    ) -> Result<HeartbeatResponse, ApiError> {
        let (min_ttl, max_ttl) = (self.config.min_ttl_seconds, self.config.max_ttl_seconds);
        let desired = match desired_ttl {
            None | Some("") => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request("desired_ttl_seconds must be an integer"))?,
            ),
        };
        let w = self.work_mut(work_id)?;
        if let Some(ttl) = desired {
            w.ttl_seconds = ttl.clamp(min_ttl, max_ttl);
        }
        let reply = |w: &WorkEntry, extended: bool| HeartbeatResponse {
            kind: "work_heartbeat".into(),
            last_heartbeat: w.last_heartbeat.clone().unwrap_or_default(),
            lease_extended: extended,
            state: w.state,
            ttl_seconds: w.ttl_seconds,
        };
        let precondition_failed = |w: &WorkEntry, why: &str| {
            let mut e = ApiError::new(412, "invalid_request_error", why.to_owned());
            e.details = Some(json!({
                "error_code": "heartbeat_precondition_failed",
                "current_state": w.lease_state(),
            }));
            e
        };
        match w.state {
            WorkState::Stopped => return Ok(reply(w, false)),
            WorkState::Stopping => {
                // Not compared; the worker is tearing down, keep its lease alive.
                stamp_heartbeat(w, now);
                w.lease_expires_at = Some(now + Duration::from_secs(w.ttl_seconds));
                return Ok(reply(w, true));
            }
            WorkState::Queued => {
                return Err(precondition_failed(
                    w,
                    "the work item holds no lease (queued)",
                ));
            }
            WorkState::Starting | WorkState::Active => {}
        }
        if let Credential::SessionsToken { generation, .. } = cred
            && *generation != w.generation
        {
            return Err(precondition_failed(
                w,
                "the sessions token belongs to an earlier claim of this work item",
            ));
        }
        let matches = match (expected, w.last_heartbeat.as_deref()) {
            (None, _) => true,
            (Some(e), Some(stored)) => e == stored,
            (Some(e), None) => e == NO_HEARTBEAT,
        };
        if !matches {
            return Err(precondition_failed(
                w,
                "expected_last_heartbeat does not match the stored heartbeat",
            ));
        }
        stamp_heartbeat(w, now);
        w.state = WorkState::Active;
        w.started_at.get_or_insert(now);
        let extended = !std::mem::take(&mut w.not_extended_next);
        if extended {
            w.lease_expires_at = Some(now + Duration::from_secs(w.ttl_seconds));
        }
        Ok(reply(w, extended))
    }

    fn stop_call(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let params: StopParams = if ctx.body.iter().all(u8::is_ascii_whitespace) {
            StopParams::default()
        } else {
            serde_json::from_slice(ctx.body)
                .map_err(|e| ApiError::bad_request(format!("invalid stop body: {e}")))?
        };
        let force = params.force.unwrap_or(false);
        let prior = self.work_state(ctx.item());
        let result = self.stop(ctx.item(), force, ctx.now);
        self.stops.push(StopRecord {
            seq: ctx.seq,
            work_id: ctx.item().to_owned(),
            force,
            credential: ctx.credential.clone(),
            status: match &result {
                Ok(_) if self.config.stop_returns_work => 200,
                Ok(_) => 204,
                Err(e) => e.status,
            },
            prior_state: prior,
        });
        let work = result?;
        if self.config.stop_returns_work {
            Reply::json(&work)
        } else {
            Ok(Reply::NoContent)
        }
    }

    pub(crate) fn stop(
        &mut self,
        work_id: &str,
        force: bool,
        now: SystemTime,
    ) -> Result<Work, ApiError> {
        let env = self.environment_id.clone();
        let w = self.work_mut(work_id)?;
        match w.state {
            WorkState::Stopped => {
                return Err(
                    ApiError::conflict("work item is already stopped").code("work_already_stopped")
                );
            }
            _ if force => {
                w.state = WorkState::Stopped;
                w.stopped_at = Some(now);
                w.lease_expires_at = None;
            }
            WorkState::Queued => {
                w.state = WorkState::Stopped;
                w.stop_requested_at = Some(now);
                w.stopped_at = Some(now);
            }
            WorkState::Starting | WorkState::Active => {
                w.state = WorkState::Stopping;
                w.stop_requested_at = Some(now);
            }
            WorkState::Stopping => {}
        }
        Ok(w.to_wire(&env, None))
    }

    /// A stop requested through the handle or a script step (recorded with `seq` 0).
    pub(crate) fn admin_stop(
        &mut self,
        work_id: &str,
        force: bool,
        now: SystemTime,
    ) -> Result<(), ApiError> {
        let prior = self.work_state(work_id);
        let result = self.stop(work_id, force, now);
        self.stops.push(StopRecord {
            seq: 0,
            work_id: work_id.to_owned(),
            force,
            credential: Credential::None,
            status: result.as_ref().map_or_else(|e| e.status, |_| 204),
            prior_state: prior,
        });
        result.map(|_| ())
    }

    /// Another worker takes the lease: the stored heartbeat changes (the holder's next echo
    /// mismatches and gets 412).
    pub(crate) fn steal_lease(&mut self, work_id: &str, now: SystemTime) -> Result<(), ApiError> {
        let w = self.work_mut(work_id)?;
        let t = w.last_heartbeat_time.map_or(now, |p| p.max(now)) + Duration::from_millis(1);
        w.last_heartbeat_time = Some(t);
        w.last_heartbeat = Some(rfc3339(t));
        w.claimed_by = Some("fake-thief-worker".into());
        if w.state == WorkState::Starting {
            w.state = WorkState::Active;
        }
        Ok(())
    }

    /// Makes the lease expire now and sweeps.
    pub(crate) fn expire_lease(&mut self, work_id: &str, now: SystemTime) -> Result<(), ApiError> {
        let w = self.work_mut(work_id)?;
        if w.lease_expires_at.is_none() {
            return Err(ApiError::conflict("the work item holds no lease"));
        }
        w.lease_expires_at = Some(
            now.checked_sub(Duration::from_micros(1))
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        self.sweep(now);
        Ok(())
    }

    fn list_work(&self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let limit = parse_limit(ctx.param("limit"), 20, 1000)?;
        let start = parse_cursor(ctx.param("page"), "wkp_")?;
        let all: Vec<Work> = self
            .work
            .iter()
            .map(|w| w.to_wire(&self.environment_id, None))
            .collect();
        Reply::json(&paginate(all, start, limit, "wkp_"))
    }

    fn update_work(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let params: UpdateWorkParams = serde_json::from_slice(ctx.body).map_err(|e| {
            ApiError::bad_request(format!("invalid body: {e}")).code("invalid_metadata")
        })?;
        let env = self.environment_id.clone();
        let w = self.work_mut(ctx.item())?;
        for (k, v) in params.metadata {
            match v {
                Some(v) if !v.is_empty() => {
                    w.metadata.insert(k, v);
                }
                _ => {
                    w.metadata.remove(&k);
                }
            }
        }
        let wire = w.to_wire(&env, None);
        Reply::json(&wire)
    }

    // ----------------------------------------------------------------- sessions

    /// Creates a session from a scenario (stores, resources, prompt events).
    pub(crate) fn create_session(&mut self, scenario: &Scenario, now: SystemTime) -> String {
        let id = new_id("sesn");
        let mut resources = scenario.session.resources.clone();
        for spec in &scenario.memory_stores {
            let store_id = new_id("memstore");
            let mut memories = BTreeMap::new();
            for (path, content) in &spec.memories {
                let mem = MemEntry {
                    id: new_id("mem"),
                    path: path.clone(),
                    content: content.clone(),
                    version_id: new_id("memver"),
                    created_at: now,
                    updated_at: now,
                };
                memories.insert(mem.id.clone(), mem);
            }
            self.stores.insert(
                store_id.clone(),
                StoreEntry {
                    name: spec.name.clone(),
                    memories,
                },
            );
            let mount = spec
                .mount_path
                .clone()
                .unwrap_or_else(|| format!("/mnt/memory/{}", slug(&spec.name)));
            resources.push(json!({
                "type": "memory_store",
                "memory_store_id": store_id,
                "access": spec.access.clone().unwrap_or_else(|| "read_write".into()),
                "mount_path": mount,
                "name": spec.name,
                "description": null,
                "instructions": null,
            }));
        }
        let (tx, _) = broadcast::channel(1024);
        let entry = SessionEntry {
            id: id.clone(),
            status: scenario.session.status.clone(),
            title: scenario.session.title.clone(),
            metadata: scenario.session.metadata.clone(),
            skills: scenario.session.skills.clone(),
            resources,
            agent_name: scenario.session.agent_name.clone(),
            created_at: now,
            updated_at: now,
            events: Vec::new(),
            tx,
            calls: HashMap::new(),
            labels: HashMap::new(),
            script: ScriptStatus::NotStarted,
            attachments: 0,
            open_streams: 0,
            stream_faults: VecDeque::new(),
            work_ids: Vec::new(),
            scenario_name: scenario.name.clone(),
            awaited: HashMap::new(),
        };
        self.sessions.insert(id.clone(), entry);
        if let Some(prompt) = &scenario.prompt {
            let status = scenario.session.status.clone();
            let _ = self.append_event(
                &id,
                obj(json!({"type": "user.message", "content": [{"type": "text", "text": prompt}]})),
                now,
            );
            if status == "running" {
                let _ = self.append_event(&id, obj(json!({"type": "session.status_running"})), now);
            }
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            for e in &s.events {
                let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
                *s.awaited.entry(kind.to_owned()).or_default() += 1;
            }
        }
        id
    }

    fn count_events(s: &SessionEntry, kind: &str) -> usize {
        s.events
            .iter()
            .filter(|e| e.get("type").and_then(Value::as_str) == Some(kind))
            .count()
    }

    /// Consumes the next event of `kind` that no `await_event` step has consumed yet.
    pub(crate) fn consume_event(&mut self, session_id: &str, kind: &str) {
        if let Some(s) = self.sessions.get_mut(session_id) {
            let present = State::count_events(s, kind);
            let consumed = s.awaited.entry(kind.to_owned()).or_default();
            if present > *consumed {
                *consumed += 1;
            }
        }
    }

    /// True when an event of `kind` exists that no `await_event` step has consumed.
    pub(crate) fn has_unconsumed(&self, session_id: &str, kind: &str) -> bool {
        self.sessions.get(session_id).is_some_and(|s| {
            State::count_events(s, kind) > s.awaited.get(kind).copied().unwrap_or(0)
        })
    }

    /// Adds a work item to the queue.
    pub(crate) fn enqueue(&mut self, data: WorkData, with_secret: bool, now: SystemTime) -> String {
        let id = new_id("work");
        if let Some(s) = self.sessions.get_mut(&data.id) {
            s.work_ids.push(id.clone());
        }
        self.work.push(WorkEntry {
            id: id.clone(),
            data,
            state: WorkState::Queued,
            metadata: BTreeMap::new(),
            created_at: now,
            acknowledged_at: None,
            started_at: None,
            latest_heartbeat_at: None,
            stop_requested_at: None,
            stopped_at: None,
            claimed_at: None,
            claimed_by: None,
            generation: 0,
            with_secret,
            last_heartbeat: None,
            last_heartbeat_time: None,
            lease_expires_at: None,
            ttl_seconds: self.lease_ttl,
            not_extended_next: false,
        });
        id
    }

    /// The latest work item of a session.
    pub(crate) fn session_work(&self, session_id: &str) -> Option<String> {
        self.sessions
            .get(session_id)
            .and_then(|s| s.work_ids.last().cloned())
    }

    /// Persists an event (adding `id` and `processed_at`), applies its effect on the
    /// session and broadcasts it. Returns the persisted event.
    pub(crate) fn append_event(
        &mut self,
        session_id: &str,
        mut event: Map<String, Value>,
        now: SystemTime,
    ) -> Result<Value, ApiError> {
        let session = self.session_mut(session_id)?;
        let id = new_id("sevt");
        event.insert("id".into(), json!(id));
        event
            .entry("processed_at")
            .or_insert_with(|| json!(rfc3339(now)));
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let str_field = |name: &str| {
            event
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match kind.as_str() {
            "session.status_running" => session.status = "running".into(),
            "session.status_idle" => session.status = "idle".into(),
            "session.status_rescheduled" => session.status = "rescheduling".into(),
            "session.status_terminated" | "session.deleted" => session.status = "terminated".into(),
            "user.tool_result" => {
                if let Some(c) = session.calls.get_mut(&str_field("tool_use_id")) {
                    c.state = CallState::Answered;
                }
            }
            "user.custom_tool_result" => {
                if let Some(c) = session.calls.get_mut(&str_field("custom_tool_use_id")) {
                    c.state = CallState::Answered;
                }
            }
            "user.tool_confirmation" => {
                let allow = str_field("result") == "allow";
                if let Some(c) = session.calls.get_mut(&str_field("tool_use_id")) {
                    match (c.state, allow) {
                        (CallState::AwaitingConfirmation, true) => c.state = CallState::Pending,
                        (CallState::AwaitingConfirmation | CallState::Pending, false) => {
                            c.state = CallState::Denied;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        let value = Value::Object(event);
        let frame = wire::sse_frame(&kind, &value.to_string());
        let _ = session.tx.send(StreamMsg::Event(Bytes::from(frame)));
        session.events.push(value.clone());
        session.updated_at = now;
        Ok(value)
    }

    /// Registers a tool call the script emitted.
    pub(crate) fn register_call(&mut self, session_id: &str, event_id: &str, info: CallInfo) {
        if let Some(s) = self.sessions.get_mut(session_id) {
            if let Some(label) = &info.label {
                s.labels.insert(label.clone(), event_id.to_owned());
            }
            s.calls.insert(event_id.to_owned(), info);
        }
    }

    pub(crate) fn broadcast(&self, session_id: &str, msg: StreamMsg) {
        if let Some(s) = self.sessions.get(session_id) {
            let _ = s.tx.send(msg);
        }
    }

    fn list_events(&self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let session = self
            .sessions
            .get(&ctx.route.owner)
            .ok_or_else(|| ApiError::not_found("session not found").code("session_not_found"))?;
        let limit = parse_limit(ctx.param("limit"), 20, 1000)?;
        let start = parse_cursor(ctx.param("page"), "evp_")?;
        let mut events = session.events.clone();
        match ctx.param("order") {
            None | Some("asc") => {}
            Some("desc") => events.reverse(),
            Some(other) => return Err(ApiError::bad_request(format!("invalid order {other:?}"))),
        }
        Reply::json(&paginate(events, start, limit, "evp_"))
    }

    fn send_events_call(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let session_id = ctx.route.owner.clone();
        let params: wire::SendEventsParams = serde_json::from_slice(ctx.body)
            .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
        let verdict = self.validate_events(&session_id, &params.events);
        let status = match &verdict {
            Ok(()) => 200,
            Err((_, e)) => e.status,
        };
        // Record every result the batch carried, accepted or not.
        for (i, ev) in params.events.iter().enumerate() {
            let kind = ev.get("type").and_then(Value::as_str).unwrap_or_default();
            let id_field = match kind {
                "user.tool_result" => "tool_use_id",
                "user.custom_tool_result" => "custom_tool_use_id",
                _ => continue,
            };
            let tool_use_id = ev
                .get(id_field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let call = self
                .sessions
                .get(&session_id)
                .and_then(|s| s.calls.get(&tool_use_id));
            let rejection = match &verdict {
                Ok(()) => None,
                Err((idx, e)) if *idx == i => Some(e.message.clone()),
                Err((_, e)) => Some(format!("batch refused: {}", e.message)),
            };
            self.results.push(PostedResult {
                seq: ctx.seq,
                session_id: session_id.clone(),
                kind: kind.to_owned(),
                tool_use_id: tool_use_id.clone(),
                tool_name: call.map(|c| c.name.clone()),
                label: call.and_then(|c| c.label.clone()),
                is_error: ev.get("is_error").and_then(Value::as_bool),
                content: ev
                    .get("content")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                accepted: verdict.is_ok(),
                status,
                rejection,
                credential: ctx.credential.clone(),
            });
        }
        verdict.map_err(|(_, e)| e)?;
        let mut persisted = Vec::with_capacity(params.events.len());
        for ev in params.events {
            let Value::Object(map) = ev else { continue };
            persisted.push(self.append_event(&session_id, map, ctx.now)?);
        }
        Ok(Reply::Json(json!({ "data": persisted })))
    }

    /// Validates a batch; on failure returns the index of the offending event.
    fn validate_events(&self, session_id: &str, events: &[Value]) -> Result<(), (usize, ApiError)> {
        let session = self.sessions.get(session_id).ok_or_else(|| {
            (
                0,
                ApiError::not_found("session not found").code("session_not_found"),
            )
        })?;
        if events.is_empty() {
            return Err((0, ApiError::bad_request("events must not be empty")));
        }
        let mut answered_here: Vec<String> = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            let fail = |e: ApiError| (i, e);
            let kind = ev.get("type").and_then(Value::as_str).unwrap_or_default();
            match kind {
                "user.tool_result" | "user.custom_tool_result" => {
                    let custom = kind == "user.custom_tool_result";
                    let (id, content, is_error) = if custom {
                        let p: wire::CustomToolResultParams = serde_json::from_value(ev.clone())
                            .map_err(|e| {
                                fail(ApiError::bad_request(format!("invalid {kind}: {e}")))
                            })?;
                        (p.custom_tool_use_id, p.content, p.is_error)
                    } else {
                        let p: wire::ToolResultParams = serde_json::from_value(ev.clone())
                            .map_err(|e| {
                                fail(ApiError::bad_request(format!("invalid {kind}: {e}")))
                            })?;
                        (p.tool_use_id, p.content, p.is_error)
                    };
                    validate_content(content.as_deref(), is_error.unwrap_or(false)).map_err(
                        |m| fail(ApiError::bad_request(m).code("invalid_tool_result_content")),
                    )?;
                    let Some(call) = session.calls.get(&id) else {
                        return Err(fail(
                            ApiError::bad_request(format!(
                                "{id} is not a tool call of this session"
                            ))
                            .code("tool_use_not_found"),
                        ));
                    };
                    if call.custom != custom {
                        let want = if call.custom {
                            "user.custom_tool_result"
                        } else {
                            "user.tool_result"
                        };
                        return Err(fail(
                            ApiError::bad_request(format!("{id} must be answered with {want}"))
                                .code("tool_result_type_mismatch"),
                        ));
                    }
                    let duplicate_here = answered_here.contains(&id);
                    match call.state {
                        CallState::Pending if !duplicate_here => {}
                        CallState::Pending | CallState::Answered => {
                            let mut e = ApiError::bad_request(format!("{id} already has a result"))
                                .code("tool_result_duplicate");
                            e.status = self.config.duplicate_result_status;
                            return Err(fail(e));
                        }
                        CallState::AwaitingConfirmation => {
                            return Err(fail(
                                ApiError::bad_request(format!(
                                    "{id} awaits user.tool_confirmation"
                                ))
                                .code("tool_use_awaiting_confirmation"),
                            ));
                        }
                        CallState::Denied => {
                            return Err(fail(
                                ApiError::bad_request(format!("{id} was denied"))
                                    .code("tool_use_denied"),
                            ));
                        }
                        CallState::Server => {
                            return Err(fail(
                                ApiError::bad_request(format!("{id} is executed by the server"))
                                    .code("tool_use_not_client_executed"),
                            ));
                        }
                    }
                    if session.status == "terminated" {
                        return Err(fail(
                            ApiError::bad_request("the session is terminated")
                                .code("session_terminated"),
                        ));
                    }
                    answered_here.push(id);
                }
                "user.tool_confirmation" => {
                    let p: ToolConfirmationParams = serde_json::from_value(ev.clone())
                        .map_err(|e| fail(ApiError::bad_request(format!("invalid {kind}: {e}"))))?;
                    let gated = session
                        .calls
                        .get(&p.tool_use_id)
                        .is_some_and(|c| c.state == CallState::AwaitingConfirmation);
                    if !gated {
                        return Err(fail(ApiError::bad_request(format!(
                            "{} does not await a confirmation",
                            p.tool_use_id
                        ))));
                    }
                }
                "user.message" => {
                    if !ev.get("content").is_some_and(Value::is_array) {
                        return Err(fail(ApiError::bad_request("user.message needs content")));
                    }
                }
                "user.interrupt" => {}
                other => {
                    return Err(fail(ApiError::bad_request(format!(
                        "event type {other:?} cannot be sent"
                    ))));
                }
            }
        }
        Ok(())
    }

    // ----------------------------------------------------------------- skills

    pub(crate) fn add_skill_version(
        &mut self,
        skill_id: &str,
        name: &str,
        archive: Bytes,
        now: SystemTime,
    ) -> String {
        let micros = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros()
            .max(self.last_skill_version + 1);
        self.last_skill_version = micros;
        let version = SkillVersion {
            id: micros.to_string(),
            kind: "skill_version".into(),
            skill_id: skill_id.to_owned(),
            name: name.to_owned(),
            description: format!("fake skill {name}"),
            created_at: rfc3339(now),
        };
        let id = version.id.clone();
        self.skills
            .entry(skill_id.to_owned())
            .or_default()
            .push(SkillEntry { version, archive });
        id
    }

    fn skill_version(&self, skill_id: &str, version: &str) -> Result<&SkillEntry, ApiError> {
        let versions = self
            .skills
            .get(skill_id)
            .ok_or_else(|| ApiError::not_found(format!("skill {skill_id} not found")))?;
        let found = if version == "latest" {
            versions.last()
        } else {
            versions.iter().find(|v| v.version.id == version)
        };
        found.ok_or_else(|| ApiError::not_found(format!("skill version {version} not found")))
    }

    // ----------------------------------------------------------------- memory stores

    pub(crate) fn create_store(&mut self, name: &str) -> String {
        let id = new_id("memstore");
        self.stores.insert(
            id.clone(),
            StoreEntry {
                name: name.to_owned(),
                memories: BTreeMap::new(),
            },
        );
        id
    }

    fn store_mut(&mut self, store_id: &str) -> Result<&mut StoreEntry, ApiError> {
        self.stores
            .get_mut(store_id)
            .ok_or_else(|| ApiError::not_found(format!("memory store {store_id} not found")))
    }

    /// Creates or overwrites the memory at `path` (a "remote" edit).
    pub(crate) fn put_memory(
        &mut self,
        store_id: &str,
        path: &str,
        content: &str,
        now: SystemTime,
    ) -> Result<String, ApiError> {
        let store = self.store_mut(store_id)?;
        if let Some(m) = store.memories.values_mut().find(|m| m.path == path) {
            m.content = content.to_owned();
            m.version_id = new_id("memver");
            m.updated_at = now;
            return Ok(m.id.clone());
        }
        let mem = MemEntry {
            id: new_id("mem"),
            path: path.to_owned(),
            content: content.to_owned(),
            version_id: new_id("memver"),
            created_at: now,
            updated_at: now,
        };
        let id = mem.id.clone();
        store.memories.insert(id.clone(), mem);
        Ok(id)
    }

    /// Deletes the memory at `path`; true if there was one.
    pub(crate) fn remove_memory(&mut self, store_id: &str, path: &str) -> bool {
        self.stores.get_mut(store_id).is_some_and(|s| {
            let before = s.memories.len();
            s.memories.retain(|_, m| m.path != path);
            s.memories.len() != before
        })
    }

    /// `(path, content)` of every memory of a store, sorted by path.
    pub(crate) fn memory_contents(&self, store_id: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .stores
            .get(store_id)
            .map(|s| {
                s.memories
                    .values()
                    .map(|m| (m.path.clone(), m.content.clone()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    fn view_full(ctx: &Ctx<'_>, default_full: bool) -> Result<bool, ApiError> {
        match ctx.param("view") {
            None => Ok(default_full),
            Some("full") => Ok(true),
            Some("basic") => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!("invalid view {v:?}"))),
        }
    }

    fn memory_list(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let full = State::view_full(ctx, false)?;
        let mut limit = parse_limit(ctx.param("limit"), 20, 100)?;
        if full {
            limit = limit.min(20);
        }
        let start = parse_cursor(ctx.param("page"), "mlp_")?;
        let prefix = ctx.param("path_prefix").unwrap_or("/").to_owned();
        if !prefix.starts_with('/') || !prefix.ends_with('/') {
            return Err(ApiError::bad_request(
                "path_prefix must start and end with '/'",
            ));
        }
        let depth: usize = match ctx.param("depth") {
            None => 0,
            Some(d) => d
                .parse()
                .map_err(|_| ApiError::bad_request("depth must be a non-negative integer"))?,
        };
        let store_id = ctx.route.owner.clone();
        let store = self.store_mut(&store_id)?;
        let mut mems: Vec<&MemEntry> = store
            .memories
            .values()
            .filter(|m| m.path.starts_with(&prefix))
            .collect();
        mems.sort_by(|a, b| a.path.cmp(&b.path));
        let mut items: Vec<Value> = Vec::new();
        let mut seen_prefixes = std::collections::HashSet::new();
        for m in mems {
            let rel = &m.path[prefix.len()..];
            let segs: Vec<&str> = rel.split('/').collect();
            if depth > 0 && segs.len() > depth {
                let p = format!("{prefix}{}/", segs[..depth].join("/"));
                if seen_prefixes.insert(p.clone()) {
                    items.push(
                        serde_json::to_value(MemoryPrefix {
                            kind: "memory_prefix".into(),
                            path: p,
                        })
                        .unwrap_or_default(),
                    );
                }
            } else {
                items.push(serde_json::to_value(m.to_wire(&store_id, full)).unwrap_or_default());
            }
        }
        Reply::json(&paginate(items, start, limit, "mlp_"))
    }

    fn memory_retrieve(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let full = State::view_full(ctx, true)?;
        let store_id = ctx.route.owner.clone();
        let store = self.store_mut(&store_id)?;
        let m = store
            .memories
            .get(ctx.item())
            .ok_or_else(|| ApiError::not_found("memory not found"))?;
        Reply::json(&m.to_wire(&store_id, full))
    }

    fn memory_create(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let full = State::view_full(ctx, false)?;
        let params: MemoryCreateParams = serde_json::from_slice(ctx.body)
            .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
        validate_memory_path(&params.path)?;
        let content = params.content.unwrap_or_default();
        validate_memory_content(&content)?;
        let store_id = ctx.route.owner.clone();
        let now = ctx.now;
        let store = self.store_mut(&store_id)?;
        if store.memories.values().any(|m| m.path == params.path) {
            return Err(ApiError::new(
                409,
                "memory_path_conflict_error",
                "a memory already exists at this path",
            )
            .code("memory_path_conflict"));
        }
        if store.memories.len() >= MAX_MEMORIES {
            return Err(ApiError::bad_request("the memory store is full").code("memory_store_full"));
        }
        let mem = MemEntry {
            id: new_id("mem"),
            path: params.path,
            content,
            version_id: new_id("memver"),
            created_at: now,
            updated_at: now,
        };
        let wire = mem.to_wire(&store_id, full);
        store.memories.insert(mem.id.clone(), mem);
        Reply::json(&wire)
    }

    fn memory_update(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let full = State::view_full(ctx, false)?;
        let params: MemoryUpdateParams = serde_json::from_slice(ctx.body)
            .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
        if let Some(p) = &params.path {
            validate_memory_path(p)?;
        }
        if let Some(c) = &params.content {
            validate_memory_content(c)?;
        }
        let store_id = ctx.route.owner.clone();
        let mem_id = ctx.item().to_owned();
        let now = ctx.now;
        let store = self.store_mut(&store_id)?;
        if let Some(p) = &params.path
            && store
                .memories
                .values()
                .any(|m| &m.path == p && m.id != mem_id)
        {
            return Err(ApiError::new(
                409,
                "memory_path_conflict_error",
                "a memory already exists at this path",
            )
            .code("memory_path_conflict"));
        }
        let m = store
            .memories
            .get_mut(&mem_id)
            .ok_or_else(|| ApiError::not_found("memory not found"))?;
        if let Some(pre) = &params.precondition {
            if pre.kind != "content_sha256" {
                return Err(ApiError::bad_request("unknown precondition type"));
            }
            if pre.content_sha256.as_deref() != Some(sha256_hex(&m.content).as_str()) {
                return Err(ApiError::new(
                    409,
                    "memory_precondition_failed_error",
                    "content_sha256 does not match the stored content",
                )
                .code("memory_precondition_failed"));
            }
        }
        if let Some(c) = params.content {
            m.content = c;
        }
        if let Some(p) = params.path {
            m.path = p;
        }
        m.version_id = new_id("memver");
        m.updated_at = now;
        Reply::json(&m.to_wire(&store_id, full))
    }

    fn memory_delete(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let expected = ctx.param("expected_content_sha256").map(str::to_owned);
        let mem_id = ctx.item().to_owned();
        let store = self.store_mut(&ctx.route.owner.clone())?;
        let m = store
            .memories
            .get(&mem_id)
            .ok_or_else(|| ApiError::not_found("memory not found"))?;
        if let Some(e) = expected
            && e != sha256_hex(&m.content)
        {
            return Err(ApiError::new(
                409,
                "memory_precondition_failed_error",
                "expected_content_sha256 does not match the stored content",
            )
            .code("memory_precondition_failed"));
        }
        store.memories.remove(&mem_id);
        Reply::json(&DeletedMemory {
            id: mem_id,
            kind: "memory_deleted".into(),
        })
    }

    /// Ids of the memory stores attached to a session, in resource order.
    pub(crate) fn session_store_ids(&self, session_id: &str) -> Vec<String> {
        self.sessions
            .get(session_id)
            .map(|s| {
                s.resources
                    .iter()
                    .filter_map(|r| r.get("memory_store_id").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Name of a memory store, for reports.
    pub(crate) fn store_name(&self, store_id: &str) -> Option<&str> {
        self.stores.get(store_id).map(|s| s.name.as_str())
    }
}

fn stamp_heartbeat(w: &mut WorkEntry, now: SystemTime) {
    // Every stored value is distinct, so a stale echo can never match by accident.
    let t = match w.last_heartbeat_time {
        Some(prev) if now <= prev => prev + Duration::from_micros(1),
        _ => now,
    };
    w.last_heartbeat_time = Some(t);
    w.last_heartbeat = Some(rfc3339(t));
    w.latest_heartbeat_at = Some(t);
}

fn obj(v: Value) -> Map<String, Value> {
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

fn archive_content_type(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"PK") {
        "application/zip"
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        "application/gzip"
    } else {
        "application/octet-stream"
    }
}

fn parse_limit(v: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
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

fn parse_cursor(v: Option<&str>, prefix: &str) -> Result<usize, ApiError> {
    match v {
        None | Some("") => Ok(0),
        Some(s) => s
            .strip_prefix(prefix)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::bad_request("invalid page cursor")),
    }
}

fn paginate<T>(all: Vec<T>, start: usize, limit: usize, prefix: &str) -> Page<T> {
    let total = all.len();
    let data: Vec<T> = all.into_iter().skip(start).take(limit).collect();
    let end = start + data.len();
    Page {
        data,
        next_page: (end < total).then(|| format!("{prefix}{end}")),
    }
}

/// Tool-result content rules (§5.6): known block types; text blocks non-empty; `is_error`
/// results text-only; at least one block.
fn validate_content(content: Option<&[Value]>, is_error: bool) -> Result<(), String> {
    let blocks = content.unwrap_or_default();
    if blocks.is_empty() {
        return Err("content must hold at least one block".into());
    }
    for b in blocks {
        let kind = b.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "text" => {
                let Some(Value::Object(m)) = Some(b) else {
                    return Err("a block must be an object".into());
                };
                if m.keys().any(|k| k != "type" && k != "text") {
                    return Err("a text block takes only `type` and `text`".into());
                }
                match m.get("text").and_then(Value::as_str) {
                    Some(t) if !t.is_empty() => {}
                    _ => return Err("text blocks must carry non-empty text".into()),
                }
            }
            "image" | "document" | "search_result" => {
                if is_error {
                    return Err("an is_error result may only contain text blocks".into());
                }
                if b.get("source").is_none() {
                    return Err(format!("{kind} block needs a source"));
                }
            }
            other => return Err(format!("unsupported content block type {other:?}")),
        }
    }
    Ok(())
}

fn validate_memory_path(path: &str) -> Result<(), ApiError> {
    let bad = |m: &str| {
        Err(ApiError::bad_request(format!("invalid memory path: {m}")).code("invalid_memory_path"))
    };
    if !path.starts_with('/') {
        return bad("must start with '/'");
    }
    if path.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    let segs: Vec<&str> = path[1..].split('/').collect();
    if segs.is_empty() || segs.len() > 20 {
        return bad("needs 1 to 20 segments");
    }
    if segs.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return bad("empty, '.' or '..' segment");
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        return bad("control characters");
    }
    Ok(())
}

fn validate_memory_content(content: &str) -> Result<(), ApiError> {
    if content.len() > MAX_MEMORY_BYTES {
        return Err(ApiError::new(
            413,
            "invalid_request_error",
            format!(
                "memory content is {} bytes; the limit is {MAX_MEMORY_BYTES}",
                content.len()
            ),
        )
        .code("memory_content_too_large"));
    }
    Ok(())
}

/// Checks a session's outcome against its scenario (used by [`crate::ScenarioReport`]).
pub(crate) fn report_failures(state: &State, session_id: &str) -> (ScriptStatus, Vec<String>) {
    let Some(session) = state.sessions.get(session_id) else {
        return (
            ScriptStatus::Failed {
                message: "unknown session".into(),
            },
            vec![format!("unknown session {session_id}")],
        );
    };
    let mut failures = Vec::new();
    if session.script != ScriptStatus::Done {
        failures.push(format!("script not finished: {:?}", session.script));
    }
    let results = state.tool_results(session_id);
    let mut calls: Vec<(&String, &CallInfo)> = session.calls.iter().collect();
    calls.sort_by_key(|(_, c)| c.order);
    for (id, call) in calls {
        let name = call.label.clone().unwrap_or_else(|| id.clone());
        let posted: Vec<&&PostedResult> = results.iter().filter(|r| &r.tool_use_id == id).collect();
        let accepted: Vec<&&PostedResult> = posted.iter().copied().filter(|r| r.accepted).collect();
        let must_be_silent =
            call.expect_no_result || matches!(call.state, CallState::Denied | CallState::Server);
        if must_be_silent && !posted.is_empty() {
            failures.push(format!(
                "{name} ({}): {} result(s) posted, expected none",
                call.name,
                posted.len()
            ));
        }
        if let Some(expect) = &call.expect {
            if accepted.len() != 1 {
                failures.push(format!(
                    "{name} ({}): {} accepted result(s), expected exactly 1",
                    call.name,
                    accepted.len()
                ));
            }
            if let Some(r) = accepted.first() {
                if let Some(want) = expect.is_error
                    && r.is_error.unwrap_or(false) != want
                {
                    failures.push(format!(
                        "{name} ({}): is_error {:?}, expected {want}; text: {}",
                        call.name,
                        r.is_error,
                        join_text(&r.content)
                    ));
                }
                let text = join_text(&r.content);
                for needle in &expect.contains {
                    if !text.contains(needle.as_str()) {
                        failures.push(format!(
                            "{name} ({}): result lacks {needle:?}; text: {text}",
                            call.name
                        ));
                    }
                }
            }
        }
    }
    for r in results.iter().filter(|r| !r.accepted) {
        failures.push(format!(
            "refused post for {} ({}): {}",
            r.label.clone().unwrap_or_else(|| r.tool_use_id.clone()),
            r.tool_name.clone().unwrap_or_default(),
            r.rejection.clone().unwrap_or_default()
        ));
    }
    (session.script.clone(), failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(FakeConfig::default())
    }

    #[test]
    fn content_rules() {
        assert!(validate_content(Some(&[json!({"type": "text", "text": "ok"})]), false).is_ok());
        assert!(validate_content(Some(&[json!({"type": "text", "text": ""})]), false).is_err());
        assert!(validate_content(Some(&[]), false).is_err());
        assert!(validate_content(None, false).is_err());
        let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}});
        assert!(validate_content(Some(std::slice::from_ref(&image)), false).is_ok());
        assert!(validate_content(Some(&[image]), true).is_err());
        assert!(validate_content(Some(&[json!({"type": "tool_use"})]), false).is_err());
    }

    #[test]
    fn memory_paths() {
        assert!(validate_memory_path("/a/b.md").is_ok());
        assert!(validate_memory_path("a.md").is_err());
        assert!(validate_memory_path("/a/../b").is_err());
        assert!(validate_memory_path("/a//b").is_err());
        assert!(validate_memory_path("/").is_err());
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("User Preferences"), "user-preferences");
        assert_eq!(slug("!!"), "store");
    }

    #[test]
    fn lease_expiry_requeues_and_old_echo_fails() {
        let mut s = state();
        let t0 = SystemTime::now();
        let session = s.create_session(&Scenario::default(), t0);
        let work = s.enqueue(
            WorkData {
                kind: Some("session".into()),
                id: session,
            },
            true,
            t0,
        );
        assert!(s.claim(t0, Some("w1"), Duration::from_secs(5)).is_some());
        s.ack(&work, t0).expect("ack");
        let hb = s
            .heartbeat(
                &work,
                &Credential::EnvironmentKey,
                Some(NO_HEARTBEAT),
                None,
                t0,
            )
            .expect("first beat");
        assert_eq!(hb.state, WorkState::Active);
        let later = t0 + Duration::from_secs(s.lease_ttl + 1);
        assert!(s.sweep(later));
        assert_eq!(s.work_state(&work), Some(WorkState::Queued));
        let err = s
            .heartbeat(
                &work,
                &Credential::EnvironmentKey,
                Some(&hb.last_heartbeat),
                None,
                later,
            )
            .expect_err("stale holder");
        assert_eq!(err.status, 412);
        let again = s
            .claim(later, Some("w2"), Duration::from_secs(5))
            .expect("reclaim");
        assert_eq!(again.id, work);
        assert_eq!(s.claims(&work), 2);
        assert_eq!(s.claimed_by(&work), Some("w2"));
    }

    #[test]
    fn pagination_cursor() {
        let page = paginate((0..5).collect::<Vec<_>>(), 0, 2, "x_");
        assert_eq!(page.data, vec![0, 1]);
        assert_eq!(page.next_page.as_deref(), Some("x_2"));
        let last = paginate((0..5).collect::<Vec<_>>(), 4, 2, "x_");
        assert_eq!(last.data, vec![4]);
        assert_eq!(last.next_page, None);
        assert_eq!(parse_cursor(Some("x_4"), "x_").expect("cursor"), 4);
        assert!(parse_cursor(Some("bogus"), "x_").is_err());
    }
}
