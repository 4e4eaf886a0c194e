//! The escape suite: every attempt below must be blocked, and each assertion checks
//! the specific failure (so a typo or a missing tool cannot pass as "blocked").
//! Numbered cases: E1..E69.

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
        assert_eq!(
            report.special_files,
            wasm_sandbox_native::SpecialFileGuard::Landlock
        );
    } else {
        assert_eq!(
            report.special_files,
            wasm_sandbox_native::SpecialFileGuard::Seccomp
        );
    }
    assert_eq!(report.tmp_size_bytes, 8 << 20);
}

/// Every entry beneath `root` (not following symlinks), depth first.
fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// Host-side check: nothing beneath `root` is a FIFO, socket or device node.
#[track_caller]
fn assert_no_special_files(case: &str, root: &Path) {
    use std::os::unix::fs::FileTypeExt;
    for p in walk(root) {
        let t = std::fs::symlink_metadata(&p).unwrap().file_type();
        assert!(
            !(t.is_fifo() || t.is_socket() || t.is_char_device() || t.is_block_device()),
            "{case}: special file {} ({t:?}) was created",
            p.display()
        );
    }
}

#[tokio::test]
async fn special_files_cannot_be_made_where_the_worker_looks() {
    use wasm_sandbox_native::SpecialFileGuard;
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    let guard = s.sandbox().report().special_files;
    // Landlock refuses with EACCES; the seccomp fallback with EPERM.
    let refused: &[&str] = match guard {
        SpecialFileGuard::Landlock => &[EACCES],
        SpecialFileGuard::Seccomp => &[EPERM],
        SpecialFileGuard::None => panic!("no special-file guard reported"),
    };
    // E61: a FIFO (which would block the worker's open(2)) in each writable
    // directory the worker itself opens.
    for dir in ["/workspace", "/mnt/session/outputs", "/mnt/memory/rw"] {
        blocked(
            &mut s,
            &format!("E61 mkfifo {dir}"),
            &format!("mkfifo {dir}/f"),
            refused,
        )
        .await;
        // The same through mknod(1), and a FIFO in a subdirectory.
        blocked(
            &mut s,
            &format!("E61 mknod p {dir}"),
            &format!("mkdir -p {dir}/sub && mknod {dir}/sub/p p"),
            refused,
        )
        .await;
    }
    // E62: a unix socket bound to a path in the workspace, outputs and store.
    for dir in ["/workspace", "/mnt/session/outputs", "/mnt/memory/rw"] {
        blocked(
            &mut s,
            &format!("E62 unix bind {dir}"),
            &format!(
                "python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.bind(\"{dir}/s\")'"
            ),
            &["PermissionError"],
        )
        .await;
    }
    // E63: device nodes (no CAP_MKNOD either).
    blocked(
        &mut s,
        "E63 mknod char",
        "mknod /workspace/null c 1 3",
        &[EACCES, EPERM],
    )
    .await;
    blocked(
        &mut s,
        "E63 mknod block",
        "mknod /mnt/session/outputs/sda b 8 0",
        &[EACCES, EPERM],
    )
    .await;
    if guard == SpecialFileGuard::Landlock {
        // E64: the private /tmp keeps FIFOs and sockets (tools use them there)…
        assert_eq!(
            run(
                &mut s,
                "mkfifo /tmp/f && test -p /tmp/f && python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.bind(\"/tmp/s\")' && test -S /tmp/s && echo ok"
            )
            .await,
            ok("ok"),
            "E64"
        );
        // …but one made there cannot be moved into the workspace (cross-mount
        // rename fails, and the copy mv falls back to is refused).
        let out = run(&mut s, "mv /tmp/f /workspace/f").await;
        assert!(out.is_error, "E64 mv fifo: {out:?}");
        let out = run(&mut s, "cp -a /tmp/f /tmp/s /workspace/").await;
        assert!(out.is_error, "E64 cp -a fifo: {out:?}");
    } else {
        // The fallback is global.
        blocked(&mut s, "E64 tmp fallback", "mkfifo /tmp/f", &[EPERM]).await;
    }
    // Ordinary files and directories are unaffected.
    assert_eq!(
        run(&mut s, "mkdir -p d/e && echo x > d/e/f && cat d/e/f").await,
        ok("x")
    );
    s.close().await;
    // Host side: nothing special was left in any directory the worker opens.
    for d in ["workspace", "outputs", "store-rw"] {
        assert_no_special_files("E61-E64", &dirs.path(d));
    }
}

