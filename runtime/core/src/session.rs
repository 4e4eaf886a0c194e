//! One session's sandbox: its directories, its file-tools instance and its
//! bash shell.

use crate::config::Cap;
use crate::file_tools::{CommandOutput, FileToolsInstance, Preopen};
use crate::runtime::CommandComponent;
use crate::runtime::Runtime;
use crate::tool::{FILE_TOOLS, ToolCall, ToolResult};
use crate::wasm_run::{Bridge, RunContext};
use crate::{Error, Result};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wasm_sandbox_hostcalls_nn::NnSession;
use wasm_sandbox_native::{BashSession, BashSessionSpec, StoreMount};

/// Guest path of the session workspace (the tools' working directory).
pub const WORKSPACE_GUEST: &str = "/workspace";
/// Guest path of the session outputs directory.
pub const OUTPUTS_GUEST: &str = "/mnt/session/outputs";
/// Parent of memory-store mounts.
pub const MEMORY_GUEST_PARENT: &str = "/mnt/memory/";

/// A memory store mounted into the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryMount {
    /// Guest path below `/mnt/memory/` in the canonical form of
    /// [`wasm_sandbox_fs::guest_path::MemoryMountPath`] (nested paths allowed; stores may not
    /// overlap).
    pub guest_path: String,
    /// Host directory holding the store's files.
    pub host_path: PathBuf,
    /// Whether the store is read-only (write/edit refuse it; bash cannot
    /// write it either).
    pub read_only: bool,
}

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
    /// Memory stores.
    pub memory_stores: Vec<MemoryMount>,
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
    preopens: Arc<Vec<Preopen>>,
    tool_config: Arc<str>,
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
        // `[runtime.shape] disk`: workspace and outputs on one capped filesystem,
        // mounted before anything is created in them (see wasm_sandbox_native::disk).
        let disk = mount_disk(&runtime, &spec)?;
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
            let taken = runtime.take_pooled().and_then(|p| {
                match adopt_dirs(&p.dir, &spec.root, &workspace, &outputs) {
                    Ok(()) => Some(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not adopt a pooled sandbox; starting a fresh one");
                        let dir = p.dir.clone();
                        drop(p);
                        let _ = wasm_sandbox_fs::tree::remove_tree(&dir);
                        None
                    }
                }
            });
            runtime.fill_pool();
            taken
        } else {
            None
        };
        for dir in [&workspace, &outputs] {
            std::fs::create_dir_all(dir).map_err(Error::Io)?;
        }
        let mut preopens = vec![
            Preopen {
                host: workspace.clone(),
                guest: WORKSPACE_GUEST.into(),
                read_only: false,
            },
            Preopen {
                host: outputs.clone(),
                guest: OUTPUTS_GUEST.into(),
                read_only: false,
            },
        ];
        validate_memory_path(&spec.memory_stores)?;
        for m in &spec.memory_stores {
            preopens.push(Preopen {
                host: m.host_path.clone(),
                guest: m.guest_path.clone(),
                read_only: m.read_only,
            });
        }
        let tool_config = tool_config_json(&spec);
        let bash_spec = BashSessionSpec {
            session_id: spec.session_id.clone(),
            workspace: workspace.clone(),
            outputs: outputs.clone(),
            memory_stores: spec
                .memory_stores
                .iter()
                .map(|m| StoreMount {
                    guest_path: m.guest_path.clone(),
                    host_path: m.host_path.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            env: spec.env.clone(),
            wasm_run_socket: None,
            egress_dir: None,
        };
        let (bash, bridge, mut egress) = match pooled {
            Some(p) => {
                let mut bash = p.bash;
                bash.adopt(BashSessionSpec {
                    wasm_run_socket: p.bridge.as_ref().map(|b| b.socket().to_path_buf()),
                    egress_dir: p.egress.as_ref().map(|e| e.path().to_path_buf()),
                    ..bash_spec
                });
                (bash, p.bridge, p.egress)
            }
            None => {
                let bridge = Bridge::bind(&runtime)?;
                let egress = crate::egress::EgressDir::create(&runtime)?;
                let bash_spec = BashSessionSpec {
                    wasm_run_socket: bridge.as_ref().map(|b| b.socket().to_path_buf()),
                    egress_dir: egress.as_ref().map(|e| e.path().to_path_buf()),
                    ..bash_spec
                };
                (
                    BashSession::new(runtime.inner.bash.clone(), bash_spec),
                    bridge,
                    egress,
                )
            }
        };
        if let Some(e) = egress.as_mut() {
            e.serve(
                &runtime,
                &spec.session_id,
                spec.network_allowed_hosts.as_deref(),
            );
        }
        let preopens = Arc::new(preopens);
        let inner = &runtime.inner;
        let nn = Arc::new(inner.nn.session());
        let instance = FileToolsInstance::new(
            &inner.engine,
            &inner.tools_pre,
            &preopens,
            inner.config.limits.memory_bytes,
            nn.ctx(),
        )?;
        Ok(Session {
            id: spec.session_id,
            workspace,
            outputs,
            runtime,
            preopens,
            nn,
            tool_config: tool_config.into(),
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

    /// Runs one sandbox tool call and returns the result to post.
    ///
    /// Returns `None` for a tool that is not one of
    /// [`SANDBOX_TOOLS`](crate::SANDBOX_TOOLS): the reference posts nothing
    /// for those, leaving them to whichever client owns them.
    pub async fn call_tool(&self, call: &ToolCall) -> Option<ToolResult> {
        if !FILE_TOOLS.contains(&call.name.as_str()) && call.name != "bash" {
            return None;
        }
        // Closing cancels the call: it must not wait for a call that may never end.
        let mut closing = self.closing.subscribe();
        let result = tokio::select! {
            result = self.call_tool_serial(call) => result,
            _ = closing.wait_for(|closed| *closed) => Some(ToolResult::error(format!(
                "tool '{}' failed: the session was closed",
                call.name
            ))),
        };
        // The disk peak is sampled after every call (a statvfs).
        let mut result = result;
        if let Some(d) = &self.disk {
            let _ = d.used_bytes();
            if let Some(r) = result.as_mut() {
                explain_disk_full(d, call, r);
            }
        }
        result
    }

    async fn call_tool_serial(&self, call: &ToolCall) -> Option<ToolResult> {
        let _serial = self.call_lock.lock().await;
        // Counted from here (the call holds the session) to its answer or cancellation.
        self.account.count_call(&call.name);
        let _active = self.account.active();
        if FILE_TOOLS.contains(&call.name.as_str()) {
            return Some(self.call_file_tool(call).await);
        }
        if call.name != "bash" {
            return None;
        }
        self.start_bridge();
        let mut bash = self.bash.lock().await;
        // The reference's outer deadline (150 s) also bounds bash, whose own
        // default timeout (120 s) is kept below it so its cleanup fires first.
        // Cancelling the call leaves the shell dead until `restart`, as in the
        // reference.
        let deadline =
            std::time::Duration::from_millis(self.runtime.inner.config.limits.tool_timeout_ms);
        Some(
            match tokio::time::timeout(deadline, bash.call(&call.input)).await {
                Ok(out) => ToolResult::text(out.text, out.is_error),
                Err(_) => ToolResult::error("tool 'bash' timed out"),
            },
        )
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
                runtime: self.runtime.clone(),
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

    async fn call_file_tool(&self, call: &ToolCall) -> ToolResult {
        use std::sync::atomic::Ordering;
        // A call still stuck on its blocking thread keeps the flag: answer now
        // rather than park a second thread behind it.
        if self.files_busy.swap(true, Ordering::AcqRel) {
            return still_running(&call.name);
        }
        let busy = BusyGuard(self.files_busy.clone());
        let request = request_json(&call.name, &call.input, &self.tool_config);
        let files = self.files.clone();
        let preopens = self.preopens.clone();
        let runtime = self.runtime.clone();
        let nn = self.nn.clone();
        let name = call.name.clone();
        let account = self.account.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _busy = busy;
            account.measure(crate::usage::CpuKind::Tools, || {
                run_blocking(&runtime, &files, &preopens, &nn, &name, &request)
            })
        });
        // The epoch deadline interrupts guest code, not a host call the guest
        // is blocked in; this outer deadline (one tick later) covers that too.
        let limits = &self.runtime.inner.config;
        let outer = std::time::Duration::from_millis(
            limits.limits.tool_timeout_ms + 2 * limits.engine.epoch_tick_ms,
        );
        match tokio::time::timeout(outer, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => ToolResult::error(format!("tool '{}' failed: {e}", call.name)),
            Err(_) => {
                tracing::error!(session_id = %self.id, tool = %call.name, "file tool blocked past its deadline");
                ToolResult::error(format!("tool '{}' timed out", call.name))
            }
        }
    }

    /// Runs a file-tool call on the current thread (for embedders without
    /// an async runtime, and benchmarks). Not serialised with
    /// [`Session::call_tool`] beyond the instance lock: while another call holds
    /// the instance this one is answered `a previous call is still running`.
    pub fn call_file_tool_blocking(&self, call: &ToolCall) -> Option<ToolResult> {
        if !FILE_TOOLS.contains(&call.name.as_str()) {
            return None;
        }
        let request = request_json(&call.name, &call.input, &self.tool_config);
        // Metered like `call_tool`: the call, its wall time and its thread's CPU.
        self.account.count_call(&call.name);
        let _active = self.account.active();
        Some(self.account.measure(crate::usage::CpuKind::Tools, || {
            run_blocking(
                &self.runtime,
                &self.files,
                &self.preopens,
                &self.nn,
                &call.name,
                &request,
            )
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
        let inner = &self.runtime.inner;
        self.account.measure(crate::usage::CpuKind::Run, || {
            FileToolsInstance::run_command(
                inner,
                &command.pre,
                &self.preopens,
                args,
                stdin,
                deadline_ticks(&self.runtime),
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

fn still_running(name: &str) -> ToolResult {
    ToolResult::error(format!(
        "tool '{name}' failed: a previous call is still running"
    ))
}

fn run_blocking(
    runtime: &Runtime,
    files: &Mutex<Option<FileToolsInstance>>,
    preopens: &Arc<Vec<Preopen>>,
    nn: &NnSession,
    name: &str,
    request: &str,
) -> ToolResult {
    let inner = &runtime.inner;
    let mut guard = match files.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::WouldBlock) => return still_running(name),
        Err(std::sync::TryLockError::Poisoned(_)) => {
            return ToolResult::error(format!("tool '{name}' failed: session state poisoned"));
        }
    };
    if guard.is_none() {
        match FileToolsInstance::new(
            &inner.engine,
            &inner.tools_pre,
            preopens,
            inner.config.limits.memory_bytes,
            nn.ctx(),
        ) {
            Ok(i) => *guard = Some(i),
            Err(e) => return ToolResult::error(format!("tool '{name}' failed: {e}")),
        }
    }
    let Some(instance) = guard.as_mut() else {
        return ToolResult::error(format!("tool '{name}' failed: no instance"));
    };
    match instance.call(request, deadline_ticks(runtime)) {
        Ok(json) => serde_json::from_str::<ToolResult>(&json).unwrap_or_else(|e| {
            ToolResult::error(format!("tool '{name}' failed: malformed result: {e}"))
        }),
        Err(err) => {
            // A trapped instance may hold inconsistent state: replace it on
            // the next call.
            *guard = None;
            match err.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => {
                    ToolResult::error(format!("tool '{name}' timed out"))
                }
                _ => {
                    tracing::warn!(tool = name, error = %crate::wasm_run::Escaped(&format!("{err:#}")),
                        "file-tools component trapped");
                    ToolResult::error(format!("tool '{name}' failed: {err}"))
                }
            }
        }
    }
}

/// The file tools' guest reports a failed stream write as `input/output error` (WASI
/// streams carry no errno). When a `write`/`edit` fails so on a session disk that has
/// less room than the call needed, the cause is the disk cap: say so, and how to get
/// room back.
fn explain_disk_full(
    disk: &wasm_sandbox_native::disk::DiskCap,
    call: &ToolCall,
    r: &mut ToolResult,
) {
    if !r.is_error || !matches!(call.name.as_str(), "write" | "edit") {
        return;
    }
    let needed: u64 = ["content", "new_string"]
        .iter()
        .filter_map(|k| call.input.get(*k).and_then(Value::as_str))
        .map(|s| s.len() as u64)
        .sum::<u64>()
        + (1 << 20);
    if disk.free_bytes().is_none_or(|free| free >= needed) {
        return;
    }
    let cap = disk
        .size_bytes()
        .map(wasm_sandbox_units::format_size)
        .unwrap_or_default();
    for block in &mut r.content {
        if let Some(text) = block.get("text").and_then(Value::as_str)
            && text.contains("input/output error")
        {
            let text = text.replace(
                "input/output error",
                &format!(
                    "No space left on device (the session's disk is full: {cap} cap for \
                     /workspace and /mnt/session/outputs together; delete files to make room)"
                ),
            );
            block["text"] = Value::String(text);
        }
    }
}

/// Mounts the session's capped filesystem when `[runtime.shape] disk` is set and the
/// host can (the probe at start-up said so). The default layout only (`<root>/workspace`,
/// `<root>/outputs`): an embedder's own directories are left as they are. A mount that
/// fails fails the session under `enforce = "required"` and is logged otherwise.
fn mount_disk(
    runtime: &Runtime,
    spec: &SessionSpec,
) -> Result<Option<wasm_sandbox_native::disk::DiskCap>> {
    let shape = &runtime.inner.config.shape;
    let Some(bytes) = shape.disk_bytes else {
        return Ok(None);
    };
    let required = shape.enforce == wasm_sandbox_native::Enforce::Required;
    if runtime.inner.bash.report().disk_limit != wasm_sandbox_native::LimitMechanism::Filesystem {
        // Under `required` the runtime refused to start already.
        return Ok(None);
    }
    if spec.workspace.is_some() || spec.outputs.is_some() {
        // The cap covers the default layout only; an embedder's directories (`replay
        // --workspace`) stay on their own filesystem, which `required` cannot accept.
        if required {
            return Err(Error::Config(
                "[runtime.shape] disk is set with enforce = \"required\", but the session \
                 uses its own workspace/outputs directories, which the disk cap cannot cover; \
                 drop the custom directories or use enforce = \"best-effort\""
                    .into(),
            ));
        }
        tracing::warn!(session_id = %spec.session_id,
            "custom workspace/outputs directories: the session runs without the disk cap");
        return Ok(None);
    }
    std::fs::create_dir_all(&spec.root).map_err(Error::Io)?;
    // Writable memory stores the worker downloaded below the root go onto the cap too
    // (`DiskCap::adopt`): bash binds them writable, so outside the cap they would let a
    // session fill the host disk. Read-only ones stay where they are (the session cannot
    // grow them; the download limits bound them).
    match wasm_sandbox_native::disk::DiskCap::mount(&spec.root, bytes, shape.disk_inodes) {
        Ok(mut d) => {
            // Host overcommit (sparse images: see `wasm_sandbox_native::disk`).
            if let Some(why) = d.overcommit() {
                if required {
                    return Err(Error::Config(format!(
                        "refusing the session under [runtime.shape] enforce = \"required\": {why}"
                    )));
                }
                tracing::warn!(session_id = %spec.session_id, problem = %why,
                    "session disk cap overcommits the host volume (enforce = \"best-effort\")");
            }
            for m in spec.memory_stores.iter().filter(|m| !m.read_only) {
                match d.adopt(&m.host_path) {
                    Ok(()) => {}
                    Err(e) if required => {
                        return Err(Error::Config(format!(
                            "cannot put memory store {} on the session's disk cap: {e}",
                            m.guest_path
                        )));
                    }
                    Err(e) => tracing::warn!(session_id = %spec.session_id, error = %e,
                        "memory store left off the session's disk cap"),
                }
            }
            Ok(Some(d))
        }
        Err(e) if required => Err(Error::Config(format!(
            "cannot mount the session's disk cap: {e}"
        ))),
        Err(e) => {
            tracing::warn!(session_id = %spec.session_id, error = %e,
                "cannot mount the session's disk cap; the session runs without it");
            Ok(None)
        }
    }
}

/// Moves a pooled sandbox's directories to the session's paths (same
/// filesystem: `rename`, so the running sandbox's mounts follow them).
fn adopt_dirs(
    pool_dir: &Path,
    root: &Path,
    workspace: &Path,
    outputs: &Path,
) -> std::io::Result<()> {
    for dir in [workspace, outputs] {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
    }
    std::fs::create_dir_all(root)?;
    std::fs::rename(pool_dir.join("workspace"), workspace)?;
    std::fs::rename(pool_dir.join("outputs"), outputs)?;
    std::fs::remove_dir(pool_dir)
}

fn deadline_ticks(runtime: &Runtime) -> u64 {
    let config = &runtime.inner.config;
    config
        .limits
        .tool_timeout_ms
        .div_ceil(config.engine.epoch_tick_ms.max(1))
        .max(1)
}

fn request_json(name: &str, input: &Value, config: &str) -> String {
    let name = Value::from(name);
    format!(r#"{{"name":{name},"input":{input},"config":{config}}}"#)
}

fn tool_config_json(spec: &SessionSpec) -> String {
    let mut allowed = vec![Value::from(OUTPUTS_GUEST)];
    let mut read_only = Vec::new();
    for m in &spec.memory_stores {
        allowed.push(Value::from(m.guest_path.clone()));
        if m.read_only {
            read_only.push(Value::from(m.guest_path.clone()));
        }
    }
    let mut obj = Map::new();
    obj.insert("workdir".into(), json!(WORKSPACE_GUEST));
    obj.insert("allowed_roots".into(), Value::Array(allowed));
    obj.insert("read_only_roots".into(), Value::Array(read_only));
    spec.max_file_bytes.write_to(&mut obj, "max_file_bytes");
    spec.max_image_base64_bytes
        .write_to(&mut obj, "max_image_base64_bytes");
    spec.max_pdf_bytes.write_to(&mut obj, "max_pdf_bytes");
    Value::Object(obj).to_string()
}

/// Memory stores' guest paths must follow the one mount-path rule
/// ([`wasm_sandbox_fs::guest_path`]): canonical, strictly below `/mnt/memory/` (nested
/// allowed), no `..`, and no store at or inside another. Anything else could shadow
/// `/workspace` or another mount in the file tools' preopens, or make the preopen lookup
/// ambiguous; the worker resolves paths with the same rule, so what it sends always passes.
fn validate_memory_path(stores: &[MemoryMount]) -> Result<()> {
    wasm_sandbox_fs::guest_path::check_mounts(stores.iter().map(|m| m.guest_path.as_str()))
        .map(drop)
        .map_err(|e| Error::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_paths() {
        let mounts = |paths: &[&str]| -> Vec<MemoryMount> {
            paths
                .iter()
                .map(|p| MemoryMount {
                    guest_path: (*p).to_owned(),
                    host_path: "/nonexistent".into(),
                    read_only: false,
                })
                .collect()
        };
        let check = |paths: &[&str]| validate_memory_path(&mounts(paths));
        assert!(check(&["/mnt/memory/notes"]).is_ok());
        assert!(check(&["/mnt/memory/a/b", "/mnt/memory/a/c"]).is_ok());
        for bad in [
            "/mnt/memory/",
            "/mnt/memory/../x",
            "/workspace",
            "mnt/memory/x",
            "/mnt/memory/a//b",
            "/mnt/memory/.",
            "/mnt/memoryx/a",
        ] {
            assert!(check(&[bad]).is_err(), "{bad}");
        }
        let err = check(&["/mnt/memory/a", "/mnt/memory/a/b"]).unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
        // The same words as every other layer (the shared rule's message).
        let err = check(&["/etc/x"]).unwrap_err().to_string();
        let shared = wasm_sandbox_fs::guest_path::MemoryMountPath::parse("/etc/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&shared), "{err}");
    }

    #[test]
    fn config_json_caps() {
        let mut spec = SessionSpec::new("s", "/tmp/x");
        spec.max_file_bytes = Cap::Unlimited;
        spec.max_pdf_bytes = Cap::Bytes(10);
        spec.memory_stores.push(MemoryMount {
            guest_path: "/mnt/memory/n".into(),
            host_path: "/h".into(),
            read_only: true,
        });
        let v: Value = serde_json::from_str(&tool_config_json(&spec)).unwrap();
        assert_eq!(v["max_file_bytes"], Value::Null);
        assert_eq!(v["max_pdf_bytes"], 10);
        assert!(v.get("max_image_base64_bytes").is_none());
        assert_eq!(
            v["allowed_roots"],
            json!(["/mnt/session/outputs", "/mnt/memory/n"])
        );
        assert_eq!(v["read_only_roots"], json!(["/mnt/memory/n"]));
    }
}
