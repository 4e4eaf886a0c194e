//! The session disk cap ([`wasm_sandbox_native::disk::DiskCap`]) on its own: mount
//! points that are symlinks are refused (a mount would land where the link points),
//! and `adopt` moves a directory onto the cap without following links.
//!
//! Needs root (mount), loop devices and mkfs.ext4; skips with a printed reason
//! without them.

use std::path::Path;

use wasm_sandbox_native::disk::DiskCap;

fn can_mount(dir: &Path) -> bool {
    match DiskCap::probe(dir) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIP: no per-session capped filesystem here: {e}");
            false
        }
    }
}

fn mounted(path: &Path) -> bool {
    let p = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let p = p.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*p))
}

/// A `workspace` (or `outputs`) planted as a symlink to elsewhere on the host is
/// refused: the cap is never bound over the link's target.
#[test]
fn symlinked_mount_points_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    if !can_mount(tmp.path()) {
        return;
    }
    for name in ["workspace", "outputs"] {
        let root = tmp.path().join(format!("s-{name}"));
        let elsewhere = tmp.path().join(format!("host-{name}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join(name)).unwrap();
        let err = DiskCap::mount(&root, 8 << 20, None).expect_err("a symlink must be refused");
        assert!(err.contains("symlink is refused"), "{err}");
        assert!(
            !mounted(&elsewhere),
            "the cap was mounted over the link's target"
        );
        assert!(!mounted(&root.join(".disk")), "the failed mount was undone");
        assert!(!root.join(".disk.img").exists(), "the image was removed");
    }
}

/// `adopt` copies a directory's files onto the cap and binds the copy over it: writes
/// through it count against the cap; a symlinked directory is refused; links inside are
/// not followed.
#[test]
fn adopt_moves_a_directory_onto_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    if !can_mount(tmp.path()) {
        return;
    }
    let root = tmp.path().join("s");
    let store = root.join("memory/st");
    std::fs::create_dir_all(store.join("a/b")).unwrap();
    std::fs::write(store.join("a/b/f.txt"), "kept").unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "host").unwrap();
    std::os::unix::fs::symlink(&secret, store.join("link")).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("memory/linked")).unwrap();

    let mut cap = DiskCap::mount(&root, 8 << 20, None).unwrap();
    let err = cap.adopt(&root.join("memory/linked")).unwrap_err();
    assert!(err.contains("symlink is refused"), "{err}");
    assert!(
        cap.adopt(&tmp.path().join("secret")).is_err(),
        "outside the root"
    );
    cap.adopt(&store).unwrap();
    assert!(mounted(&store));
    assert_eq!(
        std::fs::read_to_string(store.join("a/b/f.txt")).unwrap(),
        "kept"
    );
    assert!(
        std::fs::symlink_metadata(store.join("link")).is_err(),
        "a link is not copied"
    );
    // Writes through the store fill the cap, not the host.
    let big = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let err = loop {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(store.join("big"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &big))
        {
            Ok(()) => written += 1 << 20,
            Err(e) => break e,
        }
        assert!(
            written <= 16 << 20,
            "wrote {written} bytes past an 8 MiB cap"
        );
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(cap);
    assert!(!mounted(&store));
    assert!(
        !store.join("big").exists(),
        "the host directory was never written"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host");
}

/// Host overcommit: a cap the volume's free space cannot back (with the live caps'
/// outstanding room) is flagged; a small one is not; dropping a cap returns its room.
#[test]
fn a_cap_the_host_cannot_back_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    if !can_mount(tmp.path()) {
        return;
    }
    let free = {
        let c = std::ffi::CString::new(tmp.path().to_str().unwrap()).unwrap();
        // SAFETY: statvfs(3) into a zeroed struct with a valid path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize
    };
    let small_root = tmp.path().join("small");
    std::fs::create_dir(&small_root).unwrap();
    let small = DiskCap::mount(&small_root, 8 << 20, None).unwrap();
    assert_eq!(small.overcommit(), None);
    drop(small);
    // Larger than what is free (sparse: creating it costs next to nothing).
    let big_root = tmp.path().join("big");
    std::fs::create_dir(&big_root).unwrap();
    let big = match DiskCap::mount(&big_root, free + (1 << 30), Some(1024)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "SKIP: cannot make a {} byte sparse image here: {e}",
                free + (1 << 30)
            );
            return;
        }
    };
    let why = big.overcommit().expect("must be flagged");
    assert!(why.contains("could fill"), "{why}");
    drop(big);
    // Two caps of 3/5 of the free space each: the first fits, the second does not
    // (the first may still write its 3/5); once the first is gone, it fits again.
    let part = free / 5 * 3;
    let mk = |name: &str| {
        let root = tmp.path().join(name);
        std::fs::create_dir(&root).unwrap();
        DiskCap::mount(&root, part, Some(1024)).unwrap()
    };
    let a = mk("a");
    assert_eq!(a.overcommit(), None);
    let b = mk("b");
    assert!(b.overcommit().is_some(), "the second 3/5 overcommits");
    drop(a);
    drop(b);
    let c = mk("c");
    assert_eq!(c.overcommit(), None, "room returned by the dropped caps");
}
