//! The remote backend through the `nn-remote` guest component, against a
//! loopback HTTP server (axum on 127.0.0.1:0) that records every request:
//! the requests sent per kind, credentials, timeouts, quotas and errors.
//! No ONNX Runtime needed.

use super::common::*;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use wasm_sandbox_hostcalls_nn::{NnConfig, NnHost, RemoteKind, RemoteModel, RemoteUsage};

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Recorded>>>;

const SPEECH: &[u8] = &[b'R', b'I', b'F', b'F', 0, 255, 1, 2, 0x80];
const SECRET: &str = "sk-test-secret-7f3a";

struct Server {
    base: String,
    log: Log,
}

impl Server {
    fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
    fn hits(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }
}

async fn handle(log: Log, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    let path = uri.path().to_string();
    log.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        headers,
        body: body.to_vec(),
    });
    match path.as_str() {
        "/v1/chat/completions" => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"id":"c1","choices":[{"message":{"role":"assistant","content":"hi there"}}]}"#,
        )
            .into_response(),
        "/v1/audio/transcriptions" => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"text":"hello world"}"#,
        )
            .into_response(),
        "/ocr" => "RECOGNISED TEXT".into_response(),
        "/v1/audio/speech" => {
            ([(header::CONTENT_TYPE, "audio/wav")], SPEECH.to_vec()).into_response()
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "too late".into_response()
        }
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        "/redirect" => (
            StatusCode::FOUND,
            [(header::LOCATION, "/v1/chat/completions")],
            "",
        )
            .into_response(),
        "/big" => "x".repeat(10_000).into_response(),
        "/v2/models/classify/infer" => infer(&body),
        _ => (StatusCode::NOT_FOUND, "no such path").into_response(),
    }
}

/// An Open Inference Protocol v2 server for the classifier, as the GPU
/// check's torch server answers (flat data, FP32).
fn infer(body: &[u8]) -> Response {
    let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let input = &req["inputs"][0];
    let x: Vec<f32> = input["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_f64())
                .map(|v| v as f32)
                .collect()
        })
        .unwrap_or_default();
    if input["name"] != "x"
        || input["datatype"] != "FP32"
        || input["shape"] != serde_json::json!([1, 4])
        || x.len() != 4
    {
        return (StatusCode::BAD_REQUEST, format!("bad request: {req}")).into_response();
    }
    let (logits, probs) = expected([x[0], x[1], x[2], x[3]]);
    let answer = serde_json::json!({
        "model_name": "classify",
        "outputs": [
            {"name": "logits", "shape": [1, 3], "datatype": "FP32", "data": logits},
            {"name": "probs", "shape": [1, 3], "datatype": "FP32", "data": [probs]},
        ]
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}

/// Starts a recording server on 127.0.0.1:0 in its own thread and runtime;
/// it lives until the test process ends.
fn server() -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let l = log.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app =
                axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| {
                    handle(l.clone(), m, u, h, b)
                });
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    Server { base, log }
}

fn set_secret() {
    static ONCE: Once = Once::new();
    // SAFETY: set once, before any host reads it, with the same value every
    // time; the only other write to the environment in this test binary is the
    // egress fixture's (`crate::egress`), of another variable, likewise once.
    ONCE.call_once(|| unsafe { std::env::set_var("NN_TEST_API_KEY", SECRET) });
}

fn model(name: &str, kind: RemoteKind, url: String) -> RemoteModel {
    RemoteModel {
        name: name.into(),
        kind,
        url,
        upstream: None,
        path: None,
        header_env: Vec::new(),
        model: None,
        api_key_env: None,
        api_key_header: None,
        timeout_ms: 10_000,
        content_type: None,
    }
}

fn host(models: Vec<RemoteModel>, max_calls: u64, max_bytes: u64) -> NnHost {
    NnHost::new(NnConfig {
        onnx_library: Some("/nonexistent".into()),
        remote: models,
        max_calls,
        max_bytes,
        ..NnConfig::default()
    })
    .unwrap()
}

fn remote(nn: wasm_sandbox_hostcalls_nn::WasiNnCtx, args: &[&str], stdin: &[u8]) -> Output {
    run(&guests().remote, nn, args, stdin, None)
}

