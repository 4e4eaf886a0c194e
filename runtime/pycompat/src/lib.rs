//! Python-compatible primitives shared by the file-tools guest, the bash
//! sandbox (`wasm-sandbox-native`) and the skills crate: the reference
//! implementation is the `anthropic` Python SDK 2.10.0 running on CPython
//! 3.12, and these reproduce its observable behaviour byte for byte.
//!
//! * [`repr`]: `repr()` of a `str` and of a `float`.
//! * [`text`]: `str.isspace()`, `str.strip()`, `str.splitlines()`'s line
//!   boundaries, `int(s)`.
//! * [`pydantic`]: pydantic 2's lax-mode `int` and `bool`, and the Python
//!   type name of a JSON value.
//! * [`re`]: CPython 3.12's `re` parser ported to Rust, translating a
//!   pattern to `fancy-regex` (with the documented deviations).
//! * [`fnmatch`]: `fnmatch.translate`, a shell pattern as an `re` pattern.
//!
//! The crate builds both for the host and for `wasm32-wasip2` (the guest
//! depends on it by path), so it has no host-only dependencies.

pub mod fnmatch;
pub mod pydantic;
pub mod re;
pub mod repr;
pub mod text;
