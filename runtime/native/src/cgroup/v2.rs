//! cgroup v2: one unified hierarchy; sessions are children of the worker's own cgroup,
//! which must be *delegated* to the worker (writable `cgroup.subtree_control`,
//! `cgroup.procs` and child directories).
//!
//! # The pod set-up this needs
//!
//! * A cgroup namespace with a writable cgroupfs: the container's cgroup appears as
//!   `/sys/fs/cgroup` and is writable by the worker (containerd/CRI-O with
//!   `cgroupns=private`, the default on v2 hosts, plus a writable mount: a privileged
//!   container, or a runtime/`securityContext` that mounts cgroupfs read-write for
//!   this container); or, outside Kubernetes, a systemd unit with `Delegate=yes`
//!   (the unit's cgroup is handed to the service's user).
//! * The controllers enabled *down to* the worker's cgroup (`cpu memory pids` listed
//!   in its `cgroup.controllers`); Kubernetes enables them for every pod.
//!
//! # The "no internal processes" rule
//!
//! A v2 cgroup with processes in it cannot enable controllers for its children
//! (writing `cgroup.subtree_control` fails with `EBUSY`). So [`prepare`] first moves
//! the worker's own processes (itself, its children, a minimal init at pid 1: see
//! [`movable_pids`]) into a leaf child, [`LEAF`], then enables the controllers; when
//! any other process shares the cgroup nothing is moved and v2 is reported "not
//! delegated" (those processes are not the worker's to reorganise); session
//! cgroups are created as siblings of that leaf. A later [`prepare`] in the same
//! process (a second runtime, `doctor`) sees itself in the leaf and uses the leaf's
//! parent.
//!
//! [`prepare`] runs only where the cgroup is the worker's to reorganise ([`delegated`]):
//! the root of its cgroup namespace, or a systemd unit with `Delegate=yes`; elsewhere
//! (a login shell's scope on a developer's machine) v2 is reported unavailable instead
//! of moving processes that belong to the service manager.
//!
//! The functions take the cgroupfs directory as an argument, so tests run them against
//! a recorded tree in a temporary directory (see `tests/shape_v2.rs`).

use std::path::{Path, PathBuf};

/// The leaf the worker moves itself into before enabling controllers.
pub const LEAF: &str = "wasm-sandbox-worker";

/// The controllers sessions are limited with (when the kernel offers them).
pub const WANTED: [&str; 3] = ["cpu", "memory", "pids"];

/// A delegated v2 subtree ready for session cgroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V2Tree {
    /// Session cgroups are created here.
    pub parent: PathBuf,
    /// The wanted controllers enabled in `parent/cgroup.subtree_control`.
    pub controllers: Vec<String>,
}

impl V2Tree {
    /// True when `controller` is enabled for session cgroups.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// This process's v2 cgroup directory: the `0::/path` line of `/proc/self/cgroup`
/// beneath the `cgroup2` mount of `/proc/self/mountinfo`.
pub fn own_dir() -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    own_dir_from(&cgroups, &mountinfo)
}

/// [`own_dir`] from the two files' contents.
pub fn own_dir_from(cgroups: &str, mountinfo: &str) -> Option<PathBuf> {
    let rel = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if post.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = pre.split(' ').collect();
        let (root, mount_point) = (fields.get(3)?, fields.get(4)?);
        let sub = rel.strip_prefix(root).unwrap_or(rel);
        return Some(Path::new(mount_point).join(sub.trim_start_matches('/')));
    }
    None
}

/// True when this process may reorganise its own v2 cgroup `own`: it is the root of
/// the process's cgroup namespace (a container with its own cgroupns, the usual pod), or
/// systemd marked it delegated (`Delegate=yes` sets the `trusted.delegate` or
/// `user.delegate` extended attribute). Anything else (a login session's scope, a
/// service without delegation) belongs to the service manager: [`prepare`] would move
/// its processes, so it is not attempted there.
pub fn delegated(own: &Path) -> bool {
    // After an earlier `prepare` in this process, the worker sits in its leaf.
    let in_leaf = own.file_name().is_some_and(|n| n == LEAF);
    let leaf_line = format!("0::/{LEAF}");
    let at_ns_root = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .is_some_and(|c| c.lines().any(|l| l == "0::/" || l == leaf_line));
    at_ns_root
        || has_delegate_xattr(own)
        || (in_leaf && own.parent().is_some_and(has_delegate_xattr))
}

