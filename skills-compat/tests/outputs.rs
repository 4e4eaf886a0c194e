//! Outputs collection never follows symlinks and yields only regular files.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;

use wasm_sandbox_skills::outputs::OutputsError;
use wasm_sandbox_skills::{OutputEntry, OutputsLimits, SkipReason, collect_outputs};

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

struct Collected {
    files: BTreeMap<String, Vec<u8>>,
    skipped: BTreeMap<String, SkipReason>,
}

fn collect(root: &Path, limits: OutputsLimits) -> Result<Collected, OutputsError> {
    let mut files = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for entry in collect_outputs(root, limits)? {
        match entry? {
            OutputEntry::File(mut f) => {
                let mut data = Vec::new();
                f.file.read_to_end(&mut data).unwrap();
                assert_eq!(data.len() as u64, f.len);
                files.insert(f.path, data);
            }
            OutputEntry::Skipped { path, reason } => {
                skipped.insert(path, reason);
            }
        }
    }
    Ok(Collected { files, skipped })
}

#[test]
fn escaping_symlinks_fifos_and_sockets_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, b"host secret").unwrap();
    let secret_dir = tmp.path().join("secret_dir");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("inner"), b"host secret too").unwrap();
    let out = tmp.path().join("session/outputs");
    std::fs::create_dir_all(out.join("sub/deeper")).unwrap();
    std::fs::write(out.join("report.md"), b"# report").unwrap();
    std::fs::write(out.join("sub/deeper/data.csv"), b"a,b").unwrap();
    symlink("../../secret", out.join("escape.txt")).unwrap();
    symlink(&secret, out.join("sub/absolute.txt")).unwrap();
    symlink("../../secret_dir", out.join("dirlink")).unwrap();
    symlink("report.md", out.join("inside-link.md")).unwrap();
    symlink("/nonexistent/dangling", out.join("dangling")).unwrap();
    mkfifo(&out.join("pipe"));
    let _sock = std::os::unix::net::UnixListener::bind(out.join("sock")).unwrap();

    let got = collect(&out, OutputsLimits::default()).unwrap();
    let names: Vec<&str> = got.files.keys().map(String::as_str).collect();
    assert_eq!(names, ["report.md", "sub/deeper/data.csv"]);
    assert_eq!(got.files["report.md"], b"# report");
    let expect = [
        ("dangling", SkipReason::Symlink),
        ("dirlink", SkipReason::Symlink),
        ("escape.txt", SkipReason::Symlink),
        ("inside-link.md", SkipReason::Symlink),
        ("pipe", SkipReason::Fifo),
        ("sock", SkipReason::Socket),
        ("sub/absolute.txt", SkipReason::Symlink),
    ];
    assert_eq!(
        got.skipped,
        expect.iter().map(|(p, r)| (p.to_string(), *r)).collect()
    );
    assert!(got.files.values().all(|d| !d.starts_with(b"host secret")));
}

#[test]
fn a_symlinked_outputs_root_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
    std::fs::write(tmp.path().join("elsewhere/x"), b"x").unwrap();
    symlink(tmp.path().join("elsewhere"), tmp.path().join("outputs")).unwrap();
    assert!(matches!(
        collect(&tmp.path().join("outputs"), OutputsLimits::default()),
        Err(OutputsError::Io { .. })
    ));
}

#[test]
fn depth_and_entry_limits_bound_the_walk() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("outputs");
    std::fs::create_dir_all(out.join("a/b/c")).unwrap();
    std::fs::write(out.join("a/1"), b"1").unwrap();
    std::fs::write(out.join("a/b/2"), b"2").unwrap();
    std::fs::write(out.join("a/b/c/3"), b"3").unwrap();
    let got = collect(
        &out,
        OutputsLimits {
            max_depth: 2,
            max_entries: 100,
        },
    )
    .unwrap();
    assert_eq!(got.files.keys().collect::<Vec<_>>(), ["a/1", "a/b/2"]);
    assert_eq!(got.skipped.get("a/b/c"), Some(&SkipReason::TooDeep));

    for i in 0..10 {
        std::fs::write(out.join(format!("f{i}")), b"").unwrap();
    }
    let err = collect(
        &out,
        OutputsLimits {
            max_depth: 8,
            max_entries: 5,
        },
    )
    .err()
    .unwrap();
    assert!(matches!(err, OutputsError::TooManyEntries { limit: 5 }));
}

#[test]
fn non_utf8_names_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("outputs");
    std::fs::create_dir(&out).unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"bad\xff.txt");
    std::fs::write(out.join(bad), b"x").unwrap();
    let got = collect(&out, OutputsLimits::default()).unwrap();
    assert!(got.files.is_empty());
    assert_eq!(
        got.skipped.values().collect::<Vec<_>>(),
        [&SkipReason::NotUtf8]
    );
}
