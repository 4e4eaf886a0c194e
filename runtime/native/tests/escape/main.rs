//! The escape suite: every attempt below must be blocked, and each assertion checks
//! the specific failure (so a typo or a missing tool cannot pass as "blocked").
//! Numbered cases: E1..E69.
//!
//! One module per escape class: [`files`], [`network`], [`processes`], [`limits`],
//! [`special_files`]; the session-isolation and report checks are here.

#[path = "../common/mod.rs"]
mod common;
mod files;
mod limits;
mod network;
mod processes;
mod special_files;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;
use wasm_sandbox_native::{BashOutput, BashSession, LimitMechanism};

/// Asserts the command failed and its output mentions one of `reasons`.
#[track_caller]
fn assert_blocked(case: &str, out: &BashOutput, reasons: &[&str]) {
    assert!(out.is_error, "{case}: expected failure, got {out:?}");
    assert!(
        reasons.iter().any(|r| out.text.contains(r)),
        "{case}: expected one of {reasons:?}, got {:?}",
        out.text
    );
}

async fn blocked(s: &mut BashSession, case: &str, cmd: &str, reasons: &[&str]) {
    let out = run(s, cmd).await;
    assert_blocked(case, &out, reasons);
}

const NO_FILE: &str = "No such file or directory";
const RO_FS: &str = "Read-only file system";
const EPERM: &str = "Operation not permitted";
const EACCES: &str = "Permission denied";

/// True if `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    let Ok(mut f) = std::fs::File::open(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let mut stat = String::new();
    let _ = f.read_to_string(&mut stat);
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

#[tokio::test]
async fn sessions_side_by_side_are_isolated() {
    let a_dirs = Dirs::new();
    let b_dirs = Dirs::new();
    let mut a = BashSession::new(sandbox(), spec(&a_dirs, "session-a"));
    let mut b = BashSession::new(sandbox(), spec(&b_dirs, "session-b"));
    assert_eq!(
        run(&mut a, "echo a-secret > mine.txt; sleep 777 & echo ok").await,
        ok("ok")
    );
    assert_eq!(
        run(&mut b, "echo b > mine.txt; ls /workspace").await,
        ok("mine.txt")
    );
    // B sees its own file, not A's.
    assert_eq!(run(&mut b, "cat /workspace/mine.txt").await, ok("b"));
    blocked(
        &mut b,
        "iso files",
        &format!("cat {}", a_dirs.workspace().join("mine.txt").display()),
        &[NO_FILE],
    )
    .await;
    // B cannot see A's processes.
    let b_view = run(
        &mut b,
        "ps -e -o args= > /tmp/ps.txt; grep -c 'sleep 777' /tmp/ps.txt; true",
    )
    .await;
    assert_eq!(b_view, ok("0"));
    let a_sleep = a
        .sandbox_processes()
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with("sleep\x00777"))
        })
        .expect("A's sleep");
    blocked(
        &mut b,
        "iso kill",
        &format!("kill -9 {a_sleep}"),
        &["No such process"],
    )
    .await;
    assert!(alive(a_sleep));
    // Each has its own /tmp.
    assert_eq!(run(&mut a, "echo ta > /tmp/t; cat /tmp/t").await, ok("ta"));
    blocked(&mut b, "iso tmp", "cat /tmp/t", &[NO_FILE]).await;
    a.close().await;
    b.close().await;
    assert!(!alive(a_sleep));
}

#[test]
fn report_lists_the_active_layers() {
    let report = sandbox().report().clone();
    eprintln!("SANDBOX REPORT {}", serde_json::to_string(&report).unwrap());
    assert!(report.available);
    assert!(report.seccomp && report.no_new_privs);
    assert_eq!(
        report.namespaces,
        ["user", "mount", "pid", "ipc", "uts", "cgroup", "net"]
    );
    if report.landlock_abi.is_some() {
        assert_eq!(report.landlock.as_deref(), Some("full"));
        assert_eq!(
            report.special_files,
            wasm_sandbox_native::SpecialFileGuard::Landlock
        );
    } else {
        assert_eq!(
            report.special_files,
            wasm_sandbox_native::SpecialFileGuard::Seccomp
        );
    }
    assert_eq!(report.tmp_size_bytes, 8 << 20);
}
