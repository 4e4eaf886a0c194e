//! One session's persistent shell with the reference semantics (`toolset.md` §5.6).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cgroup::ResourceUsage;
use crate::protocol::{
    self, BashRequest, OutputBuffer, READ_CHUNK, RESTARTED, TERMINATED, finish_output,
};
pub use crate::sandbox::UsageHandle;
use crate::sandbox::{BashSandbox, BashSessionSpec, LimitMechanism, SandboxError, Shell};

/// The result of one bash call, before the runner's content bridging.
///
/// `text` may be empty: the caller maps an empty text to `(no output)` (the
/// reference's `_to_session_content` does so for successes and errors alike); this
/// crate leaves that to the caller so the text stays the tool's own result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BashOutput {
    /// The result text (command output, or an error message).
    pub text: String,
    /// True for non-zero exits, timeouts, a dead shell, invalid input and sandbox
    /// failures.
    pub is_error: bool,
}

impl BashOutput {
    fn ok(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            is_error: false,
        }
    }

    fn err(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            is_error: true,
        }
    }
}

#[derive(Debug)]
enum State {
    /// No shell yet (lazy start) or after `close`.
    NotStarted,
    /// A live shell.
    Running(Box<Shell>),
    /// The shell ended (timeout, `exit`, fatal error, cancelled call): every call
    /// fails until `restart`.
    Dead,
}

/// A persistent `/bin/bash --noprofile --norc` inside the session's sandbox.
///
/// Not safe for concurrent calls (neither is the reference's); the caller
/// serialises a session's tool calls, which `&mut self` enforces.
#[derive(Debug)]
pub struct BashSession {
    sandbox: Arc<BashSandbox>,
    spec: BashSessionSpec,
    state: State,
    /// Set while a command is in flight; if a call's future is dropped midway
    /// (outer cancellation), the next call finds it set and treats the shell as
    /// dead, as the reference does on cancellation.
    in_flight: bool,
    /// What this session's shells have used (see [`BashSession::usage`]).
    usage: UsageHandle,
}

impl BashSession {
    /// A session whose shell starts lazily on the first command.
    pub fn new(sandbox: Arc<BashSandbox>, spec: BashSessionSpec) -> Self {
        Self {
            sandbox,
            spec,
            state: State::NotStarted,
            in_flight: false,
            usage: UsageHandle::default(),
        }
        .with_zero_usage()
    }

    fn with_zero_usage(self) -> Self {
        let report = self.sandbox.report();
        let measured =
            |m: LimitMechanism| matches!(m, LimitMechanism::CgroupV1 | LimitMechanism::CgroupV2);
        let zero = ResourceUsage {
            cpu: report.shape.cpu_accounting.then_some(Duration::ZERO),
            memory_peak_bytes: measured(report.memory_limit).then_some(0),
            disk_peak_bytes: None,
        };
        self.usage.set_zero(zero);
        self
    }

    /// What this session's bash sandboxes have used so far, all shells together (see
    /// [`UsageHandle::get`]). Valid after [`close`](Self::close), which keeps the last
    /// reading (the cgroups are gone by then).
    pub fn usage(&self) -> ResourceUsage {
        self.usage.get()
    }

    /// A handle to [`usage`](Self::usage) that needs no lock on this session.
    pub fn usage_handle(&self) -> UsageHandle {
        self.usage.clone()
    }

    /// Hands a prestarted session (from a pool of sandboxes started ahead of
    /// demand) to its real session: `spec` replaces the one it was started with,
    /// for logs and for a later `restart`.
    ///
    /// The caller must have moved (renamed) the directories the shell was started
    /// with to the workspace and outputs of `spec.mounts`, on the same filesystem: the
    /// running sandbox's bind mounts and Landlock rules hold the directories
    /// themselves, not their paths, so they follow the rename. Memory stores, the
    /// environment and the `wasm-run` socket must be the same as at start (the
    /// pool only serves sessions without stores and with the default env).
    pub fn adopt(&mut self, spec: BashSessionSpec) {
        self.spec = spec;
    }

    /// Starts the shell now (so the first command does not pay for the sandbox
    /// start). A no-op when a shell is already running.
    pub async fn prestart(&mut self) -> Result<(), SandboxError> {
        if matches!(self.state, State::NotStarted) {
            let mut shell = self.sandbox.launch(&self.spec).await?;
            shell.attach_usage(self.usage.clone());
            self.state = State::Running(Box::new(shell));
        }
        Ok(())
    }

    /// Runs one bash tool call (`input` is the tool_use input object).
    pub async fn call(&mut self, input: &Value) -> BashOutput {
        if self.in_flight {
            // The previous call was cancelled midway: its command may still be
            // running and its output would bleed into this call.
            self.in_flight = false;
            self.kill_shell().await;
            self.state = State::Dead;
        }
        let request = match protocol::parse_input(input) {
            Ok(r) => r,
            Err(protocol::Rejection(text)) => return BashOutput::err(text),
        };
        match request {
            BashRequest::Restart => {
                self.kill_shell().await;
                self.state = State::NotStarted;
                match self.prestart().await {
                    Ok(()) => BashOutput::ok(RESTARTED),
                    Err(e) => BashOutput::err(format!("bash: {e}")),
                }
            }
            BashRequest::Run {
                command,
                timeout_secs,
            } => {
                if matches!(self.state, State::Dead) {
                    return BashOutput::err(TERMINATED);
                }
                if let Err(e) = self.prestart().await {
                    return BashOutput::err(format!("bash: {e}"));
                }
                self.in_flight = true;
                let out = self.exec(&command, timeout_secs).await;
                self.in_flight = false;
                out
            }
        }
    }