fn has_delegate_xattr(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    [c"trusted.delegate", c"user.delegate"].iter().any(|name| {
        let mut buf = [0u8; 8];
        // SAFETY: getxattr(2) with valid C strings and a buffer of the given length.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        n > 0 && buf[0] == b'1'
    })
}

fn words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        // The kernel prints `cpu memory`; accept the written `+cpu` form too.
        .map(|w| w.trim_start_matches('+').to_owned())
        .collect()
}

/// One write to a cgroup control file. Append mode so that a recorded tree (a plain
/// directory in tests) keeps every write, as the kernel's `cgroup.procs` lists every
/// process moved in; cgroupfs ignores the mode.
fn append(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// The processes [`prepare`] may move into the leaf: this process, its children, and
/// pid 1 when it is a minimal container init (`tini`, `dumb-init`, `catatonit`,
/// `docker-init`) that only reaps for us. Anything else in the worker's cgroup
/// (a sidecar, a shell someone started) is not ours to move.
pub fn movable_pids() -> Vec<u32> {
    let me = std::process::id();
    let mut ours = vec![me];
    let comm = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if me != 1 && ["tini", "dumb-init", "catatonit", "docker-init"].contains(&comm.trim()) {
        ours.push(1);
    }
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) {
        ours.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    ours
}

/// Makes `own` (this process's v2 cgroup) ready for session children: moves this
/// process (see [`movable_pids`]) into [`LEAF`] and enables the [`WANTED`] controllers
/// it offers.
///
/// # Errors
/// A message naming what is missing: no controller offered, the tree is not
/// writable (not delegated), or processes that are not the worker's share its cgroup.
pub fn prepare(own: &Path) -> Result<V2Tree, String> {
    prepare_for(own, &movable_pids())
}

/// [`prepare`] moving only the processes in `ours` (tests pass a recorded tree's).
///
/// Processes in the cgroup that are not in `ours` are never moved: they belong to
/// someone else (the service manager, a sidecar), and the cgroup is then not the
/// worker's to reorganise, so v2 is reported "not delegated" instead. Writing
/// `cgroup.subtree_control` is retried on `EBUSY` (a process of ours forked into the
/// cgroup just before the move), moving our newcomers again.
///
/// # Errors
/// As [`prepare`].
pub fn prepare_for(own: &Path, ours: &[u32]) -> Result<V2Tree, String> {
    let own = if own.file_name().is_some_and(|n| n == LEAF) {
        own.parent().unwrap_or(own).to_path_buf()
    } else {
        own.to_path_buf()
    };
    let offered = words(&own.join("cgroup.controllers"));
    let wanted: Vec<&str> = WANTED
        .into_iter()
        .filter(|c| offered.iter().any(|o| o == c))
        .collect();
    if wanted.is_empty() {
        return Err(format!(
            "{} offers none of the cpu, memory, pids controllers (cgroup.controllers: {:?})",
            own.display(),
            offered.join(" ")
        ));
    }
    let enabled = words(&own.join("cgroup.subtree_control"));
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|c| !enabled.iter().any(|e| e == c))
        .collect();
    if !missing.is_empty() {
        let line: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
        let mut tries = 0;
        loop {
            // The no-internal-processes rule: empty our own cgroup first, of our own
            // processes only.
            move_ours_to_leaf(&own, ours)?;
            match std::fs::write(own.join("cgroup.subtree_control"), line.join(" ")) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 10 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(format!(
                        "cannot enable {} in {}/cgroup.subtree_control: {e} (the cgroup is \
                         not delegated to this process)",
                        missing.join(" "),
                        own.display()
                    ));
                }
            }
        }
    }
    let enabled = words(&own.join("cgroup.subtree_control"));
    let controllers: Vec<String> = wanted
        .iter()
        .filter(|c| enabled.iter().any(|e| e == *c))
        .map(|c| (*c).to_owned())
        .collect();
    if controllers.is_empty() {
        return Err(format!(
            "no controller could be enabled in {}",
            own.display()
        ));
    }
    Ok(V2Tree {
        parent: own,
        controllers,
    })
}

