//! Archive builders for the tests: raw zip and tar writers that can express what a normal
//! archiver refuses to write (`../x`, absolute names, links, devices, lying sizes, zip64).

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use flate2::Compression;

pub const S_IFREG: u32 = 0o100_000;
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFIFO: u32 = 0o010_000;
pub const S_IFCHR: u32 = 0o020_000;

// ---------------------------------------------------------------------------------------------
// zip

/// One raw zip entry.
pub struct ZipEntry {
    pub name: Vec<u8>,
    /// Creator host byte (3 = Unix, 0 = DOS, 19 = OS X).
    pub host: u8,
    pub external_attr: u32,
    /// 0 = stored, 8 = deflated (then `data` is already a raw deflate stream).
    pub method: u16,
    pub data: DataSource,
    pub crc: u32,
    /// Declared uncompressed size.
    pub uncompressed: u64,
    /// Write sizes as zip64 extra fields.
    pub zip64: bool,
}

/// Entry data: bytes, possibly repeated lazily.
#[derive(Clone)]
pub struct DataSource {
    pub pieces: Vec<(Arc<Vec<u8>>, u64)>,
}

impl DataSource {
    pub fn bytes(b: &[u8]) -> Self {
        Self {
            pieces: vec![(Arc::new(b.to_vec()), 1)],
        }
    }

    pub fn len(&self) -> u64 {
        self.pieces.iter().map(|(p, n)| p.len() as u64 * n).sum()
    }
}

impl ZipEntry {
    /// A stored Unix regular file.
    pub fn file(name: &str, data: &[u8], mode: u32) -> Self {
        Self::stored(name.as_bytes(), 3, (S_IFREG | mode) << 16, data)
    }

    /// A Unix directory entry (`name` should end in `/`).
    pub fn dir(name: &str) -> Self {
        Self::stored(name.as_bytes(), 3, (S_IFDIR | 0o755) << 16, b"")
    }

    /// A Unix symlink entry whose data is the target.
    pub fn symlink(name: &str, target: &str) -> Self {
        Self::stored(
            name.as_bytes(),
            3,
            (S_IFLNK | 0o777) << 16,
            target.as_bytes(),
        )
    }

    pub fn stored(name: &[u8], host: u8, external_attr: u32, data: &[u8]) -> Self {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        Self {
            name: name.to_vec(),
            host,
            external_attr,
            method: 0,
            data: DataSource::bytes(data),
            crc: crc.sum(),
            uncompressed: data.len() as u64,
            zip64: false,
        }
    }
}

/// Builds a zip as a list of byte pieces (so multi-GB members stay lazy).
pub fn zip_pieces(entries: &[ZipEntry]) -> DataSource {
    let mut pieces: Vec<(Arc<Vec<u8>>, u64)> = Vec::new();
    let mut offset: u64 = 0;
    let mut central = Vec::new();
    for e in entries {
        let comp = e.data.len();
        let local_offset = offset;
        let (c32, u32_) = if e.zip64 {
            (0xFFFF_FFFF_u32, 0xFFFF_FFFF_u32)
        } else {
            (comp as u32, e.uncompressed as u32)
        };
        let mut extra = Vec::new();
        if e.zip64 {
            extra.extend_from_slice(&1_u16.to_le_bytes());
            extra.extend_from_slice(&16_u16.to_le_bytes());
            extra.extend_from_slice(&e.uncompressed.to_le_bytes());
            extra.extend_from_slice(&comp.to_le_bytes());
        }
        let version: u16 = if e.zip64 { 45 } else { 20 };
        let mut local = Vec::new();
        local.extend_from_slice(&0x0403_4b50_u32.to_le_bytes());
        local.extend_from_slice(&version.to_le_bytes());
        local.extend_from_slice(&0_u16.to_le_bytes()); // flags
        local.extend_from_slice(&e.method.to_le_bytes());
        local.extend_from_slice(&0_u16.to_le_bytes()); // time
        local.extend_from_slice(&0x21_u16.to_le_bytes()); // date 1980-01-01
        local.extend_from_slice(&e.crc.to_le_bytes());
        local.extend_from_slice(&c32.to_le_bytes());
        local.extend_from_slice(&u32_.to_le_bytes());
        local.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        local.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        local.extend_from_slice(&e.name);
        local.extend_from_slice(&extra);
        offset += local.len() as u64 + comp;
        pieces.push((Arc::new(local), 1));
        pieces.extend(e.data.pieces.iter().cloned());

        central.extend_from_slice(&0x0201_4b50_u32.to_le_bytes());
        central.extend_from_slice(&(u16::from(e.host) << 8 | version).to_le_bytes());
        central.extend_from_slice(&version.to_le_bytes());
        central.extend_from_slice(&0_u16.to_le_bytes());
        central.extend_from_slice(&e.method.to_le_bytes());
        central.extend_from_slice(&0_u16.to_le_bytes());
        central.extend_from_slice(&0x21_u16.to_le_bytes());
        central.extend_from_slice(&e.crc.to_le_bytes());
        central.extend_from_slice(&c32.to_le_bytes());
        central.extend_from_slice(&u32_.to_le_bytes());
        central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        central.extend_from_slice(&0_u16.to_le_bytes()); // comment
        central.extend_from_slice(&0_u16.to_le_bytes()); // disk
        central.extend_from_slice(&0_u16.to_le_bytes()); // internal attr
        central.extend_from_slice(&e.external_attr.to_le_bytes());
        central.extend_from_slice(&(local_offset as u32).to_le_bytes());
        central.extend_from_slice(&e.name);
        central.extend_from_slice(&extra);
    }
    let mut end = Vec::new();
    end.extend_from_slice(&0x0605_4b50_u32.to_le_bytes());
    end.extend_from_slice(&0_u16.to_le_bytes());
    end.extend_from_slice(&0_u16.to_le_bytes());
    end.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    end.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    end.extend_from_slice(&(central.len() as u32).to_le_bytes());
    end.extend_from_slice(&(offset as u32).to_le_bytes());
    end.extend_from_slice(&0_u16.to_le_bytes());
    pieces.push((Arc::new(central), 1));
    pieces.push((Arc::new(end), 1));
    DataSource { pieces }
}

