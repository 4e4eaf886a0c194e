//! The merge: download, sync, deletes, recovery, races and the flush.

use super::*;

#[tokio::test]
async fn download_writes_the_marker_and_every_memory() {
    let mut s = Store::new(&[("/notes.md", "n1"), ("/people/alice.md", "a1")], false).await;
    assert_eq!(files(&s.root), [MARKER_PATH, "notes.md", "people/alice.md"]);
    assert_eq!(s.read(MARKER_PATH).unwrap(), marker_contents("memstore_1"));
    assert_eq!(s.read("people/alice.md").unwrap(), "a1");
    assert_eq!(s.state.baseline().len(), 2);
    let report = s.sync().await;
    assert_eq!(report.outcome, SyncOutcome::Synced);
    assert_eq!(
        s.api.take_calls(),
        ["list basic"],
        "an unchanged store moves no content"
    );
    assert!(may_dispose(&s.state, &s.folder).await);
    s.folder.remove_root().unwrap();
    assert!(!s.folder.root_exists().unwrap());
}

#[tokio::test]
async fn local_edits_upload_with_a_precondition_and_new_files_are_created() {
    let mut s = Store::new(&[("/notes.md", "n1")], false).await;
    s.write("notes.md", "n2");
    std::fs::create_dir(s.path("sub")).unwrap();
    s.write("sub/new.md", "fresh");
    let report = s.sync().await;
    assert_eq!(report.uploaded, ["notes.md", "sub/new.md"]);
    assert_eq!(
        s.api.take_calls(),
        ["list basic", "update /notes.md", "create /sub/new.md"]
    );
    assert_eq!(s.api.content("/notes.md").unwrap(), "n2");
    assert_eq!(s.api.content("/sub/new.md").unwrap(), "fresh");
    s.sync().await;
    assert_eq!(s.api.take_calls(), ["list basic"]);
}

#[tokio::test]
async fn remote_edits_are_pulled_and_the_remote_wins_a_conflict() {
    let mut s = Store::new(&[("/a.md", "a1"), ("/b.md", "b1")], false).await;
    s.api.put("/a.md", "a2");
    s.api.put("/b.md", "b-remote");
    s.api.put("/c.md", "c-new");
    s.write("b.md", "b-local");
    let report = s.sync().await;
    assert_eq!(report.pulled, ["a.md", "b.md", "c.md"]);
    assert!(report.uploaded.is_empty());
    assert_eq!(s.read("a.md").unwrap(), "a2");
    assert_eq!(s.read("b.md").unwrap(), "b-remote");
    assert_eq!(s.read("c.md").unwrap(), "c-new");
    let calls = s.api.take_calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("update") || c.starts_with("create")),
        "{calls:?}"
    );
    s.sync().await;
    assert_eq!(s.api.take_calls(), ["list basic"]);
}

#[tokio::test]
async fn a_local_delete_waits_30_seconds_and_a_fresh_check() {
    let mut s = Store::new(&[("/keep.md", "k"), ("/gone.md", "g")], false).await;
    std::fs::remove_file(s.path("gone.md")).unwrap();
    for secs in [0, 29] {
        let report = s.sync_at(secs, DeleteMode::Enabled, false).await;
        assert!(
            report.deleted_remote.is_empty(),
            "deleted too early at {secs}s"
        );
    }
    assert!(s.api.content("/gone.md").is_some());
    assert!(s.state.pending_deletes().contains_key("gone.md"));
    let report = s.sync_at(30, DeleteMode::Enabled, false).await;
    assert_eq!(report.deleted_remote, ["gone.md"]);
    assert!(s.api.content("/gone.md").is_none());
    assert!(!s.state.baseline().contains_key("gone.md"));
    assert!(s.api.take_calls().contains(&"delete /gone.md".to_owned()));
}

