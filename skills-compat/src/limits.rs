//! Limits on what one skill archive may expand to.
//!
//! The reference worker (`_skills.py`) has no limits: a zip or tar bomb fills the worker's disk.
//! These limits are **deliberate hardening** beyond the reference. They are checked twice:
//! against the sizes the archive *declares* before anything is written (so a member that
//! declares 10 GB is refused at once), and against the bytes actually produced while
//! streaming (so a member that lies about its size is cut off at the limit; nothing beyond the
//! limit is ever written).

use serde::{Deserialize, Serialize};

/// Bounds applied while spooling and extracting one skill archive.
///
/// All limits are inclusive: a value equal to the limit is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractLimits {
    /// Largest archive (compressed, as downloaded) accepted, in bytes.
    pub max_archive_bytes: u64,
    /// Largest sum of all regular files' uncompressed sizes, in bytes.
    pub max_total_bytes: u64,
    /// Largest single regular file, in bytes.
    pub max_file_bytes: u64,
    /// Most archive members (files, directories, links and anything else; tar extension
    /// headers such as PAX and GNU long names are not counted).
    pub max_entries: u64,
    /// Deepest member path, in components (`a/b/c` is 3).
    pub max_depth: usize,
    /// Longest member path, in bytes after normalisation.
    pub max_path_bytes: usize,
}

impl ExtractLimits {
    /// 256 MiB: no published skill comes close; the API's own upload limit is far lower.
    pub const DEFAULT_MAX_ARCHIVE_BYTES: u64 = 256 * 1024 * 1024;
    /// 1 GiB of extracted content per skill.
    pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 1024 * 1024 * 1024;
    /// 256 MiB per file.
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
    /// 20,000 members.
    pub const DEFAULT_MAX_ENTRIES: u64 = 20_000;
    /// 48 path components.
    pub const DEFAULT_MAX_DEPTH: usize = 48;
    /// 4,096 bytes (Linux `PATH_MAX`).
    pub const DEFAULT_MAX_PATH_BYTES: usize = 4096;
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_archive_bytes: Self::DEFAULT_MAX_ARCHIVE_BYTES,
            max_total_bytes: Self::DEFAULT_MAX_TOTAL_BYTES,
            max_file_bytes: Self::DEFAULT_MAX_FILE_BYTES,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_path_bytes: Self::DEFAULT_MAX_PATH_BYTES,
        }
    }
}
