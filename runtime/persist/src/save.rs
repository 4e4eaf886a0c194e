//! Saving a generation: the stat-only limit pass, the walk and upload, the commit (the
//! generation CAS) and the clean-up of what no kept generation needs.
//!
//! - **Over the limits, nothing is uploaded.** A stat-only pass checks entries, file bytes and
//!   name bytes first ([`crate::walk::Walker::measure`]).
//! - **Never commits what a restore would refuse.** The manifest is run through the restore's
//!   own [`crate::restore::validate`] and size cap before the put.
//! - **Generation CAS, with stale writers fenced.** Before the create-only put the writer lists
//!   the session's generations: any generation at or above the one it is about to write means
//!   another writer moved on (or garbage collection raced a stale writer that would otherwise
//!   re-create a collected generation number): a conflict, dropped. A put answered
//!   `AlreadyExists` is read back: the manifest's random nonce tells a commit of this very
//!   writer whose answer was lost (a timeout and a retry) from another writer's.
//! - **Clean-up only by the newest writer.** After a commit, generations and objects are
//!   collected only when the writer's generation is still the newest listed; otherwise it
//!   leaves everything to the writer that moved on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use futures::{StreamExt as _, TryStreamExt as _};
use ring::rand::SecureRandom as _;

use crate::manifest::{self, Manifest, Root};
use crate::{
    Error, GC_GRACE, KEEP_GENERATIONS, Persistence, SessionState, SnapshotOutcome, restore,
    unix_ms, walk,
};

/// Aborts a task when dropped (a dropped snapshot future stops its uploader, whose closed
/// channel then stops the walk).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn random_nonce() -> Result<String, Error> {
    let mut n = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| Error::Io(std::io::Error::other("no randomness for a nonce")))?;
    Ok(crate::store::hex(&n))
}

