//! Runtime mechanics: compile once, sessions only instantiate.

use crate::common::{Fixture, runtime};
use serde_json::json;
use wasm_sandbox_runtime::{SessionSpec, ToolCall};

#[test]
fn sessions_never_compile() {
    let rt = runtime();
    // Force the one compilation, then create many sessions and use them.
    let before = rt.compilations();
    assert!(
        before >= 1,
        "the runtime compiled its component at start-up"
    );
    let dir = tempfile::tempdir().unwrap();
    for i in 0..25 {
        let s = rt
            .session(SessionSpec::new(
                format!("s{i}"),
                dir.path().join(format!("s{i}")),
            ))
            .unwrap();
        let r = s
            .call_file_tool_blocking(&ToolCall::new(
                "t",
                "write",
                json!({"file_path": "a.txt", "content": "x"}),
            ))
            .unwrap();
        assert!(!r.is_error, "{r:?}");
    }
    assert_eq!(
        rt.compilations(),
        before,
        "creating sessions must not compile anything"
    );
}

#[test]
fn unknown_tools_are_not_ours() {
    let f = Fixture::new();
    let call = ToolCall::new("t", "web_fetch", json!({"url": "https://example.com"}));
    assert!(f.session.call_file_tool_blocking(&call).is_none());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(rt.block_on(f.session.call_tool(&call)).is_none());
    let call = ToolCall::new("t", "Read", json!({"file_path": "a"}));
    assert!(
        rt.block_on(f.session.call_tool(&call)).is_none(),
        "names are case-sensitive"
    );
}

#[test]
fn sessions_are_isolated() {
    let a = Fixture::new();
    let b = Fixture::new();
    let r = a.tool(
        "write",
        json!({"file_path": "mine.txt", "content": "a's data"}),
    );
    assert!(!r.is_error);
    let r = b.tool("read", json!({"file_path": "mine.txt"}));
    assert!(r.is_error, "b must not see a's file: {r:?}");
    assert!(!b.ws().join("mine.txt").exists());
    assert_eq!(
        std::fs::read_to_string(a.ws().join("mine.txt")).unwrap(),
        "a's data"
    );
}

#[test]
fn async_calls_round_trip() {
    let f = Fixture::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let w = f
            .session
            .call_tool(&ToolCall::new(
                "1",
                "write",
                json!({"file_path": "x/y.txt", "content": "héllo\n"}),
            ))
            .await
            .unwrap();
        assert_eq!(w.text_content(), "wrote 6 bytes to x/y.txt");
        let r = f
            .session
            .call_tool(&ToolCall::new(
                "2",
                "read",
                json!({"file_path": "/workspace/x/y.txt"}),
            ))
            .await
            .unwrap();
        assert_eq!(r.text_content(), "héllo\n");
        assert!(!r.is_error);
    });
}

/// When dropped, opens whatever FIFO is at these paths for reading and writing
/// (`O_RDWR` never blocks on a FIFO), which lets a thread blocked opening it go on;
/// also when the test fails, since dropping a tokio runtime waits for its blocking
/// threads. Declare it after the runtime, so it is dropped first.
pub(crate) struct ReleaseFifos(pub Vec<std::path::PathBuf>);

impl Drop for ReleaseFifos {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let open: Vec<_> = self
            .0
            .iter()
            .filter_map(|p| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(p)
                    .ok()
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(open);
    }
}

