//! The per-session proxy: HTTP/1.1 forward proxy and `CONNECT`, on a unix socket.
//!
//! Every byte arriving here comes from a hostile session, so:
//! * the request head is bounded (64 KiB buffer, 100 headers) and must arrive
//!   within 10 s (hyper's `header_read_timeout`);
//! * concurrent connections per session are capped (`max_connections`; the next
//!   one gets an immediate 503) and idle tunnels are closed (`idle_timeout`);
//! * the destination is decided by [`Policy`] on the *name* first (no DNS query
//!   for a refused name), then resolved **once** here (the static `hosts` map
//!   first, else the system resolver, as an absolute name and with bounded
//!   concurrency: see [`crate::dns`]), every address checked against the deny
//!   set, and the connection made to exactly those checked addresses: the
//!   sandbox never resolves anything and cannot rebind a name between check and
//!   connect;
//! * a refusal is an immediate `403` whose plain-text body names the host, the
//!   port and the reason, so neither a person nor a model mistakes it for a hang.
//!
//! A forwarded request's `Host` is always rewritten from the checked destination
//! (no domain fronting over plain HTTP); a resolver failure is a 502 counted as
//! an error, not a denial; a connection over `max_connections` is a 503, logged
//! and counted as an error.
//!
//! Forwarded (plain HTTP) requests get their own destination connection each
//! (no pooling across requests, so a keep-alive client connection can switch
//! hosts and each request is decided on its own); hop-by-hop and `Proxy-*`
//! headers are dropped.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::config::NetworkingConfig;
use crate::http::{Body, BoxError, strip_hop_by_hop};
use crate::policy::{Narrowing, Policy, PolicyError, Refusal};
use crate::stats::{Counters, NetUsage};
use crate::upstream::Upstream;

const MAX_HEAD_BYTES: usize = 64 << 10;
const MAX_HEADERS: usize = 100;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const COPY_BUF: usize = 64 << 10;

/// The runtime-wide egress state: the compiled policy, the upstream aliases
/// (with their header values, read once from the worker's environment) and the
/// limits. Shared by every session's proxy.
#[derive(Debug)]
pub struct Egress {
    policy: Policy,
    upstreams: HashMap<String, Upstream>,
    max_connections: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl Egress {
    /// Compiles the configuration. Header values come from the process
    /// environment; a missing variable, a bad entry or a bad URL is an error
    /// here, at start, not at the first request. `extra_roots` are added to the
    /// webpki roots for TLS to every upstream. (`wasm-sandbox serve` does not use
    /// them: it hands its `--ca-cert` file to each upstream without a `ca_cert`
    /// of its own, see `wasm_sandbox_worker::egress_guard`.)
    pub fn new(
        config: &NetworkingConfig,
        extra_roots: Vec<reqwest::Certificate>,
    ) -> Result<Arc<Egress>, PolicyError> {
        Self::with_env(config, extra_roots, |k| std::env::var(k).ok())
    }

    /// [`Egress::new`] with an explicit environment lookup (tests).
    pub fn with_env(
        config: &NetworkingConfig,
        extra_roots: Vec<reqwest::Certificate>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Arc<Egress>, PolicyError> {
        let policy = Policy::new(config)?;
        let upstreams = crate::upstream::build(&config.upstreams, extra_roots, env)?;
        if config.max_connections == 0 {
            return Err(PolicyError("max_connections must be at least 1".into()));
        }
        Ok(Arc::new(Egress {
            policy,
            upstreams,
            max_connections: config.max_connections,
            idle_timeout: Duration::from_millis(config.idle_timeout_ms.max(1)),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms.max(1)),
        }))
    }

    /// The compiled policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Adds a range that is never reached (the worker's own listeners). Only
    /// while this is the sole handle (before sessions start); returns false
    /// otherwise.
    pub fn deny_also(self: &mut Arc<Self>, cidr: crate::Cidr) -> bool {
        match Arc::get_mut(self) {
            Some(e) => {
                e.policy.deny_also(cidr);
                true
            }
            None => false,
        }
    }

    /// Starts a session's proxy on a new unix socket at `socket` (which must not
    /// exist; its directory should be private to the worker and bound into this
    /// session's sandbox only). `narrowing` is the session's metadata value of
    /// [`SESSION_ALLOWED_HOSTS_KEY`](crate::SESSION_ALLOWED_HOSTS_KEY); a value that
    /// does not parse denies everything (fail closed) and is logged. Must be
    /// called within a tokio runtime.
    pub fn serve_session(
        self: &Arc<Self>,
        session_id: &str,
        socket: &Path,
        narrowing: Option<&str>,
    ) -> std::io::Result<SessionProxy> {
        let narrowing = match narrowing.map(|n| self.policy.narrowing(n)) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(e)) => {
                tracing::warn!(session = %session_id, error = %e, "invalid session network narrowing; denying all egress");
                Some(self.policy.narrowing("").unwrap_or_else(|_| unreachable!()))
            }
        };
        let std_listener = std::os::unix::net::UnixListener::bind(socket)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(std_listener)?;
        let counters = Arc::new(Counters::default());
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let ctx = Arc::new(SessionCtx {
            egress: self.clone(),
            session: session_id.into(),
            narrowing,
            counters: counters.clone(),
            shutdown: shutdown.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(self.max_connections)),
            lookups: Arc::new(tokio::sync::Semaphore::new(crate::dns::SESSION_LOOKUPS)),
        });
        let accept_ctx = ctx.clone();
        let mut stop = shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "egress proxy accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = closed(&mut stop) => return,
                };
                let ctx = accept_ctx.clone();
                tokio::spawn(serve_connection(ctx, stream));
            }
        });
        Ok(SessionProxy {
            counters,
            shutdown,
            socket: socket.to_path_buf(),
        })
    }
}

