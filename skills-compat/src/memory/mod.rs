//! Memory stores: the reference's rules, without HTTP (`_memories.py`, `_file_store.py`;
//! protocol.md §7).
//!
//! - **Where a store lands**: [`store_root`]: the resource's `mount_path` verbatim when it is
//!   a clean absolute path (absolute, no `..`), an error when it is not, and
//!   `<workdir>/memory/<name or id>` when it is missing.
//! - **When to sync**: [`SyncInterval`] (default 15 s, minimum 5 s, NaN refused) and
//!   [`SyncSchedule`] (due when at least the interval has passed since the last sync).
//! - **Delete discipline**: [`DeleteMode`] (`enabled` / `log_only` / `disabled`), the per-sync
//!   cap [`delete_cap`] and the 30 s corroboration window.
//! - **The merge**: [`engine`] reconciles the folder (a [`MemoryFolder`]), the server (a
//!   [`MemoryApi`] the worker implements over HTTP) and the last-synced baseline
//!   ([`StoreSyncState`]), path by path, exactly as `SessionMemoryStores` does: download,
//!   periodic sync, final sync, push-only flush, recovery of a wiped folder, and refusal to
//!   touch a folder whose marker is missing or foreign.
//! - **The folder**: [`folder::CapStdFolder`] is the local store: regular files only,
//!   `O_NOFOLLOW` everywhere, atomic writes, owner-only modes.

pub mod engine;
pub mod folder;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use engine::{
    FlushReport, LocalRead, MemoryApi, MemoryFolder, RemoteError, RemoteMemory, StoreSyncState,
    SyncOptions, SyncOutcome, SyncReport, download_store, flush_store, may_dispose, sync_store,
};

/// Default seconds between syncs (`DEFAULT_MEMORY_SYNC_INTERVAL`).
pub const DEFAULT_SYNC_INTERVAL_SECS: f64 = 15.0;
/// Smallest accepted sync interval in seconds (`MIN_MEMORY_SYNC_INTERVAL`).
pub const MIN_SYNC_INTERVAL_SECS: f64 = 5.0;
/// Bound on each teardown pass, the final sync and then the flush (`MEMORY_FLUSH_TIMEOUT`).
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a file must stay missing before its server delete goes out.
pub const DELETE_CORROBORATION: Duration = Duration::from_secs(30);
/// The trust marker at every store root; never synced.
pub const MARKER_PATH: &str = ".anthropic-memory-store";
/// The marker format version.
pub const MARKER_VERSION: u32 = 1;
/// Listing page size, `view=basic`.
pub const LIST_PAGE_SIZE: u32 = 100;
/// Listing page size, `view=full`.
pub const FULL_LIST_PAGE_SIZE: u32 = 20;
/// Concurrent content fetches in one store's pull pass.
pub const FETCH_CONCURRENCY: usize = 16;
/// Concurrent uploads in one store's flush.
pub const UPLOAD_CONCURRENCY: usize = 32;
/// Floor of the per-sync delete cap.
pub const DELETE_CAP_FLOOR: usize = 8;
/// Ceiling of the per-sync delete cap.
pub const DELETE_CAP_CEILING: usize = 50;
/// Most stores attached to one session.
pub const MAX_STORES_PER_SESSION: usize = 8;

/// A refused memory-store configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryConfigError {
    /// The sync interval is below the minimum or NaN.
    #[error("sync interval must be at least {MIN_SYNC_INTERVAL_SECS} seconds, got {0}")]
    IntervalTooShort(String),
    /// The `mount_path` is not a clean absolute path.
    #[error(
        "memory store mount_path is not a clean absolute path: {mount_path:?} (memory_store_id={memory_store_id})"
    )]
    BadMountPath {
        /// The path as given.
        mount_path: String,
        /// The store.
        memory_store_id: String,
    },
    /// Neither the store name nor its id can name a directory.
    #[error("memory store name {name:?} and id {memory_store_id:?} cannot name a directory")]
    BadFallbackName {
        /// The store name.
        name: String,
        /// The store id.
        memory_store_id: String,
    },
    /// An unknown delete mode.
    #[error("unknown memory delete mode {0:?} (expected enabled, log_only or disabled)")]
    BadDeleteMode(String),
}

/// Seconds between syncs; at least [`MIN_SYNC_INTERVAL_SECS`]. Infinity is accepted (only the
/// final sync runs), as in the reference.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct SyncInterval(f64);

