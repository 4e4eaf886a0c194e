//! One work item of a session, from the claim to the stop: the set-up beside the ack
//! ([`set_up_session`]), the run ([`serve_session`]), and the teardown in its order — usage
//! record, close, skills removed, snapshot, then the stop beside the local teardown (the sandbox
//! is dropped last: it holds the disk-cap mount). A child of `worker` (it uses the worker's
//! shared state); moved out of `worker.rs` unchanged.

use super::*;
use crate::workdir::{prepare_session_dir, remove_session_dir};

/// Decrements `sessions_active` on drop.
struct ActiveGuard<'a>(&'a Metrics);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.sessions_active.dec();
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "the item's lifecycle in order: set-up beside the ack, run, teardown beside the stop"
)]
pub(super) async fn handle_item<P: SandboxProvider>(
    shared: &Arc<Shared<P>>,
    work: Work,
    claimed_at: Instant,
    shutdown: &Shutdown,
    mut gate: AckGate,
    permit: OwnedSemaphorePermit,
) {
    let cfg = &shared.config;
    // The per-item credential: the sessions token from the secret, else the environment key.
    let token = work
        .secret
        .as_ref()
        .and_then(|s| WorkSecret::decode(s).sessions_token);
    if work.secret.as_ref().is_some_and(|s| !s.is_empty()) && token.is_none() {
        tracing::warn!(
            "work item carried a secret but no sessions token could be extracted; using the environment key"
        );
    }
    let credential = token.unwrap_or_else(|| cfg.environment_key.clone());
    let session_id = work.data.session_id().map(str::to_owned);
    let item = shared.api.item(
        &cfg.environment_id,
        &work.id,
        session_id.as_deref().unwrap_or(""),
        credential,
    );
    let Some(session_id) = session_id else {
        // Nothing to start ahead of the ack; a failed ack was handled by the poll loop.
        if !gate.acked().await {
            return;
        }
        tracing::info!(
            kind = work.data.kind.as_deref().unwrap_or(""),
            "skipping a non-session work item; force-stopping it"
        );
        drop(permit);
        let stop_sent =
            stop_item(&item, cfg.forced_stop_timeout.max(Duration::from_secs(10))).await;
        shared.emit(WorkerEvent::ItemDone {
            work_id: work.id.clone(),
            session_id: None,
            run_end: None,
            lease_end: None,
            stop_sent,
        });
        return;
    };

    shared.metrics.sessions_active.inc();
    let _active = ActiveGuard(&shared.metrics);
    let lease = Arc::new(Lease::new());
    // Cancelled by a forced shutdown, or when the lease ends for a reason other than the run
    // finishing.
    let cancel = shutdown.force.child_token();

    // Everything that does not need the ack's answer starts now, beside the ack: the event
    // stream and the history (one task), and the chain session fetch → memory download →
    // sandbox → skills. All of it is reads and local set-up; nothing is posted and no tool
    // runs until the ack succeeded (the runner starts only after it). The first heartbeat
    // goes out as soon as the ack succeeded, whatever the set-up is doing then.
    let prefetched = crate::runner::prefetch_stream(item.clone(), gate.clone());
    // Cancelled when the ack fails: the set-up stops and removes what it made.
    let setup_cancel = cancel.child_token();
    let setup = set_up_session(
        shared,
        &work,
        &session_id,
        &item,
        gate.clone(),
        &setup_cancel,
    );
    let after_ack = async {
        if !gate.acked().await {
            setup_cancel.cancel();
            return None;
        }
        let item = item.clone();
        let lease = Arc::clone(&lease);
        let cancel = cancel.clone();
        let hb_cfg = cfg.heartbeat.clone();
        let metrics = Arc::clone(&shared.metrics);
        let max_session = cfg.max_session;
        Some(AbortOnDrop(tokio::spawn(
            async move {
                let deadline = async {
                    match max_session {
                        Some(d) => tokio::time::sleep_until(claimed_at + d).await,
                        None => std::future::pending().await,
                    }
                };
                // One heartbeat loop for the whole item: it carries the server's last
                // heartbeat value from beat to beat, so it is never restarted.
                let beat = heartbeat_loop(&item, &lease, &hb_cfg, &metrics);
                tokio::pin!(beat);
                tokio::select! {
                    () = &mut beat => {}
                    () = deadline => {
                        // The shape's cap on one item: end the run like a forced end. The
                        // lease is kept (the same loop goes on beating) so the workspace is
                        // saved and the item stopped as at any other end.
                        tracing::warn!(
                            max_session_s = max_session.map_or(0, |d| d.as_secs()),
                            "the work item reached the shape's max_session; ending its run"
                        );
                        cancel.cancel();
                        beat.await;
                    }
                }
                if lease.end_reason() != Some(LeaseEnd::RunnerDone) {
                    cancel.cancel();
                }
            }
            .in_current_span(),
        )))
    };
    let (setup, heartbeat) = tokio::join!(setup, after_ack);
    let Some(mut heartbeat) = heartbeat else {
        // The ack failed: the item is not ours. Drop the stream, remove the sandbox and its
        // directory; send nothing (the poll loop did what a failed ack calls for).
        drop(prefetched);
        if let Setup::Ready(ready) = setup {
            teardown_local((*ready).leftover()).await;
        }
        tracing::info!("ack failed; dropped what was started for the item");
        return;
    };

    let checkpoint_done = CancellationToken::new();
    let (run_end, leftover) = match setup {
        Setup::Ready(mut ready) => {
            let persisted = ready.persisted.take();
            let checkpoints = persisted.as_ref().and_then(|state| {
                crate::persist::spawn_checkpoints(
                    Arc::clone(cfg.persistence.as_ref()?),
                    Arc::clone(state),
                    ready.root.clone(),
                    crate::persist::skill_excludes(ready.skills.as_ref()),
                    format!("{} {}", cfg.worker_id, work.id),
                    checkpoint_done.clone(),
                    Arc::clone(&shared.metrics),
                )
            });
            let (end, left) = serve_session(
                shared,
                &work,
                &session_id,
                &item,
                &lease,
                &cancel,
                shutdown,
                claimed_at,
                *ready,
                prefetched,
            )
            .await;
            checkpoint_done.cancel();
            // Under a forced shutdown a running checkpoint, and the final snapshot below, get
            // at most `forced_stop_timeout` ([`crate::persist::bounded_by_force`]).
            if let Some(mut c) = checkpoints {
                let force = &shutdown.force;
                let bound = cfg.forced_stop_timeout;
                if crate::persist::bounded_by_force(&mut c, force, bound, "checkpoint")
                    .await
                    .is_none()
                {
                    c.abort();
                }
            }
            let mut left = left;
            // Saved while the heartbeat still holds the lease, before the stop.
            if let (Some(p), Some(state)) = (cfg.persistence.as_ref(), persisted) {
                let writer = format!("{} {}", cfg.worker_id, work.id);
                let lost = lease.lost();
                let save = persist_before_stop(
                    p,
                    &state,
                    &mut left,
                    Some(end),
                    lost,
                    &session_id,
                    &writer,
                    &shared.metrics,
                );
                let bound = cfg.forced_stop_timeout;
                crate::persist::bounded_by_force(save, &shutdown.force, bound, "final snapshot")
                    .await;
            }
            (Some(end), Some(left))
        }
        Setup::Terminated => {
            drop(prefetched);
            tracing::info!("skipping the work item of a terminated session");
            (None, None)
        }
        Setup::Failed => {
            drop(prefetched);
            (None, None)
        }
        Setup::Cancelled => {
            drop(prefetched);
            (Some(RunEnd::Cancelled), None)
        }
    };

    lease.finish(LeaseEnd::RunnerDone);
    if let Err(e) = (&mut heartbeat.0).await {
        tracing::error!(error = %e, "heartbeat task failed");
    }
    let lease_end = lease.end_reason();
    // The stop and the local teardown (sandbox close, skills, directory removal) run side by
    // side: neither needs the other. The concurrency slot is given back as soon as the local
    // teardown is done, so the poll loop may claim the next item while the stop is in flight.
    let local = async move {
        if let Some(left) = leftover {
            teardown_local(left).await;
        }
        drop(permit);
    };
    let stop = async {
        if lease.lost() {
            tracing::info!(
                lease_end = lease_end.map(LeaseEnd::as_str),
                "lease lost; released the item without stopping it"
            );
            false
        } else {
            let bound = if shutdown.force.is_cancelled() {
                cfg.forced_stop_timeout
            } else {
                Duration::from_secs(30)
            };
            stop_item(&item, bound).await
        }
    };
    let ((), stop_sent) = tokio::join!(local, stop);
    tracing::info!(
        run_end = run_end.map(RunEnd::as_str),
        lease_end = lease_end.map(LeaseEnd::as_str),
        stop_sent,
        "work item done"
    );
    shared.emit(WorkerEvent::ItemDone {
        work_id: work.id.clone(),
        session_id: Some(session_id),
        run_end,
        lease_end,
        stop_sent,
    });
}

