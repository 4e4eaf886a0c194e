//! Archive bombs: 10 GB declared or produced, generated lazily (nothing close to 10 GB is ever
//! materialised or written), refused quickly without writing past the limits.

mod common;

use std::fs::File;
use std::io::{Cursor, Write};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use common::*;
use flate2::Compression;
use wasm_sandbox_skills::extract::extract_archive;
use wasm_sandbox_skills::{
    ExtractError, ExtractLimits, SkillDescriptor, SkillError, SkillsManager,
};

const TEN_GB: u64 = 10 * 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

fn skill() -> SkillDescriptor {
    SkillDescriptor {
        skill_id: "skill_bomb".into(),
        version_id: "v1".into(),
        name: "bomb".into(),
        size_hint: None,
    }
}

/// Spools a lazy source to a temp file and extracts it into a fresh dir, returning the
/// result and the dest dir (for inspecting what was written before the refusal).
fn extract(
    src: &DataSource,
    limits: &ExtractLimits,
) -> (Result<u64, ExtractError>, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("archive");
    let mut f = File::create(&path).unwrap();
    std::io::copy(&mut PiecesReader::new(src), &mut f).unwrap();
    f.flush().unwrap();
    let archive = File::open(&path).unwrap();
    std::fs::create_dir(tmp.path().join("dest")).unwrap();
    std::fs::create_dir(tmp.path().join("scratch")).unwrap();
    let dest = Dir::open_ambient_dir(tmp.path().join("dest"), ambient_authority()).unwrap();
    let scratch = Dir::open_ambient_dir(tmp.path().join("scratch"), ambient_authority()).unwrap();
    let result = extract_archive(&archive, &dest, &scratch, limits).map(|s| s.bytes);
    (result, tmp)
}

fn written_bytes(dir: &std::path::Path) -> u64 {
    tree(dir)
        .iter()
        .filter(|p| !p.ends_with('/'))
        .map(|p| std::fs::metadata(dir.join(p)).unwrap().len())
        .sum()
}

