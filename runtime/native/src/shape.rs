//! The session's *shape*: the CPU, memory, process and disk budget one session gets
//! (`[runtime.shape]`), and how this host enforces each part of it.
//!
//! The shape is the **session total**. The older `[runtime.bash]` keys stay what they
//! were: `memory_limit` and `pids_limit` cap bash's sandbox, so the cap its cgroup gets
//! is the *smaller* of the two (defaults: shape 4 GiB / 512, bash memory unset / 512, so
//! bash's sandbox gets the shape's 4 GiB, the value reported and billed, unless an
//! operator sets `bash.memory_limit` lower);
//! `max_file_size` (`RLIMIT_FSIZE`, per file) and `tmp_size` (the `/tmp` tmpfs) remain
//! per-file and per-mount caps inside the shape.
//!
//! What enforces each limit (measured once, by [`BashSandbox::new`](crate::BashSandbox::new),
//! and reported in [`SandboxReport::shape`](crate::SandboxReport::shape)):
//!
//! | limit  | preferred            | fallback             | last resort                   |
//! |--------|----------------------|----------------------|-------------------------------|
//! | cpu    | cgroup v2 `cpu.max`  | v1 CFS quota         | none (no rlimit rate-limits)  |
//! | memory | v2 `memory.max`      | v1 `limit_in_bytes`  | `RLIMIT_AS` per process       |
//! | pids   | v2 `pids.max`        | v1 `pids.max`        | `RLIMIT_NPROC` (not for root) |
//!
//! With `enforce = "required"` a host that cannot enforce a configured limit with a
//! cgroup is refused ([`ShapeReport::missing`] names what is missing and
//! `Runtime::new` fails, so `serve` does not start); with `"best-effort"` (the default)
//! the runtime serves and reports what is active.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cgroup::{CgroupLimits, CgroupSupport, Controller, CpuQuota};
pub use crate::limits::Enforce;
use crate::limits::LimitMechanism;

/// The `[runtime.shape]` table: one session's budget. Every key has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShapeConfig {
    /// CPUs the session's processes may use together, fractional allowed (a CFS
    /// bandwidth quota: `0.5` = 50 ms of CPU per 100 ms). Default: 4.
    pub vcpus: f64,
    /// Memory of the whole session sandbox. Default: 4 GiB (`memory = "4GiB"`);
    /// `"unlimited"` = no shape cap. bash's sandbox gets the smaller of this and
    /// `[runtime.bash] memory_limit`.
    #[serde(rename = "memory", with = "wasm_sandbox_units::size_or_unlimited")]
    pub memory_bytes: Option<u64>,
    /// Processes and threads of the session together. Default: 512; `"unlimited"`
    /// = no shape cap. bash's sandbox gets the smaller of this and
    /// `[runtime.bash] pids_limit`.
    #[serde(with = "wasm_sandbox_units::count_or_unlimited")]
    pub pids: Option<u64>,
    /// Bytes the session may write in total in `/workspace`, `/mnt/session/outputs` and
    /// its writable memory stores together (a per-session capped filesystem, see [`crate::disk`]; `/tmp` and
    /// `/dev/shm` are tmpfs capped by `[runtime.bash] tmp_size`/`shm_size` and charged
    /// to the memory cap). Default: `"unlimited"` (no total; the per-file
    /// `max_file_size` still applies). File key `disk = "10GiB"`.
    #[serde(rename = "disk", with = "wasm_sandbox_units::size_or_unlimited")]
    pub disk_bytes: Option<u64>,
    /// Files and directories the session may create on its capped filesystem (only
    /// with `disk`). Default: `"unlimited"` (mkfs's default: one per 16 KiB).
    #[serde(with = "wasm_sandbox_units::count_or_unlimited")]
    pub disk_inodes: Option<u64>,
    /// Longest run of one work item of a session, from its claim (e.g. `"2h"`). Default:
    /// unset (no limit). Enforced by the worker (`WorkerConfig::max_session`): the run is
    /// cancelled, the workspace saved and the item stopped.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "wasm_sandbox_units::option_duration"
    )]
    pub max_session: Option<Duration>,
    /// `"best-effort"` (default) or `"required"` (the `deploy/` configuration).
    pub enforce: Enforce,
}

impl Default for ShapeConfig {
    fn default() -> Self {
        Self {
            vcpus: 4.0,
            memory_bytes: Some(4 << 30),
            pids: Some(512),
            disk_bytes: None,
            disk_inodes: None,
            max_session: None,
            enforce: Enforce::BestEffort,
        }
    }
}

