//! A faithful in-process fake of Anthropic's side of the self-hosted environment protocol.
//!
//! The fake serves, on `127.0.0.1:0`, what a worker talks to (`protocol.md` §15): the work
//! queue (poll with `block_ms` long-poll and `reclaim_older_than_ms`, ack, heartbeat leases
//! with TTL and 412s, stop, stats, list/retrieve/update), sessions (retrieve, SSE event
//! stream, event history, sending events), skill versions and archives, and memory stores.
//! Sessions are driven by [`Scenario`] scripts (JSON files under `examples/sessions/`): the
//! fake agent emits `agent.tool_use`, waits for the worker's `user.tool_result`, asks for
//! confirmations, goes idle and terminates.
//!
//! Its wire types ([`wire`]) are written from the `anthropic` Python SDK 2.10.0 models and
//! are deliberately independent of the worker crate's, so a wire mismatch between worker and
//! fake fails a test. `tests/fake-control-plane/sdk_check/run.py` drives the fake with the
//! SDK's own `EnvironmentWorker` to keep the fake honest.
//!
//! Tests get:
//! * **fault injection**: 5xx/4xx bursts per endpoint ([`Handle::fail_next`],
//!   [`Handle::inject_failure`]), slow responses ([`Handle::delay`]), stream drops
//!   ([`Handle::drop_stream_after`]), malformed frames ([`Handle::inject_malformed_event`]),
//!   raw JSON text a `Value` cannot hold as a call's input, on the stream and in the history
//!   (`raw_input` of a `tool_use` step, e.g. a lone surrogate escape `"\ud800"`),
//!   a stolen lease ([`Handle::steal_lease`]), a stop mid-call ([`Handle::request_stop`] or the
//!   `request_stop` script step), lease expiry ([`Handle::expire_lease`]), a reply lost after
//!   the request was served ([`FailureSpec::after_serving`]), calls made while a stream was
//!   down ([`Handle::drop_streams_missing`]);
//! * **sessions driven by hand** as well as by scripts: [`Handle::emit_tool_use`] emits a
//!   [`ToolUse`] (any permission, a chosen id, custom or not) judged like a scripted call;
//! * **inspection**: every request ([`Handle::requests`]), every posted result, accepted or
//!   refused ([`Handle::tool_results`]), stops, heartbeats, work and session state, and
//!   [`Handle::wait_for`] to wait on any predicate with a timeout, and the minted sessions
//!   tokens ([`Handle::minted_secrets`]) to look for them in logs;
//! * a **controllable clock** ([`Handle::advance_clock`]) for TTLs and reclaim windows;
//! * **plain HTTP or HTTPS** ([`FakeConfig::tls`]): with TLS a CA made at start-up
//!   ([`Handle::ca_cert_pem`]) and ALPN `h2` + `http/1.1`; every request records its HTTP
//!   version and connection, and [`Handle::connections`] lists the connections ([`transport`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane, Scenario, WorkState};
//!
//! let fake = FakeControlPlane::start(FakeConfig::default()).await?;
//! let (work_id, session_id) = fake.enqueue_session(Scenario::example("all-tools")?);
//! // … point a worker at fake.url() with fake.environment_id() / fake.environment_key() …
//! fake.wait_for_work_state(&work_id, WorkState::Stopped, Duration::from_secs(60)).await?;
//! assert!(fake.scenario_report(&session_id).is_ok());
//! # Ok(()) }
//! ```

mod admin;
pub mod clock;
mod drive;
pub mod endpoint;
mod faults;
mod inspect;
pub mod record;
pub mod scenario;
mod script;
mod server;
pub mod state;
pub mod transport;
pub mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use drive::ToolUse;
pub use endpoint::Endpoint;
pub use record::{
    Credential, FailureSpec, HeartbeatRecord, MintedSecret, PostedResult, RecordedRequest,
    StopRecord, StreamCut,
};
pub use scenario::{Scenario, ScenarioError};
pub use state::{CallState, ScriptStatus, State};
pub use transport::{ConnectionRecord, TlsOptions};
pub use wire::{QueueStats, Work, WorkState};

use crate::clock::FakeClock;

