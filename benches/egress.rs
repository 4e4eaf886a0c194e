//! Network egress proxy (`[runtime.networking]`) vs a direct connection, on loopback.
//!
//! `cargo bench -p wasm-sandbox-benches --bench egress` prints, side by side in one run:
//! * a 100 MB download from a loopback HTTP server: direct TCP; through the session
//!   proxy as a forward proxy (absolute-form GET, plain `http://`); through a `CONNECT`
//!   tunnel (what `https://` uses); and through the in-sandbox relay (TCP → unix socket,
//!   `splice(2)` as in `wasm_sandbox_native::net`) plus either, i.e. the whole paths
//!   bash sees; throughput and the ratio to direct (goal ≥ 0.8×);
//! * per-connection set-up: connect, send a GET, read a 2-byte answer (p50/p99),
//!   direct vs through the proxy (the proxy's overhead: policy, static resolve,
//!   connect to the destination; goal ≤ 1 ms p50 on loopback).
//!
//! `BENCH_MB` (default 100) sets the download size, `BENCH_ITERS` (default 500) the
//! set-up samples.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use wasm_sandbox_benches::{Stats, header, iters};
use wasm_sandbox_egress::{Egress, NetworkingConfig};

/// Serves `GET /<n>` with `n` bytes of body.
async fn server() -> u16 {
    let l = TcpListener::bind(("127.0.0.2", 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head = loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break String::from_utf8_lossy(&buf[..end]).into_owned();
                    }
                };
                let n: usize = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.trim_start_matches('/').parse().ok())
                    .unwrap_or(2);
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
                let block = vec![b'x'; 256 << 10];
                let mut left = n;
                while left > 0 {
                    let k = left.min(block.len());
                    if s.write_all(&block[..k]).await.is_err() {
                        return;
                    }
                    left -= k;
                }
            });
        }
    });
    port
}

/// Sends `req`, reads the whole answer; returns the byte count.
/// Opens a `CONNECT files.test:{port}` tunnel on `s`, reads past the proxy's answer, then
/// [`fetch`]es `req` through it.
async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, port: u16, req: &str) -> usize {
    s.write_all(format!("CONNECT files.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 128];
    let _ = s.read(&mut head).await.unwrap();
    fetch(s, req).await
}

async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, req: &str) -> usize {
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            return total;
        }
        total += n;
    }
}

/// The relay of the sandbox (TCP on loopback → the proxy's unix socket).
async fn relay(socket: std::path::PathBuf) -> u16 {
    let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let socket = Arc::new(socket);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let socket = socket.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(unix) = UnixStream::connect(&*socket).await else {
                    return;
                };
                let _ = tokio::try_join!(
                    wasm_sandbox_native::net::splice::pump(&tcp, &unix, |_| {}),
                    wasm_sandbox_native::net::splice::pump(&unix, &tcp, |_| {}),
                );
            });
        }
    });
    port
}

fn main() {
    let mb: usize = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let n_setup = iters(500);
    // Client and server on one runtime thread, the proxy and the relay on another
    // (as in the worker, where the proxy is not on the client's threads); on a
    // 2-core machine each side then has a core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("egress-proxy")
        .enable_all()
        .build()
        .unwrap();
    let port = rt.block_on(server());
    let dir = tempfile::tempdir().unwrap();
    let config: NetworkingConfig = toml::from_str(&format!(
        "type = \"limited\"\nallowed_hosts = [\"127.0.0.2/32\"]\nports = [{port}]\nhosts = {{ \"files.test\" = \"127.0.0.2\" }}"
    ))
    .unwrap();
    let egress = Egress::new(&config, Vec::new()).unwrap();
    let socket = dir.path().join("proxy.sock");
    let (proxy, relay_port) = proxy_rt.block_on(async {
        let proxy = egress.serve_session("bench", &socket, None).unwrap();
        (proxy, relay(socket.clone()).await)
    });
    rt.block_on(async move {
        let bytes = mb << 20;

        println!("\n### Download of {mb} MiB from a loopback server (best of 3)\n");
        println!("| path | MiB/s | ratio to direct |\n|---|---|---|");
        let direct_req = format!("GET /{bytes} HTTP/1.1\r\nhost: files.test\r\n\r\n");
        let fwd_req =
            format!("GET http://files.test:{port}/{bytes} HTTP/1.1\r\nhost: files.test:{port}\r\nconnection: close\r\n\r\n");
        let mut direct_rate = 0.0;
        for path in [
            "direct TCP",
            "forward proxy (unix socket)",
            "CONNECT tunnel",
            "relay + forward proxy (bash, http://)",
            "relay + CONNECT tunnel (bash, https://)",
        ] {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                let got = match path {
                    "direct TCP" => {
                        fetch(TcpStream::connect(("127.0.0.2", port)).await.unwrap(), &direct_req).await
                    }
                    "forward proxy (unix socket)" => {
                        fetch(UnixStream::connect(&socket).await.unwrap(), &fwd_req).await
                    }
                    "CONNECT tunnel" => {
                        tunnel(UnixStream::connect(&socket).await.unwrap(), port, &direct_req).await
                    }
                    "relay + forward proxy (bash, http://)" => {
                        fetch(TcpStream::connect(("127.0.0.1", relay_port)).await.unwrap(), &fwd_req).await
                    }
                    _ => {
                        let s = TcpStream::connect(("127.0.0.1", relay_port)).await.unwrap();
                        tunnel(s, port, &direct_req).await
                    }
                };
                assert!(got >= bytes, "{path}: {got} bytes");
                best = best.min(t.elapsed().as_secs_f64());
            }
            let rate = mb as f64 / best;
            if path == "direct TCP" {
                direct_rate = rate;
            }
            println!("| {path} | {rate:.0} | {:.2}× |", rate / direct_rate);
        }

        header("Per-connection set-up: connect, GET, 2-byte answer");
        let tiny_direct = "GET /2 HTTP/1.1\r\nhost: files.test\r\n\r\n".to_owned();
        let tiny_fwd = format!("GET http://files.test:{port}/2 HTTP/1.1\r\nhost: files.test:{port}\r\nconnection: close\r\n\r\n");
        let mut rows = Vec::new();
        for path in [
            "direct TCP",
            "forward proxy (unix socket)",
            "relay + forward proxy (bash, http://)",
        ] {
            let mut samples: Vec<Duration> = Vec::with_capacity(n_setup);
            for _ in 0..n_setup {
                let t = Instant::now();
                match path {
                    "direct TCP" => {
                        fetch(TcpStream::connect(("127.0.0.2", port)).await.unwrap(), &tiny_direct).await
                    }
                    "forward proxy (unix socket)" => {
                        fetch(UnixStream::connect(&socket).await.unwrap(), &tiny_fwd).await
                    }
                    _ => {
                        fetch(TcpStream::connect(("127.0.0.1", relay_port)).await.unwrap(), &tiny_fwd).await
                    }
                };
                samples.push(t.elapsed());
            }
            let s = Stats::from_samples(path, samples);
            println!("{}", s.row());
            rows.push(s);
        }
        let overhead = rows[2].p50.saturating_sub(rows[0].p50);
        println!(
            "\nset-up overhead of the whole path (p50): {:.1} µs",
            overhead.as_secs_f64() * 1e6
        );
        println!("session usage after the run: {:?}", proxy.usage());
    });
    drop(proxy_rt);
}
