//! `wasm-run`: skill components started from bash inside the sandbox run under
//! the worker's wasmtime with the session's preopens only.

use crate::common::{Fixture, bash, runtime};
use std::path::PathBuf;
use std::sync::Mutex;

/// The tests here count compilations; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn install(f: &Fixture, skill: &str, file: &str, wasm: &[u8]) -> String {
    let dir = f.ws().join("skills").join(skill);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), wasm).unwrap();
    format!("skills/{skill}/{file}")
}

fn fs_probe_wasm() -> Vec<u8> {
    std::fs::read(env!("FS_PROBE_WASM")).expect("fs_probe.wasm (built by tests/build.rs)")
}

pub(crate) fn wordcount() -> Vec<u8> {
    std::fs::read(env!("SKILL_WORDCOUNT_WASM")).expect("wordcount.wasm (built by tests/build.rs)")
}

/// The componentize-py example, built by `examples/skills/py-wordfreq/build.sh`
/// (`scripts/test.sh` runs it first).
pub(crate) fn wordfreq() -> Vec<u8> {
    let path = std::env::var_os("WASM_SANDBOX_PY_SKILL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/skills/py-wordfreq/wordfreq.wasm")
        });
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build it with examples/skills/py-wordfreq/build.sh (scripts/test.sh does)",
            path.display()
        )
    })
}

/// `bytes` with a custom section appended: same code, different content hash.
fn unique(mut bytes: Vec<u8>, tag: &str) -> Vec<u8> {
    let name = b"wasm-sandbox-test";
    let body_len = 1 + name.len() + tag.len();
    bytes.push(0);
    bytes.push(u8::try_from(body_len).unwrap());
    bytes.push(u8::try_from(name.len()).unwrap());
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(tag.as_bytes());
    bytes
}

#[test]
fn rust_skill_component_runs_from_bash_with_the_sessions_files() {
    let _g = serial();
    let rt = tokio();
    let f = Fixture::new();
    let tool = install(&f, "rust-wordcount", "wordcount.wasm", &wordcount());
    std::fs::write(f.ws().join("doc.txt"), "Alpha beta\nbeta GAMMA beta\n").unwrap();
    std::fs::create_dir_all(f.ws().join("sub")).unwrap();
    std::fs::write(f.ws().join("sub/x.txt"), "one\n").unwrap();

    // Relative component path and relative file (the working directory is `.`).
    let (out, err) = bash(&rt, &f.session, &format!("wasm-run {tool} --top 2 doc.txt"));
    assert!(!err, "{out}");
    assert_eq!(out, "2 5 27 doc.txt\n3 beta\n1 alpha");

    // From a subdirectory, absolute and `..` paths, several files.
    let (out, err) = bash(
        &rt,
        &f.session,
        &format!("(cd sub && wasm-run ../{tool} x.txt /workspace/doc.txt)"),
    );
    assert!(!err, "{out}");
    assert_eq!(out, "1 1 4 x.txt\n2 5 27 /workspace/doc.txt\n3 6 31 total");

    // stdin is relayed; memory stores are visible at their mount paths.
    let (out, _) = bash(
        &rt,
        &f.session,
        &format!(
            "printf 'a b c\\n' | wasm-run /workspace/{tool}; wasm-run {tool} /mnt/memory/notes/policy.md"
        ),
    );
    assert_eq!(out, "1 3 6 -\n1 2 8 /mnt/memory/notes/policy.md");

    // The component's exit status and stderr come back to bash.
    let (out, _) = bash(
        &rt,
        &f.session,
        &format!("wasm-run {tool} missing.txt; echo rc=$?"),
    );
    assert!(out.starts_with("wordcount: missing.txt: "), "{out}");
    assert!(out.ends_with("rc=1"), "{out}");

    // Output piped onwards works like a native command's.
    let (out, _) = bash(
        &rt,
        &f.session,
        &format!("wasm-run {tool} doc.txt | tr a-z A-Z"),
    );
    assert_eq!(out, "2 5 27 DOC.TXT");
}

