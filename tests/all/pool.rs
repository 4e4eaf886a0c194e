//! Bash sandboxes started ahead of demand (`[runtime.pool]`).

use crate::common::bash;
use serde_json::json;
use std::time::{Duration, Instant};
use wasm_sandbox_runtime::{
    Access, MemoryMountPath, Mount, PoolConfig, Runtime, SessionSpec, ToolCall,
};

fn wait_for_pool(rt: &Runtime, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.pooled_sandboxes() < n {
        assert!(Instant::now() < deadline, "the pool did not fill");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn pooled_sandboxes_serve_new_sessions_fresh_and_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = crate::common::config();
    config.pool = PoolConfig {
        sandboxes: Some(1),
        dir: Some(dir.path().join("pool")),
    };
    let _enter = tokio.enter();
    let rt = Runtime::new(config).expect("runtime");
    wait_for_pool(&rt, 1);

    // A new session takes the started sandbox: its shell runs before any call.
    let a = rt
        .session(SessionSpec::new("a", dir.path().join("sessions/a")))
        .unwrap();
    assert!(
        !tokio.block_on(a.bash_processes()).is_empty(),
        "the session adopted a running sandbox"
    );
    let (out, err) = bash(
        &tokio,
        &a,
        "pwd; echo hi > /workspace/x; ls -A /workspace /mnt/session/outputs",
    );
    assert!(!err, "{out}");
    assert_eq!(out, "/workspace\n/mnt/session/outputs:\n\n/workspace:\nx");
    // The sandbox's mounts followed the rename to the session's directories.
    assert_eq!(
        std::fs::read_to_string(a.workspace_dir().join("x")).unwrap(),
        "hi\n"
    );
    assert!(a.workspace_dir().starts_with(dir.path().join("sessions/a")));
    // `restart` starts a new sandbox on the session's own paths.
    bash(&tokio, &a, "exit 3");
    assert!(bash(&tokio, &a, "true").0.contains("restart required"));
    let call = ToolCall::new("t", "bash", json!({"restart": true}));
    assert!(!tokio.block_on(a.call_tool(&call)).unwrap().is_error);
    assert_eq!(bash(&tokio, &a, "cat /workspace/x").0, "hi");
    // Components from bash work in an adopted sandbox (its bridge came with it).
    std::fs::write(
        a.workspace_dir().join("wc.wasm"),
        crate::wasm_run::wordcount(),
    )
    .unwrap();
    assert_eq!(bash(&tokio, &a, "wasm-run wc.wasm x").0, "1 1 3 x");

    // The pool refills; the next session gets a different, fresh sandbox.
    wait_for_pool(&rt, 1);
    let b = rt
        .session(SessionSpec::new("b", dir.path().join("sessions/b")))
        .unwrap();
    assert!(!tokio.block_on(b.bash_processes()).is_empty());
    let (out, _) = bash(
        &tokio,
        &b,
        "ls -A /workspace; cat /workspace/x; ls /tmp | wc -l",
    );
    assert!(out.contains("No such file"), "{out}");
    assert!(out.ends_with('0'), "{out}");

    // A session the pool cannot serve (memory stores) starts its own sandbox.
    wait_for_pool(&rt, 1);
    std::fs::create_dir_all(dir.path().join("store")).unwrap();
    let mut spec = SessionSpec::new("c", dir.path().join("sessions/c"));
    spec.memory_stores = vec![Mount::memory_store(
        MemoryMountPath::parse("/mnt/memory/s").unwrap(),
        dir.path().join("store"),
        Access::ReadOnly,
    )];
    let c = rt.session(spec).unwrap();
    assert!(
        tokio.block_on(c.bash_processes()).is_empty(),
        "lazy, not pooled"
    );
    assert_eq!(rt.pooled_sandboxes(), 1);
    assert_eq!(bash(&tokio, &c, "ls /mnt/memory").0, "s");

    for s in [a, b, c] {
        tokio.block_on(s.close());
    }
}
