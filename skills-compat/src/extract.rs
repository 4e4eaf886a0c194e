//! Safe extraction of a skill archive (zip, tar, tar.gz, tar.bz2, tar.xz) into a directory.
//!
//! Mirrors `_extract_skill_archive` (`_skills.py:140-197`):
//!
//! - the format is sniffed: a zip (end-of-central-directory record found) first, otherwise a
//!   tar, plain or gzip / bzip2 / xz compressed by magic bytes;
//! - **every** member name is screened first (see [`crate::names`]): one absolute or `..` name
//!   rejects the whole archive, whether or not that member would be extracted;
//! - only regular files and directories are extracted. Symlinks, hard links, devices, FIFOs and
//!   sockets are skipped (for zip, the Unix mode in `external_attr >> 16` is trusted only when
//!   the creator host byte is Unix (3) or OS X (19), exactly as the reference does);
//! - a single wrapper directory shared by all extracted members is stripped;
//! - files get `0755` when any execute bit was set in the archive, else `0644` (never setuid,
//!   setgid, sticky or group/other-write); directories get `0700`.
//!
//! # Hardening beyond the reference
//!
//! - **Limits** ([`ExtractLimits`]): member count, path depth and length, per-file and total
//!   size. Declared sizes are checked in a first pass before anything is written (a member
//!   declaring 10 GB is refused without decompressing it); actual bytes are counted while
//!   copying and the copy stops *before* writing past a limit (a zip member that lies about
//!   its size). For tar streams every member's declared data size counts, links included,
//!   because skipping it still costs decompression.
//! - **No path-based writes.** The destination is a [`cap_std::fs::Dir`] handle; every
//!   component is opened with `O_NOFOLLOW` relative to its parent handle, so no symlink (none
//!   is ever created, but a racing process could plant one) can redirect a write.
//! - **Bounded tar metadata.** GNU long names and PAX headers are read by this module with a
//!   64 KiB cap (the `tar` crate would read them whole into memory). A PAX `size` that
//!   disagrees with the header, global PAX `path`/`size` records, and GNU sparse members are
//!   refused instead of being interpreted (the reference extracts sparse files; skills never
//!   contain them).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{
    Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt,
};
use zip::ZipArchive;
use zip::read::HasZipMetadata;

use crate::limits::ExtractLimits;
use crate::names::{Components, NameRefusal, archive_top_dir, safe_member_name, strip_top};

/// Mode of every directory created by extraction (owner only).
pub const DIR_MODE: u32 = 0o700;
/// Mode of an extracted file whose archive mode had any execute bit.
pub const EXEC_FILE_MODE: u32 = 0o755;
/// Mode of every other extracted file.
pub const FILE_MODE: u32 = 0o644;

/// Cap on one tar extension header (GNU long name / link, PAX record set).
const MAX_EXTENSION_HEADER_BYTES: u64 = 64 * 1024;
/// Zip creator hosts whose `external_attr` high 16 bits are a Unix `st_mode`.
const ZIP_UNIX_HOSTS: [u8; 2] = [3, 19];
const COPY_BUF_BYTES: usize = 64 * 1024;

const S_IFMT: u32 = 0o170_000;
const S_IFSOCK: u32 = 0o140_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFIFO: u32 = 0o010_000;

/// The container format of a skill archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A zip archive.
    Zip,
    /// An uncompressed tar.
    Tar,
    /// A gzip-compressed tar (concatenated gzip members are read as one stream).
    TarGz,
    /// A bzip2-compressed tar.
    TarBz2,
    /// An xz-compressed tar.
    TarXz,
}

/// What kind of non-extracted member was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkippedKind {
    /// A symbolic link.
    Symlink,
    /// A tar hard link.
    HardLink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// A tar member of another type (the type byte).
    Other(u8),
}

/// A member that was not extracted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedMember {
    /// The member name as stored in the archive (lossy UTF-8).
    pub name: String,
    /// Why it was skipped.
    pub kind: SkippedKind,
}

