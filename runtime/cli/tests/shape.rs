//! The session shape as a real `wasm-sandbox serve` process: `enforce = "required"` on a host
//! that cannot enforce it refuses to start, naming what is missing; best effort starts and
//! reports the active limits in `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};

use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane, Handle};

mod common;
use common::{free_addr, get, wait_for};

fn serve(fake: &Handle, workdir: &Path, ops: SocketAddr, config: &Path) -> Child {
    common::serve_command(fake, workdir)
        .arg("--ops-listen")
        .arg(ops.to_string())
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasm-sandbox serve")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_shape_refuses_to_serve_and_best_effort_reports_it() {
    let fake = FakeControlPlane::start(FakeConfig::default())
        .await
        .expect("fake");
    let dir = tempfile::tempdir().unwrap();
    // No cgroups for the sandbox: nothing can enforce cpu, memory or pids.
    let required = dir.path().join("required.toml");
    std::fs::write(
        &required,
        "[runtime.bash]\nuse_cgroups = false\n[runtime.shape]\nvcpus = 2\nenforce = \"required\"\n",
    )
    .unwrap();
    let child = serve(&fake, &dir.path().join("w1"), free_addr(), &required);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started: {stderr}");
    assert!(
        stderr.contains("enforce = \\\"required\\\"") || stderr.contains("enforce = \"required\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("cpu limit 2 vCPU is not enforced"),
        "{stderr}"
    );
    assert!(
        stderr.contains("writable cgroup `cpu` controller"),
        "{stderr}"
    );
    // The message points at the set-up a pod needs.
    assert!(
        stderr.contains("deploy/README.md") && stderr.contains("Sandbox shape"),
        "{stderr}"
    );

    // Best effort: serves, and says which limits hold.
    let best = dir.path().join("best.toml");
    std::fs::write(
        &best,
        "[runtime.bash]\nuse_cgroups = false\n[runtime.shape]\nvcpus = 2\n",
    )
    .unwrap();
    let ops = free_addr();
    let child = serve(&fake, &dir.path().join("w2"), ops, &best);
    let (readyz, metrics) = tokio::task::spawn_blocking(move || {
        let r = wait_for("/readyz", || get(ops, "/readyz"));
        let m = wait_for("/metrics", || get(ops, "/metrics"));
        (r, m)
    })
    .await
    .unwrap();
    assert!(
        readyz
            .1
            .contains("shape (best-effort): cpu=none (2 vCPU) memory=rlimit (4GiB)"),
        "{readyz:?}"
    );
    assert!(
        metrics
            .1
            .contains("wasm_sandbox_shape_limit_active{limit=\"cpu\",mechanism=\"none\"} 0"),
        "{}",
        metrics.1
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
