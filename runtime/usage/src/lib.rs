//! Per-session usage records for metering "active execution only".
//!
//! At teardown the worker makes one [`UsageRecord`] per work item of a session (active tool
//! time, CPU seconds split by bash / wasm tools / `wasm-run`, peak memory and disk, tool calls,
//! wasi-nn and network use, the shape in effect) and:
//! 1. appends it to the local [`Ledger`] (JSON lines, `fdatasync`ed, rotated) **before** the
//!    work item is stopped, so a crash after teardown loses nothing;
//! 2. adds it to the worker's Prometheus counters (by environment only);
//! 3. optionally lets the [`sink`] `POST` it to an HTTP endpoint, with the record id as
//!    `Idempotency-Key`, from a durable cursor, so each record is delivered once even across
//!    restarts and outages.
//!
//! [`summary`] turns a ledger into per-environment, per-day totals (`wasm-sandbox usage`).

#![deny(missing_docs)]

pub mod cursor;
pub mod ledger;
pub mod record;
pub mod sink;
pub mod summary;

pub use ledger::{
    AppendError, DEFAULT_ROTATE_SIZE, Entry, Ledger, PREALLOCATE, Position, Skipped, read_all,
    read_all_counted, read_from,
};
pub use record::{
    CpuSeconds, NetworkUsage, NnUsage, SCHEMA_VERSION, Shape, UsageRecord, record_id, rfc3339,
};
pub use sink::{SinkConfig, SinkHandle, SinkStats, redact_url, spawn_sink};
pub use summary::{DayRow, Format, parse_since, render, summarise};