/// Settings of a fake control plane. `FakeConfig::default()` suits most tests.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// Address to bind (default `127.0.0.1:0`).
    pub addr: SocketAddr,
    /// Environment id (default: random `env_…`).
    pub environment_id: Option<String>,
    /// Environment key (default: random `sk-ant-oat01-fake-…`).
    pub environment_key: Option<String>,
    /// Claude API key for app/ops calls (default: random `sk-ant-api03-fake-…`).
    pub api_key: Option<String>,
    /// Lease TTL reported by heartbeats (default 60 s).
    pub lease_ttl_seconds: u64,
    /// Lower clamp for `desired_ttl_seconds` (default 1).
    pub min_ttl_seconds: u64,
    /// Upper clamp for `desired_ttl_seconds` (default 3600).
    pub max_ttl_seconds: u64,
    /// `reclaim_older_than_ms` when the poll omits it (default 5000).
    pub default_reclaim_ms: u64,
    /// Reply 200 + work JSON to stop instead of 204 No Content (what GO says production does).
    pub stop_returns_work: bool,
    /// Status for a duplicate `user.tool_result` (default 400; 409 exercises §14 item 25).
    pub duplicate_result_status: u16,
    /// Answer 400 when `anthropic-version` is missing (default true).
    pub require_version_header: bool,
    /// Interval of `event: ping` keep-alives on event streams (default 15 s; `None` = off).
    pub sse_ping_interval: Option<Duration>,
    /// Window for `workers_polling` (default 30 s).
    pub workers_polling_window: Duration,
    /// Put `api_base_url` (the fake's URL) in work secrets (default false).
    pub secret_api_base_url: bool,
    /// Mint a sessions-token `secret` on every claim (default true).
    pub mint_secrets: bool,
    /// How often expired leases are swept (default 50 ms).
    pub sweep_interval: Duration,
    /// Serve the test-only `/_fake/*` admin API (default false; the `serve-fake` binary
    /// turns it on).
    pub admin_api: bool,
    /// Serve HTTPS instead of plain HTTP (default `None`: plain). A fresh self-signed CA is
    /// made at start-up ([`Handle::ca_cert_pem`]); ALPN offers `h2` and `http/1.1`.
    pub tls: Option<TlsOptions>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            environment_id: None,
            environment_key: None,
            api_key: None,
            lease_ttl_seconds: 60,
            min_ttl_seconds: 1,
            max_ttl_seconds: 3600,
            default_reclaim_ms: 5000,
            stop_returns_work: false,
            duplicate_result_status: 400,
            require_version_header: true,
            sse_ping_interval: Some(Duration::from_secs(15)),
            workers_polling_window: Duration::from_secs(30),
            secret_api_base_url: false,
            mint_secrets: true,
            sweep_interval: Duration::from_millis(50),
            admin_api: false,
            tls: None,
        }
    }
}

/// Errors of the fake's own API (not HTTP errors it serves).
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// Binding or serving failed.
    #[error("fake control plane I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A `wait_for*` helper ran out of time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// An id the fake does not know, or an operation it refused.
    #[error("{0}")]
    Refused(String),
    /// A scenario did not load.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}

/// State shared by the server, the scripts and the handle.
pub(crate) struct Shared {
    pub clock: FakeClock,
    pub state: Mutex<State>,
    pub changed: watch::Sender<u64>,
    pub shutdown: watch::Sender<bool>,
    pub config: FakeConfig,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes every waiter (long polls, scripts, `wait_for`).
    pub fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Creates a session + work item for a scenario and starts its script.
    pub fn enqueue_scenario(self: &Arc<Self>, scenario: Scenario) -> (String, String) {
        let now = self.now();
        let (work_id, session_id) = {
            let mut s = self.lock();
            let session_id = s.create_session(&scenario, now);
            let work_id = s.enqueue(
                wire::WorkData {
                    kind: Some("session".into()),
                    id: session_id.clone(),
                },
                self.config.mint_secrets,
                now,
            );
            (work_id, session_id)
        };
        tokio::spawn(script::run(Arc::clone(self), session_id.clone(), scenario));
        self.bump();
        (work_id, session_id)
    }

    /// Waits until `pred` holds, the timeout passes (`Ok(false)`), or shutdown (`Err`).
    pub async fn wait_until(
        &self,
        timeout: Option<Duration>,
        mut pred: impl FnMut(&State) -> bool,
    ) -> Result<bool, ()> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut rx = self.changed.subscribe();
        let mut shutdown = self.shutdown.subscribe();
        loop {
            rx.borrow_and_update();
            if pred(&self.lock()) {
                return Ok(true);
            }
            if *shutdown.borrow_and_update() {
                return Err(());
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(()) },
                _ = shutdown.changed() => return Err(()),
                () = sleep => return Ok(false),
            }
        }
    }
}

