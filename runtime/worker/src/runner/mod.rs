//! The session runner: what the SDK's `SessionToolRunner` does for one session (protocol §5).
//!
//! It opens the session's event stream *first*, then reads the full history (reconcile), then
//! consumes live events. Each `agent.tool_use` for one of the six sandbox tools is routed to the
//! session's sandbox, one call at a time, and its `user.tool_result` posted. Everything else —
//! `agent.custom_tool_use`, server tools such as `web_search`, any other name — is left pending
//! for its owner: nothing is posted.
//!
//! Permission gate (fails closed): `evaluated_permission` absent/`allow` ⇒ run; `deny` ⇒ never
//! run, post nothing; `ask` or any unknown value ⇒ hold until a `user.tool_confirmation` for the
//! id, then run on `allow` and treat anything else as a denial. A verdict seen before its call is
//! remembered. Calls of a thread named by `session.thread_status_terminated` are never run or
//! posted.
//!
//! Exactly-once, across stream drops and reconnects:
//! * a call is executed at most once per runner: ids queued or in flight are never queued again,
//!   and a computed result whose post failed is cached and *re-posted* (not re-run) on the next
//!   reconcile;
//! * a call counts as answered once a `user.tool_result` for it is seen (stream or history) or
//!   our post succeeded; answered calls are never run or posted;
//! * a post that failed ambiguously (timeout, connection error, 5xx, 409) is retried only after
//!   the history shows no result for it yet, so a post that landed despite the error is not
//!   repeated. Retries follow jittered exponential backoff within the lease TTL (else 300 s);
//!   a fatal 4xx gives up at once.
//!
//! A call whose event could only be decoded after repairing its JSON text (a lone surrogate
//! escape in its input; see [`crate::proto`]) goes through the same gate and exactly-once
//! bookkeeping, but never reaches the sandbox: it is answered with one `is_error` result
//! `invalid request: …`.
//!
//! Ownership is decided once, by the `owned` gate: a call that passes it is queued with its
//! parsed [`Tool`], so the sandbox only ever sees the six sandbox tools. The sandbox owns each
//! call's deadline (core: `[runtime.limits] tool_timeout`) and answers a late call `timed out`
//! itself, tagged [`CallOutcome::TimedOut`](crate::sandbox::CallOutcome); the runner keeps
//! only a longer backstop ([`RunnerConfig::backstop`]) for a sandbox that never answers. The
//! wording of results (`(no output)`, `tool '<name>' timed out`) is the core's
//! (`wasm_sandbox_runtime::tool`); [`normalize_content`] enforces the API's shape rules and,
//! like the SDK's `_to_session_content`, writes an empty result or an empty text block as
//! `(no output)`, through the core's `wasm_sandbox_runtime::text_block`, never its own.
//!
//! Modules: `prefetch` (the ack gate, the stream opened ahead), `idle` (the idle countdown),
//! `job` (one call: queue, execute, post, report), `content` (result content for the API).
//!
//! The runner ends on `session.status_terminated`/`session.deleted`, on a fatal stream error
//! (401/403/404), after `max_idle` of idleness following a turn-ending `session.status_idle`
//! (any stop reason but `requires_action`; held or running gated calls defer the countdown;
//! `user.tool_confirmation` and `session.thread_status_terminated` leave it as it is), on
//! `drain` (finishes the running call and posts its result, starts nothing new) and on
//! `cancel` (lease ended or forced shutdown: aborts the running call, posts nothing more).

mod content;
mod idle;
mod job;
mod prefetch;

pub use content::normalize_content;
use idle::IdleClock;
use job::{Computed, InFlight, Job, PhaseDone};
pub use prefetch::{AckGate, Prefetch, Prefetched, prefetch_stream, read_after_ack};

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{ApiError, EventStream, History, ItemClient, StreamError};
use crate::metrics::Metrics;
use crate::proto::{EventBody, OutgoingEvent, Permission, SessionEvent, ToolUse, Verdict};
use crate::sandbox::{SandboxSession, Tool, ToolResult};