impl SyncInterval {
    /// Validates `secs`, phrased so NaN fails (`!(secs >= min)`).
    pub fn new(secs: f64) -> Result<Self, MemoryConfigError> {
        if secs >= MIN_SYNC_INTERVAL_SECS {
            Ok(Self(secs))
        } else {
            Err(MemoryConfigError::IntervalTooShort(secs.to_string()))
        }
    }

    /// The interval in seconds.
    pub fn secs(self) -> f64 {
        self.0
    }

    /// True when `elapsed` since the last sync is at least the interval.
    pub fn is_due(self, elapsed: Duration) -> bool {
        elapsed.as_secs_f64() >= self.0
    }
}

impl Default for SyncInterval {
    fn default() -> Self {
        Self(DEFAULT_SYNC_INTERVAL_SECS)
    }
}

/// When the next cadence sync is due: checked after every dispatched tool call.
#[derive(Clone, Copy, Debug)]
pub struct SyncSchedule {
    interval: SyncInterval,
    last_sync: Instant,
}

impl SyncSchedule {
    /// A schedule whose clock starts at `now` (the end of the download).
    pub fn new(interval: SyncInterval, now: Instant) -> Self {
        Self {
            interval,
            last_sync: now,
        }
    }

    /// True when a sync is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.interval
            .is_due(now.saturating_duration_since(self.last_sync))
    }

    /// Records that a sync (of all stores) finished at `now`.
    pub fn mark_synced(&mut self, now: Instant) {
        self.last_sync = now;
    }
}

/// Whether a locally deleted file may delete its server memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMode {
    /// Deletes go out (after corroboration, under the cap).
    #[default]
    Enabled,
    /// The same checks run; the delete is only logged (a dry run).
    LogOnly,
    /// Server deletes are off; the memory stays on the server.
    Disabled,
}

impl std::str::FromStr for DeleteMode {
    type Err = MemoryConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enabled" => Ok(Self::Enabled),
            "log_only" => Ok(Self::LogOnly),
            "disabled" => Ok(Self::Disabled),
            other => Err(MemoryConfigError::BadDeleteMode(other.to_owned())),
        }
    }
}

/// Most server deletes one sync sends: `clamp(baseline / 4, 8, 50)`.
pub fn delete_cap(baseline_len: usize) -> usize {
    (baseline_len / 4).clamp(DELETE_CAP_FLOOR, DELETE_CAP_CEILING)
}

/// The marker file's contents for a store: `version 1\n<memory_store_id>` (no trailing newline).
pub fn marker_contents(memory_store_id: &str) -> String {
    format!("version {MARKER_VERSION}\n{memory_store_id}")
}

/// The sha256 the marker file must have for the folder to be trusted.
pub fn marker_sha(memory_store_id: &str) -> String {
    sha256_hex(marker_contents(memory_store_id).as_bytes())
}

/// Lowercase hex SHA-256, as the API's `content_sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(digest: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `FileStore.is_path_legal`: absolute and without a `..` component (hardening: no NUL).
pub fn is_clean_absolute_path(path: &str) -> bool {
    path.starts_with('/') && !path.split('/').any(|part| part == "..") && !path.contains('\0')
}

