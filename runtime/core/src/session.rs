//! One session's sandbox: its directories, its file-tools instance and its
//! bash shell.

use crate::commands::{CommandComponent, CommandOutput};
use crate::config::Cap;
use crate::disk::{DiskSpec, explain_disk_full, mount_disk};
use crate::file_tools::{FileToolsInstance, ToolConfig, wit_cap};
use crate::runtime::Runtime;
use crate::sandbox::Sandbox;
use crate::tool::{Tool, ToolAnswer, ToolCall, ToolResult};
use crate::wasm_run::{Bridge, RunContext};
use crate::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wasm_sandbox_fs::mounts::{GuestPath, Mount, MountSet, WORKSPACE};
use wasm_sandbox_hostcalls_nn::NnSession;
use wasm_sandbox_native::BashSession;

/// What one session's sandbox looks like.
///
/// Defaults: workspace `<root>/workspace`, outputs `<root>/outputs`, no
/// memory stores, bash environment from the worker's allow-list, the
/// reference's size caps.
#[derive(Clone, Debug, Default)]
pub struct SessionSpec {
    /// Session id (for logs).
    pub session_id: String,
    /// Host directory owned by this session; `workspace/` and `outputs/`
    /// are created inside unless given explicitly.
    pub root: PathBuf,
    /// Host directory mounted at `/workspace`.
    pub workspace: Option<PathBuf>,
    /// Host directory mounted at `/mnt/session/outputs`.
    pub outputs: Option<PathBuf>,
    /// Memory stores: [`Mount`]s made by [`Mount::memory_store`]. Checked together with
    /// `/workspace` and `/mnt/session/outputs` as one [`MountSet`] (a store at or inside
    /// another is refused).
    pub memory_stores: Vec<Mount>,
    /// bash environment, used verbatim (like the reference's
    /// `AgentToolContext.env`); `None` = the worker's allow-listed env.
    pub env: Option<BTreeMap<String, String>>,
    /// `max_file_bytes` (default 262,144).
    pub max_file_bytes: Cap,
    /// `max_image_base64_bytes` (default 5 MiB).
    pub max_image_base64_bytes: Cap,
    /// `max_pdf_bytes` (default 20 MiB).
    pub max_pdf_bytes: Cap,
    /// The session's narrowing of `[networking]`: the value of its metadata key
    /// [`SESSION_ALLOWED_HOSTS_KEY`](wasm_sandbox_egress::SESSION_ALLOWED_HOSTS_KEY)
    /// (comma-separated `allowed_hosts` entries; it can only narrow the operator's
    /// policy). `None` = the operator's policy as is.
    pub network_allowed_hosts: Option<String>,
}

impl SessionSpec {
    /// A spec with the given id and root, everything else default.
    pub fn new(session_id: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        SessionSpec {
            session_id: session_id.into(),
            root: root.into(),
            ..Default::default()
        }
    }
}

impl Runtime {
    /// Creates a fresh sandbox for one session (see [`SessionSpec`]).
    ///
    /// # Sandbox
    ///
    /// The session's component gets exactly these preopens and nothing else:
    /// `/workspace` and `/mnt/session/outputs` read-write, and each memory
    /// store at its `/mnt/memory/<name>` path, read-only or read-write as
    /// configured. No environment, no arguments, no sockets, no name lookup.
    pub fn session(&self, spec: SessionSpec) -> Result<Session> {
        Session::new(self.clone(), spec)
    }
}