/// One session's running proxy. Dropping it (or [`SessionProxy::close`]) stops
/// the listener and every connection of the session and removes the socket.
#[derive(Debug)]
pub struct SessionProxy {
    counters: Arc<Counters>,
    shutdown: tokio::sync::watch::Sender<bool>,
    socket: PathBuf,
}

impl SessionProxy {
    /// The session's network use so far.
    pub fn usage(&self) -> NetUsage {
        self.counters.snapshot()
    }

    /// The unix socket the proxy listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops accepting, closes every connection of the session, removes the
    /// socket. Idempotent.
    pub fn close(&self) {
        self.shutdown.send_replace(true);
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for SessionProxy {
    fn drop(&mut self) {
        self.close();
    }
}

struct SessionCtx {
    egress: Arc<Egress>,
    session: String,
    narrowing: Option<Narrowing>,
    counters: Arc<Counters>,
    shutdown: tokio::sync::watch::Sender<bool>,
    slots: Arc<tokio::sync::Semaphore>,
    /// The session's share of DNS lookups in flight (see [`crate::dns`]).
    lookups: Arc<tokio::sync::Semaphore>,
}

async fn serve_connection(ctx: Arc<SessionCtx>, mut stream: tokio::net::UnixStream) {
    let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
        // Counted as an error of the session's traffic (a 503, not a policy
        // denial) and logged like every other decision.
        ctx.counters.error();
        tracing::warn!(
            session = %ctx.session, decision = "error", reason = "over_cap",
            max_connections = ctx.egress.max_connections,
            "egress decision: too many concurrent connections (503)"
        );
        let _ = stream
            .write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 52\r\n\r\negress proxy: too many connections for this session\n",
            )
            .await;
        // Read (and drop) what the client sent before closing, briefly, so the
        // close is not a reset that discards the answer.
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        return;
    };
    // The slot is held until the client connection *and* everything it started
    // (a CONNECT tunnel, a forwarded request's destination connection) are done.
    let permit = Arc::new(permit);
    let mut stop = ctx.shutdown.subscribe();
    let svc_ctx = ctx.clone();
    let service = hyper::service::service_fn(move |req| {
        let ctx = svc_ctx.clone();
        let slot = permit.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req, slot).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        _ = conn => {}
        _ = closed(&mut stop) => {}
    }
}

