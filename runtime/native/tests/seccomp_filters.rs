//! The seccomp filters on their own, outside bubblewrap and Landlock: the set-id
//! rules (always on) and the `mknod` fallback that stands in for Landlock's
//! per-directory FIFO/socket/device refusal when Landlock is not enforced. The
//! escape suite can only reach the fallback on a kernel without Landlock, so these
//! tests install the filters in a child process (this test binary re-executed) and
//! make the calls there.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

/// Runs the ignored test `child` of this binary with `dir` and `fallback` in the
/// environment and returns its output; fails if the child failed.
fn run_child(child: &str, dir: &Path, fallback: bool) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", child, "--nocapture"])
        .args(["--test-threads=1"])
        .env("WSN_SECCOMP_DIR", dir)
        .env("WSN_SECCOMP_FALLBACK", if fallback { "1" } else { "0" })
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("SECCOMP CHILD DONE"), "{text}");
    text
}

/// The child's result lines (`name result`; the first one follows libtest's
/// `test … ` prefix on the same line).
fn results(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.find("RESULT ")
                .map(|i| l[i + "RESULT ".len()..].to_owned())
        })
        .collect()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// `Ok` or the errno name of a libc return value.
fn outcome(r: libc::c_long) -> &'static str {
    if r >= 0 {
        return "ok";
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOSYS) => "ENOSYS",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EEXIST) => "EEXIST",
        _ => "other",
    }
}

#[test]
#[ignore = "run by the tests below in a child process"]
fn child_with_filters() {
    let Some(dir) = std::env::var_os("WSN_SECCOMP_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let fallback = std::env::var("WSN_SECCOMP_FALLBACK").as_deref() == Ok("1");
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) has no memory effects.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        0
    );
    // The filters bind this thread (the one making every call below).
    wasm_sandbox_native::seccomp::install(fallback).unwrap();
    let report = |name: &str, r: libc::c_long| println!("RESULT {name} {}", outcome(r));
    let p = |name: &str| cpath(&dir.join(name));
    let mode = |m: u32| libc::c_long::from(m);
    // SAFETY (all calls below): NUL-terminated paths owned by this frame; raw
    // syscalls with integer arguments; the returned descriptors are only counted.
    unsafe {
        report(
            "mknod_fifo",
            libc::c_long::from(libc::mknod(p("fifo").as_ptr(), libc::S_IFIFO | 0o644, 0)),
        );
        report(
            "mknodat_sock",
            libc::syscall(
                libc::SYS_mknodat,
                libc::AT_FDCWD,
                p("sock").as_ptr(),
                mode(libc::S_IFSOCK | 0o644),
                0_i64,
            ),
        );
        report(
            "mknod_reg",
            libc::c_long::from(libc::mknod(p("reg").as_ptr(), libc::S_IFREG | 0o644, 0)),
        );
        report(
            "mknod_reg_suid",
            libc::c_long::from(libc::mknod(
                p("reg-suid").as_ptr(),
                libc::S_IFREG | 0o4755,
                0,
            )),
        );
        report(
            "openat_creat_suid",
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                p("creat-suid").as_ptr(),
                libc::c_long::from(libc::O_CREAT | libc::O_WRONLY),
                mode(0o4755),
            ),
        );
        report(
            "openat_tmpfile_sgid",
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                cpath(dir).as_ptr(),
                libc::c_long::from(libc::O_TMPFILE | libc::O_WRONLY),
                mode(0o2755),
            ),
        );
        // Without O_CREAT/O_TMPFILE the mode is ignored by the kernel, and so by
        // the filter: opening an existing file with junk in the mode register works.
        report(
            "openat_existing_junk_mode",
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                p("reg").as_ptr(),
                libc::c_long::from(libc::O_RDONLY),
                mode(0o6777),
            ),
        );
        report(
            "fchmodat_suid",
            libc::syscall(
                libc::SYS_fchmodat,
                libc::AT_FDCWD,
                p("reg").as_ptr(),
                mode(0o4755),
            ),
        );
        report(
            "fchmodat_plain",
            libc::syscall(
                libc::SYS_fchmodat,
                libc::AT_FDCWD,
                p("reg").as_ptr(),
                mode(0o755),
            ),
        );
        // The mode sits in the low 32 bits; junk above them does not hide the bit.
        report(
            "fchmodat_suid_high_junk",
            libc::syscall(
                libc::SYS_fchmodat,
                libc::AT_FDCWD,
                p("reg").as_ptr(),
                0x7_0000_0000_i64 | 0o4755,
            ),
        );
        report(
            "fchmodat2",
            libc::syscall(452, libc::AT_FDCWD, p("reg").as_ptr(), mode(0o4755), 0_i64),
        );
        report(
            "openat2",
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                p("reg").as_ptr(),
                std::ptr::null::<u8>(),
                0_i64,
            ),
        );
    }
    println!("SECCOMP CHILD DONE");
}

#[test]
fn set_id_rules_hold_and_special_files_stay_allowed_without_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let text = run_child("child_with_filters", dir.path(), false);
    assert_eq!(
        results(&text),
        [
            // Without the fallback only set-id modes are refused.
            "mknod_fifo ok",
            "mknodat_sock ok",
            "mknod_reg ok",
            "mknod_reg_suid EPERM",
            "openat_creat_suid EPERM",
            "openat_tmpfile_sgid EPERM",
            "openat_existing_junk_mode ok",
            "fchmodat_suid EPERM",
            "fchmodat_plain ok",
            "fchmodat_suid_high_junk EPERM",
            "fchmodat2 ENOSYS",
            "openat2 ENOSYS",
        ],
        "{text}"
    );
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    assert!(
        std::fs::symlink_metadata(dir.path().join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    for name in ["reg-suid", "creat-suid"] {
        assert!(!dir.path().join(name).exists(), "{name}");
    }
    let reg = std::fs::metadata(dir.path().join("reg")).unwrap();
    assert_eq!(reg.permissions().mode() & 0o7777, 0o755);
}

#[test]
fn fallback_refuses_fifos_sockets_and_devices_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let text = run_child("child_with_filters", dir.path(), true);
    assert_eq!(
        results(&text),
        [
            "mknod_fifo EPERM",
            "mknodat_sock EPERM",
            "mknod_reg ok",
            "mknod_reg_suid EPERM",
            "openat_creat_suid EPERM",
            "openat_tmpfile_sgid EPERM",
            "openat_existing_junk_mode ok",
            "fchmodat_suid EPERM",
            "fchmodat_plain ok",
            "fchmodat_suid_high_junk EPERM",
            "fchmodat2 ENOSYS",
            "openat2 ENOSYS",
        ],
        "{text}"
    );
    for name in ["fifo", "sock", "reg-suid", "creat-suid"] {
        assert!(!dir.path().join(name).exists(), "{name}");
    }
}