/// Where a store's files land on disk (`_memories.py:262-280`).
///
/// A non-empty `mount_path` is used verbatim when it is a clean absolute path and refused
/// otherwise (the agent was told that path; relocating it would make it read an empty folder).
/// Without one, `<workdir>/memory/<name or id>`. Hardening: the reference joins the store name
/// unchecked; here it must be one plain path component, else the id is used (and the id must be
/// one too).
pub fn store_root(
    mount_path: Option<&str>,
    name: Option<&str>,
    memory_store_id: &str,
    workdir: &Path,
) -> Result<PathBuf, MemoryConfigError> {
    if let Some(mount_path) = mount_path.filter(|p| !p.is_empty()) {
        if !is_clean_absolute_path(mount_path) {
            return Err(MemoryConfigError::BadMountPath {
                mount_path: mount_path.to_owned(),
                memory_store_id: memory_store_id.to_owned(),
            });
        }
        return Ok(PathBuf::from(mount_path));
    }
    let plain = |s: &str| !matches!(s, "" | "." | "..") && !s.contains('/') && !s.contains('\0');
    let dir = match name.filter(|n| !n.is_empty()) {
        Some(n) if plain(n) => n,
        _ if plain(memory_store_id) => memory_store_id,
        _ => {
            return Err(MemoryConfigError::BadFallbackName {
                name: name.unwrap_or_default().to_owned(),
                memory_store_id: memory_store_id.to_owned(),
            });
        }
    };
    Ok(workdir.join("memory").join(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_interval_rules() {
        assert_eq!(SyncInterval::default().secs(), 15.0);
        assert!(SyncInterval::new(5.0).is_ok());
        assert!(SyncInterval::new(4.999).is_err());
        assert!(SyncInterval::new(0.0).is_err());
        assert!(SyncInterval::new(-1.0).is_err());
        assert!(SyncInterval::new(f64::NAN).is_err());
        let inf = SyncInterval::new(f64::INFINITY).unwrap();
        assert!(!inf.is_due(Duration::from_secs(1_000_000)));
        let i = SyncInterval::new(5.0).unwrap();
        assert!(!i.is_due(Duration::from_millis(4_999)));
        assert!(i.is_due(Duration::from_secs(5)));
    }

    #[test]
    fn schedule_is_due_after_the_interval() {
        let t0 = Instant::now();
        let mut s = SyncSchedule::new(SyncInterval::default(), t0);
        assert!(!s.is_due(t0 + Duration::from_secs(14)));
        assert!(s.is_due(t0 + Duration::from_secs(15)));
        s.mark_synced(t0 + Duration::from_secs(15));
        assert!(!s.is_due(t0 + Duration::from_secs(29)));
        assert!(s.is_due(t0 + Duration::from_secs(30)));
    }

    #[test]
    fn delete_mode_parses_the_reference_spellings() {
        assert_eq!(
            "enabled".parse::<DeleteMode>().unwrap(),
            DeleteMode::Enabled
        );
        assert_eq!(
            "log_only".parse::<DeleteMode>().unwrap(),
            DeleteMode::LogOnly
        );
        assert_eq!(
            "disabled".parse::<DeleteMode>().unwrap(),
            DeleteMode::Disabled
        );
        assert!("log-only".parse::<DeleteMode>().is_err());
        assert_eq!(DeleteMode::default(), DeleteMode::Enabled);
    }

    #[test]
    fn delete_cap_is_clamped() {
        assert_eq!(delete_cap(0), 8);
        assert_eq!(delete_cap(35), 8);
        assert_eq!(delete_cap(40), 10);
        assert_eq!(delete_cap(203), 50);
        assert_eq!(delete_cap(2000), 50);
    }

    #[test]
    fn marker_matches_the_reference_bytes() {
        assert_eq!(marker_contents("memstore_1"), "version 1\nmemstore_1");
        // sha256(b"version 1\nmemstore_1"), computed with Python's hashlib.
        assert_eq!(
            marker_sha("memstore_1"),
            sha256_hex(b"version 1\nmemstore_1")
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn mount_path_rules() {
        let wd = Path::new("/workspace");
        assert_eq!(
            store_root(Some("/mnt/memory/prefs"), Some("prefs"), "ms_1", wd).unwrap(),
            PathBuf::from("/mnt/memory/prefs")
        );
        for bad in [
            "mnt/memory/x",
            "/mnt/../etc",
            "/mnt/memory/..",
            "../x",
            "/a/\0",
        ] {
            assert!(
                matches!(
                    store_root(Some(bad), None, "ms_1", wd),
                    Err(MemoryConfigError::BadMountPath { .. })
                ),
                "{bad:?}"
            );
        }
        // `.` and `a..b` are fine: only a whole `..` component is refused.
        assert!(store_root(Some("/mnt/./memory/a..b"), None, "ms_1", wd).is_ok());
        assert_eq!(
            store_root(None, Some("prefs"), "ms_1", wd).unwrap(),
            PathBuf::from("/workspace/memory/prefs")
        );
        assert_eq!(
            store_root(Some(""), Some(""), "ms_1", wd).unwrap(),
            PathBuf::from("/workspace/memory/ms_1")
        );
        assert_eq!(
            store_root(None, Some("../../etc"), "ms_1", wd).unwrap(),
            PathBuf::from("/workspace/memory/ms_1")
        );
        assert!(store_root(None, Some(".."), "..", wd).is_err());
    }
}
