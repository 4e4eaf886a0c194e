//! What a usage record costs the worker: the ledger append (one `write` + `fdatasync`, on the
//! teardown path before the stop) beside the same write without the sync, and the reads of
//! `wasm-sandbox usage` and the sink. Prints a table; asserts nothing.
//!
//! `BENCH_ITERS=2000 cargo bench -p wasm-sandbox-usage --bench ledger`
//! (the ledger lives in a temp dir under `$BENCH_DIR`, default `target/`, so it measures the
//! disk the workdir would be on, not a tmpfs).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use wasm_sandbox_usage::{
    CpuSeconds, Ledger, NetworkUsage, NnUsage, Position, SCHEMA_VERSION, Shape, UsageRecord,
    read_all, read_from, summarise,
};

fn record(n: usize) -> UsageRecord {
    UsageRecord {
        schema: SCHEMA_VERSION,
        record_id: format!(
            "env_01ABCDEF/sesn_01ABCDEFGH{n:08}/work_01ABCDEFGH{n:08}/0123456789abcdef"
        ),
        environment_id: "env_01ABCDEF".into(),
        work_id: format!("work_01ABCDEFGH{n:08}"),
        session_id: format!("sesn_01ABCDEFGH{n:08}"),
        worker_id: "worker-host-0123456789ab".into(),
        claimed_at: format!("2026-12-{:02}T10:00:00.000Z", 1 + n % 28),
        torn_down_at: format!("2026-12-{:02}T10:05:00.000Z", 1 + n % 28),
        active_ms: 12_345,
        cpu: CpuSeconds::new(Some(3.25), 0.125, 0.5),
        memory_peak_bytes: Some(512 << 20),
        disk_peak_bytes: Some(64 << 20),
        tool_calls: BTreeMap::from([("bash".to_owned(), 12), ("read".to_owned(), 4)]),
        wasi_nn: NnUsage::default(),
        network: Some(NetworkUsage {
            bytes_up: 1000,
            bytes_down: 100_000,
            connections: 3,
            denials: 0,
        }),
        shape: Some(Shape {
            vcpus: 4.0,
            memory_bytes: Some(4 << 30),
        }),
    }
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = v.iter().map(|d| us(*d)).sum::<f64>() / v.len() as f64;
    (
        us(v[v.len() / 2]),
        us(v[(v.len() * 99 / 100).min(v.len() - 1)]),
        mean,
    )
}

fn row(what: &str, n: usize, v: Vec<Duration>) {
    let (p50, p99, mean) = stats(v);
    println!("| {what} | {n} | {p50:.1} | {p99:.1} | {mean:.1} |");
}

/// Appends the ledger's lines for records `0..iters` to a plain file at `path` (no reserve,
/// no lock), each followed by `fdatasync` when `sync`; the time of each append.
fn append_plain(path: &std::path::Path, iters: usize, sync: bool) -> Vec<Duration> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut t = Vec::with_capacity(iters);
    for n in 0..iters {
        let r = record(n);
        let s = Instant::now();
        let mut line = serde_json::to_vec(&r).unwrap();
        line.push(b'\n');
        file.write_all(&line).unwrap();
        if sync {
            file.sync_data().unwrap();
        }
        t.push(s.elapsed());
    }
    t
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let base = std::env::var_os("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target")
        });
    std::fs::create_dir_all(&base).unwrap();
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let dir = tmp.path().join("usage");
    let line_len = serde_json::to_vec(&record(0)).unwrap().len() + 1;

    println!("| measurement | n | p50 µs | p99 µs | mean µs |");
    println!("|---|---|---|---|---|");

    let mut ledger = Ledger::open(&dir, 64 << 20).unwrap();
    let mut t = Vec::with_capacity(iters);
    for n in 0..iters {
        let r = record(n);
        let s = Instant::now();
        ledger.append(&r).unwrap();
        t.push(s.elapsed());
    }
    row(
        &format!("ledger append, {line_len} B record, write + fdatasync"),
        iters,
        t,
    );

    // Baseline: the same lines appended without a sync.
    let t = append_plain(&tmp.path().join("nosync.jsonl"), iters, false);
    row("**baseline**: same line, write only (no sync)", iters, t);

    // Baseline: write + fdatasync on a plain file without the ledger's 1 MiB `fallocate`
    // reserve (what the ledger did before the reserve; same disk, same run).
    let t = append_plain(&tmp.path().join("noreserve.jsonl"), iters, true);
    row(
        "**baseline**: same line, write + fdatasync, no reserve",
        iters,
        t,
    );

    // Grow the ledger to 10,000 records for the read side.
    for n in iters..10_000 {
        ledger.append(&record(n)).unwrap();
    }
    let total = 10_000.max(iters);
    let mut t = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        let all = read_all(&dir).unwrap();
        t.push(s.elapsed());
        assert_eq!(all.len(), total);
    }
    row(&format!("read_all of {total} records"), 20, t);
    let all = read_all(&dir).unwrap();
    let mut t = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        let rows = summarise(&all, None);
        t.push(s.elapsed());
        assert!(!rows.is_empty());
    }
    row(
        &format!("summarise {total} records (wasm-sandbox usage)"),
        20,
        t,
    );
    let mut t = Vec::new();
    for _ in 0..200 {
        let s = Instant::now();
        let (e, _) = read_from(
            &dir,
            Position {
                segment: 1,
                offset: (line_len * (total - 64)) as u64,
            },
            64,
        )
        .unwrap();
        t.push(s.elapsed());
        assert_eq!(e.len(), 64);
    }
    row("sink batch: read_from cursor, 64 records", 200, t);
}
