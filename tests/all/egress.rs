//! Per-session network egress (`[runtime.networking]`) through real bash
//! sandboxes: the relay in the sandbox, the proxy on the host, the policy.
//!
//! Destinations are loopback servers on the host: 127.0.0.2 plays an allowed
//! address (admitted by an explicit CIDR entry, since 127.0.0.0/8 is in the
//! built-in deny set), 127.0.0.3 a denied one. Names resolve through the static
//! `hosts` map, so no test needs DNS.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasm_sandbox_runtime::{PoolConfig, Runtime, Session, SessionSpec};

use crate::common::bash;

const SECRET: &str = "sk-egress-test-3c9f1e0b7a";
const SECRET_ENV: &str = "WASM_SANDBOX_EGRESS_TEST_SISTER_KEY";

struct Fx {
    tokio: tokio::runtime::Runtime,
    rt: Runtime,
    /// The allowed server (127.0.0.2) and the denied one (127.0.0.3).
    port: u16,
    denied_port: u16,
    dir: tempfile::TempDir,
    /// Why the sandbox cannot run here, if it cannot.
    skip: Option<String>,
}

/// An HTTP server answering each request with its request line and headers.
async fn echo_http(ip: &str) -> u16 {
    let l = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let body = format!("ECHO\n{head}\n");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = s.write_all(resp.as_bytes()).await;
                        return;
                    }
                }
            });
        }
    });
    port
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (port, denied_port) =
            tokio.block_on(async { (echo_http("127.0.0.2").await, echo_http("127.0.0.3").await) });
        // SAFETY: set once, before the runtime reads it, by the fixture's
        // initialiser (which every test of this module goes through first); no
        // other code of this binary reads this variable.
        unsafe { std::env::set_var(SECRET_ENV, SECRET) };
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::common::config();
        config.pool = PoolConfig {
            sandboxes: Some(1),
            dir: Some(dir.path().join("pool")),
        };
        config.networking = toml::from_str(&format!(
            r#"type = "limited"
            allowed_hosts = ["127.0.0.2/32", "evil.test", "pypi.test", "other.test"]
            ports = [{port}, {denied_port}]
            hosts = {{ "pypi.test" = "127.0.0.2", "other.test" = "127.0.0.2", "evil.test" = "127.0.0.3" }}
            [[upstreams]]
            name = "sister"
            url = "http://127.0.0.2:{port}/v1"
            headers = {{ "x-api-key" = {{ env = "{SECRET_ENV}" }} }}"#
        ))
        .unwrap();
        // A wasi-nn remote model defined by the same upstream (one endpoint
        // definition for the sandbox's alias and wasi-nn).
        config.nn = toml::from_str(
            r#"[[remote]]
            name = "ocr-sister"
            kind = "ocr"
            upstream = "sister"
            path = "/ocr""#,
        )
        .unwrap();
        let rt = {
            let _g = tokio.enter();
            Runtime::new(config).expect("runtime")
        };
        let report = rt.sandbox_report();
        let missing = ["/usr/bin/curl", "/usr/bin/python3"]
            .into_iter()
            .find(|t| !std::path::Path::new(t).exists());
        let skip = if !report.available {
            Some(format!(
                "bash sandbox unavailable: {}",
                report.unavailable_reason.clone().unwrap_or_default()
            ))
        } else {
            missing.map(|t| format!("{t} is not installed (the sandbox's root is the host's /usr)"))
        };
        Fx {
            tokio,
            rt,
            port,
            denied_port,
            dir,
            skip,
        }
    })
}

fn skip(fx: &Fx) -> bool {
    if let Some(why) = &fx.skip {
        eprintln!("skipping: {why}");
        return true;
    }
    false
}

fn session(fx: &Fx, name: &str, narrowing: Option<&str>) -> Session {
    let _g = fx.tokio.enter();
    let mut spec = SessionSpec::new(name, fx.dir.path().join("sessions").join(name));
    spec.network_allowed_hosts = narrowing.map(str::to_owned);
    fx.rt.session(spec).unwrap()
}

fn run(fx: &Fx, s: &Session, cmd: &str) -> String {
    bash(&fx.tokio, s, cmd).0
}

