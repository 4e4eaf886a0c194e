//! No FIFOs, sockets or device nodes where the worker looks, and no set-id files.

use super::*;

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
