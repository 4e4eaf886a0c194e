//! The start-up trial of the session limits and the launch-time check that each
//! session's cgroup got what the report promised (review finding: a session must never
//! run quietly uncapped while `/readyz` and the gauges say the shape holds).

use std::path::PathBuf;

use super::{
    CgroupLimits, CgroupSupport, Controller, CpuQuota, SESSION_PREFIX, SessionCgroup, read_u64,
};
use crate::limits::LimitMechanism;

impl CgroupSupport {
    /// The CPU bandwidth the session cgroups' ancestors allow, in CPUs: the smallest
    /// `quota / period` from the session parent up to the hierarchy's root (`None`: no
    /// ancestor is limited, or no CPU controller).
    pub fn cpu_ceiling(&self) -> Option<f64> {
        let (start, v2) = match (&self.v2, &self.cpu_parent) {
            (Some(t), _) if t.has("cpu") => (t.parent.clone(), true),
            (_, Some(p)) => (p.clone(), false),
            _ => return None,
        };
        let mut ceiling: Option<f64> = None;
        let mut dir = Some(start.as_path());
        while let Some(d) = dir {
            let ratio = if v2 {
                let Ok(max) = std::fs::read_to_string(d.join("cpu.max")) else {
                    break;
                };
                let mut it = max.split_whitespace();
                match (it.next().and_then(|q| q.parse::<u64>().ok()), it.next()) {
                    (Some(q), Some(p)) => p.parse::<u64>().ok().map(|p| q as f64 / p as f64),
                    _ => None,
                }
            } else {
                let Some(q) = std::fs::read_to_string(d.join("cpu.cfs_quota_us"))
                    .ok()
                    .and_then(|q| q.trim().parse::<i64>().ok())
                else {
                    break;
                };
                let p = read_u64(&d.join("cpu.cfs_period_us")).filter(|p| *p > 0);
                match (u64::try_from(q), p) {
                    (Ok(q), Some(p)) => Some(q as f64 / p as f64),
                    _ => None,
                }
            };
            if let Some(r) = ratio.filter(|r| *r > 0.0) {
                ceiling = Some(ceiling.map_or(r, |c| c.min(r)));
            }
            dir = d.parent();
        }
        ceiling
    }