#[test]
fn components_cannot_name_the_host() {
    let _g = serial();
    let rt = tokio();
    let f = Fixture::new();
    let tool = install(&f, "rust-wordcount", "wordcount.wasm", &wordcount());
    let secret = f.base().join("secret.txt");
    // Host paths, the sandbox's own system files, and climbing out of the
    // working directory all fail inside the component (no such preopen).
    for path in [
        secret.to_str().unwrap(),
        "/etc/passwd",
        "/proc/self/environ",
        "../../../../etc/passwd",
        "/workspace/../../etc/hostname",
    ] {
        let (out, _) = bash(
            &rt,
            &f.session,
            &format!("wasm-run {tool} '{path}'; echo rc=$?"),
        );
        assert!(
            out.starts_with(&format!("wordcount: {path}: ")) && out.ends_with("rc=1"),
            "{path}: {out}"
        );
        assert!(
            !out.contains("TOP SECRET") && !out.contains("root:"),
            "{out}"
        );
    }
    // A symlink planted in the workspace that points at the host is not followed
    // for the component file either.
    std::os::unix::fs::symlink(&secret, f.ws().join("evil.wasm")).unwrap();
    let (out, _) = bash(&rt, &f.session, "wasm-run evil.wasm; echo rc=$?");
    assert!(out.starts_with("wasm-run: evil.wasm: "), "{out}");
    assert!(out.ends_with("rc=126"), "{out}");
    // Components outside the session's directories cannot be named.
    let (out, _) = bash(
        &rt,
        &f.session,
        &format!("cp {tool} /tmp/t.wasm && wasm-run /tmp/t.wasm; echo rc=$?"),
    );
    assert!(out.contains("only components under /workspace"), "{out}");
    assert!(out.ends_with("rc=126"), "{out}");
    // Not a component.
    std::fs::write(f.ws().join("text.wasm"), "hello").unwrap();
    let (out, _) = bash(&rt, &f.session, "wasm-run text.wasm; echo rc=$?");
    assert_eq!(out, "wasm-run: text.wasm: not a WebAssembly file\nrc=126");
    let (out, _) = bash(&rt, &f.session, "wasm-run; echo rc=$?");
    assert!(out.starts_with("usage: wasm-run"), "{out}");
    assert!(out.ends_with("rc=2"), "{out}");
}

