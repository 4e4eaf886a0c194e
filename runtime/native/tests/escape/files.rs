//! Host files outside the mounts are invisible, and nothing outside the writable
//! mounts can be written.

use super::*;

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
