//! Integration tests of wasm-sandbox, one binary with a module per area
//! (one binary links wasmtime once; see tests/README.md).

mod common;
mod confinement;
mod differential;
mod nn;
mod pool;
mod runtime;
mod wasm_run;
mod worker;