    /// Checks the real limits once, at start-up, so the report says what sessions will
    /// really get: clamps the CPU quota to what the ancestors allow (a v1 child quota
    /// above its parent's is refused with `EINVAL`, and in v2 it would be a number
    /// nobody gets), then creates one trial session cgroup, writes `limits` and reads
    /// them back. A controller that fails is given up here (recorded in
    /// [`trial_problems`](Self::trial_problems)), so the report, `/readyz` and the
    /// gauges name the mechanism sessions will actually have. Returns the CPU
    /// quota as configured when it was clamped.
    pub fn trial(&mut self, limits: &mut CgroupLimits) -> Option<CpuQuota> {
        let mut clamped_from = None;
        if let (Some(q), Some(ceiling)) = (limits.cpu, self.cpu_ceiling())
            && (q.quota_us as f64 / q.period_us as f64) > ceiling
        {
            let quota_us = ((ceiling * q.period_us as f64).floor() as u64).max(1000);
            tracing::warn!(
                configured = q.quota_us as f64 / q.period_us as f64,
                allowed = ceiling,
                "[runtime.shape] vcpus is above what this worker's cgroup allows; sessions get the parent's quota"
            );
            clamped_from = Some(q);
            limits.cpu = Some(CpuQuota { quota_us, ..q });
        }
        if self.parents().next().is_none() {
            return clamped_from;
        }
        let name = format!(
            "{SESSION_PREFIX}{}-trial-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut cg = SessionCgroup::create(self, &name, limits);
        let mut failed: Vec<(&'static str, String)> = cg
            .shortfall(limits, self)
            .into_iter()
            .map(|l| {
                (
                    l,
                    "the trial session cgroup could not be created or limited".to_owned(),
                )
            })
            .collect();
        for (limit, problem) in cg.read_back(limits) {
            if !failed.iter().any(|(l, _)| *l == limit) {
                failed.push((limit, problem));
            }
        }
        cg.remove();
        for (limit, problem) in &failed {
            tracing::warn!(
                limit,
                problem,
                "session cgroup trial failed; limit not enforced by a cgroup"
            );
            match *limit {
                "cpu" => self.cpu_parent = None,
                "memory" => self.memory_parent = None,
                _ => self.pids_parent = None,
            }
            if let Some(t) = self.v2.as_mut() {
                t.controllers.retain(|c| c != limit);
            }
        }
        self.trial_problems = failed;
        clamped_from
    }
}

impl SessionCgroup {
    /// The configured limits that `support` can enforce with a cgroup but this
    /// session's cgroup did not get.
    pub fn shortfall(&self, limits: &CgroupLimits, support: &CgroupSupport) -> Vec<&'static str> {
        let cg = |c| {
            matches!(
                support.mechanism(c),
                LimitMechanism::CgroupV1 | LimitMechanism::CgroupV2
            )
        };
        let mut out = Vec::new();
        if limits.cpu.is_some() && cg(Controller::Cpu) && !self.cpu_limited {
            out.push("cpu");
        }
        if limits.memory.is_some() && cg(Controller::Memory) && !self.memory_limited {
            out.push("memory");
        }
        if limits.pids.is_some() && cg(Controller::Pids) && !self.pids_limited {
            out.push("pids");
        }
        out
    }

    /// Reads the limits back from the control files: the limits whose file does not
    /// hold what was written, each with what was found.
    fn read_back(&self, limits: &CgroupLimits) -> Vec<(&'static str, String)> {
        let mut bad = Vec::new();
        let mut expect = |limit: &'static str, file: PathBuf, ok: &dyn Fn(&str) -> bool| {
            match std::fs::read_to_string(&file) {
                Ok(v) if ok(v.trim()) => {}
                Ok(v) => bad.push((limit, format!("{} reads {:?}", file.display(), v.trim()))),
                Err(e) => bad.push((limit, format!("cannot read {}: {e}", file.display()))),
            }
        };
        // The kernel rounds a memory limit down to whole pages.
        let mem_ok = |want: u64| {
            move |v: &str| {
                v.parse::<u64>()
                    .is_ok_and(|g| g <= want && g + 65536 > want)
            }
        };
        if let Some(d) = &self.v2 {
            if let Some(q) = limits.cpu
                && d.join("cpu.max").exists()
            {
                let want = format!("{} {}", q.quota_us, q.period_us);
                expect("cpu", d.join("cpu.max"), &|v| v == want);
            }
            if let Some(m) = limits.memory
                && d.join("memory.max").exists()
            {
                expect("memory", d.join("memory.max"), &mem_ok(m));
            }
        }
        for d in &self.v1 {
            if let Some(q) = limits.cpu
                && d.join("cpu.cfs_quota_us").exists()
            {
                expect("cpu", d.join("cpu.cfs_quota_us"), &|v| {
                    v == q.quota_us.to_string()
                });
            }
            if let Some(m) = limits.memory
                && d.join("memory.limit_in_bytes").exists()
            {
                expect("memory", d.join("memory.limit_in_bytes"), &mem_ok(m));
            }
        }
        if let Some(p) = limits.pids {
            for d in self.dirs() {
                if d.join("pids.max").exists() {
                    expect("pids", d.join("pids.max"), &|v| v == p.to_string());
                }
            }
        }
        bad
    }
}

/// Sessions launched with a configured limit their cgroup did not get (the host
/// changed after start-up), per limit: `cpu`, `memory`, `pids`. Process-wide, for
/// the `wasm_sandbox_shape_session_fallbacks_total{limit}` counter.
static FALLBACKS: [std::sync::atomic::AtomicU64; 3] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

/// The session fallbacks counted so far (see [`check_applied`]), per limit.
pub fn session_fallbacks() -> [(&'static str, u64); 3] {
    let get = |i: usize| FALLBACKS[i].load(std::sync::atomic::Ordering::Relaxed);
    [("cpu", get(0)), ("memory", get(1)), ("pids", get(2))]
}

/// Compares what a session's cgroup got with what the start-up plan promised. Under
/// `enforce = "required"` a shortfall is an error (the launch fails: the session must
/// never run quietly uncapped while `/readyz` says the shape holds); under best effort
/// it is logged and counted ([`session_fallbacks`]), and the rlimit fallbacks apply.
///
/// # Errors
/// `required` and a limit missing: the message names it.
pub fn check_applied(
    cg: &SessionCgroup,
    support: &CgroupSupport,
    limits: &CgroupLimits,
    enforce: crate::limits::Enforce,
) -> Result<(), String> {
    let missing = cg.shortfall(limits, support);
    if missing.is_empty() {
        return Ok(());
    }
    for l in &missing {
        let i = match *l {
            "cpu" => 0,
            "memory" => 1,
            _ => 2,
        };
        FALLBACKS[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let msg = format!(
        "the session's cgroup could not be given its {} limit (the host's cgroups changed \
         since start-up; see the worker log)",
        missing.join(", ")
    );
    if enforce == crate::limits::Enforce::Required {
        Err(format!(
            "{msg}; [runtime.shape] enforce = \"required\" refuses to run it"
        ))
    } else {
        tracing::warn!(limits = ?missing, "{msg}; running with the rlimit fallbacks (enforce = \"best-effort\")");
        Ok(())
    }
}
