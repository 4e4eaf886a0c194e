//! The sandbox seam: what the worker needs from a per-session sandbox.
//!
//! The production implementation is the core runtime (`wasm-sandbox-runtime`'s `Runtime` /
//! `Session`, adapted in [`crate::core_adapter`]); tests and demos use [`testing::ScriptedSandbox`].
//! The traits are deliberately tiny: create a sandbox rooted at a host directory, run one tool
//! call at a time, close it (kill every process it started). A provider also says what every
//! session needs and this host lacks ([`SandboxProvider::unavailable`]); `/readyz` serves it as
//! a 503 ([`crate::ops`]), so a host where bash cannot be sandboxed is not reported ready.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;

pub use crate::usage::SessionUsage;
pub use wasm_sandbox_runtime::{CallOutcome, Tool, ToolAnswer, ToolCall, ToolResult};

/// What a new sandbox is made from.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    /// The session served.
    pub session_id: String,
    /// The work item served.
    pub work_id: String,
    /// A fresh, empty host directory owned by this session; removed after teardown.
    pub root: PathBuf,
    /// Memory stores to mount (already downloaded to their host directories), each a
    /// [`Mount::memory_store`](wasm_sandbox_fs::mounts::Mount::memory_store).
    pub memory_stores: Vec<wasm_sandbox_fs::mounts::Mount>,
    /// The session metadata's `sandbox.allowed_hosts` (a narrowing of
    /// `[runtime.networking]`; see `wasm_sandbox_egress::SESSION_ALLOWED_HOSTS_KEY`).
    pub network_allowed_hosts: Option<String>,
}

/// Something every session needs that this host cannot provide, found when the provider was
/// built. While a provider reports any, `/readyz` answers 503 with them ([`crate::ops`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Unavailable {
    /// What is missing (`bash sandbox`).
    pub what: String,
    /// Why, as the probe found it.
    pub reason: String,
    /// What the operator can do about it.
    pub fix: String,
}

/// What to do about an unusable bash sandbox, from the probe's reason. Shared by `/readyz` and
/// `wasm-sandbox doctor`, so both give the same advice.
pub fn sandbox_fix(report: &wasm_sandbox_native::SandboxReport) -> String {
    let reason = report
        .unavailable_reason
        .as_deref()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|v| v.trim().to_owned());
    if report.bwrap.is_none() || reason.contains("bwrap_path") || reason.contains("bubblewrap") {
        return "install bubblewrap (`apt-get install bubblewrap`, `dnf install bubblewrap`) \
                or point [runtime.bash] bwrap_path at it"
            .to_owned();
    }
    if report.init.is_none() || (reason.contains("init") && reason.contains("not found")) {
        return "install wasm-sandbox-init beside the wasm-sandbox binary, or set \
                [runtime.bash] init_path or WASM_SANDBOX_INIT"
            .to_owned();
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return "AppArmor restricts unprivileged user namespaces on this host: allow them for \
                bwrap with an AppArmor profile (`userns,`) or set \
                `sysctl kernel.apparmor_restrict_unprivileged_userns=0`; in a container, run \
                with a seccomp/AppArmor profile that allows user namespaces (deploy/seccomp)"
            .to_owned();
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return "user namespaces are disabled: `sysctl user.max_user_namespaces=15000`".to_owned();
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return "unprivileged user namespaces are disabled: \
                `sysctl kernel.unprivileged_userns_clone=1`"
            .to_owned();
    }
    "bubblewrap could not start a sandbox here; run `wasm-sandbox doctor` for details (user \
     namespaces, AppArmor, seccomp of the container runtime)"
        .to_owned()
}

/// Creates one sandbox per claimed session.
pub trait SandboxProvider: Send + Sync + 'static {
    /// The sandbox type.
    type Session: SandboxSession;

    /// What every session needs and this host lacks (empty: nothing). Read once, when the ops
    /// endpoints start, for `/readyz`. Default: nothing.
    fn unavailable(&self) -> Vec<Unavailable> {
        Vec::new()
    }

    /// The session shape and how this host enforces it (for the start-up log, `/readyz`
    /// detail and the `wasm_sandbox_shape_limit_active` gauge). Default: none.
    fn shape(&self) -> Option<wasm_sandbox_native::ShapeReport> {
        None
    }

    /// Creates a fresh sandbox rooted at `spec.root`.
    fn create(
        &self,
        spec: SandboxSpec,
    ) -> impl Future<Output = anyhow::Result<Self::Session>> + Send;
}

/// One session's sandbox.
pub trait SandboxSession: Send + Sync + 'static {
    /// Runs one call of `tool` (the runner's ownership gate parsed it from `call.name`, so
    /// only the sandbox tools get here) and answers it, tagged with how it ended. The sandbox
    /// owns the call's deadline: a call past it is answered [`ToolAnswer::timed_out`].
    fn call(&self, tool: Tool, call: &ToolCall) -> impl Future<Output = ToolAnswer> + Send;

    /// Kills every process the sandbox started and releases it. Does not delete directories.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Called once the session's skills are in `workspace/skills/`, before the first tool
    /// call: a sandbox may prepare what they ship (the core one precompiles their WASI
    /// components in the background). Default: nothing.
    fn skills_installed(&self, workspace: &std::path::Path) {
        let _ = workspace;
    }

    /// What the session used so far, for its usage record ([`crate::usage`]). Called once the
    /// run has ended and before [`SandboxSession::close`] (which may remove the counters).
    /// Default: nothing measured.
    fn usage(&self) -> crate::usage::SessionUsage {
        crate::usage::SessionUsage::default()
    }
}