/// What one extraction produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractStats {
    /// The detected format.
    pub format: ArchiveFormat,
    /// Regular files written.
    pub files: u64,
    /// Directory members extracted (directories implied by file paths are not counted).
    pub dirs: u64,
    /// Bytes written in total.
    pub bytes: u64,
    /// The stripped wrapper directory, if any (lossy UTF-8).
    pub wrapper: Option<String>,
    /// Members that were skipped (links, devices, FIFOs, ...).
    pub skipped: Vec<SkippedMember>,
}

/// Why an archive was refused or could not be extracted. Any error means nothing of the
/// archive should be used: the caller discards the staging directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// A member name is absolute.
    #[error("refusing archive member with absolute path {0:?}")]
    AbsolutePath(String),
    /// A member name has a `..` component.
    #[error("refusing archive member with '..' component: {0:?}")]
    ParentComponent(String),
    /// More members than [`ExtractLimits::max_entries`].
    #[error("archive has more than {limit} members")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// A member path deeper than [`ExtractLimits::max_depth`].
    #[error("archive member {name:?} is {depth} levels deep (limit {limit})")]
    TooDeep {
        /// The member name.
        name: String,
        /// Its depth.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// A member path longer than [`ExtractLimits::max_path_bytes`].
    #[error("archive member name {name:?} is longer than {limit} bytes")]
    PathTooLong {
        /// The member name (lossy, possibly long).
        name: String,
        /// The limit.
        limit: usize,
    },
    /// A member larger than [`ExtractLimits::max_file_bytes`], declared or actual.
    #[error("archive member {name:?} expands to more than {limit} bytes (at least {size})")]
    FileTooLarge {
        /// The member name.
        name: String,
        /// Its declared size, or the bytes produced when the limit was crossed.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The members together exceed [`ExtractLimits::max_total_bytes`], declared or actual.
    #[error("archive expands to more than {limit} bytes in total")]
    TotalTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The archive itself is larger than [`ExtractLimits::max_archive_bytes`].
    #[error("archive is larger than {limit} bytes")]
    ArchiveTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The archive is neither a zip nor a tar, or is damaged.
    #[error("malformed archive: {0}")]
    Malformed(String),
    /// The archive uses a feature this extractor refuses to interpret.
    #[error("unsupported archive content: {0}")]
    Unsupported(String),
    /// A filesystem error while writing the extracted tree.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ExtractError {
    let context = context.into();
    move |source| ExtractError::Io { context, source }
}

fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// What a member is, once classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File { executable: bool },
    Dir,
    Skip(SkippedKind),
}

/// Counts members and sizes against the limits.
struct Budget<'a> {
    limits: &'a ExtractLimits,
    entries: u64,
    declared: u64,
    written: u64,
}

impl<'a> Budget<'a> {
    fn new(limits: &'a ExtractLimits) -> Self {
        Self {
            limits,
            entries: 0,
            declared: 0,
            written: 0,
        }
    }

    /// Screens a member name and admits the member's declared size.
    ///
    /// `counted_size` is the declared data size that counts against the total: regular files
    /// always; for tar, every member's data (it is decompressed even when skipped).
    fn admit(
        &mut self,
        raw_name: &[u8],
        kind: Kind,
        declared: u64,
        counted_size: u64,
    ) -> Result<Components, ExtractError> {
        let parts = safe_member_name(raw_name).map_err(|refusal| match refusal {
            NameRefusal::Absolute => ExtractError::AbsolutePath(lossy(raw_name)),
            NameRefusal::ParentComponent => ExtractError::ParentComponent(lossy(raw_name)),
        })?;
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ExtractError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        if parts.len() > self.limits.max_depth {
            return Err(ExtractError::TooDeep {
                name: lossy(raw_name),
                depth: parts.len(),
                limit: self.limits.max_depth,
            });
        }
        let path_bytes = parts.iter().map(Vec::len).sum::<usize>() + parts.len().saturating_sub(1);
        if path_bytes > self.limits.max_path_bytes {
            return Err(ExtractError::PathTooLong {
                name: lossy(&raw_name[..raw_name.len().min(256)]),
                limit: self.limits.max_path_bytes,
            });
        }
        if matches!(kind, Kind::File { .. }) && declared > self.limits.max_file_bytes {
            return Err(ExtractError::FileTooLarge {
                name: lossy(raw_name),
                size: declared,
                limit: self.limits.max_file_bytes,
            });
        }
        self.declared = self.declared.saturating_add(counted_size);
        if self.declared > self.limits.max_total_bytes {
            return Err(ExtractError::TotalTooLarge {
                limit: self.limits.max_total_bytes,
            });
        }
        Ok(parts)
    }