#[tokio::test]
async fn a_file_that_comes_back_cancels_its_pending_delete() {
    let mut s = Store::new(&[("/keep.md", "k"), ("/flaky.md", "f")], false).await;
    std::fs::remove_file(s.path("flaky.md")).unwrap();
    s.sync_at(0, DeleteMode::Enabled, false).await;
    s.write("flaky.md", "f");
    s.sync_at(10, DeleteMode::Enabled, false).await;
    assert!(s.state.pending_deletes().is_empty());
    std::fs::remove_file(s.path("flaky.md")).unwrap();
    // The window restarts: missing since 40 s, not since 0 s.
    let report = s.sync_at(40, DeleteMode::Enabled, false).await;
    assert!(report.deleted_remote.is_empty());
    let report = s.sync_at(70, DeleteMode::Enabled, false).await;
    assert_eq!(report.deleted_remote, ["flaky.md"]);
}

#[tokio::test]
async fn delete_modes() {
    // The final pass skips the window.
    let mut s = Store::new(&[("/keep.md", "k"), ("/gone.md", "g")], false).await;
    std::fs::remove_file(s.path("gone.md")).unwrap();
    let report = s.sync_at(0, DeleteMode::Enabled, true).await;
    assert_eq!(report.deleted_remote, ["gone.md"]);

    // log_only: the same checks, no request, repeated every sync.
    let mut s = Store::new(&[("/keep.md", "k"), ("/gone.md", "g")], false).await;
    std::fs::remove_file(s.path("gone.md")).unwrap();
    for _ in 0..2 {
        let report = s.sync_at(0, DeleteMode::LogOnly, true).await;
        assert_eq!(report.would_delete, ["gone.md"]);
        assert!(report.deleted_remote.is_empty());
    }
    assert!(s.api.content("/gone.md").is_some());
    assert!(!s.api.take_calls().iter().any(|c| c.starts_with("delete")));
    assert!(s.state.baseline().contains_key("gone.md"));

    // disabled: suppressed, the memory stays.
    let mut s = Store::new(&[("/keep.md", "k"), ("/gone.md", "g")], false).await;
    std::fs::remove_file(s.path("gone.md")).unwrap();
    let report = s.sync_at(100, DeleteMode::Disabled, true).await;
    assert_eq!(report.delete_suppressed, 1);
    assert!(s.api.content("/gone.md").is_some());
    assert!(s.state.pending_deletes().is_empty());
}

#[tokio::test]
async fn deletes_are_capped_per_sync() {
    let names: Vec<String> = (0..12).map(|i| format!("/m{i:02}.md")).collect();
    let files: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
    let mut s = Store::new(&files, false).await;
    for n in &names[..10] {
        std::fs::remove_file(s.path(n.trim_start_matches('/'))).unwrap();
    }
    let report = s.sync_at(0, DeleteMode::Enabled, true).await;
    assert_eq!(report.deleted_remote.len(), 8, "cap = clamp(12 / 4, 8, 50)");
    assert_eq!(report.delete_capped, 2);
    let report = s.sync_at(0, DeleteMode::Enabled, true).await;
    assert_eq!(report.deleted_remote.len(), 2);
    assert_eq!(s.api.0.lock().unwrap().mems.len(), 2);
}

#[tokio::test]
async fn remote_deletes_remove_unchanged_files_and_recreate_edited_ones() {
    let mut s = Store::new(&[("/a.md", "a"), ("/b.md", "b"), ("/c.md", "c")], false).await;
    s.api.remove("/a.md");
    s.api.remove("/b.md");
    s.write("b.md", "b-edited");
    let report = s.sync().await;
    assert_eq!(report.removed_local, ["a.md"]);
    assert_eq!(report.uploaded, ["b.md"]);
    assert!(s.read("a.md").is_none());
    assert_eq!(s.api.content("/b.md").unwrap(), "b-edited");
    assert!(s.api.take_calls().contains(&"create /b.md".to_owned()));
}

