//! End-to-end tests of the worker against the fake control plane
//! (`wasm-sandbox-fake-control-plane`), whose sessions these tests drive by hand, one tool call
//! at a time, and whose faults they arm between calls. Every test asserts the requests the
//! fake saw; the fake also judges every posted result (unknown, duplicate, denied or
//! unconfirmed calls are refused and recorded), so a wrong post fails here.
//!
//! The worker serves sessions with its scripted in-memory sandbox
//! ([`wasm_sandbox_worker::sandbox::testing::ScriptedSandbox`]), which echoes calls and can hold
//! one mid-flight. The scenario-driven tests with the real sandbox live in `tests/all/worker.rs`.

#[path = "flow/harness.rs"]
mod harness;

#[path = "flow/calls.rs"]
mod calls;

#[path = "flow/lifecycle.rs"]
mod lifecycle;

#[path = "flow/ops.rs"]
mod ops;
