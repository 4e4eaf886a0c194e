//! The component compiler helper: compiles one component read from stdin, under
//! the resource limits its parent set, and writes the precompiled bytes to stdout.
//! See the `compile` module of `wasm_sandbox_runtime`.

fn main() {
    wasm_sandbox_runtime::compiler_main()
}
