//! Saving: walking a session's directories into manifest entries and content objects.
//!
//! Everything below the roots was written by the session, and a checkpoint runs while the
//! session's bash may still be changing the tree, so the walk follows the project's hostile-tree
//! rules (`wasm_sandbox_fs::tree`):
//!
//! - **Never follows a link.** Every step is `openat` on the parent's descriptor with
//!   `O_NOFOLLOW` (directories also `O_DIRECTORY`); a symbolic link is read with `readlinkat` and
//!   stored as a link. A directory swapped for a link between the listing and the open fails
//!   the open and is skipped; a file's identity (device, inode) from `fstatat` is checked
//!   again on the opened descriptor, so what is read is what was listed.
//! - **Never blocks.** Regular files are opened `O_NONBLOCK | O_NOCTTY` only after `fstatat`
//!   said "regular file", and the descriptor is checked to be one; FIFOs, sockets and device
//!   nodes are never opened (skipped and counted).
//! - **Stays on one mount.** A directory on another device (a bind mount inside the tree) is
//!   not entered.
//! - **Bounded.** At most [`MAX_DEPTH`] directory levels (one descriptor each), `max_entries`
//!   entries, `max_bytes` file bytes (checked before each file is read, and each file is read
//!   only up to the size `fstat` gave, so a file growing under us cannot run past it).
//!   Names and link targets together are bounded by [`MAX_NAME_BYTES`] (the walk's memory and
//!   the manifest's size). A snapshot first runs a **stat-only pass** (`Walker::measure`)
//!   that checks these limits without reading or uploading anything, so an over-cap session
//!   costs a tree of `fstatat` calls per checkpoint, not up to `max_size` of uploads.
//! - **One entry per name.** A name deleted and created again while its directory is listed
//!   can be returned twice by `readdir`; each directory's names are de-duplicated (a manifest
//!   listing a path twice would be refused by the restore).
//! - **Reuse is bounded.** Objects of the previous generation are referenced again (instead of
//!   re-packing a small file) only while the referenced old objects total at most `max_bytes`,
//!   so a restore never has to fetch more than [`crate::manifest::fetch_cap`].
//! - **Set-id bits are dropped** from every mode saved.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CStr;
use std::io::Read as _;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

use crate::Error;
use crate::manifest::{
    CHUNK_SIZE, Entry, Kind, MAX_NAME_BYTES, Manifest, ObjectInfo, PACK_SIZE, Piece, Root,
    SMALL_FILE, b64e, sha256,
};
use crate::store::hex;

/// Deepest directory level saved; a deeper tree fails the snapshot (the previous one stays).
pub const MAX_DEPTH: usize = 128;

pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// What a walk produced besides the entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Entries saved.
    pub entries: u64,
    /// File bytes saved.
    pub file_bytes: u64,
    /// FIFOs, sockets, devices and mount points skipped.
    pub skipped: u64,
    /// Objects uploaded (the rest were already in the store).
    pub uploaded_objects: u64,
    /// Bytes uploaded (plaintext).
    pub uploaded_bytes: u64,
    /// Files not read again: unchanged since the previous walk ([`FileCache`]).
    pub cached_files: u64,
}

/// What a previous walk of this process learnt about a file: if the file still has the same
/// identity, size, mtime **and ctime** (which the session cannot set back: any write or
/// `utimensat` moves it to now), its content hash and pieces are reused without reading it.
/// In memory only, per session and item: never stored, never trusted across processes.
///
/// **Racy-clean rule** (git's): ctime has a coarse granularity (a clock tick), so a write in the
/// same tick as the one the file was last changed in, after it was read, leaves every field
/// equal. A file is therefore remembered only when its ctime is at least [`RACY_WINDOW`] older
/// than the moment from which the session could write concurrently (a walk's start; a
/// restore's end, as nothing of the session runs during a restore): any later write then moves
/// ctime visibly.
#[derive(Clone, Debug, Default)]
pub struct FileCache {
    files: HashMap<(Root, Vec<u8>), CachedFile>,
}

/// Device, inode, size, mtime (s, ns), ctime (s, ns).
type FileId = (u64, u64, u64, i64, i64, i64, i64);

