//! bash as a native fallback: one persistent `/bin/bash` per session, inside a Linux
//! sandbox.
//!
//! The file tools run as a WASI component; bash needs a full Linux userland, so it
//! runs natively. The reference SDK runs it bare on the worker's host; this crate
//! runs it inside bubblewrap namespaces plus Landlock, seccomp and cgroup/rlimit
//! limits (see [`sandbox`] for every layer and why it exists), with the reference's
//! exact protocol and semantics (see [`protocol`] and `shared/spec/toolset.md` §5.6).
//!
//! Use:
//! 1. once per runtime, [`BashSandbox::new`] with a [`BashConfig`]: it probes the
//!    host and records the active layers in a [`SandboxReport`];
//! 2. per session, [`BashSession::new`] (lazy) and optionally
//!    [`BashSession::prestart`]; [`BashSession::call`] per tool call;
//!    [`BashSession::close`] at teardown (kills every process of the sandbox).
//!
//! The init step inside the sandbox is [`sandbox_init_main`], shipped as the
//! `wasm-sandbox-init` binary of this crate (a CLI may also expose it as a hidden
//! subcommand; set [`BashConfig::init_args`] accordingly). [`locate_init`] finds it.
//!
//! The crate has no wasmtime dependency.
//!
//! # Results
//!
//! [`BashSession::call`] returns the tool's own text and `is_error` flag. An empty
//! text (a silent success, or a failure with no output) is returned as `""`; the
//! caller's content bridging turns it into `(no output)`, as the reference runner's
//! `_to_session_content` does.
//!
//! # Deliberate deviations from the reference (Python SDK 2.10.0)
//!
//! * bash is confined (see [`sandbox`]): it cannot read or write outside its mounts,
//!   and it honours read-only memory stores.
//! * The credential scrub drops `anthropic_*` names in any letter case (the
//!   reference: `ANTHROPIC_*` only), and without an explicit session environment
//!   bash gets an allow-list (locale, timezone, `PATH`, `HOME=/workspace`), not the
//!   worker's whole environment.
//! * A dead shell is deterministic: the call that saw bash exit reports its output
//!   as an error, and every later call says `bash: bash session terminated; restart
//!   required` (the reference has a short race right after the exit).
//! * After the sentinel, the exit-code line is awaited before returning, so a 4 KiB
//!   read ending between the two cannot turn a success into an error (a rare race in
//!   the reference).
//! * When bash exits, everything it started dies with it (its pid namespace is torn
//!   down), so `sleep 100 & exit` returns at once instead of waiting for the
//!   background job to release the output pipe until the timeout.
//! * Teardown ([`BashSession::close`], restart, timeout) kills bash and every
//!   descendant; the reference kills bash only.
//! * The per-call timeout also bounds writing the command to the shell.
//! * JSON integers beyond `u64` reach this crate as floats (serde_json without
//!   `arbitrary_precision`), so such a `timeout_ms` is rejected where Python would
//!   accept the integer. Strings of digits behave as in the reference.
//! * After [`BashSession::close`], a later call starts a fresh shell.

pub mod cgroup;
pub mod config;
pub mod disk;
pub mod env;
pub mod init;
mod limits;
pub mod net;
pub mod protocol;
pub mod sandbox;
pub mod seccomp;
pub mod session;
pub mod shape;
pub mod wasm_run;

pub use cgroup::ResourceUsage;
pub use config::BashConfig;
pub use init::{init_binary_main, run_as_init_if_invoked, sandbox_init_main};
pub use sandbox::{
    BashSandbox, BashSessionSpec, LimitMechanism, SandboxError, SandboxReport, SpecialFileGuard,
    locate_init,
};
pub use session::{BashOutput, BashSession, UsageHandle};
pub use shape::{Enforce, LimitStatus, ShapeConfig, ShapeReport};