/// Resolves once the session is closed. `wait_for` looks at the *current* value
/// first: a receiver subscribed after `close()` (a tunnel just starting) sees it
/// at once, where `changed()` would wait for a change that never comes.
async fn closed(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, never held across an await.
    let _ = stop.wait_for(|closed| *closed).await.is_ok();
}

/// A connection slot of the session (see `max_connections`).
type Slot = Arc<tokio::sync::OwnedSemaphorePermit>;

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // An error ends the client connection: a client that sent CONNECT must not
    // wait on a keep-alive connection for a tunnel that never comes.
    r.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

impl SessionCtx {
    fn refuse(&self, host: &str, port: u16, why: &Refusal, started: Instant) -> Response<Body> {
        self.counters.denied();
        tracing::info!(
            session = %self.session, host = %host, port, decision = "denied",
            reason = why.kind(), duration_ms = started.elapsed().as_millis() as u64,
            "egress decision"
        );
        text(
            StatusCode::FORBIDDEN,
            format!("egress proxy: refused {host}:{port}: {why}\n"),
        )
    }

    fn failed(&self, host: &str, port: u16, why: String) -> Response<Body> {
        self.counters.error();
        tracing::info!(session = %self.session, host = %host, port, decision = "error", error = %why, "egress decision");
        text(
            StatusCode::BAD_GATEWAY,
            format!("egress proxy: cannot reach {host}:{port}: {why}\n"),
        )
    }

    /// Decides `host:port` and connects to a checked address.
    async fn decide_and_connect(
        &self,
        host: &str,
        port: u16,
        started: Instant,
    ) -> Result<(TcpStream, SocketAddr), Response<Body>> {
        let policy = &self.egress.policy;
        let name = match policy.check_name(host, port, self.narrowing.as_ref()) {
            Ok(n) => n,
            Err(why) => return Err(self.refuse(host, port, &why, started)),
        };
        let addrs: Vec<IpAddr> = if let Ok(ip) = name.parse::<IpAddr>() {
            vec![ip]
        } else if let Some(ip) = policy.static_host(&name) {
            vec![ip]
        } else {
            match crate::dns::lookup(&self.lookups, &name, port, self.egress.connect_timeout).await
            {
                Ok(v) => v,
                // A failed lookup is an error of an allowed request (counted as
                // such, a 502), not a policy denial.
                Err(crate::dns::LookupError::Failed(e)) => {
                    return Err(self.failed(host, port, format!("cannot resolve ({e})")));
                }
                Err(crate::dns::LookupError::TimedOut) => {
                    return Err(self.failed(host, port, "cannot resolve (timed out)".into()));
                }
            }
        };
        if addrs.is_empty() {
            return Err(self.failed(host, port, "cannot resolve (no address)".into()));
        }
        // Every address must pass: a name with one address in a denied range is
        // refused as a whole (it is either misconfigured or an attack).
        for ip in &addrs {
            if let Err(why) = policy.check_addr(*ip, port) {
                return Err(self.refuse(host, port, &why, started));
            }
        }
        let mut last = String::from("no address");
        for ip in addrs {
            let sa = SocketAddr::new(ip, port);
            match tokio::time::timeout(self.egress.connect_timeout, TcpStream::connect(sa)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    self.counters.allowed();
                    return Ok((s, sa));
                }
                Ok(Err(e)) => last = format!("{sa}: {e}"),
                Err(_) => last = format!("{sa}: connect timed out"),
            }
        }
        Err(self.failed(host, port, last))
    }
}

fn host_port(authority: &hyper::http::uri::Authority, default_port: u16) -> (String, u16) {
    (
        authority.host().to_owned(),
        authority.port_u16().unwrap_or(default_port),
    )
}

