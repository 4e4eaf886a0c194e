//! A worker that is not root: bubblewrap runs unprivileged (user namespaces), cgroups
//! are not writable, so memory and pids limits fall back to rlimits. The parent test
//! (run as root, as in CI) re-executes this binary as uid/gid 65534 via `setpriv`.

mod common;

use std::os::unix::fs::{PermissionsExt, chown};
use std::process::Command;
use std::sync::Arc;

use common::*;
use wasm_sandbox_native::{BashConfig, BashSandbox, BashSession, LimitMechanism};

const NOBODY: u32 = 65534;

#[test]
fn sandbox_works_for_a_non_root_worker() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test drives setpriv and must start as root"
    );
    let dirs = Dirs::new();
    std::fs::set_permissions(dirs.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["workspace", "outputs", "store-ro", "store-rw"] {
        chown(dirs.path(d), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_as_nobody",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WSN_NONROOT_ROOT", dirs.root.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("NONROOT CHECKS PASSED"), "{text}");
}

#[tokio::test]
#[ignore = "run by sandbox_works_for_a_non_root_worker as uid 65534"]
async fn child_as_nobody() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, NOBODY);
    let root = std::path::PathBuf::from(std::env::var_os("WSN_NONROOT_ROOT").unwrap());
    let sandbox = Arc::new(BashSandbox::new(BashConfig {
        memory_limit_bytes: Some(256 << 20),
        pids_limit: Some(32),
        ..BashConfig::default()
    }));
    let report = sandbox.report();
    eprintln!("NONROOT REPORT {}", serde_json::to_string(report).unwrap());
    assert!(report.available, "{:?}", report.unavailable_reason);
    assert_eq!(report.memory_limit, LimitMechanism::Rlimit);
    assert_eq!(report.pids_limit, LimitMechanism::Rlimit);
    assert_eq!(report.landlock.as_deref(), Some("full"));
    let spec = wasm_sandbox_native::BashSessionSpec {
        session_id: "nobody".into(),
        mounts: wasm_sandbox_fs::mounts::MountSet::session(
            root.join("workspace"),
            root.join("outputs"),
            [],
        )
        .unwrap(),
        env: None,
        wasm_run_socket: None,
        egress_dir: None,
    };
    let mut s = BashSession::new(sandbox, spec);
    assert_eq!(run(&mut s, "id -u; echo hi > f; cat f").await, ok("0\nhi"));
    let out = run(&mut s, "cat /etc/shadow").await;
    assert!(out.is_error && out.text.contains("No such file"), "{out:?}");
    let out = run(&mut s, "touch /usr/x").await;
    assert!(out.is_error && out.text.contains("Read-only"), "{out:?}");
    // RLIMIT_AS stands in for the memory cgroup.
    let out = run(&mut s, "dd if=/dev/zero of=/dev/null bs=400M count=1").await;
    assert!(
        out.is_error && out.text.contains("memory exhausted"),
        "{out:?}"
    );
    // RLIMIT_NPROC (counted per user namespace) stands in for the pids cgroup.
    let out = run(
        &mut s,
        "python3 -c \"
import os, time
n = 0
try:
    for i in range(200):
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        n += 1
except OSError as e:
    print('limited', n < 32, e.errno)
\"",
    )
    .await;
    assert_eq!(out, ok("limited True 11"));
    let inside = s.sandbox_processes();
    s.close().await;
    for p in inside {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists(),
            "{p} survived"
        );
    }
    eprintln!("NONROOT CHECKS PASSED");
}
