//! `wasm-sandbox doctor`: checks this host for what `serve` needs and says, for each check,
//! `ok`, `warn` or `fail` and what to fix.
//!
//! The authoritative check is `bash_sandbox`: the same probe `serve` runs at start-up
//! (`BashSandbox::new(config).report()`), which starts a throw-away sandbox that applies every
//! layer (user/mount/pid namespaces, Landlock, seccomp, no_new_privs) and reports what took
//! effect. The other checks explain a failure (user namespaces, AppArmor, bubblewrap) or show
//! what a session gets (Landlock ABI, seccomp, cgroups, ONNX Runtime, compile cache).
//!
//! The exit status is non-zero when a check that `serve` needs fails (`required`): the config
//! file, the bash sandbox (unless `allow_unsandboxed_bash_i_understand_the_risk` is set: then it
//! is a warning, as `serve` would run bash unsandboxed), and ONNX Runtime only when the config
//! preloads models (`serve` refuses to start without them). Doctor only reads: it creates
//! nothing outside a temporary probe directory and a probe file in the cache directory, which it
//! removes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use wasm_sandbox_native::{BashSandbox, LimitMechanism, SandboxReport};
use wasm_sandbox_runtime::RuntimeConfig;

/// Flags of `wasm-sandbox doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorCommand {
    /// The `serve --config` file to check the host against (its `[runtime]` table: bash,
    /// engine, nn); default: the built-in defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    /// `serve` cannot work while this fails.
    required: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name,
            status,
            required: false,
            detail: detail.into(),
            fix: None,
        }
    }
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
    fn required(mut self) -> Check {
        self.required = true;
        self
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

impl DoctorCommand {
    /// Runs every check and prints them; the exit status says whether `serve` can work here.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let mut checks = Vec::new();
        let config = match &self.config {
            None => RuntimeConfig::default(),
            Some(path) => match crate::serve::FileConfig::load(path).and_then(|f| {
                f.check()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            }) {
                Ok(c) => {
                    checks.push(Check::new(
                        "config",
                        Status::Ok,
                        format!("{} is valid", path.display()),
                    ));
                    c
                }
                Err(e) => {
                    checks.push(
                        Check::new("config", Status::Fail, format!("{e:#}"))
                            .fix("correct the file (`wasm-sandbox config check --config FILE`); the checks below use the defaults")
                            .required(),
                    );
                    RuntimeConfig::default()
                }
            },
        };
        checks.push(user_check());
        checks.push(userns_check());
        checks.push(apparmor_check());
        // Read-only: doctor never moves processes or writes cgroups.
        let sandbox = BashSandbox::inspect(config.bash.clone(), &config.shape);
        let report = sandbox.report();
        checks.push(bwrap_check(report));
        checks.push(sandbox_check(report));
        checks.push(landlock_check(report, config.bash.require_landlock));
        checks.push(seccomp_check(report));
        checks.push(cgroups_check(report));
        checks.push(onnx_check(&config));
        checks.push(cache_check(&config));

        let failed = checks
            .iter()
            .any(|c| c.required && c.status == Status::Fail);
        match self.format {
            Format::Json => println!("{}", serde_json::json!({"ok": !failed, "checks": checks})),
            Format::Text => {
                for c in &checks {
                    let status = match c.status {
                        Status::Ok => "ok",
                        Status::Warn => "warn",
                        Status::Fail => "FAIL",
                    };
                    println!("{status:<5} {:<16} {}", c.name, c.detail);
                    if let Some(fix) = &c.fix {
                        println!("{:<22} fix: {fix}", "");
                    }
                }
                println!(
                    "{}",
                    if failed {
                        "serve cannot work on this host until the FAIL lines are fixed"
                    } else {
                        "serve can run on this host"
                    }
                );
            }
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

fn user_check() -> Check {
    use std::os::unix::fs::MetadataExt as _;
    // The owner of /proc/self is this process's effective uid.
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    match uid {
        Some(0) => Check::new(
            "user",
            Status::Ok,
            "running as root (uid 0): serve mounts the sessions directory nosuid,nodev",
        ),
        Some(uid) => Check::new(
            "user",
            Status::Ok,
            format!(
                "running as uid {uid}: limits fall back to rlimits where cgroups are not delegated"
            ),
        ),
        None => Check::new("user", Status::Warn, "cannot read /proc/self").fix("mount /proc"),
    }
}

fn userns_check() -> Check {
    let max = read_trim("/proc/sys/user/max_user_namespaces");
    let clone = read_trim("/proc/sys/kernel/unprivileged_userns_clone");
    let detail = format!(
        "user.max_user_namespaces = {}, kernel.unprivileged_userns_clone = {}",
        max.as_deref().unwrap_or("n/a"),
        clone
            .as_deref()
            .unwrap_or("n/a (not a Debian/Ubuntu kernel knob here)")
    );
    if max.as_deref() == Some("0") {
        Check::new("user_namespaces", Status::Fail, detail)
            .fix("`sysctl -w user.max_user_namespaces=15000` (and in /etc/sysctl.d/)")
    } else if clone.as_deref() == Some("0") {
        Check::new("user_namespaces", Status::Fail, detail)
            .fix("`sysctl -w kernel.unprivileged_userns_clone=1` (and in /etc/sysctl.d/)")
    } else {
        Check::new("user_namespaces", Status::Ok, detail)
    }
}

fn apparmor_check() -> Check {
    match read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() {
        None => Check::new(
            "apparmor_userns",
            Status::Ok,
            "kernel.apparmor_restrict_unprivileged_userns not present: no AppArmor user-namespace restriction",
        ),
        Some("0") => Check::new(
            "apparmor_userns",
            Status::Ok,
            "kernel.apparmor_restrict_unprivileged_userns = 0",
        ),
        Some(v) => Check::new(
            "apparmor_userns",
            Status::Warn,
            format!("kernel.apparmor_restrict_unprivileged_userns = {v}: unprivileged user namespaces need an AppArmor profile that allows them"),
        )
        .fix("give bwrap an AppArmor profile that grants `userns,`, or `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (and in /etc/sysctl.d/)"),
    }
}

fn bwrap_check(report: &SandboxReport) -> Check {
    match &report.bwrap {
        Some(path) => Check::new(
            "bubblewrap",
            Status::Ok,
            format!(
                "{} ({})",
                path.display(),
                report.bwrap_version.as_deref().unwrap_or("version unknown")
            ),
        ),
        None => Check::new(
            "bubblewrap",
            Status::Fail,
            report
                .unavailable_reason
                .clone()
                .unwrap_or_else(|| "bwrap not found".into()),
        )
        .fix(
            "install bubblewrap (`apt-get install bubblewrap`, `dnf install bubblewrap`) or set [runtime.bash] bwrap_path",
        )
        .required(),
    }
}

fn sandbox_check(report: &SandboxReport) -> Check {
    if report.available {
        return Check::new(
            "bash_sandbox",
            Status::Ok,
            format!(
                "a probe sandbox started: namespaces {}, landlock {}, seccomp {}, no_new_privs {}",
                report.namespaces.join(","),
                report.landlock.as_deref().unwrap_or("none"),
                report.seccomp,
                report.no_new_privs
            ),
        )
        .required();
    }
    let reason = report
        .unavailable_reason
        .clone()
        .unwrap_or_else(|| "unknown".into());
    let fix = wasm_sandbox_worker::sandbox::sandbox_fix(report);
    if report.unsandboxed_fallback {
        Check::new(
            "bash_sandbox",
            Status::Warn,
            format!("unavailable ({reason}); allow_unsandboxed_bash_i_understand_the_risk is set, so bash would run UNSANDBOXED on the host"),
        )
        .fix(fix)
    } else {
        Check::new(
            "bash_sandbox",
            Status::Fail,
            format!("unavailable: {reason}; every bash call would fail and /readyz answers 503"),
        )
        .fix(fix)
        .required()
    }
}

fn landlock_check(report: &SandboxReport, required: bool) -> Check {
    let abi = report.landlock_abi;
    let enforced = report.landlock.as_deref();
    let detail = format!(
        "kernel ABI {}, enforcement in the sandbox: {}",
        abi.map_or("none".to_owned(), |v| format!("v{v}")),
        enforced.unwrap_or(if report.available {
            "none"
        } else {
            "not measured (no sandbox)"
        })
    );
    match (abi, enforced) {
        (Some(_), Some("full")) => Check::new("landlock", Status::Ok, detail),
        (None, _) => {
            let c = Check::new("landlock", if required { Status::Fail } else { Status::Warn }, detail)
                .fix("boot a kernel ≥ 5.13 with `lsm=...,landlock` (CONFIG_SECURITY_LANDLOCK); without it the sandbox relies on its mounts and seccomp");
            if required { c.required() } else { c }
        }
        _ => Check::new("landlock", Status::Warn, detail)
            .fix("a newer kernel gives a fuller Landlock ABI (v3+: truncate, v4+: network)"),
    }
}

fn seccomp_check(report: &SandboxReport) -> Check {
    let own = read_trim("/proc/self/status").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim().to_owned()))
    });
    let outer = match own.as_deref() {
        Some("0") => "this process is not filtered",
        Some("2") => "this process is already filtered (container runtime profile)",
        Some(_) => "this process runs in seccomp mode",
        None => "kernel without seccomp reporting",
    };
    if report.seccomp {
        Check::new(
            "seccomp",
            Status::Ok,
            format!("filters installed in the sandbox; {outer}"),
        )
    } else if report.available {
        Check::new(
            "seccomp",
            Status::Warn,
            format!("no filters took effect in the sandbox; {outer}"),
        )
        .fix("use a kernel with CONFIG_SECCOMP_FILTER")
    } else {
        Check::new(
            "seccomp",
            Status::Warn,
            format!("not measured (no sandbox); {outer}"),
        )
        .fix("fix bash_sandbox first")
    }
}

