//! Adapter from the core runtime (`wasm-sandbox-runtime`) to the worker's sandbox seam: one
//! compiled [`Runtime`] per process, one fresh core [`Session`] per claimed work item, rooted at
//! the item's own directory.
//!
//! The core session is created on a blocking thread (instantiation is synchronous work), tool
//! calls go straight to `Session::call` (which serialises calls, owns the call's deadline and
//! answers with an outcome-tagged result), and `close` kills bash and every descendant. The bash
//! environment is the core runtime's allow-list (`SessionSpec::env = None`), which never
//! includes `ANTHROPIC_*` variables; the worker additionally removes the environment key from
//! its own environment at start-up.

use wasm_sandbox_runtime::{Runtime, RuntimeConfig, Session, SessionSpec};

use crate::sandbox::{SandboxProvider, SandboxSession, SandboxSpec, Tool, ToolAnswer, ToolCall};

/// Sandboxes made by the core runtime.
#[derive(Clone)]
pub struct CoreProvider {
    runtime: Runtime,
}

impl std::fmt::Debug for CoreProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreProvider").finish_non_exhaustive()
    }
}

/// One core session.
pub struct CoreSession {
    session: std::sync::Arc<Session>,
    runtime: Runtime,
}

impl CoreProvider {
    /// Wraps an existing runtime.
    pub fn new(runtime: Runtime) -> CoreProvider {
        CoreProvider { runtime }
    }

    /// Builds the runtime from the `[runtime]` table of the config file (unknown keys are an
    /// error), or the defaults.
    ///
    /// Unless the table says otherwise, `concurrency.min(4)` bash sandboxes are kept started
    /// ahead of claims under `<workdir>/sessions/.pool` (see `wasm_sandbox_runtime::PoolConfig`),
    /// so a new session's first bash call does not wait for its sandbox. The pool lives inside
    /// the sessions directory because a pooled sandbox's directories are `rename`d into the
    /// session's, which cannot cross the `nosuid,nodev` mount of `<workdir>/sessions`
    /// ([`crate::worker::claim_workdir`]); being there, they are also under that mount. Call it
    /// inside a tokio runtime so the pool starts filling at once.
    ///
    /// Each call's deadline is `config.limits.tool_timeout_ms` (`[runtime.limits]
    /// tool_timeout`); the worker's [`RunnerConfig::tool_timeout`](crate::runner::RunnerConfig::tool_timeout)
    /// only sets the runner's backstop past it. The serve command lowers the core's limit to
    /// the worker's (`Settings::core_config` in the CLI: the smaller governs); an embedder
    /// calling this directly must do the same, or calls silently get the core's (longer)
    /// deadline.
    pub fn from_config(
        mut config: RuntimeConfig,
        workdir: &std::path::Path,
        concurrency: usize,
    ) -> anyhow::Result<CoreProvider> {
        if config.pool.sandboxes.is_none() {
            config.pool.sandboxes = Some(concurrency.clamp(1, 4));
        }
        if config.pool.dir.is_none() {
            // This worker's own directory: what a killed predecessor left there is garbage
            // (its sandboxes died with it: bubblewrap runs with --die-with-parent).
            let dir = workdir.join(crate::workdir::SESSIONS_DIR).join(".pool");
            if let Err(e) = wasm_sandbox_fs::tree::remove_tree(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not clear the sandbox pool directory");
            }
            config.pool.dir = Some(dir);
        }
        let runtime = Runtime::new(config)?;
        // Compiling the file-tools component at start-up leaves tens of MB of freed
        // compiler memory in glibc's arenas; give it back so an idle worker's RSS is what
        // it actually uses (measured: BENCHMARKS.md, "Idle worker RSS").
        // SAFETY: malloc_trim only releases free heap memory; no pointers are affected.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0);
        }
        Ok(CoreProvider::new(runtime))
    }

    /// The core runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}

impl SandboxProvider for CoreProvider {
    type Session = CoreSession;

    /// The bash sandbox, as probed when the runtime was built: unavailable unless the opt-in
    /// `allow_unsandboxed_bash_i_understand_the_risk` makes bash run on the host instead (then
    /// sessions work, unsandboxed, as that option promises; the probe already logged it).
    fn unavailable(&self) -> Vec<crate::sandbox::Unavailable> {
        let report = self.runtime.sandbox_report();
        let mut out = match &report.unavailable_reason {
            Some(reason) if !report.available && !report.unsandboxed_fallback => {
                vec![crate::sandbox::Unavailable {
                    what: "bash sandbox".to_owned(),
                    reason: reason.clone(),
                    fix: crate::sandbox::sandbox_fix(report),
                }]
            }
            _ => Vec::new(),
        };
        // A required shape the host cannot hold (Runtime::new refuses it already; kept
        // here so any provider built around such a runtime is never reported ready).
        let missing = report.shape.missing();
        if report.shape.enforce == wasm_sandbox_native::Enforce::Required && !missing.is_empty() {
            out.push(crate::sandbox::Unavailable {
                what: "sandbox shape".to_owned(),
                reason: missing.join("; "),
                fix: "give the worker writable cgroup controllers (deploy/README.md, \"Sandbox \
                      shape\"), or set [runtime.shape] enforce = \"best-effort\""
                    .to_owned(),
            });
        }
        out
    }

