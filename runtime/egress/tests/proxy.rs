//! The proxy against loopback servers: 127.0.0.2 plays an allowed destination,
//! 127.0.0.3 a destination in a denied range (127.0.0.0/8 is in the built-in deny
//! set; the tests lift 127.0.0.2 only, by an explicit CIDR entry).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use wasm_sandbox_egress::{Egress, NetworkingConfig, SessionProxy};

mod common;

/// An HTTP server answering every request with its request line and headers.
async fn echo_http(ip: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(common::answer_with_head(s, "ECHO"));
        }
    });
    port
}

/// A raw TCP echo server.
async fn echo_tcp(ip: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

struct Fixture {
    _dir: tempfile::TempDir,
    proxy: SessionProxy,
}

fn start(toml_text: &str, narrowing: Option<&str>) -> Fixture {
    start_env(toml_text, narrowing, |_| None)
}

fn start_env(
    toml_text: &str,
    narrowing: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Fixture {
    let cfg: NetworkingConfig = toml::from_str(toml_text).unwrap();
    let egress: Arc<Egress> = Egress::with_env(&cfg, Vec::new(), env).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = egress
        .serve_session("sess-test", &dir.path().join("proxy.sock"), narrowing)
        .unwrap();
    Fixture { _dir: dir, proxy }
}

/// An HTTP echo server on 127.0.0.2 and a proxy that allows it, on its port only, under the
/// name `pypi.test` (a `hosts` entry): (the port, the proxy).
async fn pypi_test() -> (u16, Fixture) {
    let port = echo_http("127.0.0.2").await;
    let f = start(
        &format!(
            r#"type = "limited"
            allowed_hosts = ["127.0.0.2/32"]
            ports = [{port}]
            hosts = {{ "pypi.test" = "127.0.0.2" }}"#
        ),
        None,
    );
    (port, f)
}

/// [`common::ask`] on the fixture's proxy socket.
async fn ask(f: &Fixture, request: &str) -> String {
    common::ask(f.proxy.socket(), request).await
}

fn get(url: &str) -> String {
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    format!("GET {url} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n")
}

#[tokio::test]
async fn forwards_an_allowed_name_and_counts_bytes() {
    let (port, f) = pypi_test().await;
    let answer = ask(
        &f,
        &format!(
            "GET http://pypi.test:{port}/simple/?q=1 HTTP/1.1\r\nhost: pypi.test:{port}\r\nproxy-authorization: Basic eA==\r\nconnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Origin-form upstream, the Host kept, Proxy-* dropped.
    assert!(answer.contains("GET /simple/?q=1 HTTP/1.1"), "{answer}");
    assert!(
        answer.contains(&format!("host: pypi.test:{port}")),
        "{answer}"
    );
    assert!(
        !answer.to_ascii_lowercase().contains("proxy-authorization"),
        "{answer}"
    );
    let u = f.proxy.usage();
    assert_eq!(u.connections, 1);
    assert_eq!(u.denials, 0);
    assert!(u.bytes_up > 20 && u.bytes_down > 40, "{u:?}");
}

#[tokio::test]
async fn refusals_are_immediate_403s_naming_host_and_reason() {
    let allowed = echo_http("127.0.0.2").await;
    let denied = echo_http("127.0.0.3").await;
    let f = start(
        &format!(
            r#"type = "limited"
            allowed_hosts = ["127.0.0.2/32", "evil.test"]
            ports = [{allowed}, {denied}]
            hosts = {{ "pypi.test" = "127.0.0.2", "evil.test" = "127.0.0.3" }}"#
        ),
        None,
    );
    let t = Instant::now();
    let a = ask(&f, &get("http://not-listed.test/")).await;
    assert!(a.starts_with("HTTP/1.1 403"), "{a}");
    assert!(
        a.contains("refused not-listed.test:80: not in allowed_hosts"),
        "{a}"
    );
    // The name is allowed, its address is not.
    let a = ask(&f, &get(&format!("http://evil.test:{denied}/"))).await;
    assert!(a.starts_with("HTTP/1.1 403"), "{a}");
    assert!(
        a.contains(&format!(
            "refused evil.test:{denied}: resolves to a denied range (127.0.0.3)"
        )),
        "{a}"
    );
    // An IP literal outside the CIDR entries.
    let a = ask(&f, &get(&format!("http://127.0.0.3:{denied}/"))).await;
    assert!(a.contains("not in allowed_hosts"), "{a}");
    // The port rule.
    let a = ask(&f, &get("http://pypi.test:25/")).await;
    assert!(
        a.contains("refused pypi.test:25: port 25 not allowed"),
        "{a}"
    );
    // CONNECT refusals too.
    let a = ask(
        &f,
        "CONNECT not-listed.test:443 HTTP/1.1\r\nhost: not-listed.test:443\r\n\r\n",
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 403"), "{a}");
    assert!(a.contains("not in allowed_hosts"), "{a}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "refusals took {:?}",
        t.elapsed()
    );
    assert_eq!(f.proxy.usage().denials, 5);
    assert_eq!(f.proxy.usage().connections, 0);
    // A 403 is counted process-wide too.
    assert!(wasm_sandbox_egress::stats().denied >= 5);
}

#[tokio::test]
async fn connect_tunnels_to_the_checked_address() {
    let port = echo_tcp("127.0.0.2").await;
    let f = start(
        &format!(
            r#"type = "limited"
            allowed_hosts = ["127.0.0.2/32:{port}"]
            hosts = {{ "git.test" = "127.0.0.2" }}"#
        ),
        None,
    );
    let mut s = UnixStream::connect(f.proxy.socket()).await.unwrap();
    s.write_all(
        format!("CONNECT git.test:{port} HTTP/1.1\r\nhost: git.test:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 256];
    let n = s.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let payload = vec![7u8; 200_000];
    let (mut r, mut w) = s.into_split();
    let p2 = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&p2).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert_eq!(back, payload);
    let u = f.proxy.usage();
    assert_eq!(u.connections, 1);
    assert_eq!(u.bytes_up, 200_000);
    assert_eq!(u.bytes_down, 200_000);
}

/// Bytes a client sends right behind its CONNECT head (a TLS ClientHello sent
/// without waiting for the 200) reach the destination first.
#[tokio::test]
async fn bytes_pipelined_after_connect_are_forwarded() {
    let port = echo_tcp("127.0.0.2").await;
    let f = start(
        &format!("type = \"limited\"\nallowed_hosts = [\"127.0.0.2/32:{port}\"]"),
        None,
    );
    let mut s = UnixStream::connect(f.proxy.socket()).await.unwrap();
    s.write_all(format!("CONNECT 127.0.0.2:{port} HTTP/1.1\r\n\r\nEARLY-").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    while !got.ends_with(b"EARLY-") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    s.write_all(b"LATE").await.unwrap();
    s.shutdown().await.unwrap();
    s.read_to_end(&mut got).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\nEARLY-LATE"), "{text}");
    assert_eq!(f.proxy.usage().bytes_up, 10);
}

#[tokio::test]
async fn unrestricted_keeps_the_deny_set() {
    let port = echo_http("127.0.0.3").await;
    let f = start("type = \"unrestricted\"", None);
    let a = ask(&f, &get(&format!("http://127.0.0.3:{port}/"))).await;
    assert!(a.contains("resolves to a denied range (127.0.0.3)"), "{a}");
    let a = ask(&f, &get("http://169.254.169.254/latest/meta-data/")).await;
    assert!(
        a.contains("resolves to a denied range (169.254.169.254)"),
        "{a}"
    );
    let a = ask(&f, &get("http://localhost/")).await;
    assert!(a.contains("403"), "{a}");
}

#[tokio::test]
async fn a_session_narrowing_cannot_widen() {
    let port = echo_http("127.0.0.2").await;
    let cfg = format!(
        r#"type = "limited"
        allowed_hosts = ["127.0.0.2/32", "b.test"]
        ports = [{port}]
        hosts = {{ "a.test" = "127.0.0.2", "b.test" = "127.0.0.2" }}"#
    );
    let f = start(&cfg, Some("a.test, other.example"));
    let a = ask(&f, &get(&format!("http://a.test:{port}/"))).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    let a = ask(&f, &get(&format!("http://b.test:{port}/"))).await;
    assert!(
        a.contains("not in the session's sandbox.allowed_hosts"),
        "{a}"
    );
    let a = ask(&f, &get("http://other.example/")).await;
    assert!(a.contains("not in allowed_hosts"), "{a}");
    // A narrowing that does not parse denies everything.
    let f = start(&cfg, Some("a.*.test"));
    let a = ask(&f, &get(&format!("http://a.test:{port}/"))).await;
    assert!(a.starts_with("HTTP/1.1 403"), "{a}");
}

#[tokio::test]
async fn upstream_alias_adds_the_header_and_replaces_the_sandbox_one() {
    let port = echo_http("127.0.0.2").await;
    let f = start_env(
        &format!(
            r#"type = "limited"
            [[upstreams]]
            name = "sister"
            url = "http://127.0.0.2:{port}/v1/"
            headers = {{ "x-api-key" = {{ env = "SISTER_KEY" }} }}"#
        ),
        None,
        |k| (k == "SISTER_KEY").then(|| "sk-secret-123".to_owned()),
    );
    let a = ask(
        &f,
        "GET http://sister.internal/models?x=1 HTTP/1.1\r\nhost: sister.internal\r\nx-api-key: forged\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(a.contains("GET /v1/models?x=1 HTTP/1.1"), "{a}");
    assert!(a.contains("x-api-key: sk-secret-123"), "{a}");
    assert!(!a.contains("forged"), "{a}");
    assert_eq!(f.proxy.usage().connections, 1);
    // Another name under .internal is just a name (refused).
    let a = ask(&f, &get("http://other.internal/")).await;
    assert!(a.contains("not in allowed_hosts"), "{a}");
}

#[test]
fn a_missing_header_variable_is_a_start_error() {
    let cfg: NetworkingConfig = toml::from_str(
        r#"type = "limited"
        [[upstreams]]
        name = "sister"
        url = "https://sister.example"
        headers = { "x-api-key" = { env = "NOT_SET_ANYWHERE_1234" } }"#,
    )
    .unwrap();
    let e = Egress::with_env(&cfg, Vec::new(), |_| None).unwrap_err();
    assert!(e.to_string().contains("NOT_SET_ANYWHERE_1234"), "{e}");
    let cfg: NetworkingConfig =
        toml::from_str("[[upstreams]]\nname = \"Bad_Name\"\nurl = \"https://x\"").unwrap();
    assert!(Egress::with_env(&cfg, Vec::new(), |_| None).is_err());
}

/// A CONNECT tunnel keeps its slot after the client connection's HTTP part ends.
#[tokio::test]
async fn tunnels_count_against_the_cap() {
    let port = echo_tcp("127.0.0.2").await;
    let f = start(
        &format!(
            "type = \"limited\"\nmax_connections = 1\nallowed_hosts = [\"127.0.0.2/32:{port}\"]"
        ),
        None,
    );
    let mut s = UnixStream::connect(f.proxy.socket()).await.unwrap();
    s.write_all(format!("CONNECT 127.0.0.2:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = vec![0u8; 256];
    let n = s.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    let a = ask(&f, &get("http://x.test/")).await;
    assert!(a.starts_with("HTTP/1.1 503"), "{a}");
    drop(s);
    // The slot comes back once the tunnel ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = ask(&f, &get("http://x.test/")).await;
        if a.starts_with("HTTP/1.1 403") {
            break;
        }
        assert!(Instant::now() < deadline, "{a}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_per_session_are_capped() {
    let f = start("type = \"limited\"\nmax_connections = 2", None);
    let errors_before = wasm_sandbox_egress::stats().errors;
    let _a = UnixStream::connect(f.proxy.socket()).await.unwrap();
    let _b = UnixStream::connect(f.proxy.socket()).await.unwrap();
    // The two idle connections take their slots once the proxy has accepted
    // them: ask until the third is refused (no fixed sleep), within a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = ask(&f, &get("http://x.test/")).await;
        if a.starts_with("HTTP/1.1 503") {
            assert!(a.contains("too many connections"), "{a}");
            // Counted on /metrics (as an error, not a denial).
            assert!(wasm_sandbox_egress::stats().errors > errors_before);
            break;
        }
        assert!(a.starts_with("HTTP/1.1 403"), "{a}");
        assert!(Instant::now() < deadline, "never refused: {a}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A head larger than the proxy's buffer is refused (431, or the connection is
/// closed), never forwarded nor decided.
#[tokio::test]
async fn oversized_heads_are_refused() {
    let f = start("type = \"unrestricted\"", None);
    let big = "a".repeat(1 << 20);
    let s = UnixStream::connect(f.proxy.socket()).await.unwrap();
    let (mut r, mut w) = s.into_split();
    tokio::spawn(async move {
        let req = format!("GET http://x.test/ HTTP/1.1\r\nhost: x.test\r\nx-big: {big}\r\n\r\n");
        let _ = w.write_all(req.as_bytes()).await;
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut out))
        .await
        .expect("the proxy ended the connection");
    let a = String::from_utf8_lossy(&out);
    assert!(a.is_empty() || a.starts_with("HTTP/1.1 431"), "{a}");
    assert_eq!(f.proxy.usage().denials, 0);
}

#[tokio::test]
async fn close_removes_the_socket_and_ends_tunnels() {
    let port = echo_tcp("127.0.0.2").await;
    let f = start(
        &format!("type = \"limited\"\nallowed_hosts = [\"127.0.0.2/32:{port}\"]"),
        None,
    );
    let mut s = UnixStream::connect(f.proxy.socket()).await.unwrap();
    s.write_all(format!("CONNECT 127.0.0.2:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = vec![0u8; 256];
    let n = s.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    f.proxy.close();
    assert!(!f.proxy.socket().exists());
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the tunnel closed with the session")
        .ok();
}

/// Review finding (domain fronting): the client's `Host` is replaced by the
/// checked destination; the destination never sees `attacker.example`.
#[tokio::test]
async fn forwarded_host_header_is_the_checked_destination() {
    let (port, f) = pypi_test().await;
    let answer = ask(
        &f,
        &format!(
            "GET http://pypi.test:{port}/simple/ HTTP/1.1\r\nHost: attacker.example\r\nconnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(&format!("host: pypi.test:{port}")),
        "{answer}"
    );
    assert!(!answer.contains("attacker.example"), "{answer}");
}

/// Review finding: a name that does not resolve is an error of an allowed
/// request (502, counted in `errors`), not a policy denial.
#[tokio::test]
async fn dns_failures_are_errors_not_denials() {
    let f = start("type = \"unrestricted\"\nconnect_timeout = \"2s\"", None);
    let before = wasm_sandbox_egress::stats().errors;
    // `.invalid` never resolves (RFC 6761); without a resolver the lookup
    // times out instead, also a 502.
    let a = ask(&f, &get("http://no-such-name.invalid/")).await;
    assert!(a.starts_with("HTTP/1.1 502"), "{a}");
    assert!(
        a.contains("cannot reach no-such-name.invalid:80: cannot resolve"),
        "{a}"
    );
    assert_eq!(f.proxy.usage().denials, 0);
    assert!(wasm_sandbox_egress::stats().errors > before);
}
