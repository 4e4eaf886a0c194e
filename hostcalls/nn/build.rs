//! Builds the example guest components (`examples/guests`: `nn-classify`,
//! `nn-remote`) for `wasm32-wasip2` and exposes their paths as
//! `NN_CLASSIFY_WASM` / `NN_REMOTE_WASM` for tests and benches.

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("../..");
    let guests = root.join("examples/guests");
    let out = wasm_sandbox_guest_build::build_guest(
        &guests,
        &root,
        &[
            guests.join("nn-classify/src"),
            guests.join("nn-classify/Cargo.toml"),
            guests.join("nn-remote/src"),
            guests.join("nn-remote/Cargo.toml"),
            root.join("hostcalls/nn/wit"),
        ],
    );
    println!(
        "cargo:rustc-env=NN_CLASSIFY_WASM={}",
        out.join("nn-classify.wasm").display()
    );
    println!(
        "cargo:rustc-env=NN_REMOTE_WASM={}",
        out.join("nn-remote.wasm").display()
    );
}
