//! Environment hygiene (the worker's secrets never reach bash) and failing closed.
//! One test function per concern; the env test plants variables in this process, so
//! this binary holds nothing else that reads the environment concurrently.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use serde_json::json;
use wasm_sandbox_native::{BashConfig, BashSandbox, BashSession};

/// Everything bash can see of its environment: `env`, a child's and bash's own
/// `/proc/<pid>/environ`, pid 1's (refused: outside bash's Landlock domain) and
/// bash's exported variables.
const DUMP: &str = "env; echo ---; cat /proc/self/environ | tr '\\0' '\\n'; echo ---; tr '\\0' '\\n' < /proc/$$/environ; echo ---; cat /proc/1/environ 2>&1 | tr '\\0' '\\n'; echo ---; export -p";

fn assert_clean(dump: &str) {
    for bad in ["planted", "sk-ant-"] {
        assert!(!dump.contains(bad), "{bad} leaked:\n{dump}");
    }
    for line in dump.lines() {
        let name = line
            .trim_start_matches("declare -x ")
            .split('=')
            .next()
            .unwrap_or("");
        assert!(
            !name.to_ascii_lowercase().starts_with("anthropic_"),
            "{name} leaked"
        );
        assert_ne!(name, "WORKER_SECRET_TOKEN");
    }
}

#[tokio::test]
async fn worker_environment_never_reaches_bash() {
    // SAFETY: this is the only test in this binary that touches the environment,
    // and it does so before starting any session.
    unsafe {
        std::env::set_var("ANTHROPIC_API_KEY", "sk-ant-planted-key");
        std::env::set_var("anthropic_x", "planted-lowercase");
        std::env::set_var("Anthropic_Session_Token", "planted-mixed");
        std::env::set_var("WORKER_SECRET_TOKEN", "planted-other");
        std::env::set_var("LANG", "C.UTF-8");
    }
    // Allow-list mode (no explicit session env).
    let dirs = Dirs::new();
    let mut s = session(&dirs);
    let out = run(&mut s, DUMP).await;
    assert!(!out.is_error, "{out:?}");
    assert_clean(&out.text);
    // The allow-listed and forced variables are there (bash drops PS1/PS2 from a
    // non-interactive shell's environment; pid 1's environ shows they were passed).
    for want in [
        "LANG=C.UTF-8",
        "HOME=/workspace",
        "TERM=dumb",
        "PS1=",
        "PS2=",
        "PATH=/usr/local/sbin:",
    ] {
        assert!(
            out.text.lines().any(|l| l.starts_with(want)),
            "{want} missing:\n{}",
            out.text
        );
    }
    s.close().await;

    // Verbatim mode (AgentToolContext.env): scrubbed case-insensitively.
    let mut spec = spec(&dirs, "verbatim");
    spec.env = Some(BTreeMap::from([
        ("ANTHROPIC_API_KEY".to_owned(), "sk-ant-planted".to_owned()),
        ("anthropic_lower".to_owned(), "planted".to_owned()),
        ("AnThRoPiC_mixed".to_owned(), "planted".to_owned()),
        ("FOO".to_owned(), "bar".to_owned()),
        ("TERM".to_owned(), "xterm-256color".to_owned()),
    ]));
    let mut s = BashSession::new(sandbox(), spec);
    let out = run(&mut s, DUMP).await;
    assert_clean(&out.text);
    let env_names: Vec<&str> = out
        .text
        .split("---")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split('=').next())
        .collect();
    let mut sorted = env_names.clone();
    sorted.sort_unstable();
    // Only FOO, the forced prompt variables, and what bash itself adds.
    assert_eq!(sorted, ["FOO", "PWD", "SHLVL", "TERM", "_"], "{}", out.text);
    assert_eq!(run(&mut s, "echo $TERM $FOO").await, ok("dumb bar"));
    s.close().await;
}

#[tokio::test]
async fn fails_closed_without_its_sandbox() {
    let dirs = Dirs::new();
    for (config, reason) in [
        (
            BashConfig {
                bwrap_path: Some("/nonexistent/bwrap".into()),
                ..BashConfig::default()
            },
            "bash: sandbox unavailable: the configured bwrap_path /nonexistent/bwrap does not exist",
        ),
        (
            BashConfig {
                init_path: Some("/nonexistent/init".into()),
                ..BashConfig::default()
            },
            "bash: sandbox unavailable: the configured init_path /nonexistent/init does not exist",
        ),
        (
            // An init that is not the sandbox init: the probe sandbox fails.
            BashConfig {
                init_path: Some("/bin/false".into()),
                ..BashConfig::default()
            },
            "bash: sandbox unavailable: the probe sandbox failed",
        ),
    ] {
        let sandbox = Arc::new(BashSandbox::new(config));
        assert!(!sandbox.report().available);
        assert!(!sandbox.report().unsandboxed_fallback);
        let mut s = BashSession::new(sandbox, spec(&dirs, "closed"));
        let out = run(&mut s, "touch /workspace/ran; echo ran").await;
        assert!(out.is_error, "{out:?}");
        assert!(out.text.starts_with(reason), "{:?} vs {reason:?}", out.text);
        let out = call(&mut s, json!({"restart": true})).await;
        assert!(out.is_error && out.text.starts_with(reason), "{out:?}");
        assert!(
            !dirs.workspace().join("ran").exists(),
            "bash ran without its sandbox"
        );
        assert!(s.prestart().await.is_err());
    }

    // The loudly named opt-in runs bash on the host (like the reference).
    let sandbox = Arc::new(BashSandbox::new(BashConfig {
        bwrap_path: Some("/nonexistent/bwrap".into()),
        allow_unsandboxed_bash_i_understand_the_risk: true,
        ..BashConfig::default()
    }));
    assert!(sandbox.report().unsandboxed_fallback);
    let mut s = BashSession::new(sandbox, spec(&dirs, "unsandboxed"));
    let out = run(&mut s, "test -e /etc/shadow && pwd").await;
    assert_eq!(out, ok(&dirs.workspace().display().to_string()));
    assert_eq!(run(&mut s, "sleep 1000 & echo bg").await, ok("bg"));
    s.close().await;
}
