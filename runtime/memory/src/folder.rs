//! [`CapStdFolder`]: a store folder on the local filesystem (`_file_store.py`'s `FileStore`).
//!
//! - Paths are relative to the root (a leading `/` means the root); a `..` component or an
//!   absolute remainder is refused, so a hostile wire path cannot escape.
//! - The root is looked up **by path on every operation** (its last component with
//!   `O_NOFOLLOW`), as the reference does: a folder that vanished and was replaced by someone
//!   else's is seen as such, and a write never re-creates a vanished root (it fails with
//!   `NotFound`). Only [`MemoryFolder::create_root`] makes the root.
//! - Below the root every component is opened with `O_NOFOLLOW` through directory handles
//!   (stricter than the reference, which lets the OS follow intermediate symlinks); listings
//!   skip symlinks and non-regular files, reads refuse them, FIFOs never block
//!   (`O_NONBLOCK`).
//! - Size before content: every file is opened `O_NOFOLLOW | O_NONBLOCK` through the store's
//!   directory handle and `fstat`ed *before* a byte is read. A file over
//!   [`MAX_MEMORY_BYTES`] is never read: [`MemoryFolder::read_file`] refuses it, and
//!   [`MemoryFolder::scan`] / [`MemoryFolder::hash_file`] give it a stand-in built from its
//!   `fstat` (size, times, inode) instead of a digest. Reads stop at `MAX_MEMORY_BYTES + 1`
//!   bytes, so a file that grows after the `fstat` is caught too. Bash can write files of any
//!   size into a read-write store; this is what keeps them from becoming worker memory (or
//!   minutes of hashing) at each sync.
//! - Writes are atomic: a `.fs-<random>.tmp` file created with `O_EXCL | O_NOFOLLOW`, mode
//!   `0600`, renamed over the target. Directories are created `0700`.
//!
//! Operations run on tokio's blocking pool.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt};
use sha2::{Digest, Sha256};

use crate::MAX_MEMORY_BYTES;
use crate::engine::{LocalRead, MemoryFolder, over_cap};
use crate::hex;
use crate::walk::{TreeWalker, WalkEntry, WalkLimits};

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// A store folder at a fixed path.
#[derive(Clone, Debug)]
pub struct CapStdFolder {
    root: PathBuf,
    limits: WalkLimits,
}

fn invalid(rel: &str, reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("path {rel:?} {reason}"),
    )
}

/// Splits `rel` into confined components (backslashes are separators, a leading `/` is the
/// root, `..` is refused).
fn components(rel: &str) -> io::Result<Vec<String>> {
    let norm = rel.replace('\\', "/");
    let parts: Vec<String> = norm
        .trim_start_matches('/')
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_owned)
        .collect();
    if parts.iter().any(|p| p == "..") || rel.contains('\0') {
        return Err(invalid(rel, "escapes the store root"));
    }
    Ok(parts)
}

fn is_symlink_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EMLINK))
}