    /// Copies one member, refusing before writing any byte past a limit.
    fn copy(
        &mut self,
        name: &[u8],
        src: &mut dyn Read,
        dst: &mut impl Write,
    ) -> Result<u64, ExtractError> {
        let mut buf = vec![0_u8; COPY_BUF_BYTES];
        let mut produced: u64 = 0;
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => return Ok(produced),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ExtractError::Malformed(format!(
                        "reading member {:?}: {e}",
                        lossy(name)
                    )));
                }
            };
            let n64 = n as u64;
            produced += n64;
            if produced > self.limits.max_file_bytes {
                return Err(ExtractError::FileTooLarge {
                    name: lossy(name),
                    size: produced,
                    limit: self.limits.max_file_bytes,
                });
            }
            self.written += n64;
            if self.written > self.limits.max_total_bytes {
                return Err(ExtractError::TotalTooLarge {
                    limit: self.limits.max_total_bytes,
                });
            }
            dst.write_all(&buf[..n])
                .map_err(io_err(format!("writing {:?}", lossy(name))))?;
        }
    }
}

/// Extracts `archive` (positioned anywhere; it is rewound) into the directory `dest`.
///
/// `scratch` is a private directory for temporary files (an xz stream is decompressed there
/// first, under the same limits). `dest` should be empty and private to the caller.
pub fn extract_archive(
    archive: &File,
    dest: &Dir,
    scratch: &Dir,
    limits: &ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    let len = archive
        .metadata()
        .map_err(io_err("reading the archive's size"))?
        .len();
    if len == 0 {
        return Err(ExtractError::Malformed("empty file".into()));
    }
    if len > limits.max_archive_bytes {
        return Err(ExtractError::ArchiveTooLarge {
            limit: limits.max_archive_bytes,
        });
    }
    let reader = |what: &str| -> Result<BufReader<File>, ExtractError> {
        let mut f = archive
            .try_clone()
            .map_err(io_err(format!("reopening the archive for {what}")))?;
        f.seek(SeekFrom::Start(0))
            .map_err(io_err("rewinding the archive"))?;
        Ok(BufReader::new(f))
    };

    match ZipArchive::new(reader("zip detection")?) {
        Ok(zip) => extract_zip(zip, archive, dest, limits),
        Err(zip_error) => {
            let mut magic = [0_u8; 6];
            let n = archive
                .read_at(&mut magic, 0)
                .map_err(io_err("reading the archive's magic bytes"))?;
            let magic = &magic[..n];
            if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
                return Err(ExtractError::Malformed(format!("zip: {zip_error}")));
            }
            let format = if magic.starts_with(&[0x1f, 0x8b]) {
                ArchiveFormat::TarGz
            } else if magic.starts_with(b"BZh") {
                ArchiveFormat::TarBz2
            } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
                ArchiveFormat::TarXz
            } else {
                ArchiveFormat::Tar
            };
            extract_tar(format, &reader, dest, scratch, limits)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// zip

fn zip_kind(host: u8, external_attr: u32, name_is_dir: bool) -> Kind {
    let unix_mode = ZIP_UNIX_HOSTS
        .contains(&host)
        .then_some(external_attr >> 16);
    if let Some(mode) = unix_mode {
        match mode & S_IFMT {
            S_IFLNK => return Kind::Skip(SkippedKind::Symlink),
            S_IFCHR => return Kind::Skip(SkippedKind::CharDevice),
            S_IFBLK => return Kind::Skip(SkippedKind::BlockDevice),
            S_IFIFO => return Kind::Skip(SkippedKind::Fifo),
            S_IFSOCK => return Kind::Skip(SkippedKind::Socket),
            _ => {}
        }
    }
    if name_is_dir || unix_mode.is_some_and(|m| m & S_IFMT == S_IFDIR) {
        return Kind::Dir;
    }
    // The reference reads the mode bits whatever the host; 0 for archives without them.
    Kind::File {
        executable: (external_attr >> 16) & 0o111 != 0,
    }
}

struct ZipMember {
    index: usize,
    raw_name: Vec<u8>,
    parts: Components,
    kind: Kind,
}

fn extract_zip(
    mut zip: ZipArchive<BufReader<File>>,
    raw: &File,
    dest: &Dir,
    limits: &ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    if zip.len() as u64 > limits.max_entries {
        return Err(ExtractError::TooManyEntries {
            limit: limits.max_entries,
        });
    }
    // Pass 1: screen every name, classify, check declared sizes. Nothing is decompressed.
    let mut budget = Budget::new(limits);
    let mut members = Vec::with_capacity(zip.len());
    for index in 0..zip.len() {
        let entry = zip
            .by_index_raw(index)
            .map_err(|e| ExtractError::Malformed(format!("zip member {index}: {e}")))?;
        let name = entry.name();
        let raw_name = match name.find('\0') {
            Some(nul) => name.as_bytes()[..nul].to_vec(),
            None => name.as_bytes().to_vec(),
        };
        // The creator host byte is the high byte of "version made by" in the central header;
        // the zip crate folds 19 (OS X) into "unknown", so read it directly.
        let mut host = [0_u8; 1];
        raw.read_exact_at(&mut host, entry.central_header_start() + 5)
            .map_err(|e| {
                ExtractError::Malformed(format!("zip central header of member {index}: {e}"))
            })?;
        let name_is_dir = raw_name.last() == Some(&b'/');
        let kind = zip_kind(
            host[0],
            entry.get_metadata().external_attributes,
            name_is_dir,
        );
        let declared = entry.size();
        let counted = if matches!(kind, Kind::File { .. }) {
            declared
        } else {
            0
        };
        let parts = budget.admit(&raw_name, kind, declared, counted)?;
        if matches!(kind, Kind::File { .. }) && entry.encrypted() {
            return Err(ExtractError::Unsupported(format!(
                "encrypted zip member {:?}",
                lossy(&raw_name)
            )));
        }
        members.push(ZipMember {
            index,
            raw_name,
            parts,
            kind,
        });
    }
    let top = archive_top_dir(
        members
            .iter()
            .filter(|m| !matches!(m.kind, Kind::Skip(_)))
            .map(|m| &m.parts),
    );
    let mut stats = ExtractStats {
        format: ArchiveFormat::Zip,
        files: 0,
        dirs: 0,
        bytes: 0,
        wrapper: top.as_deref().map(lossy),
        skipped: Vec::new(),
    };
    // Pass 2: extract, counting the bytes actually produced.
    let mut writer = TreeWriter { root: dest };
    for member in &members {
        if let Kind::Skip(kind) = member.kind {
            stats.skipped.push(SkippedMember {
                name: lossy(&member.raw_name),
                kind,
            });
            continue;
        }
        let target = strip_top(&member.parts, top.as_deref());
        if target.is_empty() {
            continue;
        }
        match member.kind {
            Kind::Dir => {
                writer.dir(target, &member.raw_name)?;
                stats.dirs += 1;
            }
            Kind::File { executable } => {
                let mut src = zip.by_index(member.index).map_err(|e| {
                    ExtractError::Malformed(format!(
                        "zip member {:?}: {e}",
                        lossy(&member.raw_name)
                    ))
                })?;
                stats.bytes +=
                    writer.file(target, &member.raw_name, executable, &mut src, &mut budget)?;
                stats.files += 1;
            }
            Kind::Skip(_) => {}
        }
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// tar

/// One logical tar member, after its extension headers were applied.
struct TarMember {
    raw_name: Vec<u8>,
    kind: Kind,
    size: u64,
}

fn tar_kind(type_byte: u8, name: &[u8], mode: u32) -> Result<Kind, ExtractError> {
    let executable = mode & 0o111 != 0;
    Ok(match type_byte {
        // Old-style (AREGTYPE) members ending in '/' are directories, as in `tarfile`.
        b'\0' if name.last() == Some(&b'/') => Kind::Dir,
        b'\0' | b'0' | b'7' => Kind::File { executable },
        b'5' => Kind::Dir,
        b'1' => Kind::Skip(SkippedKind::HardLink),
        b'2' => Kind::Skip(SkippedKind::Symlink),
        b'3' => Kind::Skip(SkippedKind::CharDevice),
        b'4' => Kind::Skip(SkippedKind::BlockDevice),
        b'6' => Kind::Skip(SkippedKind::Fifo),
        b'S' => {
            return Err(ExtractError::Unsupported(format!(
                "GNU sparse member {:?}",
                lossy(name)
            )));
        }
        other => Kind::Skip(SkippedKind::Other(other)),
    })
}

fn read_extension(entry: &mut dyn Read, size: u64, what: &str) -> Result<Vec<u8>, ExtractError> {
    if size > MAX_EXTENSION_HEADER_BYTES {
        return Err(ExtractError::Unsupported(format!(
            "{what} of {size} bytes (limit {MAX_EXTENSION_HEADER_BYTES})"
        )));
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry
        .take(size)
        .read_to_end(&mut buf)
        .map_err(|e| ExtractError::Malformed(format!("reading {what}: {e}")))?;
    Ok(buf)
}

/// PAX records that matter here: `path`, and refusal of anything that would change sizes.
fn parse_pax(buf: &[u8], global: bool) -> Result<(Option<Vec<u8>>, Option<u64>), ExtractError> {
    let mut path = None;
    let mut size = None;
    for ext in tar::PaxExtensions::new(buf) {
        let ext = ext.map_err(|e| ExtractError::Malformed(format!("PAX header: {e}")))?;
        let key = ext.key_bytes();
        if key.starts_with(b"GNU.sparse.") {
            return Err(ExtractError::Unsupported("GNU sparse PAX records".into()));
        }
        match key {
            b"path" => path = Some(ext.value_bytes().to_vec()),
            b"size" => {
                let value = std::str::from_utf8(ext.value_bytes())
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| ExtractError::Malformed("PAX size is not a number".into()))?;
                size = Some(value);
            }
            _ => {}
        }
    }
    if global && (path.is_some() || size.is_some()) {
        return Err(ExtractError::Unsupported(
            "global PAX path or size record".into(),
        ));
    }
    Ok((path, size))
}

/// Walks a tar stream member by member, applying GNU long names and PAX paths with bounded
/// reads. `visit` gets each logical member and its data.
fn walk_tar(
    reader: impl Read,
    mut visit: impl FnMut(TarMember, &mut dyn Read) -> Result<(), ExtractError>,
) -> Result<(), ExtractError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| ExtractError::Malformed(format!("tar: {e}")))?
        .raw(true);
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link_seen = false;
    let mut pax: Option<(Option<Vec<u8>>, Option<u64>)> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| ExtractError::Malformed(format!("tar: {e}")))?;
        let header = entry.header();
        let type_byte = header.entry_type().as_byte();
        let size = header
            .entry_size()
            .map_err(|e| ExtractError::Malformed(format!("tar size field: {e}")))?;
        let header_mode = header.mode().unwrap_or(0);
        let header_name = header.path_bytes().into_owned();
        match type_byte {
            b'L' => {
                if long_name.is_some() {
                    return Err(ExtractError::Malformed(
                        "two GNU long names for one member".into(),
                    ));
                }
                long_name = Some(read_extension(&mut entry, size, "GNU long name")?);
                continue;
            }
            b'K' => {
                if long_link_seen {
                    return Err(ExtractError::Malformed(
                        "two GNU long link names for one member".into(),
                    ));
                }
                // Links are never extracted; only bound the size of what is skipped.
                read_extension(&mut entry, size, "GNU long link name")?;
                long_link_seen = true;
                continue;
            }
            b'x' | b'X' => {
                if pax.is_some() {
                    return Err(ExtractError::Malformed(
                        "two PAX headers for one member".into(),
                    ));
                }
                let buf = read_extension(&mut entry, size, "PAX header")?;
                pax = Some(parse_pax(&buf, false)?);
                continue;
            }
            b'g' => {
                let buf = read_extension(&mut entry, size, "global PAX header")?;
                parse_pax(&buf, true)?;
                continue;
            }
            _ => {}
        }
        let (pax_path, pax_size) = pax.take().unwrap_or((None, None));
        long_link_seen = false;
        if let Some(pax_size) = pax_size
            && pax_size != size
        {
            return Err(ExtractError::Unsupported(format!(
                "PAX size {pax_size} overriding header size {size}"
            )));
        }
        let raw_name = pax_path.or(long_name.take()).unwrap_or(header_name);
        let raw_name = match raw_name.iter().position(|b| *b == 0) {
            Some(nul) => raw_name[..nul].to_vec(),
            None => raw_name,
        };
        let kind = tar_kind(type_byte, &raw_name, header_mode)?;
        visit(
            TarMember {
                raw_name,
                kind,
                size,
            },
            &mut entry,
        )?;
    }
    if long_name.is_some() || pax.is_some() || long_link_seen {
        return Err(ExtractError::Malformed(
            "extension header without a member".into(),
        ));
    }
    Ok(())
}

