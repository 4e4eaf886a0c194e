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
//! The runner ends on `session.status_terminated`/`session.deleted`, on a fatal stream error
//! (401/403/404), after `max_idle` of idleness following a turn-ending `session.status_idle`
//! (any stop reason but `requires_action`; held or running gated calls defer the countdown;
//! `user.tool_confirmation` and `session.thread_status_terminated` leave it as it is), on
//! `drain` (finishes the running call and posts its result, starts nothing new) and on
//! `cancel` (lease ended or forced shutdown: aborts the running call, posts nothing more).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use serde_json::Value;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::client::{ApiError, EventStream, History, ItemClient, StreamError};
use crate::metrics::Metrics;
use crate::proto::{EventBody, OutgoingEvent, Permission, SessionEvent, ToolUse, Verdict};
use crate::sandbox::{SANDBOX_TOOLS, SandboxSession, ToolCall, ToolResult};

/// Runner timing.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Idle grace after a turn ends; `None` disables the idle exit.
    pub max_idle: Option<Duration>,
    /// Outer bound of one tool call (SDK: 150 s, above bash's own 120 s).
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

/// An event stream opened, then the history read, ahead of the runner.
pub type Prefetched = Result<(EventStream, Result<History, ApiError>), ApiError>;

/// A running [`prefetch_stream`] task (aborted when dropped).
pub struct Prefetch(AbortOnDrop<Prefetched>);

/// The answer to a work item's ack, as the item task sees it while its reads run ahead of it.
///
/// The worker starts the item's reads (session, event stream, history, skills, memory) at the
/// same time as the ack (see [`crate::worker`]); this gate tells them whether the ack has been
/// answered yet and how. `None` = not answered yet; a dropped sender counts as a failed ack.
#[derive(Clone, Debug)]
pub struct AckGate(tokio::sync::watch::Receiver<Option<bool>>);

impl AckGate {
    /// A gate and the sender that opens it (`Some(true)`: acked; `Some(false)`: the ack failed).
    pub fn new() -> (tokio::sync::watch::Sender<Option<bool>>, AckGate) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (tx, AckGate(rx))
    }

    /// A gate that is already open (the item was acked before it was handed over).
    pub fn acked_already() -> AckGate {
        let (_tx, rx) = tokio::sync::watch::channel(Some(true));
        AckGate(rx)
    }

    /// Whether the ack has been answered (either way).
    pub fn answered(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Waits for the ack's answer: true once it succeeded, false if it failed (or its sender
    /// went away without answering).
    pub async fn acked(&mut self) -> bool {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => *v == Some(true),
            Err(_) => false,
        }
    }
}

