//! `serve --local`: the whole job in one command, without credentials.
//!
//! Starts the fake control plane (`wasm-sandbox-fake-control-plane`) embedded on loopback,
//! enqueues a sample session (`--local-session FILE`, else
//! `examples/sessions/all-tools.json` from the current directory, else a built-in copy of
//! it), serves it with the real sandbox, and prints the session cold-start time and each
//! tool call with its result. Exits once the item is done; fails if the scenario's
//! expectations did not hold.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane, Scenario};

use super::Settings;
use super::signals::install_signal_handlers;
use wasm_sandbox_worker::core_adapter::CoreProvider;
use wasm_sandbox_worker::runner::ToolOutcome;
use wasm_sandbox_worker::secret::Secret;
use wasm_sandbox_worker::worker::run_worker;
use wasm_sandbox_worker::worker::{Shutdown, WorkerEvent};

const BUILTIN_SCENARIO: &str = include_str!("../../../../examples/sessions/all-tools.json");

fn excerpt(text: &str, max: usize) -> String {
    let one_line = text.trim_end().replace('\n', "\n       ");
    if one_line.chars().count() > max {
        format!("{}…", one_line.chars().take(max).collect::<String>())
    } else {
        one_line
    }
}

fn print_event(ev: WorkerEvent) {
    match ev {
        WorkerEvent::Claimed {
            work_id,
            session_id,
        } => println!(
            "claimed  {work_id} (session {})",
            session_id.as_deref().unwrap_or("-")
        ),
        WorkerEvent::SessionReady { cold_start, .. } => println!(
            "sandbox  ready; session cold start {:.1} ms",
            cold_start.as_secs_f64() * 1000.0
        ),
        WorkerEvent::Tool { report, .. } => {
            println!("tool  -> {} {}", report.name, report.input);
            match (&report.outcome, &report.result) {
                (ToolOutcome::Denied, _) => println!("      <- denied; nothing posted"),
                (_, Some(r)) => {
                    let text: String = r
                        .content
                        .iter()
                        .map(|b| match b.get("text").and_then(Value::as_str) {
                            Some(t) => t.to_owned(),
                            None => format!(
                                "[{} block]",
                                b.get("type").and_then(Value::as_str).unwrap_or("?")
                            ),
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    println!(
                        "      <- {}{} in {:.1} ms{}: {}",
                        if r.is_error { "error" } else { "ok" },
                        if report.posted {
                            ", posted"
                        } else {
                            ", not posted"
                        },
                        report.duration.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
                        match report.outcome {
                            ToolOutcome::Timeout => " (timed out)",
                            _ => "",
                        },
                        excerpt(&text, 400)
                    );
                }
                (outcome, None) => println!("      <- {}", outcome.as_str()),
            }
        }
        WorkerEvent::ItemDone {
            run_end, stop_sent, ..
        } => println!(
            "done     session ended ({}); item {}",
            run_end.map_or("not run", |e| e.as_str()),
            if stop_sent { "stopped" } else { "not stopped" }
        ),
    }
}

/// The demo's workdir: its lock (and mount), then, when the demo made it, the directory.
struct LocalWorkdir {
    guard: Option<wasm_sandbox_worker::worker::WorkdirGuard>,
    remove: Option<std::path::PathBuf>,
}

impl Drop for LocalWorkdir {
    fn drop(&mut self) {
        drop(self.guard.take());
        if let Some(dir) = &self.remove {
            let _ = wasm_sandbox_fs::tree::remove_tree(dir);
        }
    }
}

/// Runs the local demo.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let scenario = match &settings.local_session {
        Some(path) => Scenario::load(path)?,
        None if Path::new("examples/sessions/all-tools.json").exists() => {
            Scenario::load("examples/sessions/all-tools.json")?
        }
        None => Scenario::from_json(BUILTIN_SCENARIO)?,
    };
    let own_workdir = !settings.workdir_given;
    let workdir = if own_workdir {
        // A fresh, unguessable 0700 directory that must not exist yet: another user cannot
        // have planted it (or a link in its place) for the worker to lock, sweep and mount.
        use std::os::unix::fs::DirBuilderExt as _;
        let dir = std::env::temp_dir().join(format!(
            "wasm-sandbox-local-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        dir
    } else {
        settings.workdir.clone()
    };
    // As `serve`: lock, sweep, mount; the pool lives in the same workdir as the sessions.
    // However `run` returns from here on, the lock and mount go, then our own temp workdir.
    let guard = LocalWorkdir {
        guard: Some(wasm_sandbox_worker::worker::claim_workdir(&workdir)?),
        remove: own_workdir.then(|| workdir.clone()),
    };
    let provider =
        CoreProvider::from_config(settings.core_config(), &workdir, settings.concurrency)?;
    let fake = FakeControlPlane::start(FakeConfig::default()).await?;
    println!("control plane (fake, embedded) at {}", fake.url());
    let (work_id, session_id) = fake.enqueue_session(scenario);
    println!("enqueued {work_id} for session {session_id}");

    let mut config = settings.worker_config(
        fake.url(),
        &fake.environment_id(),
        Secret::new(fake.environment_key()),
    );
    config.workdir = workdir.clone();
    config.exit_after_items = Some(1);
    // The demo's sessions are the fake's: nothing for a usage ledger or a billing sink.
    config.usage = None;
    config.poll.empty_sleep_min = Duration::from_millis(50);
    config.poll.empty_sleep_max = Duration::from_millis(100);
    if !settings.max_idle_explicit {
        config.runner.max_idle = Some(Duration::from_secs(1));
    }
    let shutdown = Shutdown::new();
    let signals = install_signal_handlers(shutdown.clone())?;
    let result = run_worker(
        config,
        provider,
        settings.ops_listen,
        shutdown,
        Some(Arc::new(print_event)),
    )
    .await;
    signals.abort();
    drop(guard);
    let report = fake.scenario_report(&session_id);
    fake.shutdown().await;
    result?;
    if report.is_ok() {
        println!("scenario passed");
        Ok(())
    } else {
        anyhow::bail!("scenario expectations failed: {:?}", report.failures)
    }
}
