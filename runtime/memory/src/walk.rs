//! Walking a tree the guest controls (a memory store's folder) without ever following a
//! symlink: what [`crate::folder::CapStdFolder`]'s scan hashes.
//!
//! The guest controls this tree and can leave anything in it: a relative symlink that climbs
//! out (`notes.md -> ../../../etc/shadow`), an absolute one, a FIFO that would block a naive
//! `open`, a socket, a directory symlink. A walker that reads "the files in the store" must
//! therefore:
//!
//! - walk with directory handles ([`cap_std::fs::Dir`]), descending only into real
//!   directories, each opened with `O_NOFOLLOW` relative to its parent's handle;
//! - classify entries with `lstat` semantics (the directory entry's own type) and skip every
//!   non-regular entry with a [`SkipReason`];
//! - open each regular file with `O_NOFOLLOW | O_NONBLOCK` and re-check the opened handle with
//!   `fstat`, so an entry swapped for a symlink or FIFO between listing and opening is caught,
//!   and hand out the **open handle** ([`WalkedFile::file`]): whatever is read is exactly
//!   what was checked.
//!
//! The walk is bounded ([`WalkLimits`]) so a guest cannot stall it with millions of entries
//! or a very deep tree.

use std::io;

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, FileType, FileTypeExt, OpenOptions, OpenOptionsExt, ReadDir};

/// Bounds on one walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkLimits {
    /// Most directory entries looked at (of any type) before the walk fails.
    pub max_entries: u64,
    /// Deepest directory descended into (the root's children are depth 1).
    pub max_depth: usize,
}

impl Default for WalkLimits {
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
    /// A directory deeper than [`WalkLimits::max_depth`] (not descended into).
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
pub struct WalkedFile {
    /// Path relative to the walk root, `/`-separated.
    pub path: String,
    /// Size at the time it was opened.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the store scan `fstat`s the handle itself; the tests read it"
        )
    )]
    pub len: u64,
    /// The open, read-only handle (checked to be a regular file with `fstat`).
    pub file: std::fs::File,
}

/// One step of the walk.
#[derive(Debug)]
pub enum WalkEntry {
    /// A regular file.
    File(WalkedFile),
    /// Something that is not yielded, and why.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the store scan ignores skipped entries; the tests read why"
        )
    )]
    Skipped {
        /// Path relative to the walk root (lossy for non-UTF-8 names).
        path: String,
        /// Why it was skipped.
        reason: SkipReason,
    },
}

/// Why the walk failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalkError {
    /// More entries than [`WalkLimits::max_entries`].
    // The wording is the former outputs collector's, kept as it was: a store scan that hits
    // the limit logs it.
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

/// An iterator over the tree. Directories are not yielded; an error ends the walk.
pub struct TreeWalker {
    stack: Vec<Frame>,
    limits: WalkLimits,
    seen: u64,
}

impl std::fmt::Debug for TreeWalker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeWalker")
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

