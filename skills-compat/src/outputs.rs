//! Collecting the session's outputs (`/mnt/session/outputs` on the host side) without ever
//! following a symlink.
//!
//! The guest controls this tree and can leave anything in it: a relative symlink that climbs
//! out (`report.txt -> ../../../etc/shadow`), an absolute one, a FIFO that would block a naive
//! `open`, a socket, a directory symlink. A collector that uploads "the files in outputs"
//! must therefore:
//!
//! - walk with directory handles ([`cap_std::fs::Dir`]), descending only into real
//!   directories, each opened with `O_NOFOLLOW` relative to its parent's handle;
//! - classify entries with `lstat` semantics (the directory entry's own type) and skip every
//!   non-regular entry with a [`SkipReason`];
//! - open each regular file with `O_NOFOLLOW | O_NONBLOCK` and re-check the opened handle with
//!   `fstat`, so an entry swapped for a symlink or FIFO between listing and opening is caught,
//!   and hand out the **open handle** ([`OutputFile::file`]): whatever is uploaded is exactly
//!   what was checked.
//!
//! The walk is bounded ([`OutputsLimits`]) so a guest cannot stall it with millions of entries
//! or a very deep tree. The reference SDK has no outputs collection at all on self-hosted
//! environments (protocol.md §8); this is the project's own requirement.

use std::io;
use std::path::Path;

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, FileType, FileTypeExt, OpenOptions, OpenOptionsExt, ReadDir};

/// Bounds on one outputs walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputsLimits {
    /// Most directory entries looked at (of any type) before the walk fails.
    pub max_entries: u64,
    /// Deepest directory descended into (the root's children are depth 1).
    pub max_depth: usize,
}

impl Default for OutputsLimits {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_depth: 32,
        }
    }
}

/// Why an entry was not yielded as a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// A symbolic link (never followed, wherever it points).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Some other non-regular type.
    Other,
    /// The name is not UTF-8 (file names become API strings).
    NotUtf8,
    /// A directory deeper than [`OutputsLimits::max_depth`] (not descended into).
    TooDeep,
    /// The entry disappeared while walking.
    Vanished,
    /// The entry changed type between listing and opening (e.g. swapped for a symlink).
    ChangedType,
}

impl SkipReason {
    fn of(ft: FileType) -> Self {
        if ft.is_symlink() {
            Self::Symlink
        } else if ft.is_fifo() {
            Self::Fifo
        } else if ft.is_socket() {
            Self::Socket
        } else if ft.is_char_device() {
            Self::CharDevice
        } else if ft.is_block_device() {
            Self::BlockDevice
        } else {
            Self::Other
        }
    }
}

/// A regular file, already opened safely.
#[derive(Debug)]
pub struct OutputFile {
    /// Path relative to the outputs root, `/`-separated.
    pub path: String,
    /// Size at the time it was opened.
    pub len: u64,
    /// The open, read-only handle (checked to be a regular file with `fstat`).
    pub file: std::fs::File,
}

/// One step of the walk.
#[derive(Debug)]
pub enum OutputEntry {
    /// A regular file.
    File(OutputFile),
    /// Something that is not collected, and why.
    Skipped {
        /// Path relative to the outputs root (lossy for non-UTF-8 names).
        path: String,
        /// Why it was skipped.
        reason: SkipReason,
    },
}

/// Why the walk failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputsError {
    /// More entries than [`OutputsLimits::max_entries`].
    #[error("outputs directory has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// A filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The entry being read (relative path, `.` for the root).
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

struct Frame {
    dir: Dir,
    prefix: String,
    entries: ReadDir,
    depth: usize,
}

/// An iterator over the outputs tree. Directories are not yielded; an error ends the walk.
pub struct OutputsWalker {
    stack: Vec<Frame>,
    limits: OutputsLimits,
    seen: u64,
}

impl std::fmt::Debug for OutputsWalker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputsWalker")
            .field("limits", &self.limits)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

fn is_symlink_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP | libc::ENOTDIR | libc::EMLINK)
    )
}

impl OutputsWalker {
    /// Walks the directory `root` (a handle the caller opened).
    pub fn new(root: Dir, limits: OutputsLimits) -> Result<Self, OutputsError> {
        let entries = root.entries().map_err(|source| OutputsError::Io {
            path: ".".into(),
            source,
        })?;
        Ok(Self {
            stack: vec![Frame {
                dir: root,
                prefix: String::new(),
                entries,
                depth: 0,
            }],
            limits,
            seen: 0,
        })
    }

