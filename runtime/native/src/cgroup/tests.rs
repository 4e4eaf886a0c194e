//! Unit tests of the session cgroups against recorded trees in temporary directories.

use super::*;

#[test]
fn vcpus_to_quota() {
    assert_eq!(
        CpuQuota::from_vcpus(0.5),
        Some(CpuQuota {
            quota_us: 50_000,
            period_us: 100_000
        })
    );
    assert_eq!(CpuQuota::from_vcpus(4.0).unwrap().quota_us, 400_000);
    assert_eq!(CpuQuota::from_vcpus(0.001).unwrap().quota_us, 1000);
    assert_eq!(CpuQuota::from_vcpus(0.0), None);
    assert_eq!(CpuQuota::from_vcpus(f64::NAN), None);
}

/// A recorded v1 tree: the worker's cgroup allows 2 CPUs (a child quota above it
/// is refused with EINVAL by the kernel). The trial clamps the session's 4 vCPUs to
/// 2 and says so; the session cgroup gets the clamped quota.
#[test]
fn trial_clamps_the_cpu_quota_to_the_parents() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("kubepods/pod");
    std::fs::create_dir_all(&parent).unwrap();
    for (d, q) in [
        (dir.path().join("kubepods"), "-1"),
        (parent.clone(), "200000"),
    ] {
        std::fs::write(d.join("cpu.cfs_quota_us"), q).unwrap();
        std::fs::write(d.join("cpu.cfs_period_us"), "100000").unwrap();
    }
    let mut support = CgroupSupport {
        cpu_parent: Some(parent.clone()),
        ..CgroupSupport::default()
    };
    assert_eq!(support.cpu_ceiling(), Some(2.0));
    let mut limits = CgroupLimits {
        cpu: CpuQuota::from_vcpus(4.0),
        ..CgroupLimits::default()
    };
    let from = support.trial(&mut limits);
    assert_eq!(from, CpuQuota::from_vcpus(4.0));
    assert_eq!(limits.cpu, CpuQuota::from_vcpus(2.0));
    assert!(
        support.trial_problems.is_empty(),
        "{:?}",
        support.trial_problems
    );
    assert_eq!(support.mechanism(Controller::Cpu), LimitMechanism::CgroupV1);
    // Below the ceiling: untouched.
    let mut limits = CgroupLimits {
        cpu: CpuQuota::from_vcpus(1.5),
        ..CgroupLimits::default()
    };
    assert_eq!(support.trial(&mut limits), None);
    assert_eq!(limits.cpu, CpuQuota::from_vcpus(1.5));
}

/// A controller whose session cgroup cannot be made at start-up is given up by the
/// trial (reported, not promised).
#[test]
fn trial_gives_up_a_controller_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut support = CgroupSupport {
        pids_parent: Some(dir.path().to_path_buf()),
        memory_parent: Some(dir.path().join("gone")),
        ..CgroupSupport::default()
    };
    let mut limits = CgroupLimits {
        memory: Some(64 << 20),
        pids: Some(32),
        ..CgroupLimits::default()
    };
    support.trial(&mut limits);
    assert_eq!(support.mechanism(Controller::Memory), LimitMechanism::None);
    assert_eq!(
        support.mechanism(Controller::Pids),
        LimitMechanism::CgroupV1
    );
    assert_eq!(
        support.trial_problems.len(),
        1,
        "{:?}",
        support.trial_problems
    );
    assert_eq!(support.trial_problems[0].0, "memory");
}

/// At launch, a session cgroup that misses a limit the plan promised fails the
/// launch under `required`, and is counted under best effort.
#[test]
fn check_applied_refuses_under_required_and_counts_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let plan = CgroupSupport {
        pids_parent: Some(dir.path().to_path_buf()),
        ..CgroupSupport::default()
    };
    let limits = CgroupLimits {
        pids: Some(32),
        ..CgroupLimits::default()
    };
    // The host changed since start-up: the parent is gone.
    let now = CgroupSupport {
        pids_parent: Some(dir.path().join("gone")),
        ..CgroupSupport::default()
    };
    let cg = SessionCgroup::create(&now, "wasm-sandbox-1-s-x", &limits);
    assert!(!cg.pids_limited());
    let err = check_applied(&cg, &plan, &limits, crate::Enforce::Required).unwrap_err();
    assert!(
        err.contains("pids limit") && err.contains("required"),
        "{err}"
    );
    let before = session_fallbacks()[2].1;
    assert_eq!(
        check_applied(&cg, &plan, &limits, crate::Enforce::BestEffort),
        Ok(())
    );
    assert!(session_fallbacks()[2].1 > before);
    // A session that got everything passes.
    let ok = SessionCgroup::create(&plan, "wasm-sandbox-1-s-y", &limits);
    assert!(ok.pids_limited());
    assert_eq!(
        check_applied(&ok, &plan, &limits, crate::Enforce::Required),
        Ok(())
    );
}

/// Stale session cgroups: a dead worker's, and one whose pid (here ours) was
/// reused by a process that started after the cgroup was made; a live worker's
/// current one stays.
#[test]
fn remove_stale_checks_the_pid_and_its_start_time() {
    let dir = tempfile::tempdir().unwrap();
    let me = std::process::id();
    let old = dir.path().join(format!("{SESSION_PREFIX}{me}-s-aaaaaaaa"));
    let current = dir.path().join(format!("{SESSION_PREFIX}{me}-s-bbbbbbbb"));
    let dead = dir
        .path()
        .join(format!("{SESSION_PREFIX}{}-s-cccccccc", u32::MAX - 1));
    let other = dir.path().join("not-ours");
    for d in [&old, &current, &dead, &other] {
        std::fs::create_dir(d).unwrap();
    }
    let day_ago = std::time::SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::open(&old)
        .unwrap()
        .set_modified(day_ago)
        .unwrap();
    assert!(process_start(me).is_some());
    remove_stale(dir.path());
    assert!(
        !old.exists(),
        "made before this process started: a reused pid"
    );
    assert!(!dead.exists(), "its worker is gone");
    assert!(current.exists(), "ours, made after we started");
    assert!(other.exists(), "not a session cgroup");
}

#[test]
fn usage_then_adds_cpu_and_keeps_peaks() {
    let a = ResourceUsage {
        cpu: Some(Duration::from_secs(1)),
        memory_peak_bytes: Some(10),
        disk_peak_bytes: None,
    };
    let b = ResourceUsage {
        cpu: Some(Duration::from_secs(2)),
        memory_peak_bytes: Some(5),
        disk_peak_bytes: Some(7),
    };
    let c = a.then(b);
    assert_eq!(c.cpu, Some(Duration::from_secs(3)));
    assert_eq!(c.memory_peak_bytes, Some(10));
    assert_eq!(c.disk_peak_bytes, Some(7));
    assert_eq!(
        ResourceUsage::default().then(ResourceUsage::default()).cpu,
        None
    );
}