/// Force-stops an item; 409 is swallowed. Returns whether the call went out and was answered.
async fn stop_item(item: &ItemClient, bound: Duration) -> bool {
    match tokio::time::timeout(bound, item.stop(true)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "force-stop on exit failed");
            false
        }
        Err(_) => {
            tracing::error!(
                bound_s = bound.as_secs_f64(),
                "force-stop on exit timed out"
            );
            false
        }
    }
}

/// What the set-up made for a session, ready to run.
struct Prepared<S> {
    root: PathBuf,
    sandbox: Arc<S>,
    memory: Option<crate::memory::MemoryStores>,
    skills: Option<wasm_sandbox_skills::SkillsManager>,
    /// The session's snapshot state (persistence on).
    persisted: Option<crate::persist::Persisted>,
}

impl<S> Prepared<S> {
    /// What is left to tear down locally (the memory stores are dropped: never synced back
    /// for a run that did not happen).
    fn leftover(self) -> Leftover<S> {
        Leftover {
            root: self.root,
            sandbox: self.sandbox,
            closed: false,
            skills: self.skills,
        }
    }
}

/// The local teardown of a session: no network.
///
/// The sandbox is *closed* (its processes killed) and *dropped* at different times: a closed
/// sandbox is still held until the end of [`teardown_local`], because dropping it releases
/// what the core session mounted over the session's directories (the disk cap's filesystem):
/// a snapshot taken after the drop would read the empty directories beneath and save them as
/// the session's newest workspace.
struct Leftover<S> {
    root: PathBuf,
    sandbox: Arc<S>,
    /// Whether `sandbox` was closed already.
    closed: bool,
    skills: Option<wasm_sandbox_skills::SkillsManager>,
}

