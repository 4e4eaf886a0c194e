//! Builds the guest test programs (`tests/programs`) for `wasm32-wasip2` and
//! exposes each binary's path as `<NAME>_WASM` (e.g. `FS_PROBE_WASM`); also
//! the example guest components of `examples/guests`: the skill component
//! `skill-wordcount` as `SKILL_WORDCOUNT_WASM` and the wasi-nn examples
//! `nn-classify` / `nn-remote` as `NN_CLASSIFY_WASM` / `NN_REMOTE_WASM` (the
//! only build of them: the crates they exercise build no guests).

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("..");
    let crate_dir = root.join("tests/programs");
    let out = wasm_sandbox_guest_build::build_guest(&crate_dir, &root, &[]);
    let bins = std::fs::read_dir(crate_dir.join("src/bin")).expect("tests/programs/src/bin");
    for entry in bins.flatten() {
        let name = entry
            .path()
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string);
        if let Some(name) = name {
            let wasm = out.join(format!("{name}.wasm"));
            println!(
                "cargo:rustc-env={}_WASM={}",
                name.to_uppercase(),
                wasm.display()
            );
        }
    }
    let guests = root.join("examples/guests");
    let out = wasm_sandbox_guest_build::build_guest(
        &guests,
        &root,
        &[
            guests.join("skill-wordcount/src"),
            guests.join("skill-wordcount/Cargo.toml"),
            guests.join("nn-classify/src"),
            guests.join("nn-classify/Cargo.toml"),
            guests.join("nn-remote/src"),
            guests.join("nn-remote/Cargo.toml"),
            root.join("hostcalls/nn/wit"),
        ],
    );
    for (var, file) in [
        ("SKILL_WORDCOUNT_WASM", "wordcount.wasm"),
        ("NN_CLASSIFY_WASM", "nn-classify.wasm"),
        ("NN_REMOTE_WASM", "nn-remote.wasm"),
    ] {
        println!("cargo:rustc-env={var}={}", out.join(file).display());
    }
}
