//! `serve-fake`: runs the fake control plane as a process, for out-of-process drivers (the
//! SDK check in `tests/fake-control-plane/sdk_check/`, benchmarks of reference workers).
//!
//! ```text
//! cargo run -p wasm-sandbox-fake-control-plane --bin serve-fake -- \
//!     --scenario examples/sessions/all-tools.json
//! ```
//!
//! It prints one JSON line on stdout — `{"url", "environment_id", "environment_key",
//! "api_key", "ca_cert_pem", "enqueued": [{"work_id", "session_id", "scenario"}]}` — then
//! serves until SIGINT/SIGTERM. The `/_fake/*` admin API is on (see the crate docs of `admin`).
//!
//! `--tls` serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with a CA made at start-up: its PEM is
//! `ca_cert_pem` in that line (`null` without `--tls`), and `--ca-cert-out FILE` also writes it
//! to a file for clients to trust (`SSL_CERT_FILE`, `wasm-sandbox serve --ca-cert`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane, Scenario, TlsOptions};

#[derive(Parser)]
#[command(about = "Serve a fake self-hosted environment control plane")]
struct Args {
    /// Scenario file to enqueue at start (repeatable).
    #[arg(long)]
    scenario: Vec<PathBuf>,
    /// Enqueue every scenario this many times.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Environment id (default random).
    #[arg(long)]
    environment_id: Option<String>,
    /// Environment key (default random).
    #[arg(long)]
    environment_key: Option<String>,
    /// API key (default random).
    #[arg(long)]
    api_key: Option<String>,
    /// Lease TTL in seconds.
    #[arg(long, default_value_t = 60)]
    lease_ttl_seconds: u64,
    /// Answer stop with 200 + the work item instead of 204.
    #[arg(long)]
    stop_returns_work: bool,
    /// SSE keep-alive interval in milliseconds (0 = off).
    #[arg(long, default_value_t = 15_000)]
    ping_interval_ms: u64,
    /// Serve HTTPS with a self-signed CA made at start-up (ALPN: h2, http/1.1).
    #[arg(long)]
    tls: bool,
    /// With `--tls`: offer only http/1.1 by ALPN.
    #[arg(long, requires = "tls")]
    tls_http1_only: bool,
    /// With `--tls`: also write the CA certificate (PEM) to this file.
    #[arg(long, requires = "tls")]
    ca_cert_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let scenarios = args
        .scenario
        .iter()
        .map(Scenario::load)
        .collect::<Result<Vec<_>, _>>()?;
    let config = FakeConfig {
        addr: args.addr,
        environment_id: args.environment_id,
        environment_key: args.environment_key,
        api_key: args.api_key,
        lease_ttl_seconds: args.lease_ttl_seconds,
        stop_returns_work: args.stop_returns_work,
        sse_ping_interval: (args.ping_interval_ms > 0)
            .then(|| Duration::from_millis(args.ping_interval_ms)),
        admin_api: true,
        tls: args.tls.then_some(TlsOptions {
            alpn_http1_only: args.tls_http1_only,
        }),
        ..FakeConfig::default()
    };
    let fake = FakeControlPlane::start(config).await?;
    if let (Some(path), Some(pem)) = (&args.ca_cert_out, fake.ca_cert_pem()) {
        std::fs::write(path, pem)?;
    }
    let mut enqueued = Vec::new();
    for _ in 0..args.repeat {
        for s in &scenarios {
            let (work_id, session_id) = fake.enqueue_session(s.clone());
            enqueued
                .push(json!({"work_id": work_id, "session_id": session_id, "scenario": s.name}));
        }
    }
    let line = json!({
        "url": fake.url(),
        "environment_id": fake.environment_id(),
        "environment_key": fake.environment_key(),
        "api_key": fake.api_key(),
        "ca_cert_pem": fake.ca_cert_pem(),
        "enqueued": enqueued,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    fake.shutdown().await;
    Ok(())
}