/// How the set-up ended.
enum Setup<S> {
    Ready(Box<Prepared<S>>),
    /// The session is terminated: nothing was created.
    Terminated,
    /// Logged; the item is stopped (once acked).
    Failed,
    /// Cancelled (forced shutdown, lease ended, or the ack failed); what was made is removed.
    Cancelled,
}

/// Saves the session's workspace before the stop ([`crate::persist`]): closes the sandbox and
/// removes the installed skills first (so the tree is quiescent and holds only the session's
/// own files), then snapshots, or deletes the snapshots of a session that ended terminated.
/// Nothing is saved for a lease that was lost: the item may belong to another worker already.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the arguments are the item's context"
)]
async fn persist_before_stop<S: SandboxSession>(
    p: &Arc<wasm_sandbox_persist::Persistence>,
    state: &crate::persist::Persisted,
    left: &mut Leftover<S>,
    run_end: Option<RunEnd>,
    lease_lost: bool,
    session_id: &str,
    writer: &str,
    metrics: &Metrics,
) {
    if run_end == Some(RunEnd::Terminated) {
        crate::persist::delete(Some(p), session_id, "terminated").await;
        return;
    }
    if lease_lost {
        tracing::warn!("lease lost; the session's workspace is not saved by this item");
        return;
    }
    if !left.closed {
        close_sandbox(left.sandbox.as_ref()).await;
        left.closed = true;
    }
    if let Some(skills) = left.skills.take() {
        crate::skills::teardown(skills).await;
    }
    crate::persist::snapshot(p, state, &left.root, &[], writer, "item end", metrics).await;
}

/// Closes the sandbox (kills its processes), removes the installed skills and the session
/// directory.
async fn teardown_local<S: SandboxSession>(left: Leftover<S>) {
    if !left.closed {
        close_sandbox(left.sandbox.as_ref()).await;
    }
    if let Some(skills) = left.skills {
        crate::skills::teardown(skills).await;
    }
    // Released only now (see [`Leftover`]); the directory removal never crosses a mount, so
    // what the session mounted must be gone first.
    drop(left.sandbox);
    remove_dir_logged(left.root).await;
}

async fn close_sandbox<S: SandboxSession>(sandbox: &S) {
    if tokio::time::timeout(Duration::from_secs(30), sandbox.close())
        .await
        .is_err()
    {
        tracing::error!("sandbox close timed out");
    }
}

