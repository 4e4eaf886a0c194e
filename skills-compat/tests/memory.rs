//! The memory sync engine against a fake memory API and a real folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasm_sandbox_skills::memory::folder::CapStdFolder;
use wasm_sandbox_skills::memory::{
    DeleteMode, LocalRead, MARKER_PATH, MAX_MEMORY_BYTES, MemoryApi, MemoryFolder, RemoteError,
    RemoteMemory, StoreSyncState, SyncOptions, SyncOutcome, download_store, flush_store,
    marker_contents, may_dispose, sha256_hex, sync_store,
};

#[derive(Default)]
struct Server {
    /// wire path -> (id, content)
    mems: BTreeMap<String, (String, String)>,
    next_id: u32,
    calls: Vec<String>,
    /// "op /path" -> status to fail with (once)
    fail: BTreeMap<String, u16>,
    /// "op /path": apply, then fail with 500 (the response is lost)
    save_then_fail: BTreeSet<String>,
    /// "/path" -> content the server switches to just before an update is checked
    race: BTreeMap<String, String>,
}

#[derive(Default)]
struct FakeApi(Mutex<Server>);

fn err(status: u16) -> RemoteError {
    RemoteError {
        status: Some(status),
        message: "fake".into(),
    }
}

impl FakeApi {
    fn with(files: &[(&str, &str)]) -> Self {
        let api = Self::default();
        for (p, c) in files {
            api.put(p, c);
        }
        api
    }

    fn put(&self, path: &str, content: &str) {
        let mut s = self.0.lock().unwrap();
        let id = match s.mems.get(path) {
            Some((id, _)) => id.clone(),
            None => {
                s.next_id += 1;
                format!("mem_{}", s.next_id)
            }
        };
        s.mems.insert(path.to_owned(), (id, content.to_owned()));
    }

    fn remove(&self, path: &str) {
        self.0.lock().unwrap().mems.remove(path);
    }

    fn content(&self, path: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .mems
            .get(path)
            .map(|(_, c)| c.clone())
    }

    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap().calls)
    }

    fn check(&self, op: &str, path: &str) -> Result<(), RemoteError> {
        let mut s = self.0.lock().unwrap();
        let key = format!("{op} {path}");
        s.calls.push(key.clone());
        match s.fail.remove(&key) {
            Some(status) => Err(err(status)),
            None => Ok(()),
        }
    }

    fn lost_response(&self, op: &str, path: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .save_then_fail
            .remove(&format!("{op} {path}"))
    }

    fn path_of(&self, id: &str) -> Option<String> {
        let s = self.0.lock().unwrap();
        s.mems
            .iter()
            .find(|(_, (i, _))| i == id)
            .map(|(p, _)| p.clone())
    }
}

impl MemoryApi for FakeApi {
    async fn list(&self, full: bool) -> Result<Vec<RemoteMemory>, RemoteError> {
        let mut s = self.0.lock().unwrap();
        s.calls
            .push(format!("list {}", if full { "full" } else { "basic" }));
        Ok(s.mems
            .iter()
            .map(|(path, (id, content))| RemoteMemory {
                id: id.clone(),
                path: path.clone(),
                content_sha256: sha256_hex(content.as_bytes()),
                content: full.then(|| content.clone()),
            })
            .collect())
    }

    async fn fetch(&self, memory_id: &str) -> Result<RemoteMemory, RemoteError> {
        let path = self.path_of(memory_id).ok_or_else(|| err(404))?;
        self.check("fetch", &path)?;
        let (id, content) = self.0.lock().unwrap().mems[&path].clone();
        Ok(RemoteMemory {
            id,
            content_sha256: sha256_hex(content.as_bytes()),
            path,
            content: Some(content),
        })
    }

    async fn create(&self, path: &str, content: &str) -> Result<String, RemoteError> {
        self.check("create", path)?;
        if self.content(path).is_some() {
            return Err(err(409));
        }
        self.put(path, content);
        if self.lost_response("create", path) {
            return Err(err(500));
        }
        Ok(sha256_hex(content.as_bytes()))
    }

    async fn update(
        &self,
        memory_id: &str,
        content: &str,
        precondition_sha: &str,
    ) -> Result<String, RemoteError> {
        let path = self.path_of(memory_id).ok_or_else(|| err(404))?;
        self.check("update", &path)?;
        let racing = self.0.lock().unwrap().race.remove(&path);
        if let Some(racing) = racing {
            self.put(&path, &racing);
        }
        if sha256_hex(self.content(&path).unwrap_or_default().as_bytes()) != precondition_sha {
            return Err(err(409));
        }
        self.put(&path, content);
        if self.lost_response("update", &path) {
            return Err(err(500));
        }
        Ok(sha256_hex(content.as_bytes()))
    }

    async fn delete(&self, memory_id: &str, expected_sha: &str) -> Result<(), RemoteError> {
        let path = self.path_of(memory_id).ok_or_else(|| err(404))?;
        self.check("delete", &path)?;
        if sha256_hex(self.content(&path).unwrap_or_default().as_bytes()) != expected_sha {
            return Err(err(409));
        }
        self.remove(&path);
        Ok(())
    }
}