/// Runs an idempotent read that may go out before the item's ack was answered; if the control
/// plane refused it (a fatal 4xx such as 401/403: the item's sessions token may only become
/// valid once the ack lands) and the ack had not been answered when the read was sent, waits
/// for the ack and, once it succeeded, sends the read once more. A read sent after the ack's
/// answer is not retried here (its refusal is the real answer). Only reads go through this:
/// nothing is ever *posted* before the ack.
pub async fn read_after_ack<T, F, Fut>(gate: &mut AckGate, op: F) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let before_ack = !gate.answered();
    match op().await {
        Err(e) if before_ack && e.is_fatal() => {
            tracing::debug!(error = %e, "a read sent before the ack's answer was refused; retrying it after the ack");
            if gate.acked().await {
                op().await
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

/// Opens the session's event stream and then reads its history, in the background, so
/// that both are ready when the runner starts (the worker starts this together with the ack,
/// and it runs while the sandbox is created and skills are installed). The order is the
/// runner's own (stream first, so nothing appended between the two reads is missed). Both are
/// reads: a refusal met before the ack's answer is retried once after a successful ack
/// ([`read_after_ack`]).
pub fn prefetch_stream(client: ItemClient, gate: AckGate) -> Prefetch {
    Prefetch(AbortOnDrop(tokio::spawn(
        async move {
            let mut gate = gate;
            let stream = read_after_ack(&mut gate, || client.stream()).await?;
            let history = read_after_ack(&mut gate, || client.list_events()).await;
            Ok((stream, history))
        }
        .in_current_span(),
    )))
}

/// Runs the session until it ends; see the module docs.
pub async fn run_session<S: SandboxSession>(ctx: RunnerContext<S>) -> RunEnd {
    Runner::new(ctx).run().await
}

/// A call waiting to run, with whether a confirmation released it (it then holds the idle
/// clock until done).
#[derive(Clone, Debug)]
struct Job {
    ev: ToolUse,
    gated: bool,
}

struct ExecDone {
    /// `None` = timed out; `Some(None)` = the sandbox does not run this tool.
    result: Option<Option<ToolResult>>,
    duration: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PostOutcome {
    Posted,
    AlreadyAnswered,
    Rejected,
    WindowExhausted,
    Cancelled,
}

enum PhaseDone {
    Exec(ExecDone),
    Post(PostOutcome),
}

/// The computed result of the in-flight call, carried into its post phase.
struct Computed {
    event: OutgoingEvent,
    result: ToolResult,
    outcome: ToolOutcome,
    duration: Option<Duration>,
}

struct InFlight {
    job: Job,
    computed: Option<Computed>,
    handle: AbortOnDrop<PhaseDone>,
}

/// A task handle that aborts its task when dropped, so no tool call or post outlives the
/// runner (or the worker) that started it, even if that future is itself dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The idle countdown (SDK `_IdleClock`).
#[derive(Debug, Default)]
struct IdleClock {
    turn_ended_at: Option<Instant>,
    holds: u32,
    arm_deferred: bool,
}

impl IdleClock {
    fn note_event(&mut self, ev: &SessionEvent) {
        if ev.is_idle_neutral() {
            return;
        }
        if ev.ends_turn() {
            self.arm();
        } else {
            self.disarm();
        }
    }

    fn arm(&mut self) {
        if self.holds > 0 {
            self.arm_deferred = true;
            return;
        }
        self.arm_deferred = false;
        self.turn_ended_at = Some(Instant::now());
    }

    fn disarm(&mut self) {
        self.arm_deferred = false;
        self.turn_ended_at = None;
    }

    fn hold(&mut self) {
        self.holds += 1;
        if self.turn_ended_at.take().is_some() {
            self.arm_deferred = true;
        }
    }

    fn release(&mut self) {
        self.holds = self.holds.saturating_sub(1);
        if self.holds == 0 && self.arm_deferred {
            self.arm();
        }
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
    awaiting: HashMap<String, ToolUse>,
    terminated_threads: HashSet<String>,
    queue: VecDeque<Job>,
    queued: HashSet<String>,
    unposted: HashMap<String, Computed>,
    in_flight: Option<InFlight>,
    idle: IdleClock,
    idle_may_be_stale: bool,
}

fn owned(ev: &ToolUse) -> bool {
    !ev.custom && SANDBOX_TOOLS.contains(&ev.name.as_str())
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

/// Makes content acceptable to the API: never empty, never an empty text block, only text on
/// an error result, unknown block kinds sent as their JSON text (SDK `_to_session_content`).
pub fn normalize_content(result: &ToolResult) -> Vec<Value> {
    let no_output = || serde_json::json!({"type": "text", "text": "(no output)"});
    let mut out = Vec::with_capacity(result.content.len().max(1));
    for block in &result.content {
        let kind = block.get("type").and_then(Value::as_str);
        match kind {
            Some("text") => match block.get("text").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => {
                    out.push(serde_json::json!({"type": "text", "text": t}))
                }
                _ => out.push(no_output()),
            },
            Some("image" | "document" | "search_result") if !result.is_error => {
                out.push(block.clone());
            }
            _ => out.push(serde_json::json!({"type": "text", "text": block.to_string()})),
        }
    }
    if out.is_empty() {
        out.push(no_output());
    }
    out
}

/// Whether `events` holds a `user.tool_result` for `id`.
fn history_has_result(events: &History, id: &str) -> bool {
    events.iter().any(|e| {
        matches!(
            e.as_ref().map(|e| &e.body),
            Ok(EventBody::ToolResult { tool_use_id }) if tool_use_id == id
        )
    })
}

async fn post_with_window(
    client: ItemClient,
    event: OutgoingEvent,
    config: RunnerConfig,
    window: SendWindow,
    cancel: CancellationToken,
) -> PostOutcome {
    let id = event.tool_use_id().to_owned();
    let start = Instant::now();
    let events = [event];
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        if cancel.is_cancelled() {
            return PostOutcome::Cancelled;
        }
        let err = match client.send_events(&events).await {
            Ok(()) => return PostOutcome::Posted,
            Err(e) => e,
        };
        if err.is_fatal() {
            tracing::error!(tool_use_id = %id, error = %err, "tool result rejected; giving up");
            return PostOutcome::Rejected;
        }
        let window = window().unwrap_or(config.default_send_window);
        let Some(remaining) = window.checked_sub(start.elapsed()).filter(|r| !r.is_zero()) else {
            tracing::error!(tool_use_id = %id, attempts = attempt, error = %err, "failed to send tool result");
            return PostOutcome::WindowExhausted;
        };
        let delay = config
            .send_backoff_start
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(config.send_backoff_cap);
        let wait = delay
            .mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
            .min(remaining);
        tracing::warn!(
            tool_use_id = %id, attempt, backoff_ms = wait.as_millis() as u64, error = %err,
            "tool result send failed; retrying"
        );
        tokio::select! {
            () = cancel.cancelled() => return PostOutcome::Cancelled,
            () = tokio::time::sleep(wait) => {}
        }
        // The failed attempt may have landed anyway (the response was lost, or a 409 for a
        // duplicate): only post again if the history has no result for this call yet.
        match client.list_events().await {
            Ok(history) if history_has_result(&history, &id) => {
                tracing::info!(tool_use_id = %id, "tool result already recorded; not posting again");
                return PostOutcome::AlreadyAnswered;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "history check before a result retry failed"),
        }
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
        let held_with_verdict: Vec<(ToolUse, Verdict)> = self
            .awaiting
            .values()
            .filter_map(|ev| self.confirmations.get(&ev.id).map(|v| (ev.clone(), *v)))
            .collect();
        for (ev, verdict) in held_with_verdict {
            self.apply_verdict(ev, verdict);
        }
        // Still waiting on someone: not answered, not dropped with its thread, not held (the
        // clock holds those), not released by a verdict to this runner (likewise held).
        let outstanding = unanswered.iter().any(|ev| {
            let settled = self.answered.contains(&ev.id)
                || self.in_terminated_thread(ev)
                || self.awaiting.contains_key(&ev.id)
                || (self.confirmations.contains_key(&ev.id) && owned(ev));
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
                if let Some(held) = self.awaiting.get(&tool_use_id).cloned() {
                    self.apply_verdict(held, verdict);
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
            .filter(|ev| self.in_terminated_thread(ev))
            .cloned()
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
        if !owned(&ev) {
            tracing::info!(
                tool = %ev.name, tool_use_id = %ev.id, custom = ev.custom,
                "tool not owned by this worker; leaving it pending for its owner"
            );
            return;
        }
        if ev.permission == Permission::Deny {
            self.resolve_denied(&ev);
            return;
        }
        match self.confirmations.get(&ev.id).copied() {
            None => {
                if ev.permission == Permission::Allow {
                    self.enqueue(ev, false);
                } else if !self.awaiting.contains_key(&ev.id) {
                    tracing::info!(
                        tool = %ev.name, tool_use_id = %ev.id,
                        "tool requires user confirmation; holding until user.tool_confirmation"
                    );
                    self.awaiting.insert(ev.id.clone(), ev);
                    self.idle.hold();
                }
            }
            Some(verdict) => self.apply_verdict(ev, verdict),
        }
    }

    fn apply_verdict(&mut self, ev: ToolUse, verdict: Verdict) {
        let was_held = self.awaiting.remove(&ev.id).is_some();
        match verdict {
            Verdict::Allow => {
                tracing::info!(tool = %ev.name, tool_use_id = %ev.id, "tool call confirmed");
                if !was_held {
                    self.idle.hold();
                }
                self.enqueue(ev, true);
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

    fn enqueue(&mut self, ev: ToolUse, gated: bool) {
        let busy = self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.job.ev.id == ev.id);
        if self.answered.contains(&ev.id) || self.queued.contains(&ev.id) || busy {
            if gated {
                self.release_hold(&ev);
            }
            return;
        }
        self.queued.insert(ev.id.clone());
        self.queue.push_back(Job { ev, gated });
    }

    /// Starts the next queued call if none is running.
    fn start_next(&mut self) {
        if self.in_flight.is_some()
            || self.ctx.drain.is_cancelled()
            || self.ctx.cancel.is_cancelled()
        {
            return;
        }
        while let Some(job) = self.queue.pop_front() {
            self.queued.remove(&job.ev.id);
            if self.answered.contains(&job.ev.id) || self.in_terminated_thread(&job.ev) {
                if job.gated {
                    self.release_hold(&job.ev);
                }
                continue;
            }
            if let Some(computed) = self.unposted.remove(&job.ev.id) {
                tracing::info!(tool_use_id = %job.ev.id, "re-posting a result whose post failed earlier");
                let handle = self.spawn_post(&job, computed.event.clone());
                self.in_flight = Some(InFlight {
                    job,
                    computed: Some(computed),
                    handle,
                });
                return;
            }
            let handle = self.spawn_exec(&job);
            self.in_flight = Some(InFlight {
                job,
                computed: None,
                handle,
            });
            return;
        }
    }

    fn spawn_exec(&self, job: &Job) -> AbortOnDrop<PhaseDone> {
        let sandbox = Arc::clone(&self.ctx.sandbox);
        let call = ToolCall {
            id: job.ev.id.clone(),
            name: job.ev.name.clone(),
            input: job.ev.input.clone(),
        };
        let timeout = self.ctx.config.tool_timeout;
        let span = tracing::info_span!("tool", tool = %call.name, tool_use_id = %call.id);
        let invalid_input = job.ev.invalid_input.clone();
        AbortOnDrop(tokio::spawn(
            async move {
                // Input that could only be decoded after a repair (a lone surrogate escape) is
                // not what the model sent: running it would act on altered text (e.g. write a
                // U+FFFD file name). The call gets one error result instead and nothing reaches
                // the sandbox.
                if let Some(reason) = invalid_input {
                    tracing::warn!(reason = %reason, "tool input cannot be represented; answering with an error");
                    return PhaseDone::Exec(ExecDone {
                        result: Some(Some(ToolResult::text(
                            ToolUse::invalid_input_result(&reason),
                            true,
                        ))),
                        duration: Duration::ZERO,
                    });
                }
                tracing::info!("executing tool");
                let start = Instant::now();
                let result = tokio::time::timeout(timeout, sandbox.call_tool(&call))
                    .await
                    .ok();
                PhaseDone::Exec(ExecDone {
                    result,
                    duration: start.elapsed(),
                })
            }
            .instrument(span),
        ))
    }

    fn spawn_post(&self, job: &Job, event: OutgoingEvent) -> AbortOnDrop<PhaseDone> {
        let span = tracing::info_span!("tool", tool = %job.ev.name, tool_use_id = %job.ev.id);
        let fut = post_with_window(
            self.ctx.client.clone(),
            event,
            self.ctx.config.clone(),
            Arc::clone(&self.ctx.send_window),
            self.ctx.cancel.clone(),
        );
        AbortOnDrop(tokio::spawn(
            async move { PhaseDone::Post(fut.await) }.instrument(span),
        ))
    }

    fn on_job(&mut self, r: Result<PhaseDone, JoinError>) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        match r {
            Err(e) => {
                tracing::error!(tool = %f.job.ev.name, tool_use_id = %f.job.ev.id, error = %e, "tool task failed");
                self.finish_job(&f.job, ToolOutcome::Error, None, false, None);
            }
            Ok(PhaseDone::Exec(done)) => self.after_exec(f.job, done),
            Ok(PhaseDone::Post(outcome)) => {
                let Some(computed) = f.computed else {
                    return;
                };
                self.after_post(f.job, computed, outcome);
            }
        }
    }

    fn after_exec(&mut self, job: Job, done: ExecDone) {
        let name = job.ev.name.clone();
        let (result, outcome) = match done.result {
            None => {
                tracing::warn!(
                    timeout_s = self.ctx.config.tool_timeout.as_secs_f64(),
                    "tool timed out"
                );
                (
                    ToolResult::text(format!("tool '{name}' timed out"), true),
                    ToolOutcome::Timeout,
                )
            }
            Some(None) => {
                tracing::info!(tool = %name, "the sandbox does not run this tool; posting nothing");
                if job.gated {
                    self.release_hold(&job.ev);
                }
                return;
            }
            Some(Some(r)) => {
                let o = if r.is_error {
                    ToolOutcome::Error
                } else {
                    ToolOutcome::Ok
                };
                (r, o)
            }
        };
        self.ctx
            .metrics
            .tool_time(&name, done.duration.as_secs_f64());
        let event = OutgoingEvent::ToolResult {
            tool_use_id: job.ev.id.clone(),
            is_error: result.is_error,
            content: normalize_content(&result),
        };
        let computed = Computed {
            event: event.clone(),
            result,
            outcome,
            duration: Some(done.duration),
        };
        if self.in_terminated_thread(&job.ev) {
            tracing::info!(tool = %name, tool_use_id = %job.ev.id, "thread terminated; not posting the result");
            self.finish_job(
                &job,
                outcome,
                Some(computed.result),
                false,
                computed.duration,
            );
            return;
        }
        if self.answered.contains(&job.ev.id) {
            tracing::info!(tool_use_id = %job.ev.id, "call already answered elsewhere; not posting");
            self.finish_job(
                &job,
                outcome,
                Some(computed.result),
                false,
                computed.duration,
            );
            return;
        }
        if self.ctx.cancel.is_cancelled() {
            self.finish_job(
                &job,
                ToolOutcome::Cancelled,
                Some(computed.result),
                false,
                computed.duration,
            );
            return;
        }
        let handle = self.spawn_post(&job, event);
        self.in_flight = Some(InFlight {
            job,
            computed: Some(computed),
            handle,
        });
    }

    fn after_post(&mut self, job: Job, computed: Computed, outcome: PostOutcome) {
        let (label, posted) = match outcome {
            PostOutcome::Posted => {
                self.answered.insert(job.ev.id.clone());
                (computed.outcome, true)
            }
            PostOutcome::AlreadyAnswered => {
                self.answered.insert(job.ev.id.clone());
                (computed.outcome, false)
            }
            PostOutcome::Rejected => {
                // Retrying a rejected result cannot help; never run or post it again.
                self.answered.insert(job.ev.id.clone());
                (ToolOutcome::NotPosted, false)
            }
            PostOutcome::WindowExhausted => {
                let result = computed.result.clone();
                let duration = computed.duration;
                self.unposted.insert(job.ev.id.clone(), computed);
                self.finish_job(&job, ToolOutcome::NotPosted, Some(result), false, duration);
                return;
            }
            PostOutcome::Cancelled => (ToolOutcome::Cancelled, false),
        };
        self.finish_job(
            &job,
            label,
            Some(computed.result),
            posted,
            computed.duration,
        );
    }

    fn finish_job(
        &mut self,
        job: &Job,
        outcome: ToolOutcome,
        result: Option<ToolResult>,
        posted: bool,
        duration: Option<Duration>,
    ) {
        self.ctx.metrics.tool_call(&job.ev.name, outcome.as_str());
        if job.gated {
            self.release_hold(&job.ev);
        }
        self.report(ToolReport {
            tool_use_id: job.ev.id.clone(),
            name: job.ev.name.clone(),
            input: job.ev.input.clone(),
            outcome,
            result,
            posted,
            duration,
        });
    }

    fn report(&self, report: ToolReport) {
        if let Some(r) = &self.ctx.reporter {
            r(report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalization() {
        let n =
            |content: Vec<Value>, is_error| normalize_content(&ToolResult { content, is_error });
        assert_eq!(
            n(vec![], false),
            vec![json!({"type":"text","text":"(no output)"})]
        );
        assert_eq!(
            n(vec![json!({"type":"text","text":""})], false),
            vec![json!({"type":"text","text":"(no output)"})]
        );
        let img = json!({"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}});
        assert_eq!(n(vec![img.clone()], false), vec![img.clone()]);
        // Error results carry text only.
        assert_eq!(
            n(vec![img.clone()], true),
            vec![json!({"type":"text","text": img.to_string()})]
        );
        let odd = json!({"type":"tool_reference","x":1});
        assert_eq!(
            n(vec![odd.clone()], false),
            vec![json!({"type":"text","text": odd.to_string()})]
        );
    }

    #[test]
    fn idle_clock_defers_while_held() {
        let mut c = IdleClock::default();
        c.hold();
        c.arm();
        assert!(c.turn_ended_at.is_none());
        c.release();
        assert!(c.turn_ended_at.is_some());
        c.hold();
        assert!(c.turn_ended_at.is_none());
        c.release();
        assert!(c.turn_ended_at.is_some());
        c.disarm();
        c.hold();
        c.release();
        assert!(c.turn_ended_at.is_none());
    }

    #[test]
    fn history_result_lookup() {
        let h: History = [
            json!({"type":"agent.tool_use","id":"a","name":"bash","input":{}}),
            json!({"type":"user.tool_result","tool_use_id":"a","content":[]}),
            json!("garbage"),
        ]
        .iter()
        .map(SessionEvent::from_value)
        .collect();
        assert!(history_has_result(&h, "a"));
        assert!(!history_has_result(&h, "b"));
    }
}