/// Exchanges two paths atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<()> {
    let a = std::ffi::CString::new(a.to_str().unwrap()).unwrap();
    let b = std::ffi::CString::new(b.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A file-tool call stuck in a host call (here: `open()` of a FIFO swapped in
/// between the guest's type check and its open) neither holds up `Session::close`
/// nor parks the next call behind it.
#[test]
fn a_stuck_file_tool_call_does_not_block_close_or_later_calls() {
    use std::time::{Duration, Instant};
    let f = Fixture::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ws = f.ws();
    let (target, other) = (ws.join("target.txt"), ws.join("other"));
    std::fs::write(&target, "file\n").unwrap();
    let c = std::ffi::CString::new(other.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    if let Err(e) = exchange(&target, &other) {
        eprintln!("skipped: renameat2(RENAME_EXCHANGE) is not supported here: {e}");
        return;
    }
    exchange(&target, &other).unwrap();
    let _release = ReleaseFifos(vec![target.clone(), other.clone()]);
    // The host swaps the file and the FIFO as fast as it can while `write` calls
    // run, until one call opens the FIFO and blocks.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, target, other) = (stop.clone(), target.clone(), other.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = exchange(&target, &other);
            }
        })
    };
    let session = std::sync::Arc::new(f.session);
    let mut stuck = None;
    for _ in 0..2000 {
        let s = session.clone();
        let mut call = rt.spawn(async move {
            s.call_tool(&ToolCall::new(
                "w",
                "write",
                json!({"file_path": "target.txt", "content": "x"}),
            ))
            .await
        });
        let done = rt
            .block_on(async { tokio::time::timeout(Duration::from_millis(500), &mut call).await });
        if done.is_err() {
            stuck = Some(call);
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    let Some(stuck) = stuck else {
        panic!("no write call ever blocked on the FIFO in 2000 tries");
    };

    // Another call while the stuck one holds the instance: answered at once.
    let (tx, rx) = std::sync::mpsc::channel();
    let s = session.clone();
    std::thread::spawn(move || {
        let r = s.call_file_tool_blocking(&ToolCall::new("r", "read", json!({"file_path": "x"})));
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a call behind a stuck one returns promptly")
        .unwrap();
    assert!(r.is_error);
    assert!(
        r.text_content()
            .contains("a previous call is still running"),
        "{r:?}"
    );

    // Close returns promptly and cancels the stuck call.
    let t = Instant::now();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), session.close())
            .await
            .expect("close returns while a call is stuck")
    });
    assert!(t.elapsed() < Duration::from_secs(5));
    let r = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), stuck).await })
        .expect("the stuck call is answered once the session closes")
        .unwrap()
        .expect("a sandbox tool");
    assert!(r.is_error);
    assert!(r.text_content().contains("the session was closed"), "{r:?}");
    // And a later call is answered promptly too.
    let r = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                session.call_tool(&ToolCall::new("r2", "read", json!({"file_path": "x"}))),
            )
            .await
        })
        .expect("prompt")
        .unwrap();
    assert!(r.is_error);
}

/// Starting a runtime removes what crashed runtimes left: bridge directories
/// under `/dev/shm` whose owner is gone, and, in the compile cache, temp files of
/// interrupted writes and files past `engine.cache_max_bytes` (least recently used
/// first). Live owners' directories stay.
#[test]
fn runtime_start_sweeps_stale_bridge_dirs_and_the_compile_cache() {
    use std::os::fd::AsRawFd;
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipped: no /dev/shm");
        return;
    }
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let tag = format!("{:x}", std::process::id());
    let make = |pid: u32, n: &str, lock: bool| {
        let d = shm.join(format!("wasm-sandbox-run-{pid}-t{tag}{n}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("0.sock"), "").unwrap();
        if lock {
            std::fs::write(d.join("lock"), "").unwrap();
        }
        d
    };
    let crashed = make(dead, "a", true);
    let crashed_old = make(dead, "b", false);
    let held = make(dead, "c", true);
    let live = make(1, "d", true);
    let held_lock = std::fs::File::open(held.join("lock")).unwrap();
    // SAFETY: an open descriptor.
    assert_eq!(
        unsafe { libc::flock(held_lock.as_raw_fd(), libc::LOCK_EX) },
        0
    );

    let cache = tempfile::tempdir().unwrap();
    // Names as the cache writes them (`<label>-<sha-256>-<engine hash>`): only those are swept.
    let stem = |c: char| format!("cmd-{}-{:016x}", c.to_string().repeat(64), 1);
    let junk = cache.path().join(format!("{}.cwasm", stem('a')));
    std::fs::write(&junk, vec![0u8; 4 << 20]).unwrap();
    let tmp = cache.path().join(format!("{}.tmp{dead}", stem('b')));
    std::fs::write(&tmp, "partial").unwrap();

    let mut config = crate::common::config();
    config.engine.pooling = false;
    config.engine.cache_dir = wasm_sandbox_runtime::CacheDir::Dir(cache.path().to_path_buf());
    config.engine.cache_max_bytes = 2 << 20;
    let rt = wasm_sandbox_runtime::Runtime::new(config).unwrap();

    assert!(
        !crashed.exists() && !crashed_old.exists(),
        "stale bridge dirs removed"
    );
    assert!(held.exists(), "a held lock keeps the directory");
    assert!(live.exists(), "a live owner keeps the directory");
    assert!(!tmp.exists(), "temp file of a dead writer removed");
    assert!(
        !junk.exists(),
        "over the cap: least recently used file evicted"
    );
    drop(rt);
    drop(held_lock);
    for d in [held, live] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