/// A live session sandbox. `Send + Sync`; tool calls are serialised.
///
/// # A call that never returns
///
/// A file-tool call runs guest code on a blocking thread; the epoch deadline stops
/// guest code, but not a host call the guest is blocked in (say `open()` of a FIFO
/// swapped in under it). Such a call is answered `timed out` at the outer deadline,
/// and the session stays usable in bounded ways:
/// * later file-tool calls while it is still stuck are answered at once with
///   `a previous call is still running`, without taking another thread (the instance
///   is never waited for), so one session pins **at most one** blocking thread for
///   file tools, whatever it sends;
/// * [`Session::close`] never waits for it: it cancels the call in flight (bash or
///   file tool), and drops the instance only if it is free; a stuck thread drops it
///   when (if ever) its host call returns.
///
/// Counting `wasm-run` too, a hostile session holds at most
/// `1 + wasm_run.max_concurrent_per_session` blocking threads, and the `wasm-run`
/// ones always end (non-blocking opens, socket I/O that polls for cancellation,
/// compilation in a helper process with a wall-clock limit).
pub struct Session {
    id: String,
    workspace: PathBuf,
    outputs: PathBuf,
    runtime: Runtime,
    preopens: Arc<MountSet>,
    /// The file tools' configuration (the WIT `tool-config` record).
    tool_config: Arc<ToolConfig>,
    /// The session's wasi-nn state (quotas count per session, not per store).
    nn: Arc<NnSession>,
    /// The file-tools instance; `None` after a trap until the next call
    /// re-instantiates it. Only ever `try_lock`ed: never waited for.
    files: Arc<Mutex<Option<FileToolsInstance>>>,
    /// Set while a blocking thread runs a file-tool call (cleared when it ends,
    /// even if that is long after the call was answered `timed out`).
    files_busy: Arc<std::sync::atomic::AtomicBool>,
    /// Becomes `true` when [`Session::close`] starts: calls in flight stop waiting.
    closing: tokio::sync::watch::Sender<bool>,
    /// Serialises tool calls, as the reference's single dispatch loop does.
    call_lock: tokio::sync::Mutex<()>,
    /// Set by [`Session::close`] (under the bash lock): a prestart that runs
    /// late must not start a shell nobody will close.
    closed: std::sync::atomic::AtomicBool,
    /// The session's bash (started lazily, or by [`Session::prestart_bash`],
    /// which holds only this lock so file tools need not wait for it).
    bash: tokio::sync::Mutex<BashSession>,
    /// The `wasm-run` bridge into the bash sandbox, when enabled.
    bridge: Option<Bridge>,
    /// The session's network proxy and its directory (`[networking]` on).
    egress: Option<crate::egress::EgressDir>,
    /// Tool calls, active time and wasm CPU for the usage record ([`crate::usage`]).
    account: Arc<crate::usage::SessionAccount>,
    /// The bash sandbox's resource counters, readable without the bash lock.
    usage: wasm_sandbox_native::UsageHandle,
    /// The session's capped filesystem (`[runtime.shape] disk`), unmounted on drop.
    /// Declared last: dropped after the shell and the component instance.
    disk: Option<wasm_sandbox_native::disk::DiskCap>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("workspace", &self.workspace)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(runtime: Runtime, spec: SessionSpec) -> Result<Session> {
        let workspace = spec
            .workspace
            .clone()
            .unwrap_or_else(|| spec.root.join("workspace"));
        let outputs = spec
            .outputs
            .clone()
            .unwrap_or_else(|| spec.root.join("outputs"));
        let mounts = Arc::new(mount_set(&workspace, &outputs, &spec.memory_stores)?);
        // `[runtime.shape] disk`: workspace and outputs on one capped filesystem,
        // mounted before anything is created in them (see wasm_sandbox_native::disk).
        let disk = mount_disk(
            &runtime.config().shape,
            runtime.sandbox_report(),
            &DiskSpec {
                session_id: &spec.session_id,
                root: &spec.root,
                custom_dirs: spec.workspace.is_some() || spec.outputs.is_some(),
                memory_stores: &spec.memory_stores,
            },
        )?;
        // A sandbox started ahead of demand serves sessions that look like the
        // one it was started for: no stores, the default env, the default layout.
        // A disk-capped session starts its own: a pooled sandbox's directories
        // live on the host filesystem and cannot be renamed onto the cap.
        let poolable = spec.memory_stores.is_empty()
            && spec.env.is_none()
            && spec.workspace.is_none()
            && spec.outputs.is_none()
            && disk.is_none();
        let pooled = if poolable {
            let taken = runtime
                .take_pooled()
                .and_then(|p| p.adopt_dirs(&spec.root, &workspace, &outputs));
            runtime.fill_pool();
            taken
        } else {
            None
        };
        for dir in [&workspace, &outputs] {
            std::fs::create_dir_all(dir).map_err(Error::Io)?;
        }
        let tool_config = tool_config(&spec, &mounts);
        let mut sandbox = match pooled {
            Some(mut sandbox) => {
                sandbox.adopt(&spec.session_id, &mounts, spec.env.clone());
                sandbox
            }
            None => Sandbox::new(
                runtime.bash_host(),
                &spec.session_id,
                &mounts,
                spec.env.clone(),
            )?,
        };
        if let Some(e) = sandbox.egress.as_mut() {
            e.serve(
                runtime.bash_host(),
                &spec.session_id,
                spec.network_allowed_hosts.as_deref(),
            );
        }
        let Sandbox {
            bash,
            bridge,
            egress,
        } = sandbox;
        let nn = Arc::new(runtime.nn().session());
        let instance = runtime.file_tools().instantiate(&mounts, nn.ctx())?;
        Ok(Session {
            id: spec.session_id,
            workspace,
            outputs,
            runtime,
            preopens: mounts,
            nn,
            tool_config: Arc::new(tool_config),
            files: Arc::new(Mutex::new(Some(instance))),
            files_busy: Arc::default(),
            closing: tokio::sync::watch::Sender::new(false),
            call_lock: tokio::sync::Mutex::new(()),
            closed: std::sync::atomic::AtomicBool::new(false),
            account: Arc::default(),
            usage: bash.usage_handle(),
            disk,
            bash: tokio::sync::Mutex::new(bash),
            bridge,
            egress,
        })
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host directory mounted at `/workspace`.
    pub fn workspace_dir(&self) -> &Path {
        &self.workspace
    }

    /// Host directory mounted at `/mnt/session/outputs`.
    pub fn outputs_dir(&self) -> &Path {
        &self.outputs
    }

    /// What the session's bash sandbox used (CPU time of all its processes, peak
    /// memory, peak disk; see [`wasm_sandbox_native::ResourceUsage`]), all shells
    /// together. Never waits for a call in flight. Valid after [`Session::close`],
    /// which keeps the last reading. `None` when this host measures nothing (no
    /// cgroups); a field is `None` when that counter is not measured here. The file
    /// tools' and `wasm-run` components' CPU runs on worker threads and is not
    /// included.
    pub fn resource_usage(&self) -> Option<wasm_sandbox_native::ResourceUsage> {
        let mut u = self.usage.get();
        if let Some(d) = &self.disk {
            u.disk_peak_bytes = Some(d.peak_bytes());
        }
        (u.cpu.is_some() || u.memory_peak_bytes.is_some() || u.disk_peak_bytes.is_some())
            .then_some(u)
    }

    /// The session's network use through its proxy (bytes each way, connections,
    /// denials); `None` when the session has no proxy (`[networking] type =
    /// "none"`, or bash without its sandbox). Valid after [`Session::close`].
    pub fn network_usage(&self) -> Option<wasm_sandbox_egress::NetUsage> {
        self.egress
            .as_ref()
            .and_then(crate::egress::EgressDir::usage)
    }

    /// Runs one sandbox tool call and returns the result to post: a convenience over
    /// [`Session::call`] for embedders and tests.
    ///
    /// Returns `None` for a tool that is not one of the sandbox's ([`Tool::from_name`]):
    /// the reference posts nothing for those, leaving them to whichever client owns them.
    pub async fn call_tool(&self, call: &ToolCall) -> Option<ToolResult> {
        let tool = call.tool()?;
        Some(self.call(tool, &call.input).await.result)
    }

    /// Runs one call of a sandbox tool and answers it, tagged with how it ended.
    ///
    /// The session owns the call's deadline (`[runtime.limits] tool_timeout`): a call past
    /// it is answered [`ToolAnswer::timed_out`] ([`CallOutcome::TimedOut`](crate::CallOutcome)).
    /// Calls are serialised, as the reference's single dispatch loop does.
    ///
    /// The deadline starts once the call holds the session's call lock (and, for bash, the
    /// bash lock), not when it is queued: time spent waiting behind an earlier call or a
    /// slow bash sandbox start ([`Session::prestart_bash`] holds the bash lock) is not
    /// counted. Such a wait is bounded only by the caller's own backstop (the worker's
    /// `RunnerConfig::backstop`).
    pub async fn call(&self, tool: Tool, input: &Value) -> ToolAnswer {
        // Closing cancels the call: it must not wait for a call that may never end.
        let mut closing = self.closing.subscribe();
        let mut answer = tokio::select! {
            answer = self.call_serial(tool, input) => answer,
            _ = closing.wait_for(|closed| *closed) => {
                ToolAnswer::failed(tool.name(), "the session was closed")
            }
        };
        // The disk peak is sampled after every call (a statvfs).
        if let Some(d) = &self.disk {
            let _ = d.used_bytes();
            explain_disk_full(d, tool, input, &mut answer.result);
        }
        answer
    }

    async fn call_serial(&self, tool: Tool, input: &Value) -> ToolAnswer {
        let _serial = self.call_lock.lock().await;
        // Counted from here (the call holds the session) to its answer or cancellation.
        self.account.count_call(tool.name());
        let _active = self.account.active();
        if tool.is_file_tool() {
            return self.call_file_tool(tool, input).await;
        }
        self.start_bridge();
        let mut bash = self.bash.lock().await;
        // The reference's outer deadline (150 s) also bounds bash, whose own
        // default timeout (120 s) is kept below it so its cleanup fires first.
        // Cancelling the call leaves the shell dead until `restart`, as in the
        // reference. The deadline starts here, after both the call lock and the
        // bash lock are held: a call queued behind a slow bash start is bounded
        // by the worker's backstop, not by this deadline.
        let deadline =
            std::time::Duration::from_millis(self.runtime.config().limits.tool_timeout_ms);
        match tokio::time::timeout(deadline, bash.call(input)).await {
            Ok(out) => ToolAnswer::ran(ToolResult::text(out.text, out.is_error)),
            Err(_) => ToolAnswer::timed_out(tool.name()),
        }
    }

    /// Starts the session's shell now, so the first bash call does not pay
    /// for the sandbox start (a few milliseconds). Workers call this right
    /// after claiming a session; failures surface on the first bash call.
    pub async fn prestart_bash(&self) {
        self.start_bridge();
        let mut bash = self.bash.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Err(e) = bash.prestart().await {
            tracing::warn!(session_id = %self.id, error = %e, "bash sandbox failed to start");
        }
    }

    /// Starts serving `wasm-run` for this session's sandbox (idempotent).
    fn start_bridge(&self) {
        if let Some(bridge) = &self.bridge {
            bridge.start(|| RunContext {
                commands: self.runtime.commands().clone(),
                preopens: self.preopens.clone(),
                nn: self.nn.clone(),
                session_id: self.id.clone(),
                account: self.account.clone(),
            });
        }
    }

    /// Host pids of the processes in this session's bash sandbox (empty when
    /// no shell runs). For teardown checks and diagnostics.
    pub async fn bash_processes(&self) -> Vec<i32> {
        self.bash.lock().await.sandbox_processes()
    }

    async fn call_file_tool(&self, tool: Tool, input: &Value) -> ToolAnswer {
        use std::sync::atomic::Ordering;
        // A call still stuck on its blocking thread keeps the flag: answer now
        // rather than park a second thread behind it.
        if self.files_busy.swap(true, Ordering::AcqRel) {
            return still_running(tool);
        }
        let busy = BusyGuard(self.files_busy.clone());
        let input = input.clone();
        let config = self.tool_config.clone();
        let files = self.files.clone();
        let preopens = self.preopens.clone();
        let runtime = self.runtime.clone();
        let nn = self.nn.clone();
        let account = self.account.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _busy = busy;
            account.measure(crate::usage::CpuKind::Tools, || {
                run_blocking(&runtime, &files, &preopens, &nn, tool, &input, &config)
            })
        });
        // The epoch deadline interrupts guest code, not a host call the guest
        // is blocked in; this outer deadline (one tick later) covers that too.
        let limits = self.runtime.config();
        let outer = std::time::Duration::from_millis(
            limits.limits.tool_timeout_ms + 2 * limits.engine.epoch_tick_ms,
        );
        match tokio::time::timeout(outer, task).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => ToolAnswer::failed(tool.name(), e),
            Err(_) => {
                tracing::error!(session_id = %self.id, tool = %tool, "file tool blocked past its deadline");
                ToolAnswer::timed_out(tool.name())
            }
        }
    }

    /// Runs a file-tool call on the current thread (for embedders without
    /// an async runtime, and benchmarks). Not serialised with
    /// [`Session::call_tool`] beyond the instance lock: while another call holds
    /// the instance this one is answered `a previous call is still running`.
    /// `None` for a call that is not a file tool.
    pub fn call_file_tool_blocking(&self, call: &ToolCall) -> Option<ToolResult> {
        let tool = call.tool().filter(|t| t.is_file_tool())?;
        // Metered like `call_tool`: the call, its wall time and its thread's CPU.
        self.account.count_call(tool.name());
        let _active = self.account.active();
        Some(self.account.measure(crate::usage::CpuKind::Tools, || {
            run_blocking(
                &self.runtime,
                &self.files,
                &self.preopens,
                &self.nn,
                tool,
                &call.input,
                &self.tool_config,
            )
            .result
        }))
    }

    /// Runs a `wasi:cli/command` component (see
    /// [`Runtime::load_command`](crate::Runtime::load_command)) in a fresh
    /// instance with this session's preopens and nothing else, on the
    /// current thread, under the tool deadline.
    ///
    /// # Sandbox
    ///
    /// The command sees `/workspace`, `/mnt/session/outputs` and the memory
    /// stores exactly as the file tools do, plus the given arguments and
    /// stdin; no environment and no network.
    pub fn run_command(
        &self,
        command: &CommandComponent,
        args: &[String],
        stdin: &[u8],
    ) -> Result<CommandOutput> {
        self.account.measure(crate::usage::CpuKind::Run, || {
            self.runtime.commands().run(
                command,
                &self.preopens,
                args,
                stdin,
                self.runtime.deadline_ticks(),
                self.nn.ctx(),
            )
        })
    }

    /// What this session's tool calls and wasm guests used so far: calls per tool, active
    /// tool time, CPU of the file-tools and `wasm-run` threads, remote wasi-nn calls and bytes
    /// (see [`crate::usage`]). Bash's own CPU, memory and disk are the cgroup's
    /// (`resource_usage`).
    pub fn wasm_usage(&self) -> crate::usage::WasmUsage {
        let nn = self.nn.usage();
        crate::usage::WasmUsage {
            nn_calls: nn.calls,
            nn_bytes: nn.bytes,
            ..self.account.snapshot()
        }
    }

    /// Ends the session: cancels the call in flight, kills the shell and every
    /// process of its sandbox, and drops the component instance (unless a stuck
    /// call holds it; that thread drops it when it returns). Directories are left
    /// for the caller. Never blocks a thread and never waits for a guest call.
    pub async fn close(&self) {
        self.closing.send_replace(true);
        let _serial = self.call_lock.lock().await;
        let mut bash = self.bash.lock().await;
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        bash.close().await;
        if let Some(bridge) = &self.bridge {
            bridge.close();
        }
        if let Some(egress) = &self.egress {
            egress.close();
        }
        // `try_lock`: a std mutex must not be waited for on an async thread, and
        // its holder may be a call blocked in a host call forever.
        if let Ok(mut g) = self.files.try_lock() {
            g.take();
        }
    }
}

