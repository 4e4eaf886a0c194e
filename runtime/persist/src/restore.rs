//! Restoring: writing a manifest's entries into a session's (empty) directories.
//!
//! The manifest and the objects come from a store that may have been tampered with or damaged,
//! so nothing in them is trusted:
//!
//! - **Bounded reads**: the manifest is read only up to [`crate::manifest::manifest_cap`], each
//!   object only up to the length the manifest gives it (itself at most
//!   [`crate::manifest::MAX_OBJECT`]), and the distinct objects together up to
//!   [`crate::manifest::fetch_cap`]; an object is dropped from memory as soon as the last piece
//!   that uses it is written, so a 1 GiB file costs a few chunks of memory, not 1 GiB.
//! - **Checked before anything is written**: entry count and total size against the limits,
//!   every path split into components that are each a plain name (not empty, `.`, `..`, no NUL),
//!   every entry's parent listed before it as a directory, every piece inside an object the
//!   manifest lists, piece lengths adding up to the file size. A manifest that fails any check
//!   writes nothing.
//! - **No path lands outside the session's directories**: every file, directory and link is
//!   made with an `*at` call on a descriptor of its parent, reached from the root descriptor
//!   one component at a time with `O_NOFOLLOW | O_DIRECTORY`; files are created
//!   `O_CREAT | O_EXCL | O_NOFOLLOW` (never an existing file, never through a link). A link's
//!   target is stored text: `symlinkat` writes it and nothing ever follows it here (the same
//!   capability rule as cap-std's `Dir`, by the same means).
//! - **Contents are verified**: each object's SHA-256 against the manifest, each file's
//!   SHA-256 while it is written. A failure part-way returns an error; the caller then empties
//!   the directories (the runner has not started: the agent never sees a half restore) and
//!   leaves the note.
//! - Set-id bits are never restored (`mode & 0o1777`).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use bytes::Bytes;
use rustix::fs::{Mode, OFlags, Timespec, Timestamps};

use crate::Error;
use crate::manifest::{Kind, MAX_OBJECT, Manifest, Root, b64d, fetch_cap, sha256};
use crate::store::hex;
use crate::walk::{DIR_FLAGS, MAX_DEPTH};

/// What a restore wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Entries written.
    pub entries: u64,
    /// File bytes written.
    pub file_bytes: u64,
    /// Objects fetched.
    pub objects: u64,
    /// Bytes fetched (plaintext).
    pub fetched_bytes: u64,
}

fn corrupt(why: impl Into<String>) -> Error {
    Error::Corrupt(why.into())
}

/// Splits and checks a relative path.
fn components(path: &[u8]) -> Result<Vec<CString>, Error> {
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    if parts.len() > MAX_DEPTH + 1 {
        return Err(corrupt("path too deep"));
    }
    parts
        .into_iter()
        .map(|c| {
            if c.is_empty() || c == b"." || c == b".." || c.len() > 255 {
                return Err(corrupt(format!(
                    "bad path component {:?}",
                    String::from_utf8_lossy(c)
                )));
            }
            CString::new(c).map_err(|_| corrupt("NUL in a path"))
        })
        .collect()
}

/// Checks the whole manifest against the limits and itself; returns the entries' paths.
pub(crate) fn validate(
    m: &Manifest,
    max_bytes: u64,
    max_entries: u64,
) -> Result<Vec<Vec<u8>>, Error> {
    if m.entries.len() as u64 > max_entries {
        return Err(Error::TooLarge(format!(
            "{} entries, over max_entries {max_entries}",
            m.entries.len()
        )));
    }
    let mut dirs: HashSet<(Root, Vec<u8>)> = HashSet::new();
    let mut seen: HashSet<(Root, Vec<u8>)> = HashSet::new();
    let mut total = 0u64;
    let mut fetched: HashSet<&str> = HashSet::new();
    let mut fetch_total = 0u64;
    let mut paths = Vec::with_capacity(m.entries.len());
    for e in &m.entries {
        let path = e.path_bytes()?;
        components(&path)?;
        if let Some(pos) = path.iter().rposition(|&b| b == b'/')
            && !dirs.contains(&(e.root, path[..pos].to_vec()))
        {
            return Err(corrupt("an entry comes before its directory"));
        }
        if !seen.insert((e.root, path.clone())) {
            return Err(corrupt("a path is listed twice"));
        }
        match &e.kind {
            Kind::Dir { .. } => {
                dirs.insert((e.root, path.clone()));
            }
            Kind::File { size, pieces, .. } => {
                total = total.saturating_add(*size);
                let mut sum = 0u64;
                for p in pieces {
                    let info = m
                        .objects
                        .get(&p.o)
                        .ok_or_else(|| corrupt("a piece names an unlisted object"))?;
                    if p.off.checked_add(p.len).is_none_or(|end| end > info.len) {
                        return Err(corrupt("a piece runs past its object"));
                    }
                    if info.len > MAX_OBJECT {
                        return Err(corrupt("an object is larger than any walk makes"));
                    }
                    if fetched.insert(p.o.as_str()) {
                        fetch_total = fetch_total.saturating_add(info.len);
                    }
                    sum = sum.saturating_add(p.len);
                }
                if sum != *size {
                    return Err(corrupt("pieces do not add up to the file size"));
                }
            }
            Kind::Symlink { target } => {
                let t = b64d(target)?;
                if t.is_empty() || t.len() > 4096 || t.contains(&0) {
                    return Err(corrupt("bad link target"));
                }
            }
        }
        paths.push(path);
    }
    if total > max_bytes {
        return Err(Error::TooLarge(format!(
            "{} of files, over max_size {}",
            wasm_sandbox_units::format_size(total),
            wasm_sandbox_units::format_size(max_bytes)
        )));
    }
    if fetch_total > fetch_cap(max_bytes) {
        return Err(Error::TooLarge(format!(
            "{} of objects to fetch, over twice max_size {}",
            wasm_sandbox_units::format_size(fetch_total),
            wasm_sandbox_units::format_size(max_bytes)
        )));
    }
    Ok(paths)
}

