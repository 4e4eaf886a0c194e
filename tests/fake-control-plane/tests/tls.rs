//! The fake's transports: HTTPS with its start-up CA (HTTP/2 and HTTP/1.1 by ALPN) and plain
//! HTTP, and what it records about each request's connection and HTTP version.

use std::time::Duration;

use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane, Handle, TlsOptions};

async fn start(tls: Option<TlsOptions>) -> Handle {
    FakeControlPlane::start(FakeConfig {
        tls,
        admin_api: true,
        ..FakeConfig::default()
    })
    .await
    .expect("fake")
}

fn client(fake: &Handle, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(pem) = fake.ca_cert_pem() {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

async fn stats(fake: &Handle, http: &reqwest::Client) -> reqwest::Response {
    http.get(format!(
        "{}/v1/environments/{}/work/stats",
        fake.url(),
        fake.environment_id()
    ))
    .header("anthropic-version", "2026-10-21")
    .header("anthropic-beta", "managed-agents-2026-04-01")
    .bearer_auth(fake.environment_key())
    .send()
    .await
    .expect("request")
}

#[tokio::test]
async fn https_offers_h2_and_http11_and_records_both() {
    let fake = start(Some(TlsOptions::default())).await;
    assert!(
        fake.url().starts_with("https://127.0.0.1:"),
        "{}",
        fake.url()
    );
    let pem = fake.ca_cert_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");

    let h2 = client(&fake, false);
    for _ in 0..3 {
        let r = stats(&fake, &h2).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
    }
    let h1 = client(&fake, true);
    let r = stats(&fake, &h1).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);

    let reqs = fake.requests();
    let versions: Vec<&str> = reqs.iter().map(|r| r.http_version.as_str()).collect();
    assert_eq!(versions, ["HTTP/2.0", "HTTP/2.0", "HTTP/2.0", "HTTP/1.1"]);
    // Three HTTP/2 requests shared one connection; the HTTP/1.1 client opened its own.
    let conns: Vec<Option<u64>> = reqs.iter().map(|r| r.connection).collect();
    assert_eq!(conns, [Some(1), Some(1), Some(1), Some(2)]);
    let recorded = fake.connections();
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|c| c.tls && !c.handshake_failed));
    assert_eq!(recorded[0].alpn.as_deref(), Some("h2"));
    assert_eq!(recorded[1].alpn.as_deref(), Some("http/1.1"));
    assert!(
        reqs.iter()
            .all(|r| r.responded_at.is_some_and(|t| t >= r.at))
    );

    // The admin API is served on the same listener and lists the connections.
    let admin: serde_json::Value = h2
        .get(format!("{}/_fake/connections", fake.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // (It went over the HTTP/2 connection: still two, and admin calls are not recorded.)
    assert_eq!(admin.as_array().map(Vec::len), Some(2), "{admin}");
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn https_with_http1_only_alpn() {
    let fake = start(Some(TlsOptions {
        alpn_http1_only: true,
    }))
    .await;
    let r = stats(&fake, &client(&fake, false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(fake.connections()[0].alpn.as_deref(), Some("http/1.1"));
}

#[tokio::test]
async fn plain_http_still_served_and_recorded() {
    let fake = start(None).await;
    assert!(fake.url().starts_with("http://"), "{}", fake.url());
    assert!(fake.ca_cert_pem().is_none());
    let r = stats(&fake, &client(&fake, false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let reqs = fake.requests();
    assert_eq!(reqs[0].http_version, "HTTP/1.1");
    assert_eq!(reqs[0].connection, Some(1));
    let c = &fake.connections()[0];
    assert!(!c.tls && c.alpn.is_none());
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_gets_nothing() {
    let fake = start(Some(TlsOptions::default())).await;
    let untrusting = reqwest::Client::builder().build().unwrap();
    let err = untrusting
        .get(format!("{}/_fake/state", fake.url()))
        .send()
        .await
        .expect_err("the fake's CA is not a bundled root");
    assert!(err.is_connect() || err.is_request(), "{err}");
    assert!(fake.requests().is_empty());
}
