//! Session cold start and tool-call latency.
//!
//! `cargo bench -p wasm-sandbox-benches --bench cold_start` prints markdown
//! tables (p50/p99) for:
//! * sandbox ready: `Runtime::session` (mkdir workspace + outputs, WASI
//!   context with preopens, instantiate the precompiled component), pooling
//!   vs on-demand allocation;
//! * one `read` of a 4 KiB file, end to end through the component;
//! * one `grep` over 1,000 files;
//! * baseline: the same component and call through bare wasmtime +
//!   wasmtime-wasi (a plain `Linker`, no session machinery), so the
//!   difference is this crate's overhead.

use serde_json::json;
use wasm_sandbox_benches::{header, iters, measure};
use wasm_sandbox_runtime::{EngineConfig, Runtime, RuntimeConfig, SessionSpec, ToolCall};

mod baseline;

/// 100 sessions created at once (each on its own thread, released
/// together), and the memory cost of 1,000 idle sessions.
fn burst_and_idle(rt: &Runtime, dir: &std::path::Path) {
    use std::sync::{Arc, Barrier};
    header("Burst and idle sessions");
    let barrier = Arc::new(Barrier::new(100));
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let rt = rt.clone();
            let barrier = barrier.clone();
            let root = dir.join(format!("burst-{i}"));
            std::thread::spawn(move || {
                barrier.wait();
                let t = std::time::Instant::now();
                let s = rt.session(SessionSpec::new("b", root));
                (t.elapsed(), s.is_ok())
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let failures = results.iter().filter(|(_, ok)| !ok).count();
    let stats = wasm_sandbox_benches::Stats::from_samples(
        &format!("burst of 100 sessions at once ({failures} failures)"),
        results.iter().map(|(d, _)| *d).collect(),
    );
    println!("{}", stats.row());

    let before = rss_kib();
    let idle: Vec<_> = (0..1000)
        .map(|i| {
            rt.session(SessionSpec::new("b", dir.join(format!("idle-{i}"))))
                .expect("session")
        })
        .collect();
    let after = rss_kib();
    println!(
        "\nidle sessions: 1,000 live sessions add {} KiB RSS = {:.1} KiB per session (file-tools instance; bash not started)",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / 1000.0
    );
    drop(idle);
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// bash in the native sandbox: first command of a session (lazy start, and
/// after `prestart_bash`), and a warm round trip.
fn bash(tokio: &tokio::runtime::Runtime, dir: &std::path::Path, n: usize) {
    let mut config = RuntimeConfig::default();
    config.bash.init_path = std::env::current_exe().ok();
    let rt = Runtime::new(config).expect("runtime");
    let report = rt.sandbox_report();
    header(&format!(
        "bash in the native sandbox (available: {}, landlock: {:?}, seccomp: {}, memory: {:?}, pids: {:?})",
        report.available, report.landlock, report.seccomp, report.memory_limit, report.pids_limit
    ));
    let echo = ToolCall::new("t", "bash", json!({"command": "echo hi"}));
    let mut i = 0u64;
    let mut sessions = Vec::new();
    let stats = measure("first `echo hi` of a session (lazy start)", 3, n, || {
        i += 1;
        let s = rt
            .session(SessionSpec::new("b", dir.join(format!("bash-lazy-{i}"))))
            .expect("session");
        let r = tokio.block_on(s.call_tool(&echo)).expect("tool");
        assert_eq!(r.text_content(), "hi", "{r:?}");
        sessions.push(s);
    });
    println!("{}", stats.row());
    for s in sessions.drain(..) {
        tokio.block_on(s.close());
    }
    // Prestarted: the worker starts the shell at claim time, while the event
    // stream attaches; the first command then only pays the round trip.
    let mut prestarted = Vec::new();
    for j in 0..n + 3 {
        let s = rt
            .session(SessionSpec::new("b", dir.join(format!("bash-pre-{j}"))))
            .expect("session");
        tokio.block_on(s.prestart_bash());
        prestarted.push(s);
    }
    let mut it = prestarted.iter();
    let stats = measure("first `echo hi` after prestart_bash", 3, n, || {
        let s = it.next().expect("session");
        let r = tokio.block_on(s.call_tool(&echo)).expect("tool");
        assert_eq!(r.text_content(), "hi");
    });
    println!("{}", stats.row());
    let warm = &prestarted[0];
    let stats = measure("warm `echo hi` round trip", 20, n * 10, || {
        let r = tokio.block_on(warm.call_tool(&echo)).expect("tool");
        assert_eq!(r.text_content(), "hi");
    });
    println!("{}", stats.row());
    for s in prestarted {
        tokio.block_on(s.close());
    }
}

fn main() {
    // This binary is also the bash sandbox's init step (bind-mounted at the
    // sandbox's init path), like the `wasm-sandbox` CLI.
    wasm_sandbox_native::run_as_init_if_invoked();
    wasm_sandbox_runtime::run_as_compiler_if_invoked();
    let n = iters(2000);
    let dir = tempfile::tempdir().expect("tempdir");

    header("Session cold start (sandbox ready)");
    for pooling in [true, false] {
        let config = RuntimeConfig {
            engine: EngineConfig {
                pooling,
                ..Default::default()
            },
            ..Default::default()
        };
        let rt = Runtime::new(config).expect("runtime");
        let mut i = 0u64;
        let label = if pooling {
            "session ready (pooling)"
        } else {
            "session ready (on-demand)"
        };
        let stats = measure(label, 50, n, || {
            i += 1;
            let s = rt
                .session(SessionSpec::new(
                    "b",
                    dir.path().join(format!("{pooling}-{i}")),
                ))
                .expect("session");
            std::hint::black_box(&s);
            drop(s);
        });
        println!("{}", stats.row());
    }

    // Room for the 1,000 idle sessions plus the others alive at that point.
    let config = RuntimeConfig {
        engine: EngineConfig {
            max_instances: 1200,
            ..Default::default()
        },
        ..Default::default()
    };
    let rt = Runtime::new(config).expect("runtime");
    let session = rt
        .session(SessionSpec::new("bench", dir.path().join("main")))
        .expect("session");
    let ws = session.workspace_dir().to_path_buf();
    std::fs::write(ws.join("file4k.txt"), "abcdefghijklmno\n".repeat(256)).expect("write");
    let tree = ws.join("tree");
    for i in 0..1000 {
        let d = tree.join(format!("d{}", i % 20));
        std::fs::create_dir_all(&d).expect("mkdir");
        let body =
            format!("line one of file {i}\nfn main() {{ println!(\"needle {i}\"); }}\nlast line\n");
        std::fs::write(d.join(format!("f{i}.rs")), body).expect("write");
    }

    header("Tool calls (one session, component already instantiated)");
    let read = ToolCall::new("t", "read", json!({"file_path": "file4k.txt"}));
    let stats = measure("read 4 KiB (blocking API)", 100, n, || {
        let r = session.call_file_tool_blocking(&read).expect("tool");
        assert!(!r.is_error);
    });
    println!("{}", stats.row());

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let stats = measure("read 4 KiB (async call_tool)", 100, n, || {
        let r = tokio.block_on(session.call_tool(&read)).expect("tool");
        assert!(!r.is_error);
    });
    println!("{}", stats.row());

    let grep = ToolCall::new(
        "t",
        "grep",
        json!({"pattern": "needle 99[0-9]", "path": "tree"}),
    );
    let stats = measure("grep over 1,000 files", 3, (n / 20).max(20), || {
        let r = session.call_file_tool_blocking(&grep).expect("tool");
        assert!(!r.is_error);
    });
    println!("{}", stats.row());

    let mut i = 0u64;
    let stats = measure("session ready + first read 4 KiB", 20, n / 2, || {
        i += 1;
        let root = dir.path().join(format!("first-{i}"));
        let ws = root.join("workspace");
        std::fs::create_dir_all(&ws).expect("mkdir");
        std::fs::write(ws.join("file4k.txt"), "abcdefghijklmno\n".repeat(256)).expect("write");
        let s = rt.session(SessionSpec::new("b", root)).expect("session");
        let r = s.call_file_tool_blocking(&read).expect("tool");
        assert!(!r.is_error);
    });
    println!("{}", stats.row());

    burst_and_idle(&rt, dir.path());

    bash(&tokio, dir.path(), (n / 10).max(50));

    header("Baseline: same component through bare wasmtime + wasmtime-wasi");
    baseline::run(n, &ws);
    println!("\ncompilations during the whole run: {}", rt.compilations());
}
