//! Unit tests of the proxy's internals.

use super::*;

fn closed_session() -> Arc<SessionCtx> {
    let cfg = NetworkingConfig {
        kind: crate::NetworkType::Unrestricted,
        ..NetworkingConfig::default()
    };
    let egress = Egress::with_env(&cfg, Vec::new(), |_| None).unwrap();
    let (shutdown, _) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(SessionCtx {
        egress,
        session: "sess-unit".into(),
        narrowing: None,
        counters: Arc::new(Counters::default()),
        shutdown,
        slots: Arc::new(tokio::sync::Semaphore::new(4)),
        lookups: Arc::new(tokio::sync::Semaphore::new(1)),
    });
    // The session is closed *before* the tunnel task looks at the signal: the
    // race of a tunnel that is just starting when the session ends.
    ctx.shutdown.send_replace(true);
    ctx
}

/// A destination that accepts and then stays silent (never closes).
async fn silent_destination() -> TcpStream {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    TcpStream::connect(addr).await.unwrap()
}

/// Review finding: `subscribe()` marks the current value seen, so a tunnel that
/// subscribed after `close()` waited for a change that never came (until the
/// idle timeout, 5 minutes by default). With `wait_for` it ends at once.
#[tokio::test]
async fn a_tunnel_starting_after_close_ends_at_once() {
    let ctx = closed_session();
    let (client, _keep) = tokio::io::duplex(1024);
    let up = silent_destination().await;
    tokio::time::timeout(Duration::from_secs(5), tunnel(&ctx, client, up))
        .await
        .expect("the copying tunnel ended with the closed session");
    let (client, _keep) = tokio::net::UnixStream::pair().unwrap();
    let up = silent_destination().await;
    tokio::time::timeout(
        Duration::from_secs(5),
        spliced_tunnel(&ctx, client, Bytes::new(), up),
    )
    .await
    .expect("the spliced tunnel ended with the closed session");
}
