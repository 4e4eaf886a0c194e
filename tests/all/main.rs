//! Integration tests of wasm-sandbox, one binary with a module per area
//! (one binary links wasmtime once; see tests/README.md).

mod common;
mod confinement;
mod critical_path;
mod differential;
mod egress;
mod nn;
mod nn_host;
mod persistence;
mod pool;
mod runtime;
mod shape;
mod tls;
mod usage;
mod wasm_run;
mod worker;
