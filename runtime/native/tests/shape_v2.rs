//! The cgroup v2 code path against a recorded cgroupfs tree in a temporary directory
//! (the files the kernel shows, written and read as the kernel would), plus a real v2
//! test that runs only where this process owns a delegated v2 subtree with controllers.

use std::path::Path;
use std::time::Duration;

use wasm_sandbox_native::LimitMechanism;
use wasm_sandbox_native::cgroup::v2::{self, LEAF, V2Tree};
use wasm_sandbox_native::cgroup::{
    CgroupLimits, CgroupSupport, Controller, CpuQuota, SessionCgroup,
};

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A container's cgroup as a pod sees it: controllers offered, none enabled for
/// children yet, and two processes (the worker and a sidecar shell) inside.
fn recorded_tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("kubepods.slice/pod-1/ctr");
    write(
        &own.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    );
    write(&own.join("cgroup.subtree_control"), "\n");
    write(&own.join("cgroup.procs"), "1\n42\n");
    (dir, own)
}

#[test]
fn own_dir_is_found_beneath_the_cgroup2_mount() {
    let mountinfo = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(
        v2::own_dir_from("0::/kubepods.slice/pod-1/ctr\n", mountinfo),
        Some("/sys/fs/cgroup/kubepods.slice/pod-1/ctr".into())
    );
    // Inside a cgroup namespace the container's cgroup is the root.
    assert_eq!(
        v2::own_dir_from("0::/\n", mountinfo),
        Some("/sys/fs/cgroup/".into())
    );
    // A v1-only host has no 0:: line.
    assert_eq!(v2::own_dir_from("4:memory:/x\n", mountinfo), None);
}