/// Whether a directory accepts a new entry (a cgroup: a child cgroup), removed at once.
fn can_mkdir(dir: &Path) -> bool {
    let probe = dir.join(format!("wasm-sandbox-doctor-{}", std::process::id()));
    let ok = std::fs::create_dir(&probe).is_ok();
    if ok {
        let _ = std::fs::remove_dir(&probe);
    }
    ok
}

fn cgroups_check(report: &SandboxReport) -> Check {
    let root = Path::new("/sys/fs/cgroup");
    let mechanism = |m: LimitMechanism| match m {
        LimitMechanism::CgroupV2 => "cgroup v2 (whole sandbox)",
        LimitMechanism::CgroupV1 => "cgroup (whole sandbox)",
        LimitMechanism::Rlimit => "rlimit (per process)",
        LimitMechanism::Filesystem => "capped filesystem (whole session)",
        LimitMechanism::None => "none",
    };
    let limits = format!(
        "memory limit: {}, process limit: {}, cpu limit: {}; session shape ({}): {}",
        mechanism(report.memory_limit),
        mechanism(report.pids_limit),
        mechanism(report.cpu_limit),
        report.shape.enforce,
        report.shape.summary()
    );
    let detail = if root.join("cgroup.controllers").exists() {
        let own = read_trim("/proc/self/cgroup")
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            })
            .unwrap_or_else(|| "/".into());
        let dir = root.join(own.trim_start_matches('/'));
        let controllers =
            read_trim(&dir.join("cgroup.controllers").to_string_lossy()).unwrap_or_default();
        format!(
            "v2 (unified), own cgroup {own} with controllers [{controllers}], {}; {limits}",
            if can_mkdir(&dir) {
                "writable"
            } else {
                "not writable"
            }
        )
    } else if root.join("memory").is_dir() || root.join("pids").is_dir() {
        let writable: Vec<&str> = ["memory", "pids", "cpu"]
            .into_iter()
            .filter(|c| root.join(c).is_dir() && can_mkdir(&root.join(c)))
            .collect();
        format!(
            "v1, writable controllers [{}]; {limits}",
            writable.join(",")
        )
    } else {
        format!("no cgroup filesystem at /sys/fs/cgroup; {limits}")
    };
    let missing = report.shape.missing();
    if !missing.is_empty() {
        let status = match report.shape.enforce {
            wasm_sandbox_native::Enforce::Required => Status::Fail,
            wasm_sandbox_native::Enforce::BestEffort => Status::Warn,
        };
        let check = Check::new(
            "cgroups",
            status,
            format!("{detail}; not enforced: {}", missing.join("; ")),
        );
        let check = if status == Status::Fail {
            check.required()
        } else {
            check
        };
        check.fix(
            "per-session cpu, memory and process caps need writable cgroup controllers: a delegated cgroup v2 subtree (cgroup namespace with a writable cgroupfs, or systemd Delegate=yes) or cgroup v1 cpu/cpuacct/memory/pids hierarchies (root with /sys/fs/cgroup read-write); see deploy/README.md, \"Sandbox shape\"",
        )
    } else {
        Check::new("cgroups", Status::Ok, detail)
    }
}

