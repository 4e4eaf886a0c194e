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

mod tree;
mod untar;
mod unzip;

use tree::TreeWriter;
use untar::extract_tar;
use unzip::extract_zip;

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