/// The no-internal-processes rule: the worker's processes (here both recorded ones, the
/// worker and its tini) move into the leaf, one write each, before
/// `+cpu +memory +pids` goes to `cgroup.subtree_control`.
#[test]
fn prepare_moves_the_processes_into_a_leaf_then_enables_controllers() {
    let (_tmp, own) = recorded_tree();
    let tree = v2::prepare_for(&own, &[1, 42]).expect("prepare");
    assert_eq!(tree.parent, own);
    assert_eq!(tree.controllers, ["cpu", "memory", "pids"]);
    assert_eq!(read(&own.join(LEAF).join("cgroup.procs")), "142");
    assert_eq!(
        read(&own.join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    // Prepared again from inside the leaf (a second runtime in the same process), the
    // leaf's parent is used and nothing is written again.
    std::fs::write(own.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
    let again = v2::prepare_for(&own.join(LEAF), &[1, 42]).expect("prepare again");
    assert_eq!(again, tree);
    assert_eq!(read(&own.join(LEAF).join("cgroup.procs")), "142");
}

/// A process that is not the worker's in its cgroup (a sidecar, a login shell's
/// siblings on a developer's machine): nothing is moved, nothing enabled, and v2 is
/// reported not delegated.
#[test]
fn prepare_never_moves_processes_that_are_not_ours() {
    let (_tmp, own) = recorded_tree();
    let err = v2::prepare_for(&own, &[42]).unwrap_err();
    assert!(
        err.contains("not this worker's") && err.contains("[1]"),
        "{err}"
    );
    assert!(err.contains("not delegated"), "{err}");
    assert!(!own.join(LEAF).exists(), "nothing moved");
    assert_eq!(read(&own.join("cgroup.subtree_control")), "\n");
    // `movable_pids` is this process and its children (and a minimal init at pid 1).
    let ours = v2::movable_pids();
    assert_eq!(ours[0], std::process::id());
}

/// `inspect` (doctor) finds the tree without writing: no leaf, no subtree_control.
#[test]
fn inspect_writes_nothing() {
    let (_tmp, own) = recorded_tree();
    let tree = v2::inspect(&own).unwrap();
    assert_eq!(tree.controllers, ["cpu", "memory", "pids"]);
    assert!(!own.join(LEAF).exists());
    assert_eq!(read(&own.join("cgroup.subtree_control")), "\n");
    assert_eq!(read(&own.join("cgroup.procs")), "1\n42\n");
}

#[test]
fn prepare_names_what_is_missing() {
    // Only hugetlb offered (this host's unified hierarchy): nothing to use.
    let (_tmp, own) = recorded_tree();
    write(&own.join("cgroup.controllers"), "hugetlb\n");
    let err = v2::prepare_for(&own, &[1, 42]).unwrap_err();
    assert!(
        err.contains("offers none of the cpu, memory, pids"),
        "{err}"
    );
    assert!(
        !own.join(LEAF).exists(),
        "nothing moved when nothing can be used"
    );
    // Not delegated: subtree_control cannot be written.
    let (_tmp, own) = recorded_tree();
    std::fs::remove_file(own.join("cgroup.subtree_control")).unwrap();
    std::fs::create_dir(own.join("cgroup.subtree_control")).unwrap();
    let err = v2::prepare_for(&own, &[1, 42]).unwrap_err();
    assert!(err.contains("not delegated"), "{err}");
    // Only some controllers offered: those are used.
    let (_tmp, own) = recorded_tree();
    write(&own.join("cgroup.controllers"), "memory pids\n");
    let tree = v2::prepare_for(&own, &[1, 42]).unwrap();
    assert_eq!(tree.controllers, ["memory", "pids"]);
    assert_eq!(read(&own.join("cgroup.subtree_control")), "+memory +pids");
}

/// A session cgroup in the v2 tree: limits in `cpu.max`, `memory.max`,
/// `memory.swap.max`, `pids.max`; the sandbox joins its `cgroup.procs`; usage comes
/// from `cpu.stat usage_usec` and `memory.peak`.
#[test]
fn session_cgroup_writes_v2_limits_and_reads_v2_counters() {
    let (_tmp, own) = recorded_tree();
    let tree = v2::prepare_for(&own, &[1, 42]).unwrap();
    let support = CgroupSupport::with_v2(Some(tree), None);
    assert_eq!(support.mechanism(Controller::Cpu), LimitMechanism::CgroupV2);
    assert_eq!(
        support.mechanism(Controller::Memory),
        LimitMechanism::CgroupV2
    );
    assert_eq!(
        support.mechanism(Controller::Pids),
        LimitMechanism::CgroupV2
    );
    assert!(support.cpu_accounting());
    // v2 holds every controller: no v1 directory is used alongside.
    assert_eq!(support.cpu_parent, None);
    assert_eq!(support.cpuacct_parent, None);
    let limits = CgroupLimits {
        cpu: CpuQuota::from_vcpus(1.5),
        memory: Some(4 << 30),
        pids: Some(512),
    };
    let cg = SessionCgroup::create(&support, "wasm-sandbox-7-sess-abcd", &limits);
    let dir = own.join("wasm-sandbox-7-sess-abcd");
    assert!(cg.cpu_limited() && cg.memory_limited() && cg.pids_limited());
    assert_eq!(read(&dir.join("cpu.max")), "150000 100000");
    assert_eq!(read(&dir.join("memory.max")), (4u64 << 30).to_string());
    assert_eq!(read(&dir.join("memory.swap.max")), "0");
    assert_eq!(read(&dir.join("pids.max")), "512");
    assert_eq!(cg.procs_files(), [dir.join("cgroup.procs")]);
    // Before the kernel has counted anything: not measured.
    assert_eq!(cg.usage().cpu, None);
    // The kernel's counters.
    write(
        &dir.join("cpu.stat"),
        "usage_usec 1500000\nuser_usec 1400000\nsystem_usec 100000\nnr_periods 30\nnr_throttled 12\nthrottled_usec 800000\n",
    );
    write(&dir.join("memory.peak"), "123456789\n");
    let usage = cg.usage();
    assert_eq!(usage.cpu, Some(Duration::from_millis(1500)));
    assert_eq!(usage.memory_peak_bytes, Some(123_456_789));
    assert_eq!(usage.disk_peak_bytes, None);
}

/// Only the controllers enabled in the tree are written; the rest are left to v1 or
/// rlimits.
#[test]
fn session_cgroup_writes_only_enabled_controllers() {
    let (_tmp, own) = recorded_tree();
    let tree = V2Tree {
        parent: own.clone(),
        controllers: vec!["pids".into()],
    };
    let support = CgroupSupport {
        v2: Some(tree),
        ..CgroupSupport::default()
    };
    let limits = CgroupLimits {
        cpu: CpuQuota::from_vcpus(2.0),
        memory: Some(1 << 30),
        pids: Some(64),
    };
    let cg = SessionCgroup::create(&support, "s", &limits);
    assert!(!cg.cpu_limited() && !cg.memory_limited() && cg.pids_limited());
    assert!(!own.join("s/cpu.max").exists());
    assert!(!own.join("s/memory.max").exists());
    assert_eq!(read(&own.join("s/pids.max")), "64");
}

/// The real thing, where this process owns a delegated v2 subtree with controllers.
/// It reorganises this process's cgroup (moves it into the leaf), so it runs only at
/// the root of a cgroup namespace (a container, CI) or with
/// `WASM_SANDBOX_TEST_REAL_V2=1`, never by surprise in a developer's login scope.
#[test]
fn real_v2_subtree_when_delegated() {
    let ns_root = std::fs::read_to_string("/proc/self/cgroup")
        .is_ok_and(|c| c.lines().any(|l| l == "0::/" || l == format!("0::/{LEAF}")));
    if !ns_root && std::env::var_os("WASM_SANDBOX_TEST_REAL_V2").is_none() {
        eprintln!(
            "SKIP: not at the root of a cgroup namespace (set WASM_SANDBOX_TEST_REAL_V2=1 to \
             let this test reorganise this process's own v2 cgroup)"
        );
        return;
    }
    let Some(own) = v2::own_dir() else {
        eprintln!("SKIP: no cgroup v2 hierarchy on this host");
        return;
    };
    let controllers = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    if !["cpu", "memory", "pids"]
        .iter()
        .all(|c| controllers.split_whitespace().any(|w| w == *c))
    {
        eprintln!(
            "SKIP: the v2 cgroup {} offers [{}], not cpu memory pids (a v1 host, or no delegation)",
            own.display(),
            controllers.trim()
        );
        return;
    }
    if !v2::delegated(&own) {
        eprintln!(
            "SKIP: the v2 cgroup {} is not delegated to this process (not a cgroup namespace root, no Delegate=yes)",
            own.display()
        );
        return;
    }
    let tree = match v2::prepare(&own) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIP: the v2 subtree is not delegated to this process: {e}");
            return;
        }
    };
    let support = CgroupSupport::with_v2(Some(tree), None);
    let limits = CgroupLimits {
        cpu: CpuQuota::from_vcpus(0.5),
        memory: Some(256 << 20),
        pids: Some(64),
    };
    let name = format!("wasm-sandbox-{}-realv2-test", std::process::id());
    let mut cg = SessionCgroup::create(&support, &name, &limits);
    assert!(cg.cpu_limited() && cg.memory_limited() && cg.pids_limited());
    let dir = support.v2.as_ref().unwrap().parent.join(&name);
    assert_eq!(read(&dir.join("cpu.max")).trim(), "50000 100000");
    assert_eq!(read(&dir.join("pids.max")).trim(), "64");
    assert!(cg.usage().cpu.is_some());
    cg.remove();
    assert!(!dir.exists());
}