fn onnx_check(config: &RuntimeConfig) -> Check {
    let preloads = !config.nn.preload.is_empty();
    match wasm_sandbox_hostcalls_nn::NnHost::new(config.nn.clone()) {
        Ok(host) => match host.report().onnx {
            wasm_sandbox_hostcalls_nn::OnnxStatus::Disabled { reason } => {
                let c = Check::new(
                    "onnx_runtime",
                    Status::Warn,
                    format!("wasi-nn ONNX backend off: {reason}"),
                )
                .fix("only skills that run ONNX models through wasi-nn need it: scripts/setup-ort.sh, then [runtime.nn] onnx_library or ORT_DYLIB_PATH");
                if preloads {
                    Check {
                        status: Status::Fail,
                        ..c.required()
                    }
                } else {
                    c
                }
            }
            _ => Check::new("onnx_runtime", Status::Ok, host.report().to_string()),
        },
        Err(e) => Check::new("onnx_runtime", Status::Fail, format!("{e}"))
            .fix("correct [runtime.nn] (library path, preloaded models)")
            .required(),
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn cache_check(config: &RuntimeConfig) -> Check {
    // Unset means the commands' default location (`wasm_sandbox_runtime::default_cache_dir`).
    let resolved = config.engine.cache_dir.clone().or_default_dir();
    let Some(dir) = resolved.dir() else {
        return Check::new(
            "compile_cache",
            Status::Warn,
            "compile cache off ([runtime.engine] cache_dir = \"off\", or no home directory): every start compiles the components (seconds)",
        )
        .fix("set [runtime.engine] cache_dir to a directory only the worker's user can write, or leave it unset for the default");
    };
    if !dir.is_dir() {
        return Check::new(
            "compile_cache",
            Status::Warn,
            format!("{} does not exist yet", dir.display()),
        )
        .fix("create it, writable only by the worker's user");
    }
    let writable = tempfile::Builder::new()
        .prefix(".doctor-")
        .tempfile_in(dir)
        .is_ok();
    let detail = format!(
        "{}: {} MiB of {} MiB cap, {}",
        dir.display(),
        dir_size(dir) >> 20,
        config.engine.cache_max_bytes >> 20,
        if writable { "writable" } else { "NOT writable" }
    );
    if writable {
        Check::new("compile_cache", Status::Ok, detail)
    } else {
        Check::new("compile_cache", Status::Warn, detail)
            .fix("make it writable by the worker's user (compiled code is then cached)")
    }
}