fn tar_stream(format: ArchiveFormat, reader: BufReader<File>) -> Box<dyn Read> {
    match format {
        ArchiveFormat::TarGz => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        ArchiveFormat::TarBz2 => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
        _ => Box::new(reader),
    }
}

/// The error a [`CappedWriter`] raises at its cap.
#[derive(Debug, thiserror::Error)]
#[error("decompressed stream exceeds the extraction limits")]
struct StreamCapExceeded;

/// A `Write` that refuses to grow past `cap` bytes.
struct CappedWriter<W> {
    inner: W,
    written: u64,
    cap: u64,
}

impl<W: Write> Write for CappedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.cap {
            return Err(io::Error::other(StreamCapExceeded));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decompresses an xz stream into a scratch file, bounded by what a tar within the limits can
/// occupy (data, plus a header block and padding for each member and extension header).
fn decompress_xz(
    mut input: BufReader<File>,
    scratch: &Dir,
    limits: &ExtractLimits,
) -> Result<File, ExtractError> {
    let cap = limits
        .max_total_bytes
        .saturating_add(limits.max_entries.saturating_mul(4 * 1024))
        .saturating_add(64 * 1024);
    let name = "archive.tar";
    let file = scratch
        .open_with(
            name,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .follow(FollowSymlinks::No)
                .mode(0o600),
        )
        .map_err(io_err("creating the xz scratch file"))?
        .into_std();
    let mut out = CappedWriter {
        inner: io::BufWriter::new(&file),
        written: 0,
        cap,
    };
    lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| match e {
        lzma_rs::error::Error::IoError(io)
            if io.get_ref().is_some_and(|e| e.is::<StreamCapExceeded>()) =>
        {
            ExtractError::TotalTooLarge {
                limit: limits.max_total_bytes,
            }
        }
        other => ExtractError::Malformed(format!("xz: {other}")),
    })?;
    out.flush().map_err(io_err("writing the xz scratch file"))?;
    drop(out);
    Ok(file)
}

