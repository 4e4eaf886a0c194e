//! An upstream alias over TLS with a private CA (`ca_cert`): the proxy speaks TLS to
//! the upstream, the sandbox speaks plain HTTP to `<name>.internal`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::rustls;
use wasm_sandbox_egress::{Egress, NetworkingConfig};

/// A TLS server for 127.0.0.1 signed by a fresh CA; answers with the request head.
/// Returns (port, CA PEM).
async fn tls_echo() -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(s) = acceptor.accept(tcp).await {
                    common::answer_with_head(s, "TLS").await;
                }
            });
        }
    });
    (port, ca_cert.pem())
}

mod common;
use common::ask;

#[tokio::test]
async fn tls_upstream_with_a_private_ca() {
    let (port, ca_pem) = tls_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let request = "GET http://sister.internal/chat HTTP/1.1\r\nhost: sister.internal\r\nconnection: close\r\n\r\n";
    let env = |k: &str| (k == "K").then(|| "secret-k".to_owned());

    let with_ca: NetworkingConfig = toml::from_str(&format!(
        "type = \"limited\"\n[[upstreams]]\nname = \"sister\"\nurl = \"https://127.0.0.1:{port}/v1\"\nca_cert = {:?}\nheaders = {{ authorization = {{ env = \"K\" }} }}",
        ca.to_str().unwrap()
    ))
    .unwrap();
    let egress = Egress::with_env(&with_ca, Vec::new(), env).unwrap();
    let proxy = egress
        .serve_session("s", &dir.path().join("a.sock"), None)
        .unwrap();
    let a = ask(proxy.socket(), request).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(a.contains("TLS\nGET /v1/chat HTTP/1.1"), "{a}");
    assert!(a.contains("authorization: secret-k"), "{a}");

    // Without the CA the upstream's certificate is not trusted: 502, no request sent.
    let mut without = with_ca.clone();
    without.upstreams[0].ca_cert = None;
    let egress = Egress::with_env(&without, Vec::new(), env).unwrap();
    let proxy = egress
        .serve_session("s", &dir.path().join("b.sock"), None)
        .unwrap();
    let a = ask(proxy.socket(), request).await;
    assert!(a.starts_with("HTTP/1.1 502"), "{a}");
    assert!(a.contains("upstream sister.internal failed"), "{a}");
    assert!(!a.contains("secret-k"), "{a}");

    // A CA file without a certificate is a start-up error.
    std::fs::write(&ca, "not a certificate").unwrap();
    assert!(Egress::with_env(&with_ca, Vec::new(), env).is_err());
}