async fn handle(ctx: Arc<SessionCtx>, req: Request<Incoming>, slot: Slot) -> Response<Body> {
    let started = Instant::now();
    if req.method() == Method::CONNECT {
        let Some(auth) = req.uri().authority().cloned() else {
            return text(
                StatusCode::BAD_REQUEST,
                "egress proxy: CONNECT needs host:port\n".into(),
            );
        };
        let Some(port) = auth.port_u16() else {
            return text(
                StatusCode::BAD_REQUEST,
                "egress proxy: CONNECT needs host:port\n".into(),
            );
        };
        let host = auth.host().to_owned();
        let (upstream, addr) = match ctx.decide_and_connect(&host, port, started).await {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        let tunnel_ctx = ctx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "egress: CONNECT upgrade failed");
                    return;
                }
            };
            // The client side is our own unix socket: splice when hyper hands it
            // back (it always does for this server), else copy.
            let (up, down) = match upgraded.downcast::<TokioIo<tokio::net::UnixStream>>() {
                Ok(parts) => {
                    spliced_tunnel(&tunnel_ctx, parts.io.into_inner(), parts.read_buf, upstream)
                        .await
                }
                Err(upgraded) => tunnel(&tunnel_ctx, TokioIo::new(upgraded), upstream).await,
            };
            tracing::info!(
                session = %tunnel_ctx.session, host = %host, port, addr = %addr, decision = "allowed",
                method = "CONNECT", bytes_up = up, bytes_down = down,
                duration_ms = started.elapsed().as_millis() as u64, "egress decision"
            );
        });
        return Response::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        );
    }
    let uri = req.uri().clone();
    let Some(auth) = uri.authority().cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "egress proxy: send absolute-form requests (http://host/path) or CONNECT\n".into(),
        );
    };
    if uri.scheme_str() != Some("http") {
        return text(
            StatusCode::BAD_REQUEST,
            "egress proxy: only http:// is forwarded; use CONNECT for https\n".into(),
        );
    }
    let (host, port) = host_port(&auth, 80);
    if let Some(name) = host.to_ascii_lowercase().strip_suffix(".internal")
        && let Some(up) = ctx.egress.upstreams.get(name)
    {
        if let Some(n) = &ctx.narrowing
            && ctx
                .egress
                .policy
                .check_name_in(n, &host.to_ascii_lowercase(), port)
                .is_err()
        {
            return ctx.refuse(&host, port, &Refusal::NarrowedBySession, started);
        }
        return up.forward(&ctx.session, &ctx.counters, req, started).await;
    }
    let (stream, addr) = match ctx.decide_and_connect(&host, port, started).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    forward(ctx, req, stream, addr, (host, port), started, slot).await
}

async fn forward(
    ctx: Arc<SessionCtx>,
    req: Request<Incoming>,
    stream: TcpStream,
    addr: SocketAddr,
    (host, port): (String, u16),
    started: Instant,
    slot: Slot,
) -> Response<Body> {
    let local = Arc::new(ConnBytes::default());
    let io = Counted {
        inner: stream,
        counters: ctx.counters.clone(),
        local: local.clone(),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(e) => return ctx.failed(&host, port, e.to_string()),
    };
    let log_ctx = ctx.clone();
    let method = req.method().to_string();
    let log_host = host.clone();
    let mut stop = ctx.shutdown.subscribe();
    let idle = ctx.egress.idle_timeout;
    tokio::spawn(async move {
        let _slot = slot;
        // The destination connection lives until the response body is read (or
        // the session ends, or nothing moves for `idle_timeout`).
        let watchdog = idle_watchdog(&local, idle);
        tokio::select! {
            _ = conn => {}
            _ = closed(&mut stop) => {}
            _ = watchdog => {}
        }
        tracing::info!(
            session = %log_ctx.session, host = %log_host, port, addr = %addr, decision = "allowed",
            method = %method, bytes_up = local.up.load(Ordering::Relaxed),
            bytes_down = local.down.load(Ordering::Relaxed),
            duration_ms = started.elapsed().as_millis() as u64, "egress decision"
        );
    });
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.uri = match parts.uri.path_and_query() {
        Some(pq) => pq
            .as_str()
            .parse()
            .unwrap_or_else(|_| "/".parse().unwrap_or_default()),
        None => hyper::Uri::from_static("/"),
    };
    // `Host` is always the checked (host, port), never the client's (RFC 9112
    // §3.2.2: a proxy replaces it from the request target). Passing the client's
    // through would be domain fronting: a request admitted for `pypi.org` landing
    // on a shared CDN front end with `Host: attacker.example` would be routed to
    // the attacker's site behind the same addresses. Every `Host` line is removed
    // first, so a second one cannot survive either.
    parts.headers.remove(hyper::header::HOST);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    }) {
        parts.headers.insert(hyper::header::HOST, v);
    }
    parts.version = hyper::Version::HTTP_11;
    let req = Request::from_parts(parts, body);
    match sender.send_request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
        }
        Err(e) => ctx.failed(&host, port, e.to_string()),
    }
}

