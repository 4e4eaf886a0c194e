//! The local ledger: `<workdir>/usage/usage-NNNNNN.jsonl`, one [`UsageRecord`] per line.
//!
//! # Durability
//!
//! [`Ledger::append`] writes the whole line with one `write` on an `O_APPEND` descriptor and
//! `fdatasync`s the file before it returns (the worker stops the work item only after that), so
//! a crash or `kill -9` after the call loses nothing: the record is on disk, and the sink's
//! cursor ([`crate::cursor`]) says whether it was delivered. Creating the directory or a new
//! segment also `fsync`s the directory, or the new name could vanish in a power loss.
//!
//! A crash in the middle of a `write` can leave a torn last line. Readers only take lines that
//! end in `\n` and skip lines that do not parse (logged), and a writer that opens a segment
//! whose last byte is not `\n` ends that line first, so the next record is never glued to the
//! torn one.
//!
//! # Space
//!
//! The ledger lives in the workdir, on the filesystem a best-effort session (no disk cap) can
//! fill. So that a full filesystem cannot cost a billing record, each segment reserves
//! [`PREALLOCATE`] bytes ahead of its end with `fallocate(FALLOC_FL_KEEP_SIZE)` when it is
//! opened, rotated, or its reserve runs low: the blocks are the ledger's before a session can
//! take them, while the file's size (what readers see) does not change. Where the filesystem
//! cannot preallocate (`EOPNOTSUPP`) or is already full, the ledger goes on without a reserve;
//! a write that still fails is reported as [`AppendError::NotWritten`] with the segment cut
//! back to its last whole line, and the worker keeps the record in memory and retries
//! (`wasm-sandbox-worker`'s `usage` module).
//!
//! A `write` that succeeded followed by a failed `fdatasync` is [`AppendError::NotSynced`]: the
//! line *is* in the file (and will be read and sent), so it must not be written again; the
//! ledger syncs again before its next write and reports an error until a sync succeeds.
//!
//! # Rotation
//!
//! A segment grows to `rotate_size` (default 64 MiB) and the next record opens
//! `usage-<n+1>.jsonl`; old segments are kept (the operator archives them; the sink's cursor
//! names a segment and an offset in it).
//!
//! # One writer
//!
//! The ledger holds an exclusive `flock` on `<dir>/.lock` while open: a second worker pointed
//! at the same directory fails to start rather than interleave segments. The lock dies with the
//! process, so a restart after `kill -9` takes it over.
//!
//! # What is trusted
//!
//! The ledger is written only by the worker, from measurements the worker made; nothing a
//! session sends reaches it except counts. Paths are built from fixed names, and segments are
//! opened with `O_NOFOLLOW`, so a link planted in the directory is not followed.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::UsageRecord;

/// Default segment size before rotation: 64 MiB.
pub const DEFAULT_ROTATE_SIZE: u64 = 64 << 20;
/// Bytes reserved ahead of a segment's end (`fallocate` with `FALLOC_FL_KEEP_SIZE`): 1 MiB,
/// a few thousand records.
pub const PREALLOCATE: u64 = 1 << 20;
/// Longest line a reader accepts (a record is a few hundred bytes).
pub const MAX_LINE: usize = 1 << 20;

const PREFIX: &str = "usage-";
const SUFFIX: &str = ".jsonl";

/// File name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("{PREFIX}{n:06}{SUFFIX}")
}

fn parse_segment(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The ledger's segments, oldest first.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_segment)
            && entry.file_type()?.is_file()
        {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// `fsync` of a directory: makes a new name in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn open_segment(path: &Path, create_new: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.append(true)
        .read(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true);
    }
    o.open(path)
}

/// Reserves `len` bytes from `offset` in `file` without changing its size. Best effort: `false`
/// when the filesystem cannot (no support, or no space left).
fn preallocate(file: &File, offset: u64, len: u64) -> bool {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return false;
    };
    // SAFETY: fallocate on a descriptor the caller owns; no memory is passed.
    let rc = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(file),
            libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "usage ledger: no preallocation");
    }
    rc == 0
}

/// Why [`Ledger::append_checked`] failed.
#[derive(Debug)]
pub enum AppendError {
    /// The record is not in the ledger (the segment was cut back to its last whole line, or
    /// ends in a torn line that the next append ends); append it again later.
    NotWritten(io::Error),
    /// The line was written but `fdatasync` failed: it is in the file (readers and the sink
    /// see it) but may not survive a power loss. Do not append it again.
    NotSynced(io::Error),
}

impl AppendError {
    /// The underlying error.
    pub fn io(&self) -> &io::Error {
        match self {
            AppendError::NotWritten(e) | AppendError::NotSynced(e) => e,
        }
    }
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::NotWritten(e) => write!(f, "not written: {e}"),
            AppendError::NotSynced(e) => write!(f, "written but not synced: {e}"),
        }
    }
}

impl std::error::Error for AppendError {}

impl From<AppendError> for io::Error {
    fn from(e: AppendError) -> io::Error {
        let kind = e.io().kind();
        io::Error::new(kind, e.to_string())
    }
}

