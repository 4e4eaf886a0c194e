//! Session snapshots (`[runtime.persistence]`): snapshot and restore time and bytes for a
//! `node_modules`-like workspace of many small files, against a local store (file://) and a
//! real S3 server on loopback (`s3s-fs` from `target/tools`, when installed).
//!
//! `cargo bench -p wasm-sandbox-benches --bench persist` prints one markdown table:
//! a first snapshot (everything uploaded), a checkpoint after one file changed (incremental),
//! a restore into empty directories, and the restore of a small workspace (what a claim adds
//! to the set-up that runs beside the ack). `PERSIST_BENCH_SIZES=10,200` (MB) picks sizes.
//! It asserts nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasm_sandbox_persist::{Persistence, PersistenceConfig, SessionState};

/// A `node_modules`-like tree of about `mb` MB: packages of 20 files, sizes 200 B – 16 KiB,
/// with a few 256 KiB bundles.
fn populate(ws: &Path, mb: u64) -> (u64, u64) {
    let target = mb << 20;
    let (mut bytes, mut files, mut x) = (0u64, 0u64, 0x2545_f491_4f6c_dd1du64);
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut pkg = 0;
    while bytes < target {
        let dir = ws.join(format!("node_modules/pkg{pkg}/lib"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..20 {
            let size = if f == 0 && pkg % 10 == 0 {
                256 << 10
            } else {
                200 + rnd() % (16 << 10)
            };
            let data: Vec<u8> = (0..size).map(|_| (rnd() % 95 + 32) as u8).collect();
            std::fs::write(dir.join(format!("f{f}.js")), data).unwrap();
            bytes += size;
            files += 1;
        }
        pkg += 1;
    }
    (bytes, files)
}

fn dirs(base: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ws = base.join(name).join("workspace");
    let out = base.join(name).join("outputs");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    (ws, out)
}

fn state(id: &str) -> SessionState {
    SessionState::new(id)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn mb(b: u64) -> String {
    format!("{:.1}", b as f64 / (1 << 20) as f64)
}

async fn run(store_name: &str, p: &Persistence, base: &Path, sizes: &[u64]) {
    for &size in sizes {
        let id = format!("sesn_bench_{size}");
        let (ws, out) = dirs(base, &format!("src{size}"));
        let (bytes, files) = populate(&ws, size);
        // A workspace that settled (racy-clean rule: files changed within this window of a walk
        // are read again by the next one): the steady state of a long session.
        std::thread::sleep(wasm_sandbox_persist::walk::RACY_WINDOW);
        let mut st = state(&id);
        let t = Instant::now();
        let o = p.snapshot(&mut st, &ws, &out, &[], "bench").await.unwrap();
        let full = t.elapsed();
        println!(
            "| {store_name} | {} MB, {files} files | first snapshot | {} | {} uploaded in {} objects |",
            mb(bytes),
            ms(full),
            mb(o.stats.uploaded_bytes),
            o.stats.uploaded_objects
        );
        std::fs::write(ws.join("node_modules/pkg1/lib/f3.js"), "changed").unwrap();
        let t = Instant::now();
        let o = p.snapshot(&mut st, &ws, &out, &[], "bench").await.unwrap();
        println!(
            "| {store_name} | {} MB, {files} files | checkpoint, 1 file changed | {} | {} KiB uploaded in {} objects |",
            mb(bytes),
            ms(t.elapsed()),
            o.stats.uploaded_bytes / 1024,
            o.stats.uploaded_objects
        );
        let (ws2, out2) = dirs(base, &format!("dst{size}"));
        let t = Instant::now();
        let (mut restored, outcome) = p.restore(&id, &ws2, &out2).await;
        let el = t.elapsed();
        let fetched = match outcome {
            wasm_sandbox_persist::RestoreOutcome::Restored { stats, .. } => stats.fetched_bytes,
            other => panic!("restore: {other:?}"),
        };
        println!(
            "| {store_name} | {} MB, {files} files | restore | {} | {} fetched |",
            mb(bytes),
            ms(el),
            mb(fetched)
        );
        // The first checkpoint after a restore: the restored files are too recent to be
        // trusted unread (racy-clean), so they are read and hashed again; nothing is uploaded.
        let t = Instant::now();
        let o = p
            .snapshot(&mut restored, &ws2, &out2, &[], "bench")
            .await
            .unwrap();
        println!(
            "| {store_name} | {} MB, {files} files | first checkpoint after a restore | {} | {} KiB uploaded in {} objects |",
            mb(bytes),
            ms(t.elapsed()),
            o.stats.uploaded_bytes / 1024,
            o.stats.uploaded_objects
        );
        p.delete_session(&id).await.unwrap();
    }
    // A small workspace (a cloned script, a few files): what a claim's set-up adds.
    let (ws, out) = dirs(base, "small");
    for i in 0..10 {
        std::fs::write(ws.join(format!("f{i}.py")), vec![b'x'; 2000]).unwrap();
    }
    let mut st = state("sesn_bench_small");
    p.snapshot(&mut st, &ws, &out, &[], "bench").await.unwrap();
    let mut samples = Vec::new();
    for i in 0..20 {
        let (ws2, out2) = dirs(base, &format!("small{i}"));
        let t = Instant::now();
        p.restore("sesn_bench_small", &ws2, &out2).await;
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "| {store_name} | 20 KB, 10 files | restore (claim set-up), p50 of 20 | {} | p99 {} ms |",
        ms(samples[9]),
        ms(samples[19])
    );
    p.delete_session("sesn_bench_small").await.unwrap();
}

fn main() {
    let sizes: Vec<u64> = std::env::var("PERSIST_BENCH_SIZES")
        .unwrap_or_else(|_| "10,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    println!("| store | workspace | operation | ms | bytes |");
    println!("|---|---|---|---|---|");
    let store = tmp.path().join("store");
    let p = Persistence::open(&PersistenceConfig::new(format!(
        "file://{}",
        store.display()
    )))
    .unwrap();
    rt.block_on(run("file://", &p, &tmp.path().join("local"), &sizes));

    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin/s3s-fs");
    if !bin.exists() {
        eprintln!("s3: skipped (target/tools/bin/s3s-fs missing; scripts/test.sh installs it)");
        return;
    }
    let data = tmp.path().join("s3data");
    std::fs::create_dir_all(data.join("bench")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(&bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            "AK",
            "--secret-key",
            "SK",
        ])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: single-threaded here; the runtime's threads do not read the environment yet.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AK");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "SK");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let mut cfg = PersistenceConfig::new("s3://bench/p");
    cfg.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let p = Persistence::open(&cfg).unwrap();
    rt.block_on(run(
        "s3 (s3s-fs, loopback)",
        &p,
        &tmp.path().join("s3"),
        &sizes,
    ));
    let _ = child.kill();
    let _ = child.wait();
}