    async fn exec(&mut self, command: &str, timeout_secs: f64) -> BashOutput {
        let State::Running(shell) = &mut self.state else {
            return BashOutput::err(TERMINATED);
        };
        let sentinel = protocol::new_sentinel();
        let wrapped = protocol::wrap_command(command, &sentinel);
        let start = tokio::time::Instant::now();
        // A non-positive timeout has already expired: the reference writes the
        // command, then its first await fails the deadline.
        let write_budget = if timeout_secs > 0.0 {
            duration_from_secs(timeout_secs).unwrap_or(FAR_FUTURE)
        } else {
            Duration::from_secs(1)
        };
        let write = async {
            match shell.stdin.as_mut() {
                Some(stdin) => stdin.write_all(wrapped.as_bytes()).await,
                None => Err(std::io::ErrorKind::BrokenPipe.into()),
            }
        };
        let wrote = tokio::time::timeout(write_budget, write).await;
        if wrote.is_err() || timeout_secs <= 0.0 {
            return self.timed_out(timeout_secs).await;
        }
        let mut buffer = OutputBuffer::new(&sentinel);
        let remaining = duration_from_secs(timeout_secs).map(|d| d.saturating_sub(start.elapsed()));
        let read = async {
            let mut chunk = [0u8; READ_CHUNK];
            loop {
                match shell.stdout.read(&mut chunk).await {
                    // EOF (or a broken pipe): the shell is gone.
                    Ok(0) | Err(_) => return true,
                    Ok(n) => {
                        if buffer.push(&chunk[..n]) {
                            return false;
                        }
                    }
                }
            }
        };
        let eof = match remaining {
            Some(d) => match tokio::time::timeout(d, read).await {
                Ok(eof) => eof,
                Err(_) => return self.timed_out(timeout_secs).await,
            },
            // Too large to represent: effectively no timeout.
            None => read.await,
        };
        let result = finish_output(&buffer, &sentinel);
        if eof {
            // The shell is gone (`exit`, a syntax error, killed): it stays dead.
            self.kill_shell().await;
            self.state = State::Dead;
        }
        BashOutput {
            text: result.output,
            is_error: result.exit_code != 0,
        }
    }

    async fn timed_out(&mut self, timeout_secs: f64) -> BashOutput {
        self.kill_shell().await;
        self.state = State::Dead;
        BashOutput::err(protocol::timeout_message(timeout_secs))
    }

    async fn kill_shell(&mut self) {
        // The shell leaves `state` before the first await, owned by this future: if the
        // future is dropped mid-teardown (a caller's timeout, a close racing a call),
        // the shell's `Drop` finishes the teardown on a thread, and a later call finds
        // no half-terminated shell. Either way the shell's last reading reaches
        // `self.usage` (see `UsageHandle`), not through this future.
        match std::mem::replace(&mut self.state, State::NotStarted) {
            State::Running(mut shell) => shell.terminate().await,
            other => self.state = other,
        }
    }

    /// Kills bash and every process it started, and removes the session's cgroups.
    /// Nothing of the sandbox is left running afterwards. The session can be used
    /// again (the next command starts a fresh shell).
    pub async fn close(&mut self) {
        self.kill_shell().await;
        self.state = State::NotStarted;
        self.in_flight = false;
    }

    /// Host pids of the processes inside this session's sandbox (empty when no
    /// shell runs). For tests and diagnostics.
    pub fn sandbox_processes(&self) -> Vec<i32> {
        match &self.state {
            State::Running(shell) => shell.processes(),
            _ => Vec::new(),
        }
    }

    /// True while a shell process is running.
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running(_))
    }

    /// The sandbox this session runs in.
    pub fn sandbox(&self) -> &Arc<BashSandbox> {
        &self.sandbox
    }
}

/// Stands in for timeouts too large to matter.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A positive, finite, representable number of seconds as a `Duration`.
fn duration_from_secs(secs: f64) -> Option<Duration> {
    if secs > 0.0 {
        Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| *d < FAR_FUTURE)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}
    fn is_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_and_futures_are_send() {
        is_send_sync::<BashSandbox>();
        let sandbox = Arc::new(BashSandbox::new(crate::BashConfig {
            bwrap_path: Some("/nonexistent".into()),
            ..crate::BashConfig::default()
        }));
        let mut s = BashSession::new(
            sandbox,
            BashSessionSpec {
                session_id: "s".into(),
                mounts: wasm_sandbox_fs::mounts::MountSet::session(
                    "/nonexistent",
                    "/nonexistent",
                    [],
                )
                .unwrap(),
                env: None,
                wasm_run_socket: None,
                egress_dir: None,
            },
        );
        is_send(&s);
        let input = serde_json::json!({"command": "true"});
        let fut = s.call(&input);
        is_send(&fut);
        drop(fut);
        is_send(&s.close());
    }
}