/// Moves the processes of `own` that are in `ours` into [`LEAF`]; refuses (moving
/// nothing) when any other process is there.
fn move_ours_to_leaf(own: &Path, ours: &[u32]) -> Result<(), String> {
    let procs = std::fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<u32> = procs
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let foreign: Vec<u32> = pids.iter().copied().filter(|p| !ours.contains(p)).collect();
    if !foreign.is_empty() {
        return Err(format!(
            "{} holds processes that are not this worker's (pids {foreign:?}); it is not \
             delegated to this process (run the worker as the container's only process, \
             under a minimal init such as tini, or give it a Delegate=yes unit)",
            own.display()
        ));
    }
    if pids.is_empty() {
        return Ok(());
    }
    let leaf = own.join(LEAF);
    if let Err(e) = std::fs::create_dir(&leaf)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(format!("cannot create {}: {e}", leaf.display()));
    }
    for pid in pids {
        // One write per process, as the kernel requires. A process that exited
        // meanwhile fails with ESRCH: harmless.
        if let Err(e) = append(&leaf.join("cgroup.procs"), &pid.to_string())
            && e.raw_os_error() != Some(libc::ESRCH)
        {
            return Err(format!(
                "cannot move pid {pid} into {}: {e}",
                leaf.display()
            ));
        }
    }
    Ok(())
}

/// The tree [`prepare`] would make, found without writing anything (for `doctor`): the
/// wanted controllers `own` offers, when it is [`delegated`]. `None` with the reason
/// otherwise.
pub fn inspect(own: &Path) -> Result<V2Tree, String> {
    let own = if own.file_name().is_some_and(|n| n == LEAF) {
        own.parent().unwrap_or(own).to_path_buf()
    } else {
        own.to_path_buf()
    };
    let offered = words(&own.join("cgroup.controllers"));
    let controllers: Vec<String> = WANTED
        .into_iter()
        .filter(|c| offered.iter().any(|o| o == c))
        .map(str::to_owned)
        .collect();
    if controllers.is_empty() {
        return Err(format!(
            "{} offers none of the cpu, memory, pids controllers",
            own.display()
        ));
    }
    Ok(V2Tree {
        parent: own,
        controllers,
    })
}

/// Writes the session's limits into its v2 cgroup `dir`: `cpu.max`, `memory.max`,
/// `memory.swap.max` = 0 (the cap cannot be dodged by swapping; absent without swap
/// accounting), `pids.max`.
pub fn write_limits(
    tree: &V2Tree,
    dir: &Path,
    limits: &super::CgroupLimits,
) -> std::io::Result<()> {
    if let Some(q) = limits.cpu
        && tree.has("cpu")
    {
        std::fs::write(
            dir.join("cpu.max"),
            format!("{} {}", q.quota_us, q.period_us),
        )?;
    }
    if let Some(m) = limits.memory
        && tree.has("memory")
    {
        std::fs::write(dir.join("memory.max"), m.to_string())?;
        let _ = std::fs::write(dir.join("memory.swap.max"), "0");
    }
    if let Some(p) = limits.pids
        && tree.has("pids")
    {
        std::fs::write(dir.join("pids.max"), p.to_string())?;
    }
    Ok(())
}

/// `usage_usec` of `cpu.stat` (present in every v2 cgroup, controller or not).
pub fn read_cpu_usec(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("cpu.stat"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// `memory.peak` (Linux ≥ 5.19).
pub fn read_memory_peak(dir: &Path) -> Option<u64> {
    super::read_u64(&dir.join("memory.peak"))
}

/// Kills every process of `dir` at once with `cgroup.kill` (Linux ≥ 5.14); false when
/// the file is missing (the caller then kills pid by pid).
pub fn kill_all(dir: &Path) -> bool {
    let f = dir.join("cgroup.kill");
    f.exists() && std::fs::write(f, "1").is_ok()
}