/// The session's set-up, run beside the ack: fetch the session (a terminated one stops here),
/// then make its directory, download its memory stores, create the sandbox and install its
/// skills. Reads only (and local work); `cancel` (the ack failed, a forced shutdown, the lease
/// ended) stops it, and it removes what it made before returning [`Setup::Cancelled`].
///
/// The session fetch goes through [`read_after_ack`]: refused before the ack's answer, it is
/// sent again after a successful ack. The memory and skill downloads use the same credential
/// and start only after the session fetch succeeded, so the token is known to be accepted by
/// then.
async fn set_up_session<P: SandboxProvider>(
    shared: &Arc<Shared<P>>,
    work: &Work,
    session_id: &str,
    item: &ItemClient,
    mut gate: AckGate,
    cancel: &CancellationToken,
) -> Setup<P::Session> {
    let cfg = &shared.config;
    let session = tokio::select! {
        biased;
        () = cancel.cancelled() => return Setup::Cancelled,
        r = read_after_ack(&mut gate, || item.session()) => r,
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "session fetch failed");
            // A 404 `not_found_error` for the session of an item the server handed out and
            // acked (a refusal before the ack's answer proves nothing: the item may not be
            // ours): the session was deleted. Its snapshots go too.
            if let crate::client::ApiError::Status {
                status: 404, info, ..
            } = &e
                && info
                    .error_type
                    .as_deref()
                    .is_none_or(|t| t == "not_found_error")
                && gate.acked().await
            {
                crate::persist::delete(cfg.persistence.as_ref(), session_id, "deleted").await;
            }
            return Setup::Failed;
        }
    };
    if session.is_terminated() {
        crate::persist::delete(cfg.persistence.as_ref(), session_id, "terminated").await;
        return Setup::Terminated;
    }
    let workdir = cfg.workdir.clone();
    let work_id = work.id.clone();
    let root =
        match tokio::task::spawn_blocking(move || prepare_session_dir(&workdir, &work_id)).await {
            Ok(Ok(root)) => root,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not prepare the session directory");
                return Setup::Failed;
            }
            Err(e) => {
                tracing::error!(error = %e, "session directory task failed");
                return Setup::Failed;
            }
        };
    let has_token = work
        .secret
        .as_ref()
        .is_some_and(|s| WorkSecret::decode(s).sessions_token.is_some());
    let prepared = tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        r = crate::memory::prepare(item, &session, &root, has_token) => Some(r),
    };
    let (memory, memory_mounts) = match prepared {
        Some(Ok(Some((m, mounts)))) => (Some(m), mounts),
        Some(Ok(None)) => (None, Vec::new()),
        Some(Err(e)) => {
            tracing::error!(error = %e, "memory store setup failed; failing the item");
            remove_dir_logged(root).await;
            return Setup::Failed;
        }
        None => {
            remove_dir_logged(root).await;
            return Setup::Cancelled;
        }
    };
    let spec = SandboxSpec {
        session_id: session_id.to_owned(),
        work_id: work.id.clone(),
        root: root.clone(),
        memory_stores: memory_mounts,
        // The session may narrow `[runtime.networking]`, never widen it.
        network_allowed_hosts: session
            .metadata
            .get(wasm_sandbox_egress::SESSION_ALLOWED_HOSTS_KEY)
            .cloned(),
    };
    // Not raced against `cancel`: creation is local and bounded, and part of it runs on a
    // blocking thread (adopting a pooled sandbox renames directories into `root`) that would
    // go on after its future was dropped, re-creating the tree after the removal below.
    // Awaiting it, then tearing down what it made, leaves nothing behind.
    let sandbox = match shared.provider.create(spec).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "sandbox creation failed");
            remove_dir_logged(root).await;
            return if cancel.is_cancelled() {
                Setup::Cancelled
            } else {
                Setup::Failed
            };
        }
    };
    if cancel.is_cancelled() {
        teardown_local(Leftover {
            root,
            sandbox,
            closed: false,
            skills: None,
        })
        .await;
        return Setup::Cancelled;
    }
    // The saved workspace lands in the (adopted) directories before the skills and before the
    // runner starts: nothing the session runs sees a partial tree.
    // An archived session takes no more input: its snapshots go (as a terminated session's
    // do), and this item neither restores nor saves.
    let persisted = if session.is_archived() {
        crate::persist::delete(cfg.persistence.as_ref(), session_id, "archived").await;
        None
    } else {
        crate::persist::restore(cfg.persistence.as_ref(), session_id, &root, &shared.metrics).await
    };
    // Skills land in the workspace before the runner starts (the guest has run nothing yet).
    let workspace = crate::skills::workspace_dir(&root);
    let installing = crate::skills::install_session_skills(item, &session, &workspace);
    let skills = tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        m = installing => Some(m),
    };
    let Some(skills) = skills else {
        teardown_local(Leftover {
            root,
            sandbox,
            closed: false,
            skills: None,
        })
        .await;
        return Setup::Cancelled;
    };
    if cancel.is_cancelled() {
        teardown_local(Leftover {
            root,
            sandbox,
            closed: false,
            skills,
        })
        .await;
        return Setup::Cancelled;
    }
    // Lets the sandbox prepare what the skills ship (precompiling components) beside the ack.
    sandbox.skills_installed(&workspace);
    Setup::Ready(Box::new(Prepared {
        root,
        sandbox,
        memory,
        skills,
        persisted,
    }))
}