    fn shape(&self) -> Option<wasm_sandbox_native::ShapeReport> {
        Some(self.runtime.sandbox_report().shape.clone())
    }

    async fn create(&self, spec: SandboxSpec) -> anyhow::Result<CoreSession> {
        let runtime = self.runtime.clone();
        let session = tokio::task::spawn_blocking(move || {
            let mut core = SessionSpec::new(spec.session_id, spec.root);
            core.memory_stores = spec.memory_stores;
            core.network_allowed_hosts = spec.network_allowed_hosts;
            runtime.session(core)
        })
        .await??;
        // Start the bash sandbox in the background, while the event stream
        // attaches, so neither the first tool call nor the first bash call
        // waits for the sandbox start.
        let session = std::sync::Arc::new(session);
        let prestart = session.clone();
        tokio::spawn(async move { prestart.prestart_bash().await });
        Ok(CoreSession {
            session,
            runtime: self.runtime.clone(),
        })
    }
}

impl SandboxSession for CoreSession {
    async fn call(&self, tool: Tool, call: &ToolCall) -> ToolAnswer {
        self.session.call(tool, &call.input).await
    }

    async fn close(&self) {
        self.session.close().await;
    }

    /// The core session's counters: tool calls and active time, wasm CPU and wasi-nn
    /// ([`Session::wasm_usage`]), the bash cgroup's CPU and peaks
    /// ([`Session::resource_usage`]), the egress proxy's bytes, and the configured shape.
    fn usage(&self) -> crate::sandbox::SessionUsage {
        let wasm = self.session.wasm_usage();
        let bash = self.session.resource_usage().unwrap_or_default();
        let shape = &self.runtime.config().shape;
        crate::sandbox::SessionUsage {
            active: wasm.active,
            tool_calls: wasm.tool_calls,
            bash_cpu: bash.cpu,
            wasm_tools_cpu: wasm.wasm_tools_cpu,
            wasm_run_cpu: wasm.wasm_run_cpu,
            memory_peak_bytes: bash.memory_peak_bytes,
            disk_peak_bytes: bash.disk_peak_bytes,
            nn_calls: wasm.nn_calls,
            nn_bytes: wasm.nn_bytes,
            network: network_usage(&self.session),
            shape: Some(wasm_sandbox_usage::Shape {
                vcpus: shape.vcpus,
                memory_bytes: shape.memory_bytes,
            }),
        }
    }

    fn skills_installed(&self, workspace: &std::path::Path) {
        let runtime = self.runtime.clone();
        let skills = workspace.join("skills");
        // Marked as installed skills first (an fstat each): a `wasm-run` that comes
        // before its background precompile may use the skill size limit too.
        let files: Vec<_> = skill_components(&skills)
            .into_iter()
            .filter_map(|path| open_no_follow(&path).ok().map(|file| (path, file)))
            .filter(|(_, file)| runtime.allow_skill_file(file).is_ok())
            .collect();
        // Compiling can take seconds for a large component (a CPython one is
        // ~18 MB); doing it now, off the session's path, means the agent's first
        // `wasm-run` usually finds it ready (or waits for this same compilation).
        tokio::task::spawn_blocking(move || {
            for (path, file) in files {
                let limit = runtime.config().wasm_run.max_skill_component_bytes;
                let started = std::time::Instant::now();
                // By file, so the agent's first `wasm-run` of it skips the read and hash.
                match runtime.command_for_file(&file, limit) {
                    Ok(_) => tracing::debug!(
                        component = %path.display(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "skill component precompiled"
                    ),
                    Err(e) => tracing::info!(
                        component = %path.display(),
                        error = %e,
                        "skill file is not a runnable component"
                    ),
                }
            }
        });
    }
}

/// The session's network use through its egress proxy (`None`: no proxy, so unmeasured, which
/// the record keeps as `null` rather than zero).
fn network_usage(session: &Session) -> Option<wasm_sandbox_usage::NetworkUsage> {
    session
        .network_usage()
        .map(|n| wasm_sandbox_usage::NetworkUsage {
            bytes_up: n.bytes_up,
            bytes_down: n.bytes_down,
            connections: n.connections,
            denials: n.denials,
        })
}

fn open_no_follow(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        // O_NONBLOCK: a FIFO in its place must not block this (async) thread.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// `*.wasm` files of installed skills (`skills/<name>/**`, at most three levels
/// below a skill and 32 files; links are not followed).
fn skill_components(skills: &std::path::Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, depth: usize, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if out.len() >= 32 {
                return;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() && depth < 4 {
                walk(&path, depth + 1, out);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "wasm") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(skills, 0, &mut out);
    out
}
