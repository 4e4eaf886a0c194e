//! Per-session cgroups: CPU bandwidth, memory and pids caps, and CPU/memory accounting.
//!
//! Namespaces and Landlock bound what bash can *reach*, not how much it can
//! *consume*: without a cap one session's `yes` in 50 processes takes every core of
//! the node, and a `dd bs=8G` or a fork bomb starves the worker and every other
//! session. Cgroups cap the whole sandbox (every descendant, and tmpfs pages written
//! by it), which per-process rlimits cannot.
//!
//! # Order of preference
//!
//! 1. **cgroup v2** ([`v2`]): a delegated subtree beneath the worker's own cgroup;
//!    `cpu.max`, `memory.max` + `memory.swap.max = 0`, `pids.max`; accounting from
//!    `cpu.stat usage_usec` and `memory.peak`.
//! 2. **cgroup v1** ([`v1`]), per controller not available in v2: `cpu.cfs_quota_us` /
//!    `cpu.cfs_period_us`, `cpuacct.usage`, `memory.limit_in_bytes` (+ `memsw` where
//!    present), `memory.max_usage_in_bytes`, `pids.max`.
//! 3. **rlimits**, applied by the sandbox init where no cgroup holds a limit:
//!    `RLIMIT_AS` per process for memory (a process can still fork many times the cap)
//!    and `RLIMIT_NPROC` for processes (per user namespace; the kernel exempts host
//!    root). There is **no rlimit for a CPU rate**: `RLIMIT_CPU` kills a process after
//!    N seconds of CPU time, which neither shares the node fairly nor bounds a
//!    session's many processes, so without a cgroup the vCPU limit is simply not
//!    enforced (reported as `none`).
//!
//! Each session's cgroups are created beneath the worker's own (so the worker's own
//! limits still apply on top); bubblewrap is moved into them between `fork` and
//! `exec` (so every process of the sandbox, including a pooled one, is born inside),
//! and they are removed at teardown once empty, after a last reading of the counters
//! ([`SessionCgroup::remove_with`] hands it to the session's account before any
//! directory goes, so the reading survives a cancelled teardown).
//!
//! The wasm file tools and `wasm-run` components run on worker threads, not in these
//! cgroups: their CPU is bounded by wasmtime's epoch deadline and fuel and their
//! memory by the instance limits; the usage record measures their thread CPU time.

mod trial;
pub mod v1;
pub mod v2;

pub use trial::{check_applied, session_fallbacks};

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::limits::LimitMechanism;

/// Session cgroups are named `<prefix><worker pid>-<session>-<random>`.
pub const SESSION_PREFIX: &str = "wasm-sandbox-";

/// The CFS period used for the vCPU quota (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// A CPU bandwidth limit: `quota_us` of CPU time per `period_us` of wall time, all
/// the cgroup's threads together (`vcpus = quota / period`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuQuota {
    /// CPU microseconds allowed per period.
    pub quota_us: u64,
    /// The period, in microseconds.
    pub period_us: u64,
}

impl CpuQuota {
    /// The quota of `vcpus` CPUs (fractional allowed) over [`CPU_PERIOD_US`]; `None`
    /// for a non-finite or non-positive value. The kernel's minimum quota is 1 ms.
    pub fn from_vcpus(vcpus: f64) -> Option<Self> {
        if !vcpus.is_finite() || vcpus <= 0.0 {
            return None;
        }
        let quota = (vcpus * CPU_PERIOD_US as f64).round();
        let quota_us = if quota >= u64::MAX as f64 {
            u64::MAX
        } else {
            quota as u64
        };
        Some(Self {
            quota_us: quota_us.max(1000),
            period_us: CPU_PERIOD_US,
        })
    }
}

/// The limits of one session's cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// CPU bandwidth.
    pub cpu: Option<CpuQuota>,
    /// Memory cap in bytes (swap included where the kernel accounts it).
    pub memory: Option<u64>,
    /// Cap on processes and threads.
    pub pids: Option<u64>,
}

/// What a session's sandbox consumed, as measured by its cgroups (and disk cap).
/// `None` = not measured on this host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResourceUsage {
    /// CPU time of every process the session's bash sandbox ran.
    pub cpu: Option<Duration>,
    /// Peak memory charge of the sandbox (RSS, page cache, tmpfs).
    pub memory_peak_bytes: Option<u64>,
    /// Peak bytes in use on the session's capped filesystem.
    pub disk_peak_bytes: Option<u64>,
}

impl ResourceUsage {
    /// Adds a later period of the same session (a restarted shell): CPU times add up,
    /// peaks take the maximum.
    pub fn then(self, later: ResourceUsage) -> ResourceUsage {
        fn add(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            }
        }
        fn max(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        }
        ResourceUsage {
            cpu: add(self.cpu, later.cpu),
            memory_peak_bytes: max(self.memory_peak_bytes, later.memory_peak_bytes),
            disk_peak_bytes: max(self.disk_peak_bytes, later.disk_peak_bytes),
        }
    }
}

pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The cgroup controllers this process may use for sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupSupport {
    /// The delegated v2 subtree, when v2 offers at least one controller.
    pub v2: Option<v2::V2Tree>,
    /// Why v2 is not used (for the report), when it is not.
    pub v2_problem: Option<String>,
    /// The v1 `cpu` hierarchy's directory of this process, if writable.
    pub cpu_parent: Option<PathBuf>,
    /// The v1 `cpuacct` hierarchy's directory of this process, if writable.
    pub cpuacct_parent: Option<PathBuf>,
    /// The v1 `memory` hierarchy's directory of this process, if writable.
    pub memory_parent: Option<PathBuf>,
    /// The v1 `pids` hierarchy's directory of this process, if writable.
    pub pids_parent: Option<PathBuf>,
    /// Controllers the [trial](Self::trial) had to give up, each with why
    /// (`("cpu", "…")`).
    pub trial_problems: Vec<(&'static str, String)>,
}

/// The controllers a limit may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    /// CPU bandwidth (`cpu`).
    Cpu,
    /// Memory (`memory`).
    Memory,
    /// Processes (`pids`).
    Pids,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

impl CgroupSupport {
    /// Finds the usable controllers (v2 first, then v1 for the rest), and removes empty
    /// session cgroups left behind by worker processes that are gone.
    pub fn detect() -> Self {
        let (v2, v2_problem) = match v2::own_dir() {
            Some(own) if !v2::delegated(&own) => (
                None,
                Some(format!(
                    "{} is not delegated to this process (not the root of a cgroup \
                     namespace, no systemd Delegate=yes)",
                    own.display()
                )),
            ),
            Some(own) => match v2::prepare(&own) {
                Ok(tree) => (Some(tree), None),
                Err(e) => (None, Some(e)),
            },
            None => (None, Some("no cgroup v2 hierarchy".to_owned())),
        };
        Self::with_v2(v2, v2_problem)
    }

    /// What [`detect`](Self::detect) would find, without writing anything: no process
    /// moved, no controller enabled, no cgroup created or removed (`doctor` must not
    /// reorganise a host it only inspects). v1 directories count when this process may
    /// write them (`access(W_OK)`), v2 when delegated and offering the controllers.
    pub fn inspect() -> Self {
        let (v2, v2_problem) = match v2::own_dir() {
            Some(own) if !v2::delegated(&own) => (
                None,
                Some(format!(
                    "{} is not delegated to this process",
                    own.display()
                )),
            ),
            Some(own) => match v2::inspect(&own) {
                Ok(tree) => (Some(tree), None),
                Err(e) => (None, Some(e)),
            },
            None => (None, Some("no cgroup v2 hierarchy".to_owned())),
        };
        Self::assemble(v2, v2_problem, |d| {
            use std::os::unix::ffi::OsStrExt;
            std::ffi::CString::new(d.as_os_str().as_bytes())
                // SAFETY: access(2) with a valid C string.
                .is_ok_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
        })
    }

    /// [`detect`](Self::detect) with a given v2 subtree (tests use a recorded tree);
    /// v1 fills in the controllers the v2 tree lacks.
    pub fn with_v2(v2: Option<v2::V2Tree>, v2_problem: Option<String>) -> Self {
        let support = Self::assemble(v2, v2_problem, v1::writable);
        for parent in support.parents() {
            remove_stale(parent);
        }
        support
    }

    /// The v2 subtree (if any) plus, for each controller it lacks, this process's own
    /// v1 directory when `usable` accepts it ([`detect`](Self::detect) probes by
    /// creating a cgroup, [`inspect`](Self::inspect) only asks `access(W_OK)`).
    fn assemble(
        v2: Option<v2::V2Tree>,
        v2_problem: Option<String>,
        usable: impl Fn(&Path) -> bool,
    ) -> Self {
        let has_v2 = |c: &str| v2.as_ref().is_some_and(|t| t.has(c));
        let pick = |c: &str| v1::own_dir(c).filter(|d| usable(d));
        Self {
            cpu_parent: (!has_v2("cpu")).then(|| pick("cpu")).flatten(),
            // Accounting: v2's cpu.stat exists in every v2 cgroup.
            cpuacct_parent: v2.is_none().then(|| pick("cpuacct")).flatten(),
            memory_parent: (!has_v2("memory")).then(|| pick("memory")).flatten(),
            pids_parent: (!has_v2("pids")).then(|| pick("pids")).flatten(),
            v2,
            v2_problem,
            trial_problems: Vec::new(),
        }
    }

    fn parents(&self) -> impl Iterator<Item = &PathBuf> {
        self.v2
            .as_ref()
            .map(|t| &t.parent)
            .into_iter()
            .chain(self.cpu_parent.iter())
            .chain(self.cpuacct_parent.iter())
            .chain(self.memory_parent.iter())
            .chain(self.pids_parent.iter())
    }

    /// How `controller` would be enforced for a session.
    pub fn mechanism(&self, controller: Controller) -> LimitMechanism {
        if self.v2.as_ref().is_some_and(|t| t.has(controller.name())) {
            return LimitMechanism::CgroupV2;
        }
        let v1 = match controller {
            Controller::Cpu => &self.cpu_parent,
            Controller::Memory => &self.memory_parent,
            Controller::Pids => &self.pids_parent,
        };
        if v1.is_some() {
            LimitMechanism::CgroupV1
        } else {
            LimitMechanism::None
        }
    }

    /// True when session CPU time can be measured.
    pub fn cpu_accounting(&self) -> bool {
        self.v2.is_some() || self.cpuacct_parent.is_some()
    }
}

/// When process `pid` started, in seconds since the epoch (`starttime` of
/// `/proc/<pid>/stat`, in clock ticks since boot, plus the boot time `btime`).
fn process_start(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime as f64 + ticks as f64 / hz as f64)
}