impl TreeWalker {
    /// Walks the directory `root` (a handle the caller opened).
    pub fn new(root: Dir, limits: WalkLimits) -> Result<Self, WalkError> {
        let entries = root.entries().map_err(|source| WalkError::Io {
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

    fn fail(&mut self, err: WalkError) -> Option<Result<WalkEntry, WalkError>> {
        self.stack.clear();
        Some(Err(err))
    }
}

impl Iterator for TreeWalker {
    type Item = Result<WalkEntry, WalkError>;

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
                    return self.fail(WalkError::Io { path, source });
                }
            };
            self.seen += 1;
            if self.seen > self.limits.max_entries {
                let limit = self.limits.max_entries;
                return self.fail(WalkError::TooManyEntries { limit });
            }
            let os_name = entry.file_name();
            let Some(name) = os_name.to_str() else {
                let path = join(&prefix, &os_name.to_string_lossy());
                return Some(Ok(WalkEntry::Skipped {
                    path,
                    reason: SkipReason::NotUtf8,
                }));
            };
            let path = join(&prefix, name);
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Some(Ok(WalkEntry::Skipped {
                        path,
                        reason: SkipReason::Vanished,
                    }));
                }
                Err(source) => return self.fail(WalkError::Io { path, source }),
            };
            let skipped = |reason| {
                Some(Ok(WalkEntry::Skipped {
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
                    Some(Err(source)) => return self.fail(WalkError::Io { path, source }),
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
                Err(source) => return self.fail(WalkError::Io { path, source }),
            };
            let meta = match file.metadata() {
                Ok(meta) => meta,
                Err(source) => return self.fail(WalkError::Io { path, source }),
            };
            if !meta.is_file() {
                return skipped(SkipReason::ChangedType);
            }
            return Some(Ok(WalkEntry::File(WalkedFile {
                path,
                len: meta.len(),
                file: file.into_std(),
            })));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The walker never follows symlinks and yields only regular files (these were the
    //! outputs collector's tests).

    use std::collections::BTreeMap;
    use std::ffi::CString;
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::*;

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    struct Collected {
        files: BTreeMap<String, Vec<u8>>,
        skipped: BTreeMap<String, SkipReason>,
    }

    fn collect(root: &Path, limits: WalkLimits) -> Result<Collected, WalkError> {
        let mut files = BTreeMap::new();
        let mut skipped = BTreeMap::new();
        let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority()).unwrap();
        for entry in TreeWalker::new(dir, limits)? {
            match entry? {
                WalkEntry::File(mut f) => {
                    let mut data = Vec::new();
                    f.file.read_to_end(&mut data).unwrap();
                    assert_eq!(data.len() as u64, f.len);
                    files.insert(f.path, data);
                }
                WalkEntry::Skipped { path, reason } => {
                    skipped.insert(path, reason);
                }
            }
        }
        Ok(Collected { files, skipped })
    }

    #[test]
    fn escaping_symlinks_fifos_and_sockets_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, b"host secret").unwrap();
        let secret_dir = tmp.path().join("secret_dir");
        std::fs::create_dir(&secret_dir).unwrap();
        std::fs::write(secret_dir.join("inner"), b"host secret too").unwrap();
        let out = tmp.path().join("session/outputs");
        std::fs::create_dir_all(out.join("sub/deeper")).unwrap();
        std::fs::write(out.join("report.md"), b"# report").unwrap();
        std::fs::write(out.join("sub/deeper/data.csv"), b"a,b").unwrap();
        symlink("../../secret", out.join("escape.txt")).unwrap();
        symlink(&secret, out.join("sub/absolute.txt")).unwrap();
        symlink("../../secret_dir", out.join("dirlink")).unwrap();
        symlink("report.md", out.join("inside-link.md")).unwrap();
        symlink("/nonexistent/dangling", out.join("dangling")).unwrap();
        mkfifo(&out.join("pipe"));
        let _sock = std::os::unix::net::UnixListener::bind(out.join("sock")).unwrap();

        let got = collect(&out, WalkLimits::default()).unwrap();
        let names: Vec<&str> = got.files.keys().map(String::as_str).collect();
        assert_eq!(names, ["report.md", "sub/deeper/data.csv"]);
        assert_eq!(got.files["report.md"], b"# report");
        let expect = [
            ("dangling", SkipReason::Symlink),
            ("dirlink", SkipReason::Symlink),
            ("escape.txt", SkipReason::Symlink),
            ("inside-link.md", SkipReason::Symlink),
            ("pipe", SkipReason::Fifo),
            ("sock", SkipReason::Socket),
            ("sub/absolute.txt", SkipReason::Symlink),
        ];
        assert_eq!(
            got.skipped,
            expect.iter().map(|(p, r)| (p.to_string(), *r)).collect()
        );
        assert!(got.files.values().all(|d| !d.starts_with(b"host secret")));
    }

    #[test]
    fn depth_and_entry_limits_bound_the_walk() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("outputs");
        std::fs::create_dir_all(out.join("a/b/c")).unwrap();
        std::fs::write(out.join("a/1"), b"1").unwrap();
        std::fs::write(out.join("a/b/2"), b"2").unwrap();
        std::fs::write(out.join("a/b/c/3"), b"3").unwrap();
        let got = collect(
            &out,
            WalkLimits {
                max_depth: 2,
                max_entries: 100,
            },
        )
        .unwrap();
        assert_eq!(got.files.keys().collect::<Vec<_>>(), ["a/1", "a/b/2"]);
        assert_eq!(got.skipped.get("a/b/c"), Some(&SkipReason::TooDeep));

        for i in 0..10 {
            std::fs::write(out.join(format!("f{i}")), b"").unwrap();
        }
        let err = collect(
            &out,
            WalkLimits {
                max_depth: 8,
                max_entries: 5,
            },
        )
        .err()
        .unwrap();
        assert!(matches!(err, WalkError::TooManyEntries { limit: 5 }));
    }

    #[test]
    fn non_utf8_names_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("outputs");
        std::fs::create_dir(&out).unwrap();
        let bad = std::ffi::OsStr::from_bytes(b"bad\xff.txt");
        std::fs::write(out.join(bad), b"x").unwrap();
        let got = collect(&out, WalkLimits::default()).unwrap();
        assert!(got.files.is_empty());
        assert_eq!(
            got.skipped.values().collect::<Vec<_>>(),
            [&SkipReason::NotUtf8]
        );
    }
}
