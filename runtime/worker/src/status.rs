//! Live worker state for `/readyz` ([`WorkerStatus`]): written by the poll loop
//! ([`crate::worker`]) and the usage recorder ([`crate::usage`]), read by the ops server
//! ([`crate::ops`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Live worker state for `/readyz`.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    polled_ok: AtomicBool,
    pub(crate) draining: AtomicBool,
    last_poll_ok_unix_ms: AtomicU64,
    /// Why the worker must not take new work now (the usage ledger cannot write:
    /// [`crate::usage::UsageRecorder`]); `None` = nothing.
    blocked: std::sync::Mutex<Option<String>>,
}

impl WorkerStatus {
    /// Ready = the last poll succeeded, the worker is not draining and nothing blocks it.
    pub fn ready(&self) -> bool {
        self.polled_ok.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && self.blocked().is_none()
    }

    /// Why the worker takes no new work now (`/readyz` says it), if anything stops it.
    pub fn blocked(&self) -> Option<String> {
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets (or clears, with `None`) the reason the worker takes no new work.
    pub fn set_blocked(&self, reason: Option<String>) {
        *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// Whether a drain has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Unix ms of the last successful poll (0 = never).
    pub fn last_poll_ok_unix_ms(&self) -> u64 {
        self.last_poll_ok_unix_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn poll_result(&self, ok: bool) {
        self.polled_ok.store(ok, Ordering::Relaxed);
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            self.last_poll_ok_unix_ms.store(now, Ordering::Relaxed);
        }
    }
}