struct Store {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    folder: CapStdFolder,
    api: FakeApi,
    state: StoreSyncState,
    t0: Instant,
}

impl Store {
    async fn new(files: &[(&str, &str)], read_only: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("mnt/memory/prefs");
        let folder = CapStdFolder::new(&root);
        assert!(!folder.root_exists().unwrap());
        folder.create_root().await.unwrap();
        let api = FakeApi::with(files);
        let mut state = StoreSyncState::new("memstore_1", read_only);
        download_store(&mut state, &folder, &api).await.unwrap();
        api.take_calls();
        Self {
            _tmp: tmp,
            root,
            folder,
            api,
            state,
            t0: Instant::now(),
        }
    }

    async fn sync_at(
        &mut self,
        secs: u64,
        mode: DeleteMode,
        final_pass: bool,
    ) -> wasm_sandbox_skills::memory::SyncReport {
        let opts = SyncOptions {
            mode,
            final_pass,
            now: self.t0 + Duration::from_secs(secs),
        };
        sync_store(&mut self.state, &self.folder, &self.api, opts).await
    }

    async fn sync(&mut self) -> wasm_sandbox_skills::memory::SyncReport {
        self.sync_at(0, DeleteMode::Enabled, false).await
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }

    fn write(&self, rel: &str, content: &str) {
        std::fs::write(self.path(rel), content).unwrap();
    }
}

fn files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                out.push(
                    e.path()
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    if root.exists() {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

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

/// Orders the tests that allocate megabytes, so none inflates another's peak-RSS reading.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`).
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS (`clear_refs` value 5, Linux
/// 4.0+).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Issue 11: four 256 MiB files written by bash into a read-write store took the worker from
/// 122 MiB to 3.2 GiB RSS in the end-of-session flush, which read each whole. Here four
/// 64 MiB files (sparse: cheap to make, and all-NUL content is valid UTF-8, so the old code
/// read and uploaded them whole) must be skipped — never read, never sent, counted — and the
/// process's peak RSS must grow by far less than one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_files_are_skipped_without_being_read() {
    let _heavy = HEAVY.lock().await;
    const BIG: u64 = 64 << 20;
    let mut s = Store::new(&[("/small.md", "s")], false).await;
    for i in 0..4 {
        let f = std::fs::File::create(s.path(&format!("big{i}.md"))).unwrap();
        f.set_len(BIG).unwrap();
    }
    let at_cap = "a".repeat(MAX_MEMORY_BYTES as usize);
    s.write("at-cap.md", &at_cap);
    s.write("over-cap.md", &"a".repeat(MAX_MEMORY_BYTES as usize + 1));
    s.write("small.md", "s2");

    let measured = reset_peak_rss();
    let before = proc_status_kib("VmHWM:");
    let report = flush_store(&mut s.state, &s.folder, &s.api).await;
    let after = proc_status_kib("VmHWM:");

    assert_eq!(report.uploaded, ["at-cap.md", "small.md"]);
    assert_eq!(
        report.refused_local,
        ["big0.md", "big1.md", "big2.md", "big3.md", "over-cap.md"]
    );
    let mut calls = s.api.take_calls();
    calls.sort();
    assert_eq!(
        calls,
        ["create /at-cap.md", "list basic", "update /small.md"],
        "no request carries an over-size file"
    );
    assert_eq!(s.api.content("/at-cap.md").unwrap(), at_cap);
    for i in 0..4 {
        assert!(s.api.content(&format!("/big{i}.md")).is_none());
        assert!(s.state.refused().contains_key(&format!("big{i}.md")));
    }
    match (measured, before, after) {
        (true, Some(before), Some(after)) => {
            let grew_mib = after.saturating_sub(before) / 1024;
            eprintln!("peak RSS grew by {grew_mib} MiB during the flush");
            assert!(
                grew_mib < 32,
                "the flush grew the peak RSS by {grew_mib} MiB: over-size files were read"
            );
        }
        _ => eprintln!(
            "skipping the RSS assertion: /proc/self/clear_refs or VmHWM is unavailable here"
        ),
    }

    // The periodic sync neither re-reads nor retries them while they are unchanged...
    let report = s.sync().await;
    assert!(report.uploaded.is_empty() && report.refused_local.is_empty());
    assert_eq!(s.api.take_calls(), ["list basic"]);
    // ...and a file brought under the cap uploads on the next pass.
    std::fs::File::options()
        .write(true)
        .open(s.path("big0.md"))
        .unwrap()
        .set_len(3)
        .unwrap();
    let report = s.sync().await;
    assert_eq!(report.uploaded, ["big0.md"]);
    assert_eq!(s.api.content("/big0.md").unwrap(), "\0\0\0");
    // The folder's own read refuses without reading.
    assert!(matches!(
        s.folder.read_file("big1.md").await.unwrap(),
        LocalRead::Refused(reason) if reason.contains("102400")
    ));
}

/// Drives `fut` with a deadline; on expiry opens the FIFO's write end (which releases a
/// reader blocked in `open`) so the failing test cannot hang, then panics.
async fn within<T>(what: &str, fifo: &Path, fut: impl std::future::Future<Output = T>) -> T {
    use std::os::unix::fs::OpenOptionsExt as _;
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(v) => v,
        Err(_) => {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo);
            panic!("{what} blocked on a FIFO in the store");
        }
    }
}