fn extract_tar(
    format: ArchiveFormat,
    reader: &dyn Fn(&str) -> Result<BufReader<File>, ExtractError>,
    dest: &Dir,
    scratch: &Dir,
    limits: &ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    type Opener<'a> = Box<dyn Fn(&str) -> Result<Box<dyn Read>, ExtractError> + 'a>;
    let open: Opener<'_> = if format == ArchiveFormat::TarXz {
        let tar = decompress_xz(reader("xz")?, scratch, limits)?;
        Box::new(move |_| {
            let mut f = tar
                .try_clone()
                .map_err(io_err("reopening the xz scratch file"))?;
            f.seek(SeekFrom::Start(0))
                .map_err(io_err("rewinding the xz scratch file"))?;
            Ok(Box::new(BufReader::new(f)) as Box<dyn Read>)
        })
    } else {
        Box::new(move |what| Ok(tar_stream(format, reader(what)?)))
    };

    // Pass 1: screen every name and declared size; compute the wrapper from plain members.
    let mut budget = Budget::new(limits);
    let mut plain: Vec<Components> = Vec::new();
    walk_tar(open("screening")?, |member, _data| {
        let parts = budget.admit(&member.raw_name, member.kind, member.size, member.size)?;
        if !matches!(member.kind, Kind::Skip(_)) {
            plain.push(parts);
        }
        Ok(())
    })?;
    let top = archive_top_dir(&plain);
    drop(plain);

    // Pass 2: the same walk, screened again, now writing.
    let mut stats = ExtractStats {
        format,
        files: 0,
        dirs: 0,
        bytes: 0,
        wrapper: top.as_deref().map(lossy),
        skipped: Vec::new(),
    };
    let mut budget = Budget::new(limits);
    let mut writer = TreeWriter { root: dest };
    walk_tar(open("extraction")?, |member, data| {
        let parts = budget.admit(&member.raw_name, member.kind, member.size, member.size)?;
        match member.kind {
            Kind::Skip(kind) => stats.skipped.push(SkippedMember {
                name: lossy(&member.raw_name),
                kind,
            }),
            Kind::Dir => {
                let target = strip_top(&parts, top.as_deref());
                if !target.is_empty() {
                    writer.dir(target, &member.raw_name)?;
                    stats.dirs += 1;
                }
            }
            Kind::File { executable } => {
                let target = strip_top(&parts, top.as_deref());
                if !target.is_empty() {
                    stats.bytes +=
                        writer.file(target, &member.raw_name, executable, data, &mut budget)?;
                    stats.files += 1;
                }
            }
        }
        Ok(())
    })?;
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// writing