#[test]
fn chat_sends_openai_json_with_the_hosts_key_and_model() {
    set_secret();
    let s = server();
    let mut m = model(
        "llm-small",
        RemoteKind::Chat,
        format!("{}/v1/chat/completions", s.base),
    );
    m.model = Some("upstream-7b".into());
    m.api_key_env = Some("NN_TEST_API_KEY".into());
    let h = host(vec![m], 10, 1 << 20);
    assert!(
        h.report().to_string().contains("llm-small=remote-chat"),
        "{}",
        h.report()
    );
    let prompt = r#"{"model":"guest-choice","messages":[{"role":"user","content":"hi"}]}"#;
    let out = remote(h.session_ctx(), &["llm-small", prompt], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout_str(),
        r#"{"id":"c1","choices":[{"message":{"role":"assistant","content":"hi there"}}]}"#
    );
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["authorization"], format!("Bearer {SECRET}"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body["model"], "upstream-7b",
        "the configured upstream model wins"
    );
    assert_eq!(body["messages"][0]["content"], "hi");
    // The guest never sees the key.
    assert!(!out.stdout_str().contains(SECRET) && !out.stderr.contains(SECRET));
}

#[test]
fn chat_payload_from_stdin_keeps_the_guests_model_and_custom_key_header() {
    set_secret();
    let s = server();
    let mut m = model(
        "llm-x",
        RemoteKind::Chat,
        format!("{}/v1/chat/completions", s.base),
    );
    m.api_key_env = Some("NN_TEST_API_KEY".into());
    m.api_key_header = Some("X-Api-Key".into());
    let h = host(vec![m], 10, 1 << 20);
    let out = remote(
        h.session_ctx(),
        &["llm-x"],
        br#"{"model":"m1","messages":[]}"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = &s.requests()[0];
    assert_eq!(r.headers["x-api-key"], SECRET);
    assert!(!r.headers.contains_key("authorization"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["model"], "m1");
    // Not JSON: refused before any request.
    let out = remote(h.session_ctx(), &["llm-x", "not json"], b"");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("nn-remote: invalid-argument: model llm-x: input must be UTF-8 JSON"),
        "{}",
        out.stderr
    );
    assert_eq!(s.requests().len(), 1);
}

#[test]
fn transcription_sends_multipart_audio() {
    let s = server();
    let mut m = model(
        "whisper-base",
        RemoteKind::Transcription,
        format!("{}/v1/audio/transcriptions", s.base),
    );
    m.model = Some("whisper-1".into());
    let h = host(vec![m], 10, 1 << 20);
    let audio: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let out = remote(h.session_ctx(), &["whisper-base"], &audio);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout_str(), r#"{"text":"hello world"}"#);
    let r = &s.requests()[0];
    let ct = &r.headers["content-type"];
    let boundary = ct
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap_or_else(|| panic!("{ct}"));
    let head = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
    );
    assert!(
        r.body.starts_with(head.as_bytes()),
        "{}",
        String::from_utf8_lossy(&r.body[..200])
    );
    let file_head = b"filename=\"audio\"\r\ncontent-type: application/octet-stream\r\n\r\n";
    let at = r
        .body
        .windows(file_head.len())
        .position(|w| w == file_head)
        .expect("file part")
        + file_head.len();
    assert_eq!(&r.body[at..at + audio.len()], &audio[..]);
    assert_eq!(
        &r.body[at + audio.len()..],
        format!("\r\n--{boundary}--\r\n").as_bytes()
    );
}

#[test]
fn ocr_posts_the_image_bytes_and_tts_returns_binary_audio() {
    let s = server();
    let mut ocr = model("ocr-doc", RemoteKind::Ocr, format!("{}/ocr", s.base));
    ocr.content_type = Some("image/png".into());
    let tts = model(
        "tts-voice",
        RemoteKind::Tts,
        format!("{}/v1/audio/speech", s.base),
    );
    let h = host(vec![ocr, tts], 10, 1 << 20);
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    let out = remote(h.session_ctx(), &["ocr-doc"], png);
    assert_eq!(
        (out.code, out.stdout_str().as_str()),
        (0, "RECOGNISED TEXT"),
        "{}",
        out.stderr
    );
    let out = remote(
        h.session_ctx(),
        &["tts-voice", r#"{"input":"hello","voice":"alloy"}"#],
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, SPEECH);
    let reqs = s.requests();
    assert_eq!(reqs[0].path, "/ocr");
    assert_eq!(reqs[0].headers["content-type"], "image/png");
    assert_eq!(reqs[0].body, png);
    let body: serde_json::Value = serde_json::from_slice(&reqs[1].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"input": "hello", "voice": "alloy", "model": "tts-voice"})
    );
}

#[test]
fn unknown_model_is_not_found() {
    let s = server();
    let h = host(
        vec![model(
            "llm-a",
            RemoteKind::Chat,
            format!("{}/v1/chat/completions", s.base),
        )],
        10,
        1 << 20,
    );
    let out = remote(h.session_ctx(), &["llm-b", "{}"], b"");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("nn-remote: not-found: no model named \"llm-b\""),
        "{}",
        out.stderr
    );
    assert!(s.requests().is_empty());
}

