//! Skill installation: trees, modes, refusals, replacement and teardown.

mod common;

use std::io::Cursor;
use std::path::Path;

use common::*;
use wasm_sandbox_skills::extract::SkippedKind;
use wasm_sandbox_skills::{
    ArchiveFormat, ExtractError, ExtractLimits, ManifestError, SkillDescriptor, SkillError,
    SkillsManager,
};

const SKILL_MD: &[u8] = b"---\nname: pdf\ndescription: Work with PDF files.\n---\n# PDF\n";

fn skill(name: &str) -> SkillDescriptor {
    SkillDescriptor {
        skill_id: format!("skill_{name}"),
        version_id: "v1".into(),
        name: name.into(),
        size_hint: None,
    }
}

fn manager(workdir: &Path) -> SkillsManager {
    SkillsManager::new(workdir, ExtractLimits::default()).unwrap()
}

/// Nothing but installed skill dirs may remain in `skills/` (no `.skill-*` work dirs).
fn assert_no_work_dirs(workdir: &Path) {
    let leftovers: Vec<String> = tree(&workdir.join("skills"))
        .into_iter()
        .filter(|p| p.starts_with(".skill-"))
        .collect();
    assert!(leftovers.is_empty(), "work dirs left behind: {leftovers:?}");
}

fn wrapped_tar() -> Vec<u8> {
    let mut t = Vec::new();
    tar_member(&mut t, b"pdf/", b'5', 0o755, b"", b"");
    tar_member(&mut t, b"pdf/SKILL.md", b'0', 0o644, SKILL_MD, b"");
    tar_member(
        &mut t,
        b"pdf/scripts/run.sh",
        b'0',
        0o4775,
        b"#!/bin/sh\necho hi\n",
        b"",
    );
    tar_member(&mut t, b"pdf/link", b'2', 0o777, b"", b"/etc/passwd");
    tar_member(&mut t, b"pdf/hard", b'1', 0o644, b"", b"pdf/SKILL.md");
    tar_member(&mut t, b"pdf/fifo", b'6', 0o644, b"", b"");
    tar_member(&mut t, b"pdf/tty", b'3', 0o644, b"", b"");
    tar_end(&mut t);
    t
}

#[test]
fn zip_with_wrapper_dir_lands_stripped_with_modes() {
    let wd = tempfile::tempdir().unwrap();
    let zip = zip_bytes(&[
        ZipEntry::dir("pdf/"),
        ZipEntry::file("pdf/SKILL.md", SKILL_MD, 0o664),
        ZipEntry::file("pdf/scripts/run.sh", b"#!/bin/sh\n", 0o6777),
        ZipEntry::file("pdf/data/x.txt", b"x", 0o600),
        ZipEntry::stored(b"pdf/dos.bat", 0, 0x20, b"@echo off"),
    ]);
    let mut m = manager(wd.path());
    let installed = m.install(&skill("pdf"), Cursor::new(zip)).unwrap();
    assert_eq!(installed.stats.format, ArchiveFormat::Zip);
    assert_eq!(installed.stats.wrapper.as_deref(), Some("pdf"));
    assert_eq!(installed.stats.files, 4);
    assert_eq!(installed.manifest.as_ref().unwrap().name, "pdf");
    let root = wd.path().join("skills");
    assert_eq!(
        tree(&root),
        [
            "pdf/",
            "pdf/SKILL.md",
            "pdf/data/",
            "pdf/data/x.txt",
            "pdf/dos.bat",
            "pdf/scripts/",
            "pdf/scripts/run.sh"
        ]
    );
    assert_eq!(
        mode(&root.join("pdf/scripts/run.sh")),
        0o755,
        "setuid/setgid/sticky/group-write dropped"
    );
    assert_eq!(mode(&root.join("pdf/SKILL.md")), 0o644);
    assert_eq!(mode(&root.join("pdf/data/x.txt")), 0o644);
    assert_eq!(mode(&root.join("pdf/dos.bat")), 0o644);
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("pdf")), 0o700);
    assert_eq!(mode(&root.join("pdf/data")), 0o700);
    assert_eq!(
        std::fs::read(root.join("pdf/scripts/run.sh")).unwrap(),
        b"#!/bin/sh\n"
    );
    assert_no_work_dirs(wd.path());
}

