//! How resource limits are enforced ([`LimitMechanism`]) and whether a host that cannot
//! enforce them may serve ([`Enforce`]): the vocabulary shared by the cgroup probes
//! ([`crate::cgroup`]), the shape plan ([`crate::shape`]) and the sandbox's report
//! ([`crate::sandbox::SandboxReport`]).

use serde::{Deserialize, Serialize};

/// How a resource limit is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMechanism {
    /// A per-session cgroup v2 controller (whole sandbox).
    CgroupV2,
    /// A per-session cgroup v1 controller (whole sandbox).
    CgroupV1,
    /// A per-process rlimit (weaker: per process, not per sandbox).
    Rlimit,
    /// A per-session size- and inode-capped filesystem (the disk cap; see
    /// [`crate::disk`]).
    Filesystem,
    /// Not enforced (not configured, or the fallback cannot bind here).
    None,
}

impl LimitMechanism {
    /// The name used in logs, `/readyz` and metrics labels: `cgroup-v2`, `cgroup-v1`,
    /// `rlimit`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitMechanism::CgroupV2 => "cgroup-v2",
            LimitMechanism::CgroupV1 => "cgroup-v1",
            LimitMechanism::Rlimit => "rlimit",
            LimitMechanism::Filesystem => "loop-ext4",
            LimitMechanism::None => "none",
        }
    }
}

/// Whether a host that cannot enforce the shape may serve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforce {
    /// Serve anyway, and report which limits are active (the default).
    #[default]
    BestEffort,
    /// Refuse to start unless every configured limit is enforced by a cgroup (or, for
    /// the disk, a capped filesystem).
    Required,
}

impl Enforce {
    /// The configuration file's spelling: `best-effort` or `required`.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforce::BestEffort => "best-effort",
            Enforce::Required => "required",
        }
    }
}

impl std::fmt::Display for Enforce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