impl Persistence {
    /// Saves `workspace` and `outputs` as the next generation of the session. `exclude` are
    /// paths relative to `workspace` not saved (installed skills during a checkpoint).
    /// Returns [`Error::Conflict`] when another item wrote that generation (or a later one)
    /// first (the state is then marked superseded and later calls return the same without
    /// writing), [`Error::TooLarge`] over a limit (the previous generation stays; nothing was
    /// uploaded), and [`Error::Skipped`] without writing when the item's restore failed
    /// without proving the stored snapshot bad ([`SessionState::skip_saves`]).
    pub async fn snapshot(
        &self,
        state: &mut SessionState,
        workspace: &std::path::Path,
        outputs: &std::path::Path,
        exclude: &[String],
        writer: &str,
    ) -> Result<SnapshotOutcome, Error> {
        let generation = state.base.map_or(1, |b| b + 1);
        if state.superseded {
            self.stats
                .snapshots_conflict
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::Conflict(generation));
        }
        if let Some(why) = &state.skip_saves {
            self.stats.snapshots_skipped.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Skipped(why.clone()));
        }
        let r = self
            .snapshot_inner(state, generation, workspace, outputs, exclude, writer)
            .await;
        let counter = match &r {
            Ok(_) => &self.stats.snapshots_ok,
            Err(Error::TooLarge(_)) => &self.stats.snapshots_too_large,
            Err(Error::Conflict(_)) => {
                state.superseded = true;
                &self.stats.snapshots_conflict
            }
            Err(_) => &self.stats.snapshots_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// The stat-only pass: fails with [`Error::TooLarge`] before anything is read or uploaded.
    async fn measure(
        &self,
        workspace: &std::path::Path,
        outputs: &std::path::Path,
        exclude: &[Vec<u8>],
    ) -> Result<(), Error> {
        let (max_bytes, max_entries) = (self.cfg.max_bytes, self.cfg.max_entries);
        let ws = workspace.to_owned();
        let out = outputs.to_owned();
        let exclude = exclude.to_vec();
        tokio::task::spawn_blocking(move || {
            let name_of = |_: &[u8; 32]| String::new();
            let mut upload = |_: String, _: Vec<u8>| -> Result<(), Error> { Ok(()) };
            let mut w = walk::Walker::measure(max_bytes, max_entries, &name_of, &mut upload);
            w.walk(Root::Workspace, &ws, &exclude)?;
            w.walk(Root::Outputs, &out, &[])
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
    }

    async fn snapshot_inner(
        &self,
        state: &mut SessionState,
        generation: u64,
        workspace: &std::path::Path,
        outputs: &std::path::Path,
        exclude: &[String],
        writer: &str,
    ) -> Result<SnapshotOutcome, Error> {
        let session_id = state.session_id.clone();
        if !crate::valid_session_id(&session_id) {
            return Err(Error::Invalid(format!(
                "session id {session_id:?} is not usable"
            )));
        }
        let exclude: Vec<Vec<u8>> = exclude.iter().map(|s| s.as_bytes().to_vec()).collect();
        self.measure(workspace, outputs, &exclude).await?;
        // The walk runs on a blocking thread and hands objects to an uploader (8 in flight),
        // which stops at its first error (the walk then stops at its next send).
        let (tx, rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(8);
        let store = self.store.clone();
        let sid = session_id.clone();
        let uploader = AbortOnDrop(tokio::spawn(async move {
            crate::tokio_stream_compat(rx)
                .map(Ok::<_, Error>)
                .try_for_each_concurrent(8, |(name, data)| {
                    let store = store.clone();
                    let sid = sid.clone();
                    async move { store.put_object(&sid, &name, data).await }
                })
                .await
        }));
        let prev = state.prev.clone();
        let old_cache = Arc::clone(&state.files);
        let (max_bytes, max_entries) = (self.cfg.max_bytes, self.cfg.max_entries);
        let ws = workspace.to_owned();
        let out = outputs.to_owned();
        let store = self.store.clone();
        let walked = tokio::task::spawn_blocking(move || {
            let name_of = |h: &[u8; 32]| store.object_name(h);
            let mut upload = |name: String, data: Vec<u8>| -> Result<(), Error> {
                tx.blocking_send((name, data))
                    .map_err(|_| Error::Io(std::io::Error::other("the uploader stopped")))
            };
            let mut w = walk::Walker::new(
                max_bytes,
                max_entries,
                &name_of,
                &mut upload,
                prev.as_deref(),
            );
            w.old_cache = old_cache;
            w.walk(Root::Workspace, &ws, &exclude)?;
            w.walk(Root::Outputs, &out, &[])?;
            w.finish()?;
            Ok::<_, Error>((w.entries, w.objects, w.stats, w.new_cache))
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        // The walk's sender is gone once it returned: the uploader drains and ends.
        let mut uploader = uploader;
        let uploaded = (&mut uploader.0)
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        // The uploader's error first: a walk stopped by it says only "the uploader stopped".
        uploaded?;
        let (entries, objects, stats, cache) = walked?;
        let m = Manifest {
            session_id: session_id.clone(),
            generation,
            created_unix_ms: unix_ms(),
            writer: writer.to_owned(),
            nonce: random_nonce()?,
            file_bytes: stats.file_bytes,
            objects,
            entries,
        };
        // Never commit what a restore would refuse (it would start the next item empty).
        let encoded = m.encode();
        let cap = manifest::manifest_cap(max_bytes, max_entries);
        if encoded.len() as u64 > cap {
            return Err(Error::TooLarge(format!(
                "the manifest would be {} bytes, over the {cap} a restore reads",
                encoded.len()
            )));
        }
        restore::validate(&m, max_bytes, max_entries).map_err(|e| match e {
            e @ Error::TooLarge(_) => e,
            e => Error::Invalid(format!(
                "the walk made a manifest a restore would refuse ({e}); not committed"
            )),
        })?;
        // Fence: a generation at or above ours means another writer moved on (or collected
        // what we are based on): committing would resurrect a stale line.
        if let Some(newest) = self.store.generations(&session_id).await?.last()
            && newest.generation >= generation
        {
            return Err(Error::Conflict(generation));
        }
        if !self
            .store
            .put_manifest(&session_id, generation, encoded)
            .await?
            && !self.own_commit(&m).await?
        {
            return Err(Error::Conflict(generation));
        }
        let older = state.prev.replace(Arc::new(m));
        state.base = Some(generation);
        state.files = Arc::new(cache);
        self.collect(
            &session_id,
            generation,
            state.prev.as_deref(),
            older.as_deref(),
        )
        .await;
        Ok(SnapshotOutcome { generation, stats })
    }

    /// After a create-only put answered "exists": whether the stored generation is `m` itself
    /// (an earlier try of the same put committed and its answer was lost).
    async fn own_commit(&self, m: &Manifest) -> Result<bool, Error> {
        let cap = manifest::manifest_cap(self.cfg.max_bytes, self.cfg.max_entries);
        let stored = self
            .store
            .get_manifest(&m.session_id, m.generation, cap)
            .await;
        Ok(match stored.and_then(|d| Manifest::decode(&d)) {
            Ok(s) => s.nonce == m.nonce && !m.nonce.is_empty(),
            // Another key's or a damaged manifest is not ours.
            Err(Error::Corrupt(_) | Error::Key(_)) => false,
            Err(e) => return Err(e),
        })
    }

    /// Deletes generations older than the newest [`KEEP_GENERATIONS`] and objects referenced
    /// by neither kept manifest and older than [`GC_GRACE`]. Only when `newest` is still the
    /// newest generation listed (a writer that was overtaken leaves the clean-up to the one that
    /// overtook it). Best effort, logged.
    async fn collect(
        &self,
        session_id: &str,
        newest: u64,
        latest: Option<&Manifest>,
        previous: Option<&Manifest>,
    ) {
        let gens = match self.store.generations(session_id).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot clean-up: listing failed");
                return;
            }
        };
        if gens.last().map(|g| g.generation) != Some(newest) {
            tracing::info!(
                newest,
                "snapshot clean-up skipped: another writer is ahead of this one"
            );
            return;
        }
        let keep_from = newest.saturating_sub(KEEP_GENERATIONS as u64 - 1);
        let old: Vec<_> = gens
            .iter()
            .filter(|g| g.generation < keep_from)
            .filter_map(|g| self.store.gen_location(session_id, g.generation).ok())
            .collect();
        if !old.is_empty() {
            self.store.delete_paths(old).await;
        }
        // Objects: only when both kept manifests are known (otherwise we cannot tell what the
        // older kept one needs).
        let (Some(latest), Some(previous)) = (latest, previous) else {
            return;
        };
        if previous.generation + 1 != latest.generation {
            return;
        }
        let objs = match self.store.objects(session_id).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot clean-up: listing objects failed");
                return;
            }
        };
        let now = SystemTime::now();
        let dead: Vec<_> = objs
            .into_iter()
            .filter(|o| {
                let name = o.location.filename().unwrap_or("");
                !latest.objects.contains_key(name)
                    && !previous.objects.contains_key(name)
                    && now
                        .duration_since(o.last_modified.into())
                        .is_ok_and(|age| age > GC_GRACE)
            })
            .filter_map(|o| {
                self.store
                    .obj_location(session_id, o.location.filename()?)
                    .ok()
            })
            .collect();
        if !dead.is_empty() {
            let n = self.store.delete_paths(dead).await;
            tracing::debug!(
                deleted = n,
                "snapshot clean-up: unreferenced objects deleted"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lost_answer_to_our_own_commit_is_not_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let p = Persistence::open(&crate::PersistenceConfig::new(format!(
            "file://{}",
            dir.path().display()
        )))
        .unwrap();
        let mut m = Manifest {
            session_id: "sesn_n".into(),
            generation: 1,
            created_unix_ms: 0,
            writer: "w".into(),
            nonce: random_nonce().unwrap(),
            file_bytes: 0,
            objects: Default::default(),
            entries: Vec::new(),
        };
        assert!(p.store.put_manifest("sesn_n", 1, m.encode()).await.unwrap());
        // The retry of a put that committed: "exists", and the nonce says it is ours.
        assert!(!p.store.put_manifest("sesn_n", 1, m.encode()).await.unwrap());
        assert!(p.own_commit(&m).await.unwrap());
        // Another writer's generation (another nonce) is a conflict.
        m.nonce = random_nonce().unwrap();
        assert!(!p.own_commit(&m).await.unwrap());
        m.nonce.clear();
        assert!(!p.own_commit(&m).await.unwrap(), "no nonce proves nothing");
    }
}