#[test]
fn curl_and_python_reach_an_allowed_name_through_the_proxy() {
    let fx = fx();
    if skip(fx) {
        return;
    }
    let s = session(fx, "allowed", None);
    let p = fx.port;
    let out = run(fx, &s, &format!("curl -sS http://pypi.test:{p}/simple/"));
    assert!(out.starts_with("ECHO\nGET /simple/ HTTP/1.1"), "{out}");
    // CONNECT (curl -p tunnels through the proxy).
    let out = run(fx, &s, &format!("curl -sS -p http://pypi.test:{p}/tunnel"));
    assert!(out.contains("GET /tunnel HTTP/1.1"), "{out}");
    // A CIDR entry admits an address.
    let out = run(fx, &s, &format!("curl -sS http://127.0.0.2:{p}/by-ip"));
    assert!(out.contains("GET /by-ip"), "{out}");
    // Python's urllib (what pip-style clients use) honours the same variables.
    let out = run(
        fx,
        &s,
        &format!(
            "python3 -c \"import urllib.request as u; print(u.urlopen('http://pypi.test:{p}/py').read().decode())\""
        ),
    );
    assert!(out.contains("GET /py HTTP/1.1"), "{out}");
    let u = s.network_usage().expect("the session has a proxy");
    assert_eq!(u.connections, 4, "{u:?}");
    assert!(u.bytes_up > 100 && u.bytes_down > 100, "{u:?}");
    fx.tokio.block_on(s.close());
}