    fn fail(&mut self, err: OutputsError) -> Option<Result<OutputEntry, OutputsError>> {
        self.stack.clear();
        Some(Err(err))
    }
}

impl Iterator for OutputsWalker {
    type Item = Result<OutputEntry, OutputsError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let frame = self.stack.last_mut()?;
            let Some(entry) = frame.entries.next() else {
                self.stack.pop();
                continue;
            };
            let prefix = frame.prefix.clone();
            let depth = frame.depth;
            let entry = match entry {
                Ok(entry) => entry,
                Err(source) => {
                    let path = if prefix.is_empty() {
                        ".".into()
                    } else {
                        prefix
                    };
                    return self.fail(OutputsError::Io { path, source });
                }
            };
            self.seen += 1;
            if self.seen > self.limits.max_entries {
                let limit = self.limits.max_entries;
                return self.fail(OutputsError::TooManyEntries { limit });
            }
            let os_name = entry.file_name();
            let Some(name) = os_name.to_str() else {
                let path = join(&prefix, &os_name.to_string_lossy());
                return Some(Ok(OutputEntry::Skipped {
                    path,
                    reason: SkipReason::NotUtf8,
                }));
            };
            let path = join(&prefix, name);
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Some(Ok(OutputEntry::Skipped {
                        path,
                        reason: SkipReason::Vanished,
                    }));
                }
                Err(source) => return self.fail(OutputsError::Io { path, source }),
            };
            let skipped = |reason| {
                Some(Ok(OutputEntry::Skipped {
                    path: path.clone(),
                    reason,
                }))
            };
            if ft.is_dir() {
                if depth + 1 > self.limits.max_depth {
                    return skipped(SkipReason::TooDeep);
                }
                let opened = self
                    .stack
                    .last()
                    .map(|f| f.dir.open_dir_nofollow(name))
                    .map(|r| r.and_then(|dir| dir.entries().map(|entries| (dir, entries))));
                match opened {
                    Some(Ok((dir, entries))) => self.stack.push(Frame {
                        dir,
                        prefix: path,
                        entries,
                        depth: depth + 1,
                    }),
                    Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                        return skipped(SkipReason::Vanished);
                    }
                    Some(Err(e)) if is_symlink_refusal(&e) => {
                        return skipped(SkipReason::ChangedType);
                    }
                    Some(Err(source)) => return self.fail(OutputsError::Io { path, source }),
                    None => return None,
                }
                continue;
            }
            if !ft.is_file() {
                return skipped(SkipReason::of(ft));
            }
            let opened = self.stack.last().map(|f| {
                f.dir.open_with(
                    name,
                    OpenOptions::new()
                        .read(true)
                        .follow(FollowSymlinks::No)
                        .custom_flags(libc::O_NONBLOCK),
                )
            })?;
            let file = match opened {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return skipped(SkipReason::Vanished);
                }
                Err(e) if is_symlink_refusal(&e) => return skipped(SkipReason::ChangedType),
                Err(source) => return self.fail(OutputsError::Io { path, source }),
            };
            let meta = match file.metadata() {
                Ok(meta) => meta,
                Err(source) => return self.fail(OutputsError::Io { path, source }),
            };
            if !meta.is_file() {
                return skipped(SkipReason::ChangedType);
            }
            return Some(Ok(OutputEntry::File(OutputFile {
                path,
                len: meta.len(),
                file: file.into_std(),
            })));
        }
    }
}

/// Opens the outputs directory at `root` (its last component is opened with `O_NOFOLLOW`;
/// the path above it is the operator's) and returns a walker over it.
pub fn collect_outputs(root: &Path, limits: OutputsLimits) -> Result<OutputsWalker, OutputsError> {
    let io_err = |source| OutputsError::Io {
        path: root.display().to_string(),
        source,
    };
    let dir = match (root.parent(), root.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            Dir::open_ambient_dir(parent, ambient_authority())
                .and_then(|p| p.open_dir_nofollow(name))
                .map_err(io_err)?
        }
        _ => Dir::open_ambient_dir(root, ambient_authority()).map_err(io_err)?,
    };
    OutputsWalker::new(dir, limits)
}