/// Clears a session's `files_busy` flag when the blocking call ends.
struct BusyGuard(Arc<std::sync::atomic::AtomicBool>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

fn still_running(tool: Tool) -> ToolAnswer {
    ToolAnswer::failed(tool.name(), "a previous call is still running")
}

fn run_blocking(
    runtime: &Runtime,
    files: &Mutex<Option<FileToolsInstance>>,
    preopens: &Arc<MountSet>,
    nn: &NnSession,
    tool: Tool,
    input: &Value,
    config: &ToolConfig,
) -> ToolAnswer {
    let name = tool.name();
    let mut guard = match files.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::WouldBlock) => return still_running(tool),
        Err(std::sync::TryLockError::Poisoned(_)) => {
            return ToolAnswer::failed(name, "session state poisoned");
        }
    };
    if guard.is_none() {
        match runtime.file_tools().instantiate(preopens, nn.ctx()) {
            Ok(i) => *guard = Some(i),
            Err(e) => return ToolAnswer::failed(name, e),
        }
    }
    let Some(instance) = guard.as_mut() else {
        return ToolAnswer::failed(name, "no instance");
    };
    match instance.call(tool, input, config, runtime.deadline_ticks()) {
        Ok(answer) => answer,
        Err(err) => {
            // A trapped instance may hold inconsistent state: replace it on
            // the next call.
            *guard = None;
            match err.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => ToolAnswer::timed_out(name),
                _ => {
                    tracing::warn!(tool = name, error = %crate::wasm_run::Escaped(&format!("{err:#}")),
                        "file-tools component trapped");
                    ToolAnswer::failed(name, err)
                }
            }
        }
    }
}

