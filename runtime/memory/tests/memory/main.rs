//! The memory sync engine against a fake memory API and a real folder.
//!
//! This file holds the fakes ([`FakeApi`], [`Store`]); the tests are in [`sync`] (the merge,
//! deletes, recovery, flush), [`folder`] (the store folder's confinement) and [`bounds`]
//! (memory and blocking bounds against hostile store contents).

mod bounds;
mod folder;
mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasm_sandbox_memory::folder::CapStdFolder;
use wasm_sandbox_memory::{
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
    ) -> wasm_sandbox_memory::SyncReport {
        let opts = SyncOptions {
            mode,
            final_pass,
            now: self.t0 + Duration::from_secs(secs),
        };
        sync_store(&mut self.state, &self.folder, &self.api, opts).await
    }

    async fn sync(&mut self) -> wasm_sandbox_memory::SyncReport {
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
