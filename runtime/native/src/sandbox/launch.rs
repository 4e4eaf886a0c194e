//! The host probe ([`BashSandbox::new`]) and starting one session's shell
//! ([`BashSandbox::launch`]), sandboxed or, with the explicit opt-in, not.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use wasm_sandbox_fs::mounts::{GuestPath, Mount, WORKSPACE};

use super::etc::PreparedEtc;
use super::plan::Plan;
use super::spawn::{add_pre_exec, spawn_on_spawner};
use super::{
    BASH, BashSandbox, BashSessionSpec, LimitMechanism, SandboxError, SandboxReport, Shell,
    SpecialFileGuard, find_bwrap, locate_init,
};
use crate::cgroup::{CgroupSupport, SessionCgroup};
use crate::config::BashConfig;
use crate::shape::ShapeConfig;

impl BashSandbox {
    /// Probes the host once (finds bubblewrap and the init helper, starts a
    /// throw-away sandbox that applies every layer, detects cgroups). Blocking, a
    /// few milliseconds. Never fails: an unusable sandbox is recorded in the report
    /// and makes sessions fail closed.
    pub fn new(config: BashConfig) -> Self {
        Self::with_shape(config, &ShapeConfig::default())
    }

    /// [`new`](Self::new) with the session shape of `[runtime.shape]`: sessions'
    /// cgroups get its vCPU quota, and the smaller of its and `config`'s memory and
    /// pids caps (see [`crate::shape`]).
    pub fn with_shape(config: BashConfig, shape: &ShapeConfig) -> Self {
        Self::build(config, shape, false)
    }

    /// [`with_shape`](Self::with_shape) for inspection only (`doctor`): the cgroups are
    /// found without writing anything ([`CgroupSupport::inspect`]: no process moved, no
    /// trial cgroup), so the report is the plan, not a tried one. Not for serving.
    pub fn inspect(config: BashConfig, shape: &ShapeConfig) -> Self {
        Self::build(config, shape, true)
    }

