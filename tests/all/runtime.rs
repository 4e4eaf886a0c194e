//! Runtime mechanics: compile once, sessions only instantiate.

use crate::common::{Fixture, runtime};
use serde_json::json;
use wasm_sandbox_runtime::{SessionSpec, ToolCall};

#[test]
fn sessions_never_compile() {
    let rt = runtime();
    // Force the one compilation, then create many sessions and use them.
    let before = rt.compilations();
    assert!(
        before >= 1,
        "the runtime compiled its component at start-up"
    );
    let dir = tempfile::tempdir().unwrap();
    for i in 0..25 {
        let s = rt
            .session(SessionSpec::new(
                format!("s{i}"),
                dir.path().join(format!("s{i}")),
            ))
            .unwrap();
        let r = s
            .call_file_tool_blocking(&ToolCall::new(
                "t",
                "write",
                json!({"file_path": "a.txt", "content": "x"}),
            ))
            .unwrap();
        assert!(!r.is_error, "{r:?}");
    }
    assert_eq!(
        rt.compilations(),
        before,
        "creating sessions must not compile anything"
    );
}

#[test]
fn unknown_tools_are_not_ours() {
    let f = Fixture::new();
    let call = ToolCall::new("t", "web_fetch", json!({"url": "https://example.com"}));
    assert!(f.session.call_file_tool_blocking(&call).is_none());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(rt.block_on(f.session.call_tool(&call)).is_none());
    let call = ToolCall::new("t", "Read", json!({"file_path": "a"}));
    assert!(
        rt.block_on(f.session.call_tool(&call)).is_none(),
        "names are case-sensitive"
    );
}

#[test]
fn sessions_are_isolated() {
    let a = Fixture::new();
    let b = Fixture::new();
    let r = a.tool(
        "write",
        json!({"file_path": "mine.txt", "content": "a's data"}),
    );
    assert!(!r.is_error);
    let r = b.tool("read", json!({"file_path": "mine.txt"}));
    assert!(r.is_error, "b must not see a's file: {r:?}");
    assert!(!b.ws().join("mine.txt").exists());
    assert_eq!(
        std::fs::read_to_string(a.ws().join("mine.txt")).unwrap(),
        "a's data"
    );
}

#[test]
fn async_calls_round_trip() {
    let f = Fixture::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let w = f
            .session
            .call_tool(&ToolCall::new(
                "1",
                "write",
                json!({"file_path": "x/y.txt", "content": "héllo\n"}),
            ))
            .await
            .unwrap();
        assert_eq!(w.text_content(), "wrote 6 bytes to x/y.txt");
        let r = f
            .session
            .call_tool(&ToolCall::new(
                "2",
                "read",
                json!({"file_path": "/workspace/x/y.txt"}),
            ))
            .await
            .unwrap();
        assert_eq!(r.text_content(), "héllo\n");
        assert!(!r.is_error);
    });
}