#[test]
fn zip_declaring_10_gb_is_refused_before_decompressing() {
    let entry = ZipEntry {
        name: b"bomb/zeros.bin".to_vec(),
        host: 3,
        external_attr: (S_IFREG | 0o644) << 16,
        method: 8,
        data: lazy_zero_deflate(TEN_GB),
        crc: 0,
        uncompressed: TEN_GB,
        zip64: true,
    };
    let archive = zip_pieces(&[ZipEntry::file("bomb/SKILL.md", b"x", 0o644), entry]);
    assert!(
        archive.len() < 32 * MIB,
        "the bomb itself is small: {}",
        archive.len()
    );
    // Through the manager, with the default limits.
    let wd = tempfile::tempdir().unwrap();
    let mut m = SkillsManager::new(wd.path(), ExtractLimits::default()).unwrap();
    let err = m
        .install(&skill(), PiecesReader::new(&archive))
        .unwrap_err();
    match err {
        SkillError::Extract(ExtractError::FileTooLarge { size, limit, .. }) => {
            assert_eq!(size, TEN_GB);
            assert_eq!(limit, ExtractLimits::DEFAULT_MAX_FILE_BYTES);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(tree(&wd.path().join("skills")), Vec::<String>::new());
    // Pass 1 refuses before anything is written.
    let (result, tmp) = extract(&archive, &ExtractLimits::default());
    assert!(matches!(result, Err(ExtractError::FileTooLarge { .. })));
    assert_eq!(tree(&tmp.path().join("dest")), Vec::<String>::new());
}

#[test]
fn zip_lying_about_its_size_is_cut_off_at_the_limit() {
    // Declares 1 KiB, inflates to 10 GB.
    let liar = |name: &str| ZipEntry {
        name: name.as_bytes().to_vec(),
        host: 3,
        external_attr: (S_IFREG | 0o644) << 16,
        method: 8,
        data: lazy_zero_deflate(TEN_GB),
        crc: 0,
        uncompressed: 1024,
        zip64: false,
    };
    let limits = ExtractLimits {
        max_file_bytes: 16 * MIB,
        ..ExtractLimits::default()
    };
    let (result, tmp) = extract(&zip_pieces(&[liar("a")]), &limits);
    match result {
        Err(ExtractError::FileTooLarge { size, limit, .. }) => {
            assert_eq!(limit, 16 * MIB);
            assert!(size > 16 * MIB && size <= 16 * MIB + 64 * 1024, "{size}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        written_bytes(&tmp.path().join("dest")) <= 16 * MIB,
        "wrote past the per-file limit"
    );

    // Several liars, each under the per-file limit, hit the total limit.
    let limits = ExtractLimits {
        max_file_bytes: 16 * MIB,
        max_total_bytes: 24 * MIB,
        ..ExtractLimits::default()
    };
    let small_liar = |name: &str| ZipEntry {
        data: lazy_zero_deflate(64 * MIB),
        ..liar(name)
    };
    let limits_big_files = ExtractLimits {
        max_file_bytes: 128 * MIB,
        ..limits
    };
    let (result, tmp) = extract(
        &zip_pieces(&[small_liar("a"), small_liar("b")]),
        &limits_big_files,
    );
    assert!(
        matches!(result, Err(ExtractError::TotalTooLarge { limit }) if limit == 24 * MIB),
        "{result:?}"
    );
    assert!(
        written_bytes(&tmp.path().join("dest")) <= 24 * MIB,
        "wrote past the total limit"
    );
}

/// A gzip stream of `header ++ zeros(total) ++ tail`, as concatenated gzip members.
fn lazy_gz_tar(header: &[u8], total_zeros: u64, tail: &[u8]) -> DataSource {
    const CHUNK: u64 = 64 * MIB;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(&vec![0_u8; CHUNK as usize]).unwrap();
    let chunk = e.finish().unwrap();
    DataSource {
        pieces: vec![
            (Arc::new(gz(header)), 1),
            (Arc::new(chunk), total_zeros / CHUNK),
            (Arc::new(gz(tail)), 1),
        ],
    }
}

#[test]
fn tar_gz_declaring_10_gb_is_refused_at_its_header() {
    let mut header = Vec::new();
    tar_header(&mut header, b"bomb/zeros.bin", b'0', 0o644, TEN_GB, b"");
    let archive = lazy_gz_tar(&header, TEN_GB, &[0_u8; 1024]);
    assert!(
        archive.len() < 32 * MIB,
        "the bomb itself is small: {}",
        archive.len()
    );
    let wd = tempfile::tempdir().unwrap();
    let mut m = SkillsManager::new(wd.path(), ExtractLimits::default()).unwrap();
    let err = m
        .install(&skill(), PiecesReader::new(&archive))
        .unwrap_err();
    assert!(
        matches!(err, SkillError::Extract(ExtractError::FileTooLarge { size, .. }) if size == TEN_GB),
        "{err:?}"
    );
    assert_eq!(tree(&wd.path().join("skills")), Vec::<String>::new());

    // A symlink that declares 10 GB of data would cost 10 GB of decompression to skip: refused.
    let mut header = Vec::new();
    tar_header(&mut header, b"link", b'2', 0o777, TEN_GB, b"/etc/passwd");
    let (result, tmp) = extract(
        &lazy_gz_tar(&header, TEN_GB, &[0_u8; 1024]),
        &ExtractLimits::default(),
    );
    assert!(
        matches!(result, Err(ExtractError::TotalTooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(tree(&tmp.path().join("dest")), Vec::<String>::new());
}

#[test]
fn tar_total_is_checked_before_anything_is_written() {
    let mut t = Vec::new();
    let mib = vec![1_u8; MIB as usize];
    for i in 0..12 {
        tar_member(&mut t, format!("f{i}").as_bytes(), b'0', 0o644, &mib, b"");
    }
    tar_end(&mut t);
    let limits = ExtractLimits {
        max_total_bytes: 8 * MIB,
        ..ExtractLimits::default()
    };
    let (result, tmp) = extract(&DataSource::bytes(&gz(&t)), &limits);
    assert!(
        matches!(result, Err(ExtractError::TotalTooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(
        tree(&tmp.path().join("dest")),
        Vec::<String>::new(),
        "pass 1 writes nothing"
    );
    // Under the limit it extracts.
    let limits = ExtractLimits {
        max_total_bytes: 12 * MIB,
        ..ExtractLimits::default()
    };
    let (result, _tmp) = extract(&DataSource::bytes(&gz(&t)), &limits);
    assert_eq!(result.unwrap(), 12 * MIB);
}

#[test]
fn xz_decompression_is_capped() {
    // Not even a tar: 8 MiB of zeros, against a 1 MiB budget.
    let bomb = xz(&vec![0_u8; 8 * MIB as usize]);
    let limits = ExtractLimits {
        max_total_bytes: MIB,
        max_entries: 10,
        ..ExtractLimits::default()
    };
    let wd = tempfile::tempdir().unwrap();
    let mut m = SkillsManager::new(wd.path(), limits).unwrap();
    let err = m.install(&skill(), Cursor::new(bomb)).unwrap_err();
    assert!(
        matches!(err, SkillError::Extract(ExtractError::TotalTooLarge { .. })),
        "{err:?}"
    );
    assert_eq!(tree(&wd.path().join("skills")), Vec::<String>::new());
}
