//! `[runtime.persistence]` across real `wasm-sandbox serve` processes: a worker killed with
//! `kill -9` mid-item loses at most the last checkpoint interval; a second process with its
//! own workdir reclaims the item, finds the checkpoint restored, and when the session
//! terminates its snapshots are deleted. Also `wasm-sandbox snapshots list|delete`.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane, Handle, Scenario, WorkState};

mod common;
use common::{FAST_JSON, wait_until};

fn serve(fake: &Handle, workdir: &Path, config: &Path, env: &[(&str, &str)]) -> Child {
    common::serve_command(fake, workdir)
        .envs(env.iter().copied())
        .args(FAST_JSON)
        .args(["--concurrency", "1"])
        .arg("--config")
        .arg(config)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wasm-sandbox serve")
}

fn generations(store: &Path, session_id: &str) -> usize {
    std::fs::read_dir(store.join(format!("sessions/{session_id}/gen")))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The newest generation number stored (0: none).
fn newest_generation(store: &Path, session_id: &str) -> u64 {
    std::fs::read_dir(store.join(format!("sessions/{session_id}/gen")))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_item_then_reclaim_restores_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let table = format!("store = \"file://{}\"", store.display());
    kill_9_then_reclaim(tmp.path(), &table, &store, &[]).await;
}

/// The same against a real S3 server on loopback (`s3s-fs` from `target/tools`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_reclaim_with_an_s3_store() {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/s3s-fs");
    if !bin.exists() {
        // scripts/test.sh sets WASM_SANDBOX_REQUIRE_S3=1 after installing it: no silent skip.
        assert!(
            std::env::var("WASM_SANDBOX_REQUIRE_S3").as_deref() != Ok("1"),
            "WASM_SANDBOX_REQUIRE_S3=1 but target/tools/bin/s3s-fs is missing"
        );
        eprintln!("skipped: target/tools/bin/s3s-fs is missing (scripts/test.sh installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("s3data");
    std::fs::create_dir_all(data.join("snap")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s3 = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "AK", "--secret-key", "SK"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("s3s-fs", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let table = format!("store = \"s3://snap/env\"\nendpoint = \"http://127.0.0.1:{port}\"");
    let env = [
        ("AWS_ACCESS_KEY_ID", "AK"),
        ("AWS_SECRET_ACCESS_KEY", "SK"),
        ("AWS_REGION", "us-east-1"),
    ];
    kill_9_then_reclaim(tmp.path(), &table, &data.join("snap/env"), &env).await;
    let _ = s3.kill();
    let _ = s3.wait();
}

async fn kill_9_then_reclaim(tmp: &Path, table: &str, store: &Path, env: &[(&str, &str)]) {
    let fake = FakeControlPlane::start(FakeConfig {
        lease_ttl_seconds: 2,
        ..FakeConfig::default()
    })
    .await
    .expect("fake");
    let scenario = serde_json::json!({
        "name": "checkpoint",
        "steps": [
            {"tool_use": {"label": "write", "name": "bash",
                          "input": {"command": "echo checkpointed > a.txt && echo wrote"}}},
            {"tool_use": {"label": "slow", "name": "bash",
                          "input": {"command": "sleep 4; cat a.txt || echo missing"}}},
            {"idle": {"stop_reason": "end_turn"}},
            "terminate"
        ]
    });
    let (work_id, session_id) =
        fake.enqueue_session(Scenario::from_json(&scenario.to_string()).unwrap());
    let config = tmp.join("wasm-sandbox.toml");
    std::fs::write(
        &config,
        format!("[runtime.persistence]\n{table}\ncheckpoint_interval = \"1s\"\n"),
    )
    .unwrap();
    let (dir_a, dir_b) = (tmp.join("a"), tmp.join("b"));
    let mut first = serve(&fake, &dir_a, &config, env);
    // The first call was answered, then a checkpoint taken while the slow call runs: one that
    // started after the answer (a generation newer than any there when it came), so it holds
    // the write.
    wait_until("the write", || !fake.tool_results(&session_id).is_empty()).await;
    let before = newest_generation(store, &session_id);
    wait_until("a checkpoint after the write", || {
        newest_generation(store, &session_id) > before
    })
    .await;
    first.kill().expect("kill -9");
    let _ = first.wait();
    // Another process, another workdir, the same store: reclaims once the lease runs out.
    let mut second = serve(&fake, &dir_b, &config, env);
    wait_until("the reclaimed item to finish", || {
        fake.work_state(&work_id) == Some(WorkState::Stopped)
    })
    .await;
    let texts: Vec<String> = fake
        .tool_results(&session_id)
        .into_iter()
        .filter(|r| r.accepted)
        .map(|r| r.text())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(
        texts[1].trim(),
        "checkpointed",
        "restored from the checkpoint: {texts:?}"
    );
    // The session terminated: its snapshots are gone.
    assert_eq!(generations(store, &session_id), 0);
    let _ = second.kill();
    let _ = second.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_list_and_delete_for_operators() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let cfg = wasm_sandbox_persist::PersistenceConfig::new(format!("file://{}", store.display()));
    let p = wasm_sandbox_persist::Persistence::open(&cfg).unwrap();
    let (ws, out) = (tmp.path().join("ws"), tmp.path().join("out"));
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(ws.join("f"), "x").unwrap();
    for id in ["sesn_a", "sesn_b"] {
        let mut st = wasm_sandbox_persist::SessionState::new(id);
        p.snapshot(&mut st, &ws, &out, &[], "t").await.unwrap();
    }
    let config = tmp.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime.persistence]\nstore = \"file://{}\"\n",
            store.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
            .arg("snapshots")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let listed = run(&["list", "--json"]);
    let lines: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert_eq!(lines[0]["generation"], 1);
    let table = run(&["list", "--session", "sesn_a"]);
    assert!(
        table.contains("sesn_a") && !table.contains("sesn_b"),
        "{table}"
    );
    assert!(run(&["delete", "--session", "sesn_a"]).contains("objects deleted"));
    let listed = run(&["list", "--json"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains("sesn_b"));
    // A store directory that does not exist lists nothing and is not created.
    let missing = tmp.path().join("no-store-here");
    std::fs::write(
        &config,
        format!(
            "[runtime.persistence]\nstore = \"file://{}\"\n",
            missing.display()
        ),
    )
    .unwrap();
    assert_eq!(run(&["list", "--json"]), "");
    assert!(
        !missing.exists(),
        "snapshots list created the store directory"
    );
    // A config without the table is an error, not an empty listing.
    std::fs::write(&config, "concurrency = 1\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
        .args(["snapshots", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!o.status.success());
}