/// Writes members below `root`, one `O_NOFOLLOW` component at a time.
struct TreeWriter<'a> {
    root: &'a Dir,
}

impl TreeWriter<'_> {
    fn open_or_create_dir(parent: &Dir, name: &[u8], member: &[u8]) -> Result<Dir, ExtractError> {
        let name = OsStr::from_bytes(name);
        match parent.open_dir_nofollow(name) {
            Ok(dir) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io_err(format!(
                    "opening a directory for member {:?}",
                    lossy(member)
                ))(e));
            }
        }
        let mut builder = DirBuilder::new();
        builder.mode(DIR_MODE);
        parent
            .create_dir_with(name, &builder)
            .map_err(io_err(format!(
                "creating a directory for member {:?}",
                lossy(member)
            )))?;
        // Exactly 0700 whatever the umask.
        parent
            .set_permissions(name, Permissions::from_mode(DIR_MODE))
            .map_err(io_err(format!(
                "setting the mode of a directory for member {:?}",
                lossy(member)
            )))?;
        parent.open_dir_nofollow(name).map_err(io_err(format!(
            "opening a directory for member {:?}",
            lossy(member)
        )))
    }

    fn dirs(&self, parts: &[Vec<u8>], member: &[u8]) -> Result<Dir, ExtractError> {
        let mut dir = self
            .root
            .try_clone()
            .map_err(io_err("duplicating the destination handle"))?;
        for part in parts {
            dir = Self::open_or_create_dir(&dir, part, member)?;
        }
        Ok(dir)
    }

    fn dir(&mut self, parts: &[Vec<u8>], member: &[u8]) -> Result<(), ExtractError> {
        self.dirs(parts, member).map(drop)
    }

    fn file(
        &mut self,
        parts: &[Vec<u8>],
        member: &[u8],
        executable: bool,
        src: &mut dyn Read,
        budget: &mut Budget<'_>,
    ) -> Result<u64, ExtractError> {
        let Some((name, parents)) = parts.split_last() else {
            return Ok(0);
        };
        let parent = self.dirs(parents, member)?;
        let file = parent
            .open_with(
                OsStr::from_bytes(name),
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .follow(FollowSymlinks::No)
                    .mode(0o600),
            )
            .map_err(io_err(format!(
                "creating the file for member {:?}",
                lossy(member)
            )))?;
        let mut out = io::BufWriter::new(file);
        let written = budget.copy(member, src, &mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| io_err(format!("writing member {:?}", lossy(member)))(e.into_error()))?;
        let mode = if executable {
            EXEC_FILE_MODE
        } else {
            FILE_MODE
        };
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io_err(format!(
                "setting the mode of member {:?}",
                lossy(member)
            )))?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_kind_trusts_unix_modes_only_from_unix_hosts() {
        let link = (S_IFLNK | 0o777) << 16;
        assert_eq!(zip_kind(3, link, false), Kind::Skip(SkippedKind::Symlink));
        assert_eq!(zip_kind(19, link, false), Kind::Skip(SkippedKind::Symlink));
        // From a DOS host the bits are not a mode: a plain (executable-looking) file.
        assert_eq!(zip_kind(0, link, false), Kind::File { executable: true });
        assert_eq!(
            zip_kind(3, (S_IFIFO | 0o644) << 16, false),
            Kind::Skip(SkippedKind::Fifo)
        );
        assert_eq!(zip_kind(3, (S_IFDIR | 0o755) << 16, false), Kind::Dir);
        assert_eq!(zip_kind(0, 0x10, true), Kind::Dir);
        assert_eq!(
            zip_kind(3, (0o100_000 | 0o744) << 16, false),
            Kind::File { executable: true }
        );
        assert_eq!(
            zip_kind(3, (0o100_000 | 0o644) << 16, false),
            Kind::File { executable: false }
        );
        assert_eq!(zip_kind(0, 0, false), Kind::File { executable: false });
    }

    #[test]
    fn tar_kinds_match_tarfile() {
        assert_eq!(
            tar_kind(b'0', b"a", 0o755).unwrap(),
            Kind::File { executable: true }
        );
        assert_eq!(
            tar_kind(b'\0', b"a", 0o644).unwrap(),
            Kind::File { executable: false }
        );
        assert_eq!(tar_kind(b'\0', b"a/", 0o644).unwrap(), Kind::Dir);
        assert_eq!(
            tar_kind(b'0', b"a/", 0o644).unwrap(),
            Kind::File { executable: false }
        );
        assert_eq!(
            tar_kind(b'7', b"a", 0o100).unwrap(),
            Kind::File { executable: true }
        );
        assert_eq!(
            tar_kind(b'1', b"a", 0).unwrap(),
            Kind::Skip(SkippedKind::HardLink)
        );
        assert_eq!(
            tar_kind(b'V', b"a", 0).unwrap(),
            Kind::Skip(SkippedKind::Other(b'V'))
        );
        assert!(matches!(
            tar_kind(b'S', b"a", 0),
            Err(ExtractError::Unsupported(_))
        ));
    }

    #[test]
    fn pax_records_are_bounded_to_path_and_size() {
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            if (len.to_string().len() + body.len()) != len {
                len = len.to_string().len() + body.len();
            }
            format!("{len}{body}")
        };
        let buf = format!("{}{}", rec("path", "a/b"), rec("mtime", "1"));
        assert_eq!(
            parse_pax(buf.as_bytes(), false).unwrap(),
            (Some(b"a/b".to_vec()), None)
        );
        let buf = rec("size", "10");
        assert_eq!(parse_pax(buf.as_bytes(), false).unwrap(), (None, Some(10)));
        assert!(parse_pax(rec("path", "x").as_bytes(), true).is_err());
        assert!(parse_pax(rec("GNU.sparse.map", "0").as_bytes(), false).is_err());
    }
}