/// Runs an acked, set-up session; returns how the run ended and what is left to tear down
/// locally. The sandbox is closed here only when memory stores must be synced back after it
/// (that needs the lease, so it goes before the stop); otherwise closing it is left to the
/// local teardown, which runs beside the stop.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the arguments are the item's context"
)]
async fn serve_session<P: SandboxProvider>(
    shared: &Arc<Shared<P>>,
    work: &Work,
    session_id: &str,
    item: &ItemClient,
    lease: &Arc<Lease>,
    cancel: &CancellationToken,
    shutdown: &Shutdown,
    claimed_at: Instant,
    ready: Prepared<P::Session>,
    prefetched: crate::runner::Prefetch,
) -> (RunEnd, Leftover<P::Session>) {
    let cfg = &shared.config;
    let Prepared {
        root,
        sandbox,
        memory,
        skills,
        persisted: _,
    } = ready;
    let cold_start = claimed_at.elapsed();
    shared
        .metrics
        .session_cold_start
        .observe(cold_start.as_secs_f64());
    tracing::info!(
        cold_start_ms = cold_start.as_secs_f64() * 1000.0,
        "sandbox ready"
    );
    shared.emit(WorkerEvent::SessionReady {
        work_id: work.id.clone(),
        session_id: session_id.to_owned(),
        cold_start,
    });

    let reporter = shared.observer.as_ref().map(|o| {
        let o = Arc::clone(o);
        let work_id = work.id.clone();
        let session_id = session_id.to_owned();
        Arc::new(move |report: ToolReport| {
            o(WorkerEvent::Tool {
                work_id: work_id.clone(),
                session_id: session_id.clone(),
                report,
            });
        }) as crate::runner::Reporter
    });
    let memory_done = CancellationToken::new();
    let (reporter, syncer) = match memory {
        Some(m) => {
            let (tx, task) = crate::memory::spawn_syncer(m, memory_done.clone());
            (
                Some(crate::memory::chain_reporter(tx, reporter)),
                Some(task),
            )
        }
        None => (reporter, None),
    };
    let lease_for_window = Arc::clone(lease);
    let end = run_session(RunnerContext {
        client: item.clone(),
        sandbox: Arc::clone(&sandbox),
        config: cfg.runner.clone(),
        cancel: cancel.clone(),
        drain: shutdown.drain.clone(),
        send_window: Arc::new(move || lease_for_window.ttl()),
        metrics: Arc::clone(&shared.metrics),
        reporter,
        prefetched: Some(prefetched),
    })
    .await;
    tracing::info!(run_end = end.as_str(), "session run ended; tearing down");
    // The usage record: measured before the sandbox is closed (the close removes the bash
    // cgroup) and fdatasync'd into the ledger before the item is stopped (handle_item stops it
    // after this returns), so a crash from here on loses nothing (crate::usage).
    if let Some(recorder) = &shared.usage {
        let item = crate::usage::ItemContext {
            environment_id: &cfg.environment_id,
            work_id: &work.id,
            session_id,
            worker_id: &cfg.worker_id,
            claimed_at: claimed_at.into_std(),
        };
        recorder.record(item, sandbox.usage()).await;
    }

    // The heartbeat keeps the lease while the memory stores sync back.
    let closed = match syncer {
        Some(syncer) => {
            // The sync reads what the session left: the sandbox must be closed first.
            close_sandbox(sandbox.as_ref()).await;
            memory_done.cancel();
            match syncer.await {
                Ok(stores) => stores.finish(Some(end)).await,
                Err(e) => tracing::error!(error = %e, "memory sync task failed"),
            }
            true
        }
        None => false,
    };
    (
        end,
        Leftover {
            root,
            sandbox,
            closed,
            skills,
        },
    )
}

async fn remove_dir_logged(root: PathBuf) {
    let started = Instant::now();
    match tokio::task::spawn_blocking(move || remove_session_dir(&root)).await {
        Ok(Ok(())) => tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "session directory removed"
        ),
        Ok(Err(e)) => tracing::error!(error = %e, "could not remove the session directory"),
        Err(e) => tracing::error!(error = %e, "session directory removal task failed"),
    }
}
