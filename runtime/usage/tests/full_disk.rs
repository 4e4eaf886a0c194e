//! The ledger on a full filesystem: the space it reserved ahead (`fallocate`) still takes
//! records, and a write that fails leaves no torn line and can be made again.
//!
//! Each test mounts a small tmpfs of its own (root only); where that is not possible it skips
//! with a printed reason.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use wasm_sandbox_usage::{AppendError, CpuSeconds, Ledger, UsageRecord, ledger, read_all};

mod common;

/// Session `n`'s record with readings and one bash call.
fn record(n: u32) -> UsageRecord {
    UsageRecord {
        active_ms: 1000,
        cpu: CpuSeconds::new(Some(1.5), 0.25, 0.0),
        memory_peak_bytes: Some(1 << 20),
        tool_calls: BTreeMap::from([("bash".to_owned(), 1)]),
        ..common::record(n)
    }
}

/// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes a file until the filesystem is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x55u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    // Whatever is left is less than a page: nothing more fits.
    let _ = f.write_all(&[0u8; 4096]);
    path
}

#[test]
fn the_reserved_space_takes_records_after_a_session_filled_the_disk() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let dir = fs.path().join("usage");
    let mut l = Ledger::open(&dir, 1 << 20).unwrap();
    fill(fs.path());
    // The filesystem is full; the segment's reserve (far more than 200 records) is not.
    for n in 1..=200 {
        l.append(&record(n))
            .unwrap_or_else(|e| panic!("record {n} on a full filesystem: {e}"));
    }
    let all = read_all(&dir).unwrap();
    assert_eq!(all.len(), 200);
    assert_eq!(all[199], record(200));
    // The reserve does not show in the size readers see.
    let (_, seg) = &ledger::segments(&dir).unwrap()[0];
    let lines: u64 = (1..=200)
        .map(|n| serde_json::to_vec(&record(n)).unwrap().len() as u64 + 1)
        .sum();
    assert_eq!(std::fs::metadata(seg).unwrap().len(), lines);
}

#[test]
fn a_failed_write_leaves_no_torn_line_and_is_made_again_once_there_is_room() {
    let Some(fs) = Tmpfs::mount("1m") else {
        return;
    };
    let dir = fs.path().join("usage");
    std::fs::create_dir(&dir).unwrap();
    // Full before the ledger opens: no reserve can be made.
    let filler = fill(fs.path());
    let mut l = Ledger::open(&dir, 1 << 20).unwrap();
    let mut failed = None;
    for n in 1..=64 {
        match l.append_checked(&record(n)) {
            Ok(_) => {}
            Err(e) => {
                failed = Some((n, e));
                break;
            }
        }
    }
    let (n, err) = failed.expect("a full filesystem took 64 records");
    assert!(
        matches!(&err, AppendError::NotWritten(e) if e.raw_os_error() == Some(libc::ENOSPC)),
        "{err:?}"
    );
    // Cut back to the last whole line: every byte of the segment is a complete record.
    let (_, seg) = &ledger::segments(&dir).unwrap()[0];
    let bytes = std::fs::read(seg).unwrap();
    assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "torn tail");
    assert_eq!(read_all(&dir).unwrap().len(), n as usize - 1);
    std::fs::remove_file(filler).unwrap();
    l.append_checked(&record(n)).unwrap();
    let all = read_all(&dir).unwrap();
    assert_eq!(all.len(), n as usize, "each record once");
    assert_eq!(all.last(), Some(&record(n)));
}