#[test]
fn read_only_stores_stay_read_only_for_components() {
    let _g = serial();
    let rt = tokio();
    let f = Fixture::new();
    let probe = install(&f, "probe", "fs_probe.wasm", &fs_probe_wasm());
    let (out, _) = bash(
        &rt,
        &f.session,
        &format!(
            "wasm-run {probe} write /mnt/memory/notes/x hi; wasm-run {probe} write /mnt/memory/scratch/y hi; wasm-run {probe} write out.txt hi"
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("err "), "{out}");
    assert_eq!(lines[1..], ["ok written", "ok written"], "{out}");
    assert!(!f.base().join("notes/x").exists());
    assert_eq!(
        std::fs::read_to_string(f.base().join("scratch/y")).unwrap(),
        "hi"
    );
    assert_eq!(
        std::fs::read_to_string(f.ws().join("out.txt")).unwrap(),
        "hi"
    );
}

#[test]
fn components_compile_once_per_content_across_sessions() {
    let _g = serial();
    let rt = tokio();
    let wasm = unique(wordcount(), "compile-once");
    let a = Fixture::new();
    let b = Fixture::new();
    let before = runtime().command_compilations();
    for f in [&a, &b] {
        let tool = install(f, "wc", "wc.wasm", &wasm);
        std::fs::write(f.ws().join("t.txt"), "x\n").unwrap();
        let (out, err) = bash(
            &rt,
            &f.session,
            &format!("wasm-run {tool} t.txt && wasm-run {tool} t.txt"),
        );
        assert!(!err, "{out}");
        assert_eq!(out, "1 1 2 t.txt\n1 1 2 t.txt");
    }
    assert_eq!(
        runtime().command_compilations() - before,
        1,
        "one compilation for the same bytes in two sessions"
    );
    // Changed bytes (a skill edited in one session) are a new compilation, even
    // when the size stays the same and the mtime is put back (the file identity
    // cache keys on ctime too); the other session's cached copy is not affected.
    let path = a.ws().join("skills/wc/wc.wasm");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let edited = unique(wordcount(), "edited-once!");
    assert_eq!(edited.len(), wasm.len());
    std::fs::write(&path, &edited).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (out, _) = bash(&rt, &a.session, "wasm-run skills/wc/wc.wasm t.txt");
    assert_eq!(out, "1 1 2 t.txt");
    assert_eq!(runtime().command_compilations() - before, 2);
    let (out, _) = bash(&rt, &b.session, "wasm-run skills/wc/wc.wasm t.txt");
    assert_eq!(out, "1 1 2 t.txt");
    assert_eq!(runtime().command_compilations() - before, 2);
}

#[test]
fn a_killed_caller_cancels_the_component() {
    let _g = serial();
    let rt = tokio();
    let f = Fixture::new();
    let probe = install(&f, "probe", "fs_probe.wasm", &fs_probe_wasm());
    let tool = install(&f, "rust-wordcount", "wordcount.wasm", &wordcount());
    // Three spinning runs, each killed after 0.3 s. A session runs at most two
    // components at once, so if the runs were not cancelled the last command
    // would wait forever (and the tool call time out).
    let (out, err) = bash(
        &rt,
        &f.session,
        &format!(
            "for i in 1 2 3; do timeout 0.3 wasm-run {probe} spin; echo rc=$?; done; echo x | wasm-run {tool}"
        ),
    );
    assert!(!err, "{out}");
    assert_eq!(out, "rc=124\nrc=124\nrc=124\n1 1 2 -");
}

#[test]
fn python_skill_component_built_with_componentize_py_runs_from_bash() {
    let _g = serial();
    let rt = tokio();
    let f = Fixture::new();
    let tool = install(&f, "py-wordfreq", "wordfreq.wasm", &wordfreq());
    // Larger than what a session may compile itself: the worker precompiles it when
    // it installs the skill (as `skills_installed` does), by file identity.
    let file = std::fs::File::open(f.ws().join(&tool)).unwrap();
    runtime()
        .command_for_file(&file, runtime().config().wasm_run.max_skill_component_bytes)
        .expect("skill precompile");
    std::fs::write(f.ws().join("doc.txt"), "Alpha beta\nbeta GAMMA beta\n").unwrap();
    let (out, err) = bash(&rt, &f.session, &format!("wasm-run {tool} --top 2 doc.txt"));
    assert!(!err, "{out}");
    assert_eq!(
        out,
        r#"{"files": {"doc.txt": {"lines": 2, "words": 5}}, "top": [["beta", 3], ["alpha", 1]]}"#
    );
    // It can read /workspace but not the host.
    let secret = f.base().join("secret.txt");
    let (out, _) = bash(
        &rt,
        &f.session,
        &format!(
            "wasm-run {tool} '{}' /etc/passwd; echo rc=$?",
            secret.display()
        ),
    );
    assert!(
        !out.contains("TOP SECRET") && !out.contains("root:"),
        "{out}"
    );
    assert!(out.ends_with("rc=1"), "{out}");
    assert!(out.contains("No such file or directory"), "{out}");
}

/// `bytes` with a custom section of `len` zero bytes appended (still a valid
/// component, `len` bytes larger).
fn padded(mut bytes: Vec<u8>, len: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = u8::try_from(n & 0x7f).unwrap();
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"wasm-sandbox-pad";
    bytes.push(0);
    leb(1 + name.len() + len, &mut bytes);
    bytes.push(u8::try_from(name.len()).unwrap());
    bytes.extend_from_slice(name);
    bytes.resize(bytes.len() + len, 0);
    bytes
}

/// A session can only run components it wrote up to `wasm_run.max_component_bytes`
/// (8 MiB): larger bytes are never read, hashed or compiled. The same file installed
/// by the worker as a skill (precompiled at install under
/// `max_skill_component_bytes`, and unchanged since) runs.
#[test]
fn large_components_written_by_a_session_are_refused_unless_installed_as_skills() {
    let _g = serial();
    let rt = tokio();
    let f = Fixture::new();
    let config = &runtime().config().wasm_run;
    assert_eq!(config.max_component_bytes, 8 << 20);
    let big = padded(unique(wordcount(), "big"), 9 << 20);
    let tool = install(&f, "big", "big.wasm", &big);
    std::fs::write(f.ws().join("t.txt"), "x\n").unwrap();
    let before = runtime().command_compilations();
    let (out, _) = bash(
        &rt,
        &f.session,
        &format!("wasm-run {tool} t.txt; echo rc=$?"),
    );
    assert!(out.starts_with(&format!("wasm-run: {tool}: ")), "{out}");
    assert!(
        out.contains(&format!(
            "component of {} bytes exceeds the limit of {}",
            big.len(),
            8 << 20
        )),
        "{out}"
    );
    assert!(out.ends_with("rc=126"), "{out}");
    assert_eq!(runtime().command_compilations(), before, "nothing compiled");

    // What the worker does when it installs a skill: precompile by file identity.
    let file = std::fs::File::open(f.ws().join(&tool)).unwrap();
    runtime()
        .command_for_file(&file, config.max_skill_component_bytes)
        .expect("skill precompile");
    let (out, err) = bash(&rt, &f.session, &format!("wasm-run {tool} t.txt"));
    assert!(!err, "{out}");
    assert_eq!(out, "1 1 2 t.txt");
    // Once the session changes the file it is its own file again: refused.
    let (out, _) = bash(
        &rt,
        &f.session,
        &format!("printf x >> {tool}; wasm-run {tool} t.txt; echo rc=$?"),
    );
    assert!(out.contains("exceeds the limit"), "{out}");
}

/// `wasm-run` of a FIFO answers at once instead of blocking a worker thread in
/// `open()` forever (and the session still closes promptly).
#[test]
fn a_fifo_named_as_a_component_is_refused_without_blocking() {
    let _g = serial();
    let rt = tokio();
    let f = Fixture::new();
    // Made from the host: the sandbox itself may not create FIFOs.
    let fifo = f.ws().join("f.wasm");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let _release = crate::runtime::ReleaseFifos(vec![fifo.clone()]);
    let started = std::time::Instant::now();
    let (out, _) = bash(&rt, &f.session, "timeout 20 wasm-run f.wasm; echo rc=$?");
    assert_eq!(out, "wasm-run: f.wasm: not a regular file\nrc=126");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(5), f.session.close())
            .await
            .expect("the session closes promptly")
    });
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// A runtime whose compiler helper is `helper` and whose compile limits are
/// `limits(config)`; the file-tools component comes from a cache shared by
/// these tests (compiled once).
fn limited_runtime(
    helper: &std::path::Path,
    limits: impl FnOnce(&mut wasm_sandbox_runtime::WasmRunConfig),
) -> wasm_sandbox_runtime::Runtime {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::tempdir().unwrap());
    let mut config = crate::common::config();
    config.engine.pooling = false;
    config.engine.cache_dir = wasm_sandbox_runtime::CacheDir::Dir(cache.path().to_path_buf());
    config.wasm_run.compiler_path = Some(helper.to_path_buf());
    limits(&mut config.wasm_run);
    wasm_sandbox_runtime::Runtime::new(config).expect("runtime")
}