#[tokio::test]
async fn read_only_stores_pull_but_never_push_or_delete() {
    let mut s = Store::new(
        &[
            ("/a.md", "a"),
            ("/b.md", "b"),
            ("/c.md", "c"),
            ("/d.md", "d"),
        ],
        true,
    )
    .await;
    s.write("a.md", "a-local");
    std::fs::remove_file(s.path("b.md")).unwrap();
    s.write("new.md", "new");
    s.api.put("/c.md", "c2");
    s.api.remove("/d.md");
    let report = s.sync_at(100, DeleteMode::Enabled, true).await;
    assert_eq!(report.pulled, ["c.md"]);
    assert_eq!(report.removed_local, ["d.md"]);
    assert!(report.uploaded.is_empty() && report.deleted_remote.is_empty());
    let calls = s.api.take_calls();
    assert!(
        calls
            .iter()
            .all(|c| c.starts_with("list") || c.starts_with("fetch")),
        "{calls:?}"
    );
    assert_eq!(s.api.content("/a.md").unwrap(), "a");
    assert_eq!(s.api.content("/b.md").unwrap(), "b");
    assert_eq!(s.read("c.md").unwrap(), "c2");
    let flush = flush_store(&mut s.state, &s.folder, &s.api).await;
    assert!(flush.uploaded.is_empty());
    assert!(
        s.api.take_calls().is_empty(),
        "a read-only flush makes no calls"
    );
}

#[tokio::test]
async fn a_refused_file_is_retried_only_after_it_changes() {
    let mut s = Store::new(&[("/keep.md", "k")], false).await;
    s.write("big.md", "too big");
    s.api
        .0
        .lock()
        .unwrap()
        .fail
        .insert("create /big.md".into(), 413);
    let report = s.sync().await;
    assert!(report.uploaded.is_empty());
    assert_eq!(
        s.state.refused().get("big.md"),
        Some(&sha256_hex(b"too big"))
    );
    s.api.take_calls();
    s.sync().await;
    assert_eq!(
        s.api.take_calls(),
        ["list basic"],
        "not retried while unchanged"
    );
    s.write("big.md", "smaller");
    let report = s.sync().await;
    assert_eq!(report.uploaded, ["big.md"]);
    assert!(s.state.refused().is_empty());
    // A non-UTF-8 file is refused locally, without a request.
    std::fs::write(s.path("bin.md"), b"\xff\xfe").unwrap();
    s.api.take_calls();
    s.sync().await;
    assert_eq!(s.api.take_calls(), ["list basic"]);
    assert!(s.state.refused().contains_key("bin.md"));
}

#[tokio::test]
async fn a_wiped_folder_is_redownloaded_not_deleted() {
    let mut s = Store::new(&[("/a.md", "a"), ("/b.md", "b")], false).await;
    std::fs::remove_file(s.path("a.md")).unwrap();
    std::fs::remove_file(s.path("b.md")).unwrap();
    let report = s.sync_at(100, DeleteMode::Enabled, true).await;
    assert!(
        matches!(report.outcome, SyncOutcome::Recovered(_)),
        "{report:?}"
    );
    assert_eq!(files(&s.root), [MARKER_PATH, "a.md", "b.md"]);
    assert!(!s.api.take_calls().iter().any(|c| c.starts_with("delete")));
    // The whole folder gone: also re-downloaded.
    std::fs::remove_dir_all(&s.root).unwrap();
    let report = s.sync().await;
    assert!(
        matches!(report.outcome, SyncOutcome::Recovered(_)),
        "{report:?}"
    );
    assert_eq!(files(&s.root), [MARKER_PATH, "a.md", "b.md"]);
}

#[tokio::test]
async fn a_foreign_or_missing_marker_with_files_is_left_alone() {
    let mut s = Store::new(&[("/a.md", "a")], false).await;
    s.write(MARKER_PATH, &marker_contents("memstore_OTHER"));
    s.write("a.md", "edited");
    let report = s.sync_at(100, DeleteMode::Enabled, true).await;
    assert!(
        matches!(report.outcome, SyncOutcome::Distrusted(_)),
        "{report:?}"
    );
    assert!(s.api.take_calls().is_empty());
    let flush = flush_store(&mut s.state, &s.folder, &s.api).await;
    assert!(flush.skipped_reason.is_some() && flush.uploaded.is_empty());
    assert!(
        !may_dispose(&s.state, &s.folder).await,
        "a foreign folder with files is kept"
    );
    std::fs::remove_file(s.path(MARKER_PATH)).unwrap();
    let report = s.sync().await;
    assert!(matches!(report.outcome, SyncOutcome::Distrusted(_)));
    assert!(s.api.take_calls().is_empty());
    assert_eq!(s.api.content("/a.md").unwrap(), "a");
}