#[test]
fn endpoint_down_is_an_error_for_the_guest_not_a_trap() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The listener is dropped: nothing listens on that port now.
    let h = host(
        vec![model(
            "llm-down",
            RemoteKind::Chat,
            format!("http://127.0.0.1:{port}/v1/chat/completions"),
        )],
        10,
        1 << 20,
    );
    let out = remote(h.session_ctx(), &["llm-down", "{}"], b"");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("nn-remote: runtime-error: model llm-down: the endpoint is unreachable"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("127.0.0.1"),
        "the guest is not told the URL: {}",
        out.stderr
    );
}

#[test]
fn http_errors_and_redirects_are_errors_and_redirects_are_not_followed() {
    let s = server();
    let fail = model("llm-fail", RemoteKind::Chat, format!("{}/fail", s.base));
    let redirect = model(
        "llm-redir",
        RemoteKind::Chat,
        format!("{}/redirect", s.base),
    );
    let h = host(vec![fail, redirect], 10, 1 << 20);
    let out = remote(h.session_ctx(), &["llm-fail", "{}"], b"");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "runtime-error: model llm-fail: endpoint answered HTTP 500: upstream exploded"
        ),
        "{}",
        out.stderr
    );
    let out = remote(h.session_ctx(), &["llm-redir", "{}"], b"");
    assert_eq!(out.code, 1, "{}", out.stdout_str());
    assert!(
        out.stderr.contains("runtime-error: model llm-redir:"),
        "{}",
        out.stderr
    );
    assert_eq!(s.hits("/redirect"), 1);
    assert_eq!(
        s.hits("/v1/chat/completions"),
        0,
        "the redirect was followed"
    );
}

