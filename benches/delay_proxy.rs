//! `delay-proxy`: a loopback TCP proxy that puts a network distance between a worker and the
//! fake control plane, for `benches/side_by_side.py --rtt-ms N`.
//!
//! ```text
//! delay-proxy --upstream 127.0.0.1:41234 --rtt-ms 150
//! {"listen":"127.0.0.1:45678","upstream":"127.0.0.1:41234","rtt_ms":150}
//! ```
//!
//! Every byte is delivered `rtt_ms / 2` after the proxy read it, in each direction, in order
//! (each chunk read is stamped and written when its time comes; the writer never reorders).
//! A new connection also pays the TCP handshake's round trip: nothing is forwarded in either
//! direction until `rtt_ms` after the accept, so the first request on a new connection arrives
//! 1.5 round trips after `connect()` began, as over a real network. Bandwidth is not limited.
//! TLS passes through untouched (the proxy sees only bytes), so a TLS 1.3 handshake costs its
//! real one round trip on top.
//!
//! Loopback only: the listen address and the upstream must both be in 127.0.0.0/8 (or `::1`);
//! anything else is refused at start. It runs until killed.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Loopback TCP proxy delaying every byte by rtt/2 each way")]
struct Args {
    /// Address to forward to (loopback only).
    #[arg(long)]
    upstream: SocketAddr,
    /// Round-trip time to add, in milliseconds (each direction gets half).
    #[arg(long)]
    rtt_ms: f64,
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// Chunks in flight per direction before the reader waits (bounds memory, not bandwidth).
const IN_FLIGHT_CHUNKS: usize = 4096;

enum Chunk {
    Data(Instant, Vec<u8>),
    Eof(Instant),
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    for (what, addr) in [("--listen", args.listen), ("--upstream", args.upstream)] {
        if !addr.ip().is_loopback() {
            return Err(format!("{what} {addr}: only loopback addresses are allowed").into());
        }
    }
    if !(args.rtt_ms.is_finite() && args.rtt_ms >= 0.0) {
        return Err("--rtt-ms must be a non-negative number".into());
    }
    let rtt = Duration::from_secs_f64(args.rtt_ms / 1000.0);
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "{{\"listen\":\"{}\",\"upstream\":\"{}\",\"rtt_ms\":{}}}",
        listener.local_addr()?,
        args.upstream,
        args.rtt_ms
    );
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = args.upstream;
        tokio::spawn(async move {
            let accepted = Instant::now();
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            // The handshake's round trip: nothing moves before it is over.
            let open_at = accepted + rtt;
            tokio::join!(
                pipe(cr, sw, open_at, rtt / 2),
                pipe(sr, cw, open_at, rtt / 2)
            );
        });
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read (and not before `open_at`).
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, open_at: Instant, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<Chunk>(IN_FLIGHT_CHUNKS);
    let reader = async move {
        tokio::time::sleep_until(open_at).await;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Chunk::Eof(Instant::now() + delay)).await;
                    return;
                }
                Ok(n) => {
                    let chunk = Chunk::Data(Instant::now() + delay, buf[..n].to_vec());
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Chunk::Data(due, bytes) => {
                    tokio::time::sleep_until(due).await;
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Chunk::Eof(due) => {
                    tokio::time::sleep_until(due).await;
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