/// Host-side check: nothing beneath `root` carries S_ISUID/S_ISGID or a
/// `security.capability` attribute.
#[track_caller]
fn assert_no_set_id_files(case: &str, root: &Path) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    for p in walk(root) {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode();
        assert_eq!(
            mode & 0o6000,
            0,
            "{case}: {} has mode {mode:o}",
            p.display()
        );
        if meta.file_type().is_symlink() {
            continue;
        }
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and name; size 0 only asks for the length.
        let r = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                c"security.capability".as_ptr(),
                std::ptr::null_mut(),
                0,
            )
        };
        assert!(r < 0, "{case}: {} has file capabilities", p.display());
    }
}

#[tokio::test]
async fn setuid_and_setgid_files_cannot_be_made() {
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    assert_eq!(
        run(&mut s, "cp /usr/bin/id ./suid-id && echo copied").await,
        ok("copied")
    );
    // E65: the reported attack: a setuid copy of a binary in the workspace (on the
    // host, `setpriv --reuid=65534 ./suid-id` printed euid=0 when the worker runs as
    // root). Every spelling of chmod that adds S_ISUID or S_ISGID is refused.
    for mode in ["4755", "u+s", "g+s", "2755", "6755", "+s", "ug+s"] {
        blocked(
            &mut s,
            &format!("E65 chmod {mode}"),
            &format!("chmod {mode} ./suid-id"),
            &[EPERM],
        )
        .await;
    }
    // …in outputs and a read-write store too, and on a directory (setgid dirs).
    blocked(
        &mut s,
        "E65 chmod outputs",
        "cp /usr/bin/id /mnt/session/outputs/x && chmod 4755 /mnt/session/outputs/x",
        &[EPERM],
    )
    .await;
    blocked(
        &mut s,
        "E65 chmod store",
        "cp /usr/bin/id /mnt/memory/rw/x && chmod 4755 /mnt/memory/rw/x",
        &[EPERM],
    )
    .await;
    blocked(
        &mut s,
        "E65 chmod g+s dir",
        "mkdir sgid-dir && chmod g+s sgid-dir",
        &[EPERM],
    )
    .await;
    // Ordinary modes still work.
    assert_eq!(
        run(
            &mut s,
            "chmod 755 ./suid-id && chmod u-x,o+t sgid-dir && stat -c %a ./suid-id"
        )
        .await,
        ok("755")
    );
    // E66: install -m, cp -p / cp -a of a host setuid binary, tar -p extraction.
    blocked(
        &mut s,
        "E66 install -m 4755",
        "install -m 4755 /usr/bin/id ./inst-id",
        &[EPERM],
    )
    .await;
    blocked(
        &mut s,
        "E66 install -m 2755",
        "install -m 2755 /usr/bin/id ./inst-id2",
        &[EPERM],
    )
    .await;
    blocked(
        &mut s,
        "E66 cp -p setuid",
        "cp -p /usr/bin/su ./su-copy",
        &[EPERM],
    )
    .await;
    blocked(
        &mut s,
        "E66 cp -a setuid",
        "cp -a /usr/bin/passwd ./passwd-copy",
        &[EPERM],
    )
    .await;
    blocked(
        &mut s,
        "E66 tar -p",
        r#"python3 -c '
import io, tarfile
with tarfile.open("/tmp/s.tar", "w") as t:
    i = tarfile.TarInfo("tar-suid"); i.mode = 0o4755; data = b"x"; i.size = len(data)
    t.addfile(i, io.BytesIO(data))
' && tar -xpf /tmp/s.tar"#,
        &[EPERM],
    )
    .await;
    // E67: creating a file with a set-id mode directly (open/openat/creat with
    // O_CREAT or O_TMPFILE, mknod of a regular file), and the calls seccomp cannot
    // inspect (openat2, fchmodat2) are answered ENOSYS so libc falls back.
    #[cfg(target_arch = "x86_64")]
    {
        let script = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, fn):
    try:
        fn()
        print(name, "ALLOWED")
    except OSError as e:
        print(name, e.strerror)
def raw(nr, *args):
    def f():
        r = libc.syscall(nr, *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
        if r < 0:
            e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
    return f
p = b"/workspace/py-suid"
attempt("open_creat_suid", lambda: os.open(p, os.O_CREAT | os.O_WRONLY, 0o4755))
attempt("open_creat_sgid", lambda: os.open(p, os.O_CREAT | os.O_WRONLY, 0o2755))
attempt("open_tmpfile_suid", lambda: os.open(b"/workspace", os.O_TMPFILE | os.O_WRONLY, 0o4755))
attempt("sys_open_suid", raw(2, p, os.O_CREAT | os.O_WRONLY, 0o4755))
attempt("sys_creat_suid", raw(85, p, 0o4755))
attempt("mknod_reg_suid", lambda: os.mknod(p, 0o100000 | 0o4755))
attempt("sys_mknod_suid", raw(133, p, 0o6755, 0))
attempt("openat2", raw(437, -100, p, 0, 0))
attempt("fchmodat2_suid", raw(452, -100, b"/workspace/suid-id", 0o4755, 0))
attempt("sys_chmod_suid", raw(90, b"/workspace/suid-id", 0o4755))
fd = os.open(b"/workspace/suid-id", os.O_RDONLY)
attempt("fchmod_suid", lambda: os.fchmod(fd, 0o4755))
attempt("fchmod_sgid", lambda: os.fchmod(fd, 0o2755))
attempt("chmod_sgid", lambda: os.chmod(b"/workspace/suid-id", 0o2711))
attempt("fchmod_plain", lambda: os.fchmod(fd, 0o750))
attempt("open_creat_plain", lambda: os.close(os.open(b"/workspace/plain", os.O_CREAT | os.O_WRONLY, 0o755)))
attempt("mkdir_sgid_mode", lambda: os.mkdir(b"/workspace/mkdir-sgid", 0o2755))
"#;
        let out = run(&mut s, &format!("python3 - <<'EOF'\n{script}\nEOF")).await;
        assert!(!out.is_error, "E67: {out:?}");
        let expected = [
            ("open_creat_suid", EPERM),
            ("open_creat_sgid", EPERM),
            ("open_tmpfile_suid", EPERM),
            ("sys_open_suid", EPERM),
            ("sys_creat_suid", EPERM),
            ("mknod_reg_suid", EPERM),
            ("sys_mknod_suid", EPERM),
            ("openat2", "Function not implemented"),
            ("fchmodat2_suid", "Function not implemented"),
            ("sys_chmod_suid", EPERM),
            ("fchmod_suid", EPERM),
            ("fchmod_sgid", EPERM),
            ("chmod_sgid", EPERM),
            ("fchmod_plain", "ALLOWED"),
            ("open_creat_plain", "ALLOWED"),
            // mkdir cannot set S_ISUID/S_ISGID: the kernel masks a directory's mode
            // to rwx + sticky (checked on the host below).
            ("mkdir_sgid_mode", "ALLOWED"),
        ]
        .map(|(name, result)| format!("{name} {result}"))
        .join("\n");
        assert_eq!(out.text, expected, "E67");
        assert!(!dirs.workspace().join("py-suid").exists(), "E67");
        use std::os::unix::fs::PermissionsExt;
        let plain = std::fs::metadata(dirs.workspace().join("plain")).unwrap();
        assert_eq!(plain.permissions().mode() & 0o7777, 0o755, "E67 plain");
    }
    // E68: file capabilities (a setuid bit by other means) need CAP_SETFCAP, which
    // the sandbox never holds: setcap(8) and a raw setxattr both fail.
    blocked(
        &mut s,
        "E68 setcap",
        "cp /usr/bin/id ./cap-id && setcap cap_setuid+ep ./cap-id",
        &[EPERM, "Failed to set capabilities"],
    )
    .await;
    blocked(
        &mut s,
        "E68 setxattr",
        r#"python3 -c '
import os, struct
# VFS_CAP_REVISION_2 | effective, permitted = CAP_SETUID
os.setxattr("/workspace/cap-id", "security.capability", struct.pack("<5I", 0x02000001, 1 << 7, 0, 0, 0))
'"#,
        &["PermissionError"],
    )
    .await;
    s.close().await;
    // E69: host side, after every attempt: no file in any directory the worker
    // opens carries S_ISUID, S_ISGID or file capabilities.
    for d in ["workspace", "outputs", "store-rw"] {
        assert_no_set_id_files("E69", &dirs.path(d));
    }
}
