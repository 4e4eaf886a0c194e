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

/// Issue 11: a line that is valid JSON text but holds a lone surrogate escape (`\ud800`), which
/// strict parsers refuse, gets one `invalid request: …` error line (as the worker posts) and
/// runs nothing; a tool the worker does not own still gets no line; the next line runs.
#[test]
fn replay_answers_a_lone_surrogate_input_with_an_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = [
        r#"{"id": "1", "name": "write", "input": {"file_path": "s/f.txt", "content": "bad \ud800"}}"#,
        r#"{"id": "2", "name": "bash", "input": {"command": "mkdir t; echo \udc00"}}"#,
        r#"{"id": "3", "name": "web_fetch", "input": {"url": "https://\ud800"}}"#,
        r#"{"id": "4", "name": "bash", "input": {"command": "echo fine \ud83d\ude00; ls"}}"#,
    ]
    .join("\n");
    let (code, lines, stderr) = replay(dir.path(), &[], &input);
    assert_eq!(code, 0, "{stderr}");
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["1", "2", "4"], "{stderr}");
    for (line, escape) in [(&lines[0], r"\ud800"), (&lines[1], r"\udc00")] {
        assert_eq!(line["is_error"], true, "{line}");
        let text = line["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("invalid request: "), "{text}");
        assert!(text.contains(escape), "{text}");
    }
    // Nothing of the refused calls ran; a valid surrogate pair is fine.
    assert_eq!(lines[2]["is_error"], false, "{}", lines[2]);
    assert_eq!(
        lines[2]["content"][0]["text"], "fine \u{1F600}",
        "{}",
        lines[2]
    );
    assert!(!dir.path().join("s").exists());
    assert!(!dir.path().join("t").exists());
}

