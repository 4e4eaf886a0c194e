//! The sandbox init helper for the integration tests (the same entry point
//! the `wasm-sandbox` CLI exposes as its hidden `__sandbox-init` command).

fn main() {
    wasm_sandbox_native::init_binary_main()
}
