//! Bash CPU accounting across a cancelled teardown (issue #15).
//!
//! Tearing a shell down (close, timeout, restart) kills the sandbox, takes the last
//! reading of its cgroups and removes them. The future doing it can be dropped at any
//! await: the runner's `tokio::time::timeout` around a call, or a close racing a call
//! in core's `select!`. The shell that is being torn down is usually the runaway
//! command, the CPU that matters for billing, so its reading must survive:
//!
//! * a future dropped while the cgroups are being removed (in the blocking task)
//!   still leaves the shell's CPU in the session's reading;
//! * a reading taken while the cgroups are removed, before the teardown future has
//!   resumed, includes it too (never neither live nor past);
//! * a future dropped earlier (while waiting for the sandbox to die) still removes
//!   the cgroups, and the reading keeps the CPU;
//! * nothing is counted twice.
//!
//! The tests drive the teardown future by hand, one poll at a time, and between polls
//! watch the session's CPU-accounting cgroup directory: once it is gone without the
//! future having been polled again, the future sits at the await of the blocking
//! removal, which is where it is then dropped (or read around).
//!
//! They need cgroup CPU accounting (v1 `cpuacct` or v2) and skip with a printed reason
//! where it is missing.

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::{Dirs, ok, run, sandbox, spec};
use serde_json::json;
use wasm_sandbox_native::cgroup::{CgroupSupport, SESSION_PREFIX};
use wasm_sandbox_native::{BashSession, UsageHandle};

/// CPU the busy loop must have used before teardown starts.
const LOOP_CPU: Duration = Duration::from_millis(400);

fn accounting_available() -> bool {
    if !sandbox().report().shape.cpu_accounting {
        eprintln!("SKIP: no cgroup CPU accounting on this host (no v2 tree, no v1 cpuacct)");
        return false;
    }
    true
}

/// The session's CPU-accounting cgroup (the v2 cgroup, or the v1 `cpuacct` one).
fn accounting_dir(session: &str) -> PathBuf {
    let support = CgroupSupport::detect();
    let parent = support
        .v2
        .map(|t| t.parent)
        .or(support.cpuacct_parent)
        .expect("cpu accounting without a cgroup parent");
    let prefix = format!("{SESSION_PREFIX}{}-{session}-", std::process::id());
    let found: Vec<PathBuf> = std::fs::read_dir(&parent)
        .expect("read the cgroup parent")
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name()
                .to_str()?
                .starts_with(&prefix)
                .then(|| e.path())
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{session}'s cgroup under {parent:?}: {found:?}"
    );
    found.into_iter().next().unwrap()
}

fn cpu(h: &UsageHandle) -> Duration {
    h.get().cpu.expect("cpu measured")
}

