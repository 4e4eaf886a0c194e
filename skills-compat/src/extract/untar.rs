//! Tar archives (plain, gzip, bzip2, xz): bounded extension headers, member classification
//! and extraction.

use super::*;

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

pub(super) fn extract_tar(
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

#[cfg(test)]
mod tests {
    use super::*;

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