/// Starts `wasm-sandbox serve` against `fake` with `extra` arguments and environment, waits
/// until it polls (start-up, scrub included, is then over), and returns its
/// `/proc/<pid>/environ` and `/proc/<pid>/cmdline` before stopping it.
async fn serve_proc_blocks(
    fake: &wasm_sandbox_fake_control_plane::Handle,
    args: &[&str],
    env: &[(&str, &str)],
) -> (String, String) {
    use wasm_sandbox_fake_control_plane::Endpoint;
    let polls = || fake.requests_to(Endpoint::Poll).len();
    let before = polls();
    let workdir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
        .args(["serve", "--base-url", fake.url(), "--environment-id"])
        .arg(fake.environment_id())
        .arg("--workdir")
        .arg(workdir.path())
        .args(args)
        .env_remove("ANTHROPIC_ENVIRONMENT_KEY")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wasm-sandbox serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while polls() == before {
        assert!(std::time::Instant::now() < deadline, "serve never polled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let read = |what: &str| {
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{}/{what}", child.id())).unwrap())
            .into_owned()
    };
    let blocks = (read("environ"), read("cmdline"));
    // SIGTERM, not SIGKILL: a worker running as root mounts `<workdir>/sessions` nosuid and
    // removes that mount only on a clean exit, and the temporary workdir must go with it.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let _ = child.wait();
    blocks
}

/// Issue 11: after start-up the environment key is no longer readable in the worker's
/// `/proc/<pid>/environ` (the original environment block, which `remove_var` leaves intact),
/// nor, when given as a flag, in its world-readable `/proc/<pid>/cmdline`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_scrubs_the_key_from_its_proc_environ_and_cmdline() {
    use wasm_sandbox_fake_control_plane::{FakeConfig, FakeControlPlane};
    let fake = FakeControlPlane::start(FakeConfig::default())
        .await
        .expect("fake");
    let key = fake.environment_key();
    let used_key = |fake: &wasm_sandbox_fake_control_plane::Handle| {
        fake.requests()
            .iter()
            .filter(|r| r.headers.get("authorization") == Some(&format!("Bearer {key}")))
            .count()
    };

    let (environ, _) = serve_proc_blocks(
        &fake,
        &[],
        &[
            ("ANTHROPIC_ENVIRONMENT_KEY", &key),
            ("WASM_SANDBOX_TEST_MARKER", "still-here"),
        ],
    )
    .await;
    // The block read is the right one (other variables are intact) …
    assert!(
        environ.contains("WASM_SANDBOX_TEST_MARKER=still-here"),
        "{environ}"
    );
    // … and the key's value is gone from it, while the worker authenticated with it.
    assert!(
        !environ.contains(&key),
        "the key is readable in /proc/<pid>/environ"
    );
    assert!(environ.contains("ANTHROPIC_ENVIRONMENT_KEY="), "{environ}");
    let after_env = used_key(&fake);
    assert!(after_env > 0, "the worker did not use the key");

    let (_, cmdline) = serve_proc_blocks(
        &fake,
        &["--environment-key", &key, "--worker-id", "w-flag"],
        &[],
    )
    .await;
    assert!(cmdline.contains("--environment-key"), "{cmdline}");
    assert!(cmdline.contains("w-flag"), "{cmdline}");
    assert!(
        !cmdline.contains(&key),
        "the key is readable in /proc/<pid>/cmdline"
    );
    assert!(
        used_key(&fake) > after_env,
        "the worker did not use the key"
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 17: one config schema for every command, one unit convention.
// ---------------------------------------------------------------------------------------------

/// The TOML of the shipped ConfigMap (`deploy/k8s/base/configmap.yaml`, `wasm-sandbox.toml`).
fn deploy_toml() -> String {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/k8s/base/configmap.yaml"
    ))
    .unwrap();
    manifest
        .split("wasm-sandbox.toml: |\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect()
}

/// `wasm-sandbox ARGS` with no API credentials in its environment.
fn run_cli(args: &[&std::ffi::OsStr], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
        .args(args)
        .env_remove("ANTHROPIC_ENVIRONMENT_KEY")
        .env_remove("ANTHROPIC_ENVIRONMENT_ID")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// The shipped ConfigMap's file loads in `config check`, `serve` (`--dry-run`: resolved and
/// checked as a start would, nothing started) and `replay` (which used to reject it: it read
/// a bare `[runtime]` schema and refused `concurrency`).
#[test]
fn deploy_configmap_loads_in_serve_replay_and_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let text = deploy_toml();
    assert!(text.contains("concurrency = 8"), "{text}");
    let file = dir.path().join("wasm-sandbox.toml");
    std::fs::write(&file, &text).unwrap();

    let (ok, stdout, stderr) = run_cli(
        &[os("config"), os("check"), os("--config"), file.as_os_str()],
        "",
    );
    assert!(ok, "config check: {stderr}");
    assert!(stdout.contains("[runtime.engine]"), "{stdout}");
    // What `config check` prints is itself a valid file of the same schema.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, stdout.as_bytes()).unwrap();
    let (ok, _, stderr) = run_cli(
        &[
            os("config"),
            os("check"),
            os("--config"),
            printed.as_os_str(),
        ],
        "",
    );
    assert!(ok, "config check of its own output: {stderr}");

    let (ok, stdout, stderr) = run_cli(
        &[
            os("serve"),
            os("--dry-run"),
            os("--config"),
            file.as_os_str(),
        ],
        "",
    );
    assert!(ok, "serve --dry-run: {stderr}");
    assert!(
        stdout.contains("concurrency = 8") && stdout.contains("max_idle = \"1m\""),
        "{stdout}"
    );

    // replay: the same file; only the cache directory is moved off /var/lib for the test.
    let cache = dir.path().join("cache");
    let replay_file = dir.path().join("replay.toml");
    std::fs::write(
        &replay_file,
        text.replace("/var/lib/wasm-sandbox/cache", cache.to_str().unwrap()),
    )
    .unwrap();
    let ws = dir.path().join("ws");
    let (ok, stdout, stderr) = run_cli(
        &[
            os("replay"),
            os("--workdir"),
            ws.as_os_str(),
            os("--config"),
            replay_file.as_os_str(),
        ],
        r#"{"id":"1","name":"write","input":{"file_path":"a.txt","content":"hi"}}"#,
    );
    assert!(ok, "replay: {stderr}");
    let line: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["is_error"], false, "{line}");
    assert_eq!(std::fs::read_to_string(ws.join("a.txt")).unwrap(), "hi");
}

/// An error inside `[runtime]` is reported as FILE:LINE:COLUMN with the key path, by every
/// command that reads the file.
#[test]
fn config_errors_name_the_file_line_and_key_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.toml");
    std::fs::write(
        &file,
        "concurrency = 2\n\n[runtime.limits]\nmemory = \"256MiB\"\ntool_timeout = \"soon\"\n",
    )
    .unwrap();
    let ws = dir.path().join("ws");
    let want = format!(
        "{}:5:16: `runtime.limits.tool_timeout`: invalid duration",
        file.display()
    );
    for args in [
        vec![os("config"), os("check"), os("--config"), file.as_os_str()],
        vec![
            os("serve"),
            os("--dry-run"),
            os("--config"),
            file.as_os_str(),
        ],
        vec![
            os("replay"),
            os("--workdir"),
            ws.as_os_str(),
            os("--config"),
            file.as_os_str(),
        ],
    ] {
        let (ok, _, stderr) = run_cli(&args, "");
        assert!(!ok, "{args:?} accepted a bad file");
        assert!(stderr.contains(&want), "{args:?}: {stderr}");
    }
}

