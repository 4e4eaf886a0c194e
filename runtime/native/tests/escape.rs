//! The escape suite: every attempt below must be blocked, and each assertion checks
//! the specific failure (so a typo or a missing tool cannot pass as "blocked").
//! Numbered cases: E1..E40.

mod common;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;
use wasm_sandbox_native::{BashOutput, BashSession, LimitMechanism};

/// Asserts the command failed and its output mentions one of `reasons`.
#[track_caller]
fn assert_blocked(case: &str, out: &BashOutput, reasons: &[&str]) {
    assert!(out.is_error, "{case}: expected failure, got {out:?}");
    assert!(
        reasons.iter().any(|r| out.text.contains(r)),
        "{case}: expected one of {reasons:?}, got {:?}",
        out.text
    );
}

async fn blocked(s: &mut BashSession, case: &str, cmd: &str, reasons: &[&str]) {
    let out = run(s, cmd).await;
    assert_blocked(case, &out, reasons);
}

const NO_FILE: &str = "No such file or directory";
const RO_FS: &str = "Read-only file system";
const EPERM: &str = "Operation not permitted";
const EACCES: &str = "Permission denied";

#[tokio::test]
async fn host_files_are_invisible() {
    let dirs = Dirs::new();
    let secret = dirs.path("private/secret.txt");
    std::fs::write(&secret, "worker secret").unwrap();
    let other = Dirs::new();
    std::fs::write(other.workspace().join("theirs.txt"), "other session").unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut s = session(&dirs);

    // E1: /etc/shadow (exists on the host, never bound).
    assert!(Path::new("/etc/shadow").exists());
    blocked(&mut s, "E1 shadow", "cat /etc/shadow", &[NO_FILE]).await;
    // E2: TLS private keys directory.
    blocked(&mut s, "E2 ssl private", "ls /etc/ssl/private", &[NO_FILE]).await;
    // E3: the worker's own files next to the session dirs (by host path).
    blocked(
        &mut s,
        "E3 worker file",
        &format!("cat {}", secret.display()),
        &[NO_FILE],
    )
    .await;
    // E4: another session's workspace (by host path).
    let theirs = other.workspace().join("theirs.txt");
    blocked(
        &mut s,
        "E4 other session",
        &format!("cat {}", theirs.display()),
        &[NO_FILE],
    )
    .await;
    // E5: the worker binary.
    blocked(
        &mut s,
        "E5 worker binary",
        &format!("ls {}", exe.display()),
        &[NO_FILE],
    )
    .await;
    // E6: root's home and the project tree.
    blocked(
        &mut s,
        "E6 host dirs",
        "ls /root /work /home /var",
        &[NO_FILE],
    )
    .await;
    // E7: the host root via pid 1's root link stays the sandbox root.
    // (pid 1 is bubblewrap's reaper, outside bash's Landlock domain: even its root
    // link is refused.)
    blocked(
        &mut s,
        "E7 proc root",
        "ls /proc/1/root/work /proc/1/cwd/../work",
        &[NO_FILE, EACCES],
    )
    .await;
    // E8: no sysfs (host devices, cgroups).
    blocked(&mut s, "E8 sysfs", "ls /sys/fs/cgroup", &[NO_FILE]).await;
    // E9: only the minimal /dev.
    blocked(
        &mut s,
        "E9 devices",
        "ls /dev/sda /dev/mem /dev/kmsg /dev/vda",
        &[NO_FILE],
    )
    .await;
    // E10: a symlink planted in the workspace resolves inside the sandbox.
    blocked(
        &mut s,
        "E10 symlink",
        &format!("ln -s / rootlink && cat rootlink{}", secret.display()),
        &[NO_FILE],
    )
    .await;
    // E11: hard links across mounts.
    blocked(
        &mut s,
        "E11 hardlink",
        "ln /etc/passwd ./pw",
        &["Invalid cross-device link", EPERM],
    )
    .await;
    s.close().await;
}