impl CapStdFolder {
    /// A folder rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            limits: WalkLimits {
                max_entries: 100_000,
                max_depth: 32,
            },
        }
    }

    /// The root path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether anything (a directory, file or symlink) exists at the root path. The download
    /// refuses a root that already exists: it would be a dead run's leftovers.
    pub fn root_exists(&self) -> io::Result<bool> {
        match std::fs::symlink_metadata(&self.root) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the root and everything below it (a symlink at the root is removed itself).
    /// Call only for a root this session created.
    pub fn remove_root(&self) -> io::Result<()> {
        let (parent, name) = self.parent_and_name()?;
        let parent = Dir::open_ambient_dir(parent, ambient_authority())?;
        match parent.symlink_metadata(name) {
            Ok(meta) if meta.is_dir() => wasm_sandbox_fs::tree::remove_tree_at(&parent, name),
            Ok(_) => parent.remove_file(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn parent_and_name(&self) -> io::Result<(&Path, &OsStr)> {
        match (self.root.parent(), self.root.file_name()) {
            (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => Ok((parent, name)),
            (Some(_), Some(name)) => Ok((Path::new("."), name)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a memory store root needs a parent directory",
            )),
        }
    }

    /// The root directory; `NotFound` when it does not exist, an error when it is a symlink.
    fn open_root(&self) -> io::Result<Dir> {
        let (parent, name) = self.parent_and_name()?;
        Dir::open_ambient_dir(parent, ambient_authority())?.open_dir_nofollow(name)
    }

    /// Opens the directory holding `parts`' last component, optionally creating missing
    /// directories (0700) below the root.
    fn open_parent(&self, parts: &[String], create: bool) -> io::Result<Dir> {
        let mut dir = self.open_root()?;
        for part in parts {
            dir = match dir.open_dir_nofollow(part) {
                Ok(d) => d,
                Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                    let mut builder = DirBuilder::new();
                    builder.mode(DIR_MODE);
                    match dir.create_dir_with(part, &builder) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e),
                    }
                    dir.open_dir_nofollow(part)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(dir)
    }

    fn scan_blocking(&self) -> io::Result<BTreeMap<String, String>> {
        let root = match self.open_root() {
            Ok(root) => root,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        let walker = TreeWalker::new(root, self.limits).map_err(io::Error::other)?;
        let mut out = BTreeMap::new();
        for entry in walker {
            match entry.map_err(io::Error::other)? {
                WalkEntry::File(file) => {
                    out.insert(file.path, content_sha(file.file)?);
                }
                WalkEntry::Skipped { .. } => {}
            }
        }
        Ok(out)
    }

    /// Opens a regular file read-only (`Ok(None)` when absent).
    fn open_regular(&self, rel: &str) -> io::Result<Option<cap_std::fs::File>> {
        let parts = components(rel)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(invalid(rel, "is not a regular file"));
        };
        let parent = match self.open_parent(dirs, false) {
            Ok(parent) => parent,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let file = match parent.open_with(
            name,
            OpenOptions::new()
                .read(true)
                .follow(FollowSymlinks::No)
                .custom_flags(libc::O_NONBLOCK),
        ) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if is_symlink_refusal(&e) => return Err(invalid(rel, "is a symlink")),
            Err(e) => return Err(e),
        };
        if !file.metadata()?.is_file() {
            return Err(invalid(rel, "is not a regular file"));
        }
        Ok(Some(file))
    }

    fn write_blocking(&self, rel: &str, content: &str) -> io::Result<()> {
        let tail = rel.replace('\\', "/");
        if tail.ends_with('/') || tail.ends_with("/.") || tail.is_empty() || tail == "." {
            return Err(invalid(rel, "is not a regular file"));
        }
        let parts = components(rel)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(invalid(rel, "is not a regular file"));
        };
        let parent = self.open_parent(dirs, true)?;
        let tmp = format!(".fs-{}.tmp", uuid::Uuid::new_v4().simple());
        let mut file = parent.open_with(
            &tmp,
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .follow(FollowSymlinks::No)
                .mode(FILE_MODE),
        )?;
        let result = file
            .write_all(content.as_bytes())
            .and_then(|()| parent.rename(&tmp, &parent, name));
        if result.is_err() {
            let _ = parent.remove_file(&tmp);
        }
        result
    }

    fn remove_blocking(&self, rel: &str) -> io::Result<()> {
        let parts = components(rel)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Ok(());
        };
        let parent = match self.open_parent(dirs, false) {
            Ok(parent) => parent,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let result = match parent.symlink_metadata(name) {
            Ok(meta) if meta.is_dir() => wasm_sandbox_fs::tree::remove_tree_at(&parent, name),
            Ok(_) => parent.remove_file(name),
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn create_root_blocking(&self) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.root)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Self) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(io::Error::other)?
    }
}

/// The file's SHA-256, or for a file over [`MAX_MEMORY_BYTES`] a stand-in from its `fstat`
/// that changes whenever the file does (size, mtime, ctime, inode) and can never equal a
/// digest (which is 64 hex digits): it is never read. At most `MAX_MEMORY_BYTES + 1` bytes are
/// read even if the file grows meanwhile (its digest is then of a prefix, which the upload's
/// own size check refuses).
fn content_sha(file: std::fs::File) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata()?;
    if meta.len() > MAX_MEMORY_BYTES {
        return Ok(format!(
            "over-size:{}:{}.{}:{}.{}:{}",
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
            meta.ino()
        ));
    }
    hash_reader(file.take(MAX_MEMORY_BYTES + 1))
}

/// Reads a regular file for upload: refused without reading when `fstat` says it is over
/// [`MAX_MEMORY_BYTES`]; never more than `MAX_MEMORY_BYTES + 1` bytes read.
fn read_capped(file: std::fs::File) -> io::Result<LocalRead> {
    let len = file.metadata()?.len();
    if len > MAX_MEMORY_BYTES {
        return Ok(LocalRead::Refused(over_cap()));
    }
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0) + 1);
    file.take(MAX_MEMORY_BYTES + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_MEMORY_BYTES {
        return Ok(LocalRead::Refused(over_cap()));
    }
    Ok(LocalRead::Data(data))
}

fn hash_reader(mut file: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

impl MemoryFolder for CapStdFolder {
    async fn scan(&self) -> io::Result<BTreeMap<String, String>> {
        self.blocking(Self::scan_blocking).await
    }

    async fn hash_file(&self, rel: &str) -> io::Result<Option<String>> {
        let rel = rel.to_owned();
        self.blocking(move |me| {
            me.open_regular(&rel)?
                .map(|f| content_sha(f.into_std()))
                .transpose()
        })
        .await
    }

    async fn read_file(&self, rel: &str) -> io::Result<LocalRead> {
        let rel = rel.to_owned();
        self.blocking(move |me| match me.open_regular(&rel) {
            Ok(None) => Ok(LocalRead::Missing),
            Ok(Some(file)) => read_capped(file.into_std()),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                let reason = e.to_string();
                let reason = reason
                    .split_once("\" ")
                    .map_or(reason.as_str(), |(_, r)| r)
                    .to_owned();
                Ok(LocalRead::Refused(reason))
            }
            Err(e) => Err(e),
        })
        .await
    }

    async fn write_file(&self, rel: &str, content: &str) -> io::Result<()> {
        let rel = rel.to_owned();
        let content = content.to_owned();
        self.blocking(move |me| me.write_blocking(&rel, &content))
            .await
    }

    async fn remove_file(&self, rel: &str) -> io::Result<()> {
        let rel = rel.to_owned();
        self.blocking(move |me| me.remove_blocking(&rel)).await
    }

    async fn create_root(&self) -> io::Result<()> {
        self.blocking(Self::create_root_blocking).await
    }
}