/// See [`FileCache`]: files changed less than this before the reference time are not cached.
pub const RACY_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a file's ctime is safely older than `reference` (see [`FileCache`]).
fn settled(id: &FileId, reference: std::time::SystemTime) -> bool {
    let Ok(r) = reference.duration_since(std::time::UNIX_EPOCH) else {
        return false;
    };
    let ctime_ns = i128::from(id.5) * 1_000_000_000 + i128::from(id.6);
    ctime_ns + (RACY_WINDOW.as_nanos() as i128) <= r.as_nanos() as i128
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct CachedFile {
    id: FileId,
    sha256: String,
    pieces: Vec<Piece>,
}

impl FileCache {
    /// Records a file just written by a restore (so the first checkpoint after it does not read
    /// it again).
    pub(crate) fn insert(
        &mut self,
        root: Root,
        path: Vec<u8>,
        st: &rustix::fs::Stat,
        sha256: &str,
        pieces: &[Piece],
    ) {
        self.files.insert(
            (root, path),
            CachedFile {
                id: file_id(st),
                sha256: sha256.to_owned(),
                pieces: pieces.to_vec(),
            },
        );
    }

    /// Forgets the files changed within [`RACY_WINDOW`] before `reference` (the moment from
    /// which the session could write).
    pub(crate) fn retain_settled(&mut self, reference: std::time::SystemTime) {
        self.files.retain(|_, c| settled(&c.id, reference));
    }
}

fn file_id(st: &rustix::fs::Stat) -> FileId {
    (
        st.st_dev,
        st.st_ino,
        st.st_size as u64,
        st.st_mtime,
        st.st_mtime_nsec as i64,
        st.st_ctime,
        st.st_ctime_nsec as i64,
    )
}

/// Sends a content object (name, plaintext) to the uploader.
pub(crate) type Upload<'a> = dyn FnMut(String, Vec<u8>) -> Result<(), Error> + 'a;

/// Walk state: limits, dedup maps and the pack being filled.
pub(crate) struct Walker<'a> {
    pub(crate) max_bytes: u64,
    pub(crate) max_entries: u64,
    /// Store name of an object from its plaintext hash.
    pub(crate) name_of: &'a dyn Fn(&[u8; 32]) -> String,
    pub(crate) upload: &'a mut Upload<'a>,
    /// Small-file contents of the previous generation: content hash → its piece.
    pub(crate) prev_small: HashMap<String, Piece>,
    /// Objects of the previous generation (already in the store).
    pub(crate) prev_objects: BTreeMap<String, ObjectInfo>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) objects: BTreeMap<String, ObjectInfo>,
    pub(crate) stats: WalkStats,
    /// The previous walk's file cache (read) and this walk's (built).
    pub(crate) old_cache: std::sync::Arc<FileCache>,
    pub(crate) new_cache: FileCache,
    /// Which entries are files whose identity goes into the new cache.
    ids: Vec<(usize, FileId)>,
    /// Stat-only pass: limits checked, nothing read, kept or uploaded.
    measure_only: bool,
    /// When the walk started (the racy-clean reference, see [`FileCache`]).
    started: std::time::SystemTime,
    /// Raw bytes of names and link targets so far ([`MAX_NAME_BYTES`]).
    name_bytes: u64,
    /// Bytes of the distinct objects referenced so far, and of those of the previous
    /// generation among them (reuse stops at `max_bytes`).
    reused_bytes: u64,
    uploaded: HashSet<String>,
    run_small: HashMap<String, Piece>,
    pack: Vec<u8>,
    pack_seq: u64,
    pack_names: HashMap<String, String>,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(
        max_bytes: u64,
        max_entries: u64,
        name_of: &'a dyn Fn(&[u8; 32]) -> String,
        upload: &'a mut Upload<'a>,
        prev: Option<&Manifest>,
    ) -> Walker<'a> {
        let mut prev_small = HashMap::new();
        let mut prev_objects = BTreeMap::new();
        if let Some(m) = prev {
            prev_objects = m.objects.clone();
            for e in &m.entries {
                if let Kind::File {
                    size,
                    sha256,
                    pieces,
                    ..
                } = &e.kind
                    && *size < SMALL_FILE
                    && pieces.len() == 1
                    && prev_objects.contains_key(&pieces[0].o)
                {
                    prev_small.insert(sha256.clone(), pieces[0].clone());
                }
            }
        }
        Walker {
            max_bytes,
            max_entries,
            name_of,
            upload,
            prev_small,
            prev_objects,
            entries: Vec::new(),
            objects: BTreeMap::new(),
            stats: WalkStats::default(),
            old_cache: std::sync::Arc::default(),
            new_cache: FileCache::default(),
            ids: Vec::new(),
            measure_only: false,
            started: std::time::SystemTime::now(),
            name_bytes: 0,
            reused_bytes: 0,
            uploaded: HashSet::new(),
            run_small: HashMap::new(),
            pack: Vec::new(),
            pack_seq: 0,
            pack_names: HashMap::new(),
        }
    }

    /// A walker that only checks the limits (entries, file bytes, names, depth): stats the
    /// tree, opens directories, never opens, reads or uploads a file.
    pub(crate) fn measure(
        max_bytes: u64,
        max_entries: u64,
        name_of: &'a dyn Fn(&[u8; 32]) -> String,
        upload: &'a mut Upload<'a>,
    ) -> Walker<'a> {
        let mut w = Walker::new(max_bytes, max_entries, name_of, upload, None);
        w.measure_only = true;
        w
    }

    /// Counts an entry whose name and link target are `raw_len` bytes, against the limits.
    fn push(&mut self, e: Entry, raw_len: usize) -> Result<(), Error> {
        self.stats.entries += 1;
        if self.stats.entries > self.max_entries {
            return Err(Error::TooLarge(format!(
                "more than {} entries (max_entries)",
                self.max_entries
            )));
        }
        self.name_bytes += raw_len as u64;
        if self.name_bytes > MAX_NAME_BYTES {
            return Err(Error::TooLarge(format!(
                "more than {} of names and link targets",
                wasm_sandbox_units::format_size(MAX_NAME_BYTES)
            )));
        }
        if !self.measure_only {
            self.entries.push(e);
        }
        Ok(())
    }

    /// Whether the previous generation's objects `names` may be referenced again: only while
    /// the old objects referenced stay within `max_bytes` in all (see the module docs).
    /// Counts them when they may.
    fn may_reuse<'n>(&mut self, names: impl Iterator<Item = &'n str> + Clone) -> bool {
        let mut seen = HashSet::new();
        let extra: u64 = names
            .clone()
            .filter(|n| !self.objects.contains_key(*n) && seen.insert(*n))
            .map(|n| self.prev_objects.get(n).map_or(u64::MAX, |i| i.len))
            .fold(0u64, u64::saturating_add);
        if self.reused_bytes.saturating_add(extra) > self.max_bytes {
            return false;
        }
        self.reused_bytes += extra;
        for n in names {
            if let Some(info) = self.prev_objects.get(n) {
                self.objects.insert(n.to_owned(), info.clone());
            }
        }
        true
    }

    /// Uploads an object unless the store has it already; records it for the manifest.
    fn object(&mut self, hash: [u8; 32], data: Vec<u8>) -> Result<String, Error> {
        let name = (self.name_of)(&hash);
        let info = ObjectInfo {
            sha256: hex(&hash),
            len: data.len() as u64,
        };
        if !self.prev_objects.contains_key(&name) && !self.uploaded.contains(&name) {
            self.stats.uploaded_objects += 1;
            self.stats.uploaded_bytes += data.len() as u64;
            (self.upload)(name.clone(), data)?;
            self.uploaded.insert(name.clone());
        }
        self.objects.insert(name.clone(), info);
        Ok(name)
    }

    fn flush_pack(&mut self) -> Result<(), Error> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.pack);
        let name = self.object(sha256(&data), data)?;
        self.pack_names
            .insert(format!("pending:{}", self.pack_seq), name);
        self.pack_seq += 1;
        Ok(())
    }

    fn small(&mut self, data: Vec<u8>) -> Result<(String, Vec<Piece>), Error> {
        let sum = hex(&sha256(&data));
        // An empty file has no pieces: a zero-length piece of a pack that ends up empty (every
        // other small file reused) would name a pack that is never written.
        if data.is_empty() {
            return Ok((sum, Vec::new()));
        }
        if let Some(p) = self.run_small.get(&sum) {
            return Ok((sum, vec![p.clone()]));
        }
        if let Some(p) = self.prev_small.get(&sum).cloned()
            && self.may_reuse(std::iter::once(p.o.as_str()))
        {
            self.run_small.insert(sum.clone(), p.clone());
            return Ok((sum, vec![p]));
        }
        let piece = Piece {
            o: format!("pending:{}", self.pack_seq),
            off: self.pack.len() as u64,
            len: data.len() as u64,
        };
        self.pack.extend_from_slice(&data);
        self.run_small.insert(sum.clone(), piece.clone());
        if self.pack.len() >= PACK_SIZE {
            self.flush_pack()?;
        }
        Ok((sum, vec![piece]))
    }

    /// Finishes: flushes the last pack and resolves pack names in the entries.
    pub(crate) fn finish(&mut self) -> Result<(), Error> {
        self.flush_pack()?;
        for e in &mut self.entries {
            if let Kind::File { pieces, .. } = &mut e.kind {
                for p in pieces {
                    if let Some(name) = self.pack_names.get(&p.o) {
                        p.o = name.clone();
                    }
                }
            }
        }
        for (i, id) in std::mem::take(&mut self.ids) {
            // Racy-clean: changed too close to the walk's start to be trusted next time.
            if !settled(&id, self.started) {
                continue;
            }
            let e = &self.entries[i];
            if let (Kind::File { sha256, pieces, .. }, Ok(path)) = (&e.kind, e.path_bytes()) {
                self.new_cache.files.insert(
                    (e.root, path),
                    CachedFile {
                        id,
                        sha256: sha256.clone(),
                        pieces: pieces.clone(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Walks one root directory (`dir` itself is trusted: the worker made it); `exclude` are
    /// relative paths (raw bytes) not saved, e.g. installed skills.
    pub(crate) fn walk(
        &mut self,
        root: Root,
        dir: &Path,
        exclude: &[Vec<u8>],
    ) -> Result<(), Error> {
        let fd = match rustix::fs::open(dir, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::Io(e.into())),
        };
        let root_dev = rustix::fs::fstat(&fd).map_err(io)?.st_dev;
        // Each directory's names seen so far (a name deleted and created again during the
        // listing may come back from `readdir`: it is saved once).
        let mut stack: Vec<(Dir, Vec<u8>, HashSet<Vec<u8>>)> =
            vec![(Dir::read_from(&fd).map_err(io)?, Vec::new(), HashSet::new())];
        loop {
            let depth = stack.len();
            let Some((dir, rel, names)) = stack.last_mut() else {
                break;
            };
            let Some(entry) = dir.read() else {
                stack.pop();
                continue;
            };
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") || !names.insert(name.to_bytes().to_vec()) {
                continue;
            }
            let mut path = rel.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.to_bytes());
            if exclude.contains(&path) {
                continue;
            }
            let parent = dir.fd().map_err(io)?;
            if let Some(child) = self.entry(root, parent, name, &path, root_dev, depth)? {
                stack.push((child, path, HashSet::new()));
            }
        }
        Ok(())
    }

    /// Saves one entry; returns the directory to descend into, if it is one.
    fn entry(
        &mut self,
        root: Root,
        parent: BorrowedFd<'_>,
        name: &CStr,
        path: &[u8],
        root_dev: u64,
        depth: usize,
    ) -> Result<Option<Dir>, Error> {
        let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mode = st.st_mode & 0o1777;
        let mtime_ns = st
            .st_mtime
            .saturating_mul(1_000_000_000)
            .saturating_add(st.st_mtime_nsec as i64);
        let p = b64e(path);
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                if st.st_dev != root_dev {
                    tracing::info!(path = %String::from_utf8_lossy(path), "snapshot: mount point not entered");
                    self.stats.skipped += 1;
                    return Ok(None);
                }
                if depth >= MAX_DEPTH {
                    return Err(Error::TooLarge(format!(
                        "directories nested deeper than {MAX_DEPTH}"
                    )));
                }
                let fd = match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => fd,
                    // Replaced (by a link or a file) since the listing: skip it.
                    Err(
                        rustix::io::Errno::NOENT
                        | rustix::io::Errno::LOOP
                        | rustix::io::Errno::NOTDIR,
                    ) => {
                        return Ok(None);
                    }
                    Err(e) => return Err(io(e)),
                };
                let again = rustix::fs::fstat(&fd).map_err(io)?;
                if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
                    return Ok(None);
                }
                self.push(
                    Entry {
                        root,
                        path: p,
                        kind: Kind::Dir { mode, mtime_ns },
                    },
                    path.len(),
                )?;
                Ok(Some(Dir::read_from(&fd).map_err(io)?))
            }
            FileType::Symlink => {
                let target = match rustix::fs::readlinkat(parent, name, Vec::new()) {
                    Ok(t) => t,
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => return Ok(None),
                    Err(e) => return Err(io(e)),
                };
                let raw_len = path.len() + target.as_bytes().len();
                self.push(
                    Entry {
                        root,
                        path: p,
                        kind: Kind::Symlink {
                            target: b64e(target.as_bytes()),
                        },
                    },
                    raw_len,
                )?;
                Ok(None)
            }
            FileType::RegularFile => {
                let size = st.st_size as u64;
                if self.stats.file_bytes + size > self.max_bytes {
                    return Err(Error::TooLarge(format!(
                        "more than {} of files (max_size)",
                        wasm_sandbox_units::format_size(self.max_bytes)
                    )));
                }
                if self.measure_only {
                    self.stats.file_bytes += size;
                    return self.push(placeholder(root), path.len()).map(|()| None);
                }
                let id = file_id(&st);
                let cached = self
                    .old_cache
                    .files
                    .get(&(root, path.to_vec()))
                    .filter(|c| {
                        c.id == id
                            && c.pieces
                                .iter()
                                .all(|p| self.prev_objects.contains_key(&p.o))
                    })
                    .cloned();
                let (size, sha256, pieces, cacheable) = if let Some(c) = cached
                    && self.may_reuse(c.pieces.iter().map(|p| p.o.as_str()))
                {
                    self.stats.cached_files += 1;
                    (size, c.sha256, c.pieces, true)
                } else {
                    let fd = match rustix::fs::openat(parent, name, FILE_FLAGS, Mode::empty()) {
                        Ok(fd) => fd,
                        Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => {
                            return Ok(None);
                        }
                        Err(e) => return Err(io(e)),
                    };
                    let again = rustix::fs::fstat(&fd).map_err(io)?;
                    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino)
                        || FileType::from_raw_mode(again.st_mode) != FileType::RegularFile
                    {
                        return Ok(None);
                    }
                    let (size, sum, pieces) = self.file_content(fd.as_fd(), size)?;
                    // Cached only when nothing changed while it was read.
                    let unchanged = rustix::fs::fstat(&fd).is_ok_and(|after| file_id(&after) == id);
                    (size, sum, pieces, unchanged)
                };
                self.stats.file_bytes += size;
                if cacheable {
                    self.ids.push((self.entries.len(), id));
                }
                self.push(
                    Entry {
                        root,
                        path: p,
                        kind: Kind::File {
                            mode,
                            mtime_ns,
                            size,
                            sha256,
                            pieces,
                        },
                    },
                    path.len(),
                )?;
                Ok(None)
            }
            other => {
                tracing::info!(path = %String::from_utf8_lossy(path), kind = ?other, "snapshot: not a file, directory or link; skipped");
                self.stats.skipped += 1;
                Ok(None)
            }
        }
    }

    /// Reads up to `size` bytes (what `fstat` said; a file growing under us is cut there).
    fn file_content(
        &mut self,
        fd: BorrowedFd<'_>,
        size: u64,
    ) -> Result<(u64, String, Vec<Piece>), Error> {
        let file = std::fs::File::from(fd.try_clone_to_owned().map_err(Error::Io)?);
        let mut reader = file.take(size);
        if size < SMALL_FILE {
            let mut data = Vec::with_capacity(size as usize);
            reader.read_to_end(&mut data).map_err(Error::Io)?;
            let n = data.len() as u64;
            let (sum, pieces) = self.small(data)?;
            return Ok((n, sum, pieces));
        }
        let mut whole = ring::digest::Context::new(&ring::digest::SHA256);
        let mut pieces = Vec::new();
        let mut total = 0u64;
        loop {
            let mut chunk = Vec::with_capacity(CHUNK_SIZE);
            (&mut reader)
                .take(CHUNK_SIZE as u64)
                .read_to_end(&mut chunk)
                .map_err(Error::Io)?;
            if chunk.is_empty() {
                break;
            }
            whole.update(&chunk);
            let len = chunk.len() as u64;
            total += len;
            let name = self.object(sha256(&chunk), chunk)?;
            pieces.push(Piece {
                o: name,
                off: 0,
                len,
            });
        }
        let mut sum = [0u8; 32];
        sum.copy_from_slice(whole.finish().as_ref());
        Ok((total, hex(&sum), pieces))
    }
}

/// The entry the stat-only pass counts for a file (never kept).
fn placeholder(root: Root) -> Entry {
    Entry {
        root,
        path: String::new(),
        kind: Kind::Symlink {
            target: String::new(),
        },
    }
}

fn io(e: rustix::io::Errno) -> Error {
    Error::Io(e.into())
}
