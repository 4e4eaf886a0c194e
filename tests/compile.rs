//! The `wasm-run` component compiler helper for the integration tests (what the
//! `wasm-sandbox` CLI does when started as `wasm-sandbox-compile`).

fn main() {
    wasm_sandbox_runtime::compiler_main()
}
