//! The session shape (`[runtime.shape]`) on a real host: the vCPU quota holds a busy
//! loop to its share, a memory hog is killed inside the session while the caller lives,
//! a fork bomb stops at `pids`, CPU and memory are accounted, and
//! `enforce = "required"` refuses a host without the controllers.
//!
//! Tests that need a cgroup controller skip with a printed reason where it is missing
//! (a non-root run, a v2 host without delegation).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Dirs, ok, run, spec};
use serde_json::json;
use wasm_sandbox_native::{
    BashConfig, BashSandbox, BashSession, Enforce, LimitMechanism, ShapeConfig,
};

fn sandbox(shape: &ShapeConfig, tweak: impl FnOnce(&mut BashConfig)) -> Arc<BashSandbox> {
    let mut config = BashConfig {
        init_path: Some(env!("CARGO_BIN_EXE_wasm-sandbox-init").into()),
        ..BashConfig::default()
    };
    tweak(&mut config);
    let sb = BashSandbox::with_shape(config, shape);
    assert!(
        sb.report().available,
        "sandbox unavailable: {:?}",
        sb.report().unavailable_reason
    );
    Arc::new(sb)
}

/// The directory of `pid`'s cgroup for `controller` (v1 hierarchy with that controller,
/// else the v2 `0::` line), from `/proc/<pid>/cgroup` and our mountinfo.
fn cgroup_dir(pid: i32, controller: &str) -> Option<std::path::PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let v1 = cgroups.lines().find_map(|l| {
        let mut p = l.splitn(3, ':');
        let (_, ctrls, path) = (p.next()?, p.next()?, p.next()?);
        ctrls.split(',').any(|c| c == controller).then_some(path)
    });
    let (rel, v2) = match v1 {
        Some(rel) => (rel, false),
        None => (cgroups.lines().find_map(|l| l.strip_prefix("0::"))?, true),
    };
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split(' ');
        let fstype = post.next()?;
        let options = post.nth(1).unwrap_or("");
        let ours = if v2 {
            fstype == "cgroup2"
        } else {
            fstype == "cgroup" && options.split(',').any(|o| o == controller)
        };
        if !ours {
            return None;
        }
        let f: Vec<&str> = pre.split(' ').collect();
        let sub = rel.strip_prefix(f[3]).unwrap_or(rel);
        Some(std::path::Path::new(f[4]).join(sub.trim_start_matches('/')))
    })
}

/// A `key value` line of a cgroup stat file (`cpu.stat`, `pids.events`).
fn stat(file: &std::path::Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn cgroup(m: LimitMechanism) -> bool {
    matches!(m, LimitMechanism::CgroupV1 | LimitMechanism::CgroupV2)
}

/// Two busy loops for 3 s with `vcpus = 0.5`: the session gets ~1.5 s of CPU, not the
/// ~6 s (two cores) it would take unthrottled; the measured CPU time is the cgroup's.
#[tokio::test]
async fn busy_loop_is_held_to_the_configured_vcpus() {
    let shape = ShapeConfig {
        vcpus: 0.5,
        ..ShapeConfig::default()
    };
    let sb = sandbox(&shape, |_| {});
    let report = sb.report();
    if !cgroup(report.cpu_limit) || !report.shape.cpu_accounting {
        eprintln!(
            "SKIP: no cgroup cpu controller here (cpu limit: {:?}, accounting: {})",
            report.cpu_limit, report.shape.cpu_accounting
        );
        return;
    }
    let dirs = Dirs::new();
    let mut s = BashSession::new(sb, spec(&dirs, "cpu"));
    assert_eq!(run(&mut s, "echo up").await, ok("up"));
    let shell = *s.sandbox_processes().first().expect("the shell runs");
    let cpu_dir = cgroup_dir(shell, "cpu").expect("the shell's cpu cgroup");
    assert!(
        cpu_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("wasm-sandbox-{}-cpu-", std::process::id())),
        "the shell is in its session's cgroup, not {}",
        cpu_dir.display()
    );
    let before = s.usage().cpu.expect("cpu measured");
    let start = Instant::now();
    let out = run(
        &mut s,
        "for i in 1 2; do timeout 3 sh -c 'while :; do :; done' & done; wait; echo done",
    )
    .await;
    let wall = start.elapsed();
    assert_eq!(out, ok("done"));
    let used = s.usage().cpu.expect("cpu measured") - before;
    let ratio = used.as_secs_f64() / wall.as_secs_f64();
    eprintln!("vcpus=0.5: {used:?} CPU in {wall:?} wall (ratio {ratio:.3})");
    // The upper bound is the quota (plus scheduling slack); the lower bound is looser
    // because a loaded 2-core CI machine may not give the loops their whole share.
    assert!(
        (0.25..=0.6).contains(&ratio),
        "CPU {used:?} over {wall:?} wall is not ~0.5 vCPU (ratio {ratio:.3})"
    );
    // The quota did the holding: the kernel throttled the session's cgroup.
    let throttled = stat(&cpu_dir.join("cpu.stat"), "nr_throttled").expect("cpu.stat");
    assert!(throttled > 0, "nr_throttled = 0 in {}", cpu_dir.display());
    // close() keeps the last reading (the cgroup is gone afterwards).
    s.close().await;
    let after_close = s.usage().cpu.expect("kept after close");
    assert!(
        after_close >= before + used,
        "{after_close:?} < {:?}",
        before + used
    );
}

