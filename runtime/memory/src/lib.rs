//! # wasm-sandbox-memory
//!
//! Memory-store sync for a sandbox session: the reference's rules, without HTTP
//! (`_memories.py`, `_file_store.py` of the `anthropic` Python SDK 2.10.0; protocol.md §7).
//! The crate has no HTTP and no wasmtime dependency: the worker implements [`MemoryApi`] (the
//! HTTP calls), uses [`folder::CapStdFolder`] for the store folder, and drives the engine.
//!
//! - **Where a store lands**: [`store_mount_path`], the one rule of
//!   [`wasm_sandbox_fs::guest_path`]: the resource's `mount_path` (normalised) when it is an
//!   absolute path below `/mnt/memory/` without `..`, an error when it is not, and
//!   `/mnt/memory/<name or id>` when it is missing or empty.
//! - **What is uploaded**: regular files of at most [`MAX_MEMORY_BYTES`] (the API's limit),
//!   checked with `fstat` on an `O_NOFOLLOW | O_NONBLOCK` handle *before* any byte is read;
//!   larger files and anything that is not a regular file are skipped with a warning and
//!   counted ([`SyncReport::refused_local`], [`FlushReport::refused_local`]), never read.
//!   At most [`UPLOAD_CONCURRENCY`] uploads per store are in flight, and at most
//!   [`UPLOAD_BYTES_IN_FLIGHT`] bytes of file content across the whole process.
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
//!   `O_NOFOLLOW` everywhere, atomic writes, owner-only modes. Its scan walks the store with
//!   the crate's private tree walker (`walk.rs`), which never follows a symlink and yields only
//!   regular files, opened safely.
//!
//! ## Security model
//!
//! Every filesystem operation on the store folder, which the guest can write, goes through a
//! [`cap_std::fs::Dir`] handle and opens single path components with `O_NOFOLLOW`, so a
//! symlink planted by the guest can never redirect a write or a read outside the store. The
//! module docs of [`folder`] and of the walker give the details beside the checks.

pub mod engine;
pub mod folder;
mod walk;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
pub use wasm_sandbox_fs::guest_path::{GuestPathError, MemoryMountPath};

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
/// Concurrent uploads in one store's flush: the reference's number (`_UPLOAD_CONCURRENCY`,
/// enough to clear the server's 2,000-memories-per-store cap inside [`FLUSH_TIMEOUT`]). The
/// bytes those uploads hold are bounded separately by [`UPLOAD_BYTES_IN_FLIGHT`].
pub const UPLOAD_CONCURRENCY: usize = 32;
/// The largest memory the API stores, in bytes: "The maximum size is 100 kB (102,400 bytes)"
/// (`memory_create_params.py` / `memory_update_params.py`, SDK 2.10.0). A larger local file is
/// never read: the server would refuse it (413) anyway, and reading it is how one session
/// could make the worker hold gigabytes.
pub const MAX_MEMORY_BYTES: u64 = 102_400;
/// File content held by uploads at once, across every store and session of the process
/// (4 MiB: forty largest memories, far more small ones). Each upload reserves
/// `MAX_MEMORY_BYTES + 1` before it reads and keeps only what it read until its request
/// ends. The request body adds a bounded multiple of this (JSON escaping at most six bytes per
/// byte), so the worker's upload memory stays in the tens of MiB whatever sessions write.
pub const UPLOAD_BYTES_IN_FLIGHT: usize = 4 << 20;
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
    /// The store's guest path breaks the mount-path rule (a bad `mount_path`, or no usable
    /// default name).
    #[error("{source} (memory_store_id={memory_store_id})")]
    BadMountPath {
        /// The store.
        memory_store_id: String,
        /// What the rule refused.
        #[source]
        source: GuestPathError,
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

/// Where the agent sees a store (`_memories.py:262-280`, with this project's rule): the
/// resource's `mount_path` normalised when it is absolute, below `/mnt/memory/` and free of
/// `..`, refused otherwise (the agent was told that path; relocating it would make it read an
/// empty folder); without one, `/mnt/memory/<name or id>`. The rule and its reasons are
/// [`wasm_sandbox_fs::guest_path`]'s; the worker, the runtime and the bash sandbox apply the
/// same one.
pub fn store_mount_path(
    mount_path: Option<&str>,
    name: Option<&str>,
    memory_store_id: &str,
) -> Result<MemoryMountPath, MemoryConfigError> {
    MemoryMountPath::resolve(mount_path, name, memory_store_id).map_err(|source| {
        MemoryConfigError::BadMountPath {
            memory_store_id: memory_store_id.to_owned(),
            source,
        }
    })
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
        let path = |m, n| store_mount_path(m, n, "ms_1").map(String::from);
        assert_eq!(
            path(Some("/mnt/memory/prefs"), Some("prefs")).unwrap(),
            "/mnt/memory/prefs"
        );
        assert_eq!(
            path(Some("/mnt/./memory/team//a..b/"), None).unwrap(),
            "/mnt/memory/team/a..b"
        );
        for bad in [
            "mnt/memory/x",
            "/mnt/../etc",
            "/mnt/memory/..",
            "../x",
            "/a/\0",
            "/workspace/notes",
        ] {
            let err = path(Some(bad), None).unwrap_err();
            assert!(
                matches!(err, MemoryConfigError::BadMountPath { .. }),
                "{bad:?}"
            );
            assert!(err.to_string().contains("memory_store_id=ms_1"), "{err}");
        }
        // Missing or empty: `/mnt/memory/<name or id>`, never `/mnt/memory//<name>`.
        assert_eq!(path(None, Some("prefs")).unwrap(), "/mnt/memory/prefs");
        assert_eq!(path(Some(""), Some("")).unwrap(), "/mnt/memory/ms_1");
        assert_eq!(path(None, Some("../../etc")).unwrap(), "/mnt/memory/ms_1");
        assert!(store_mount_path(None, Some(".."), "..").is_err());
    }
}