#[test]
fn tar_gz_skips_links_devices_and_fifos() {
    let wd = tempfile::tempdir().unwrap();
    let mut m = manager(wd.path());
    let installed = m
        .install(&skill("pdf"), Cursor::new(gz(&wrapped_tar())))
        .unwrap();
    assert_eq!(installed.stats.format, ArchiveFormat::TarGz);
    let kinds: Vec<SkippedKind> = installed.stats.skipped.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            SkippedKind::Symlink,
            SkippedKind::HardLink,
            SkippedKind::Fifo,
            SkippedKind::CharDevice
        ]
    );
    let root = wd.path().join("skills");
    assert_eq!(
        tree(&root),
        ["pdf/", "pdf/SKILL.md", "pdf/scripts/", "pdf/scripts/run.sh"]
    );
    assert_eq!(mode(&root.join("pdf/scripts/run.sh")), 0o755);
}

#[tokio::test]
async fn async_install_reads_plain_bz2_and_xz_tars() {
    let wd = tempfile::tempdir().unwrap();
    let mut m = manager(wd.path());
    let tar = wrapped_tar();
    for (name, bytes, format) in [
        ("plain", tar.clone(), ArchiveFormat::Tar),
        ("bzip", bz2(&tar), ArchiveFormat::TarBz2),
        ("xzip", xz(&tar), ArchiveFormat::TarXz),
    ] {
        let installed = m
            .install_async(&skill(name), Cursor::new(bytes))
            .await
            .unwrap();
        assert_eq!(installed.stats.format, format);
        assert_eq!(installed.dir_name, name);
        assert_eq!(
            std::fs::read(wd.path().join("skills").join(name).join("SKILL.md")).unwrap(),
            SKILL_MD
        );
    }
    assert_no_work_dirs(wd.path());
}

#[test]
fn no_stripping_without_a_single_wrapper() {
    let wd = tempfile::tempdir().unwrap();
    let zip = zip_bytes(&[
        ZipEntry::file("SKILL.md", SKILL_MD, 0o644),
        ZipEntry::file("scripts/a.py", b"print(1)", 0o644),
    ]);
    let mut m = manager(wd.path());
    let installed = m.install(&skill("pdf"), Cursor::new(zip)).unwrap();
    assert_eq!(installed.stats.wrapper, None);
    assert_eq!(
        tree(&wd.path().join("skills")),
        ["pdf/", "pdf/SKILL.md", "pdf/scripts/", "pdf/scripts/a.py"]
    );
    // A wrapper is computed over extracted members only: a symlink outside it does not count.
    let zip = zip_bytes(&[
        ZipEntry::file("w/SKILL.md", SKILL_MD, 0o644),
        ZipEntry::symlink("elsewhere", "/etc"),
    ]);
    let installed = m.install(&skill("pdf"), Cursor::new(zip)).unwrap();
    assert_eq!(installed.stats.wrapper.as_deref(), Some("w"));
    assert_eq!(tree(&wd.path().join("skills")), ["pdf/", "pdf/SKILL.md"]);
}

fn assert_refused(archive: Vec<u8>, check: impl Fn(&SkillError) -> bool) {
    let wd = tempfile::tempdir().unwrap();
    let outside = wd.path().join("x");
    let workdir = wd.path().join("work");
    std::fs::create_dir(&workdir).unwrap();
    let mut m = manager(&workdir);
    let err = m.install(&skill("pdf"), Cursor::new(archive)).unwrap_err();
    assert!(check(&err), "unexpected error: {err:?}");
    assert!(
        !outside.exists(),
        "something was written outside the workdir"
    );
    assert_eq!(
        tree(&workdir.join("skills")),
        Vec::<String>::new(),
        "nothing may be installed"
    );
    assert!(m.installed().is_empty());
}

