//! Operating the worker (issue 17), as a real `wasm-sandbox` process against the fake
//! control plane: every metric name the deploy manifests and docs use is exported after a
//! session; `/readyz` answers 503 with the reason when the bash sandbox cannot start (and 200
//! here normally, and with the unsandboxed opt-in); JSON log lines carry `timestamp`, `level`,
//! `message` at the top level, fatal start-up errors included; `wasm-sandbox doctor` passes on
//! this host and fails, with the fix, when bubblewrap is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane, Handle, Scenario, WorkState};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

mod common;
use common::{free_addr, get, wait_for};

fn serve(fake: &Handle, workdir: &Path, ops: SocketAddr, config: Option<&Path>) -> Child {
    let mut cmd = common::serve_command(fake, workdir);
    cmd.args(common::FAST_JSON)
        .arg("--ops-listen")
        .arg(ops.to_string())
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.spawn().expect("spawn wasm-sandbox serve")
}

fn sigterm_and_wait(child: Child) -> Output {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    child.wait_with_output().expect("wait")
}

/// Every stderr line parses as a JSON object with top-level `timestamp`, `level`, `message`.
fn json_lines(stderr: &[u8]) -> Vec<serde_json::Map<String, Value>> {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n--- all:\n{text}"));
            let Value::Object(map) = v else {
                panic!("not a JSON object: {l}")
            };
            for key in ["timestamp", "level", "message"] {
                assert!(
                    map.get(key).is_some_and(Value::is_string),
                    "no top-level {key}: {l}"
                );
            }
            assert!(!map.contains_key("fields"), "nested fields: {l}");
            map
        })
        .collect()
}

/// Metric names (`wasm_sandbox_…`) mentioned in deploy/, README.md and docs/: every match of
/// `wasm_sandbox_[a-z_]+` except Rust paths (`wasm_sandbox_fs::…`) and crate names.
fn documented_metric_names() -> Vec<String> {
    let root = repo_root();
    let crates: Vec<String> = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("wasm-sandbox-"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|c| format!("wasm_sandbox_{}", c.replace('-', "_")))
        .collect();
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("deploy"), root.join("docs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let mut names = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue; // not text
        };
        let mut rest = text.as_str();
        while let Some(i) = rest.find("wasm_sandbox_") {
            let tail = &rest[i..];
            let len = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            let name = tail[..len].trim_end_matches('_').to_owned();
            let rust_path = tail[len..].starts_with("::");
            if !rust_path && !crates.contains(&name) && !names.contains(&name) {
                names.push(name);
            }
            rest = &tail[len.max(1)..];
        }
    }
    names
}

