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

fn main() {
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

    let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
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

    header("Baseline: same component through bare wasmtime + wasmtime-wasi");
    baseline::run(n, &ws);
    println!("\ncompilations during the whole run: {}", rt.compilations());
}