pub fn zip_bytes(entries: &[ZipEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    PiecesReader::new(&zip_pieces(entries))
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A raw deflate stream of `total` zeros, built from one compressed 64 MiB chunk repeated
/// (sync-flushed, so chunks concatenate), without ever materialising the zeros.
pub fn lazy_zero_deflate(total: u64) -> DataSource {
    const CHUNK: u64 = 64 * 1024 * 1024;
    assert_eq!(total % CHUNK, 0);
    let mut c = flate2::Compress::new(Compression::best(), false);
    let zeros = vec![0_u8; CHUNK as usize];
    let mut out = Vec::with_capacity(1 << 20);
    c.compress_vec(&zeros, &mut out, flate2::FlushCompress::Sync)
        .unwrap();
    assert_eq!(c.total_in(), CHUNK, "one call must consume the chunk");
    let mut fin = flate2::Compress::new(Compression::best(), false);
    let mut tail = Vec::with_capacity(64);
    fin.compress_vec(&[], &mut tail, flate2::FlushCompress::Finish)
        .unwrap();
    DataSource {
        pieces: vec![(Arc::new(out), total / CHUNK), (Arc::new(tail), 1)],
    }
}

/// Reads a [`DataSource`] lazily.
pub struct PiecesReader {
    queue: VecDeque<(Arc<Vec<u8>>, u64)>,
    pos: usize,
}

impl PiecesReader {
    pub fn new(src: &DataSource) -> Self {
        Self {
            queue: src.pieces.iter().cloned().collect(),
            pos: 0,
        }
    }
}

impl Read for PiecesReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some((piece, count)) = self.queue.front_mut() else {
                return Ok(0);
            };
            if *count == 0 || piece.is_empty() {
                self.queue.pop_front();
                self.pos = 0;
                continue;
            }
            let rest = &piece[self.pos..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.pos += n;
            if self.pos == piece.len() {
                self.pos = 0;
                *count -= 1;
            }
            return Ok(n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tar

/// Appends one raw tar member (GNU header; the name and link bytes go in verbatim).
pub fn tar_member(
    out: &mut Vec<u8>,
    name: &[u8],
    entry_type: u8,
    mode: u32,
    data: &[u8],
    link: &[u8],
) {
    tar_header(out, name, entry_type, mode, data.len() as u64, link);
    out.extend_from_slice(data);
    pad(out);
}

pub fn tar_header(
    out: &mut Vec<u8>,
    name: &[u8],
    entry_type: u8,
    mode: u32,
    size: u64,
    link: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::new(entry_type));
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
}

pub fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// A GNU long-name extension entry for the next member.
pub fn tar_long_name(out: &mut Vec<u8>, name: &[u8]) {
    let mut data = name.to_vec();
    data.push(0);
    tar_member(out, b"././@LongLink", b'L', 0o644, &data, b"");
}

/// A PAX extension entry with the given records.
pub fn tar_pax(out: &mut Vec<u8>, records: &[(&str, &str)], global: bool) {
    let mut data = String::new();
    for (k, v) in records {
        let body = format!(" {k}={v}\n");
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len = len.to_string().len() + body.len();
        }
        data.push_str(&format!("{len}{body}"));
    }
    tar_member(
        out,
        b"pax",
        if global { b'g' } else { b'x' },
        0o644,
        data.as_bytes(),
        b"",
    );
}

pub fn tar_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0_u8; 1024]);
}

pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn bz2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    lzma_rs::xz_compress(&mut io::Cursor::new(data), &mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// trees

/// Every path below `root` (relative, sorted), with `/` suffix for directories and `@` for
/// symlinks; never follows links.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let ft = entry.file_type().unwrap();
            if ft.is_symlink() {
                out.push(format!("{rel}@"));
            } else if ft.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

pub fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}
