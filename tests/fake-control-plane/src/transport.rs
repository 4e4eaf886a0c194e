//! Transport: the fake's own accept loop, plain HTTP or HTTPS with a CA made at start-up.
//!
//! Every connection is served by `hyper-util`'s auto builder, so HTTP/1.1 and HTTP/2 work on
//! both transports: over TLS the protocol is chosen by ALPN (`h2`, then `http/1.1`, the order
//! a real API front end offers; [`TlsOptions::alpn_http1_only`] offers `http/1.1` alone to
//! test a client's fallback), in plain text HTTP/1.1 (or HTTP/2 with prior knowledge).
//!
//! Each accepted connection gets a number and a [`ConnectionRecord`]; the number travels to
//! the request handler as a request extension ([`ConnectionId`]), so every
//! [`crate::RecordedRequest`] says which connection and which HTTP version carried it. Tests
//! use that to check that a client shares connections (HTTP/2 multiplexing, a warm pool).
//!
//! The TLS material is test-only: `TlsMaterial::generate` makes a fresh self-signed CA and a
//! server certificate it signs for `localhost`, `127.0.0.1` and `::1`, valid for a day. Only
//! the CA's certificate leaves this module ([`crate::Handle::ca_cert_pem`]); the private keys
//! live in memory for the life of the fake. The fake binds loopback by default and a client
//! trusts it only when given that CA explicitly, so nothing here weakens a real client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::Shared;

/// Longest a client may take for its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS settings of a fake ([`crate::FakeConfig::tls`]).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Offer only `http/1.1` by ALPN (a front end without HTTP/2), to test the fallback.
    pub alpn_http1_only: bool,
}

/// Which connection carried a request (a request extension set by the accept loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionId(pub u64);

/// One accepted TCP connection.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionRecord {
    /// Accept order, from 1.
    pub id: u64,
    /// Fake-clock accept time.
    #[serde(serialize_with = "crate::record::ser_time")]
    pub at: SystemTime,
    /// The client's address.
    pub peer: String,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The protocol ALPN chose (`h2`, `http/1.1`), when the client offered any; `None` also
    /// while the handshake is running or when it failed.
    pub alpn: Option<String>,
    /// Whether the TLS handshake failed (the client refused the certificate, or spoke plain
    /// HTTP to the TLS port).
    pub handshake_failed: bool,
}

/// A self-signed CA and the server key and certificate chain it signed.
pub(crate) struct TlsMaterial {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    server_config: Arc<rustls::ServerConfig>,
}

impl TlsMaterial {
    /// Generates a fresh CA and a server certificate for loopback names.
    pub fn generate(opts: &TlsOptions) -> Result<TlsMaterial, std::io::Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let err = |e: rcgen::Error| std::io::Error::other(format!("generating TLS material: {e}"));
        let now = SystemTime::now();
        let not_before = now - Duration::from_secs(3600);
        let not_after = now + Duration::from_secs(24 * 3600);

        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            "wasm-sandbox fake control plane test CA",
        );
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = not_before.into();
        ca_params.not_after = not_after.into();
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .map_err(err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let server_cert = params.signed_by(&server_key, &issuer).map_err(err)?;

        let key = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der())
            .map_err(std::io::Error::other)?;
        let chain = vec![server_cert.der().clone(), ca_cert.der().clone()];
        // The ring provider explicitly: no reliance on a process-wide default provider.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(std::io::Error::other)?;
        config.alpn_protocols = if opts.alpn_http1_only {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        Ok(TlsMaterial {
            ca_pem: ca_cert.pem(),
            server_config: Arc::new(config),
        })
    }
}

/// Accepts connections until shutdown and serves each on its own task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<TlsMaterial>>,
    router: Router,
    shared: Arc<Shared>,
) {
    let acceptor = tls.map(|t| TlsAcceptor::from(Arc::clone(&t.server_config)));
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = until_shutdown(&mut shutdown) => return,
        };
        // TCP_NODELAY, as a real API front end has: without it, Nagle's algorithm holds a
        // small SSE frame written while the previous one is still unacknowledged until the
        // client's delayed ACK (~40 ms on Linux), which made the second tool call of every
        // session ~40 ms slow whatever the worker.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let id = shared
            .lock()
            .record_connection(peer, acceptor.is_some(), shared.now());
        shared.bump();
        let router = router.clone();
        let shared = Arc::clone(&shared);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(tcp, id, router, shared).await,
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                shared.lock().connection_handshake_failed(id);
                                shared.bump();
                                return;
                            }
                            Err(_) => {
                                shared.lock().connection_handshake_failed(id);
                                shared.bump();
                                return;
                            }
                        };
                    let alpn = stream
                        .get_ref()
                        .1
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned());
                    shared.lock().connection_alpn(id, alpn);
                    shared.bump();
                    serve_connection(stream, id, router, shared).await;
                }
            }
        });
    }
}

/// Serves HTTP/1.1 or HTTP/2 (auto-detected from the first bytes) on one connection; on
/// shutdown, closes it gracefully (open SSE streams end on the same signal).
async fn serve_connection<IO>(io: IO, id: u64, router: Router, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router.layer(axum::Extension(ConnectionId(id))));
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut shutdown = shared.shutdown.subscribe();
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, connection = id, "connection ended with an error");
            }
        }
        () = until_shutdown(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// Resolves once shutdown is signalled (or the fake is gone).
async fn until_shutdown(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// `https://…` or `http://…` for a bound address (IPv6 in brackets).
pub(crate) fn base_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}")
}