#[test]
fn traversal_members_reject_the_whole_archive() {
    let parent =
        |e: &SkillError| matches!(e, SkillError::Extract(ExtractError::ParentComponent(_)));
    let absolute = |e: &SkillError| matches!(e, SkillError::Extract(ExtractError::AbsolutePath(_)));
    // zip: `../x` after a good member.
    assert_refused(
        zip_bytes(&[
            ZipEntry::file("pdf/SKILL.md", SKILL_MD, 0o644),
            ZipEntry::file("../../x", b"pwn", 0o644),
        ]),
        parent,
    );
    // zip: backslash traversal and absolute names.
    assert_refused(
        zip_bytes(&[ZipEntry::file("a\\..\\..\\x", b"pwn", 0o644)]),
        parent,
    );
    assert_refused(
        zip_bytes(&[ZipEntry::file("/tmp/x", b"pwn", 0o644)]),
        absolute,
    );
    // Even a member that would be skipped (a symlink) rejects the archive.
    assert_refused(
        zip_bytes(&[
            ZipEntry::file("SKILL.md", SKILL_MD, 0o644),
            ZipEntry::symlink("../../x", "/etc"),
        ]),
        parent,
    );
    // tar.gz: `../x`, an absolute path, a traversal hidden in a GNU long name and in PAX.
    let mut t = Vec::new();
    tar_member(&mut t, b"pdf/SKILL.md", b'0', 0o644, SKILL_MD, b"");
    tar_member(&mut t, b"pdf/../../x", b'0', 0o644, b"pwn", b"");
    tar_end(&mut t);
    assert_refused(gz(&t), parent);
    let mut t = Vec::new();
    tar_member(&mut t, b"/tmp/x", b'0', 0o644, b"pwn", b"");
    tar_end(&mut t);
    assert_refused(gz(&t), absolute);
    let mut t = Vec::new();
    tar_long_name(&mut t, format!("{}/../../../x", "a".repeat(150)).as_bytes());
    tar_member(&mut t, b"innocent", b'0', 0o644, b"pwn", b"");
    tar_end(&mut t);
    assert_refused(gz(&t), parent);
    let mut t = Vec::new();
    tar_pax(&mut t, &[("path", "../x")], false);
    tar_member(&mut t, b"innocent", b'0', 0o644, b"pwn", b"");
    tar_end(&mut t);
    assert_refused(gz(&t), parent);
    // A hard link whose *name* escapes is refused too, not merely skipped.
    let mut t = Vec::new();
    tar_member(&mut t, b"../x", b'1', 0o644, b"", b"SKILL.md");
    tar_end(&mut t);
    assert_refused(t, parent);
}

#[test]
fn malformed_and_unsupported_archives_are_refused() {
    let malformed = |e: &SkillError| matches!(e, SkillError::Extract(ExtractError::Malformed(_)));
    let unsupported =
        |e: &SkillError| matches!(e, SkillError::Extract(ExtractError::Unsupported(_)));
    assert_refused(Vec::new(), malformed);
    assert_refused(
        b"this is not an archive at all, just some words".to_vec(),
        malformed,
    );
    assert_refused(b"PK\x03\x04garbage".to_vec(), malformed);
    assert_refused(gz(b"not a tar inside the gzip"), malformed);
    let mut t = Vec::new();
    tar_pax(&mut t, &[("size", "99")], false);
    tar_member(&mut t, b"a", b'0', 0o644, b"abc", b"");
    tar_end(&mut t);
    assert_refused(t, unsupported);
    let mut t = Vec::new();
    tar_member(&mut t, b"sparse", b'S', 0o644, b"", b"");
    tar_end(&mut t);
    assert_refused(t, unsupported);
    let mut t = Vec::new();
    tar_pax(&mut t, &[("path", "everything")], true);
    tar_member(&mut t, b"a", b'0', 0o644, b"abc", b"");
    tar_end(&mut t);
    assert_refused(t, unsupported);
}

#[test]
fn a_symlink_member_cannot_redirect_later_writes() {
    // `link -> <outside>` then `link/evil`: the link is skipped, so `link/` becomes a real
    // directory inside the skill and the outside directory stays empty.
    let wd = tempfile::tempdir().unwrap();
    let outside = wd.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let workdir = wd.path().join("work");
    std::fs::create_dir(&workdir).unwrap();
    let target = outside.to_str().unwrap();
    let zip = zip_bytes(&[
        ZipEntry::symlink("s/link", target),
        ZipEntry::file("s/link/evil", b"pwn", 0o644),
        ZipEntry::file("s/SKILL.md", SKILL_MD, 0o644),
    ]);
    let mut m = manager(&workdir);
    m.install(&skill("pdf"), Cursor::new(zip)).unwrap();
    assert_eq!(tree(&outside), Vec::<String>::new());
    assert_eq!(
        tree(&workdir.join("skills")),
        ["pdf/", "pdf/SKILL.md", "pdf/link/", "pdf/link/evil"]
    );
    let mut t = Vec::new();
    tar_member(&mut t, b"SKILL.md", b'0', 0o644, SKILL_MD, b"");
    tar_member(&mut t, b"link", b'2', 0o777, b"", target.as_bytes());
    tar_member(&mut t, b"link/evil", b'0', 0o644, b"pwn", b"");
    tar_end(&mut t);
    m.install(&skill("tarred"), Cursor::new(t)).unwrap();
    assert_eq!(tree(&outside), Vec::<String>::new());
    assert_eq!(
        tree(&workdir.join("skills/tarred")),
        ["SKILL.md", "link/", "link/evil"]
    );
}

