//! The init helper that runs inside bash's sandbox: applies Landlock, rlimits,
//! `no_new_privs` and seccomp, then executes bash. See `wasm_sandbox_native::init`.

fn main() {
    wasm_sandbox_native::init_binary_main()
}
