//! Build facts for the `wasm_sandbox_build_info` metric ([`metrics`](src/metrics.rs)):
//! the git commit (`WASM_SANDBOX_GIT_COMMIT` if set, e.g. by a container build without
//! `.git`, else `git rev-parse`), the rustc version and the wasmtime version from
//! `Cargo.lock`. Each falls back to `unknown`; nothing here can fail the build.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WASM_SANDBOX_GIT_COMMIT");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let root = Path::new(&manifest).join("../..");

    let commit = std::env::var("WASM_SANDBOX_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .current_dir(&root)
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    // Re-run when HEAD moves; only paths that exist (a missing one would re-run every build).
    for p in [
        ".git/HEAD",
        ".git/refs/heads",
        ".git/packed-refs",
        "Cargo.lock",
    ] {
        let path = root.join(p);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());

    // `[[package]] name = "wasmtime"` is followed by its `version = "…"` line.
    let wasmtime = std::fs::read_to_string(root.join("Cargo.lock"))
        .ok()
        .and_then(|lock| {
            let mut lines = lock.lines();
            while let Some(line) = lines.next() {
                if line.trim() == "name = \"wasmtime\"" {
                    let v = lines.next()?.trim().strip_prefix("version = \"")?;
                    return Some(v.trim_end_matches('"').to_owned());
                }
            }
            None
        })
        .unwrap_or_else(|| "unknown".into());

    println!("cargo:rustc-env=WASM_SANDBOX_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=WASM_SANDBOX_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=WASM_SANDBOX_WASMTIME_VERSION={wasmtime}");
}
