//! Hostile store contents cannot make the worker hold memory or block: oversized files,
//! FIFOs, many stores flushing at once.

use super::*;

/// Orders the tests that allocate megabytes, so none inflates another's peak-RSS reading.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`).
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS (`clear_refs` value 5, Linux
/// 4.0+).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Issue 11: four 256 MiB files written by bash into a read-write store took the worker from
/// 122 MiB to 3.2 GiB RSS in the end-of-session flush, which read each whole. Here four
/// 64 MiB files (sparse: cheap to make, and all-NUL content is valid UTF-8, so the old code
/// read and uploaded them whole) must be skipped — never read, never sent, counted — and the
/// process's peak RSS must grow by far less than one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_files_are_skipped_without_being_read() {
    let _heavy = HEAVY.lock().await;
    const BIG: u64 = 64 << 20;
    let mut s = Store::new(&[("/small.md", "s")], false).await;
    for i in 0..4 {
        let f = std::fs::File::create(s.path(&format!("big{i}.md"))).unwrap();
        f.set_len(BIG).unwrap();
    }
    let at_cap = "a".repeat(MAX_MEMORY_BYTES as usize);
    s.write("at-cap.md", &at_cap);
    s.write("over-cap.md", &"a".repeat(MAX_MEMORY_BYTES as usize + 1));
    s.write("small.md", "s2");

    let measured = reset_peak_rss();
    let before = proc_status_kib("VmHWM:");
    let report = flush_store(&mut s.state, &s.folder, &s.api).await;
    let after = proc_status_kib("VmHWM:");

    assert_eq!(report.uploaded, ["at-cap.md", "small.md"]);
    assert_eq!(
        report.refused_local,
        ["big0.md", "big1.md", "big2.md", "big3.md", "over-cap.md"]
    );
    let mut calls = s.api.take_calls();
    calls.sort();
    assert_eq!(
        calls,
        ["create /at-cap.md", "list basic", "update /small.md"],
        "no request carries an over-size file"
    );
    assert_eq!(s.api.content("/at-cap.md").unwrap(), at_cap);
    for i in 0..4 {
        assert!(s.api.content(&format!("/big{i}.md")).is_none());
        assert!(s.state.refused().contains_key(&format!("big{i}.md")));
    }
    match (measured, before, after) {
        (true, Some(before), Some(after)) => {
            let grew_mib = after.saturating_sub(before) / 1024;
            eprintln!("peak RSS grew by {grew_mib} MiB during the flush");
            assert!(
                grew_mib < 32,
                "the flush grew the peak RSS by {grew_mib} MiB: over-size files were read"
            );
        }
        _ => eprintln!(
            "skipping the RSS assertion: /proc/self/clear_refs or VmHWM is unavailable here"
        ),
    }

    // The periodic sync neither re-reads nor retries them while they are unchanged...
    let report = s.sync().await;
    assert!(report.uploaded.is_empty() && report.refused_local.is_empty());
    assert_eq!(s.api.take_calls(), ["list basic"]);
    // ...and a file brought under the cap uploads on the next pass.
    std::fs::File::options()
        .write(true)
        .open(s.path("big0.md"))
        .unwrap()
        .set_len(3)
        .unwrap();
    let report = s.sync().await;
    assert_eq!(report.uploaded, ["big0.md"]);
    assert_eq!(s.api.content("/big0.md").unwrap(), "\0\0\0");
    // The folder's own read refuses without reading.
    assert!(matches!(
        s.folder.read_file("big1.md").await.unwrap(),
        LocalRead::Refused(reason) if reason.contains("102400")
    ));
}

/// Drives `fut` with a deadline; on expiry opens the FIFO's write end (which releases a
/// reader blocked in `open`) so the failing test cannot hang, then panics.
async fn within<T>(what: &str, fifo: &Path, fut: impl std::future::Future<Output = T>) -> T {
    use std::os::unix::fs::OpenOptionsExt as _;
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(v) => v,
        Err(_) => {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo);
            panic!("{what} blocked on a FIFO in the store");
        }
    }
}

