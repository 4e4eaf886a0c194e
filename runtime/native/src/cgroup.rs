//! Per-session cgroup v1 `memory` and `pids` limits.
//!
//! Namespaces and Landlock bound what bash can *reach*, not how much it can
//! *consume*: without a cap one session's `dd bs=8G` or fork bomb starves the worker
//! and every other session. Cgroups cap the whole sandbox (every descendant, and
//! tmpfs pages written by it), which per-process rlimits cannot.
//!
//! The order of preference is cgroup v2 controllers, then cgroup v1, then rlimits.
//! This host family (see the platform notes) mounts v2 with no resource controllers,
//! so this module implements v1 and the caller falls back to rlimits where v1 is not
//! writable (typically a non-root worker). The session's cgroup is created *beneath
//! the worker's own cgroup* of each hierarchy (so the worker's own limits still
//! apply on top), bubblewrap is moved into it between `fork` and `exec` (so every
//! process of the sandbox is born inside it), and it is removed at teardown once it
//! is empty.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The writable v1 hierarchies found for this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupSupport {
    /// This process's cgroup directory in the v1 memory hierarchy, if writable.
    pub memory_parent: Option<PathBuf>,
    /// This process's cgroup directory in the v1 pids hierarchy, if writable.
    pub pids_parent: Option<PathBuf>,
}

/// The v1 cgroup directory of `controller` for this process, from
/// `/proc/self/cgroup` and `/proc/self/mountinfo`.
fn own_v1_dir(controller: &str) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in mountinfo.lines() {
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split(' ');
        let fstype = post.next()?;
        let _source = post.next()?;
        let options = post.next().unwrap_or("");
        if fstype != "cgroup" || !options.split(',').any(|o| o == controller) {
            continue;
        }
        let fields: Vec<&str> = pre.split(' ').collect();
        let (root, mount_point) = (fields.get(3)?, fields.get(4)?);
        let sub = rel.strip_prefix(root).unwrap_or(&rel);
        let dir = Path::new(mount_point).join(sub.trim_start_matches('/'));
        return dir.is_dir().then_some(dir);
    }
    None
}

fn writable(parent: &Path) -> bool {
    let probe = parent.join(format!(
        "wasm-sandbox-probe-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    if std::fs::create_dir(&probe).is_err() {
        return false;
    }
    let ok = probe.join("cgroup.procs").exists();
    let _ = std::fs::remove_dir(&probe);
    ok
}

/// Session cgroups are named `<prefix><worker pid>-<session>-<random>`.
pub const SESSION_PREFIX: &str = "wasm-sandbox-";

impl CgroupSupport {
    /// Finds the writable v1 memory and pids hierarchies, and removes empty session
    /// cgroups left behind by worker processes that are gone.
    pub fn detect() -> Self {
        let pick = |c: &str| own_v1_dir(c).filter(|d| writable(d));
        let support = Self {
            memory_parent: pick("memory"),
            pids_parent: pick("pids"),
        };
        for parent in support
            .memory_parent
            .iter()
            .chain(support.pids_parent.iter())
        {
            remove_stale(parent);
        }
        support
    }
}

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
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            // Fails (harmlessly) while processes are still inside.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// One session's cgroups; removed by [`SessionCgroup::remove`].
#[derive(Debug)]
pub struct SessionCgroup {
    /// The memory cgroup, when a memory limit is active.
    pub memory: Option<PathBuf>,
    /// The pids cgroup, when a pids limit is active.
    pub pids: Option<PathBuf>,
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

impl SessionCgroup {
    /// Creates the session cgroups and writes the limits. A hierarchy that fails is
    /// left out (the caller then uses the rlimit fallback for it).
    pub fn create(
        support: &CgroupSupport,
        name: &str,
        memory_limit: Option<u64>,
        pids_limit: Option<u64>,
    ) -> Self {
        let make = |parent: &Option<PathBuf>, setup: &dyn Fn(&Path) -> std::io::Result<()>| {
            let parent = parent.as_ref()?;
            let dir = parent.join(name);
            if let Err(e) = std::fs::create_dir(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create session cgroup");
                return None;
            }
            match setup(&dir) {
                Ok(()) => Some(dir),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot configure session cgroup");
                    let _ = std::fs::remove_dir(&dir);
                    None
                }
            }
        };
        let memory = memory_limit.and_then(|limit| {
            make(&support.memory_parent, &|dir| {
                write(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
                // Count swap too where swap accounting exists, so the cap cannot be
                // dodged by swapping.
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    let _ = write(&memsw, &limit.to_string());
                }
                Ok(())
            })
        });
        let pids = pids_limit.and_then(|limit| {
            make(&support.pids_parent, &|dir| {
                write(&dir.join("pids.max"), &limit.to_string())
            })
        });
        Self { memory, pids }
    }

    /// The `cgroup.procs` files the spawned process must join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.memory
            .iter()
            .chain(self.pids.iter())
            .map(|d| d.join("cgroup.procs"))
            .collect()
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

    /// Kills whatever is still inside, waits until the cgroups are empty (bounded)
    /// and removes them. Blocking; call from a blocking context.
    pub fn remove(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids_inside();
            for pid in &pids {
                // SAFETY: kill(2) with a pid read from our own session cgroup.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            let dirs: Vec<PathBuf> = self
                .memory
                .iter()
                .chain(self.pids.iter())
                .cloned()
                .collect();
            let all_removed = dirs
                .iter()
                .all(|d| !d.exists() || std::fs::remove_dir(d).is_ok());
            if all_removed {
                self.memory = None;
                self.pids = None;
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