pub mod testing {
    //! An in-memory sandbox for tests and demos: answers each sandbox tool with a scripted or
    //! echoed result and can hold a call until released, to test stops mid-call.

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    /// Shared record of what a [`ScriptedSandbox`] provider saw.
    #[derive(Debug, Default)]
    pub struct Record {
        /// Every call, in order, across all sessions.
        pub calls: Vec<(String, ToolCall)>,
        /// Specs of created sandboxes.
        pub created: Vec<SandboxSpec>,
        /// Session ids whose sandbox was closed.
        pub closed: Vec<String>,
        /// Calls that were started but whose future was dropped before finishing.
        pub abandoned: Vec<String>,
    }

    /// A provider of [`ScriptedSession`]s.
    #[derive(Clone)]
    pub struct ScriptedSandbox {
        /// What happened.
        pub record: Arc<Mutex<Record>>,
        /// Results handed out in order (then an echo of the input).
        pub script: Arc<Mutex<VecDeque<ToolResult>>>,
        /// A call whose `input` has `"hold": true` waits for one permit of this semaphore
        /// (none at first; see [`ScriptedSandbox::release`]).
        pub gate: Arc<Semaphore>,
        /// How many held calls have started waiting.
        pub held: Arc<AtomicUsize>,
    }

    impl Default for ScriptedSandbox {
        fn default() -> ScriptedSandbox {
            ScriptedSandbox {
                record: Arc::default(),
                script: Arc::default(),
                gate: Arc::new(Semaphore::new(0)),
                held: Arc::default(),
            }
        }
    }

    impl ScriptedSandbox {
        /// New provider with no script (every call echoes its input).
        pub fn new() -> ScriptedSandbox {
            ScriptedSandbox::default()
        }

        /// Queues a result for the next call.
        pub fn push(&self, result: ToolResult) {
            if let Ok(mut s) = self.script.lock() {
                s.push_back(result);
            }
        }

        /// Lets `n` held calls finish.
        pub fn release(&self, n: usize) {
            self.gate.add_permits(n);
        }

        /// How many held calls have started waiting so far.
        pub fn held_count(&self) -> usize {
            self.held.load(Ordering::SeqCst)
        }

        /// Ids of calls whose future was dropped before finishing.
        pub fn abandoned(&self) -> Vec<String> {
            self.record
                .lock()
                .map(|r| r.abandoned.clone())
                .unwrap_or_default()
        }

        /// Session ids whose sandbox was closed.
        pub fn closed(&self) -> Vec<String> {
            self.record
                .lock()
                .map(|r| r.closed.clone())
                .unwrap_or_default()
        }

        /// Snapshot of the calls seen, as `(session_id, tool name, id)`.
        pub fn calls(&self) -> Vec<(String, String, String)> {
            self.record
                .lock()
                .map(|r| {
                    r.calls
                        .iter()
                        .map(|(s, c)| (s.clone(), c.name.clone(), c.id.clone()))
                        .collect()
                })
                .unwrap_or_default()
        }
    }

    /// A sandbox made by [`ScriptedSandbox`].
    pub struct ScriptedSession {
        session_id: String,
        provider: ScriptedSandbox,
    }

    impl SandboxProvider for ScriptedSandbox {
        type Session = ScriptedSession;

        async fn create(&self, spec: SandboxSpec) -> anyhow::Result<ScriptedSession> {
            let session_id = spec.session_id.clone();
            if let Ok(mut r) = self.record.lock() {
                r.created.push(spec);
            }
            Ok(ScriptedSession {
                session_id,
                provider: self.clone(),
            })
        }
    }

    struct AbandonGuard<'a> {
        record: &'a Mutex<Record>,
        id: String,
        done: bool,
    }

    impl Drop for AbandonGuard<'_> {
        fn drop(&mut self) {
            if !self.done
                && let Ok(mut r) = self.record.lock()
            {
                r.abandoned.push(self.id.clone());
            }
        }
    }

    impl SandboxSession for ScriptedSession {
        async fn call(&self, _tool: Tool, call: &ToolCall) -> ToolAnswer {
            if let Ok(mut r) = self.provider.record.lock() {
                r.calls.push((self.session_id.clone(), call.clone()));
            }
            let mut guard = AbandonGuard {
                record: &self.provider.record,
                id: call.id.clone(),
                done: false,
            };
            if call.input.get("hold").and_then(Value::as_bool) == Some(true) {
                self.provider.held.fetch_add(1, Ordering::SeqCst);
                if let Ok(permit) = self.provider.gate.acquire().await {
                    permit.forget();
                }
            }
            let scripted = self
                .provider
                .script
                .lock()
                .ok()
                .and_then(|mut s| s.pop_front());
            guard.done = true;
            ToolAnswer::ran(scripted.unwrap_or_else(|| {
                ToolResult::text(format!("{}:{}", call.name, call.input), false)
            }))
        }

        async fn close(&self) {
            if let Ok(mut r) = self.provider.record.lock() {
                r.closed.push(self.session_id.clone());
            }
        }
    }
}
