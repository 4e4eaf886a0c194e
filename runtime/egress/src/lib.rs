//! Network egress per session for the bash sandbox: deny by default, allow-lists
//! in Anthropic's own `networking` vocabulary, enforced by a host-side proxy.
//!
//! # The pieces
//!
//! * [`NetworkingConfig`]: the `[runtime.networking]` table (`type = "none" |
//!   "limited" | "unrestricted"`, `allowed_hosts`, `allow_package_managers`, …).
//! * [`Policy`]: the compiled decision (name phase before any DNS query, then
//!   every resolved address against the deny set; see [`policy`]).
//! * [`Egress`]: one per runtime: the policy, the upstream aliases (their header
//!   values read from the worker's environment once, at start) and the limits.
//!   [`Egress::serve_session`] starts one session's proxy on a unix socket.
//! * [`SessionProxy`]: that session's proxy: HTTP/1.1 forward proxy
//!   (absolute-form requests) and `CONNECT`, with per-session accounting
//!   ([`SessionProxy::usage`]).
//!
//! # Enforcement, end to end
//!
//! bash keeps its private network namespace, whose only interface is loopback:
//! there is no route out, so a client that ignores the proxy variables fails at
//! once (`ENETUNREACH`), never hangs. The sandbox's init (in
//! `wasm-sandbox-native`, module `net`) listens on `127.0.0.1:3128` inside that
//! namespace and relays each connection to the session's unix socket, which the
//! worker created in a private directory bound into *that* sandbox only; the
//! proxy behind it decides every request. bash gets `HTTP_PROXY`/`HTTPS_PROXY`/
//! `ALL_PROXY` (both cases) and the tool-specific variables npm, cargo and pip read.
//!
//! # Accounting and metrics
//!
//! [`SessionProxy::usage`] gives a session's [`NetUsage`]; [`stats`] gives the
//! process-wide totals the worker exports on `/metrics` (no per-session label).

#![deny(missing_docs)]

pub mod config;
pub mod dns;
mod http;
pub mod policy;
pub mod proxy;
mod stats;
mod upstream;

pub use config::{HeaderSource, NetworkType, NetworkingConfig, UpstreamConfig};
pub use policy::{
    Cidr, Narrowing, PACKAGE_MANAGER_HOSTS_V1, Policy, PolicyError, Refusal,
    SESSION_ALLOWED_HOSTS_KEY,
};
pub use proxy::{Egress, SessionProxy};
pub use stats::{EgressStats, NetUsage, stats};