/// A process allocating past the shape's memory is killed by the cgroup; the shell,
/// the session and this process live on, and the peak is recorded.
#[tokio::test]
async fn memory_hog_is_killed_inside_the_session() {
    let shape = ShapeConfig {
        memory_bytes: Some(96 << 20),
        ..ShapeConfig::default()
    };
    // bash's own cap (unset by default) adds nothing: the shape's 96 MiB applies.
    let sb = sandbox(&shape, |_| {});
    if !cgroup(sb.report().memory_limit) {
        eprintln!(
            "SKIP: no cgroup memory controller here ({:?})",
            sb.report().memory_limit
        );
        return;
    }
    assert_eq!(
        sb.report().shape.limits[1].value.as_deref(),
        Some("96MiB"),
        "{:?}",
        sb.report().shape
    );
    let dirs = Dirs::new();
    let mut s = BashSession::new(sb, spec(&dirs, "mem"));
    let out = run(
        &mut s,
        "python3 -c 'b = bytearray(300 << 20); b[::4096] = b\"x\" * len(b[::4096]); print(\"sur\" + \"vived\")'",
    )
    .await;
    assert!(out.is_error, "{out:?}");
    assert!(!out.text.contains("survived"), "{out:?}");
    assert!(out.text.contains("Killed"), "{out:?}");
    assert_eq!(run(&mut s, "echo alive").await, ok("alive"));
    let peak = s.usage().memory_peak_bytes.expect("memory measured");
    assert!(peak <= (96 << 20) + (1 << 20), "peak {peak} over the cap");
    assert!(
        peak >= 64 << 20,
        "peak {peak}: the hog never got near the cap"
    );
    s.close().await;
}

/// A fork bomb stops at the shape's `pids` (smaller than bash's `pids_limit`).
#[tokio::test]
async fn fork_bomb_stops_at_the_shape_pids() {
    let shape = ShapeConfig {
        pids: Some(40),
        ..ShapeConfig::default()
    };
    let sb = sandbox(&shape, |_| {});
    if !cgroup(sb.report().pids_limit) {
        eprintln!(
            "SKIP: no cgroup pids controller here ({:?})",
            sb.report().pids_limit
        );
        return;
    }
    let dirs = Dirs::new();
    let mut s = BashSession::new(sb, spec(&dirs, "pids"));
    assert_eq!(run(&mut s, "echo up").await, ok("up"));
    let shell = *s.sandbox_processes().first().expect("the shell runs");
    let pids_dir = cgroup_dir(shell, "pids").expect("the shell's pids cgroup");
    let _ = s
        .call(&json!({"command": ":(){ :|:& };:", "timeout_ms": 2000}))
        .await;
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(s.sandbox_processes().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(most <= 40 + 2, "{most} processes past pids = 40");
    // And the bomb really reached the cap: many processes seen at once, or forks
    // refused by the cgroup (`pids.events max`).
    let refused = stat(&pids_dir.join("pids.events"), "max").unwrap_or(0);
    assert!(
        most >= 30 || refused > 0,
        "the bomb never reached the cap: {most} processes, {refused} forks refused"
    );
    s.close().await;
    assert!(s.sandbox_processes().is_empty());
}

/// `enforce = "required"` on a host without the controllers (here: cgroups turned off
/// for this sandbox) fails the check with a message naming each missing limit;
/// best effort passes and reports the same gaps.
#[test]
fn required_refuses_a_host_without_controllers() {
    let shape = ShapeConfig {
        enforce: Enforce::Required,
        ..ShapeConfig::default()
    };
    let sb = sandbox(&shape, |c| c.use_cgroups = false);
    let report = &sb.report().shape;
    let err = report.check().expect_err("required must refuse");
    assert!(err.contains("enforce = \"required\""), "{err}");
    assert!(err.contains("cpu limit 4 vCPU is not enforced"), "{err}");
    // bash.memory_limit unset: the shape's 4 GiB is the planned (and reported) cap.
    assert!(err.contains("memory limit 4GiB"), "{err}");
    assert_eq!(sb.report().cpu_limit, LimitMechanism::None);
    let best = ShapeConfig::default();
    let sb = sandbox(&best, |c| c.use_cgroups = false);
    assert!(sb.report().shape.check().is_ok());
    assert!(!sb.report().shape.missing().is_empty());
    // Where the controllers exist, the same required shape passes.
    let sb = sandbox(&shape, |_| {});
    let r = sb.report();
    if [r.cpu_limit, r.memory_limit, r.pids_limit]
        .into_iter()
        .all(cgroup)
    {
        assert_eq!(r.shape.check(), Ok(()), "{:?}", r.shape);
    } else {
        eprintln!("SKIP (second half): not every controller is available here");
    }
}