/// Polls `fut` once.
async fn poll_once<F: Future + ?Sized>(fut: &mut Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// Polls `fut` one step at a time; after each step, waits up to 50 ms (without
/// polling) for `dir` to disappear. Returns once it has, with `fut` still pending:
/// the blocking removal has run while the future never saw its end.
async fn poll_until_removed<F: Future + ?Sized>(mut fut: Pin<&mut F>, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            poll_once(&mut fut).await.is_pending(),
            "the teardown finished within one poll: the cancellation point was not reached"
        );
        let step = Instant::now() + Duration::from_millis(50);
        while Instant::now() < step {
            if !dir.exists() {
                // Let the blocking removal finish its other directories.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(Instant::now() < deadline, "{dir:?} was never removed");
    }
}

/// Starts a session with a busy loop in the background and waits until it has used
/// [`LOOP_CPU`]; returns the session, its usage handle, the reading and its cgroup.
async fn busy_session(dirs: &Dirs, id: &str) -> (BashSession, UsageHandle, Duration, PathBuf) {
    let mut s = BashSession::new(sandbox(), spec(dirs, id));
    assert_eq!(
        run(
            &mut s,
            "(while :; do :; done) >/dev/null 2>&1 & echo started"
        )
        .await,
        ok("started")
    );
    let handle = s.usage_handle();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cpu(&handle) < LOOP_CPU {
        assert!(
            Instant::now() < deadline,
            "the loop never ran: {:?}",
            cpu(&handle)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = cpu(&handle);
    let dir = accounting_dir(id);
    (s, handle, before, dir)
}

/// `close()` dropped while its blocking task removes the cgroups: the loop's CPU is
/// still in the reading, both while the removal runs (item 2) and after the drop
/// (item 1); the session then works again without counting the old shell twice.
#[tokio::test]
async fn close_dropped_during_cgroup_removal_keeps_the_cpu() {
    if !accounting_available() {
        return;
    }
    let dirs = Dirs::new();
    let (mut s, handle, before, dir) = busy_session(&dirs, "closedrop").await;
    let mut close = Box::pin(s.close());
    poll_until_removed(close.as_mut(), &dir).await;
    // The cgroups are gone and the close future has not resumed: a reading now must
    // still include the shell (it moved from live to past before the removal).
    let during = cpu(&handle);
    assert!(
        during >= before,
        "reading during teardown {during:?} lost the loop's {before:?}"
    );
    drop(close);
    let after = cpu(&handle);
    assert!(
        after >= before,
        "reading after a cancelled close {after:?} lost the loop's {before:?}"
    );
    assert_eq!(cpu(&handle), after, "the reading is final");
    // A fresh shell; the old one is not counted again.
    assert_eq!(run(&mut s, "echo again").await, ok("again"));
    let again = cpu(&handle);
    assert!(
        again >= after && again < after + Duration::from_millis(300),
        "{again:?} after a fresh shell, {after:?} before (counted twice?)"
    );
    s.close().await;
}

/// A call whose own timeout tears the shell down, dropped (the runner's outer
/// timeout) while the cgroups are removed: the runaway loop's CPU stays in the
/// reading, and the next call (which finds the shell dead) adds nothing.
#[tokio::test]
async fn call_dropped_during_timeout_teardown_keeps_the_cpu() {
    if !accounting_available() {
        return;
    }
    let dirs = Dirs::new();
    let id = "calldrop";
    let mut s = BashSession::new(sandbox(), spec(&dirs, id));
    assert_eq!(run(&mut s, "echo up").await, ok("up"));
    let handle = s.usage_handle();
    let dir = accounting_dir(id);
    let input = json!({"command": "while :; do :; done", "timeout_ms": 700});
    let mut call = Box::pin(s.call(&input));
    poll_until_removed(call.as_mut(), &dir).await;
    let during = cpu(&handle);
    assert!(
        during >= LOOP_CPU,
        "reading during teardown {during:?} lost the timed-out loop's CPU"
    );
    drop(call);
    let after = cpu(&handle);
    assert!(
        after >= LOOP_CPU,
        "reading after a cancelled call: {after:?}"
    );
    let out = run(&mut s, "echo next").await;
    assert!(out.is_error, "the cancelled call's shell is dead: {out:?}");
    assert_eq!(cpu(&handle), after, "the dead shell was counted twice");
    let restarted = s.call(&json!({"restart": true})).await;
    assert!(!restarted.is_error, "restart: {restarted:?}");
    assert_eq!(run(&mut s, "echo fresh").await, ok("fresh"));
    s.close().await;
}

/// `close()` dropped at its first await (while waiting for the sandbox to die,
/// before the cgroups are touched): the cgroups are still removed, and the reading
/// keeps the loop's CPU before, during and after.
#[tokio::test]
async fn close_dropped_before_cgroup_removal_removes_them_and_keeps_the_cpu() {
    if !accounting_available() {
        return;
    }
    let dirs = Dirs::new();
    let (mut s, handle, before, dir) = busy_session(&dirs, "earlydrop").await;
    {
        let mut close = Box::pin(s.close());
        let _ = poll_once(&mut close.as_mut()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.exists() {
        let now = cpu(&handle);
        assert!(now >= before, "reading {now:?} lost the loop's {before:?}");
        assert!(
            Instant::now() < deadline,
            "{dir:?} left behind by a cancelled close"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = cpu(&handle);
    assert!(
        after >= before,
        "reading {after:?} lost the loop's {before:?}"
    );
    assert!(s.sandbox_processes().is_empty());
    drop(s);
    assert_eq!(cpu(&handle), after);
}
