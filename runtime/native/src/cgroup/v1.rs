//! cgroup v1: one hierarchy per controller (`cpu`, `cpuacct`, `memory`, `pids`, some
//! co-mounted such as `cpu,cpuacct`), each session a child of the worker's own cgroup in
//! every hierarchy it uses.
//!
//! v1 has no "no internal processes" rule and no delegation model: a directory is usable
//! when this process may create a child there (root, or a chowned subtree).

use std::path::{Path, PathBuf};

/// The v1 cgroup directory of `controller` for this process, from
/// `/proc/self/cgroup` and `/proc/self/mountinfo`.
pub(crate) fn own_dir(controller: &str) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    own_dir_from(&cgroups, &mountinfo, controller)
}

/// [`own_dir`] from the two files' contents (separated for tests).
pub(crate) fn own_dir_from(cgroups: &str, mountinfo: &str, controller: &str) -> Option<PathBuf> {
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
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let _source = post.next();
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

/// True when a child cgroup can be created (and removed) beneath `parent`.
pub(crate) fn writable(parent: &Path) -> bool {
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

/// The CFS bandwidth limit of `vcpus`: `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
pub(crate) fn write_cpu(dir: &Path, quota: super::CpuQuota) -> std::io::Result<()> {
    // The period first: the kernel checks quota against the current period.
    std::fs::write(dir.join("cpu.cfs_period_us"), quota.period_us.to_string())?;
    std::fs::write(dir.join("cpu.cfs_quota_us"), quota.quota_us.to_string())
}

/// `memory.limit_in_bytes`, and `memory.memsw.limit_in_bytes` where swap accounting
/// exists, so the cap cannot be dodged by swapping.
pub(crate) fn write_memory(dir: &Path, limit: u64) -> std::io::Result<()> {
    std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        let _ = std::fs::write(&memsw, limit.to_string());
    }
    Ok(())
}

/// `cpuacct.usage`: CPU time of every task ever in the cgroup, in nanoseconds.
pub(crate) fn read_cpu_ns(cpuacct: &Path) -> Option<u64> {
    super::read_u64(&cpuacct.join("cpuacct.usage"))
}

/// `memory.max_usage_in_bytes`: the high-water mark of the cgroup's charge (RSS, page
/// cache and tmpfs pages written by it).
pub(crate) fn read_memory_peak(memory: &Path) -> Option<u64> {
    super::read_u64(&memory.join("memory.max_usage_in_bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_dir_follows_the_mount_root() {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("cpu,cpuacct");
        std::fs::create_dir_all(mnt.join("pod/ctr")).unwrap();
        let cgroups = "4:memory:/x\n3:cpu,cpuacct:/pod/ctr\n0::/\n";
        let mountinfo = format!(
            "32 31 0:29 / {} rw,relatime - cgroup cgroup rw,cpu,cpuacct\n",
            mnt.display()
        );
        assert_eq!(
            own_dir_from(cgroups, &mountinfo, "cpuacct"),
            Some(mnt.join("pod/ctr"))
        );
        assert_eq!(
            own_dir_from(cgroups, &mountinfo, "cpu"),
            Some(mnt.join("pod/ctr"))
        );
        // No mount for memory: none.
        assert_eq!(own_dir_from(cgroups, &mountinfo, "memory"), None);
    }
}
