//! The session shape end to end through the core runtime (`[runtime.shape]`): the disk
//! cap holds for bash and the `write` tool with the host disk untouched, the inode cap,
//! the session is usable again after deleting, resource usage survives `close`, and
//! `enforce = "required"` refuses a host without the controllers.
//!
//! The disk tests need root (or CAP_SYS_ADMIN), loop devices and mkfs.ext4; they skip
//! with a printed reason where the probe at start-up found the cap unavailable.

use crate::common::bash;
use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use wasm_sandbox_native::{Enforce, LimitMechanism};
use wasm_sandbox_runtime::{Runtime, SessionSpec, ToolCall};

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn mounted(path: &std::path::Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

/// A fixed amount of work in the shell itself, then bash's `times` (user and system
/// time of the shell, then of its children).
const BUSY: &str = "i=0; while [ $i -lt 60000 ]; do i=$((i+1)); done; times";

/// The CPU time bash's `times` reports (shell and children, user and system).
fn shell_times(out: &str) -> Duration {
    out.split_whitespace()
        .filter_map(|t| {
            let (m, s) = t.strip_suffix('s')?.split_once('m')?;
            Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
        })
        .map(Duration::from_secs_f64)
        .sum()
}

fn write_tool(
    tokio: &tokio::runtime::Runtime,
    s: &wasm_sandbox_runtime::Session,
    path: &str,
    content: &str,
) -> (String, bool) {
    let call = ToolCall::new(
        "toolu_w",
        "write",
        json!({"file_path": path, "content": content}),
    );
    let r = tokio.block_on(s.call_tool(&call)).expect("write is ours");
    (r.text_content(), r.is_error)
}

#[test]
fn disk_cap_holds_for_bash_and_write_and_spares_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio();
    let _enter = tokio.enter();
    let mut config = crate::common::config();
    config.shape.disk_bytes = Some(16 << 20);
    config.shape.disk_inodes = Some(256);
    let rt = Runtime::new(config).expect("runtime");
    let report = rt.sandbox_report();
    if report.disk_limit != LimitMechanism::Filesystem {
        eprintln!(
            "SKIP: no per-session capped filesystem here: {}",
            report.shape.disk_problem.as_deref().unwrap_or("?")
        );
        return;
    }
    let root = dir.path().join("sessions/a");
    let s = rt.session(SessionSpec::new("a", &root)).unwrap();
    assert!(mounted(&root.join("workspace")) && mounted(&root.join("outputs")));

    // bash: writing past 16 MiB fails with ENOSPC.
    let (out, err) = bash(
        &tokio,
        &s,
        "dd if=/dev/zero of=/workspace/big bs=1M count=64 2>&1",
    );
    assert!(err, "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    // The host holds at most the cap for it (the image is sparse).
    let image = std::fs::metadata(root.join(".disk.img")).unwrap();
    assert!(
        image.blocks() * 512 <= (16 << 20) + (1 << 20),
        "image uses {} bytes on the host",
        image.blocks() * 512
    );
    // Outputs share the one cap: full from the workspace's writes.
    let (out, err) = bash(
        &tokio,
        &s,
        "dd if=/dev/zero of=/mnt/session/outputs/o bs=1M count=4 2>&1",
    );
    assert!(err && out.contains("No space left on device"), "{out}");
    // The write tool: a clear error.
    let (out, err) = write_tool(&tokio, &s, "/workspace/w.txt", &"y".repeat(2 << 20));
    eprintln!("write past the cap: {out}");
    assert!(err, "{out}");
    assert!(
        out.to_ascii_lowercase().contains("no space left on device"),
        "{out}"
    );
    // Deleting makes room again.
    let (out, err) = bash(
        &tokio,
        &s,
        "rm -f /workspace/big /mnt/session/outputs/o; echo ok > /workspace/after; cat /workspace/after",
    );
    assert!(!err, "{out}");
    assert_eq!(out, "ok");
    let (out, err) = write_tool(&tokio, &s, "/workspace/w.txt", "hello");
    assert!(!err, "{out}");
    assert_eq!(
        std::fs::read_to_string(root.join("workspace/w.txt")).unwrap(),
        "hello"
    );
    // The inode cap: 256 inodes, so 400 empty files do not fit.
    let (out, err) = bash(
        &tokio,
        &s,
        "n=0; for i in $(seq 1 400); do : > /workspace/f$i 2>/dev/null || break; n=$i; done; echo $n; : > /workspace/g 2>&1",
    );
    assert!(err, "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    let made: u32 = out
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {out:?}"));
    assert!(
        (200..400).contains(&made),
        "{made} files under a 256-inode cap"
    );
    let (out, err) = bash(
        &tokio,
        &s,
        "rm -f /workspace/f*; : > /workspace/g && echo ok",
    );
    assert!(!err && out == "ok", "{out}");
    // The peak disk use is recorded.
    let usage = s.resource_usage().expect("usage");
    assert!(usage.disk_peak_bytes.unwrap() >= 15 << 20, "{usage:?}");
    tokio.block_on(s.close());
    drop(s);
    // Gone: the mounts and the image.
    assert!(!mounted(&root.join("workspace")) && !mounted(&root.join(".disk")));
    assert!(!root.join(".disk.img").exists());
}

/// The bash sandbox's CPU time and peak memory are measured, and kept after `close`.
#[test]
fn resource_usage_counts_bash_cpu_and_survives_close() {
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio();
    let _enter = tokio.enter();
    let rt = Runtime::new(crate::common::config()).expect("runtime");
    if !rt.sandbox_report().shape.cpu_accounting {
        eprintln!("SKIP: no cgroup CPU accounting here");
        return;
    }
    let s = rt
        .session(SessionSpec::new("u", dir.path().join("u")))
        .unwrap();
    let (out, err) = bash(&tokio, &s, BUSY);
    assert!(!err, "{out}");
    let own = shell_times(&out);
    let usage = s.resource_usage().expect("measured");
    let cpu = usage.cpu.unwrap();
    // The cgroup counts at least what bash itself reports (`times`), and not much more
    // (the shell's start-up and the wrapper commands).
    assert!(
        cpu + Duration::from_millis(20) >= own && cpu <= own + Duration::from_millis(500),
        "cgroup {cpu:?} vs bash's own {own:?}"
    );
    assert!(own >= Duration::from_millis(50), "{out}");
    assert!(usage.memory_peak_bytes.unwrap() > 0, "{usage:?}");
    tokio.block_on(s.close());
    let after = s.resource_usage().expect("kept after close");
    assert!(after.cpu.unwrap() >= cpu, "{after:?} < {usage:?}");
}

/// `enforce = "required"` with the controllers unavailable (cgroups turned off for the
/// sandbox): the runtime refuses to start, naming what is missing.
#[test]
fn required_shape_refuses_a_host_without_controllers() {
    let mut config = crate::common::config();
    config.bash.use_cgroups = false;
    config.shape.enforce = Enforce::Required;
    let err = Runtime::new(config).expect_err("must refuse").to_string();
    assert!(err.contains("enforce = \"required\""), "{err}");
    assert!(err.contains("cpu limit 4 vCPU is not enforced"), "{err}");
    assert!(err.contains("memory limit"), "{err}");
}

/// Every process of a session's sandbox is in its cgroups, pooled sandboxes included
/// (bubblewrap joins them between `fork` and `exec`), and a pooled session's CPU counts.
#[test]
fn pooled_sandboxes_run_inside_the_session_cgroups() {
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio();
    let _enter = tokio.enter();
    let mut config = crate::common::config();
    config.pool = wasm_sandbox_runtime::PoolConfig {
        sandboxes: Some(1),
        dir: Some(dir.path().join("pool")),
    };
    let rt = Runtime::new(config).expect("runtime");
    let report = rt.sandbox_report();
    if !matches!(
        report.cpu_limit,
        LimitMechanism::CgroupV1 | LimitMechanism::CgroupV2
    ) {
        eprintln!(
            "SKIP: no cgroup cpu controller here ({:?})",
            report.cpu_limit
        );
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rt.pooled_sandboxes() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool did not fill"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = rt
        .session(SessionSpec::new("p", dir.path().join("sessions/p")))
        .unwrap();
    let pids = tokio.block_on(s.bash_processes());
    assert!(!pids.is_empty(), "the session adopted a running sandbox");
    // A session cgroup is `wasm-sandbox-<our pid>-<sandbox id>-<8 hex>` (a pooled one is
    // named after its pool slot): matched exactly, so the worker's own v2 leaf
    // `wasm-sandbox-worker` cannot pass for it, and every process of the sandbox must
    // be in one and the same cgroup.
    let prefix = format!("wasm-sandbox-{}-", std::process::id());
    let is_session_cgroup = |leaf: &str| {
        leaf.starts_with(&prefix)
            && leaf.rsplit_once('-').is_some_and(|(_, tail)| {
                tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_hexdigit())
            })
    };
    let mut seen = std::collections::BTreeSet::new();
    for pid in &pids {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        // On a v2 host every controller is on the one `0::` line.
        let unified = cgroups.lines().find(|l| l.starts_with("0::"));
        for controller in ["cpu", "memory", "pids"] {
            let line = cgroups
                .lines()
                .find(|l| {
                    l.split(':')
                        .nth(1)
                        .is_some_and(|c| c.split(',').any(|c| c == controller))
                })
                .or(unified)
                .unwrap_or_else(|| panic!("no {controller} line for {pid}: {cgroups}"));
            let leaf = line.rsplit('/').next().unwrap_or("");
            assert!(
                is_session_cgroup(leaf),
                "pid {pid} outside the session's {controller} cgroup: {line}"
            );
            seen.insert(leaf.to_owned());
        }
    }
    assert_eq!(seen.len(), 1, "the sandbox spans several cgroups: {seen:?}");
    let (out, err) = bash(&tokio, &s, BUSY);
    assert!(!err, "{out}");
    let own = shell_times(&out);
    let cpu = s
        .resource_usage()
        .and_then(|u| u.cpu)
        .expect("cpu measured");
    assert!(
        cpu + Duration::from_millis(20) >= own,
        "cgroup {cpu:?} < bash's own {own:?}"
    );
    assert!(own >= Duration::from_millis(50), "{out}");
    tokio.block_on(s.close());
}

/// A writable memory store the worker downloaded below the session root before the
/// session existed is moved onto the disk cap: its files are there, writing past `disk`
/// through it fails with ENOSPC, and the host keeps at most the cap for the session.
/// A read-only store stays where it is.
#[test]
fn writable_memory_store_is_on_the_disk_cap() {
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio();
    let _enter = tokio.enter();
    let mut config = crate::common::config();
    config.shape.disk_bytes = Some(16 << 20);
    let rt = Runtime::new(config).expect("runtime");
    if rt.sandbox_report().disk_limit != LimitMechanism::Filesystem {
        eprintln!("SKIP: no per-session capped filesystem here");
        return;
    }
    let root = dir.path().join("sessions/m");
    let (rw, ro) = (
        root.join("memory/memstore_rw"),
        root.join("memory/memstore_ro"),
    );
    for d in [&rw, &ro] {
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/note.md"), "downloaded").unwrap();
    }
    let mut spec = SessionSpec::new("m", &root);
    spec.memory_stores = vec![
        wasm_sandbox_runtime::Mount::memory_store(
            wasm_sandbox_runtime::MemoryMountPath::parse("/mnt/memory/rw").unwrap(),
            rw.clone(),
            wasm_sandbox_runtime::Access::ReadWrite,
        ),
        wasm_sandbox_runtime::Mount::memory_store(
            wasm_sandbox_runtime::MemoryMountPath::parse("/mnt/memory/ro").unwrap(),
            ro.clone(),
            wasm_sandbox_runtime::Access::ReadOnly,
        ),
    ];
    let s = rt.session(spec).unwrap();
    assert!(mounted(&rw), "the writable store is bound from the cap");
    assert!(!mounted(&ro), "a read-only store is left where it is");
    let (out, err) = bash(&tokio, &s, "cat /mnt/memory/rw/sub/note.md");
    assert!(!err && out == "downloaded", "{out}");
    let (out, err) = bash(
        &tokio,
        &s,
        "dd if=/dev/zero of=/mnt/memory/rw/big bs=1M count=64 2>&1",
    );
    assert!(err, "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    let written = std::fs::metadata(rw.join("big")).unwrap().len();
    assert!(written < 16 << 20, "{written} bytes past a 16 MiB cap");
    let image = std::fs::metadata(root.join(".disk.img")).unwrap();
    assert!(
        image.blocks() * 512 >= written && image.blocks() * 512 <= (16 << 20) + (1 << 20),
        "the store's bytes are in the image: {} on the host for {written} written",
        image.blocks() * 512
    );
    // The workspace shares the one cap, now full.
    let (out, err) = bash(
        &tokio,
        &s,
        "dd if=/dev/zero of=/workspace/w bs=1M count=2 2>&1",
    );
    assert!(err && out.contains("No space left on device"), "{out}");
    tokio.block_on(s.close());
    drop(s);
    assert!(!mounted(&rw) && !root.join(".disk.img").exists());
    // The host directory under the bind was never written by the session.
    assert!(!rw.join("big").exists());
    assert_eq!(
        std::fs::read_to_string(rw.join("sub/note.md")).unwrap(),
        "downloaded"
    );
}

/// `replay`-style sessions with their own workspace/outputs cannot be capped: under
/// `enforce = "required"` with `disk` set they are refused, never run uncapped.
#[test]
fn required_disk_refuses_custom_directories() {
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio();
    let _enter = tokio.enter();
    let mut config = crate::common::config();
    config.shape.disk_bytes = Some(16 << 20);
    config.shape.enforce = Enforce::Required;
    let rt = match Runtime::new(config) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("SKIP: this host cannot enforce the shape: {e}");
            return;
        }
    };
    let mut spec = SessionSpec::new("r", dir.path().join("r"));
    spec.workspace = Some(dir.path().join("ws"));
    let err = rt.session(spec).expect_err("must refuse").to_string();
    assert!(err.contains("disk cap cannot cover"), "{err}");
    assert!(!dir.path().join("ws").exists() || !mounted(&dir.path().join("ws")));
}
