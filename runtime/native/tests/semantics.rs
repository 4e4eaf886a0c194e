//! The reference bash semantics (toolset.md §5.6), run inside the real sandbox.
//!
//! `fixtures/reference_bash.json` holds call sequences and the results the reference
//! SDK (anthropic 2.10.0) produced for them; `fixtures/gen_reference.py` regenerates it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use wasm_sandbox_native::BashOutput;

/// Replaces the random hex of split sentinels (`__ANT_CM''D_<32 hex>_DONE__`), which
/// bash echoes back in some syntax errors.
fn normalize(text: &str) -> String {
    let marker = "__ANT_CM''D_";
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(marker) {
        let (head, tail) = rest.split_at(i + marker.len());
        out.push_str(head);
        let hex = tail.get(..32).unwrap_or("");
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push_str("<HEX>");
            rest = &tail[32..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

fn short(s: &str) -> String {
    if s.len() <= 120 {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(60).collect();
    let tail: String = s
        .chars()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head:?}...{tail:?}")
}

#[tokio::test]
async fn matches_reference_fixture() {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("fixtures/reference_bash.json")).unwrap();
    assert!(cases.len() >= 50);
    let mut calls = 0;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let dirs = Dirs::new();
        let mut s = session(&dirs);
        for (input, want) in case["calls"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["expected"].as_array().unwrap())
        {
            let got = s.call(input).await;
            let want = BashOutput {
                text: normalize(want["text"].as_str().unwrap()),
                is_error: want["is_error"].as_bool().unwrap(),
            };
            let got = BashOutput {
                text: normalize(&got.text),
                is_error: got.is_error,
            };
            assert!(
                got == want,
                "case {name}, input {input}: got {} (len {}), want {} (len {})",
                short(&got.text),
                got.text.len(),
                short(&want.text),
                want.text.len()
            );
            assert_eq!(got.is_error, want.is_error, "case {name}, input {input}");
            calls += 1;
        }
        s.close().await;
    }
    eprintln!("{} cases, {calls} calls match the reference", cases.len());
}

#[tokio::test]
async fn dead_shell_stays_dead_until_restart() {
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    assert_eq!(run(&mut s, "echo bye; exit 0").await, err("bye"));
    // Unlike the reference's post-exit race, this is deterministic.
    for _ in 0..2 {
        assert_eq!(
            run(&mut s, "echo x").await,
            err("bash: bash session terminated; restart required")
        );
    }
    assert!(!s.is_running());
    assert_eq!(
        call(&mut s, json!({"restart": true})).await,
        ok("bash session restarted")
    );
    assert!(s.is_running());
    assert_eq!(run(&mut s, "echo back").await, ok("back"));
    s.close().await;
}

#[tokio::test]
async fn cancelled_call_kills_the_shell() {
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    assert_eq!(run(&mut s, "X=1; echo ready").await, ok("ready"));
    // The outer runner gives up on a call midway (its future is dropped).
    let r = tokio::time::timeout(Duration::from_millis(200), run(&mut s, "sleep 30")).await;
    assert!(r.is_err());
    assert_eq!(
        run(&mut s, "echo $X").await,
        err("bash: bash session terminated; restart required")
    );
    assert_eq!(
        call(&mut s, json!({"restart": true})).await,
        ok("bash session restarted")
    );
    assert_eq!(run(&mut s, "echo \"[$X]\"").await, ok("[]"));
    s.close().await;
}

#[tokio::test]
async fn close_then_call_starts_a_fresh_shell() {
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    assert_eq!(run(&mut s, "Y=2; echo $Y").await, ok("2"));
    s.close().await;
    assert!(!s.is_running());
    assert_eq!(run(&mut s, "echo \"[$Y]\"").await, ok("[]"));
    s.close().await;
}

#[tokio::test]
async fn workspace_is_cwd_and_shared_with_host() {
    let dirs = Dirs::new();
    std::fs::write(dirs.workspace().join("from_host.txt"), "host data").unwrap();
    let mut s = session(&dirs);
    assert_eq!(
        run(&mut s, "pwd; cat from_host.txt").await,
        ok("/workspace\nhost data")
    );
    assert_eq!(
        run(&mut s, "echo made > made.txt; echo out > /mnt/session/outputs/o.txt; echo m > /mnt/memory/rw/m.txt").await,
        ok("")
    );
    assert_eq!(
        std::fs::read_to_string(dirs.workspace().join("made.txt")).unwrap(),
        "made\n"
    );
    assert_eq!(
        std::fs::read_to_string(dirs.path("outputs/o.txt")).unwrap(),
        "out\n"
    );
    assert_eq!(
        std::fs::read_to_string(dirs.path("store-rw/m.txt")).unwrap(),
        "m\n"
    );
    // Ordinary tools work: pipes, subshells, python, /dev/null, /dev/stdout.
    assert_eq!(
        run(&mut s, "echo a | tr a b; python3 -c 'print(6*7)'; echo quiet >/dev/null; echo loud >/dev/stdout; ls /dev/null").await,
        ok("b\n42\nloud\n/dev/null")
    );
    s.close().await;
}

#[tokio::test]
async fn first_command_latency_printout() {
    // Informational only (no timing assertion): how long a session's first command
    // takes, lazily and after prestart, and a warm round trip.
    let dirs = Dirs::new();
    let n = 10;
    let mut lazy = Vec::new();
    let mut pre = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..n {
        let mut s = session(&dirs);
        let t = Instant::now();
        assert_eq!(run(&mut s, "echo hi").await, ok("hi"));
        lazy.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(run(&mut s, "echo hi").await, ok("hi"));
        warm.push(t.elapsed());
        s.close().await;
        let mut s = session(&dirs);
        s.prestart().await.unwrap();
        let t = Instant::now();
        assert_eq!(run(&mut s, "echo hi").await, ok("hi"));
        pre.push(t.elapsed());
        s.close().await;
    }
    for v in [&mut lazy, &mut pre, &mut warm] {
        v.sort();
    }
    eprintln!(
        "LATENCY (n={n}, {} build, shared 2-core box): first command lazy p50 {:?} max {:?}; after prestart p50 {:?}; warm p50 {:?}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        lazy[n / 2],
        lazy[n - 1],
        pre[n / 2],
        warm[n / 2]
    );
}

#[tokio::test]
async fn session_paths_are_resolved_and_checked() {
    let dirs = Dirs::new();
    // A symlinked workspace path is resolved before mounting.
    let link = dirs.path("ws-link");
    std::os::unix::fs::symlink(dirs.workspace(), &link).unwrap();
    let mut spec = spec(&dirs, "paths");
    spec.mounts = mounts(&dirs, link);
    let mut s = wasm_sandbox_native::BashSession::new(sandbox(), spec.clone());
    assert_eq!(
        run(&mut s, "echo x > via-link.txt; pwd").await,
        ok("/workspace")
    );
    assert!(dirs.workspace().join("via-link.txt").exists());
    s.close().await;
    // A missing directory is a clear error, not a half-built sandbox.
    spec.mounts = mounts(&dirs, dirs.path("missing"));
    let mut s = wasm_sandbox_native::BashSession::new(sandbox(), spec);
    let out = run(&mut s, "echo x").await;
    assert!(out.is_error);
    assert!(
        out.text
            .starts_with("bash: invalid sandbox configuration: workspace directory"),
        "{out:?}"
    );
}

#[test]
fn locate_init_finds_the_helper_next_to_test_binaries() {
    let found = wasm_sandbox_native::locate_init().expect("wasm-sandbox-init");
    assert_eq!(
        found.canonicalize().unwrap(),
        std::path::Path::new(env!("CARGO_BIN_EXE_wasm-sandbox-init"))
            .canonicalize()
            .unwrap()
    );
}

#[tokio::test]
async fn exit_with_background_job_returns_without_waiting_for_it() {
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    // The reference would wait for the timeout here (the job keeps the pipe open);
    // the sandbox's pid namespace dies with bash instead.
    let out = call(
        &mut s,
        json!({"command": "echo bye; sleep 100 & exit 0", "timeout_ms": 60000}),
    )
    .await;
    assert_eq!(out, err("bye"));
    assert_eq!(
        run(&mut s, "echo x").await,
        err("bash: bash session terminated; restart required")
    );
}
