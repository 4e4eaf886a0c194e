//! Per-session accounting and the process-wide counters behind `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// One session's network use through its proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetUsage {
    /// Bytes sent from the sandbox to destinations (request heads and bodies,
    /// tunnelled bytes).
    pub bytes_up: u64,
    /// Bytes received from destinations for the sandbox.
    pub bytes_down: u64,
    /// Connections (or forwarded requests) the proxy opened to destinations.
    pub connections: u64,
    /// Requests the policy refused.
    pub denials: u64,
}

/// Atomic counters of one session (shared by its connection tasks).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub connections: AtomicU64,
    pub denials: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> NetUsage {
        NetUsage {
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            denials: self.denials.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn up(&self, n: u64) {
        self.bytes_up.fetch_add(n, Ordering::Relaxed);
        GLOBAL.bytes_up.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn down(&self, n: u64) {
        self.bytes_down.fetch_add(n, Ordering::Relaxed);
        GLOBAL.bytes_down.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn allowed(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        GLOBAL.allowed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn denied(&self) {
        self.denials.fetch_add(1, Ordering::Relaxed);
        GLOBAL.denied.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        GLOBAL.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Process-wide totals over every session (for `/metrics`; no session label).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressStats {
    /// Requests/connections the policy allowed.
    pub allowed: u64,
    /// Requests the policy refused (403).
    pub denied: u64,
    /// Allowed requests that failed (resolution, connect, upstream errors; 502/503).
    pub errors: u64,
    /// Bytes sent to destinations.
    pub bytes_up: u64,
    /// Bytes received from destinations.
    pub bytes_down: u64,
}

#[derive(Default)]
struct Global {
    allowed: AtomicU64,
    denied: AtomicU64,
    errors: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

static GLOBAL: Global = Global {
    allowed: AtomicU64::new(0),
    denied: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    bytes_up: AtomicU64::new(0),
    bytes_down: AtomicU64::new(0),
};

/// The process-wide totals.
pub fn stats() -> EgressStats {
    EgressStats {
        allowed: GLOBAL.allowed.load(Ordering::Relaxed),
        denied: GLOBAL.denied.load(Ordering::Relaxed),
        errors: GLOBAL.errors.load(Ordering::Relaxed),
        bytes_up: GLOBAL.bytes_up.load(Ordering::Relaxed),
        bytes_down: GLOBAL.bytes_down.load(Ordering::Relaxed),
    }
}