/// Removes empty session cgroups whose worker is gone. The name carries the worker's
/// pid; a pid alone can be reused, so a cgroup also counts as stale when the process
/// now holding its pid started after the cgroup was made (its directory's mtime, set
/// at creation: session cgroups get no children). No boot id is needed: cgroupfs does
/// not survive a reboot. A removal fails (harmlessly) while processes are inside.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SESSION_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let made = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        let stale = match (process_start(pid), made) {
            // Gone.
            (None, _) => true,
            // The pid was reused after the cgroup was made (1 s of clock slack).
            (Some(started), Some(made)) => started > made + 1.0,
            (Some(_), None) => false,
        };
        if stale {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// One session's cgroups; removed by [`SessionCgroup::remove`].
#[derive(Debug, Default)]
pub struct SessionCgroup {
    /// The v2 cgroup, when v2 is used.
    v2: Option<PathBuf>,
    /// The distinct v1 directories created (co-mounted controllers share one).
    v1: Vec<PathBuf>,
    cpuacct: Option<PathBuf>,
    memory: Option<PathBuf>,
    cpu_limited: bool,
    memory_limited: bool,
    pids_limited: bool,
}

impl SessionCgroup {
    /// Creates the session cgroups and writes the limits. A controller that fails is
    /// left out (logged; the caller then uses the rlimit fallback for it).
    pub fn create(support: &CgroupSupport, name: &str, limits: &CgroupLimits) -> Self {
        let mut cg = Self::default();
        if let Some(tree) = &support.v2 {
            let dir = tree.parent.join(name);
            match std::fs::create_dir(&dir).and_then(|()| v2::write_limits(tree, &dir, limits)) {
                Ok(()) => {
                    cg.cpu_limited = limits.cpu.is_some() && tree.has("cpu");
                    cg.memory_limited = limits.memory.is_some() && tree.has("memory");
                    cg.pids_limited = limits.pids.is_some() && tree.has("pids");
                    cg.memory = tree.has("memory").then(|| dir.clone());
                    cg.v2 = Some(dir);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot set up the session's v2 cgroup");
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
        let mut v1_dir = |parent: &Option<PathBuf>,
                          setup: &dyn Fn(&Path) -> std::io::Result<()>|
         -> Option<PathBuf> {
            let dir = parent.as_ref()?.join(name);
            let fresh = !cg.v1.contains(&dir);
            if fresh && let Err(e) = std::fs::create_dir(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create session cgroup");
                return None;
            }
            match setup(&dir) {
                Ok(()) => {
                    if fresh {
                        cg.v1.push(dir.clone());
                    }
                    Some(dir)
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot configure session cgroup");
                    if fresh {
                        let _ = std::fs::remove_dir(&dir);
                    }
                    None
                }
            }
        };
        if let Some(q) = limits.cpu {
            let cpu = v1_dir(&support.cpu_parent, &|d| v1::write_cpu(d, q));
            cg.cpu_limited |= cpu.is_some();
        }
        cg.cpuacct = v1_dir(&support.cpuacct_parent, &|_| Ok(()));
        if let Some(m) = limits.memory {
            let memory = v1_dir(&support.memory_parent, &|d| v1::write_memory(d, m));
            cg.memory_limited |= memory.is_some();
            if memory.is_some() {
                cg.memory = memory;
            }
        }
        if let Some(p) = limits.pids {
            let pids = v1_dir(&support.pids_parent, &|d| {
                std::fs::write(d.join("pids.max"), p.to_string())
            });
            cg.pids_limited |= pids.is_some();
        }
        cg
    }

    /// True when a cgroup holds the CPU quota.
    pub fn cpu_limited(&self) -> bool {
        self.cpu_limited
    }

    /// True when a cgroup holds the memory cap (else the caller applies `RLIMIT_AS`).
    pub fn memory_limited(&self) -> bool {
        self.memory_limited
    }

    /// True when a cgroup holds the pids cap (else the caller applies `RLIMIT_NPROC`).
    pub fn pids_limited(&self) -> bool {
        self.pids_limited
    }

    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.v2.iter().chain(self.v1.iter())
    }

    /// The `cgroup.procs` files the spawned process must join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Host pids currently in the session's cgroups.
    pub fn pids_inside(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .procs_files()
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A reader of this cgroup's counters that can be kept apart from it.
    pub fn probe(&self) -> UsageProbe {
        UsageProbe {
            v2: self.v2.clone(),
            cpuacct: self.cpuacct.clone(),
            memory: self.memory.clone(),
        }
    }

    /// The counters now: CPU time of every process that ran inside, peak memory.
    pub fn usage(&self) -> ResourceUsage {
        self.probe().read()
    }
}

/// Reads a session cgroup's counters by path (see [`SessionCgroup::probe`]); once the
/// cgroup is removed every reading is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageProbe {
    v2: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    memory: Option<PathBuf>,
}

impl UsageProbe {
    /// The counters now.
    pub fn read(&self) -> ResourceUsage {
        let cpu = match (&self.v2, &self.cpuacct) {
            (Some(d), _) => v2::read_cpu_usec(d).map(Duration::from_micros),
            (None, Some(d)) => v1::read_cpu_ns(d).map(Duration::from_nanos),
            (None, None) => None,
        };
        let memory_peak_bytes = match (&self.v2, &self.memory) {
            (Some(d), Some(m)) if d == m => v2::read_memory_peak(d),
            (_, Some(m)) => v1::read_memory_peak(m),
            _ => None,
        };
        ResourceUsage {
            cpu,
            memory_peak_bytes,
            disk_peak_bytes: None,
        }
    }
}

impl SessionCgroup {
    /// Kills whatever is still inside, waits until the cgroups are empty (bounded) and
    /// removes them. Blocking; call from a blocking context. Returns the last reading
    /// (the counters die with the cgroup); see [`remove_with`](Self::remove_with).
    pub fn remove(&mut self) -> ResourceUsage {
        let mut last = ResourceUsage::default();
        self.remove_with(|probe| last = probe.read());
        last
    }

    /// [`remove`](Self::remove), handing the cgroups' probe to `retire` exactly once:
    /// after everything inside has been killed and is gone (so the counters are
    /// final), and before any directory is removed (so they can still be read).
    ///
    /// This ordering is what keeps a session's CPU from vanishing: the caller moves
    /// the final reading into its account inside `retire`, in the same step in which
    /// it stops reading the live cgroup, so no reader ever sees a removed cgroup's
    /// `None` in place of the shell's usage. Doing it here, inside the blocking
    /// removal, rather than in the async caller after the removal returns, also means
    /// a caller whose future is dropped mid-teardown (a timeout, a close racing a
    /// call) cannot lose the reading: the blocking work runs to its end regardless.
    ///
    /// When processes stay inside past the 5 s bound (stuck in the kernel), `retire`
    /// still runs with the counters as they are then, and the cgroups are left behind
    /// (logged; a later worker's [`CgroupSupport::detect`] removes them once empty).
    pub fn remove_with(&mut self, retire: impl FnOnce(&UsageProbe)) {
        if let Some(d) = &self.v2 {
            v2::kill_all(d);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids_inside();
            if pids.is_empty() {
                // Nothing left to run: the counters are final.
                break;
            }
            for pid in &pids {
                // SAFETY: kill(2) with a pid read from our own session cgroup.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            if std::time::Instant::now() > deadline {
                tracing::warn!(
                    ?pids,
                    "processes still inside the session cgroup; its last reading may miss some CPU"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        retire(&self.probe());
        let dirs: Vec<PathBuf> = self.dirs().cloned().collect();
        loop {
            let all_removed = dirs
                .iter()
                .all(|d| !d.exists() || std::fs::remove_dir(d).is_ok());
            if all_removed {
                self.v2 = None;
                self.v1.clear();
                self.cpuacct = None;
                self.memory = None;
                return;
            }
            if std::time::Instant::now() > deadline {
                tracing::warn!(?dirs, "session cgroup still busy; leaving it behind");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests;
