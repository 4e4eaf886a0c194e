//! `wasm-sandbox usage` on the fixture ledger of `runtime/usage/tests/fixtures/ledger`: exact
//! output in each format, `--since`, and a clear error for a missing ledger.

use std::process::Command;

fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../usage/tests/fixtures/ledger")
}

fn usage(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
        .arg("usage")
        .arg("--ledger")
        .arg(fixture())
        .args(args)
        .output()
        .expect("run wasm-sandbox usage");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn table_is_the_default() {
    let (ok, out, err) = usage(&[]);
    assert!(ok, "{err}");
    // The fixture has one junk line and a torn tail: said on stderr, not silently dropped.
    assert!(
        err.contains("skipped 1 line(s) that are not records and 1 torn line(s)"),
        "{err}"
    );
    assert_eq!(
        out,
        "\
environment  day         sessions  records  active_s     cpu_s  vcpu_hours   gb_hours
env_a        2026-12-05         2        3  3691.500  1834.500    4.100208   4.100208
env_a        2026-12-06         1        1    60.000    60.000    0.000000   0.000000
env_b        2026-12-06         1        1  7200.000  3720.000    4.000000  16.000000
"
    );
}

#[test]
fn csv_with_since() {
    let (ok, out, err) = usage(&["--format", "csv", "--since", "2026-12-06"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "\
environment,day,sessions,records,active_s,cpu_s,vcpu_hours,gb_hours
env_a,2026-12-06,1,1,60.000,60.000,0.000000,0.000000
env_b,2026-12-06,1,1,7200.000,3720.000,4.000000,16.000000
"
    );
}

#[test]
fn json() {
    let (ok, out, err) = usage(&["--format", "json", "--since", "2026-12-06T00:00:00Z"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!([
            {"environment_id": "env_a", "day": "2026-12-06", "sessions": 1, "records": 1,
             "active_seconds": 60.0, "cpu_seconds": 60.0, "vcpu_hours": 0.0, "gb_hours": 0.0},
            {"environment_id": "env_b", "day": "2026-12-06", "sessions": 1, "records": 1,
             "active_seconds": 7200.0, "cpu_seconds": 3720.0, "vcpu_hours": 4.0, "gb_hours": 16.0}
        ])
    );
}

#[test]
fn bad_arguments_fail_clearly() {
    let (ok, _, err) = usage(&["--since", "last tuesday"]);
    assert!(!ok);
    assert!(err.contains("--since"), "{err}");
    let (ok, _, err) = usage(&["--format", "xml"]);
    assert!(!ok);
    assert!(err.contains("xml"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
        .args(["usage", "--ledger", "/nonexistent/usage"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}

#[test]
fn config_check_accepts_the_usage_table_and_refuses_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wasm-sandbox"))
            .args(["config", "check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check(
        "[usage]\nledger_dir = \"/var/lib/wasm-sandbox/usage\"\nrotate_size = \"16MiB\"\n\
         sink_url = \"https://billing.example/usage\"\nauth_header_env = \"USAGE_SINK_AUTH\"\n\
         sink_timeout = \"5s\"\nsink_max_backoff = \"2m\"\n",
    );
    assert!(ok, "{err}");
    let (ok, err) = check("[usage]\nsink = \"https://x\"\n");
    assert!(!ok);
    assert!(err.contains("sink"), "{err}");
    let (ok, err) = check("[usage]\nsink_url = \"ftp://x/\"\n");
    assert!(!ok);
    assert!(err.contains("usage.sink_url"), "{err}");
    let (ok, err) = check("[usage]\nrotate_size = 1000\n");
    assert!(!ok, "{err}");
    // Secrets: no user info in the URL, no auth header in clear text to a remote host.
    let (ok, err) = check("[usage]\nsink_url = \"https://u:pw@billing.example/usage\"\n");
    assert!(!ok && err.contains("usage.sink_url"), "{err}");
    let (ok, err) = check(
        "[usage]\nsink_url = \"http://billing.example/usage\"\nauth_header_env = \"USAGE_SINK_AUTH\"\n",
    );
    assert!(!ok && err.contains("usage.auth_header_env"), "{err}");
}
