//! Host processes cannot be seen or signalled; privilege and namespace escapes and
//! the denied system calls fail.

use super::*;

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