#[test]
fn refusals_are_immediate_403s_with_a_reason() {
    let fx = fx();
    if skip(fx) {
        return;
    }
    let s = session(fx, "refused", None);
    let (p, d) = (fx.port, fx.denied_port);
    let t = Instant::now();
    let out = run(
        fx,
        &s,
        "curl -sS -w ' %{http_code}' http://not-listed.test/",
    );
    assert!(
        out.contains("refused not-listed.test:80: not in allowed_hosts") && out.ends_with(" 403"),
        "{out}"
    );
    // Allowed name, denied address.
    let out = run(fx, &s, &format!("curl -sS http://evil.test:{d}/"));
    assert!(
        out.contains(&format!(
            "refused evil.test:{d}: resolves to a denied range (127.0.0.3)"
        )),
        "{out}"
    );
    // An address outside every CIDR entry.
    let out = run(fx, &s, &format!("curl -sS http://127.0.0.3:{d}/"));
    assert!(out.contains("not in allowed_hosts"), "{out}");
    // The port rule.
    let out = run(fx, &s, "curl -sS http://pypi.test:25/");
    assert!(
        out.contains("refused pypi.test:25: port 25 not allowed"),
        "{out}"
    );
    // A refused CONNECT (https) fails at once with the proxy's 403.
    let out = run(fx, &s, "curl -sS https://not-listed.test/ 2>&1; echo rc=$?");
    assert!(out.contains("403") && out.contains("rc=56"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(s.network_usage().unwrap().denials, 5);
    // Allowed still works after refusals on the same session.
    assert!(run(fx, &s, &format!("curl -sS http://pypi.test:{p}/ok")).contains("GET /ok"));
    fx.tokio.block_on(s.close());
}

#[test]
fn clients_that_ignore_the_proxy_fail_at_once() {
    let fx = fx();
    if skip(fx) {
        return;
    }
    let s = session(fx, "direct", None);
    let p = fx.port;
    // Each failing call is timed inside the sandbox (`date +%s%N` around it), so
    // bash, curl and python start-up on a loaded machine do not count: what is
    // measured is how long the connect takes to fail.
    let out = run(
        fx,
        &s,
        &format!(
            "t0=$(date +%s%N); curl --noproxy '*' -sS --max-time 20 http://127.0.0.2:{p}/ 2>&1;              echo rc=$?; t1=$(date +%s%N); echo curl_ms=$(( (t1 - t0) / 1000000 ));              python3 -c \"import socket, time\n\
             t = time.monotonic()\n\
             try:\n    socket.create_connection(('203.0.113.1', 80), timeout=20)\n\
             except OSError as e:\n    print(e)\n\
             print('py_ms=%d' % ((time.monotonic() - t) * 1000))\" 2>&1"
        ),
    );
    assert!(out.contains("rc=7"), "{out}");
    assert!(out.contains("Network is unreachable"), "{out}");
    let ms = |key: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {out}"))
    };
    // curl's figure includes its own start-up; python's is the connect alone.
    assert!(ms("curl_ms=") < 1000, "{out}");
    assert!(ms("py_ms=") < 200, "{out}");
    fx.tokio.block_on(s.close());
}

#[test]
fn sessions_narrow_independently_and_cannot_reach_each_other() {
    let fx = fx();
    if skip(fx) {
        return;
    }
    let p = fx.port;
    let a = session(fx, "narrow-a", Some("pypi.test"));
    let b = session(fx, "narrow-b", Some("other.test, evil.example"));
    let get = |s: &Session, host: &str| run(fx, s, &format!("curl -sS http://{host}:{p}/"));
    assert!(get(&a, "pypi.test").starts_with("ECHO"));
    assert!(get(&a, "other.test").contains("not in the session's sandbox.allowed_hosts"));
    assert!(get(&b, "other.test").starts_with("ECHO"));
    assert!(get(&b, "pypi.test").contains("not in the session's sandbox.allowed_hosts"));
    // A session cannot widen: evil.example is not the operator's.
    assert!(run(fx, &b, "curl -sS http://evil.example/").contains("not in allowed_hosts"));
    // Each sandbox sees only its own socket; every host socket path is absent
    // inside (the other session's included).
    assert_eq!(run(fx, &a, "ls -A /run/wasm-sandbox/net"), "proxy.sock");
    let host_sockets: Vec<String> = glob_sockets();
    assert!(host_sockets.len() >= 2, "{host_sockets:?}");
    for path in host_sockets {
        let out = run(
            fx,
            &a,
            &format!(
                "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('{path}')\" 2>&1 | tail -1"
            ),
        );
        assert!(out.contains("FileNotFoundError"), "{path}: {out}");
    }
    fx.tokio.block_on(a.close());
    fx.tokio.block_on(b.close());
}

/// The proxy sockets on the host (under the runtimes' private socket dirs).
fn glob_sockets() -> Vec<String> {
    let mut out = Vec::new();
    for base in ["/dev/shm", &std::env::temp_dir().to_string_lossy()] {
        let Ok(dirs) = std::fs::read_dir(base) else {
            continue;
        };
        for d in dirs.flatten() {
            let Ok(subs) = std::fs::read_dir(d.path()) else {
                continue;
            };
            for s in subs.flatten() {
                let sock = s.path().join("proxy.sock");
                if s.file_name().to_string_lossy().starts_with("net-") && sock.exists() {
                    out.push(sock.to_string_lossy().into_owned());
                }
            }
        }
    }
    out
}

#[test]
fn upstream_alias_adds_the_key_that_never_enters_the_sandbox() {
    let fx = fx();
    if skip(fx) {
        return;
    }
    let s = session(fx, "upstream", None);
    let out = run(
        fx,
        &s,
        "curl -sS -H 'x-api-key: forged' http://sister.internal/models",
    );
    assert!(out.contains("GET /v1/models HTTP/1.1"), "{out}");
    assert!(out.contains(&format!("x-api-key: {SECRET}")), "{out}");
    assert!(!out.contains("forged"), "{out}");
    // Nowhere in the sandbox: environment, processes, files.
    let out = run(
        fx,
        &s,
        &format!(
            "env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'; ps -ef; \
             grep -rls '{SECRET}' /workspace /tmp /run /etc /mnt /dev/shm 2>/dev/null; echo done"
        ),
    );
    assert!(out.ends_with("done"), "{out}");
    assert!(out.contains("HTTP_PROXY=http://127.0.0.1:3128"), "{out}");
    assert!(!out.contains(SECRET), "{out}");
    assert!(!out.contains(SECRET_ENV), "{out}");
    fx.tokio.block_on(s.close());
}

#[test]
fn pooled_and_fresh_sandboxes_both_get_the_proxy() {
    let fx = fx();
    if skip(fx) {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while fx.rt.pooled_sandboxes() < 1 {
        assert!(Instant::now() < deadline, "the pool did not fill");
        std::thread::sleep(Duration::from_millis(10));
    }
    let p = fx.port;
    // Adopts the pooled sandbox (started before the session was known).
    let pooled = session(fx, "pooled", None);
    assert!(!fx.tokio.block_on(pooled.bash_processes()).is_empty());
    assert!(
        run(
            fx,
            &pooled,
            &format!("curl -sS http://pypi.test:{p}/pooled")
        )
        .contains("GET /pooled")
    );
    // An explicit environment is not poolable: a fresh sandbox, proxy variables added.
    let _g = fx.tokio.enter();
    let mut spec = SessionSpec::new("fresh", fx.dir.path().join("sessions/fresh"));
    spec.env = Some([("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into());
    let fresh = fx.rt.session(spec).unwrap();
    assert!(
        run(fx, &fresh, &format!("curl -sS http://pypi.test:{p}/fresh")).contains("GET /fresh")
    );
    fx.tokio.block_on(pooled.close());
    fx.tokio.block_on(fresh.close());
    // Closed: the proxy is gone, the accounting stays.
    assert_eq!(pooled.network_usage().unwrap().connections, 1);
}

/// `type = "none"` (the default): exactly the behaviour before networking existed.
#[test]
fn type_none_is_unchanged() {
    let rt = crate::common::runtime();
    let report = rt.sandbox_report();
    if !report.available {
        eprintln!("skipping: bash sandbox unavailable");
        return;
    }
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = {
        let _g = tokio.enter();
        rt.session(SessionSpec::new("none", dir.path().join("s")))
            .unwrap()
    };
    assert!(s.network_usage().is_none());
    let out = bash(
        &tokio,
        &s,
        "env | grep -ci proxy; ls /run/wasm-sandbox/net 2>&1; \
         python3 -c \"import socket; socket.create_connection(('127.0.0.1', 3128), timeout=5)\" 2>&1 | tail -1",
    )
    .0;
    assert!(out.starts_with("0\n"), "{out}");
    assert!(out.contains("No such file or directory"), "{out}");
    // Landlock refuses TCP connect outright when networking is off.
    assert!(
        out.contains("PermissionError") || out.contains("ConnectionRefused"),
        "{out}"
    );
    tokio.block_on(s.close());
}

/// Through the worker against the fake control plane: the session's metadata
/// `sandbox.allowed_hosts` reaches the proxy and narrows the operator's list.
///
/// Runs on the fixture's tokio runtime: the runtime's pool filler and the
/// pooled shells live on the tokio runtime that starts them, so a per-test
/// runtime that ends would leave dead pooled shells for the other tests.
#[test]
fn the_worker_applies_the_session_metadata_narrowing() {
    let fx = fx();
    if skip(fx) {
        return;
    }
    fx.tokio.block_on(worker_narrowing(fx));
}

async fn worker_narrowing(fx: &'static Fx) {
    let p = fx.port;
    let fake = crate::worker::fake().await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = serde_json::json!({
        "name": "egress-narrowing",
        "session": {"metadata": {"sandbox.allowed_hosts": "pypi.test"}},
        "steps": [
            {"tool_use": {"label": "ok", "name": "bash",
                          "input": {"command": format!("curl -sS http://pypi.test:{p}/w")}}},
            {"tool_use": {"label": "narrowed", "name": "bash",
                          "input": {"command": format!("curl -sS http://other.test:{p}/w")}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    });
    let (_, session_id) = fake.enqueue_session(
        wasm_sandbox_fake_control_plane::Scenario::from_json(&scenario.to_string()).unwrap(),
    );
    let provider = wasm_sandbox_worker::core_adapter::CoreProvider::new(fx.rt.clone());
    crate::worker::finished(crate::worker::start(
        crate::worker::config(&fake, dir.path()),
        provider,
    ))
    .await
    .unwrap();
    let results = fake.tool_results(&session_id);
    assert_eq!(results.len(), 2);
    assert!(
        results[0].text().contains("GET /w HTTP/1.1"),
        "{}",
        results[0].text()
    );
    assert!(
        results[1].text().contains("refused other.test:"),
        "{}",
        results[1].text()
    );
    assert!(
        results[1]
            .text()
            .contains("not in the session's sandbox.allowed_hosts"),
        "{}",
        results[1].text()
    );
}

/// Issue #14 item 4 (review finding 8): a `[[nn.remote]]` model that names the
/// `sister` upstream reaches `<upstream url>/<path>` with the upstream's header,
/// configured once. Runs in wasmtime (no bash sandbox needed).
#[test]
fn an_nn_remote_model_uses_the_upstream_definition() {
    let fx = fx();
    let s = session(fx, "nn-upstream", None);
    let wasm = std::fs::read(env!("NN_REMOTE_WASM")).unwrap();
    let cmd = fx.rt.load_command(&wasm).unwrap();
    let args: Vec<String> = vec!["nn-remote".into(), "ocr-sister".into()];
    let out = s.run_command(&cmd, &args, b"image-bytes").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    // The echo server answers with the request head it got.
    assert!(stdout.contains("post /v1/ocr http/1.1"), "{stdout}");
    assert!(stdout.contains(&format!("x-api-key: {SECRET}")), "{stdout}");
    fx.tokio.block_on(s.close());
}
