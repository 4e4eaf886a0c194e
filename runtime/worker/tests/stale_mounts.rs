//! A worker killed mid-session leaves its session's disk cap mounted (the loop mount,
//! the `workspace`/`outputs` binds): the next worker's workdir claim detaches them,
//! deepest first, before it sweeps the stale session directories, so the image, its loop
//! device and the session's data do not stay on the host.
//!
//! Needs root (mount) and loop devices; skips with a printed reason without them.

use std::path::Path;

fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap();
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn claim_detaches_a_crashed_sessions_mounts_and_sweeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let workdir = tmp.path().join("w");
    // A first run claims the workdir (writes its marker) and "crashes" mid-session.
    drop(wasm_sandbox_worker::worker::claim_workdir(&workdir).unwrap());
    let sessions = workdir.join("sessions");
    let stale = sessions.join("work_old.0123456789abcdef");
    std::fs::create_dir_all(&stale).unwrap();
    let cap = match wasm_sandbox_native::disk::DiskCap::mount(&stale, 8 << 20, Some(128)) {
        Ok(cap) => cap,
        Err(e) => {
            eprintln!("SKIP: cannot mount a disk cap here: {e}");
            return;
        }
    };
    std::fs::write(stale.join("workspace/data"), "left behind").unwrap();
    // A tmpfs stacked deeper, as a crashed run's extra mount would be.
    std::fs::create_dir(stale.join("workspace/deeper")).unwrap();
    let c = std::ffi::CString::new(stale.join("workspace/deeper").to_str().unwrap()).unwrap();
    // SAFETY: mount(2) with valid C strings.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=1m".as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    // The crash: nothing runs the cap's Drop.
    std::mem::forget(cap);
    assert!(
        mounts_below(&sessions).len() >= 4,
        "{:?}",
        mounts_below(&sessions)
    );

    let guard = wasm_sandbox_worker::worker::claim_workdir(&workdir).unwrap();
    assert_eq!(
        mounts_below(&sessions),
        Vec::<String>::new(),
        "every stale mount below sessions/ detached"
    );
    assert!(!stale.exists(), "the stale session directory was swept");
    drop(guard);
}