#[test]
fn install_replaces_an_older_copy_and_a_failure_keeps_it() {
    let wd = tempfile::tempdir().unwrap();
    let root = wd.path().join("skills");
    std::fs::create_dir_all(root.join("pdf")).unwrap();
    std::fs::write(root.join("pdf/old.txt"), b"old").unwrap();
    let mut m = manager(wd.path());
    // A failing install leaves the existing directory as it was.
    assert!(
        m.install(&skill("pdf"), Cursor::new(b"garbage".to_vec()))
            .is_err()
    );
    assert_eq!(tree(&root), ["pdf/", "pdf/old.txt"]);
    m.install(
        &skill("pdf"),
        Cursor::new(zip_bytes(&[ZipEntry::file("SKILL.md", SKILL_MD, 0o644)])),
    )
    .unwrap();
    assert_eq!(tree(&root), ["pdf/", "pdf/SKILL.md"]);
    assert_no_work_dirs(wd.path());
}

#[test]
fn teardown_removes_exactly_what_was_installed() {
    let wd = tempfile::tempdir().unwrap();
    let root = wd.path().join("skills");
    std::fs::create_dir_all(root.join("operator-seeded")).unwrap();
    let outside = wd.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep").unwrap();
    let mut m = manager(wd.path());
    let zip = zip_bytes(&[ZipEntry::file("SKILL.md", SKILL_MD, 0o644)]);
    m.install(&skill("pdf"), Cursor::new(zip.clone())).unwrap();
    m.install(&skill("docx"), Cursor::new(zip)).unwrap();
    assert_eq!(m.installed().len(), 2);
    // The guest replaces one skill dir with a symlink to somewhere else.
    std::fs::remove_dir_all(root.join("docx")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("docx")).unwrap();
    assert!(m.teardown().is_empty());
    assert_eq!(tree(&root), ["operator-seeded/"]);
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");
    // A second teardown is a no-op.
    assert!(m.teardown().is_empty());
}

#[test]
fn dropping_the_manager_cleans_up() {
    let wd = tempfile::tempdir().unwrap();
    {
        let mut m = manager(wd.path());
        m.install(
            &skill("pdf"),
            Cursor::new(zip_bytes(&[ZipEntry::file("SKILL.md", SKILL_MD, 0o644)])),
        )
        .unwrap();
        assert!(wd.path().join("skills/pdf/SKILL.md").exists());
    }
    assert_eq!(tree(&wd.path().join("skills")), Vec::<String>::new());
}

#[test]
fn directory_names_follow_the_reference_rules() {
    let wd = tempfile::tempdir().unwrap();
    let mut m = manager(wd.path());
    let zip = zip_bytes(&[ZipEntry::file("SKILL.md", SKILL_MD, 0o644)]);
    let mut d = skill("x");
    d.name = "../../etc".into();
    assert_eq!(
        m.install(&d, Cursor::new(zip.clone())).unwrap().dir_name,
        "etc"
    );
    d.name = " .. ".into();
    assert_eq!(
        m.install(&d, Cursor::new(zip.clone())).unwrap().dir_name,
        "skill_x"
    );
    d.name = String::new();
    d.skill_id = "../escape".into();
    assert!(matches!(
        m.install(&d, Cursor::new(zip)),
        Err(SkillError::NameEscapes(_))
    ));
    assert_eq!(
        tree(&wd.path().join("skills")),
        ["etc/", "etc/SKILL.md", "skill_x/", "skill_x/SKILL.md"]
    );
}

#[test]
fn a_symlinked_skills_root_is_refused() {
    let wd = tempfile::tempdir().unwrap();
    let outside = wd.path().join("outside");
    let workdir = wd.path().join("work");
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir(&workdir).unwrap();
    std::os::unix::fs::symlink(&outside, workdir.join("skills")).unwrap();
    let mut m = manager(&workdir);
    let zip = zip_bytes(&[ZipEntry::file("SKILL.md", SKILL_MD, 0o644)]);
    assert!(matches!(
        m.install(&skill("pdf"), Cursor::new(zip)),
        Err(SkillError::Io { .. })
    ));
    assert_eq!(tree(&outside), Vec::<String>::new());
}

#[test]
fn one_failure_is_logged_and_the_others_install() {
    let wd = tempfile::tempdir().unwrap();
    let mut m = manager(wd.path());
    let bad = zip_bytes(&[ZipEntry::file("../x", b"pwn", 0o644)]);
    let good = zip_bytes(&[ZipEntry::file("SKILL.md", SKILL_MD, 0o644)]);
    assert!(!m.install_or_log(&skill("bad"), Cursor::new(bad)));
    m.record_failure("skill_gone", None, &"HTTP 404 resolving the version");
    assert!(m.install_or_log(&skill("good"), Cursor::new(good)));
    assert_eq!(m.installed().len(), 1);
    let failures: Vec<&str> = m.failures().iter().map(|f| f.skill_id.as_str()).collect();
    assert_eq!(failures, ["skill_bad", "skill_gone"]);
    assert!(
        m.failures()[0].error.contains("'..'"),
        "{}",
        m.failures()[0].error
    );
    assert_eq!(tree(&wd.path().join("skills")), ["good/", "good/SKILL.md"]);
}

