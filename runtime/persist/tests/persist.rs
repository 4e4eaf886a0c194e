//! Snapshot → restore against a file:// store: fidelity, hostile trees, CAS, corruption,
//! limits, encryption, deletion.

use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use wasm_sandbox_persist::{Error, RESTORE_NOTE, RestoreOutcome};

mod common;
use common::{Session, b64, files_under, fresh, noise, persistence, session};

/// A listing that captures what a restore must reproduce: type, mode, mtime, content, target.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let ft = md.file_type();
            let what = if std::os::unix::fs::FileTypeExt::is_fifo(&ft) {
                "fifo".to_owned()
            } else if ft.is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                format!("dir {:o} {}", md.mode() & 0o7777, md.mtime())
            } else {
                let data = std::fs::read(&p).unwrap();
                format!(
                    "file {:o} {}.{} {} {:x}",
                    md.mode() & 0o7777,
                    md.mtime(),
                    md.mtime_nsec(),
                    data.len(),
                    data.iter()
                        .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                )
            };
            out.push(format!("{rel}: {what}"));
        }
    }
    out.sort();
    out
}

/// The tree: an outside symlink, an executable, an empty dir, a 20 MB file, plus
/// hard links, a FIFO, a set-uid file, a non-UTF-8 name and many small files.
fn populate(s: &Session, outside: &Path) {
    let ws = &s.ws;
    std::os::unix::fs::symlink(outside, ws.join("outside-link")).unwrap();
    std::fs::write(ws.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(ws.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(ws.join("empty/dir")).unwrap();
    let big = noise(0x9e37_79b9_7f4a_7c15, 20_000_000);
    std::fs::write(ws.join("big.bin"), &big).unwrap();
    std::fs::create_dir_all(ws.join("node_modules/a/b")).unwrap();
    for i in 0..300 {
        std::fs::write(
            ws.join(format!("node_modules/a/b/f{i}.js")),
            format!("module {i}\n"),
        )
        .unwrap();
    }
    std::fs::hard_link(ws.join("run.sh"), ws.join("hard")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        ws.join("fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    std::fs::write(ws.join("suid"), "x").unwrap();
    std::fs::set_permissions(ws.join("suid"), std::fs::Permissions::from_mode(0o6755)).unwrap();
    let odd = ws.join(std::ffi::OsStr::from_bytes(b"bad-\xff-name"));
    std::fs::write(odd, "odd").unwrap();
    std::fs::write(ws.join("empty-file"), "").unwrap();
    std::fs::set_permissions(
        ws.join("node_modules/a"),
        std::fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    std::fs::write(s.out.join("report.txt"), "outputs too").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_comes_back_exactly_links_stay_links_fifos_and_setid_dropped() {
    let store = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host secret").unwrap();
    let p = persistence(store.path(), |_| {});
    let a = session();
    populate(&a, outside.path());
    let mut state = fresh("sesn_1");
    let out = p
        .snapshot(&mut state, &a.ws, &a.out, &[], "test")
        .await
        .unwrap();
    assert_eq!(out.generation, 1);
    assert_eq!(out.stats.skipped, 1, "the FIFO was skipped");

    let b = session();
    let (st, outcome) = p.restore("sesn_1", &b.ws, &b.out).await;
    assert!(
        matches!(outcome, RestoreOutcome::Restored { generation: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(st.base, Some(1));
    let mut want = listing(&a.ws);
    want.retain(|l| !l.starts_with("fifo:"));
    let want: Vec<String> = want
        .into_iter()
        .map(|l| l.replace("suid: file 6755", "suid: file 755"))
        .collect();
    assert_eq!(listing(&b.ws), want);
    assert_eq!(listing(&b.out), listing(&a.out));
    // The outside link is still just a link, and the target was never copied in.
    let md = std::fs::symlink_metadata(b.ws.join("outside-link")).unwrap();
    assert!(md.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(b.ws.join("outside-link")).unwrap(),
        outside.path()
    );
    assert!(!b.ws.join("outside-link-secret").exists());
    // Hard links at least as copies.
    assert_eq!(
        std::fs::read(b.ws.join("hard")).unwrap(),
        std::fs::read(b.ws.join("run.sh")).unwrap()
    );
    // Restore into a non-empty directory fails whole: empty + note.
    let (_, outcome) = p.restore("sesn_1", &b.ws, &b.out).await;
    assert!(matches!(outcome, RestoreOutcome::Failed(_)));
    let names: Vec<_> = std::fs::read_dir(&b.ws)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(RESTORE_NOTE)]);
    assert_eq!(std::fs::read_dir(&b.out).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_uploads_only_what_changed() {
    let store = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let a = session();
    populate(&a, outside.path());
    // Older than the racy-clean window: the walk may remember the files.
    std::thread::sleep(wasm_sandbox_persist::walk::RACY_WINDOW);
    let mut state = fresh("sesn_inc");
    let first = p
        .snapshot(&mut state, &a.ws, &a.out, &[], "t")
        .await
        .unwrap();
    assert!(first.stats.uploaded_bytes >= 20_000_000);
    std::fs::write(a.ws.join("new.txt"), "a new file").unwrap();
    let second = p
        .snapshot(&mut state, &a.ws, &a.out, &[], "t")
        .await
        .unwrap();
    assert_eq!(second.generation, 2);
    assert_eq!(second.stats.uploaded_objects, 1, "{:?}", second.stats);
    // Unchanged files were not read again (same inode, size, mtime and ctime).
    assert!(second.stats.cached_files >= 300, "{:?}", second.stats);
    // A file rewritten with the same size and its mtime set back is read again (ctime moved).
    let before = std::fs::metadata(a.ws.join("run.sh")).unwrap();
    std::fs::write(a.ws.join("run.sh"), "#!/bin/sh\necho HI\n").unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(a.ws.join("run.sh"))
        .unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    drop(f);
    let third = p
        .snapshot(&mut state, &a.ws, &a.out, &[], "t")
        .await
        .unwrap();
    assert_eq!(
        third.stats.uploaded_objects, 1,
        "the changed content: {:?}",
        third.stats
    );
    assert!(second.stats.uploaded_bytes < 100, "{:?}", second.stats);
    let b = session();
    let (_, outcome) = p.restore("sesn_inc", &b.ws, &b.out).await;
    assert!(matches!(
        outcome,
        RestoreOutcome::Restored { generation: 3, .. }
    ));
    assert_eq!(
        std::fs::read_to_string(b.ws.join("new.txt")).unwrap(),
        "a new file"
    );
    assert_eq!(
        std::fs::read_to_string(b.ws.join("run.sh")).unwrap(),
        "#!/bin/sh\necho HI\n"
    );
    assert_eq!(
        std::fs::read(b.ws.join("big.bin")).unwrap().len(),
        20_000_000
    );
    // The first checkpoint after a restore uploads nothing unchanged again (the files were
    // written by the restore just now: too recent to be trusted unread, racy-clean rule).
    let c = session();
    let (mut st, _) = p.restore("sesn_inc", &c.ws, &c.out).await;
    let next = p.snapshot(&mut st, &c.ws, &c.out, &[], "t").await.unwrap();
    assert_eq!(next.generation, 4);
    assert_eq!(next.stats.uploaded_objects, 0, "{:?}", next.stats);
    assert_eq!(next.stats.cached_files, 0, "{:?}", next.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_base_one_wins_the_other_is_dropped() {
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let a = session();
    std::fs::write(a.ws.join("a"), "from A").unwrap();
    let b = session();
    std::fs::write(b.ws.join("b"), "from B").unwrap();
    let mut sa = fresh("sesn_cas");
    let mut sb = fresh("sesn_cas");
    p.snapshot(&mut sa, &a.ws, &a.out, &[], "A").await.unwrap();
    let lost = p.snapshot(&mut sb, &b.ws, &b.out, &[], "B").await;
    assert!(matches!(lost, Err(Error::Conflict(1))), "{lost:?}");
    assert!(sb.superseded);
    // Superseded: later snapshots of that item are dropped too, without writing.
    assert!(matches!(
        p.snapshot(&mut sb, &b.ws, &b.out, &[], "B").await,
        Err(Error::Conflict(_))
    ));
    let c = session();
    let (_, outcome) = p.restore("sesn_cas", &c.ws, &c.out).await;
    assert!(matches!(
        outcome,
        RestoreOutcome::Restored { generation: 1, .. }
    ));
    assert!(
        c.ws.join("a").exists() && !c.ws.join("b").exists(),
        "never interleaved"
    );
    assert_eq!(
        p.stats()
            .snapshots_conflict
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_is_never_half_restored() {
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let a = session();
    for i in 0..50 {
        std::fs::write(a.ws.join(format!("f{i}")), vec![i as u8; 100_000]).unwrap();
    }
    let mut st = fresh("sesn_bad");
    p.snapshot(&mut st, &a.ws, &a.out, &[], "t").await.unwrap();
    // Damage one content object (the last one written: the others restore first).
    let objs: Vec<_> = files_under(store.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/obj/"))
        .collect();
    assert!(objs.len() > 2);
    for o in &objs {
        let mut data = std::fs::read(o).unwrap();
        if o == objs.last().unwrap() {
            let n = data.len() / 2;
            data[n] ^= 0xff;
            std::fs::write(o, data).unwrap();
        }
    }
    let b = session();
    let (state, outcome) = p.restore("sesn_bad", &b.ws, &b.out).await;
    assert!(
        matches!(outcome, RestoreOutcome::Failed(Error::Corrupt(_))),
        "{outcome:?}"
    );
    assert_eq!(
        state.base,
        Some(1),
        "the next snapshot supersedes the damaged one"
    );
    let names: Vec<_> = std::fs::read_dir(&b.ws)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from(RESTORE_NOTE)],
        "empty but for the note"
    );
    let note = std::fs::read_to_string(b.ws.join(RESTORE_NOTE)).unwrap();
    assert!(note.contains("checksum"), "{note}");
    // A damaged manifest: same.
    let gen_file = files_under(store.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/gen/"))
        .unwrap();
    std::fs::write(&gen_file, b"wasm-sandbox-snapshot v1\nnonsense").unwrap();
    let c = session();
    let (_, outcome) = p.restore("sesn_bad", &c.ws, &c.out).await;
    assert!(matches!(outcome, RestoreOutcome::Failed(Error::Corrupt(_))));
    assert!(c.ws.join(RESTORE_NOTE).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_manifest_writes_nothing_outside() {
    use wasm_sandbox_persist::manifest::{Entry, Kind, Manifest, Root};
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let b = session();
    let escape = b.ws.parent().unwrap().join("escaped");
    for path in ["../escaped", "a/../../escaped", "/etc/x", "", "a//b"] {
        let m = Manifest {
            session_id: "sesn_evil".into(),
            generation: 1,
            created_unix_ms: 0,
            writer: "evil".into(),
            nonce: String::new(),
            file_bytes: 0,
            objects: Default::default(),
            entries: vec![
                Entry {
                    root: Root::Workspace,
                    path: b64(b"a"),
                    kind: Kind::Dir {
                        mode: 0o755,
                        mtime_ns: 0,
                    },
                },
                Entry {
                    root: Root::Workspace,
                    path: b64(path.as_bytes()),
                    kind: Kind::Symlink { target: b64(b"/") },
                },
            ],
        };
        let dir = store.path().join("sessions/sesn_evil/gen");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{:020}", 1)), m.encode()).unwrap();
        let (_, outcome) = p.restore("sesn_evil", &b.ws, &b.out).await;
        assert!(
            matches!(outcome, RestoreOutcome::Failed(Error::Corrupt(_))),
            "{path}: {outcome:?}"
        );
        assert!(std::fs::symlink_metadata(&escape).is_err(), "{path}");
        assert!(
            !b.ws.join("a").exists(),
            "{path}: checked before anything is written"
        );
        std::fs::remove_file(b.ws.join(RESTORE_NOTE)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_the_previous_snapshot_is_kept() {
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |c| {
        c.max_bytes = 1 << 20;
        c.max_entries = 10;
    });
    let a = session();
    std::fs::write(a.ws.join("small"), "v1").unwrap();
    let mut st = fresh("sesn_cap");
    p.snapshot(&mut st, &a.ws, &a.out, &[], "t").await.unwrap();
    std::fs::write(a.ws.join("huge"), vec![0u8; 2 << 20]).unwrap();
    let r = p.snapshot(&mut st, &a.ws, &a.out, &[], "t").await;
    assert!(matches!(r, Err(Error::TooLarge(_))), "{r:?}");
    std::fs::remove_file(a.ws.join("huge")).unwrap();
    for i in 0..20 {
        std::fs::write(a.ws.join(format!("n{i}")), "x").unwrap();
    }
    assert!(matches!(
        p.snapshot(&mut st, &a.ws, &a.out, &[], "t").await,
        Err(Error::TooLarge(_))
    ));
    assert_eq!(
        p.stats()
            .snapshots_too_large
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let b = session();
    let (_, outcome) = p.restore("sesn_cap", &b.ws, &b.out).await;
    assert!(matches!(
        outcome,
        RestoreOutcome::Restored { generation: 1, .. }
    ));
    assert_eq!(std::fs::read_to_string(b.ws.join("small")).unwrap(), "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_nothing_readable_lands_in_the_store() {
    let store = tempfile::tempdir().unwrap();
    // SAFETY-free: set_var is unsafe in edition 2024; tests in this binary use distinct names.
    unsafe {
        std::env::set_var("PERSIST_TEST_KEY_A", "11".repeat(32));
        std::env::set_var("PERSIST_TEST_KEY_B", "22".repeat(32));
    }
    let p = persistence(store.path(), |c| {
        c.encryption_key_env = Some("PERSIST_TEST_KEY_A".into())
    });
    let a = session();
    std::fs::write(
        a.ws.join("secret-name.txt"),
        "PLAINTEXT-MARKER ".repeat(1000),
    )
    .unwrap();
    std::fs::write(a.ws.join("big"), "BIGMARKER".repeat(100_000)).unwrap();
    let mut st = fresh("sesn_enc");
    p.snapshot(&mut st, &a.ws, &a.out, &[], "t").await.unwrap();
    for f in files_under(store.path()) {
        let data = std::fs::read(&f).unwrap();
        for needle in [
            &b"PLAINTEXT-MARKER"[..],
            b"BIGMARKER",
            b"secret-name",
            b"c2VjcmV0LW5hbWUudHh0",
        ] {
            assert!(
                !data.windows(needle.len()).any(|w| w == needle),
                "{} holds {needle:?}",
                f.display()
            );
        }
    }
    let b = session();
    let (_, outcome) = p.restore("sesn_enc", &b.ws, &b.out).await;
    assert!(
        matches!(outcome, RestoreOutcome::Restored { .. }),
        "{outcome:?}"
    );
    assert_eq!(std::fs::read(b.ws.join("big")).unwrap().len(), 900_000);
    // Another environment's key opens nothing.
    let other = persistence(store.path(), |c| {
        c.encryption_key_env = Some("PERSIST_TEST_KEY_B".into())
    });
    let c = session();
    let (_, outcome) = other.restore("sesn_enc", &c.ws, &c.out).await;
    assert!(
        matches!(outcome, RestoreOutcome::Failed(Error::Key(_))),
        "{outcome:?}"
    );
    assert!(c.ws.join(RESTORE_NOTE).exists());
    // No key configured: refuses sealed objects rather than handing ciphertext to the agent.
    let plain = persistence(store.path(), |_| {});
    let d = session();
    assert!(matches!(
        plain.restore("sesn_enc", &d.ws, &d.out).await.1,
        RestoreOutcome::Failed(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_list_sweep_and_skill_exclusion() {
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |c| c.ttl = std::time::Duration::from_secs(3));
    let a = session();
    std::fs::create_dir_all(a.ws.join("skills/pdf")).unwrap();
    std::fs::write(a.ws.join("skills/pdf/SKILL.md"), "installed").unwrap();
    std::fs::write(a.ws.join("mine"), "agent file").unwrap();
    for id in ["sesn_x", "sesn_y"] {
        let mut st = fresh(id);
        p.snapshot(&mut st, &a.ws, &a.out, &["skills/pdf".to_owned()], "t")
            .await
            .unwrap();
        p.snapshot(&mut st, &a.ws, &a.out, &["skills/pdf".to_owned()], "t")
            .await
            .unwrap();
        p.snapshot(&mut st, &a.ws, &a.out, &["skills/pdf".to_owned()], "t")
            .await
            .unwrap();
    }
    let listed = p.list(None).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[0]
            .generations
            .iter()
            .map(|g| g.generation)
            .collect::<Vec<_>>(),
        vec![2, 3],
        "only the newest two generations are kept"
    );
    let b = session();
    p.restore("sesn_x", &b.ws, &b.out).await;
    assert!(b.ws.join("mine").exists());
    assert!(
        b.ws.join("skills").is_dir() && !b.ws.join("skills/pdf").exists(),
        "installed skills are not saved"
    );
    assert!(p.delete_session("sesn_x").await.unwrap() > 0);
    assert!(
        p.list(Some("sesn_x")).await.unwrap()[0]
            .generations
            .is_empty()
    );
    let c = session();
    assert!(matches!(
        p.restore("sesn_x", &c.ws, &c.out).await.1,
        RestoreOutcome::Empty
    ));
    assert_eq!(
        p.sweep(100).await.unwrap(),
        0,
        "sesn_y is younger than the TTL"
    );
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    assert_eq!(p.sweep(100).await.unwrap(), 1);
    assert!(p.list(None).await.unwrap().is_empty());
    assert!(
        p.restore("../x", &c.ws, &c.out)
            .await
            .0
            .skip_saves
            .is_some(),
        "a bad id never becomes a path"
    );
}