/// Runner timing.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Idle grace after a turn ends; `None` disables the idle exit.
    pub max_idle: Option<Duration>,
    /// The configured tool timeout (the top-level `tool_timeout` key, SDK: 150 s, above
    /// bash's own 120 s).
    ///
    /// The runner does **not** apply this as a call's deadline. The deadline is the core's
    /// `[runtime.limits] tool_timeout`: the core session answers a call past it with
    /// `tool '<name>' timed out` itself. This value only sets the runner's backstop,
    /// [`RunnerConfig::backstop`] (this plus [`BACKSTOP_GRACE`]), for a sandbox that never
    /// answers at all; a second deadline of the same length would race the sandbox's own.
    ///
    /// The serve command lowers `[runtime.limits] tool_timeout` to this key when this one is
    /// smaller (`Settings::core_config` in the CLI), so the smaller of the two governs. An
    /// embedder that builds a [`WorkerConfig`](crate::worker::WorkerConfig) and a
    /// [`CoreProvider`](crate::core_adapter::CoreProvider) directly must apply the same rule
    /// (lower the core's limit to this value) or calls get the core's longer deadline.
    pub tool_timeout: Duration,
    /// First reconnect delay (SDK: 0.5 s).
    pub stream_backoff_start: Duration,
    /// Reconnect delay cap (SDK: 10 s).
    pub stream_backoff_cap: Duration,
    /// First result-post retry delay (SDK: 1 s).
    pub send_backoff_start: Duration,
    /// Result-post retry delay cap (SDK: 30 s).
    pub send_backoff_cap: Duration,
    /// Result-post retry window when no lease TTL is known (SDK: 300 s).
    pub default_send_window: Duration,
}

/// How long past [`RunnerConfig::tool_timeout`] the runner waits for the sandbox's own
/// answer before answering a call timed out itself. Longer than the core's slack past its
/// deadline (two epoch ticks for a file tool blocked in a host call).
pub const BACKSTOP_GRACE: Duration = Duration::from_secs(10);

impl RunnerConfig {
    /// The runner's backstop for one call: [`RunnerConfig::tool_timeout`] plus
    /// [`BACKSTOP_GRACE`].
    pub fn backstop(&self) -> Duration {
        self.tool_timeout.saturating_add(BACKSTOP_GRACE)
    }
}

impl Default for RunnerConfig {
    fn default() -> RunnerConfig {
        RunnerConfig {
            max_idle: Some(Duration::from_secs(60)),
            tool_timeout: Duration::from_secs(150),
            stream_backoff_start: Duration::from_millis(500),
            stream_backoff_cap: Duration::from_secs(10),
            send_backoff_start: Duration::from_secs(1),
            send_backoff_cap: Duration::from_secs(30),
            default_send_window: Duration::from_secs(300),
        }
    }
}

/// Why the runner returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// `session.status_terminated` or `session.deleted`.
    Terminated,
    /// `max_idle` passed after the turn ended.
    IdleTimeout,
    /// The stream failed with a fatal 4xx.
    StreamFatal,
    /// The lease ended or shutdown was forced.
    Cancelled,
    /// Graceful shutdown: the running call finished, nothing new started.
    Drained,
}

impl RunEnd {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnd::Terminated => "terminated",
            RunEnd::IdleTimeout => "idle_timeout",
            RunEnd::StreamFatal => "stream_fatal",
            RunEnd::Cancelled => "cancelled",
            RunEnd::Drained => "drained",
        }
    }
}

/// How one tool call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolOutcome {
    /// Ran, result posted (or already answered), not an error.
    Ok,
    /// Ran, error result.
    Error,
    /// Ran past the tool timeout; an error result was produced.
    Timeout,
    /// Denied by the server or the user; nothing ran, nothing posted.
    Denied,
    /// Aborted because the lease ended or shutdown was forced.
    Cancelled,
    /// Ran, but the result could not be posted (yet).
    NotPosted,
}

