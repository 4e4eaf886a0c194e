//! The wasm-sandbox environment worker: serves a Claude Managed Agents *self-hosted*
//! environment.
//!
//! It polls the environment's work queue, claims sessions, heartbeats each lease, runs every
//! sandbox tool call (`bash read write edit glob grep`) in a fresh per-session sandbox, posts the
//! results, honours stops, and reports queue depth — the job of the SDK's `EnvironmentWorker`
//! and `ant beta:worker poll`, re-done in Rust (protocol: `shared/spec/protocol.md`).
//!
//! Layers, bottom up:
//! * [`proto`] — serde wire types mirroring the SDK's models;
//! * [`client`] — the HTTP client (headers, credentials, timeouts, retries, SSE);
//! * [`runner`] — one session's event loop (routing, permission gate, idle exit, reconnects);
//! * [`lease`] — the heartbeat loop;
//! * [`skills`] — the agent's skills, installed under the session workspace per item;
//! * [`memory`] — memory stores: download, mount, sync after tool calls, final sync;
//! * [`worker`] — poll → ack → heartbeat → sandbox → runner → teardown → stop, N at once;
//! * [`ops`] + [`metrics`] — `/healthz`, `/readyz`, `/metrics`, `/queue`;
//! * [`usage`] — the usage record of each item: ledger before the stop, counters, HTTP sink.
//!
//! The command line (`wasm-sandbox serve`: flags, config file, logging, signals, the `--local`
//! demo) is not here: it lives in the `wasm-sandbox-cli` crate (`runtime/cli/src/serve/`), which
//! resolves its settings into a [`worker::WorkerConfig`] and calls [`worker::run_worker`].
//!
//! The sandbox is behind the [`sandbox::SandboxProvider`] seam; the production provider is the
//! core runtime.
//!
//! Credentials (the environment key, work secrets, sessions tokens) are held in
//! [`secret::Secret`], whose `Debug`/`Display` are redacted; none is ever logged, put in a
//! metric, or left in the process environment for a child to inherit.

pub mod client;
pub mod core_adapter;
pub mod egress_guard;
pub mod lease;
pub mod memory;
pub mod metrics;
pub mod ops;
pub mod persist;
pub mod proto;
pub mod runner;
pub mod sandbox;
pub mod secret;
pub mod skills;
pub mod status;
pub mod usage;
pub mod workdir;
pub mod worker;
