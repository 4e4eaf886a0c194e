//! The per-session cost of the session shape (`[runtime.shape]`): cgroups (CPU quota,
//! CPU/memory accounting, memory and pids caps) and the disk cap (a loop-mounted ext4
//! image per session), side by side in one run.
//!
//! `cargo bench -p wasm-sandbox-benches --bench shape` prints one table with, for each
//! configuration, the time to a ready session (`Runtime::session`), to the answer of the
//! session's first `echo hi` (lazy bash start included), and the teardown (`close` +
//! drop: cgroup removal, unmount). The configurations are interleaved per iteration so
//! they see the same machine state. `BENCH_ITERS` sets the count (default 100).

use serde_json::json;
use std::time::{Duration, Instant};
use wasm_sandbox_benches::{Stats, header, iters};
use wasm_sandbox_runtime::{Runtime, RuntimeConfig, SessionSpec, ToolCall};

struct Variant {
    name: &'static str,
    rt: Runtime,
    ready: Vec<Duration>,
    first_bash: Vec<Duration>,
    teardown: Vec<Duration>,
}

fn main() {
    wasm_sandbox_native::run_as_init_if_invoked();
    wasm_sandbox_runtime::run_as_compiler_if_invoked();
    let n = iters(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let _enter = tokio.enter();
    let make = |name: &'static str, cgroups: bool, disk: bool| {
        let mut config = RuntimeConfig::default();
        config.bash.init_path = std::env::current_exe().ok();
        config.bash.use_cgroups = cgroups;
        if disk {
            config.shape.disk_bytes = Some(1 << 30);
            config.shape.disk_inodes = Some(65_536);
        }
        let rt = Runtime::new(config).expect("runtime");
        let r = rt.sandbox_report();
        eprintln!(
            "{name}: cpu {:?}, memory {:?}, pids {:?}, disk {:?} {}",
            r.cpu_limit,
            r.memory_limit,
            r.pids_limit,
            r.disk_limit,
            r.shape.disk_problem.as_deref().unwrap_or("")
        );
        Variant {
            name,
            rt,
            ready: Vec::new(),
            first_bash: Vec::new(),
            teardown: Vec::new(),
        }
    };
    let mut variants = [
        make("no cgroups, no disk cap", false, false),
        make("cgroups (cpu, cpuacct, memory, pids)", true, false),
        make("cgroups + disk cap (1 GiB loop ext4)", true, true),
    ];
    let echo = ToolCall::new("t", "bash", json!({"command": "echo hi"}));
    for i in 0..n + 3 {
        for (k, v) in variants.iter_mut().enumerate() {
            let root = dir.path().join(format!("s-{k}-{i}"));
            let t = Instant::now();
            let s = v.rt.session(SessionSpec::new("b", &root)).expect("session");
            let ready = t.elapsed();
            let r = tokio.block_on(s.call_tool(&echo)).expect("tool");
            let first = t.elapsed();
            assert_eq!(r.text_content(), "hi", "{r:?}");
            let t = Instant::now();
            tokio.block_on(s.close());
            drop(s);
            let down = t.elapsed();
            let _ = std::fs::remove_dir_all(&root);
            if i >= 3 {
                v.ready.push(ready);
                v.first_bash.push(first);
                v.teardown.push(down);
            }
        }
    }
    header("Session shape: per-session cost (interleaved, same run)");
    for v in variants {
        for (what, samples) in [
            ("session ready", v.ready),
            ("ready + first `echo hi` (lazy bash start)", v.first_bash),
            ("teardown (close + drop)", v.teardown),
        ] {
            println!(
                "{}",
                Stats::from_samples(&format!("{}: {what}", v.name), samples).row()
            );
        }
    }
}