/// Entry point.
pub struct FakeControlPlane;

impl FakeControlPlane {
    /// Binds the configured address, starts serving, and returns the handle. Must be called
    /// inside a tokio runtime; the server and scripts run as tasks on it.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(config: FakeConfig) -> Result<Handle, FakeError> {
        let tls = match &config.tls {
            Some(opts) => Some(Arc::new(transport::TlsMaterial::generate(opts)?)),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let url = transport::base_url(addr, tls.is_some());
        let mut state = State::new(config.clone());
        state.base_url = url.clone();
        let (changed, _) = watch::channel(0u64);
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            clock: FakeClock::default(),
            state: Mutex::new(state),
            changed,
            shutdown,
            config,
        });
        let router = server::router(Arc::clone(&shared));
        let server = tokio::spawn(transport::accept_loop(
            listener,
            tls.clone(),
            router,
            Arc::clone(&shared),
        ));
        let sweeper = tokio::spawn(sweep_loop(Arc::clone(&shared)));
        Ok(Handle {
            shared,
            url,
            addr,
            ca_cert_pem: tls.map(|t| t.ca_pem.clone()),
            tasks: vec![server, sweeper],
        })
    }
}

async fn sweep_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut tick = tokio::time::interval(shared.config.sweep_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = shared.now();
        let changed = shared.lock().sweep(now);
        if changed {
            shared.bump();
        }
    }
}

/// How a scenario went, from the fake's point of view.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    /// The session.
    pub session_id: String,
    /// Script progress.
    pub script: ScriptStatus,
    /// Every broken expectation: unfinished script, missing/extra/refused results, wrong
    /// `is_error` or content.
    pub failures: Vec<String>,
}

impl ScenarioReport {
    /// True when the script finished and every expectation held.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The running fake. Dropping it shuts the server down (open streams end, long polls return).
pub struct Handle {
    shared: Arc<Shared>,
    url: String,
    addr: SocketAddr,
    ca_cert_pem: Option<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.shared.shutdown.send(true);
    }
}

impl Handle {
    // ------------------------------------------------------------ identity