/// A FIFO that bash leaves in a read-write store (as a new file, and in place of a synced
/// memory) is skipped: the scan, the delete re-check, the flush and a direct read all return
/// at once instead of blocking a worker thread in `open`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_the_store_is_skipped_without_blocking() {
    let mut s = Store::new(&[("/a.md", "a")], false).await;
    let make_fifo = |rel: &str| {
        let path =
            std::ffi::CString::new(s.path(rel).into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        unsafe { libc::mkfifo(path.as_ptr(), 0o600) == 0 }
    };
    if !make_fifo("pipe.md") {
        eprintln!(
            "skipping: mkfifo failed here: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    std::fs::remove_file(s.path("a.md")).unwrap();
    assert!(make_fifo("a.md"));
    s.write("new.md", "n");
    let pipe = s.path("pipe.md");

    let report = within("the sync", &pipe, s.sync_at(0, DeleteMode::Enabled, true)).await;
    assert_eq!(report.uploaded, ["new.md"]);
    assert!(report.deleted_remote.is_empty(), "{report:?}");
    let report = within(
        "the flush",
        &pipe,
        flush_store(&mut s.state, &s.folder, &s.api),
    )
    .await;
    assert!(report.uploaded.is_empty(), "{report:?}");
    let calls = s.api.take_calls();
    assert!(!calls.iter().any(|c| c.contains("pipe")), "{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("delete")), "{calls:?}");
    assert_eq!(s.api.content("/a.md").unwrap(), "a");
    let read = within("a read", &pipe, s.folder.read_file("pipe.md")).await;
    assert!(matches!(read.unwrap(), LocalRead::Refused(_)));
    let hash = within("a hash", &pipe, s.folder.hash_file("a.md")).await;
    assert!(hash.is_err(), "a FIFO has no content hash: {hash:?}");
}

/// Counts the file bytes that uploads hold at once, across every store using it.
#[derive(Default)]
struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
}

/// A [`FakeApi`] whose creates take a while and report their content to a shared [`Gauge`].
struct SlowApi<'a> {
    inner: &'a FakeApi,
    gauge: &'a Gauge,
}

impl MemoryApi for SlowApi<'_> {
    async fn list(&self, full: bool) -> Result<Vec<RemoteMemory>, RemoteError> {
        self.inner.list(full).await
    }

    async fn fetch(&self, memory_id: &str) -> Result<RemoteMemory, RemoteError> {
        self.inner.fetch(memory_id).await
    }

    async fn create(&self, path: &str, content: &str) -> Result<String, RemoteError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.gauge.now.fetch_add(content.len(), SeqCst) + content.len();
        self.gauge.max.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.gauge.now.fetch_sub(content.len(), SeqCst);
        self.inner.create(path, content).await
    }

    async fn update(
        &self,
        memory_id: &str,
        content: &str,
        precondition_sha: &str,
    ) -> Result<String, RemoteError> {
        self.inner
            .update(memory_id, content, precondition_sha)
            .await
    }

    async fn delete(&self, memory_id: &str, expected_sha: &str) -> Result<(), RemoteError> {
        self.inner.delete(memory_id, expected_sha).await
    }
}

/// Three stores flushing 40 largest-size memories each at once (as several sessions ending
/// together would) never hold more than `UPLOAD_BYTES_IN_FLIGHT` of file content between
/// them; per-store concurrency alone would let them hold 9.6 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_hold_a_bounded_number_of_bytes_across_stores() {
    let _heavy = HEAVY.lock().await;
    use wasm_sandbox_memory::UPLOAD_BYTES_IN_FLIGHT;
    let body = "m".repeat(MAX_MEMORY_BYTES as usize);
    let mut stores = Vec::new();
    for _ in 0..3 {
        let s = Store::new(&[], false).await;
        for i in 0..40 {
            s.write(&format!("m{i:02}.md"), &body);
        }
        stores.push(s);
    }
    let gauge = Gauge::default();
    let reports = futures::future::join_all(stores.iter_mut().map(|s| {
        let Store {
            state, folder, api, ..
        } = s;
        let api = SlowApi {
            inner: api,
            gauge: &gauge,
        };
        async move { flush_store(state, folder, &api).await }
    }))
    .await;
    for r in &reports {
        assert_eq!(r.uploaded.len(), 40, "{r:?}");
    }
    let max = gauge.max.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("at most {max} bytes of memory content were in flight");
    assert!(
        max <= UPLOAD_BYTES_IN_FLIGHT,
        "{max} bytes in flight, over the {UPLOAD_BYTES_IN_FLIGHT} budget"
    );
    assert!(
        max >= 2 * MAX_MEMORY_BYTES as usize,
        "uploads still overlap"
    );
}
