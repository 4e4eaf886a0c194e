//! Regression tests for the persistence review: a failed restore never costs a good snapshot,
//! the store is read within bounds, stale writers are fenced, the walk's limits hold before
//! anything is uploaded, the racy-clean rule, and the TTL sweep's cursor.

use std::path::Path;
use std::sync::atomic::Ordering;

use wasm_sandbox_persist::manifest::{Entry, Kind, MAX_OBJECT, Manifest, ObjectInfo, Piece, Root};
use wasm_sandbox_persist::{Error, RESTORE_NOTE, RestoreOutcome, SessionState};

mod common;
use common::{b64, persistence, session};

fn generations(store: &Path, id: &str) -> Vec<u64> {
    let mut g: Vec<u64> = std::fs::read_dir(store.join("sessions").join(id).join("gen"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
                .collect()
        })
        .unwrap_or_default();
    g.sort_unstable();
    g
}

fn objects_in(store: &Path, id: &str) -> usize {
    std::fs::read_dir(store.join("sessions").join(id).join("obj")).map_or(0, |d| d.count())
}

fn sha(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Writes a hand-made generation 1 of `id` (and the objects given) into a file:// store.
fn plant(store: &Path, id: &str, m: &Manifest, objects: &[(&str, &[u8])]) {
    let base = store.join("sessions").join(id);
    std::fs::create_dir_all(base.join("gen")).unwrap();
    std::fs::create_dir_all(base.join("obj")).unwrap();
    std::fs::write(base.join("gen").join(format!("{:020}", 1)), m.encode()).unwrap();
    for (name, data) in objects {
        std::fs::write(base.join("obj").join(name), data).unwrap();
    }
}

/// A manifest of one file `f` whose single piece is all of object `name` (`len` bytes).
fn one_file(id: &str, name: &str, len: u64, sum: &str) -> Manifest {
    Manifest {
        session_id: id.into(),
        generation: 1,
        created_unix_ms: 0,
        writer: "hand".into(),
        nonce: String::new(),
        file_bytes: len,
        objects: [(
            name.to_owned(),
            ObjectInfo {
                sha256: sum.to_owned(),
                len,
            },
        )]
        .into(),
        entries: vec![Entry {
            root: Root::Workspace,
            path: b64(b"f"),
            kind: Kind::File {
                mode: 0o644,
                mtime_ns: 0,
                size: len,
                sha256: sum.to_owned(),
                pieces: vec![Piece {
                    o: name.to_owned(),
                    off: 0,
                    len,
                }],
            },
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_failure_that_proves_nothing_never_costs_the_good_snapshot() {
    let store = tempfile::tempdir().unwrap();
    // SAFETY: set_var is unsafe in edition 2024; this binary's tests use distinct names.
    unsafe {
        std::env::set_var("REVIEW_KEY_A", "33".repeat(32));
        std::env::set_var("REVIEW_KEY_B", "44".repeat(32));
    }
    let good = persistence(store.path(), |c| {
        c.encryption_key_env = Some("REVIEW_KEY_A".into())
    });
    let a = session();
    std::fs::write(a.ws.join("precious"), vec![7u8; 300_000]).unwrap();
    let mut st = SessionState::new("sesn_keep");
    good.snapshot(&mut st, &a.ws, &a.out, &[], "t")
        .await
        .unwrap();

    // A limit lowered since the save, a changed key, an object gone from the store: each
    // says nothing against generation 1.
    let lowered = persistence(store.path(), |c| {
        c.encryption_key_env = Some("REVIEW_KEY_A".into());
        c.max_bytes = 1000;
    });
    let other_key = persistence(store.path(), |c| {
        c.encryption_key_env = Some("REVIEW_KEY_B".into())
    });
    for (what, p) in [("lowered max_size", &lowered), ("other key", &other_key)] {
        let b = session();
        let (mut st, outcome) = p.restore("sesn_keep", &b.ws, &b.out).await;
        assert!(
            matches!(outcome, RestoreOutcome::Failed(_)),
            "{what}: {outcome:?}"
        );
        assert!(st.skip_saves.is_some(), "{what}");
        let note = std::fs::read_to_string(b.ws.join(RESTORE_NOTE)).unwrap();
        assert!(note.contains("NOT saved"), "{what}: {note}");
        // The item's (empty) workspace is not saved over generation 1.
        let r = p.snapshot(&mut st, &b.ws, &b.out, &[], "t").await;
        assert!(matches!(r, Err(Error::Skipped(_))), "{what}: {r:?}");
        assert_eq!(p.stats().snapshots_skipped.load(Ordering::Relaxed), 1);
        assert_eq!(generations(store.path(), "sesn_keep"), vec![1], "{what}");
    }
    // An object missing from the store (a store error, not a checksum failure): same.
    let obj_dir = store.path().join("sessions/sesn_keep/obj");
    let moved = store.path().join("moved-away");
    std::fs::rename(&obj_dir, &moved).unwrap();
    let b = session();
    let (mut st, outcome) = good.restore("sesn_keep", &b.ws, &b.out).await;
    assert!(
        matches!(outcome, RestoreOutcome::Failed(Error::Store(_))),
        "{outcome:?}"
    );
    assert!(matches!(
        good.snapshot(&mut st, &b.ws, &b.out, &[], "t").await,
        Err(Error::Skipped(_))
    ));
    std::fs::rename(&moved, &obj_dir).unwrap();
    // The good generation is still there and still restores.
    let c = session();
    let (_, outcome) = good.restore("sesn_keep", &c.ws, &c.out).await;
    assert!(
        matches!(outcome, RestoreOutcome::Restored { generation: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(std::fs::read(c.ws.join("precious")).unwrap().len(), 300_000);

    // A proven-corrupt snapshot is superseded by the next save.
    let gen1 = store
        .path()
        .join(format!("sessions/sesn_keep/gen/{:020}", 1));
    let mut data = std::fs::read(&gen1).unwrap();
    let n = data.len() - 5;
    data[n] ^= 0x55;
    std::fs::write(&gen1, data).unwrap();
    let d = session();
    let (mut st, outcome) = good.restore("sesn_keep", &d.ws, &d.out).await;
    assert!(
        matches!(outcome, RestoreOutcome::Failed(Error::Corrupt(_))),
        "{outcome:?}"
    );
    assert!(st.skip_saves.is_none());
    std::fs::write(d.ws.join("fresh"), "after the loss").unwrap();
    let saved = good
        .snapshot(&mut st, &d.ws, &d.out, &[], "t")
        .await
        .unwrap();
    assert_eq!(saved.generation, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_read_within_bounds() {
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |c| c.max_bytes = 1 << 20);
    // 1. An object bigger than any walk makes: refused from the manifest alone, although it
    //    is in the store with the right checksum.
    let big = vec![1u8; MAX_OBJECT as usize + 1];
    let name = sha(&big);
    let p_big = persistence(store.path(), |_| {});
    plant(
        store.path(),
        "sesn_big_obj",
        &one_file("sesn_big_obj", &name, big.len() as u64, &name),
        &[(&name, &big)],
    );
    let b = session();
    let (_, outcome) = p_big.restore("sesn_big_obj", &b.ws, &b.out).await;
    assert!(
        matches!(&outcome, RestoreOutcome::Failed(Error::Corrupt(why)) if why.contains("larger than any walk")),
        "{outcome:?}"
    );
    // 2. An object bigger in the store than its manifest says: refused on the size the store
    //    reports, before the body is read.
    let small = b"0123456789".to_vec();
    let name = sha(&small);
    let mut stuffed = small.clone();
    stuffed.resize(1 << 20, b'x');
    plant(
        store.path(),
        "sesn_stuffed",
        &one_file("sesn_stuffed", &name, small.len() as u64, &sha(&small)),
        &[(&name, &stuffed)],
    );
    let b = session();
    let (_, outcome) = p.restore("sesn_stuffed", &b.ws, &b.out).await;
    assert!(
        matches!(&outcome, RestoreOutcome::Failed(Error::Corrupt(why)) if why.contains("expected")),
        "{outcome:?}"
    );
    // 3. A manifest over the cap is not read at all.
    let dir = store.path().join("sessions/sesn_huge_manifest/gen");
    std::fs::create_dir_all(&dir).unwrap();
    let cap = wasm_sandbox_persist::manifest::manifest_cap(1 << 20, 200_000);
    let f = std::fs::File::create(dir.join(format!("{:020}", 1))).unwrap();
    f.set_len(cap + 1000).unwrap();
    let b = session();
    let (st, outcome) = p.restore("sesn_huge_manifest", &b.ws, &b.out).await;
    assert!(
        matches!(&outcome, RestoreOutcome::Failed(Error::TooLarge(why)) if why.contains("expected")),
        "{outcome:?}"
    );
    assert!(
        st.skip_saves.is_some(),
        "over a cap derived from the limits (maybe lowered): kept, not superseded"
    );
    // 4. Objects that together are far over max_size (tiny pieces of big packs): refused
    //    before any is fetched (they are not even in the store).
    let mut m = one_file("sesn_many", &"a".repeat(64), 1, &sha(b"x"));
    let mut pieces = Vec::new();
    for i in 0..3u8 {
        let o = format!("{i:x}").repeat(64);
        m.objects.insert(
            o.clone(),
            ObjectInfo {
                sha256: sha(b"?"),
                len: MAX_OBJECT,
            },
        );
        pieces.push(Piece { o, off: 0, len: 1 });
    }
    if let Kind::File {
        pieces: p, size, ..
    } = &mut m.entries[0].kind
    {
        *p = pieces;
        *size = 3;
    }
    m.file_bytes = 3;
    plant(store.path(), "sesn_many", &m, &[]);
    let tiny = persistence(store.path(), |c| c.max_bytes = 1000);
    let b = session();
    let (_, outcome) = tiny.restore("sesn_many", &b.ws, &b.out).await;
    assert!(
        matches!(&outcome, RestoreOutcome::Failed(Error::TooLarge(_))),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_cannot_resurrect_a_collected_generation() {
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let a = session();
    std::fs::write(a.ws.join("f"), "v1").unwrap();
    let mut first = SessionState::new("sesn_stale");
    p.snapshot(&mut first, &a.ws, &a.out, &[], "A")
        .await
        .unwrap();
    // A slow item still based on generation 1 ...
    let mut stale = first.clone();
    // ... while the session moved on to generation 4 (2 was collected).
    for v in 2..=4 {
        std::fs::write(a.ws.join("f"), format!("v{v}")).unwrap();
        p.snapshot(&mut first, &a.ws, &a.out, &[], "B")
            .await
            .unwrap();
    }
    assert_eq!(generations(store.path(), "sesn_stale"), vec![3, 4]);
    let s = session();
    std::fs::write(s.ws.join("f"), "stale").unwrap();
    let r = p.snapshot(&mut stale, &s.ws, &s.out, &[], "A").await;
    assert!(matches!(r, Err(Error::Conflict(2))), "{r:?}");
    assert_eq!(generations(store.path(), "sesn_stale"), vec![3, 4]);
    let c = session();
    p.restore("sesn_stale", &c.ws, &c.out).await;
    assert_eq!(std::fs::read_to_string(c.ws.join("f")).unwrap(), "v4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limits_nothing_is_uploaded() {
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |c| c.max_bytes = 1 << 20);
    let a = session();
    for i in 0..10u8 {
        std::fs::write(a.ws.join(format!("f{i}")), vec![i; 200 << 10]).unwrap();
    }
    let mut st = SessionState::new("sesn_over");
    let r = p.snapshot(&mut st, &a.ws, &a.out, &[], "t").await;
    assert!(matches!(r, Err(Error::TooLarge(_))), "{r:?}");
    assert_eq!(
        objects_in(store.path(), "sesn_over"),
        0,
        "the stat-only pass came first"
    );

    // Names and link targets are bounded too (8,400 links of 4,000 bytes: 33 MB of names,
    // far below max_entries).
    let b = session();
    let target = "t".repeat(4000);
    for i in 0..8400 {
        std::os::unix::fs::symlink(&target, b.ws.join(format!("l{i}"))).unwrap();
    }
    let mut st = SessionState::new("sesn_names");
    let r = p.snapshot(&mut st, &b.ws, &b.out, &[], "t").await;
    assert!(
        matches!(&r, Err(Error::TooLarge(why)) if why.contains("names")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_just_before_a_walk_is_read_again_next_time() {
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let a = session();
    std::fs::write(a.ws.join("old"), "settled").unwrap();
    std::thread::sleep(wasm_sandbox_persist::walk::RACY_WINDOW);
    std::fs::write(a.ws.join("fresh"), "just written").unwrap();
    let mut st = SessionState::new("sesn_racy");
    p.snapshot(&mut st, &a.ws, &a.out, &[], "t").await.unwrap();
    let second = p.snapshot(&mut st, &a.ws, &a.out, &[], "t").await.unwrap();
    // `old` is trusted unread; `fresh` (ctime within the window of the first walk's start) is
    // read again: a same-tick write after the first walk read it would be invisible otherwise.
    assert_eq!(second.stats.cached_files, 1, "{:?}", second.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_reaches_every_session_in_turn_and_leaves_no_folders() {
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |c| c.ttl = std::time::Duration::from_secs(2));
    let a = session();
    std::fs::write(a.ws.join("f"), "x").unwrap();
    for id in ["sesn_b", "sesn_c"] {
        p.snapshot(&mut SessionState::new(id), &a.ws, &a.out, &[], "t")
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    // Young, and first in order: a sweep without a cursor would look only at it.
    p.snapshot(&mut SessionState::new("sesn_a"), &a.ws, &a.out, &[], "t")
        .await
        .unwrap();
    let mut deleted = 0;
    for _ in 0..3 {
        deleted += p.sweep(1).await.unwrap();
    }
    assert_eq!(deleted, 2);
    let left: Vec<_> = std::fs::read_dir(store.path().join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        left,
        vec!["sesn_a".to_owned()],
        "emptied folders are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_while_names_churn_always_restore() {
    // A name deleted and created again during the listing may be returned twice by readdir;
    // every committed generation must still restore (the walk de-duplicates, and a manifest a
    // restore would refuse is never committed). Best effort: how often readdir repeats a name
    // depends on the filesystem.
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let a = session();
    for i in 0..2000 {
        std::fs::write(a.ws.join(format!("n{i:04}")), "x").unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = std::sync::Arc::clone(&stop);
        let ws = a.ws.clone();
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let f = ws.join(format!("n{:04}", i % 2000));
                let _ = std::fs::remove_file(&f);
                let _ = std::fs::write(&f, "y");
                i += 1;
            }
        })
    };
    let mut st = SessionState::new("sesn_churn");
    for _ in 0..10 {
        if let Err(e) = p.snapshot(&mut st, &a.ws, &a.out, &[], "t").await {
            panic!("snapshot failed: {e}");
        }
        let b = session();
        let (_, outcome) = p.restore("sesn_churn", &b.ws, &b.out).await;
        assert!(
            matches!(outcome, RestoreOutcome::Restored { .. }),
            "{outcome:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_added_beside_unchanged_ones_restores() {
    // Found by the check before commit: an empty file whose pack stayed empty (every other
    // small file reused from the previous generation) named a pack that was never written.
    let store = tempfile::tempdir().unwrap();
    let p = persistence(store.path(), |_| {});
    let a = session();
    std::fs::write(a.ws.join("kept"), "unchanged").unwrap();
    let mut st = SessionState::new("sesn_empty");
    p.snapshot(&mut st, &a.ws, &a.out, &[], "t").await.unwrap();
    std::fs::write(a.ws.join("empty"), "").unwrap();
    let second = p.snapshot(&mut st, &a.ws, &a.out, &[], "t").await.unwrap();
    assert_eq!(second.generation, 2);
    let b = session();
    let (_, outcome) = p.restore("sesn_empty", &b.ws, &b.out).await;
    assert!(
        matches!(outcome, RestoreOutcome::Restored { generation: 2, .. }),
        "{outcome:?}"
    );
    assert_eq!(std::fs::read(b.ws.join("empty")).unwrap(), b"");
    assert_eq!(std::fs::read(b.ws.join("kept")).unwrap(), b"unchanged");
}
