//! Usage records end to end: the worker with the real core sandbox against the fake control
//! plane writes one record per served item into its ledger before the item is stopped, with
//! the tool counts, active time, wasm CPU and the bash cgroup's CPU, and counts it in
//! `/metrics`.
//!
//! The bash CPU check compares the record's cgroup reading with the CPU time of the same work
//! measured by the kernel's per-process accounting: the sandbox runs the busy loop as
//! `bash -c 'LOOP; times'`, whose `times` prints that inner shell's own user and system time
//! (`times(2)`, the same counters as `getrusage(RUSAGE_SELF)`). Both numbers describe the one
//! process that did the work, in the same run, so a contended host (two cores shared with
//! other tests) changes neither relative to the other; the loop is ~1 s of CPU, so what else
//! the cgroup charges (the sandbox shell forking the inner one, a few ms) stays far below the
//! 10 % tolerance of the issue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wasm_sandbox_fake_control_plane::{Endpoint, Scenario, WorkState};
use wasm_sandbox_worker::core_adapter::CoreProvider;
use wasm_sandbox_worker::metrics::Metrics;
use wasm_sandbox_worker::usage::UsageFileConfig;
use wasm_sandbox_worker::worker::{Shutdown, Worker};

const LOOP: &str = "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; echo looped";

/// The busy loop in an inner shell that then prints its own CPU times (`times`).
fn loop_with_times() -> String {
    format!("bash -c '{LOOP}; times'")
}

/// The inner shell's own user + system time from `times` output after "looped": its first
/// line, as in `0m1.234s 0m0.005s`.
fn parse_times(output: &str) -> Option<f64> {
    let after = output.split("looped").nth(1)?;
    let line = after.lines().map(str::trim).find(|l| !l.is_empty())?;
    let secs = |t: &str| -> Option<f64> {
        let (m, s) = t.strip_suffix('s')?.split_once('m')?;
        Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    };
    let mut parts = line.split_whitespace();
    Some(secs(parts.next()?)? + secs(parts.next()?)?)
}