/// A key renamed by the unit convention is refused with a message that names the new key.
#[test]
fn old_unit_keys_are_refused_naming_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.toml");
    std::fs::write(&file, "[runtime.limits]\ntool_timeout_ms = 150000\n").unwrap();
    let (ok, _, stderr) = run_cli(
        &[os("config"), os("check"), os("--config"), file.as_os_str()],
        "",
    );
    assert!(!ok);
    assert!(
        stderr.contains("`tool_timeout_ms` was renamed: use `tool_timeout = \"150s\"`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:2:1:", file.display())),
        "{stderr}"
    );
}

/// Sizes with units and `"unlimited"` reach the runtime: `config check` prints them back, and
/// a `max_file_size = "1KiB"` really caps what bash can write (RLIMIT_FSIZE).
#[test]
fn sizes_and_unlimited_reach_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.toml");
    std::fs::write(
        &file,
        "[runtime.limits]\nmemory = \"512MiB\"\n[runtime.bash]\nmemory_limit = \"unlimited\"\nmax_file_size = \"1KiB\"\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = run_cli(
        &[os("config"), os("check"), os("--config"), file.as_os_str()],
        "",
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("memory = \"512MiB\""), "{stdout}");
    assert!(stdout.contains("memory_limit = \"unlimited\""), "{stdout}");
    assert!(stdout.contains("max_file_size = \"1KiB\""), "{stdout}");

    let ws = dir.path().join("ws");
    let (ok, stdout, stderr) = run_cli(
        &[
            os("replay"),
            os("--workdir"),
            ws.as_os_str(),
            os("--config"),
            file.as_os_str(),
        ],
        r#"{"id":"1","name":"bash","input":{"command":"head -c 4096 /dev/zero > big 2>/dev/null; stat -c %s big"}}"#,
    );
    if !ok && stderr.contains("sandbox") {
        eprintln!("SKIP: the bash sandbox cannot start here: {stderr}");
        return;
    }
    assert!(ok, "{stderr}");
    let line: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let text = line["content"][0]["text"].as_str().unwrap_or_default();
    if line["is_error"] == true && text.contains("sandbox") {
        eprintln!("SKIP: the bash sandbox cannot start here: {text}");
        return;
    }
    // bash reports the SIGXFSZ of `head`; the file stopped at the cap.
    assert_eq!(text.trim().lines().last(), Some("1024"), "{line}");
}

/// Safe defaults: without `--workdir`, `serve` never works in the current directory (it
/// sweeps `<workdir>/sessions`); the compile cache is on at a default location shared by the
/// commands, and `cache_dir = "off"` turns it off.
#[test]
fn defaults_never_use_the_current_directory_and_cache_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cache = dir.path().join("cache");
    let dry_run = |extra_env: &[(&str, &std::path::Path)], config: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"));
        cmd.args(["serve", "--dry-run"])
            .current_dir(dir.path())
            .env_remove("STATE_DIRECTORY")
            .env_remove("CACHE_DIRECTORY")
            .env_remove("ANTHROPIC_ENVIRONMENT_KEY");
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = dry_run(
        &[("STATE_DIRECTORY", &state), ("CACHE_DIRECTORY", &cache)],
        None,
    );
    assert!(
        out.contains(&format!("workdir = {:?}", state.display().to_string())),
        "{out}"
    );
    let want_cache = cache.join("compile");
    assert!(
        out.contains(&format!(
            "cache_dir = {:?}",
            want_cache.display().to_string()
        )),
        "{out}"
    );
    assert!(
        want_cache.is_dir(),
        "the default cache directory is created"
    );
    // Without systemd's variables: a fixed per-user location, never ".".
    let out = dry_run(&[], None);
    assert!(!out.contains("workdir = \".\""), "{out}");
    assert!(
        out.contains("workdir = \"/var/lib/wasm-sandbox\"")
            || out.contains(".local/state/wasm-sandbox")
            || out.contains("/wasm-sandbox\""),
        "{out}"
    );
    // `cache_dir = "off"`: no cache.
    let off = dir.path().join("off.toml");
    std::fs::write(&off, "[runtime.engine]\ncache_dir = \"off\"\n").unwrap();
    let out = dry_run(&[("CACHE_DIRECTORY", &cache)], Some(&off));
    assert!(out.contains("cache_dir = \"off\""), "{out}");
}