fn session(name: &str) -> Scenario {
    let json = serde_json::json!({
        "name": name,
        "steps": [
            {"tool_use": {"label": "b", "name": "bash", "input": {"command": "echo hi > f.txt"}}},
            {"tool_use": {"label": "r", "name": "read", "input": {"file_path": "/workspace/f.txt"}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    });
    Scenario::from_json(&json.to_string()).expect("scenario")
}

/// Issue 17: the Prometheus KEDA alternative in deploy/ queried `wasm_sandbox_queue_depth`,
/// which was never exported. Now every metric name a manifest or doc uses is in `/metrics`
/// after one session, with the queue gauges set from `work.stats`, plus `build_info`. The same
/// run checks `/readyz` (200 on this host) and that its JSON log lines carry top-level
/// `timestamp`, `level`, `message` and the span fields (`work_id`) beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_metrics_are_exported_after_a_session_and_logs_are_flat_json() {
    let names = documented_metric_names();
    for known in ["wasm_sandbox_queue_depth", "wasm_sandbox_sessions_active"] {
        assert!(
            names.iter().any(|n| n == known),
            "the scan misses {known}: {names:?}"
        );
    }
    let fake = std::sync::Arc::new(
        FakeControlPlane::start(FakeConfig::default())
            .await
            .expect("fake"),
    );
    let dir = tempfile::tempdir().unwrap();
    let (work_id, session_id) = fake.enqueue_session(session("m"));
    let ops = free_addr();
    let child = serve(&fake, &dir.path().join("w"), ops, None);
    let f = std::sync::Arc::clone(&fake);
    let w = work_id.clone();
    let (metrics, ready) = tokio::task::spawn_blocking(move || {
        wait_for("the session to finish", || {
            (f.work_state(&w) == Some(WorkState::Stopped)).then_some(())
        });
        let ready = wait_for("/readyz", || get(ops, "/readyz"));
        let metrics = wait_for("/metrics", || get(ops, "/metrics"));
        (metrics, ready)
    })
    .await
    .unwrap();
    assert_eq!(fake.tool_results(&session_id).len(), 2);
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert_eq!(metrics.0, 200);
    let text = metrics.1;
    for name in &names {
        let exported = text.lines().any(|l| {
            l.strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with([' ', '{']))
                || l.starts_with(&format!("# TYPE {name} "))
        });
        assert!(
            exported,
            "{name} (used in deploy/ or docs) is not exported:\n{text}"
        );
    }
    // The fake's work.stats answered at start-up: the gauge carries a value, not just a name.
    assert!(
        text.lines()
            .any(|l| l.starts_with("wasm_sandbox_queue_depth ")),
        "{text}"
    );
    assert!(
        text.contains("wasm_sandbox_build_info{version=\""),
        "{text}"
    );
    assert!(
        text.contains("wasm_sandbox_tool_duration_seconds_bucket{le=\"0.00001\",tool=\"read\"}"),
        "buckets start at 10 µs:\n{text}"
    );

    let out = tokio::task::spawn_blocking(move || sigterm_and_wait(child))
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out.stderr);
    assert!(
        lines.iter().any(
            |l| l.get("work_id").and_then(Value::as_str) == Some(work_id.as_str())
                && l.get("session_id").and_then(Value::as_str) == Some(session_id.as_str())
        ),
        "no line carries the work span's fields at the top level"
    );
    assert!(lines.iter().any(|l| l["level"] == "INFO"));
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Issue 17: with a bash sandbox that cannot start, the worker reported ready while every bash
/// call failed. Simulated by config (a `bwrap_path` that does not exist): `/readyz` answers 503
/// naming the bash sandbox, the reason and the fix. With the explicit unsandboxed opt-in,
/// sessions do work (bash runs on the host, as that option promises), so it stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_with_the_reason_when_the_bash_sandbox_cannot_start() {
    let fake = FakeControlPlane::start(FakeConfig::default())
        .await
        .expect("fake");
    let dir = tempfile::tempdir().unwrap();
    let broken = write_config(
        dir.path(),
        "broken.toml",
        "[runtime.bash]\nbwrap_path = \"/nonexistent/bwrap\"\n",
    );
    let ops = free_addr();
    let child = serve(&fake, &dir.path().join("w1"), ops, Some(&broken));
    let (status, body) = tokio::task::spawn_blocking(move || {
        let r = wait_for("/readyz", || get(ops, "/readyz"));
        // Even after successful polls it stays 503.
        std::thread::sleep(Duration::from_millis(500));
        let again = get(ops, "/readyz").unwrap();
        assert_eq!(again.0, r.0);
        r
    })
    .await
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("bash sandbox"), "{body}");
    assert!(body.contains("/nonexistent/bwrap"), "the reason: {body}");
    assert!(
        body.contains("fix:") && body.contains("bubblewrap"),
        "the fix: {body}"
    );
    let out = tokio::task::spawn_blocking(move || sigterm_and_wait(child))
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let opt_in = write_config(
        dir.path(),
        "opt-in.toml",
        "[runtime.bash]\nbwrap_path = \"/nonexistent/bwrap\"\nallow_unsandboxed_bash_i_understand_the_risk = true\n",
    );
    let ops = free_addr();
    let child = serve(&fake, &dir.path().join("w2"), ops, Some(&opt_in));
    let (status, body) = tokio::task::spawn_blocking(move || {
        wait_for("/readyz 200", || get(ops, "/readyz").filter(|r| r.0 == 200))
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let out = tokio::task::spawn_blocking(move || sigterm_and_wait(child))
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Issue 17: fatal start-up errors were printed as plain text even with `--log-format json`.
/// Now a broken config file, a missing environment id, and a config file that itself asks for
/// JSON each give one JSON line with top-level `level` `ERROR` and the error as `message`.
#[test]
fn fatal_start_up_errors_are_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(dir.path(), "bad.toml", "concurrency = 2\nbogus_key = 1\n");
    let json_file = write_config(dir.path(), "json.toml", "log_format = \"json\"\n");
    let run = |args: &[&str], config: &Path| {
        bin()
            .args(["serve"])
            .args(args)
            .arg("--config")
            .arg(config)
            .env_remove("ANTHROPIC_ENVIRONMENT_ID")
            .env_remove("ANTHROPIC_ENVIRONMENT_KEY")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    for (what, out, needle) in [
        (
            "a broken config file",
            run(&["--log-format", "json", "--environment-id", "env_x"], &bad),
            "bogus_key",
        ),
        (
            "a missing environment id",
            run(&["--log-format", "json"], &json_file),
            "environment-id",
        ),
        (
            "log_format = \"json\" in the file",
            run(&[], &json_file),
            "environment-id",
        ),
    ] {
        assert!(!out.status.success(), "{what}: {out:?}");
        let lines = json_lines(&out.stderr);
        let fatal = lines
            .iter()
            .find(|l| l["level"] == "ERROR")
            .unwrap_or_else(|| panic!("{what}: no ERROR line in {lines:?}"));
        assert!(
            fatal["message"].as_str().unwrap().contains(needle),
            "{what}: {fatal:?}"
        );
        assert_eq!(fatal["fatal"], true, "{what}");
    }
    // Text stays text.
    let out = run(&["--environment-id", "env_x"], &bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("bogus_key"),
        "{stderr}"
    );
}

const DOCTOR_CHECKS: [&str; 10] = [
    "user",
    "user_namespaces",
    "apparmor_userns",
    "bubblewrap",
    "bash_sandbox",
    "landlock",
    "seccomp",
    "cgroups",
    "onnx_runtime",
    "compile_cache",
];

/// `wasm-sandbox doctor` checks this host and names every check; it exits 0 where `serve`
/// can work (this machine), and its JSON form says the same.
#[test]
fn doctor_passes_on_this_host_and_names_each_check() {
    let out = bin().arg("doctor").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.contains("FAIL  bash_sandbox") {
        eprintln!("skipped: the bash sandbox cannot start on this host:\n{stdout}");
        return;
    }
    assert!(out.status.success(), "{stdout}\n{out:?}");
    for name in DOCTOR_CHECKS {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "no {name} line:\n{stdout}"
        );
    }
    assert!(stdout.contains("ok    bash_sandbox"), "{stdout}");
    let out = bin().args(["doctor", "--format", "json"]).output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, DOCTOR_CHECKS);
}

/// With a config whose bubblewrap is missing, doctor reports the sandbox check as failed with
/// the fix, and exits non-zero (`serve` would be unable to run bash).
#[test]
fn doctor_fails_with_the_fix_when_bubblewrap_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "c.toml",
        "[runtime.bash]\nbwrap_path = \"/nonexistent/bwrap\"\n",
    );
    let out = bin()
        .args(["doctor", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .position(|l| l.starts_with("FAIL  bash_sandbox"))
        .unwrap_or_else(|| panic!("no failed bash_sandbox:\n{stdout}"));
    let fix = stdout.lines().nth(line + 1).unwrap();
    assert!(
        fix.trim_start().starts_with("fix:") && fix.contains("bubblewrap"),
        "{stdout}"
    );
    assert!(stdout.contains("/nonexistent/bwrap"), "{stdout}");
    let out = bin()
        .args(["doctor", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let sandbox = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bash_sandbox")
        .unwrap();
    assert_eq!(sandbox["status"], "fail");
    assert!(sandbox["fix"].as_str().unwrap().contains("bubblewrap"));
}