    fn build(config: BashConfig, shape: &ShapeConfig, read_only: bool) -> Self {
        let mut cgroups = match (config.use_cgroups, read_only) {
            (false, _) => CgroupSupport::default(),
            (true, false) => CgroupSupport::detect(),
            (true, true) => CgroupSupport::inspect(),
        };
        let (limits, shape_report) = crate::shape::plan(&config, shape, &mut cgroups, !read_only);
        // The rlimit fallbacks use the planned caps (the shape's, or bash's own where
        // smaller), the same values the report shows.
        let mut config = config;
        (config.memory_limit_bytes, config.pids_limit) = (limits.memory, limits.pids);
        let bwrap = find_bwrap(&config);
        let init = match &config.init_path {
            Some(p) => p.is_file().then(|| p.clone()),
            None => locate_init(),
        };
        let mut namespaces = vec!["user", "mount", "pid", "ipc", "uts", "cgroup"];
        if !config.network {
            namespaces.push("net");
        }
        let mechanism = |limit: &str| {
            shape_report
                .limits
                .iter()
                .find(|l| l.limit == limit)
                .map_or(LimitMechanism::None, |l| l.mechanism)
        };
        let (memory_limit, pids_limit) = (mechanism("memory"), mechanism("pids"));
        let (cpu_limit, disk_limit) = (mechanism("cpu"), mechanism("disk"));
        let mut report = SandboxReport {
            available: false,
            unavailable_reason: None,
            unsandboxed_fallback: false,
            bwrap: bwrap.clone(),
            bwrap_version: None,
            init: init.clone(),
            namespaces,
            landlock_abi: crate::init::landlock_abi_version(),
            landlock: None,
            seccomp: false,
            no_new_privs: false,
            special_files: SpecialFileGuard::None,
            memory_limit,
            pids_limit,
            cpu_limit,
            disk_limit,
            shape: shape_report,
            tmp_size_bytes: config.tmp_size_bytes,
            max_file_size_bytes: config.max_file_size_bytes,
            network: config.network,
        };
        let etc = match PreparedEtc::create(&config) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot prepare the sandbox /etc copy; binding files one by one");
                None
            }
        };
        let etc_dir = etc.as_ref().map(|e| e.dir.as_path());
        let probe = match (&bwrap, &init) {
            (None, _) => Err(match &config.bwrap_path {
                Some(p) => format!("the configured bwrap_path {} does not exist", p.display()),
                None => "bubblewrap (bwrap) not found; install the `bubblewrap` package or set bash.bwrap_path".to_owned(),
            }),
            (_, None) => Err(match &config.init_path {
                Some(p) => format!("the configured init_path {} does not exist", p.display()),
                None => "the sandbox init helper (wasm-sandbox-init) was not found; set bash.init_path or WASM_SANDBOX_INIT".to_owned(),
            }),
            (Some(b), Some(i)) => {
                report.bwrap_version = Command::new(b)
                    .arg("--version")
                    .env_clear()
                    .output()
                    .ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
                probe_sandbox(&config, etc_dir, b, i)
            }
        };
        match probe {
            Ok(line) => {
                report.available = true;
                for field in line.split_whitespace() {
                    match field.split_once('=') {
                        Some(("landlock", v)) => report.landlock = Some(v.to_owned()),
                        Some(("seccomp", v)) => report.seccomp = v == "1",
                        Some(("no_new_privs", v)) => report.no_new_privs = v == "1",
                        Some(("special_files", v)) => {
                            report.special_files = match v {
                                "landlock" => SpecialFileGuard::Landlock,
                                "seccomp" => SpecialFileGuard::Seccomp,
                                _ => SpecialFileGuard::None,
                            };
                        }
                        _ => {}
                    }
                }
                tracing::info!(report = ?report, "bash sandbox ready");
            }
            Err(reason) => {
                report.unavailable_reason = Some(reason.clone());
                if config.allow_unsandboxed_bash_i_understand_the_risk {
                    report.unsandboxed_fallback = true;
                    tracing::error!(%reason, "bash sandbox UNAVAILABLE; allow_unsandboxed_bash_i_understand_the_risk is set, so bash will run UNSANDBOXED on the host");
                } else {
                    tracing::error!(%reason, "bash sandbox unavailable; bash calls will fail closed");
                }
            }
        }
        Self {
            config,
            report,
            cgroups,
            limits,
            etc,
        }
    }

    /// The probe's findings.
    pub fn report(&self) -> &SandboxReport {
        &self.report
    }

    /// The configuration.
    pub fn config(&self) -> &BashConfig {
        &self.config
    }

    /// Starts one session's sandboxed shell (or the opted-in unsandboxed shell).
    pub(crate) async fn launch(&self, spec: &BashSessionSpec) -> Result<Shell, SandboxError> {
        if !self.report.available {
            let reason = self
                .report
                .unavailable_reason
                .clone()
                .unwrap_or_else(|| "unknown".to_owned());
            if self.report.unsandboxed_fallback {
                return launch_unsandboxed(&self.config, spec).await;
            }
            tracing::error!(%reason, session = %spec.session_id, "refusing to run bash without its sandbox");
            return Err(SandboxError::Unavailable(reason));
        }
        let (Some(bwrap), Some(init)) = (&self.report.bwrap, &self.report.init) else {
            return Err(SandboxError::Unavailable("probe incomplete".to_owned()));
        };
        // bubblewrap resolves relative sources against its own cwd and follows
        // symlinks at mount time; resolve them here, once, to absolute directories.
        let dir = |what: &str, p: &Path| -> Result<PathBuf, SandboxError> {
            std::fs::canonicalize(p)
                .ok()
                .filter(|c| c.is_dir())
                .ok_or_else(|| {
                    SandboxError::Config(format!("{what} directory {} does not exist", p.display()))
                })
        };
        let resolve = |m: &Mount| -> Result<Mount, SandboxError> {
            let what = match m.guest {
                GuestPath::Workspace => "workspace",
                GuestPath::Outputs => "outputs",
                GuestPath::Memory(_) => "memory store",
            };
            Ok(Mount {
                host: dir(what, &m.host)?,
                ..m.clone()
            })
        };
        // Workspace and outputs first, then the stores (the order of the checks, and so of
        // the first error reported, and of the bind mounts).
        let mut mounts = spec
            .mounts
            .all()
            .iter()
            .filter(|m| !matches!(m.guest, GuestPath::Memory(_)))
            .map(resolve)
            .collect::<Result<Vec<_>, _>>()?;
        if spec.egress_dir.is_some() && self.config.network {
            return Err(SandboxError::Config(
                "networking (egress proxy) and bash.network = true are exclusive".into(),
            ));
        }
        let egress_dir = match &spec.egress_dir {
            Some(d) => Some(dir("egress socket", d)?),
            None => None,
        };
        for m in spec.mounts.memory_stores() {
            mounts.push(resolve(m)?);
        }
        let cgroup_name = format!(
            "{}{}-{}-{}",
            crate::cgroup::SESSION_PREFIX,
            std::process::id(),
            sanitize(&spec.session_id),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut cgroup = SessionCgroup::create(&self.cgroups, &cgroup_name, &self.limits);
        // What the cgroup got against what the report promised (see `check_applied`).
        if let Err(e) = crate::cgroup::check_applied(
            &cgroup,
            &self.cgroups,
            &self.limits,
            self.report.shape.enforce,
        ) {
            let _ = tokio::task::spawn_blocking(move || cgroup.remove()).await;
            return Err(SandboxError::Start(e));
        }
        let (ready_r, ready_w) = std::io::pipe().map_err(start_err)?;
        let plan = Plan {
            config: &self.config,
            etc_dir: self.etc.as_ref().map(|e| e.dir.as_path()),
            init,
            ready_fd: ready_w.as_raw_fd(),
            mounts: &mounts,
            wasm_run_socket: spec.wasm_run_socket.as_deref(),
            egress_dir: egress_dir.as_deref(),
            memory_cgroup: cgroup.memory_limited(),
            pids_cgroup: cgroup.pids_limited(),
            probe: false,
        };
        let mut env = crate::env::build_env(&self.config, spec.env.as_ref());
        if spec.wasm_run_socket.is_some() && spec.env.is_none() {
            crate::env::append_path(&mut env, crate::wasm_run::SHIM_GUEST_DIR);
        }
        if egress_dir.is_some() {
            env.extend(crate::net::proxy_env());
        }
        let (out_r, out_w) = std::io::pipe().map_err(start_err)?;
        let mut cmd = Command::new(bwrap);
        cmd.args(plan.args())
            .env_clear()
            .envs(&env)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(out_w.try_clone().map_err(start_err)?)
            .stderr(out_w);
        let procs: Vec<CString> = cgroup
            .procs_files()
            .iter()
            .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
            .collect();
        add_pre_exec(&mut cmd, procs, ready_w.as_raw_fd());
        let mut shell_cgroup = Some(cgroup);
        let child = match spawn_on_spawner(cmd, vec![OwnedFd::from(ready_w)]).await {
            Ok(c) => c,
            Err(e) => {
                if let Some(mut cg) = shell_cgroup.take() {
                    let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
                }
                return Err(start_err(e));
            }
        };
        let mut shell = Shell::new(child, out_r, shell_cgroup, false)?;
        let timeout = Duration::from_millis(self.config.startup_timeout_ms);
        match read_ready(ready_r, timeout).await {
            Ok(line) if line.starts_with("ok") => {
                shell.find_reaper();
                Ok(shell)
            }
            other => {
                let detail = match other {
                    Ok(line) => line.strip_prefix("err ").unwrap_or(&line).to_owned(),
                    Err(e) => e,
                };
                let output = shell.drain_startup_output().await;
                shell.terminate().await;
                let msg = if output.is_empty() {
                    detail
                } else {
                    format!("{detail}: {output}")
                };
                tracing::error!(session = %spec.session_id, error = %msg, "bash sandbox failed to start");
                Err(SandboxError::Start(msg))
            }
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

pub(super) fn start_err(e: std::io::Error) -> SandboxError {
    SandboxError::Start(e.to_string())
}

/// Reads the init's one-line status (`ok …` / `err …`).
async fn read_ready(ready: std::io::PipeReader, timeout: Duration) -> Result<String, String> {
    let mut rx = pipe::Receiver::from_owned_fd(OwnedFd::from(ready)).map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let read = async {
        let mut buf = [0u8; 512];
        loop {
            let n = rx.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the sandbox exited during setup".to_owned());
            }
            line.extend_from_slice(&buf[..n]);
            if let Some(pos) = line.iter().position(|b| *b == b'\n') {
                return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| format!("the sandbox did not come up within {timeout:?}"))?
}

/// Runs the probe sandbox (blocking).
fn probe_sandbox(
    config: &BashConfig,
    etc_dir: Option<&Path>,
    bwrap: &Path,
    init: &Path,
) -> Result<String, String> {
    let plan = Plan {
        config,
        etc_dir,
        init,
        ready_fd: -1,
        mounts: &[],
        wasm_run_socket: None,
        egress_dir: None,
        memory_cgroup: false,
        pids_cgroup: false,
        probe: true,
    };
    let mut args = plan.args();
    // No ready descriptor in probe mode: the report comes on stdout.
    if let Some(i) = args.iter().position(|a| a == "--ready-fd") {
        args.drain(i..i + 2);
    }
    let mut child = Command::new(bwrap)
        .args(args)
        .env_clear()
        .env("PATH", crate::config::DEFAULT_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    let deadline = std::time::Instant::now() + Duration::from_millis(config.startup_timeout_ms);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the probe sandbox did not finish in time".to_owned());
            }
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    let line = out
        .lines()
        .find(|l| l.starts_with("ok "))
        .map(str::to_owned);
    match line {
        Some(l) if status.success() => Ok(l),
        _ => Err(format!(
            "the probe sandbox failed ({status}): {}",
            err.trim().lines().last().unwrap_or("no message")
        )),
    }
}

/// Starts bash directly on the host: only with the explicit opt-in.
async fn launch_unsandboxed(
    config: &BashConfig,
    spec: &BashSessionSpec,
) -> Result<Shell, SandboxError> {
    tracing::warn!(session = %spec.session_id, "starting bash UNSANDBOXED on the host (allow_unsandboxed_bash_i_understand_the_risk)");
    let mut env = crate::env::build_env(config, spec.env.as_ref());
    if spec.env.is_none() && env.get("HOME").map(String::as_str) == Some(WORKSPACE) {
        // There is no /workspace on the host: point HOME at the real directory.
        env.insert(
            "HOME".to_owned(),
            spec.mounts.workspace().to_string_lossy().into_owned(),
        );
    }
    let (out_r, out_w) = std::io::pipe().map_err(start_err)?;
    let mut cmd = Command::new(BASH[0]);
    cmd.args(&BASH[1..])
        .env_clear()
        .envs(&env)
        .current_dir(spec.mounts.workspace())
        .stdin(Stdio::piped())
        .stdout(out_w.try_clone().map_err(start_err)?)
        .stderr(out_w)
        .process_group(0);
    let child = spawn_on_spawner(cmd, Vec::new()).await.map_err(start_err)?;
    Shell::new(child, out_r, None, true)
}
