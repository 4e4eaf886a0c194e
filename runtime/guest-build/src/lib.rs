//! Build-script helper that compiles a guest crate (its own workspace and
//! lockfile) for `wasm32-wasip2` with a nested `cargo build --locked
//! --release`, the way wasmtime's `test-programs/artifacts` does.
//!
//! All host profiles share one guest target dir (`<workspace>/target/guests`,
//! or `WASM_SANDBOX_GUEST_TARGET_DIR`), so dev, release and clippy builds
//! compile each guest once.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest target triple.
pub const TARGET: &str = "wasm32-wasip2";

/// Builds the guest crate at `crate_dir` and returns
/// `<target>/wasm32-wasip2/release`, where its artifacts are. Emits the
/// `rerun-if-changed` lines for the crate's sources and any `extra_inputs`.
///
/// # Panics
///
/// Panics (failing the build script) with an actionable message when the
/// target is missing or the guest does not build.
pub fn build_guest(crate_dir: &Path, workspace_root: &Path, extra_inputs: &[PathBuf]) -> PathBuf {
    for p in [
        crate_dir.join("src"),
        crate_dir.join("Cargo.toml"),
        crate_dir.join("Cargo.lock"),
    ]
    .iter()
    .chain(extra_inputs)
    {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=WASM_SANDBOX_GUEST_TARGET_DIR");
    let target_dir = std::env::var_os("WASM_SANDBOX_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root.join("target/guests"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--manifest-path",
        ])
        .arg(crate_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's flags and target dir must not leak into the guest.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_PRIMARY_PACKAGE")
        .status();
    let ok = matches!(status, Ok(s) if s.success());
    if !ok {
        if !target_installed() {
            panic!(
                "the `{TARGET}` target is not installed; run `rustup target add {TARGET}` \
                 (guest components are built for it)"
            );
        }
        panic!(
            "building the guest crate {} for {TARGET} failed (see the output above)",
            crate_dir.display()
        );
    }
    target_dir.join(TARGET).join("release")
}

fn target_installed() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
        .unwrap_or(true)
}