#[test]
fn times_output_parses() {
    assert_eq!(
        parse_times("looped\n0m1.250s 0m0.250s\n0m0.000s 0m0.000s\n"),
        Some(1.5)
    );
    assert_eq!(parse_times("1m0.500s 0m0.000s"), None);
    assert_eq!(parse_times("looped\n1m0.500s 0m0.000s"), Some(60.5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_per_item_in_the_ledger_before_the_stop() {
    let fake = crate::worker::fake().await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::from_json(
        &json!({
            "name": "usage",
            "steps": [
                {"tool_use": {"label": "write", "name": "write",
                              "input": {"file_path": "a.txt", "content": "hello\n"}}},
                {"tool_use": {"label": "read", "name": "read", "input": {"file_path": "a.txt"}}},
                {"tool_use": {"label": "loop", "name": "bash", "input": {"command": loop_with_times()},
                              "expect": {"is_error": false, "contains": ["looped"]}}},
                {"idle": {"stop_reason": "end_turn"}},
                "terminate"
            ]
        })
        .to_string(),
    )
    .unwrap();
    let (work_id, session_id) = fake.enqueue_session(scenario);
    let mut cfg = crate::worker::config(&fake, dir.path());
    cfg.usage = Some(UsageFileConfig::default());
    let metrics = Arc::new(Metrics::new());
    let provider = CoreProvider::new(crate::common::runtime().clone());
    let worker = Worker::new(cfg, provider, Arc::clone(&metrics)).expect("worker");
    let ledger = dir.path().join("usage");
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let run = tokio::spawn(async move { worker.run(s).await.map_err(|e| format!("{e:#}")) });

    // The moment the stop arrives, the record is already in the ledger.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fake.requests_to(Endpoint::Stop).is_empty() {
        assert!(Instant::now() < deadline, "no stop");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let at_stop = wasm_sandbox_usage::read_all(&ledger).unwrap();
    assert_eq!(at_stop.len(), 1, "the record precedes the stop");
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("worker finished")
        .unwrap()
        .unwrap();
    assert!(fake.scenario_report(&session_id).is_ok());
    assert_eq!(fake.work_state(&work_id), Some(WorkState::Stopped));

    let records = wasm_sandbox_usage::read_all(&ledger).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.schema, wasm_sandbox_usage::SCHEMA_VERSION);
    assert_eq!(r.environment_id, fake.environment_id());
    assert_eq!(
        (r.work_id.as_str(), r.session_id.as_str()),
        (work_id.as_str(), session_id.as_str())
    );
    assert_eq!(r.worker_id, "w-e2e");
    assert!(
        r.record_id
            .starts_with(&format!("{}/{session_id}/{work_id}/", r.environment_id))
    );
    assert_eq!(
        r.tool_calls,
        [("bash", 1), ("read", 1), ("write", 1)]
            .map(|(k, v)| (k.to_owned(), v))
            .into()
    );
    assert!(
        r.claimed_at < r.torn_down_at,
        "{} {}",
        r.claimed_at,
        r.torn_down_at
    );
    // The bash loop alone takes most of a second of wall time.
    assert!(r.active_ms >= 300, "active {} ms", r.active_ms);
    // The file tools ran guest code on a thread: some CPU, and no more than their wall time.
    assert!(r.cpu.wasm_tools > 0.0, "{:?}", r.cpu);
    assert!(
        r.cpu.wasm_tools <= r.active_ms as f64 / 1000.0,
        "{:?}",
        r.cpu
    );
    assert_eq!(r.cpu.wasm_run, 0.0);
    let shape = r.shape.expect("shape");
    assert_eq!(shape.vcpus, 4.0);
    assert_eq!(shape.memory_bytes, Some(4 << 30));
    assert_eq!(r.wasi_nn, wasm_sandbox_usage::NnUsage::default());

    let text = metrics.encode();
    let env = fake.environment_id();
    assert!(
        text.contains(&format!(
            "wasm_sandbox_usage_sessions_total{{environment=\"{env}\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains("wasm_sandbox_usage_active_seconds_total{environment="),
        "{text}"
    );

    // The bash CPU, against the same loop measured outside.
    let Some(bash) = r.cpu.bash else {
        eprintln!(
            "SKIPPED bash CPU check: this host gave the sandbox no cgroup CPU reading \
             (no writable cpuacct/cpu controller); record: {:?}",
            r.cpu
        );
        return;
    };
    let loop_result = fake
        .tool_results(&session_id)
        .into_iter()
        .find(|p| p.label.as_deref() == Some("loop"))
        .expect("the loop's result");
    let text: String = loop_result
        .content
        .iter()
        .filter_map(|c| c.get("text").and_then(|t| t.as_str()))
        .collect();
    let inner = parse_times(&text).unwrap_or_else(|| panic!("no `times` output in {text:?}"));
    let ratio = bash / inner;
    eprintln!(
        "bash loop CPU: cgroup {bash:.3} s, inner shell's times {inner:.3} s, ratio {ratio:.3}"
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "cgroup {bash:.3} s vs the loop's own times {inner:.3} s (ratio {ratio:.3})"
    );
    assert!((r.cpu.total - (bash + r.cpu.wasm_tools + r.cpu.wasm_run)).abs() < 1e-9);
    assert!(
        r.memory_peak_bytes.is_some_and(|m| m > 0),
        "{:?}",
        r.memory_peak_bytes
    );
}

/// `wasm-run` components and file tools run on worker threads, outside the bash cgroup: their
/// CPU is measured per thread and lands in the session's `wasm_run` / `wasm_tools` accounts,
/// with the calls counted (`wasm-run` is a bash call) and the time active.
#[test]
fn wasm_run_and_file_tool_cpu_are_counted_per_session() {
    let _g = crate::wasm_run::serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = crate::common::Fixture::new();
    let report = crate::common::runtime().sandbox_report();
    if !report.available || report.unsandboxed_fallback {
        eprintln!("SKIPPED: no bash sandbox here, so no wasm-run bridge");
        return;
    }
    let dir = f.ws().join("skills/wc");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("wordcount.wasm"), crate::wasm_run::wordcount()).unwrap();
    // ~8 MB of words: tens of milliseconds of guest CPU at least.
    let text = "alpha beta gamma delta epsilon\n".repeat(256 * 1024);
    std::fs::write(f.ws().join("big.txt"), &text).unwrap();

    let before = f.session.wasm_usage();
    assert_eq!(before.wasm_run_cpu, Duration::ZERO);
    let started = Instant::now();
    let (out, err) = crate::common::bash(
        &rt,
        &f.session,
        "wasm-run skills/wc/wordcount.wasm --top 1 big.txt",
    );
    let wall = started.elapsed();
    assert!(!err, "{out}");
    let grep = wasm_sandbox_runtime::ToolCall::new(
        "toolu_g",
        "grep",
        json!({"pattern": "epsilon", "path": "big.txt"}),
    );
    let r = rt.block_on(f.session.call_tool(&grep)).expect("grep");
    assert!(!r.is_error, "{}", r.text_content());

    let u = f.session.wasm_usage();
    assert!(
        u.wasm_run_cpu >= Duration::from_millis(5),
        "wasm-run CPU {:?}",
        u.wasm_run_cpu
    );
    assert!(
        u.wasm_run_cpu <= wall,
        "{:?} > wall {wall:?}",
        u.wasm_run_cpu
    );
    assert!(u.wasm_tools_cpu > Duration::ZERO, "{u:?}");
    assert_eq!(u.tool_calls.get("bash"), Some(&1));
    assert_eq!(u.tool_calls.get("grep"), Some(&1));
    assert!(u.active >= u.wasm_run_cpu, "{u:?}");
    eprintln!(
        "wasm-run CPU {:?}, file tools CPU {:?}, active {:?}",
        u.wasm_run_cpu, u.wasm_tools_cpu, u.active
    );
}

/// Review finding: `call_file_tool_blocking` (embedders, benchmarks) ran guest code without
/// counting the call or its active time; it is metered like `call_tool` now.
#[test]
fn a_blocking_file_tool_call_is_counted_with_its_active_time() {
    let f = crate::common::Fixture::new();
    std::fs::write(f.ws().join("x.txt"), "hello\n").unwrap();
    let before = f.session.wasm_usage();
    let r = f
        .session
        .call_file_tool_blocking(&wasm_sandbox_runtime::ToolCall::new(
            "toolu_r",
            "read",
            json!({"file_path": "x.txt"}),
        ))
        .expect("a file tool");
    assert!(!r.is_error, "{}", r.text_content());
    let after = f.session.wasm_usage();
    assert_eq!(
        after.tool_calls.get("read").copied().unwrap_or(0),
        before.tool_calls.get("read").copied().unwrap_or(0) + 1
    );
    assert!(after.active > before.active, "{before:?} -> {after:?}");
    assert!(after.wasm_tools_cpu > before.wasm_tools_cpu, "{after:?}");
}