/// The append side of the ledger (see the [module docs](self)).
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    rotate_size: u64,
    segment: u64,
    file: File,
    size: u64,
    /// Where the segment's reserved space ends (0 = none).
    reserved_to: u64,
    /// A write failed part-way: the segment may end in a torn line.
    torn: bool,
    /// A line was written but its `fdatasync` failed: sync before the next write.
    unsynced: bool,
    /// Test hook: how many `fdatasync`s still fail on purpose.
    #[cfg(feature = "fault-injection")]
    fail_syncs: u32,
    _lock: File,
}

impl Ledger {
    /// Opens (creating) the ledger in `dir`, appending to its newest segment. Fails when
    /// another process holds it.
    pub fn open(dir: &Path, rotate_size: u64) -> io::Result<Ledger> {
        if !dir.is_dir() {
            // 0700: records name environments, sessions and work items.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(".lock"))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "usage ledger {} is in use by another process ({e})",
                    dir.display()
                ),
            ));
        }
        let segment = segments(dir)?.last().map_or(1, |(n, _)| *n);
        let path = dir.join(segment_name(segment));
        let existed = path.exists();
        let file = open_segment(&path, false)?;
        if !existed {
            sync_dir(dir)?;
        }
        let size = file.metadata()?.len();
        let mut ledger = Ledger {
            dir: dir.to_owned(),
            rotate_size: rotate_size.max(1),
            segment,
            file,
            size,
            reserved_to: 0,
            torn: true,
            unsynced: false,
            #[cfg(feature = "fault-injection")]
            fail_syncs: 0,
            _lock: lock,
        };
        ledger.end_torn_line()?;
        ledger.reserve();
        Ok(ledger)
    }

    /// The ledger directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment records go to now.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// The position after the last record written.
    pub fn end(&self) -> Position {
        Position {
            segment: self.segment,
            offset: self.size,
        }
    }

    /// Whether a written line still waits for a successful `fdatasync` ([`Ledger::sync`]).
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// `fdatasync`s the segment; clears [`Ledger::unsynced`] when it succeeds.
    pub fn sync(&mut self) -> io::Result<()> {
        self.sync_data()?;
        self.unsynced = false;
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if self.fail_syncs > 0 {
            self.fail_syncs -= 1;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.sync_data()
    }

    /// Test hook (feature `fault-injection`): the next `n` `fdatasync`s fail with `EIO`.
    #[cfg(feature = "fault-injection")]
    pub fn fail_next_syncs(&mut self, n: u32) {
        self.fail_syncs = n;
    }

    /// Tops the segment's reserve up to [`PREALLOCATE`] bytes past its end when less than half
    /// is left (best effort; see the [module docs](self)).
    fn reserve(&mut self) {
        if self.reserved_to >= self.size + PREALLOCATE / 2 {
            return;
        }
        if preallocate(&self.file, self.size, PREALLOCATE) {
            self.reserved_to = self.size + PREALLOCATE;
        }
    }

    /// Ends a torn last line with `\n` (after a crash or a failed write).
    fn end_torn_line(&mut self) -> io::Result<()> {
        if !self.torn {
            return Ok(());
        }
        self.size = self.file.metadata()?.len();
        if self.size > 0 {
            let mut last = [0u8; 1];
            self.file.seek(SeekFrom::Start(self.size - 1))?;
            self.file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                tracing::warn!(
                    segment = self.segment,
                    "usage ledger: ending a torn last line"
                );
                self.file.write_all(b"\n")?;
                self.file.sync_data()?;
                self.size += 1;
            }
        }
        self.torn = false;
        Ok(())
    }

    /// Appends `record` as one line and `fdatasync`s it; returns where the line ends.
    /// [`Ledger::append_checked`] says whether a failed record is in the file.
    pub fn append(&mut self, record: &UsageRecord) -> io::Result<crate::Position> {
        Ok(self.append_checked(record)?)
    }

    /// Appends `record` as one line and `fdatasync`s it; returns where the line ends, or
    /// whether the line is in the file when it fails (see the [module docs](self)).
    pub fn append_checked(&mut self, record: &UsageRecord) -> Result<crate::Position, AppendError> {
        let mut line =
            serde_json::to_vec(record).map_err(|e| AppendError::NotWritten(io::Error::other(e)))?;
        line.push(b'\n');
        if self.unsynced {
            // An earlier line is not known to be durable: do not pile more on top of it.
            self.sync().map_err(AppendError::NotWritten)?;
        }
        self.end_torn_line().map_err(AppendError::NotWritten)?;
        if self.size > 0 && self.size + line.len() as u64 > self.rotate_size {
            self.rotate().map_err(AppendError::NotWritten)?;
        }
        if let Err(e) = self.file.write_all(&line) {
            // Cut the segment back to its last whole line; a torn line is the fallback.
            self.torn = self.file.set_len(self.size).is_err();
            self.reserved_to = 0;
            return Err(AppendError::NotWritten(e));
        }
        self.size += line.len() as u64;
        if let Err(e) = self.sync_data() {
            self.unsynced = true;
            return Err(AppendError::NotSynced(e));
        }
        self.reserve();
        Ok(self.end())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let next = self.segment + 1;
        // Not `create_new`: an earlier rotation may have created the file and then failed to
        // sync the directory; taking it over (ending a torn line) beats failing for ever.
        let file = open_segment(&self.dir.join(segment_name(next)), false)?;
        let size = file.metadata()?.len();
        sync_dir(&self.dir)?;
        tracing::info!(segment = next, "usage ledger: rotated");
        self.file = file;
        self.segment = next;
        self.size = size;
        self.reserved_to = 0;
        self.torn = size > 0;
        self.end_torn_line()?;
        self.reserve();
        Ok(())
    }
}

