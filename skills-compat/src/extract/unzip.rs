//! Zip archives: member classification (the Unix mode only from Unix hosts) and extraction.

use super::*;

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

pub(super) fn extract_zip(
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
}
