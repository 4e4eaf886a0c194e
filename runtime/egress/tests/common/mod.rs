//! Helpers shared by the egress integration tests (`proxy`, `upstream_tls`).
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Reads one request head from `s` and answers `200` with a body of `tag`, a newline, the
/// head (request line and headers) and a newline; then closes. Gives up quietly when the
/// peer goes away first.
pub async fn answer_with_head<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, tag: &str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = format!("{tag}\n{}\n", String::from_utf8_lossy(&buf[..end]));
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// Sends `request` on a fresh connection to the proxy socket; returns the whole answer
/// (the proxy is asked to close after one response), failing the test after 10 s.
pub async fn ask(socket: &Path, request: &str) -> String {
    let mut s = UnixStream::connect(socket).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy answered in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