impl ToolOutcome {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolOutcome::Ok => "ok",
            ToolOutcome::Error => "error",
            ToolOutcome::Timeout => "timeout",
            ToolOutcome::Denied => "denied",
            ToolOutcome::Cancelled => "cancelled",
            ToolOutcome::NotPosted => "not_posted",
        }
    }
}

/// One handled tool call, for observers (the `--local` demo, tests).
#[derive(Clone, Debug)]
pub struct ToolReport {
    /// The `agent.tool_use` id.
    pub tool_use_id: String,
    /// Tool name.
    pub name: String,
    /// Tool input.
    pub input: Value,
    /// How it ended.
    pub outcome: ToolOutcome,
    /// The result content, when the tool ran.
    pub result: Option<ToolResult>,
    /// Whether our post of the result landed.
    pub posted: bool,
    /// Execution time, when the tool ran.
    pub duration: Option<Duration>,
}

/// Receives [`ToolReport`]s.
pub type Reporter = Arc<dyn Fn(ToolReport) + Send + Sync>;

/// Returns the current result-post retry window (the lease TTL), if known.
pub type SendWindow = Arc<dyn Fn() -> Option<Duration> + Send + Sync>;

/// Everything one run needs.
pub struct RunnerContext<S> {
    /// Item-credential client for the session.
    pub client: ItemClient,
    /// The session's sandbox.
    pub sandbox: Arc<S>,
    /// Timing.
    pub config: RunnerConfig,
    /// Hard stop: abort the running call, post nothing more.
    pub cancel: CancellationToken,
    /// Soft stop: finish the running call, start nothing new.
    pub drain: CancellationToken,
    /// Result-post retry window source.
    pub send_window: SendWindow,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Optional observer.
    pub reporter: Option<Reporter>,
    /// The event stream and then the history, opened early by the caller (see
    /// [`prefetch_stream`]); the first connection uses them instead of opening its own.
    pub prefetched: Option<Prefetch>,
}

/// Runs the session until it ends; see the module docs.
pub async fn run_session<S: SandboxSession>(ctx: RunnerContext<S>) -> RunEnd {
    Runner::new(ctx).run().await
}

/// A task handle that aborts its task when dropped, so no tool call or post outlives the
/// runner (or the worker) that started it, even if that future is itself dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Wake {
    Cancel,
    Drain,
    Job(Result<PhaseDone, JoinError>),
    Idle,
    Event(Option<Result<SessionEvent, StreamError>>),
    Timer,
}

struct Runner<S> {
    ctx: RunnerContext<S>,
    seen: HashSet<String>,
    answered: HashSet<String>,
    confirmations: HashMap<String, Verdict>,
    /// Owned calls held for a `user.tool_confirmation`, with their tool.
    awaiting: HashMap<String, (ToolUse, Tool)>,
    terminated_threads: HashSet<String>,
    queue: VecDeque<Job>,
    queued: HashSet<String>,
    unposted: HashMap<String, Computed>,
    in_flight: Option<InFlight>,
    idle: IdleClock,
    idle_may_be_stale: bool,
}

/// The ownership gate, and the only one: a call is this worker's when it is one of the six
/// sandbox tools ([`Tool::from_name`]) and not a custom tool of the same name. Only calls that
/// pass it are queued, each with its [`Tool`], so the sandbox never sees another name.
fn owned(ev: &ToolUse) -> Option<Tool> {
    if ev.custom {
        return None;
    }
    Tool::from_name(&ev.name)
}

