//! The store folder stays inside its root; the engine's futures are `Send`.

use super::*;

#[tokio::test]
async fn hostile_paths_and_symlinks_stay_inside_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, "precious").unwrap();
    let mut s = Store::new(
        &[
            ("/ok.md", "ok"),
            ("/../../escape.md", "pwn"),
            (&format!("/{MARKER_PATH}"), "x"),
        ],
        false,
    )
    .await;
    // The escaping path was refused, the reserved marker path skipped.
    assert_eq!(files(&s.root), [MARKER_PATH, "ok.md"]);
    assert_eq!(s.read(MARKER_PATH).unwrap(), marker_contents("memstore_1"));
    assert!(!s.root.parent().unwrap().join("escape.md").exists());
    // A symlink the agent leaves in the folder is neither uploaded nor followed.
    std::os::unix::fs::symlink(&outside, s.path("link.md")).unwrap();
    s.api.take_calls();
    s.sync().await;
    assert!(!s.api.take_calls().iter().any(|c| c.contains("link.md")));
    // A pull over a symlink replaces the link, never writes through it.
    std::fs::remove_file(s.path("ok.md")).unwrap();
    std::os::unix::fs::symlink(&outside, s.path("ok.md")).unwrap();
    s.api.put("/ok.md", "ok2");
    s.sync().await;
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    assert_eq!(s.read("ok.md").unwrap(), "ok2");
    assert!(
        !std::fs::symlink_metadata(s.path("ok.md"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn folder_writes_never_recreate_a_vanished_root() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = CapStdFolder::new(tmp.path().join("store"));
    let err = folder.write_file("a.md", "x").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(!folder.root_exists().unwrap());
    folder.create_root().await.unwrap();
    folder.write_file("deep/er/a.md", "x").await.unwrap();
    assert_eq!(
        folder.hash_file("deep/er/a.md").await.unwrap(),
        Some(sha256_hex(b"x"))
    );
    assert!(folder.write_file("../a.md", "x").await.is_err());
    assert!(folder.write_file("dir/", "x").await.is_err());
    assert_eq!(folder.scan().await.unwrap().len(), 1);
    folder.remove_root().unwrap();
    assert!(folder.scan().await.unwrap().is_empty());
}

#[test]
fn engine_futures_are_send() {
    // The worker runs stores in parallel on a multi-threaded runtime: this must keep compiling.
    fn assert_send<T: Send>(_: T) {}
    let folder = CapStdFolder::new("/nonexistent/store");
    let api = FakeApi::default();
    let mut state = StoreSyncState::new("memstore_1", false);
    let opts = SyncOptions {
        mode: DeleteMode::Enabled,
        final_pass: false,
        now: Instant::now(),
    };
    assert_send(sync_store(&mut state, &folder, &api, opts));
    assert_send(flush_store(&mut state, &folder, &api));
    assert_send(download_store(&mut state, &folder, &api));
    assert!(state.baseline().is_empty(), "unpolled futures do nothing");
}