/// The file tools' `tool-config` record for this session: its roots, read-only roots and caps.
fn tool_config(spec: &SessionSpec, mounts: &MountSet) -> ToolConfig {
    // The roots are the session's mounts, in the set's order (outputs, then the stores): the
    // workdir is `/workspace`, every other mount is an allowed root, read-only ones refuse
    // write/edit.
    let roots = mounts
        .all()
        .iter()
        .filter(|m| m.guest != GuestPath::Workspace);
    ToolConfig {
        workdir: WORKSPACE.to_owned(),
        allowed_roots: roots.clone().map(|m| m.guest.to_string()).collect(),
        read_only_roots: roots
            .filter(|m| m.read_only())
            .map(|m| m.guest.to_string())
            .collect(),
        max_file_bytes: wit_cap(spec.max_file_bytes),
        max_image_base64_bytes: wit_cap(spec.max_image_base64_bytes),
        max_pdf_bytes: wit_cap(spec.max_pdf_bytes),
    }
}

/// The session's mounts, checked once as a whole (`wasm_sandbox_fs::mounts`): memory
/// stores at canonical paths below `/mnt/memory/`, none at or inside another. Anything
/// else could shadow `/workspace` or another mount in the file tools' preopens, or make
/// the preopen lookup ambiguous; the worker resolves paths with the same rule, so what it
/// sends always passes.
fn mount_set(workspace: &Path, outputs: &Path, stores: &[Mount]) -> Result<MountSet> {
    MountSet::session(workspace, outputs, stores.iter().cloned())
        .map_err(|e| Error::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(path: &str, read_only: bool) -> Mount {
        Mount::memory_store(
            wasm_sandbox_fs::guest_path::MemoryMountPath::parse(path).unwrap(),
            "/h",
            wasm_sandbox_fs::mounts::Access::from_read_only(read_only),
        )
    }

    /// Overlapping stores (or a second `/workspace`) are refused as a configuration error,
    /// in the shared rule's words.
    #[test]
    fn memory_stores_are_checked_as_one_set() {
        let (w, o) = (Path::new("/w"), Path::new("/o"));
        let ok = [
            store("/mnt/memory/a/b", false),
            store("/mnt/memory/a/c", true),
        ];
        assert_eq!(mount_set(w, o, &ok).unwrap().all().len(), 4);
        let err = mount_set(
            w,
            o,
            &[
                store("/mnt/memory/a", false),
                store("/mnt/memory/a/b", true),
            ],
        )
        .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.to_string().contains("overlap"), "{err}");
        let err = mount_set(w, o, &[Mount::workspace("/x")]).unwrap_err();
        assert!(err.to_string().contains("exactly one /workspace"), "{err}");
    }

    #[test]
    fn tool_config_caps() {
        use crate::file_tools::wit::Cap as WitCap;
        let mut spec = SessionSpec::new("s", "/tmp/x");
        spec.max_file_bytes = Cap::Unlimited;
        spec.max_pdf_bytes = Cap::Bytes(10);
        spec.memory_stores.push(store("/mnt/memory/n", true));
        let mounts = mount_set(Path::new("/w"), Path::new("/o"), &spec.memory_stores).unwrap();
        let c = tool_config(&spec, &mounts);
        assert!(matches!(c.max_file_bytes, WitCap::Unlimited));
        assert!(matches!(c.max_pdf_bytes, WitCap::Bytes(10)));
        assert!(matches!(c.max_image_base64_bytes, WitCap::Default));
        assert_eq!(c.workdir, "/workspace");
        assert_eq!(c.allowed_roots, ["/mnt/session/outputs", "/mnt/memory/n"]);
        assert_eq!(c.read_only_roots, ["/mnt/memory/n"]);
    }
}
