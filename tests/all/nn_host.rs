//! The wasi-nn host binding (`wasm-sandbox-hostcalls-nn`) on its own, through the
//! example guest components `nn-classify` and `nn-remote` (built by `tests/build.rs`)
//! under plain wasmtime: no runtime, no session. The runtime-level wasi-nn test is
//! [`crate::nn`].

mod common;
mod gpu;
mod local;
mod remote;
