//! One call's life after the gate: queued, executed in the sandbox, its result posted
//! (with the retry window), and reported.

use rand::Rng as _;
use tracing::Instrument as _;

use super::content::history_has_result;
use super::*;
use crate::sandbox::{CallOutcome, ToolAnswer, ToolCall};

/// A call waiting to run, with whether a confirmation released it (it then holds the idle
/// clock until done).
#[derive(Clone, Debug)]
pub(super) struct Job {
    pub(super) ev: ToolUse,
    /// The tool, as the ownership gate ([`super::owned`]) parsed it.
    pub(super) tool: Tool,
    pub(super) gated: bool,
}

pub(super) struct ExecDone {
    /// `None` = the sandbox did not answer within the backstop ([`RunnerConfig::backstop`]).
    answer: Option<ToolAnswer>,
    duration: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PostOutcome {
    Posted,
    AlreadyAnswered,
    Rejected,
    WindowExhausted,
    Cancelled,
}

pub(super) enum PhaseDone {
    Exec(ExecDone),
    Post(PostOutcome),
}

/// The computed result of the in-flight call, carried into its post phase.
pub(super) struct Computed {
    pub(super) event: OutgoingEvent,
    pub(super) result: ToolResult,
    pub(super) outcome: ToolOutcome,
    pub(super) duration: Option<Duration>,
}

pub(super) struct InFlight {
    pub(super) job: Job,
    pub(super) computed: Option<Computed>,
    pub(super) handle: AbortOnDrop<PhaseDone>,
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
    pub(super) fn enqueue(&mut self, ev: ToolUse, tool: Tool, gated: bool) {
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
        self.queue.push_back(Job { ev, tool, gated });
    }

    /// Starts the next queued call if none is running.
    pub(super) fn start_next(&mut self) {
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
        let tool = job.tool;
        let backstop = self.ctx.config.backstop();
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
                        answer: Some(ToolAnswer::ran(ToolResult::text(
                            ToolUse::invalid_input_result(&reason),
                            true,
                        ))),
                        duration: Duration::ZERO,
                    });
                }
                tracing::info!("executing tool");
                let start = Instant::now();
                // The sandbox owns the call's deadline and answers a late call itself
                // (`CallOutcome::TimedOut`); the backstop only covers a sandbox that never
                // answers at all.
                let answer = tokio::time::timeout(backstop, sandbox.call(tool, &call))
                    .await
                    .ok();
                PhaseDone::Exec(ExecDone {
                    answer,
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

    pub(super) fn on_job(&mut self, r: Result<PhaseDone, JoinError>) {
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
        let answer = done.answer.unwrap_or_else(|| {
            tracing::error!(
                backstop_s = self.ctx.config.backstop().as_secs_f64(),
                "the sandbox did not answer the call by the backstop; answering it timed out"
            );
            ToolAnswer::timed_out(&name)
        });
        if answer.outcome == CallOutcome::TimedOut {
            // No configured limit in the record: the core's own (possibly smaller) deadline
            // usually fired, not the worker's `tool_timeout`; the backstop path logs its
            // `backstop_s` above. The elapsed time is what was measured.
            tracing::warn!(elapsed_s = done.duration.as_secs_f64(), "tool timed out");
        }
        let outcome = match answer.outcome {
            CallOutcome::Ok => ToolOutcome::Ok,
            CallOutcome::Error => ToolOutcome::Error,
            CallOutcome::TimedOut => ToolOutcome::Timeout,
        };
        let result = answer.result;
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

    pub(super) fn finish_job(
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

    pub(super) fn report(&self, report: ToolReport) {
        if let Some(r) = &self.ctx.reporter {
            r(report);
        }
    }
}
