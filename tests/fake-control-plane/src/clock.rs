//! The fake's controllable clock.
//!
//! Every timestamp the fake hands out (`created_at`, `last_heartbeat`, …) and every time-based
//! rule it applies (lease TTLs, the `reclaim_older_than_ms` window, the `workers_polling`
//! window) reads this clock, so a test can move time forward with [`FakeClock::advance`]
//! instead of sleeping. Waiting primitives (long-poll holds, SSE keep-alives, scenario sleeps)
//! use real time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Wall clock plus a test-controlled offset.
#[derive(Debug, Default)]
pub struct FakeClock {
    offset_micros: AtomicU64,
}

impl FakeClock {
    /// The current fake time.
    #[must_use]
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_micros(self.offset_micros.load(Ordering::SeqCst))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.offset_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-01-01T00:00:01.123456Z`.
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}