    /// Base URL, e.g. `http://127.0.0.1:41234`, or `https://127.0.0.1:41234` with TLS (set
    /// `ANTHROPIC_BASE_URL` to it).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Bound address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// With TLS on: the PEM of the CA that signed the fake's certificate (made at start-up,
    /// valid for a day), for clients to trust; `None` for plain HTTP.
    #[must_use]
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca_cert_pem.as_deref()
    }

    /// The environment id.
    #[must_use]
    pub fn environment_id(&self) -> String {
        self.shared.lock().environment_id.clone()
    }

    /// The environment key (the worker's credential).
    #[must_use]
    pub fn environment_key(&self) -> String {
        self.shared.lock().environment_key.clone()
    }

    /// The Claude API key (for app/ops calls such as stats, retrieve, graceful stop).
    #[must_use]
    pub fn api_key(&self) -> String {
        self.shared.lock().api_key.clone()
    }

    // ------------------------------------------------------------ work and sessions

    /// Creates a session from `scenario`, queues a `session` work item for it and starts the
    /// script. Returns `(work_id, session_id)`.
    pub fn enqueue_session(&self, scenario: Scenario) -> (String, String) {
        self.shared.enqueue_scenario(scenario)
    }

    /// Queues another work item for an existing session (new input on a dormant session).
    ///
    /// # Errors
    /// When the session is unknown.
    pub fn enqueue_work_for_session(&self, session_id: &str) -> Result<String, FakeError> {
        let now = self.shared.now();
        let id = {
            let mut s = self.shared.lock();
            if !s.sessions.contains_key(session_id) {
                return Err(FakeError::Refused(format!("unknown session {session_id}")));
            }
            let with_secret = self.shared.config.mint_secrets;
            s.enqueue(
                wire::WorkData {
                    kind: Some("session".into()),
                    id: session_id.to_owned(),
                },
                with_secret,
                now,
            )
        };
        self.shared.bump();
        Ok(id)
    }

    /// Archives a session (`archived_at` set on `GET /v1/sessions/{id}`); its status is kept.
    ///
    /// # Errors
    /// When the session is unknown.
    pub fn archive_session(&self, session_id: &str) -> Result<(), FakeError> {
        let now = self.shared.now();
        {
            let mut s = self.shared.lock();
            let Some(entry) = s.sessions.get_mut(session_id) else {
                return Err(FakeError::Refused(format!("unknown session {session_id}")));
            };
            entry.archived_at = Some(now);
            entry.updated_at = now;
        }
        self.shared.bump();
        Ok(())
    }

    /// Queues a `healthcheck` item (the worker must ack and force-stop it).
    pub fn enqueue_healthcheck(&self) -> String {
        self.enqueue_raw_work(Some("healthcheck"), "hc_fake", true)
    }

    /// Queues an item with any `data.type` (`None` leaves it out) and id, with or without a
    /// secret.
    pub fn enqueue_raw_work(&self, kind: Option<&str>, data_id: &str, with_secret: bool) -> String {
        let now = self.shared.now();
        let id = self.shared.lock().enqueue(
            wire::WorkData {
                kind: kind.map(str::to_owned),
                id: data_id.to_owned(),
            },
            with_secret,
            now,
        );
        self.shared.bump();
        id
    }

    /// Appends an event to a session as the app (or the agent) would, e.g. a
    /// `user.tool_confirmation` or a `user.message`. `id` and `processed_at` are added.
    ///
    /// # Errors
    /// When the session is unknown or `event` is not an object.
    pub fn emit_event(&self, session_id: &str, event: Value) -> Result<Value, FakeError> {
        let Value::Object(map) = event else {
            return Err(FakeError::Refused("an event must be a JSON object".into()));
        };
        let now = self.shared.now();
        let out = self
            .shared
            .lock()
            .append_event(session_id, map, now)
            .map_err(|e| FakeError::Refused(e.message));
        self.shared.bump();
        out
    }

    /// Requests a stop of a work item, as ops would with the API key (graceful: the next
    /// heartbeat reports `stopping`; force: `stopped` now). Recorded in [`Handle::stops`]
    /// with `seq` 0.
    ///
    /// # Errors
    /// When the item is unknown or already stopped.
    pub fn request_stop(&self, work_id: &str, force: bool) -> Result<(), FakeError> {
        let now = self.shared.now();
        let r = self.shared.lock().admin_stop(work_id, force, now);
        self.shared.bump();
        r.map_err(|e| FakeError::Refused(e.message))
    }

    // ------------------------------------------------------------ skills and memory

    /// Publishes a skill version serving `archive` (zip or tar.gz bytes) as its content;
    /// `latest` resolves to the newest. Returns the version id.
    pub fn add_skill_version(&self, skill_id: &str, name: &str, archive: Vec<u8>) -> String {
        let now = self.shared.now();
        self.shared
            .lock()
            .add_skill_version(skill_id, name, Bytes::from(archive), now)
    }

    /// Creates an empty memory store; returns its id.
    pub fn create_memory_store(&self, name: &str) -> String {
        self.shared.lock().create_store(name)
    }

    /// Creates or overwrites a memory "remotely" (as another session or the app would).
    ///
    /// # Errors
    /// When the store is unknown.
    pub fn put_memory(
        &self,
        store_id: &str,
        path: &str,
        content: &str,
    ) -> Result<String, FakeError> {
        let now = self.shared.now();
        let r = self.shared.lock().put_memory(store_id, path, content, now);
        self.shared.bump();
        r.map_err(|e| FakeError::Refused(e.message))
    }

    /// Deletes a memory "remotely"; true if it existed.
    pub fn delete_memory(&self, store_id: &str, path: &str) -> bool {
        let r = self.shared.lock().remove_memory(store_id, path);
        self.shared.bump();
        r
    }

    /// `(path, content)` of every memory in a store, sorted by path.
    #[must_use]
    pub fn memories(&self, store_id: &str) -> Vec<(String, String)> {
        self.shared.lock().memory_contents(store_id)
    }

    /// Ids of the memory stores attached to a session, with their names.
    #[must_use]
    pub fn session_memory_stores(&self, session_id: &str) -> Vec<(String, String)> {
        let s = self.shared.lock();
        s.session_store_ids(session_id)
            .into_iter()
            .map(|id| {
                let name = s.store_name(&id).unwrap_or_default().to_owned();
                (id, name)
            })
            .collect()
    }

    /// Stops serving: streams end, long polls return, the listener closes.
    pub async fn shutdown(mut self) {
        let _ = self.shared.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}
