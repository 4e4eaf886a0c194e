//! The `wasm-sandbox` binary: `replay` end to end.

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

fn replay(workdir: &std::path::Path, args: &[&str], input: &str) -> (i32, Vec<Value>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
        .arg("replay")
        .arg("--workdir")
        .arg(workdir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasm-sandbox");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each output line is JSON"))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn replay_runs_calls_and_skips_tools_it_does_not_own() {
    let dir = tempfile::tempdir().unwrap();
    let input = [
        r#"{"id": "1", "name": "write", "input": {"file_path": "a.txt", "content": "hello\n"}}"#,
        r#"{"id": "2", "name": "web_fetch", "input": {"url": "https://example.com"}}"#,
        r#"{"id": "3", "name": "read", "input": {"file_path": "/workspace/a.txt"}}"#,
        r#"{"id": "4", "name": "read", "input": {"file_path": "../etc/passwd"}}"#,
        r#"{"id": "5", "name": "bash", "input": {"command": "cat a.txt; pwd"}}"#,
        r#"{"id": "6", "name": "glob", "input": {"pattern": "*.txt"}}"#,
    ]
    .join("\n");
    let (code, lines, stderr) = replay(dir.path(), &[], &input);
    assert_eq!(code, 0, "{stderr}");
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["1", "3", "4", "5", "6"], "web_fetch produces no line");
    assert_eq!(lines[0]["content"][0]["text"], "wrote 6 bytes to a.txt");
    assert_eq!(lines[1]["content"][0]["text"], "hello\n");
    assert_eq!(lines[1]["is_error"], false);
    assert_eq!(lines[2]["is_error"], true);
    assert_eq!(
        lines[2]["content"][0]["text"],
        "read: path '../etc/passwd' is outside the session's working directory and its other permitted directories"
    );
    assert_eq!(
        lines[3]["content"][0]["text"], "hello\n/workspace",
        "{stderr}"
    );
    assert_eq!(lines[4]["content"][0]["text"], "/workspace/a.txt");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.txt")).unwrap(),
        "hello\n"
    );
}

#[test]
fn replay_honours_memory_stores_caps_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("n.md"), "0123456789").unwrap();
    let store = format!("/mnt/memory/notes={}:ro", notes.display());
    let input = [
        r#"{"id": "1", "name": "read", "input": {"file_path": "/mnt/memory/notes/n.md"}}"#,
        r#"{"id": "2", "name": "write", "input": {"file_path": "/mnt/memory/notes/x.md", "content": "x"}}"#,
        r#"{"id": "3", "name": "bash", "input": {"command": "echo $GREETING; touch /mnt/memory/notes/y 2>&1 | head -c 0; ls /mnt/memory/notes"}}"#,
    ]
    .join("\n");
    let (code, lines, stderr) = replay(
        &ws,
        &[
            "--memory-store",
            &store,
            "--max-file-bytes",
            "5",
            "--env",
            "GREETING=hi",
            "--env",
            "PATH=/usr/bin:/bin",
        ],
        &input,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        lines[0]["content"][0]["text"],
        "read: /mnt/memory/notes/n.md is 10 bytes, exceeds 5-byte limit. Use the view_range parameter to read specific line ranges, e.g. view_range: [1, 500]."
    );
    assert_eq!(
        lines[1]["content"][0]["text"],
        "write: /mnt/memory/notes/x.md is inside read-only directory /mnt/memory/notes"
    );
    assert_eq!(
        lines[2]["content"][0]["text"], "hi\nn.md",
        "bash cannot write a read-only store: {stderr}"
    );
    assert!(!notes.join("y").exists());
}

#[test]
fn replay_reports_bad_lines_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let input =
        "not json\n{\"id\": \"2\", \"name\": \"read\", \"input\": {\"file_path\": \"nope\"}}\n";
    let (code, lines, stderr) = replay(dir.path(), &[], input);
    assert_eq!(code, 1);
    assert!(stderr.contains("line 1"), "{stderr}");
    assert_eq!(lines.len(), 1, "later lines still run");
    assert_eq!(
        lines[0]["content"][0]["text"],
        "read: nope: no such file or directory"
    );
}

#[test]
fn help_describes_replay() {
    let out = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
        .args(["replay", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in [
        "--workdir",
        "--memory-store",
        "--max-file-bytes",
        "--max-image-base64-bytes",
        "--max-pdf-bytes",
        "--env",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

/// `config check` accepts the shipped Kubernetes config and names a mistyped key.
#[test]
fn config_check_accepts_the_deploy_config_and_rejects_typos() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/k8s/base/configmap.yaml"
    ))
    .unwrap();
    // The TOML is the indented block after `wasm-sandbox.toml: |`.
    let toml: String = manifest
        .split("wasm-sandbox.toml: |\n")
        .nth(1)
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cache_dir = \"/var/lib/wasm-sandbox/cache\""),
        "{stdout}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[runtime.wasm_run]\nenabeld = false\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("enabeld"));
}