/// Opens the directory `rel` (a validated path) below `root`, one component at a time.
fn open_dir(root: &OwnedFd, rel: &[u8]) -> Result<OwnedFd, Error> {
    let mut fd = rustix::fs::openat(root, c".", DIR_FLAGS, Mode::empty()).map_err(io)?;
    if rel.is_empty() {
        return Ok(fd);
    }
    for c in components(rel)? {
        fd = rustix::fs::openat(&fd, c.as_c_str(), DIR_FLAGS, Mode::empty()).map_err(io)?;
    }
    Ok(fd)
}

fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn ts(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    }
}

/// Writes the manifest's entries below the roots. `fetch` returns an object's plaintext
/// (objects are asked for in first-use order); it is verified here.
pub(crate) fn write(
    m: &Manifest,
    paths: &[Vec<u8>],
    roots: &[(Root, &Path)],
    fetch: &mut dyn FnMut(&str) -> Result<Bytes, Error>,
    files: &mut crate::walk::FileCache,
) -> Result<RestoreStats, Error> {
    let mut root_fds: HashMap<Root, OwnedFd> = HashMap::new();
    for (r, p) in roots {
        let fd = rustix::fs::open(*p, DIR_FLAGS, Mode::empty()).map_err(io)?;
        root_fds.insert(*r, fd);
    }
    // The last piece (counted over the whole manifest) that uses each object, so it is
    // dropped from memory right after that piece is written.
    let mut last_use: HashMap<&str, usize> = HashMap::new();
    let mut n = 0usize;
    for e in &m.entries {
        if let Kind::File { pieces, .. } = &e.kind {
            for p in pieces {
                last_use.insert(p.o.as_str(), n);
                n += 1;
            }
        }
    }
    let mut piece_no = 0usize;
    let mut cache: HashMap<String, Bytes> = HashMap::new();
    let mut stats = RestoreStats::default();
    let mut cur: Option<(Root, Vec<u8>, OwnedFd)> = None;
    for (e, path) in m.entries.iter().zip(paths) {
        let root_fd = root_fds
            .get(&e.root)
            .ok_or_else(|| corrupt("an entry names an unknown root"))?;
        let (parent_rel, name) = split(path);
        let name = CString::new(name).map_err(|_| corrupt("NUL in a path"))?;
        if !matches!(&cur, Some((r, p, _)) if *r == e.root && p == parent_rel) {
            cur = Some((e.root, parent_rel.to_vec(), open_dir(root_fd, parent_rel)?));
        }
        let parent = &cur.as_ref().expect("set above").2;
        match &e.kind {
            Kind::Dir { .. } => {
                rustix::fs::mkdirat(parent, &name, Mode::from_raw_mode(0o700)).map_err(io)?;
            }
            Kind::Symlink { target } => {
                let t = CString::new(b64d(target)?).map_err(|_| corrupt("NUL in a link"))?;
                rustix::fs::symlinkat(&t, parent, &name).map_err(io)?;
            }
            Kind::File {
                mode,
                mtime_ns,
                size,
                sha256: want,
                pieces,
            } => {
                let fd = rustix::fs::openat(
                    parent,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io)?;
                let mut file = std::fs::File::from(fd);
                let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
                for p in pieces {
                    if !cache.contains_key(&p.o) {
                        let data = fetch(&p.o)?;
                        let info = &m.objects[&p.o];
                        if data.len() as u64 != info.len || hex(&sha256(&data)) != info.sha256 {
                            return Err(corrupt(format!("object {} fails its checksum", p.o)));
                        }
                        stats.objects += 1;
                        stats.fetched_bytes += data.len() as u64;
                        cache.insert(p.o.clone(), data);
                    }
                    let data = &cache[&p.o];
                    let slice = &data[p.off as usize..(p.off + p.len) as usize];
                    digest.update(slice);
                    file.write_all(slice).map_err(Error::Io)?;
                    if last_use.get(p.o.as_str()) == Some(&piece_no) {
                        cache.remove(&p.o);
                    }
                    piece_no += 1;
                }
                if hex(digest.finish().as_ref()) != *want {
                    return Err(corrupt("a file fails its checksum"));
                }
                rustix::fs::fchmod(file.as_fd(), Mode::from_raw_mode(mode & 0o1777)).map_err(io)?;
                let t = ts(*mtime_ns);
                rustix::fs::futimens(
                    file.as_fd(),
                    &Timestamps {
                        last_access: t,
                        last_modification: t,
                    },
                )
                .map_err(io)?;
                if let Ok(st) = rustix::fs::fstat(file.as_fd()) {
                    files.insert(e.root, path.clone(), &st, want, pieces);
                }
                stats.file_bytes += size;
            }
        }
        stats.entries += 1;
    }
    drop(cur);
    // Directory modes and times last, deepest first (writing into a directory changes its
    // mtime, and a read-only mode would stop the writes).
    for (e, path) in m.entries.iter().zip(paths).rev() {
        if let Kind::Dir { mode, mtime_ns } = &e.kind {
            let fd = open_dir(&root_fds[&e.root], path)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o1777)).map_err(io)?;
            let t = ts(*mtime_ns);
            rustix::fs::futimens(
                &fd,
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
            )
            .map_err(io)?;
        }
    }
    Ok(stats)
}

fn io(e: rustix::io::Errno) -> Error {
    Error::Io(e.into())
}