/// Bytes of one destination connection (for its log line).
#[derive(Default)]
struct ConnBytes {
    up: AtomicU64,
    down: AtomicU64,
    /// Milliseconds since `EPOCH` of the last byte either way.
    last: AtomicU64,
}

fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

async fn idle_watchdog(local: &ConnBytes, idle: Duration) {
    local.last.store(now_ms(), Ordering::Relaxed);
    let idle_ms = idle.as_millis() as u64;
    let tick = (idle / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(tick).await;
        if now_ms().saturating_sub(local.last.load(Ordering::Relaxed)) >= idle_ms {
            return;
        }
    }
}

/// A destination stream that counts bytes into the session's and the
/// connection's counters.
struct Counted<T> {
    inner: T,
    counters: Arc<Counters>,
    local: Arc<ConnBytes>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.counters.down(n);
            self.local.down.fetch_add(n, Ordering::Relaxed);
            self.local.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters.up(*n as u64);
            self.local.up.fetch_add(*n as u64, Ordering::Relaxed);
            self.local.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// [`tunnel`] without user-space copies (`splice(2)`, see
/// `wasm_sandbox_native::net::splice`): `early` is what
/// the client sent after its CONNECT head, forwarded first.
async fn spliced_tunnel(
    ctx: &SessionCtx,
    client: tokio::net::UnixStream,
    early: Bytes,
    mut upstream: TcpStream,
) -> (u64, u64) {
    let local = ConnBytes::default();
    let up = |n: u64| {
        ctx.counters.up(n);
        local.up.fetch_add(n, Ordering::Relaxed);
        local.last.store(now_ms(), Ordering::Relaxed);
    };
    let down = |n: u64| {
        ctx.counters.down(n);
        local.down.fetch_add(n, Ordering::Relaxed);
        local.last.store(now_ms(), Ordering::Relaxed);
    };
    if !early.is_empty() {
        if upstream.write_all(&early).await.is_err() {
            return (0, 0);
        }
        up(early.len() as u64);
    }
    let mut stop = ctx.shutdown.subscribe();
    tokio::select! {
        _ = futures::future::try_join(
            wasm_sandbox_native::net::splice::pump(&client, &upstream, up),
            wasm_sandbox_native::net::splice::pump(&upstream, &client, down),
        ) => {}
        _ = closed(&mut stop) => {}
        _ = idle_watchdog(&local, ctx.egress.idle_timeout) => {}
    }
    (
        local.up.load(Ordering::Relaxed),
        local.down.load(Ordering::Relaxed),
    )
}

/// Copies both ways between the sandbox side and the destination until both
/// sides close, the session ends, or nothing moves for `idle_timeout`.
/// Returns (bytes up, bytes down).
async fn tunnel<C>(ctx: &SessionCtx, client: C, upstream: TcpStream) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let local = Arc::new(ConnBytes::default());
    let mut dest = Counted {
        inner: upstream,
        counters: ctx.counters.clone(),
        local: local.clone(),
    };
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut dr, mut dw) = tokio::io::split(&mut dest);
    let up = async {
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                dw.shutdown().await?;
                return Ok::<_, std::io::Error>(());
            }
            dw.write_all(&buf[..n]).await?;
        }
    };
    let down = async {
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = dr.read(&mut buf).await?;
            if n == 0 {
                cw.shutdown().await?;
                return Ok::<_, std::io::Error>(());
            }
            cw.write_all(&buf[..n]).await?;
        }
    };
    let mut stop = ctx.shutdown.subscribe();
    tokio::select! {
        _ = futures::future::try_join(up, down) => {}
        _ = closed(&mut stop) => {}
        _ = idle_watchdog(&local, ctx.egress.idle_timeout) => {}
    }
    (
        local.up.load(Ordering::Relaxed),
        local.down.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests;