#[test]
fn a_slow_endpoint_times_out() {
    let s = server();
    let mut m = model("llm-slow", RemoteKind::Chat, format!("{}/slow", s.base));
    m.timeout_ms = 300;
    let h = host(vec![m], 10, 1 << 20);
    let out = remote(h.session_ctx(), &["llm-slow", "{}"], b"");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "nn-remote: timeout: model llm-slow: the endpoint did not answer within 300 ms"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn call_quota_is_per_session_across_stores() {
    let s = server();
    let h = host(
        vec![model(
            "llm-q",
            RemoteKind::Chat,
            format!("{}/v1/chat/completions", s.base),
        )],
        2,
        1 << 20,
    );
    let session = h.session();
    for _ in 0..2 {
        let out = remote(session.ctx(), &["llm-q", "{}"], b"");
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let out = remote(session.ctx(), &["llm-q", "{}"], b"");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("nn-remote: security: model llm-q: quota exceeded: this session has used its 2 remote calls"), "{}", out.stderr);
    assert_eq!(
        s.hits("/v1/chat/completions"),
        2,
        "the refused call never reached the endpoint"
    );
    assert_eq!(session.usage().calls, 2);
    // Another session has its own budget.
    let out = remote(h.session_ctx(), &["llm-q", "{}"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn byte_quota_counts_requests_and_responses() {
    let s = server();
    let big = model("ocr-big", RemoteKind::Ocr, format!("{}/big", s.base));
    let small = model("ocr-small", RemoteKind::Ocr, format!("{}/ocr", s.base));
    let h = host(vec![big, small], 100, 5_000);
    // A 10 000-byte response passes a 5 000-byte budget.
    let session = h.session();
    let out = remote(session.ctx(), &["ocr-big", "img"], b"");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("security: model ocr-big: quota exceeded"),
        "{}",
        out.stderr
    );
    // A request over the budget is refused before it is sent.
    let before = s.requests().len();
    let out = remote(session.ctx(), &["ocr-small"], &vec![7u8; 6_000]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("security: model ocr-small: quota exceeded: sending 6000 bytes"),
        "{}",
        out.stderr
    );
    assert_eq!(s.requests().len(), before);
    // Small calls are fine and counted: 3 bytes out, 15 back.
    let fresh = h.session();
    let out = remote(fresh.ctx(), &["ocr-small", "img"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        fresh.usage(),
        RemoteUsage {
            calls: 1,
            bytes: 3 + "RECOGNISED TEXT".len() as u64
        }
    );
}

#[test]
fn remote_calls_are_safe_on_a_tokio_runtime_thread() {
    let s = server();
    let h = host(
        vec![model(
            "llm-t",
            RemoteKind::Chat,
            format!("{}/v1/chat/completions", s.base),
        )],
        10,
        1 << 20,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The recommended path: guest calls on the blocking pool.
        let ctx = h.session_ctx();
        let out = tokio::task::spawn_blocking(move || remote(ctx, &["llm-t", "{}"], b""))
            .await
            .unwrap();
        assert_eq!(out.code, 0, "{}", out.stderr);
        // On a worker thread itself, inside the runtime context, via
        // block_in_place (wasmtime-wasi's sync stdio needs that much): the
        // HTTP client neither panics nor needs the runtime.
        let out = tokio::task::block_in_place(|| remote(h.session_ctx(), &["llm-t", "{}"], b""));
        assert_eq!(out.code, 0, "{}", out.stderr);
    });
    assert_eq!(s.hits("/v1/chat/completions"), 2);
}

#[test]
fn bad_remote_configs_are_rejected_at_start_up() {
    let cases = [
        (
            model("whisper-x", RemoteKind::Chat, "http://127.0.0.1:1/".into()),
            "must start with \"llm-\"",
        ),
        (
            model("llm-x", RemoteKind::Chat, "ftp://127.0.0.1/".into()),
            "must be http:// or https://",
        ),
        (
            model("LLM-x", RemoteKind::Chat, "http://127.0.0.1:1/".into()),
            "[a-z0-9._-]",
        ),
        (
            RemoteModel {
                api_key_env: Some("NN_TEST_SURELY_UNSET_VAR".into()),
                ..model("llm-k", RemoteKind::Chat, "http://127.0.0.1:1/".into())
            },
            "NN_TEST_SURELY_UNSET_VAR",
        ),
    ];
    for (m, want) in cases {
        let err = NnHost::new(NnConfig {
            remote: vec![m],
            ..NnConfig::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains(want),
            "{err} should mention {want}"
        );
    }
    let twice = vec![
        model("llm-a", RemoteKind::Chat, "http://127.0.0.1:1/".into()),
        model("llm-a", RemoteKind::Chat, "http://127.0.0.1:2/".into()),
    ];
    let err = NnHost::new(NnConfig {
        remote: twice,
        ..NnConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("used twice"), "{err}");
}

#[test]
fn tensor_models_speak_the_v2_inference_protocol_to_a_model_server() {
    let s = server();
    let h = host(
        vec![model(
            "tensor-classify",
            RemoteKind::Tensor,
            format!("{}/v2/models/classify/infer", s.base),
        )],
        10,
        1 << 20,
    );
    let out = run(
        &guests().classify,
        h.session_ctx(),
        &["--model", "tensor-classify", "1", "2", "3", "4"],
        b"",
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value =
        serde_json::from_str(out.stdout_str().lines().next().unwrap()).unwrap();
    let (logits, probs) = expected([1.0, 2.0, 3.0, 4.0]);
    assert_close(&output(&json, "logits"), &logits);
    assert_close(&output(&json, "probs"), &probs);
    let r = &s.requests()[0];
    assert_eq!(r.headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]})
    );
    // A shape the server rejects comes back as the server's error.
    let out = run(
        &guests().classify,
        h.session_ctx(),
        &["--model", "tensor-classify", "1", "2"],
        b"",
        None,
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("runtime-error: model tensor-classify: endpoint answered HTTP 400"),
        "{}",
        out.stderr
    );
    // Bytes are not tensors for it: nn-remote's u8 tensor goes through as UINT8
    // and the server refuses it.
    let out = remote(h.session_ctx(), &["tensor-classify", "abc"], b"");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("HTTP 400"), "{}", out.stderr);
}

/// One definition of an endpoint (issue #14 item 4): a model resolved from a
/// `[[runtime.networking.upstreams]]` entry sends that upstream's headers
/// verbatim (the runtime fills `header_env` in; see wasm-sandbox-runtime's
/// `resolve_nn_upstreams`), and an unresolved `upstream` is a start error.
#[test]
fn upstream_headers_are_sent_verbatim() {
    set_secret();
    let s = server();
    let mut m = model(
        "llm-shared",
        RemoteKind::Chat,
        format!("{}/v1/chat/completions", s.base),
    );
    m.upstream = Some("sister".into());
    m.header_env = vec![("x-api-key".into(), "NN_TEST_API_KEY".into())];
    let h = host(vec![m], 10, 1 << 20);
    let out = remote(h.session_ctx(), &["llm-shared", r#"{"messages":[]}"#], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = &s.requests()[0];
    assert_eq!(r.headers["x-api-key"], SECRET);
    assert!(!r.headers.contains_key("authorization"));
    let mut unresolved = model("llm-u", RemoteKind::Chat, String::new());
    unresolved.upstream = Some("sister".into());
    let err = NnHost::new(NnConfig {
        remote: vec![unresolved],
        ..NnConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("was not resolved"), "{err}");
}