#[test]
fn bad_skill_md_is_reported_but_installed() {
    let wd = tempfile::tempdir().unwrap();
    let mut m = manager(wd.path());
    let zip = zip_bytes(&[ZipEntry::file(
        "SKILL.md",
        b"---\nname: Not Valid\n---\n",
        0o644,
    )]);
    let installed = m.install(&skill("a"), Cursor::new(zip)).unwrap();
    let Err(ManifestError::Invalid(problems)) = &installed.manifest else {
        panic!("expected an invalid manifest, got {:?}", installed.manifest);
    };
    assert!(
        problems.iter().any(|p| p == "description is missing"),
        "{problems:?}"
    );
    let zip = zip_bytes(&[ZipEntry::file("README.md", b"hi", 0o644)]);
    let installed = m.install(&skill("b"), Cursor::new(zip)).unwrap();
    assert_eq!(installed.manifest, Err(ManifestError::Missing));
    // A SKILL.md that is a symlink in the archive is skipped, so it is missing, never followed.
    let zip = zip_bytes(&[
        ZipEntry::symlink("SKILL.md", "/etc/passwd"),
        ZipEntry::file("x", b"x", 0o644),
    ]);
    let installed = m.install(&skill("c"), Cursor::new(zip)).unwrap();
    assert_eq!(installed.manifest, Err(ManifestError::Missing));
}

#[test]
fn count_depth_and_archive_size_limits() {
    let limits = ExtractLimits {
        max_entries: 3,
        max_depth: 3,
        max_archive_bytes: 4096,
        ..ExtractLimits::default()
    };
    let wd = tempfile::tempdir().unwrap();
    let mut m = SkillsManager::new(wd.path(), limits).unwrap();
    let many: Vec<ZipEntry> = (0..4)
        .map(|i| ZipEntry::file(&format!("f{i}"), b"", 0o644))
        .collect();
    assert!(matches!(
        m.install(&skill("a"), Cursor::new(zip_bytes(&many))),
        Err(SkillError::Extract(ExtractError::TooManyEntries {
            limit: 3
        }))
    ));
    let mut t = Vec::new();
    for i in 0..4 {
        tar_member(&mut t, format!("f{i}").as_bytes(), b'0', 0o644, b"", b"");
    }
    tar_end(&mut t);
    assert!(matches!(
        m.install(&skill("a"), Cursor::new(gz(&t))),
        Err(SkillError::Extract(ExtractError::TooManyEntries {
            limit: 3
        }))
    ));
    let deep = zip_bytes(&[ZipEntry::file("a/b/c/d", b"", 0o644)]);
    assert!(matches!(
        m.install(&skill("a"), Cursor::new(deep)),
        Err(SkillError::Extract(ExtractError::TooDeep {
            depth: 4,
            limit: 3,
            ..
        }))
    ));
    let big = vec![7_u8; 5000];
    assert!(matches!(
        m.install(&skill("a"), Cursor::new(big)),
        Err(SkillError::Extract(ExtractError::ArchiveTooLarge {
            limit: 4096
        }))
    ));
    assert_eq!(tree(&wd.path().join("skills")), Vec::<String>::new());
}

#[test]
fn the_download_error_is_reported_and_nothing_is_left() {
    struct Broken(usize);
    impl std::io::Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "reset",
                ));
            }
            self.0 -= 1;
            buf[0] = b'P';
            Ok(1)
        }
    }
    let wd = tempfile::tempdir().unwrap();
    let mut m = manager(wd.path());
    assert!(matches!(
        m.install(&skill("a"), Broken(3)),
        Err(SkillError::Download(_))
    ));
    assert_no_work_dirs(wd.path());
    assert_eq!(tree(&wd.path().join("skills")), Vec::<String>::new());
}

#[test]
fn install_async_future_is_send() {
    // The worker spawns installs on a multi-threaded runtime: this must keep compiling.
    fn assert_send<T: Send>(_: T) {}
    let wd = tempfile::tempdir().unwrap();
    let mut m = manager(wd.path());
    let d = skill("x");
    assert_send(m.install_async(&d, Cursor::new(Vec::<u8>::new())));
    assert!(m.installed().is_empty(), "an unpolled future does nothing");
}
