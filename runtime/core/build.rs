//! Builds the file-tools guest (`guests/file-tools`) for `wasm32-wasip2`; the
//! crate embeds it with `include_bytes!(env!("FILE_TOOLS_WASM"))`, so the
//! runtime ships as one artifact. `WASM_SANDBOX_FILE_TOOLS_WASM` substitutes
//! a prebuilt component.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=WASM_SANDBOX_FILE_TOOLS_WASM");
    if let Ok(prebuilt) = std::env::var("WASM_SANDBOX_FILE_TOOLS_WASM") {
        println!("cargo:rustc-env=FILE_TOOLS_WASM={prebuilt}");
        return;
    }
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("../..");
    let out = wasm_sandbox_guest_build::build_guest(
        &root.join("guests/file-tools"),
        &root,
        // The guest depends on runtime/pycompat by path: its sources are guest inputs too.
        &[root.join("hostcalls/wit"), root.join("runtime/pycompat")],
    );
    let wasm = out.join("wasm_sandbox_file_tools.wasm");
    println!("cargo:rustc-env=FILE_TOOLS_WASM={}", wasm.display());
}
