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

pub mod cgroup;
pub mod config;
pub mod env;
pub mod init;
pub mod protocol;
pub mod sandbox;
pub mod seccomp;
pub mod session;

pub use config::BashConfig;
pub use init::sandbox_init_main;
pub use sandbox::{
    BashSandbox, BashSessionSpec, LimitMechanism, SandboxError, SandboxReport, StoreMount,
    locate_init,
};
pub use session::{BashOutput, BashSession};
