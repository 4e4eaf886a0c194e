//! Resource caps hold, and teardown leaves no process behind.

use super::*;

#[tokio::test]
async fn disk_and_memory_caps_hold() {
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    // E56: /tmp is a private 8 MiB tmpfs.
    blocked(
        &mut s,
        "E56 tmp cap",
        "head -c 20M /dev/zero > /tmp/big",
        &["No space left on device"],
    )
    .await;
    let size: u64 = run(&mut s, "stat -c %s /tmp/big")
        .await
        .text
        .parse()
        .unwrap();
    assert!(size <= 8 << 20, "E56: {size}");
    // E57: /dev/shm is capped too.
    blocked(
        &mut s,
        "E57 shm cap",
        "head -c 20M /dev/zero > /dev/shm/big",
        &["No space left on device"],
    )
    .await;
    // E58: RLIMIT_FSIZE caps any single file, in the workspace too.
    blocked(
        &mut s,
        "E58 file size",
        "head -c 20M /dev/zero > big.bin",
        &["File size limit exceeded"],
    )
    .await;
    let len = std::fs::metadata(dirs.workspace().join("big.bin"))
        .unwrap()
        .len();
    assert!(len <= 16 << 20, "E58: {len}");
    // E59: memory past the cap is refused (cgroup OOM kill, or RLIMIT_AS).
    let out = run(&mut s, "dd if=/dev/zero of=/dev/null bs=400M count=1").await;
    let mechanism = s.sandbox().report().memory_limit;
    match mechanism {
        LimitMechanism::CgroupV1 | LimitMechanism::CgroupV2 => {
            assert_blocked("E59 memory", &out, &["Killed"])
        }
        LimitMechanism::Rlimit => {
            assert_blocked("E59 memory", &out, &["memory exhausted", "Cannot allocate"])
        }
        LimitMechanism::None | LimitMechanism::Filesystem => panic!("no memory limit active"),
    }
    // The session survives (only dd was killed).
    assert_eq!(run(&mut s, "echo alive").await, ok("alive"));
    s.close().await;
}

#[tokio::test]
async fn fork_bomb_is_contained_and_restart_recovers() {
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    assert_eq!(s.sandbox().report().pids_limit, LimitMechanism::CgroupV1);
    // E60: the bomb runs into pids.max instead of the host's process table.
    let _ = call(
        &mut s,
        json!({"command": ":(){ :|:& };:", "timeout_ms": 3000}),
    )
    .await;
    // Give it a moment to saturate, then look from the host.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inside = s.sandbox_processes();
    assert!(!inside.is_empty());
    assert!(inside.len() <= 128 + 2, "E60: {} processes", inside.len());
    // The host can still start processes.
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
    // Restart tears everything down and gives a working shell.
    assert_eq!(
        call(&mut s, json!({"restart": true})).await,
        ok("bash session restarted")
    );
    for pid in &inside {
        assert!(!alive(*pid), "E60: bomb process {pid} survived the restart");
    }
    assert_eq!(run(&mut s, "echo recovered").await, ok("recovered"));
    s.close().await;
}

#[tokio::test]
async fn teardown_leaves_no_process() {
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    // Background jobs, a setsid daemon, a double fork, a nohup: all must die.
    let out = run(
        &mut s,
        "sleep 1000 & (setsid sleep 1001 &) ; ( ( sleep 1002 & ) & ) ; nohup sleep 1003 >/dev/null 2>&1 & echo started",
    )
    .await;
    assert_eq!(out, ok("started"));
    // Wait until the four sleeps have been executed (forks may still be pending).
    let mut sleeps = Vec::new();
    for _ in 0..500 {
        sleeps = s
            .sandbox_processes()
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.starts_with("sleep\x00100"))
            })
            .collect();
        if sleeps.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sleeps.len(), 4, "{sleeps:?}");
    let inside = s.sandbox_processes();
    s.close().await;
    for pid in &inside {
        assert!(!alive(*pid), "process {pid} outlived close()");
    }
    assert!(s.sandbox_processes().is_empty());
    // And after a timeout, too.
    let out = call(
        &mut s,
        json!({"command": "sleep 999 & sleep 999", "timeout_ms": 300}),
    )
    .await;
    assert_eq!(out, err("bash: bash command timed out after 0.3s"));
}