impl ShapeConfig {
    /// A shape that limits nothing (for embedders and tests that want none).
    pub fn unlimited() -> Self {
        Self {
            vcpus: f64::INFINITY,
            memory_bytes: None,
            pids: None,
            ..Self::default()
        }
    }

    /// Checks the values.
    ///
    /// # Errors
    /// `vcpus` not a number of at least 0.01 (the kernel's smallest CFS quota is 1 ms
    /// per 100 ms period); `disk_inodes` without `disk` (it sizes the capped
    /// filesystem, which only `disk` creates).
    pub fn validate(&self) -> Result<(), String> {
        if self.vcpus.is_nan() || self.vcpus < 0.01 {
            return Err(format!(
                "[runtime.shape] vcpus must be a number of CPUs of at least 0.01 (e.g. 4 or \
                 0.5), not {}",
                self.vcpus
            ));
        }
        if self.disk_inodes.is_some() && self.disk_bytes.is_none() {
            return Err(
                "[runtime.shape] disk_inodes needs disk: the inode cap belongs to the \
                 session's capped filesystem, which only `disk` creates"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// How one limit of the shape is enforced on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitStatus {
    /// `cpu`, `memory`, `pids`, `disk`.
    pub limit: &'static str,
    /// The configured value, for people (`"0.5 vCPU"`, `"4GiB"`); `None` = not
    /// configured.
    pub value: Option<String>,
    /// What enforces it.
    pub mechanism: LimitMechanism,
}

impl LimitStatus {
    /// True when the limit is configured and enforced for the whole session.
    pub fn active(&self) -> bool {
        self.value.is_some()
            && matches!(
                self.mechanism,
                LimitMechanism::CgroupV1 | LimitMechanism::CgroupV2 | LimitMechanism::Filesystem
            )
    }
}

/// The shape and its enforcement, measured once per runtime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShapeReport {
    /// The configured enforcement.
    pub enforce: Enforce,
    /// One entry per limit: `cpu`, `memory`, `pids`, `disk`.
    pub limits: Vec<LimitStatus>,
    /// Session CPU time is measured (cgroup accounting).
    pub cpu_accounting: bool,
    /// Why cgroup v2 is not used, when it is not.
    pub cgroup_v2_problem: Option<String>,
    /// Controllers found but given up by the start-up trial (`"cpu: …"`), when any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cgroup_problems: Vec<String>,
    /// Why the disk cap cannot be enforced, when `disk` is set and it cannot.
    pub disk_problem: Option<String>,
}

impl ShapeReport {
    /// The configured limits this host does not enforce with a cgroup, each with what
    /// is missing (empty: the whole shape holds).
    pub fn missing(&self) -> Vec<String> {
        self.limits
            .iter()
            .filter(|l| l.value.is_some() && !l.active())
            .map(|l| {
                if let Some(p) = self
                    .cgroup_problems
                    .iter()
                    .find(|p| p.starts_with(&format!("{}: ", l.limit)))
                {
                    return format!(
                        "{} limit {} is not enforced (mechanism: {}); the session cgroup \
                         trial failed: {}",
                        l.limit,
                        l.value.as_deref().unwrap_or("-"),
                        l.mechanism.as_str(),
                        &p[l.limit.len() + 2..]
                    );
                }
                let need = match l.limit {
                    "cpu" => "a writable cgroup `cpu` controller (v2 delegated subtree or v1 hierarchy)",
                    "memory" => "a writable cgroup `memory` controller (v2 delegated subtree or v1 hierarchy)",
                    "pids" => "a writable cgroup `pids` controller (v2 delegated subtree or v1 hierarchy)",
                    _ => self
                        .disk_problem
                        .as_deref()
                        .unwrap_or("a per-session capped filesystem"),
                };
                format!(
                    "{} limit {} is not enforced (mechanism: {}); needs {need}",
                    l.limit,
                    l.value.as_deref().unwrap_or("-"),
                    l.mechanism.as_str()
                )
            })
            .collect()
    }

    /// Logs which limits are active and, under `enforce = "required"`, refuses a host
    /// that misses any.
    ///
    /// # Errors
    /// `enforce = "required"` and [`missing`](Self::missing) is not empty: the message
    /// names each missing limit and what it needs.
    pub fn check(&self) -> Result<(), String> {
        let missing = self.missing();
        match (self.enforce, missing.is_empty()) {
            (Enforce::Required, false) => Err(format!(
                "[runtime.shape] enforce = \"required\", but this host cannot enforce the \
                 session shape: {}. What a pod or host needs for each limit: deploy/README.md, \
                 section \"Sandbox shape\" (a writable, delegated cgroup for the worker's \
                 user); or set enforce = \"best-effort\"",
                missing.join("; ")
            )),
            (Enforce::BestEffort, false) => {
                tracing::warn!(limits = %self.summary(), missing = ?missing,
                    "session shape enforced only in part (enforce = \"best-effort\")");
                Ok(())
            }
            (_, true) => {
                tracing::info!(limits = %self.summary(), "session shape enforced");
                Ok(())
            }
        }
    }

    /// A one-line summary for logs: `cpu=cgroup-v1 memory=cgroup-v1 …`.
    pub fn summary(&self) -> String {
        self.limits
            .iter()
            .map(|l| match &l.value {
                Some(v) => format!("{}={} ({v})", l.limit, l.mechanism.as_str()),
                None => format!("{}=unset", l.limit),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The smaller of two optional caps (`None` = no cap).
fn min_cap(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The cgroup limits each session gets, and the report of how each limit of the shape
/// is enforced here.
///
/// With `trial`, the limits are first tried on a real session cgroup
/// ([`CgroupSupport::trial`]): the CPU quota is clamped to what the ancestors allow
/// (the report shows the effective value) and a controller that cannot take its limit
/// is given up, so the report is what sessions get, not what was hoped for. Without
/// (`doctor`: read-only) the report is the plan.
pub(crate) fn plan(
    config: &crate::BashConfig,
    shape: &ShapeConfig,
    cgroups: &mut CgroupSupport,
    trial: bool,
) -> (CgroupLimits, ShapeReport) {
    let mut limits = CgroupLimits {
        cpu: CpuQuota::from_vcpus(shape.vcpus),
        memory: min_cap(shape.memory_bytes, config.memory_limit_bytes),
        pids: min_cap(shape.pids, config.pids_limit),
    };
    let clamped_from = if trial {
        cgroups.trial(&mut limits)
    } else {
        None
    };
    let cgroups = &*cgroups;
    let vcpus = |q: CpuQuota| q.quota_us as f64 / q.period_us as f64;
    let cpu_value = limits.cpu.map(|q| match clamped_from {
        Some(c) => format!(
            "{} vCPU, clamped from {} by the worker's cgroup",
            vcpus(q),
            vcpus(c)
        ),
        None => format!("{} vCPU", vcpus(q)),
    });
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let cg = |c| cgroups.mechanism(c);
    let cpu = match limits.cpu {
        None => LimitMechanism::None,
        // No rlimit limits a CPU *rate* (RLIMIT_CPU kills after N CPU-seconds).
        Some(_) => cg(Controller::Cpu),
    };
    let memory = match (limits.memory, cg(Controller::Memory)) {
        (None, _) => LimitMechanism::None,
        (Some(_), LimitMechanism::None) => LimitMechanism::Rlimit,
        (Some(_), m) => m,
    };
    let pids = match (limits.pids, cg(Controller::Pids)) {
        (None, _) => LimitMechanism::None,
        // The kernel exempts host root from RLIMIT_NPROC.
        (Some(_), LimitMechanism::None) if is_root => LimitMechanism::None,
        (Some(_), LimitMechanism::None) => LimitMechanism::Rlimit,
        (Some(_), m) => m,
    };
    let size = |v: Option<u64>| v.map(wasm_sandbox_units::format_size);
    // The disk cap: probed once with a real (4 MiB) capped filesystem.
    let (disk, disk_problem) = match shape.disk_bytes {
        None => (LimitMechanism::None, None),
        Some(_) => match crate::disk::DiskCap::probe(&std::env::temp_dir()) {
            Ok(()) => (LimitMechanism::Filesystem, None),
            Err(e) => (LimitMechanism::None, Some(e)),
        },
    };
    let report = ShapeReport {
        enforce: shape.enforce,
        limits: vec![
            LimitStatus {
                limit: "cpu",
                value: cpu_value,
                mechanism: cpu,
            },
            LimitStatus {
                limit: "memory",
                value: size(limits.memory),
                mechanism: memory,
            },
            LimitStatus {
                limit: "pids",
                value: limits.pids.map(|p| p.to_string()),
                mechanism: pids,
            },
            LimitStatus {
                limit: "disk",
                value: size(shape.disk_bytes),
                mechanism: disk,
            },
        ],
        cpu_accounting: cgroups.cpu_accounting(),
        cgroup_v2_problem: cgroups.v2_problem.clone(),
        cgroup_problems: cgroups
            .trial_problems
            .iter()
            .map(|(l, p)| format!("{l}: {p}"))
            .collect(),
        disk_problem,
    };
    (limits, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_units_and_unknown_keys() {
        let c: ShapeConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, ShapeConfig::default());
        assert_eq!(c.vcpus, 4.0);
        assert_eq!(c.memory_bytes, Some(4 << 30));
        assert_eq!(c.enforce, Enforce::BestEffort);
        let c: ShapeConfig = serde_json::from_str(
            r#"{"vcpus": 0.5, "memory": "512MiB", "pids": 64, "disk": "1GiB",
                "disk_inodes": 1000, "max_session": "2h", "enforce": "required"}"#,
        )
        .unwrap();
        assert_eq!(c.vcpus, 0.5);
        assert_eq!(c.memory_bytes, Some(512 << 20));
        assert_eq!(c.pids, Some(64));
        assert_eq!(c.disk_bytes, Some(1 << 30));
        assert_eq!(c.disk_inodes, Some(1000));
        assert_eq!(c.max_session, Some(Duration::from_secs(7200)));
        assert_eq!(c.enforce, Enforce::Required);
        assert!(serde_json::from_str::<ShapeConfig>(r#"{"cpus": 1}"#).is_err());
        assert!(serde_json::from_str::<ShapeConfig>(r#"{"memory": 1}"#).is_err());
        assert!(serde_json::from_str::<ShapeConfig>(r#"{"enforce": "maybe"}"#).is_err());
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["memory"], "512MiB");
        assert_eq!(v["enforce"], "required");
        assert!(
            ShapeConfig {
                vcpus: 0.0,
                ..c.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            ShapeConfig {
                vcpus: 0.001,
                ..c.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            ShapeConfig {
                vcpus: 0.01,
                ..c.clone()
            }
            .validate()
            .is_ok()
        );
        let inodes_alone = ShapeConfig {
            disk_bytes: None,
            ..c.clone()
        };
        assert!(
            inodes_alone
                .validate()
                .is_err_and(|e| e.contains("disk_inodes needs disk"))
        );
        assert_eq!(Enforce::BestEffort.to_string(), "best-effort");
    }

    /// Review finding: bash's 2 GiB default capped the sandbox below the shape's 4 GiB
    /// that was reported and billed. With defaults the planned cgroup cap is the
    /// shape's; an explicit, smaller `bash.memory_limit` still wins.
    #[test]
    fn default_memory_cap_is_the_shape() {
        let mut none = CgroupSupport::default();
        let (limits, report) = plan(
            &crate::BashConfig::default(),
            &ShapeConfig::default(),
            &mut none,
            true,
        );
        assert_eq!(limits.memory, Some(4 << 30));
        assert_eq!(report.limits[1].value.as_deref(), Some("4GiB"));
        let bash = crate::BashConfig {
            memory_limit_bytes: Some(1 << 30),
            ..crate::BashConfig::default()
        };
        let (limits, report) = plan(&bash, &ShapeConfig::default(), &mut none, true);
        assert_eq!(limits.memory, Some(1 << 30));
        assert_eq!(report.limits[1].value.as_deref(), Some("1GiB"));
    }

    #[test]
    fn missing_names_each_unenforced_limit() {
        let report = ShapeReport {
            enforce: Enforce::Required,
            limits: vec![
                LimitStatus {
                    limit: "cpu",
                    value: Some("4 vCPU".into()),
                    mechanism: LimitMechanism::None,
                },
                LimitStatus {
                    limit: "memory",
                    value: Some("4GiB".into()),
                    mechanism: LimitMechanism::CgroupV1,
                },
                LimitStatus {
                    limit: "pids",
                    value: Some("512".into()),
                    mechanism: LimitMechanism::Rlimit,
                },
                LimitStatus {
                    limit: "disk",
                    value: None,
                    mechanism: LimitMechanism::None,
                },
            ],
            cpu_accounting: false,
            cgroup_v2_problem: None,
            cgroup_problems: Vec::new(),
            disk_problem: None,
        };
        let missing = report.missing();
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(
            missing[0].starts_with("cpu limit 4 vCPU is not enforced"),
            "{missing:?}"
        );
        assert!(
            missing[1].contains("pids") && missing[1].contains("rlimit"),
            "{missing:?}"
        );
    }
}
