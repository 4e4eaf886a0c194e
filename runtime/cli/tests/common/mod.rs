//! Helpers shared by the tests that run `wasm-sandbox serve` as a real process against the
//! fake control plane (`serve`, `persist`, `usage_sink`, `shape`, `ops`).
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wasm_sandbox_fake_control_plane::Handle;

/// `wasm-sandbox serve` against `fake` with its work directory at `workdir` and the
/// environment key in its environment, stdout discarded; callers add their own flags,
/// environment and stderr, then spawn.
pub fn serve_command(fake: &Handle, workdir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"));
    cmd.args(["serve", "--base-url", fake.url(), "--environment-id"])
        .arg(fake.environment_id())
        .arg("--workdir")
        .arg(workdir)
        .env("ANTHROPIC_ENVIRONMENT_KEY", fake.environment_key())
        .stdout(Stdio::null());
    cmd
}

/// The flags that make a worker give up idle sessions quickly and log JSON.
pub const FAST_JSON: [&str; 4] = ["--max-idle", "300ms", "--log-format", "json"];

/// Polls `f` every 20 ms until it holds, failing the test after 60 s.
pub async fn wait_until(what: &str, f: impl FnMut() -> bool) {
    wait_until_for(what, Duration::from_secs(60), f).await;
}

/// Polls `f` every 20 ms until it holds, failing the test after `limit`.
pub async fn wait_until_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` every 20 ms (blocking the thread) until it returns `Some`, for up to 60 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback address that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET path` over plain HTTP/1.0: (status, body); `None` while nothing listens.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_owned()))
}