/// A place in the ledger: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// Segment number (`usage-<segment>.jsonl`); 0 = before the first.
    pub segment: u64,
    /// Byte offset in it.
    pub offset: u64,
}

/// A record read back, with the position just past its line.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The record.
    pub record: UsageRecord,
    /// Where its line ends (the cursor once it is delivered).
    pub end: Position,
}

/// Reads up to `max` complete records after `from`. Returns them and the position after the
/// last complete line read (skipped unparseable lines included), from which the next read
/// continues. A torn line at the end of the newest segment is left for later (a writer may
/// be in the middle of it); one at the end of an older segment is skipped.
pub fn read_from(dir: &Path, from: Position, max: usize) -> io::Result<(Vec<Entry>, Position)> {
    read_counting(dir, from, max, &mut Skipped::default())
}

/// Lines a reader passed over (for `wasm-sandbox usage` to report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Complete lines that are not records (junk, or over [`MAX_LINE`]).
    pub junk: usize,
    /// Torn lines (no `\n`): at the end of an older segment, or the newest segment's tail
    /// (a crash mid-write, or a line a worker is writing right now).
    pub torn: usize,
}

/// Every record of the ledger, in order, with a count of the lines skipped.
pub fn read_all_counted(dir: &Path) -> io::Result<(Vec<UsageRecord>, Skipped)> {
    let mut skipped = Skipped::default();
    let (entries, _) = read_counting(dir, Position::default(), usize::MAX, &mut skipped)?;
    Ok((entries.into_iter().map(|e| e.record).collect(), skipped))
}

fn read_counting(
    dir: &Path,
    from: Position,
    max: usize,
    skipped: &mut Skipped,
) -> io::Result<(Vec<Entry>, Position)> {
    let mut out = Vec::new();
    let mut pos = from;
    let segs = segments(dir)?;
    let newest = segs.last().map(|(n, _)| *n);
    for (n, path) in segs {
        if n < from.segment {
            continue;
        }
        if n > pos.segment {
            pos = Position {
                segment: n,
                offset: 0,
            };
        }
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::new(file);
        reader.seek(SeekFrom::Start(pos.offset))?;
        loop {
            if out.len() >= max {
                return Ok((out, pos));
            }
            match read_line(&mut reader)? {
                Line::Eof => break,
                Line::Torn => {
                    skipped.torn += 1;
                    if Some(n) == newest {
                        return Ok((out, pos));
                    }
                    break;
                }
                Line::Complete(bytes, len) => {
                    pos.offset += len;
                    match bytes.map(|b| serde_json::from_slice::<UsageRecord>(&b)) {
                        Some(Ok(record)) => out.push(Entry { record, end: pos }),
                        Some(Err(e)) => {
                            skipped.junk += 1;
                            tracing::warn!(segment = n, offset = pos.offset, error = %e,
                                "usage ledger: skipping a line that is not a record");
                        }
                        None => {
                            skipped.junk += 1;
                            tracing::warn!(
                                segment = n,
                                offset = pos.offset,
                                "usage ledger: skipping an over-long line"
                            );
                        }
                    }
                }
            }
        }
    }
    Ok((out, pos))
}

/// Every record of the ledger, in order.
pub fn read_all(dir: &Path) -> io::Result<Vec<UsageRecord>> {
    let (entries, _) = read_from(dir, Position::default(), usize::MAX)?;
    Ok(entries.into_iter().map(|e| e.record).collect())
}

enum Line {
    Eof,
    /// Bytes with no `\n` after them (yet).
    Torn,
    /// A line (`None` when longer than [`MAX_LINE`]) and its length with the `\n`.
    Complete(Option<Vec<u8>>, u64),
}

fn read_line(reader: &mut BufReader<File>) -> io::Result<Line> {
    let mut buf = Vec::new();
    let mut len = 0u64;
    let mut over = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if len == 0 { Line::Eof } else { Line::Torn });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !over {
            if buf.len() + take > MAX_LINE + 1 {
                over = true;
                buf = Vec::new();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        len += take as u64;
        reader.consume(take);
        if done {
            if !over {
                buf.pop();
            }
            return Ok(Line::Complete((!over).then_some(buf), len));
        }
    }
}