async fn opt_join<T>(h: Option<&mut JoinHandle<T>>) -> Result<T, JoinError> {
    match h {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

async fn opt_next(s: Option<&mut EventStream>) -> Option<Result<SessionEvent, StreamError>> {
    match s {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn opt_sleep(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<S: SandboxSession> Runner<S> {
    fn new(ctx: RunnerContext<S>) -> Runner<S> {
        Runner {
            ctx,
            seen: HashSet::new(),
            answered: HashSet::new(),
            confirmations: HashMap::new(),
            awaiting: HashMap::new(),
            terminated_threads: HashSet::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            unposted: HashMap::new(),
            in_flight: None,
            idle: IdleClock::default(),
            idle_may_be_stale: false,
        }
    }

    fn idle_deadline(&self) -> Option<Instant> {
        let max_idle = self.ctx.config.max_idle?;
        Some(self.idle.turn_ended_at? + max_idle)
    }

    async fn wait(&mut self, stream: Option<&mut EventStream>, timer: Option<Instant>) -> Wake {
        let idle_at = self.idle_deadline();
        let cancel = self.ctx.cancel.clone();
        let drain = self.ctx.drain.clone();
        let job = self.in_flight.as_mut().map(|f| &mut f.handle.0);
        tokio::select! {
            biased;
            () = cancel.cancelled() => Wake::Cancel,
            r = opt_join(job) => Wake::Job(r),
            () = drain.cancelled() => Wake::Drain,
            () = opt_sleep(idle_at) => Wake::Idle,
            ev = opt_next(stream) => Wake::Event(ev),
            () = opt_sleep(timer) => Wake::Timer,
        }
    }

    async fn run(mut self) -> RunEnd {
        let cfg = self.ctx.config.clone();
        let mut backoff = cfg.stream_backoff_start;
        tracing::info!("session runner starting");
        let mut prefetched = self.ctx.prefetched.take();
        loop {
            let mut history = None;
            let opened = match prefetched.take() {
                Some(Prefetch(mut task)) => {
                    let joined = tokio::select! {
                        biased;
                        () = self.ctx.cancel.cancelled() => return self.finish(RunEnd::Cancelled).await,
                        () = self.ctx.drain.cancelled() => return self.finish(RunEnd::Drained).await,
                        r = &mut task.0 => r,
                    };
                    match joined {
                        Ok(Ok((stream, listed))) => {
                            history = Some(listed);
                            Ok(stream)
                        }
                        Ok(Err(e)) => Err(e),
                        // The task panicked or was aborted: open a stream here instead.
                        Err(_) => tokio::select! {
                            biased;
                            () = self.ctx.cancel.cancelled() => return self.finish(RunEnd::Cancelled).await,
                            () = self.ctx.drain.cancelled() => return self.finish(RunEnd::Drained).await,
                            r = self.ctx.client.stream() => r,
                        },
                    }
                }
                None => tokio::select! {
                    biased;
                    () = self.ctx.cancel.cancelled() => return self.finish(RunEnd::Cancelled).await,
                    () = self.ctx.drain.cancelled() => return self.finish(RunEnd::Drained).await,
                    r = self.ctx.client.stream() => r,
                },
            };
            match opened {
                Err(e) if e.is_fatal() => {
                    tracing::error!(error = %e, "stream failed permanently");
                    return self.finish(RunEnd::StreamFatal).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "stream connect failed; retrying");
                }
                Ok(mut stream) => {
                    if !self.reconcile(history).await {
                        return self.finish(RunEnd::Cancelled).await;
                    }
                    self.start_next();
                    loop {
                        match self.wait(Some(&mut stream), None).await {
                            Wake::Cancel => return self.finish(RunEnd::Cancelled).await,
                            Wake::Drain => return self.finish(RunEnd::Drained).await,
                            Wake::Idle => {
                                tracing::info!(
                                    max_idle_s = cfg.max_idle.map(|d| d.as_secs_f64()),
                                    "session idle after its turn ended; stopping"
                                );
                                return self.finish(RunEnd::IdleTimeout).await;
                            }
                            Wake::Job(r) => {
                                self.on_job(r);
                                self.start_next();
                            }
                            Wake::Event(None) => {
                                tracing::warn!(
                                    backoff_ms = backoff.as_millis() as u64,
                                    "stream closed; reconnecting"
                                );
                                break;
                            }
                            Wake::Event(Some(Err(StreamError::Malformed { name, error }))) => {
                                tracing::warn!(
                                    event = %name, error = %error,
                                    "malformed event on the stream; reconnecting to reconcile from history"
                                );
                                break;
                            }
                            Wake::Event(Some(Err(e))) => {
                                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "stream disconnected; reconnecting");
                                break;
                            }
                            Wake::Event(Some(Ok(ev))) => {
                                backoff = cfg.stream_backoff_start;
                                if self.on_event(ev) {
                                    tracing::info!("session terminated");
                                    return self.finish(RunEnd::Terminated).await;
                                }
                                self.start_next();
                            }
                            Wake::Timer => {}
                        }
                    }
                }
            }
            let until = Instant::now() + backoff;
            loop {
                match self.wait(None, Some(until)).await {
                    Wake::Timer => break,
                    Wake::Cancel => return self.finish(RunEnd::Cancelled).await,
                    Wake::Drain => return self.finish(RunEnd::Drained).await,
                    Wake::Idle => return self.finish(RunEnd::IdleTimeout).await,
                    Wake::Job(r) => {
                        self.on_job(r);
                        self.start_next();
                    }
                    Wake::Event(_) => {}
                }
            }
            backoff = (backoff * 2).min(cfg.stream_backoff_cap);
        }
    }

    /// Lets the running call finish and post (or aborts it on `Cancelled`/cancel), then returns
    /// `end`. Starts nothing new.
    async fn finish(&mut self, end: RunEnd) -> RunEnd {
        if end == RunEnd::Cancelled {
            return self.abort_in_flight().await;
        }
        while self.in_flight.is_some() {
            let cancel = self.ctx.cancel.clone();
            let job = self.in_flight.as_mut().map(|f| &mut f.handle.0);
            tokio::select! {
                biased;
                () = cancel.cancelled() => return self.abort_in_flight().await,
                r = opt_join(job) => self.on_job(r),
            }
        }
        end
    }

    async fn abort_in_flight(&mut self) -> RunEnd {
        if let Some(mut f) = self.in_flight.take() {
            f.handle.0.abort();
            // Wait until the task is gone so nothing of it outlives the runner.
            let _ = (&mut f.handle.0).await;
            tracing::info!(tool = %f.job.ev.name, tool_use_id = %f.job.ev.id, "tool call aborted; posting nothing");
            self.finish_job(
                &f.job,
                ToolOutcome::Cancelled,
                f.computed.map(|c| c.result),
                false,
                None,
            );
        }
        RunEnd::Cancelled
    }

    /// Reads the full history and routes every unanswered call. Returns false if cancelled.
    /// Reads the history (or takes the one read right after this stream was opened) and
    /// queues what is unanswered.
    async fn reconcile(&mut self, prefetched: Option<Result<History, ApiError>>) -> bool {
        self.idle_may_be_stale = true;
        let cancel = self.ctx.cancel.clone();
        let listed = match prefetched {
            Some(listed) => listed,
            None => tokio::select! {
                biased;
                () = cancel.cancelled() => return false,
                r = self.ctx.client.list_events() => r,
            },
        };
        let history = match listed {
            Ok(h) => h,
            Err(e) => {
                // The answered-set may be incomplete: dispatch nothing from a partial read.
                tracing::warn!(error = %e, "reconcile: history read failed; dispatching nothing from it");
                return true;
            }
        };
        let mut pending: Vec<ToolUse> = Vec::new();
        let mut last_ended_turn = false;
        for decoded in &history {
            let ev = match decoded {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "reconcile: skipping an undecodable history event");
                    continue;
                }
            };
            match &ev.body {
                EventBody::ToolUse(tu) => {
                    self.seen.insert(tu.id.clone());
                    pending.push(tu.clone());
                }
                EventBody::ToolResult { tool_use_id } => {
                    self.answered.insert(tool_use_id.clone());
                }
                EventBody::Confirmation {
                    tool_use_id,
                    verdict,
                } if !self.answered.contains(tool_use_id) => {
                    self.confirmations.insert(tool_use_id.clone(), *verdict);
                }
                EventBody::ThreadTerminated { session_thread_id } => {
                    self.terminated_threads.insert(session_thread_id.clone());
                }
                _ => {}
            }
            if !ev.is_idle_neutral() {
                last_ended_turn = ev.ends_turn();
            }
        }
        self.idle_may_be_stale = false;
        self.release_terminated_holds();
        let unanswered: Vec<ToolUse> = pending
            .into_iter()
            .filter(|ev| !self.answered.contains(&ev.id))
            .collect();
        tracing::debug!(
            events = history.len(),
            unanswered = unanswered.len(),
            "reconciled history"
        );
        self.idle.disarm();
        for ev in &unanswered {
            self.route(ev.clone());
        }
        let held_with_verdict: Vec<(ToolUse, Tool, Verdict)> = self
            .awaiting
            .values()
            .filter_map(|(ev, tool)| {
                self.confirmations
                    .get(&ev.id)
                    .map(|v| (ev.clone(), *tool, *v))
            })
            .collect();
        for (ev, tool, verdict) in held_with_verdict {
            self.apply_verdict(ev, tool, verdict);
        }
        // Still waiting on someone: not answered, not dropped with its thread, not held (the
        // clock holds those), not released by a verdict to this runner (likewise held).
        let outstanding = unanswered.iter().any(|ev| {
            let settled = self.answered.contains(&ev.id)
                || self.in_terminated_thread(ev)
                || self.awaiting.contains_key(&ev.id)
                || (self.confirmations.contains_key(&ev.id) && owned(ev).is_some());
            !settled
        });
        if last_ended_turn && !outstanding {
            self.idle.arm();
        }
        true
    }

    /// Handles a live event; returns true when the session ended.
    fn on_event(&mut self, ev: SessionEvent) -> bool {
        self.idle.note_event(&ev);
        if !ev.is_idle_neutral() {
            self.idle_may_be_stale = false;
        }
        match ev.body {
            EventBody::ToolUse(tu) => {
                if self.seen.insert(tu.id.clone()) {
                    self.route(tu);
                }
            }
            EventBody::ThreadTerminated { session_thread_id } => {
                self.terminated_threads.insert(session_thread_id);
                if self.idle_may_be_stale {
                    self.idle.disarm();
                }
                self.release_terminated_holds();
            }
            EventBody::ToolResult { tool_use_id } => {
                self.answered.insert(tool_use_id);
            }
            EventBody::Confirmation {
                tool_use_id,
                verdict,
            } => {
                self.confirmations.insert(tool_use_id.clone(), verdict);
                if let Some((held, tool)) = self.awaiting.get(&tool_use_id).cloned() {
                    self.apply_verdict(held, tool, verdict);
                }
            }
            EventBody::Terminated => return true,
            EventBody::Idle { .. } | EventBody::Other => {}
        }
        false
    }

    fn in_terminated_thread(&self, ev: &ToolUse) -> bool {
        ev.session_thread_id
            .as_ref()
            .is_some_and(|t| self.terminated_threads.contains(t))
    }

    fn release_terminated_holds(&mut self) {
        let dead: Vec<ToolUse> = self
            .awaiting
            .values()
            .filter(|(ev, _)| self.in_terminated_thread(ev))
            .map(|(ev, _)| ev.clone())
            .collect();
        for ev in dead {
            tracing::info!(tool = %ev.name, tool_use_id = %ev.id, "thread terminated; not executing");
            self.awaiting.remove(&ev.id);
            self.release_hold(&ev);
        }
    }

    fn release_hold(&mut self, ev: &ToolUse) {
        if self.idle_may_be_stale && self.in_terminated_thread(ev) {
            self.idle.disarm();
        }
        self.idle.release();
    }

    fn route(&mut self, ev: ToolUse) {
        if self.in_terminated_thread(&ev) {
            tracing::debug!(tool = %ev.name, tool_use_id = %ev.id, "thread terminated; not executing");
            return;
        }
        let Some(tool) = owned(&ev) else {
            tracing::info!(
                tool = %ev.name, tool_use_id = %ev.id, custom = ev.custom,
                "tool not owned by this worker; leaving it pending for its owner"
            );
            return;
        };
        if ev.permission == Permission::Deny {
            self.resolve_denied(&ev);
            return;
        }
        match self.confirmations.get(&ev.id).copied() {
            None => {
                if ev.permission == Permission::Allow {
                    self.enqueue(ev, tool, false);
                } else if !self.awaiting.contains_key(&ev.id) {
                    tracing::info!(
                        tool = %ev.name, tool_use_id = %ev.id,
                        "tool requires user confirmation; holding until user.tool_confirmation"
                    );
                    self.awaiting.insert(ev.id.clone(), (ev, tool));
                    self.idle.hold();
                }
            }
            Some(verdict) => self.apply_verdict(ev, tool, verdict),
        }
    }

    fn apply_verdict(&mut self, ev: ToolUse, tool: Tool, verdict: Verdict) {
        let was_held = self.awaiting.remove(&ev.id).is_some();
        match verdict {
            Verdict::Allow => {
                tracing::info!(tool = %ev.name, tool_use_id = %ev.id, "tool call confirmed");
                if !was_held {
                    self.idle.hold();
                }
                self.enqueue(ev, tool, true);
            }
            Verdict::Deny => {
                if was_held {
                    self.idle.release();
                }
                self.resolve_denied(&ev);
            }
        }
    }

    fn resolve_denied(&mut self, ev: &ToolUse) {
        if !self.answered.insert(ev.id.clone()) {
            return;
        }
        tracing::info!(tool = %ev.name, tool_use_id = %ev.id, "tool call denied; not executing");
        self.ctx
            .metrics
            .tool_call(&ev.name, ToolOutcome::Denied.as_str());
        self.report(ToolReport {
            tool_use_id: ev.id.clone(),
            name: ev.name.clone(),
            input: ev.input.clone(),
            outcome: ToolOutcome::Denied,
            result: None,
            posted: false,
            duration: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool_use(kind: &str, name: &str) -> ToolUse {
        let ev =
            SessionEvent::from_value(&json!({"type": kind, "id": "a", "name": name, "input": {}}))
                .expect("event");
        match ev.body {
            EventBody::ToolUse(tu) => tu,
            _ => panic!("not a tool use"),
        }
    }

    /// The gate is the one place a name becomes a [`Tool`]: the six sandbox tools pass,
    /// custom tools of the same name, server tools and other names do not.
    #[test]
    fn ownership_gate() {
        assert_eq!(owned(&tool_use("agent.tool_use", "bash")), Some(Tool::Bash));
        assert_eq!(owned(&tool_use("agent.tool_use", "grep")), Some(Tool::Grep));
        assert_eq!(owned(&tool_use("agent.tool_use", "web_search")), None);
        assert_eq!(owned(&tool_use("agent.tool_use", "Read")), None);
        assert_eq!(owned(&tool_use("agent.custom_tool_use", "read")), None);
    }

    #[test]
    fn backstop_is_past_the_sandbox_deadline() {
        let c = RunnerConfig::default();
        assert_eq!(c.backstop(), c.tool_timeout + BACKSTOP_GRACE);
    }
}