/// A fake helper: a shell script.
fn script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Compilation of session bytes runs in a helper process that the kernel and the
/// worker bound: wall clock (killed), CPU (`RLIMIT_CPU`), memory (`RLIMIT_AS`),
/// output size; and with no helper nothing is compiled at all.
#[test]
fn compilation_runs_in_a_bounded_helper_process() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    // Different bytes per case: the runtimes share a disk cache.
    let wasm = |case: &str| unique(wordcount(), &format!("bounded-{case}"));
    let real = PathBuf::from(env!("CARGO_BIN_EXE_test-compile"));

    // The real helper within its limits: compiles.
    let rt = limited_runtime(&real, |_| {});
    rt.command_by_content(&wasm("ok"))
        .expect("compiles in the helper");

    // A helper that never answers is killed at the wall-clock limit.
    let hang = script(dir.path(), "hang", "exec sleep 60");
    let rt = limited_runtime(&hang, |w| w.compile_timeout_seconds = 1);
    let t = Instant::now();
    let err = rt
        .command_by_content(&wasm("hang"))
        .err()
        .expect("timed out")
        .to_string();
    assert!(err.contains("wasm_run.compile_timeout)"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // One that spins is stopped by RLIMIT_CPU (set by the worker, not the helper).
    let spin = script(dir.path(), "spin", "while :; do :; done");
    let rt = limited_runtime(&spin, |w| {
        w.compile_cpu_seconds = 1;
        w.compile_timeout_seconds = 60;
    });
    let t = Instant::now();
    let err = rt
        .command_by_content(&wasm("spin"))
        .err()
        .expect("cpu limit")
        .to_string();
    assert!(err.contains("wasm_run.compile_cpu_time)"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // The refusal is remembered: the same bytes again cost no second compile (a session
    // re-running a compile bomb must not cost the worker its CPU limit each time).
    let t = Instant::now();
    let again = rt
        .command_by_content(&wasm("spin"))
        .err()
        .expect("still refused")
        .to_string();
    assert_eq!(again, err);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "no second compile: {:?}",
        t.elapsed()
    );

    // One that floods stdout is cut off at the output cap.
    let flood = script(
        dir.path(),
        "flood",
        "cat >/dev/null; head -c 10000000 /dev/zero",
    );
    let rt = limited_runtime(&flood, |w| w.max_compiled_bytes = 1 << 20);
    let err = rt
        .command_by_content(&wasm("flood"))
        .err()
        .expect("output cap")
        .to_string();
    assert!(err.contains("wasm_run.max_compiled_size)"), "{err}");

    // The real helper with too little memory fails (RLIMIT_AS: a 24 MiB component
    // does not even fit twice in 48 MiB), and the worker is unharmed.
    let rt = limited_runtime(&real, |w| w.compile_memory_bytes = 48 << 20);
    let err = rt
        .command_by_content(&padded(wasm("memory"), 24 << 20))
        .err()
        .expect("memory limit")
        .to_string();
    assert!(err.contains("wasm_run.compile_memory)"), "{err}");

    // At most `max_concurrent_compiles` helpers run at once: the second waits.
    let started = dir.path().join("started");
    std::fs::create_dir(&started).unwrap();
    let slow = script(
        dir.path(),
        "slow",
        &format!("echo x > {}/$$; exec sleep 60", started.display()),
    );
    let rt = limited_runtime(&slow, |w| {
        w.max_concurrent_compiles = 1;
        w.compile_timeout_seconds = 2;
    });
    let count = || std::fs::read_dir(&started).unwrap().count();
    let errors = std::thread::scope(|scope| {
        let compile = |tag: &'static str| {
            let rt = &rt;
            let wasm = &wasm;
            scope.spawn(move || {
                rt.command_by_content(&wasm(tag))
                    .err()
                    .map(|e| e.to_string())
            })
        };
        let (a, b) = (compile("slot-a"), compile("slot-b"));
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(count(), 1, "one helper at a time");
        [a.join().unwrap(), b.join().unwrap()]
    });
    // The second either ran after the first (and timed out too) or gave up waiting
    // for a slot after the same time.
    for e in &errors {
        let e = e.as_deref().expect("neither compiles");
        assert!(
            e.contains("wasm_run.compile_timeout)") || e.contains("too many components"),
            "{e}"
        );
    }
    assert!(count() <= 2);

    // No helper: fail closed, with the setting named.
    let rt = limited_runtime(&real, |w| {
        w.compiler_path = Some(dir.path().join("missing"))
    });
    let err = rt
        .command_by_content(&wasm("none"))
        .err()
        .expect("no helper")
        .to_string();
    assert!(err.contains("wasm_run.compiler_path"), "{err}");
}
