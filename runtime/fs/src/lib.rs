//! Host-side filesystem vocabulary shared by every wasm-sandbox crate.
//!
//! This is the lowest crate of the workspace (no wasmtime, no sandbox): it holds
//! what the others must agree on about the host filesystem.
//!
//! - [`guest_path`]: the one rule for guest mount paths (`/mnt/memory/<name>`, ...),
//!   used by the runtime, the bash sandbox, the worker and skills.
//! - [`tree`]: operations on directory trees a session wrote. Everything under a
//!   session's directories is attacker-written: these functions never follow a
//!   symbolic link, never block on a FIFO, never recurse on the call stack and
//!   keep a bounded number of descriptors open, whatever the tree looks like.
//! - [`mount`]: the `nosuid,nodev` bind mount of the worker's sessions directory, so a setuid
//!   file a session planted never elevates anyone on the host.

#![deny(missing_docs)]

pub mod guest_path;
pub mod mount;
pub mod mounts;
pub mod tree;