#[tokio::test]
async fn writes_outside_the_mounts_fail() {
    let dirs = Dirs::new();
    std::fs::write(dirs.path("store-ro/keep.txt"), "original").unwrap();
    let mut s = session(&dirs);
    // E12..E15: system dirs and the root are read-only.
    blocked(&mut s, "E12 usr", "touch /usr/evil", &[RO_FS, EACCES]).await;
    blocked(&mut s, "E13 etc", "echo x > /etc/passwd", &[RO_FS, EACCES]).await;
    blocked(&mut s, "E14 root", "mkdir /evil", &[RO_FS, EACCES]).await;
    blocked(
        &mut s,
        "E15 bin",
        "cp /bin/true /bin/evil",
        &[RO_FS, EACCES],
    )
    .await;
    // E16, E17: a read-only memory store stays read-only (unlike the reference).
    blocked(
        &mut s,
        "E16 ro store new",
        "echo x > /mnt/memory/ro/new.txt",
        &[RO_FS, EACCES],
    )
    .await;
    blocked(
        &mut s,
        "E17 ro store edit",
        "echo x >> /mnt/memory/ro/keep.txt",
        &[RO_FS, EACCES],
    )
    .await;
    assert!(!dirs.path("store-ro/new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(dirs.path("store-ro/keep.txt")).unwrap(),
        "original"
    );
    assert_eq!(
        run(&mut s, "cat /mnt/memory/ro/keep.txt").await,
        ok("original")
    );
    // E18: /proc/sys is read-only.
    blocked(
        &mut s,
        "E18 proc sys",
        "echo evil > /proc/sys/kernel/hostname",
        &[RO_FS, EACCES],
    )
    .await;
    // E19: no device nodes can be made.
    blocked(&mut s, "E19 mknod", "mknod /tmp/sda b 8 0", &[EPERM]).await;
    s.close().await;
}

#[tokio::test]
async fn network_is_unreachable_including_host_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    // E20: TCP to the worker's loopback listener.
    blocked(
        &mut s,
        "E20 tcp loopback",
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port}"),
        &[EACCES, "Connection refused", "Network is unreachable"],
    )
    .await;
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "E20: the listener must not have been reached"
    );
    // E21: UDP to the worker's loopback socket.
    let _ = run(
        &mut s,
        &format!("echo leak > /dev/udp/127.0.0.1/{udp_port}"),
    )
    .await;
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(udp.recv(&mut buf).is_err(), "E21: a UDP datagram escaped");
    // E22: only loopback exists.
    let out = run(&mut s, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").await;
    assert_eq!(out, ok("lo"), "E22");
    // E23: no outside network (DNS resolution fails, raw connect fails).
    blocked(
        &mut s,
        "E23 outside",
        "exec 3<>/dev/tcp/1.1.1.1/80",
        &[EACCES, "Network is unreachable"],
    )
    .await;
    // E24: abstract unix sockets of the host are unreachable.
    let name = format!("wsn-test-{}", std::process::id());
    let abs = std::os::unix::net::UnixListener::bind_addr(
        &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    abs.set_nonblocking(true).unwrap();
    blocked(
        &mut s,
        "E24 abstract unix",
        &format!(
            "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('\\0{name}')\" 2>&1 | tail -1; exit ${{PIPESTATUS[0]}}"
        ),
        &["ConnectionRefusedError", "PermissionError"],
    )
    .await;
    assert!(abs.accept().is_err());
    s.close().await;
}

#[tokio::test]
async fn host_processes_are_invisible_and_unreachable() {
    let me = std::process::id();
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    // E25: the worker's pid does not exist inside.
    blocked(
        &mut s,
        "E25 kill -0 worker",
        &format!("kill -0 {me}"),
        &["No such process"],
    )
    .await;
    // E26: signalling it fails too (and we are still alive to assert it).
    blocked(
        &mut s,
        "E26 kill worker",
        &format!("kill -9 {me}"),
        &["No such process"],
    )
    .await;
    // E27: the process list holds only the sandbox (bwrap's pid 1, bash, ps).
    let out = run(
        &mut s,
        "ps -e -o comm= > /tmp/ps.txt; sort /tmp/ps.txt | tr '\\n' ' '",
    )
    .await;
    assert_eq!(out, ok("bash bwrap ps "), "E27");
    let host_pid_dir = format!("/proc/{me}");
    blocked(
        &mut s,
        "E27b proc entry",
        &format!("ls {host_pid_dir}/environ"),
        &[NO_FILE],
    )
    .await;
    // E28: ptrace is refused (strace, gdb attach to pid 1).
    blocked(&mut s, "E28 strace", "strace -f true", &[EPERM]).await;
    // E29: attaching to pid 1 with ptrace(PTRACE_ATTACH) (also in the syscall table).
    blocked(
        &mut s,
        "E29 ptrace attach",
        "python3 -c 'import ctypes,os; l=ctypes.CDLL(None,use_errno=True); r=l.ptrace(16,1,0,0); print(r, os.strerror(ctypes.get_errno())); exit(r != 0)'",
        &[EPERM],
    )
    .await;
    s.close().await;
}

#[tokio::test]
async fn privilege_and_namespace_escapes_fail() {
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    // E30: mount.
    blocked(
        &mut s,
        "E30 mount",
        "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m",
        &[EPERM, "permission denied"],
    )
    .await;
    // E31: unshare of a user namespace (would grant fresh capabilities).
    blocked(
        &mut s,
        "E31 unshare",
        "unshare -r true",
        &[EPERM, "No space left on device"],
    )
    .await;
    // E32: a nested bubblewrap.
    blocked(
        &mut s,
        "E32 nested bwrap",
        "bwrap --ro-bind / / true",
        &[
            EPERM,
            "No space left on device",
            "Creating new namespace failed",
        ],
    )
    .await;
    // E33: chroot.
    blocked(&mut s, "E33 chroot", "chroot / true", &[EPERM]).await;
    // E34: hostname (UTS namespace is private and unchangeable).
    assert_eq!(run(&mut s, "hostname").await, ok("sandbox"));
    blocked(
        &mut s,
        "E34 sethostname",
        "hostname evil",
        &[EPERM, "you must be root"],
    )
    .await;
    // E35: no capabilities, no_new_privs, seccomp filters on.
    let out = run(
        &mut s,
        "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '",
    )
    .await;
    assert_eq!(
        out,
        ok("CapEff: 0000000000000000\nCapBnd: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2"),
        "E35"
    );
    // E36..E55: dangerous syscalls fail with EPERM (clone3 with ENOSYS so glibc
    // falls back to the inspectable clone).
    #[cfg(target_arch = "x86_64")]
    {
        let script = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
calls = {"bpf": (321, 0, 0, 0), "perf_event_open": (298, 0, 0, 0), "kexec_load": (246, 0, 0, 0),
         "init_module": (175, 0, 0, 0), "keyctl": (250, 0, 0, 0), "add_key": (248, 0, 0, 0),
         "userfaultfd": (323, 0, 0, 0), "io_uring_setup": (425, 1, 0, 0), "open_by_handle_at": (304, 0, 0, 0),
         "setns": (308, 0, 0, 0), "pivot_root": (155, 0, 0, 0), "clone_newuser": (56, 0x10000000, 0, 0),
         "clone3": (435, 0, 0, 0), "unshare_net": (272, 0x40000000, 0, 0), "ptrace_traceme": (101, 0, 0, 0),
         "ptrace_attach": (101, 16, 1, 0), "process_vm_readv": (310, 1, 0, 0), "mount": (165, 0, 0, 0),
         "umount2": (166, 0, 0, 0), "finit_module": (313, 0, 0, 0)}
for name, (nr, a, b, c) in calls.items():
    r = libc.syscall(nr, ctypes.c_long(a), ctypes.c_long(b), ctypes.c_long(c))
    print(name, r, os.strerror(ctypes.get_errno()) if r < 0 else "ALLOWED")
"#;
        let out = run(&mut s, &format!("python3 - <<'EOF'\n{script}\nEOF")).await;
        assert!(!out.is_error, "{out:?}");
        for line in out.text.lines() {
            let expected = if line.starts_with("clone3 ") {
                "clone3 -1 Function not implemented".to_owned()
            } else {
                format!("{} -1 {EPERM}", line.split(' ').next().unwrap())
            };
            assert_eq!(line, expected, "E36-E55 syscall denial");
        }
        assert_eq!(out.text.lines().count(), 20);
    }
    s.close().await;
}

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
        LimitMechanism::CgroupV1 => assert_blocked("E59 memory", &out, &["Killed"]),
        LimitMechanism::Rlimit => {
            assert_blocked("E59 memory", &out, &["memory exhausted", "Cannot allocate"])
        }
        LimitMechanism::None => panic!("no memory limit active"),
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

/// True if `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    let Ok(mut f) = std::fs::File::open(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let mut stat = String::new();
    let _ = f.read_to_string(&mut stat);
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
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

#[tokio::test]
async fn sessions_side_by_side_are_isolated() {
    let a_dirs = Dirs::new();
    let b_dirs = Dirs::new();
    let mut a = BashSession::new(sandbox(), spec(&a_dirs, "session-a"));
    let mut b = BashSession::new(sandbox(), spec(&b_dirs, "session-b"));
    assert_eq!(
        run(&mut a, "echo a-secret > mine.txt; sleep 777 & echo ok").await,
        ok("ok")
    );
    assert_eq!(
        run(&mut b, "echo b > mine.txt; ls /workspace").await,
        ok("mine.txt")
    );
    // B sees its own file, not A's.
    assert_eq!(run(&mut b, "cat /workspace/mine.txt").await, ok("b"));
    blocked(
        &mut b,
        "iso files",
        &format!("cat {}", a_dirs.workspace().join("mine.txt").display()),
        &[NO_FILE],
    )
    .await;
    // B cannot see A's processes.
    let b_view = run(
        &mut b,
        "ps -e -o args= > /tmp/ps.txt; grep -c 'sleep 777' /tmp/ps.txt; true",
    )
    .await;
    assert_eq!(b_view, ok("0"));
    let a_sleep = a
        .sandbox_processes()
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with("sleep\x00777"))
        })
        .expect("A's sleep");
    blocked(
        &mut b,
        "iso kill",
        &format!("kill -9 {a_sleep}"),
        &["No such process"],
    )
    .await;
    assert!(alive(a_sleep));
    // Each has its own /tmp.
    assert_eq!(run(&mut a, "echo ta > /tmp/t; cat /tmp/t").await, ok("ta"));
    blocked(&mut b, "iso tmp", "cat /tmp/t", &[NO_FILE]).await;
    a.close().await;
    b.close().await;
    assert!(!alive(a_sleep));
}

#[test]
fn report_lists_the_active_layers() {
    let report = sandbox().report().clone();
    eprintln!("SANDBOX REPORT {}", serde_json::to_string(&report).unwrap());
    assert!(report.available);
    assert!(report.seccomp && report.no_new_privs);
    assert_eq!(
        report.namespaces,
        ["user", "mount", "pid", "ipc", "uts", "cgroup", "net"]
    );
    if report.landlock_abi.is_some() {
        assert_eq!(report.landlock.as_deref(), Some("full"));
    }
    assert_eq!(report.tmp_size_bytes, 8 << 20);
}