/// A FIFO that bash leaves in a read-write store (as a new file, and in place of a synced
/// memory) is skipped: the scan, the delete re-check, the flush and a direct read all return
/// at once instead of blocking a worker thread in `open`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_the_store_is_skipped_without_blocking() {
    let mut s = Store::new(&[("/a.md", "a")], false).await;
    let make_fifo = |rel: &str| {
        let path =
            std::ffi::CString::new(s.path(rel).into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        unsafe { libc::mkfifo(path.as_ptr(), 0o600) == 0 }
    };
    if !make_fifo("pipe.md") {
        eprintln!(
            "skipping: mkfifo failed here: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    std::fs::remove_file(s.path("a.md")).unwrap();
    assert!(make_fifo("a.md"));
    s.write("new.md", "n");
    let pipe = s.path("pipe.md");

    let report = within("the sync", &pipe, s.sync_at(0, DeleteMode::Enabled, true)).await;
    assert_eq!(report.uploaded, ["new.md"]);
    assert!(report.deleted_remote.is_empty(), "{report:?}");
    let report = within(
        "the flush",
        &pipe,
        flush_store(&mut s.state, &s.folder, &s.api),
    )
    .await;
    assert!(report.uploaded.is_empty(), "{report:?}");
    let calls = s.api.take_calls();
    assert!(!calls.iter().any(|c| c.contains("pipe")), "{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("delete")), "{calls:?}");
    assert_eq!(s.api.content("/a.md").unwrap(), "a");
    let read = within("a read", &pipe, s.folder.read_file("pipe.md")).await;
    assert!(matches!(read.unwrap(), LocalRead::Refused(_)));
    let hash = within("a hash", &pipe, s.folder.hash_file("a.md")).await;
    assert!(hash.is_err(), "a FIFO has no content hash: {hash:?}");
}

/// Counts the file bytes that uploads hold at once, across every store using it.
#[derive(Default)]
struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
}

/// A [`FakeApi`] whose creates take a while and report their content to a shared [`Gauge`].
struct SlowApi<'a> {
    inner: &'a FakeApi,
    gauge: &'a Gauge,
}

impl MemoryApi for SlowApi<'_> {
    async fn list(&self, full: bool) -> Result<Vec<RemoteMemory>, RemoteError> {
        self.inner.list(full).await
    }

    async fn fetch(&self, memory_id: &str) -> Result<RemoteMemory, RemoteError> {
        self.inner.fetch(memory_id).await
    }

    async fn create(&self, path: &str, content: &str) -> Result<String, RemoteError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.gauge.now.fetch_add(content.len(), SeqCst) + content.len();
        self.gauge.max.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.gauge.now.fetch_sub(content.len(), SeqCst);
        self.inner.create(path, content).await
    }

    async fn update(
        &self,
        memory_id: &str,
        content: &str,
        precondition_sha: &str,
    ) -> Result<String, RemoteError> {
        self.inner
            .update(memory_id, content, precondition_sha)
            .await
    }

    async fn delete(&self, memory_id: &str, expected_sha: &str) -> Result<(), RemoteError> {
        self.inner.delete(memory_id, expected_sha).await
    }
}

/// Three stores flushing 40 largest-size memories each at once (as several sessions ending
/// together would) never hold more than `UPLOAD_BYTES_IN_FLIGHT` of file content between
/// them; per-store concurrency alone would let them hold 9.6 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_hold_a_bounded_number_of_bytes_across_stores() {
    let _heavy = HEAVY.lock().await;
    use wasm_sandbox_skills::memory::UPLOAD_BYTES_IN_FLIGHT;
    let body = "m".repeat(MAX_MEMORY_BYTES as usize);
    let mut stores = Vec::new();
    for _ in 0..3 {
        let s = Store::new(&[], false).await;
        for i in 0..40 {
            s.write(&format!("m{i:02}.md"), &body);
        }
        stores.push(s);
    }
    let gauge = Gauge::default();
    let reports = futures::future::join_all(stores.iter_mut().map(|s| {
        let Store {
            state, folder, api, ..
        } = s;
        let api = SlowApi {
            inner: api,
            gauge: &gauge,
        };
        async move { flush_store(state, folder, &api).await }
    }))
    .await;
    for r in &reports {
        assert_eq!(r.uploaded.len(), 40, "{r:?}");
    }
    let max = gauge.max.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("at most {max} bytes of memory content were in flight");
    assert!(
        max <= UPLOAD_BYTES_IN_FLIGHT,
        "{max} bytes in flight, over the {UPLOAD_BYTES_IN_FLIGHT} budget"
    );
    assert!(
        max >= 2 * MAX_MEMORY_BYTES as usize,
        "uploads still overlap"
    );
}
