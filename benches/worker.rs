//! The worker end to end on loopback: the real worker (`wasm-sandbox-worker`)
//! with the real sandbox runtime, against the fake control plane in the same
//! process.
//!
//! `cargo bench -p wasm-sandbox-benches --bench worker` prints:
//! * claim → first tool result: from the worker's `ack` of an item to the
//!   fake receiving the session's first `user.tool_result` (p50/p99);
//! * sessions per second at concurrency 1 and 8 (each session: one `write`
//!   tool call, an idle turn end, termination, teardown, stop).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use wasm_sandbox_benches::{Stats, header};
use wasm_sandbox_fake_control_plane::{Endpoint, FakeConfig, FakeControlPlane, Scenario};
use wasm_sandbox_runtime::{Runtime, RuntimeConfig};
use wasm_sandbox_worker::core_adapter::CoreProvider;
use wasm_sandbox_worker::metrics::Metrics;
use wasm_sandbox_worker::secret::Secret;
use wasm_sandbox_worker::worker::{Shutdown, Worker, WorkerConfig};

fn main() {
    wasm_sandbox_native::run_as_init_if_invoked();
    wasm_sandbox_runtime::run_as_compiler_if_invoked();
    let sessions: usize = std::env::var("BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let mut config = RuntimeConfig::default();
    config.bash.init_path = std::env::current_exe().ok();
    let runtime = Runtime::new(config).expect("runtime");
    header("Worker on loopback (fake control plane in-process)");
    for concurrency in [1usize, 8] {
        tokio.block_on(run(&runtime, concurrency, sessions));
    }
}

async fn run(runtime: &Runtime, concurrency: usize, n: usize) {
    let fake = FakeControlPlane::start(FakeConfig::default())
        .await
        .expect("fake");
    let scenario = r#"{"name": "bench", "steps": [
        {"tool_use": {"name": "write", "input": {"file_path": "out.txt", "content": "x"}}},
        {"idle": {"stop_reason": "end_turn"}},
        "terminate"]}"#;
    let ids: Vec<(String, String)> = (0..n)
        .map(|_| fake.enqueue_session(Scenario::from_json(scenario).expect("scenario")))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = WorkerConfig::new(
        fake.url(),
        fake.environment_id(),
        Secret::new(fake.environment_key()),
    );
    cfg.workdir = dir.path().to_owned();
    cfg.concurrency = concurrency;
    cfg.exit_after_items = Some(n);
    cfg.poll.empty_sleep_min = Duration::from_millis(5);
    cfg.poll.empty_sleep_max = Duration::from_millis(10);
    cfg.runner.max_idle = Some(Duration::from_millis(200));
    let worker = Worker::new(
        cfg,
        CoreProvider::new(runtime.clone()),
        Arc::new(Metrics::new()),
    )
    .expect("worker");
    let t0 = Instant::now();
    worker.run(Shutdown::new()).await.expect("worker run");
    let elapsed = t0.elapsed();

    let requests = fake.requests();
    let mut acked: HashMap<String, SystemTime> = HashMap::new();
    let mut first_result: HashMap<String, SystemTime> = HashMap::new();
    for r in &requests {
        match r.endpoint {
            Some(Endpoint::Ack) => {
                if let Some((w, _)) = ids.iter().find(|(w, _)| r.path.contains(w.as_str())) {
                    acked.entry(w.clone()).or_insert(r.at);
                }
            }
            Some(Endpoint::EventsSend) if r.method == "POST" => {
                let is_result = r
                    .body
                    .as_ref()
                    .is_some_and(|b| b.to_string().contains("user.tool_result"));
                if let Some((_, s)) = ids.iter().find(|(_, s)| r.path.contains(s.as_str()))
                    && is_result
                {
                    first_result.entry(s.clone()).or_insert(r.at);
                }
            }
            _ => {}
        }
    }
    let samples: Vec<Duration> = ids
        .iter()
        .filter_map(|(w, s)| first_result.get(s)?.duration_since(*acked.get(w)?).ok())
        .collect();
    let complete = samples.len();
    let stats = Stats::from_samples(
        &format!("claim → first tool result, concurrency {concurrency}"),
        samples,
    );
    println!("{}", stats.row());
    println!(
        "| sessions/s at concurrency {concurrency} ({n} sessions, {complete} with a result) | {n} | — | — | {:.1} sessions/s |",
        n as f64 / elapsed.as_secs_f64()
    );
}
