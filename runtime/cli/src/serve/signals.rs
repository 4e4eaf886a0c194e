//! Process-level hygiene and signals: the environment key scrubbed from the process's
//! environment and argument blocks before any thread exists, and SIGTERM/SIGINT turned into
//! the worker's drain/force [`Shutdown`].

use wasm_sandbox_worker::worker::Shutdown;

use super::args::ENVIRONMENT_KEY_ENV;

/// Removes `ANTHROPIC_ENVIRONMENT_KEY` from the process environment so no child inherits it,
/// and overwrites its value in the process's original environment block so that
/// `/proc/<pid>/environ` no longer shows it ([`wasm_sandbox_worker::secret::scrub_environment_block`]:
/// `remove_var` alone leaves those bytes in place). It is the only secret the worker reads from
/// its environment. A key given as `--environment-key VALUE` is likewise overwritten in the
/// argument block, which `/proc/<pid>/cmdline` shows to every user
/// ([`wasm_sandbox_worker::secret::scrub_argument_block`]).
///
/// Call it in `main` right after parsing the flags and before starting the async runtime's
/// threads (`remove_var` is unsound while other threads may read the environment); [`serve`](super::serve)
/// only warns when it finds the key still there.
pub fn scrub_environment_key() {
    #[cfg(target_os = "linux")]
    {
        // Without /proc nothing shows the blocks either; say so and go on.
        if let Err(e) = wasm_sandbox_worker::secret::scrub_environment_block(&[ENVIRONMENT_KEY_ENV])
        {
            eprintln!("warning: could not scrub the environment block: {e}");
        }
        // `--environment-key VALUE` would be readable by every user in /proc/<pid>/cmdline.
        if let Err(e) = wasm_sandbox_worker::secret::scrub_argument_block("--environment-key") {
            eprintln!("warning: could not scrub the argument block: {e}");
        }
    }
    if std::env::var_os(ENVIRONMENT_KEY_ENV).is_some() {
        // SAFETY: `remove_var` is unsound only if another thread reads or writes the
        // environment at the same moment. The documented contract of this function is that it
        // runs in `main` before any other thread exists (the CLI calls it before building the
        // tokio runtime), so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(ENVIRONMENT_KEY_ENV) };
    }
}

/// Turns SIGTERM/SIGINT into `shutdown`: the first drains, the second forces.
pub fn install_signal_handlers(shutdown: Shutdown) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let mut count = 0;
        loop {
            tokio::select! {
                s = term.recv() => if s.is_none() { return },
                s = int.recv() => if s.is_none() { return },
            }
            count += 1;
            if count == 1 {
                tracing::warn!(
                    "shutdown signal: draining (finishing running tool calls); signal again to force"
                );
                shutdown.drain();
            } else {
                tracing::warn!("second shutdown signal: forcing");
                shutdown.force();
                return;
            }
        }
    }))
}