#[tokio::test]
async fn a_lost_precondition_race_drops_the_local_edit() {
    let mut s = Store::new(&[("/notes.md", "v1")], false).await;
    s.write("notes.md", "local");
    s.api
        .0
        .lock()
        .unwrap()
        .race
        .insert("/notes.md".into(), "someone else".into());
    let report = s.sync().await;
    assert!(report.uploaded.is_empty());
    assert_eq!(s.api.content("/notes.md").unwrap(), "someone else");
    let report = s.sync().await;
    assert_eq!(report.pulled, ["notes.md"]);
    assert_eq!(s.read("notes.md").unwrap(), "someone else");
}

#[tokio::test]
async fn an_upload_whose_response_was_lost_is_settled_by_the_next_listing() {
    let mut s = Store::new(&[("/notes.md", "v1")], false).await;
    s.write("notes.md", "v2");
    s.api
        .0
        .lock()
        .unwrap()
        .save_then_fail
        .insert("update /notes.md".into());
    let report = s.sync().await;
    assert!(report.uploaded.is_empty());
    assert_eq!(
        s.api.content("/notes.md").unwrap(),
        "v2",
        "the server saved it"
    );
    // A newer edit goes out over the unheard upload instead of losing to it.
    s.write("notes.md", "v3");
    s.api.take_calls();
    let report = s.sync().await;
    assert_eq!(report.uploaded, ["notes.md"]);
    assert!(report.pulled.is_empty());
    assert_eq!(s.api.take_calls(), ["list basic", "update /notes.md"]);
    assert_eq!(s.api.content("/notes.md").unwrap(), "v3");
    assert_eq!(s.read("notes.md").unwrap(), "v3");
}

#[tokio::test]
async fn flush_pushes_changes_only() {
    let mut s = Store::new(
        &[
            ("/a.md", "a"),
            ("/c.md", "c"),
            ("/d.md", "d"),
            ("/e.md", "e"),
        ],
        false,
    )
    .await;
    s.write("a.md", "a2");
    s.write("b.md", "b-new");
    std::fs::remove_file(s.path("c.md")).unwrap();
    s.api.put("/d.md", "d-remote");
    s.write("e.md", "e-local");
    s.api.put("/e.md", "e-remote");
    let report = flush_store(&mut s.state, &s.folder, &s.api).await;
    assert_eq!(report.uploaded, ["a.md", "b.md"]);
    assert_eq!(report.not_uploaded, ["e.md"]);
    let mut calls = s.api.take_calls();
    calls.sort();
    assert_eq!(calls, ["create /b.md", "list basic", "update /a.md"]);
    assert_eq!(s.api.content("/c.md").unwrap(), "c", "no deletes");
    assert_eq!(s.read("d.md").unwrap(), "d", "no pulls");
    assert_eq!(s.api.content("/e.md").unwrap(), "e-remote");
    // The conflicting file stays dirty (the flush cannot pull); once it matches the
    // baseline again, nothing is dirty and the flush makes no calls at all.
    let report = flush_store(&mut s.state, &s.folder, &s.api).await;
    assert_eq!(report.not_uploaded, ["e.md"]);
    assert_eq!(s.api.take_calls(), ["list basic"]);
    s.write("e.md", "e");
    let report = flush_store(&mut s.state, &s.folder, &s.api).await;
    assert!(report.uploaded.is_empty() && report.not_uploaded.is_empty());
    assert_eq!(s.api.take_calls(), Vec::<String>::new());
}
